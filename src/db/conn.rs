//! What a users query runs on, whichever backend and however its connection
//! was had: a borrowed connection of either backend ([`DbConn`], and
//! `on_conn!` to run the same diesel code on either), the two traits that
//! lend one for a query ([`Checkout`], [`Lease`]), and [`run`], which
//! retires a connection that let its query down. The pool
//! ([`super::pool`]), PostgreSQL's shared connections
//! ([`super::postgres::Pipeline`]) and a database actor's connections
//! ([`super::connections`]) each implement them; the queries
//! ([`super::users`]) are written against them alone.

use std::future::Future;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::AsyncPgConnection;

use super::DbError;

pub type SqliteAsyncConnection = SyncConnectionWrapper<SqliteConnection>;

/// How long a query waits for a connection before its request is answered
/// 503 instead of queueing forever.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// A borrowed connection of either backend: what the users queries run on.
/// A PostgreSQL query needs only a shared reference: diesel-async sends the
/// queries of several futures on one connection without waiting for each
/// answer (pipelining), and [`super::postgres::Pipeline`] relies on that.
pub enum DbConn<'a> {
    Postgres(&'a AsyncPgConnection),
    Sqlite(&'a mut SqliteAsyncConnection),
}

impl DbConn<'_> {
    /// The same connection, lent again for one more statement.
    pub fn reborrow(&mut self) -> DbConn<'_> {
        match self {
            Self::Postgres(conn) => DbConn::Postgres(conn),
            Self::Sqlite(conn) => DbConn::Sqlite(conn),
        }
    }
}

/// Runs `$body` with `$conn` bound to the connection of either backend:
/// `&mut &AsyncPgConnection` or `&mut SqliteAsyncConnection`, which diesel's
/// `RunQueryDsl` methods both take.
macro_rules! on_conn {
    ($db_conn:expr, $conn:ident => $body:expr) => {
        match $db_conn {
            $crate::db::conn::DbConn::Postgres(mut shared) => {
                let $conn = &mut shared;
                $body
            }
            $crate::db::conn::DbConn::Sqlite($conn) => $body,
        }
    };
}
pub(crate) use on_conn;

/// What a query costs the database server, for sharing a connection among
/// queries in flight ([`super::postgres::Pipeline`]); a pool's connection serves one
/// query whatever it costs.
#[derive(Debug, Clone, Copy)]
pub enum QueryCost {
    /// One row, found by its key.
    Row,
    /// A page of rows.
    Page,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub idle: usize,
    pub waiting: usize,
}

/// A connection lent for one query; it goes back when dropped.
pub trait Lease {
    fn conn(&mut self) -> DbConn<'_>;

    /// Lets go of the connection after a query on it failed in a way that
    /// spoils it ([`DbError::spoils_connection`]): it is never lent again.
    fn retire(self);
}

/// Where the users queries get a connection.
pub trait Checkout {
    type Lease: Lease;

    fn get(&self, cost: QueryCost) -> impl Future<Output = Result<Self::Lease, DbError>>;

    /// A connection for a query sent once more because its connection let
    /// it down: a newly opened one where that is possible, since the others
    /// may have broken at the same time (a database restart ends them all).
    fn get_new(&self, cost: QueryCost) -> impl Future<Output = Result<Self::Lease, DbError>> {
        self.get(cost)
    }
}

/// Runs `query` on the connection `checkout` lends, and retires the
/// connection if the query failed in a way that spoils it.
pub async fn run<T, L: Lease>(
    checkout: impl Future<Output = Result<L, DbError>>,
    query: impl AsyncFnOnce(&mut L) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut lease = checkout.await?;
    let result = query(&mut lease).await;
    if result.as_ref().is_err_and(DbError::spoils_connection) {
        lease.retire();
    }
    result
}
