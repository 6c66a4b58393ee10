//! A worker's PostgreSQL connections, each carrying many queries at once.
//!
//! Checked out one query at a time, a connection stayed taken from the
//! moment its query was sent until the worker's thread, busy serving other
//! requests, came back to read the answer and return it. Under the benchmark
//! suite's mixed load (90% cached reads, 10% writes, 256 connections) the
//! writes then waited 10-50 ms for a connection the database was not using,
//! and their p99 was 2-3 times the bare baseline's.
//!
//! diesel-async lets several futures send queries on one connection
//! (pipelining): the server runs them in order, one after another, while
//! the client writes the next and reads the earlier answers. So the actor's
//! queries share connections instead of taking turns: a query takes the
//! connection with the fewest queries in flight, opening another (up to the
//! worker's share of `SWITCHBOARD_DB_POOL_SIZE`) only when every open one is
//! busy. deadpool still opens the connections and bounds how many there are.
//! Each users query is one statement, its own transaction, so queries that
//! share a connection cannot see each other's work half done.
//!
//! A connection that has died fails the queries on it, which are answered
//! 503, as a dead pooled connection's next query was; once none of its
//! queries is in flight it is dropped and its place opened anew.
//!
//! Everything here lives on the worker's thread: `Rc` and `Cell`, no lock.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::AsyncPgConnection;
use tokio::sync::Notify;

use super::pool::{Checkout, PoolStatus, PooledConn};
use super::{DbError, DbPool};

/// One of the pipeline's connections; each query in flight holds a clone.
pub type SharedPgConn = Rc<Object<AsyncPgConnection>>;

pub struct Pipeline {
    pool: Pool<AsyncPgConnection>,
    open: RefCell<Vec<SharedPgConn>>,
    /// Connections being opened, which count against the pool's size.
    opening: Cell<usize>,
    /// Queries waiting because every allowed connection is being opened.
    waiting: Cell<usize>,
    /// Signalled when an opening ends, well or not.
    opened: Notify,
}

impl Pipeline {
    pub fn new(pool: Pool<AsyncPgConnection>) -> Self {
        Self {
            pool,
            open: RefCell::new(Vec::new()),
            opening: Cell::new(0),
            waiting: Cell::new(0),
            opened: Notify::new(),
        }
    }

    /// A connection for one query: an idle one if there is one, else a new
    /// one if the pool allows it, else the open one with the fewest queries
    /// in flight.
    async fn share(&self) -> Result<SharedPgConn, DbError> {
        loop {
            if self.pool.is_closed() {
                return Err(DbError::Unavailable("the pool is closed".into()));
            }
            self.drop_dead();
            let may_open =
                self.open.borrow().len() + self.opening.get() < self.pool.status().max_size;
            if let Some(conn) = self.least_busy() {
                if !may_open || in_flight(&conn) == 0 {
                    return Ok(conn);
                }
            }
            if may_open {
                return self.open_one().await;
            }
            // Every connection the pool allows is being opened.
            let opened = self.opened.notified();
            self.waiting.set(self.waiting.get() + 1);
            opened.await;
            self.waiting.set(self.waiting.get() - 1);
        }
    }

    fn least_busy(&self) -> Option<SharedPgConn> {
        self.open
            .borrow()
            .iter()
            .min_by_key(|conn| in_flight(conn))
            .cloned()
    }

    async fn open_one(&self) -> Result<SharedPgConn, DbError> {
        self.opening.set(self.opening.get() + 1);
        let opened = self.pool.get().await;
        self.opening.set(self.opening.get() - 1);
        self.opened.notify_waiters();
        let conn = Rc::new(opened?);
        self.open.borrow_mut().push(Rc::clone(&conn));
        Ok(conn)
    }

    /// Drops the connections that have closed and carry no query: they go
    /// back to deadpool, which discards them.
    fn drop_dead(&self) {
        self.open
            .borrow_mut()
            .retain_mut(|conn| Rc::get_mut(conn).is_none_or(|conn| !conn.is_broken()));
    }

    /// Open connections count as active while a query is in flight on them;
    /// `waiting` counts queries waiting for one to open.
    pub fn status(&self) -> PoolStatus {
        let open = self.open.borrow();
        PoolStatus {
            max_size: self.pool.status().max_size,
            size: open.len() + self.opening.get(),
            idle: open.iter().filter(|conn| in_flight(conn) == 0).count(),
            waiting: self.waiting.get(),
        }
    }

    /// Later queries fail; connections go back to the closed pool, and so
    /// are closed, once their queries in flight are answered.
    pub fn close(&self) {
        self.pool.close();
        self.open.borrow_mut().clear();
    }
}

/// Queries in flight on a connection: every clone but the pipeline's own.
fn in_flight(conn: &SharedPgConn) -> usize {
    Rc::strong_count(conn) - 1
}

/// What a database actor's queries run on: on PostgreSQL a [`Pipeline`],
/// on SQLite its pool, whose connections serve one query at a time.
#[derive(Clone)]
pub enum Connections {
    Pipelined(Rc<Pipeline>),
    Pooled(DbPool),
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

impl Checkout for Connections {
    async fn get(&self) -> Result<PooledConn, DbError> {
        match self {
            Self::Pipelined(pipeline) => pipeline.share().await.map(PooledConn::Pipelined),
            Self::Pooled(pool) => pool.get().await,
        }
    }
}
