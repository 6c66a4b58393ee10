//! Storage: the schema and rows, the pools, the users queries on either
//! backend, writes in batches, migrations; and beside them what only
//! PostgreSQL ([`postgres`]) or only SQLite ([`sqlite`]) does. The database
//! actors ([`crate::actors::db`]) and the benchmark suite's baseline call
//! into it; it knows nothing of actors or HTTP.
//!
//! Inside, dependencies point one way: `conn` (what a query runs on) is at
//! the bottom; `pool` and `postgres::Pipeline` lend connections;
//! `connections` picks one of them for an actor; `users` runs queries;
//! `write`, `read` and `batch` queue writes and point reads, which the
//! backends' strategies run.

pub mod batch;
pub mod conn;
pub mod connections;
pub mod migrate;
pub mod models;
pub mod pool;
pub mod postgres;
pub mod read;
pub mod schema;
pub mod sqlite;
mod url;
pub mod users;
pub mod write;

pub use batch::BatchQueue;
pub use conn::{Checkout, DbConn, PoolStatus, QueryCost};
pub use connections::Connections;
pub use migrate::migrate;
pub use pool::{DbPool, PageCache, PoolSpec};
pub use url::DatabaseUrl;
pub use write::{Write, Written};

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What a query can fail with, as far as callers need to tell apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("no such user")]
    NotFound,
    #[error("email address already taken")]
    EmailTaken,
    /// A conditional write found the user changed since the version it
    /// expected.
    #[error("the user changed since the version the write expected")]
    Changed,
    /// The database refused a value as data (a constraint): the request's
    /// fault, not the server's.
    #[error("the database refused a value: {0}")]
    Rejected(String),
    /// No connection could be had in time (pool exhausted, database down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answers but cannot take writes now: a read-only file or
    /// server, a full disk, an I/O error.
    #[error("database cannot take writes: {0}")]
    Unwritable(String),
    /// The query's connection broke under it (the server ended the session,
    /// or the network failed): the query may or may not have run.
    #[error("database connection lost: {0}")]
    ConnectionLost(String),
    /// Anything else; the text is for the log only.
    #[error("database error: {0}")]
    Internal(String),
}

/// What the database says, in its own words, when it cannot take writes:
/// SQLite's result texts (fixed), and PostgreSQL's messages (in English,
/// the server's default `lc_messages`).
const UNWRITABLE: [&str; 6] = [
    "attempt to write a readonly database",
    "database or disk is full",
    "disk I/O error",
    "could not extend file",
    "No space left on device",
    "read-only transaction",
];

/// What PostgreSQL says when it ends a session (a shutdown, a restart,
/// `pg_terminate_backend`): diesel reports these without their code.
const SESSION_ENDED: [&str; 4] = [
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "server closed the connection",
];

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> Self {
        let DieselError::DatabaseError(kind, info) = err else {
            return match err {
                DieselError::NotFound => Self::NotFound,
                other => Self::Internal(other.to_string()),
            };
        };
        let message = info.message().to_owned();
        match kind {
            DatabaseErrorKind::UniqueViolation => Self::EmailTaken,
            // diesel-async reports a PostgreSQL connection that closed, or
            // failed to carry a query, as unable to send it.
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                Self::ConnectionLost(message)
            }
            DatabaseErrorKind::ReadOnlyTransaction => Self::Unwritable(message),
            DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::RestrictViolation => Self::Rejected(message),
            _ if UNWRITABLE.iter().any(|text| message.contains(text)) => Self::Unwritable(message),
            _ if SESSION_ENDED.iter().any(|text| message.contains(text)) => {
                Self::ConnectionLost(message)
            }
            _ => Self::Internal(message),
        }
    }
}

impl DbError {
    /// Whether the connection the query ran on is no longer to be trusted:
    /// it broke, failed in a way none of switchboard's queries should on a
    /// sound connection, or could not write (a SQLite file opened while it
    /// was read-only stays read-only on that connection; a fresh one sees
    /// the file as it is now). A value refused as data leaves the
    /// connection as it was.
    pub fn spoils_connection(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost(_) | Self::Internal(_) | Self::Unwritable(_)
        )
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for DbError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}
