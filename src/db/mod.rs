//! Storage: the diesel schema and rows, the two pool backends (PostgreSQL and
//! embedded SQLite) behind one enum, migrations, and the users queries.
//! Only [`crate::actors::db::DbActor`] calls into this module.

pub mod models;
pub mod pipeline;
pub mod pool;
pub mod schema;
pub mod users;

pub use pipeline::Connections;
pub use pool::{migrate, Checkout, DbConn, DbPool, PageCache, QueryCost};

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What a query can fail with, as far as callers need to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no such user")]
    NotFound,
    #[error("email address already taken")]
    EmailTaken,
    /// No connection could be had in time (pool exhausted, database down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database actor itself could not take the query.
    #[error("{0}")]
    ActorUnavailable(crate::actors::supervision::ActorUnavailable),
    /// Anything else; the text is for the log only.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::EmailTaken,
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for DbError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}
