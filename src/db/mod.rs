//! Storage: the diesel schema and rows, the two pool backends (PostgreSQL and
//! embedded SQLite) behind one enum, PostgreSQL's shared connections,
//! SQLite's batched writes, migrations, and the users queries. The database
//! actors ([`crate::actors::db`]) and the benchmark suite's baseline call
//! into it; it knows nothing of actors or HTTP.
//!
//! Inside, dependencies point one way: `conn` (what a query runs on) is at
//! the bottom; `pool` and `pipeline` lend connections; `connections` picks
//! one of them for an actor; `users` and `group_commit` run queries.

pub mod conn;
pub mod connections;
pub mod group_commit;
pub mod migrate;
pub mod models;
pub mod pipeline;
pub mod pool;
pub mod schema;
pub mod users;

pub use conn::{Checkout, DbConn, PoolStatus, QueryCost};
pub use connections::Connections;
pub use migrate::migrate;
pub use pool::{DbPool, PageCache, PoolSpec};

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
    /// The query's connection broke under it (the server ended the session,
    /// or the network failed): the query may or may not have run.
    #[error("database connection lost: {0}")]
    ConnectionLost(String),
    /// Anything else; the text is for the log only.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::EmailTaken,
            // diesel-async reports a PostgreSQL connection that closed, or
            // failed to carry a query, as unable to send it.
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::ConnectionLost(info.message().to_owned()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl DbError {
    /// Whether the connection the query ran on is no longer to be trusted:
    /// it broke, or failed in a way none of switchboard's queries should on
    /// a sound connection. A server ending the session (PostgreSQL's
    /// `57P01`, on a shutdown or `pg_terminate_backend`) is one of those:
    /// diesel reports it as an unknown error, without its code.
    pub fn spoils_connection(&self) -> bool {
        matches!(self, Self::ConnectionLost(_) | Self::Internal(_))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for DbError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}
