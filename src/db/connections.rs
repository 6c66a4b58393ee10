//! What a database actor's queries run on: on PostgreSQL a [`Pipeline`]
//! (connections shared by the queries in flight), on SQLite the pool
//! itself, whose connections serve one query at a time (SQLite runs a
//! query on the calling thread, so sharing would buy nothing).

use std::rc::Rc;

use diesel_async::pooled_connection::deadpool::{Object, Pool};

use super::conn::{Checkout, DbConn, Lease, PoolStatus, QueryCost, SqliteAsyncConnection};
use super::pool::DbPool;
use super::postgres::{PgShare, Pipeline};
use super::DbError;

#[derive(Clone)]
pub enum Connections {
    Postgres(Rc<Pipeline>),
    Sqlite(Pool<SqliteAsyncConnection>),
}

/// A connection lent by [`Connections`]. It lives for one query, in the
/// query's future, so it is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum ConnectionLease {
    Postgres(PgShare),
    Sqlite(Object<SqliteAsyncConnection>),
}

impl Connections {
    /// The database system, as traces name it.
    pub fn system(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    pub fn new(pool: DbPool) -> Self {
        match pool {
            DbPool::Postgres(pool) => Self::Postgres(Rc::new(Pipeline::new(pool))),
            DbPool::Sqlite(pool) => Self::Sqlite(pool),
        }
    }

    pub fn status(&self) -> PoolStatus {
        match self {
            Self::Postgres(pipeline) => pipeline.status(),
            Self::Sqlite(pool) => PoolStatus::of(pool),
        }
    }

    pub fn close(&self) {
        match self {
            Self::Postgres(pipeline) => pipeline.close(),
            Self::Sqlite(pool) => pool.close(),
        }
    }
}

impl Lease for ConnectionLease {
    fn conn(&mut self) -> DbConn<'_> {
        match self {
            Self::Postgres(share) => share.conn(),
            Self::Sqlite(conn) => conn.conn(),
        }
    }

    fn retire(self) {
        match self {
            Self::Postgres(share) => share.retire(),
            Self::Sqlite(conn) => conn.retire(),
        }
    }
}

impl Checkout for Connections {
    type Lease = ConnectionLease;

    async fn get(&self, cost: QueryCost) -> Result<ConnectionLease, DbError> {
        Ok(match self {
            Self::Postgres(pipeline) => ConnectionLease::Postgres(pipeline.get(cost).await?),
            Self::Sqlite(pool) => ConnectionLease::Sqlite(Checkout::get(pool, cost).await?),
        })
    }

    async fn get_new(&self, cost: QueryCost) -> Result<ConnectionLease, DbError> {
        Ok(match self {
            Self::Postgres(pipeline) => ConnectionLease::Postgres(pipeline.get_new(cost).await?),
            Self::Sqlite(pool) => ConnectionLease::Sqlite(Checkout::get_new(pool, cost).await?),
        })
    }
}
