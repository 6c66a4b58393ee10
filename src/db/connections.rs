//! What a database actor's queries run on: on PostgreSQL a [`Pipeline`]
//! (connections shared by the queries in flight), on SQLite the pool
//! itself, whose connections serve one query at a time (SQLite runs a
//! query on the calling thread, so sharing would buy nothing).

use std::rc::Rc;

use super::conn::{Checkout, DbConn, Lease, PoolStatus, QueryCost};
use super::pipeline::{PgShare, Pipeline};
use super::pool::{DbPool, PooledConn};
use super::DbError;

#[derive(Clone)]
pub enum Connections {
    Pipelined(Rc<Pipeline>),
    Pooled(DbPool),
}

/// A connection lent by [`Connections`]. Like [`PooledConn`], it lives for
/// one query, in the query's future, so it is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum ConnectionLease {
    Pipelined(PgShare),
    Pooled(PooledConn),
}

impl Connections {
    pub fn new(pool: DbPool) -> Self {
        match pool {
            DbPool::Postgres(pool) => Self::Pipelined(Rc::new(Pipeline::new(pool))),
            sqlite => Self::Pooled(sqlite),
        }
    }

    pub fn status(&self) -> PoolStatus {
        match self {
            Self::Pipelined(pipeline) => pipeline.status(),
            Self::Pooled(pool) => pool.status(),
        }
    }

    pub fn close(&self) {
        match self {
            Self::Pipelined(pipeline) => pipeline.close(),
            Self::Pooled(pool) => pool.close(),
        }
    }
}

impl Lease for ConnectionLease {
    fn conn(&mut self) -> DbConn<'_> {
        match self {
            Self::Pipelined(share) => share.conn(),
            Self::Pooled(conn) => conn.conn(),
        }
    }

    fn retire(self) {
        match self {
            Self::Pipelined(share) => share.retire(),
            Self::Pooled(conn) => conn.retire(),
        }
    }
}

impl Checkout for Connections {
    type Lease = ConnectionLease;

    async fn get(&self, cost: QueryCost) -> Result<ConnectionLease, DbError> {
        Ok(match self {
            Self::Pipelined(pipeline) => ConnectionLease::Pipelined(pipeline.get(cost).await?),
            Self::Pooled(pool) => ConnectionLease::Pooled(pool.get(cost).await?),
        })
    }

    async fn get_new(&self, cost: QueryCost) -> Result<ConnectionLease, DbError> {
        Ok(match self {
            Self::Pipelined(pipeline) => ConnectionLease::Pipelined(pipeline.get_new(cost).await?),
            Self::Pooled(pool) => ConnectionLease::Pooled(pool.get_new(cost).await?),
        })
    }
}
