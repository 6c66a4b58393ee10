//! A worker's PostgreSQL connections, each carrying many queries at once.
//!
//! Checked out one query at a time, a connection stays taken until the
//! worker's thread, busy serving other requests, comes back to read the
//! answer; under load queries then wait for a connection rather than for
//! the database. diesel-async lets several futures send queries on one
//! connection (pipelining), so the actor's queries share connections: a
//! query takes the least loaded one, another opening (up to the worker's
//! share of the pool) only when every open one is busy, and a connection
//! carries only as much as its queries' [`QueryCost`] allows. Each query is
//! one statement, its own transaction, so queries sharing a connection never
//! see each other's work half done. It lives on the worker's thread (`Rc`,
//! `Cell`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::AsyncPgConnection;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use crate::db::conn::{Checkout, DbConn, Lease, PoolStatus, QueryCost, CHECKOUT_TIMEOUT};
use crate::db::DbError;

/// Turns per connection: what its queries in flight may cost at most. A
/// query queued behind others on one connection cannot move to another
/// that frees up sooner, so only a little of the server's work may queue on
/// each: a cheap query can queue behind several others and still be
/// answered soon (and the server has the next one at hand while the
/// worker's thread is busy); a page cannot. A query goes to the least
/// loaded connection, which, when loads are uneven, may carry a little more
/// than this. One that finds no turn waits for one, first come first
/// served, at most [`CHECKOUT_TIMEOUT`], as it would wait for a checkout.
const TURNS: usize = 8;

impl QueryCost {
    /// The turns a query takes while in flight.
    fn turns(self) -> u32 {
        match self {
            Self::Row => 1,
            Self::Page => 4,
        }
    }
}

/// One of the pipeline's connections; each query in flight holds a clone.
///
/// A connection that has died fails the queries sent on it before its end
/// is noticed. The first such failure retires it: no new query is sent on
/// it, and once the queries still on it are answered it is closed, not
/// given back to deadpool, which would hand it out again. A new connection
/// takes its place. One that closed while idle is dropped at the next
/// checkout. Reads that fail this way are sent once more, on a connection
/// opened since ([`Checkout::get_new`]).
type SharedPgConn = Rc<PgConn>;

/// An open connection, and how loaded it is.
struct PgConn {
    /// Taken only when it is dropped.
    conn: Option<Object<AsyncPgConnection>>,
    /// Turns its queries in flight hold.
    load: Cell<usize>,
    /// A query on it failed in a way that spoils it ([`DbError::spoils_connection`]):
    /// it takes no new query.
    retired: Cell<bool>,
    /// A query sent once more takes only a connection opened since it
    /// failed, as the others may have died with the one it failed on.
    opened: Instant,
}

impl PgConn {
    fn client(&self) -> &AsyncPgConnection {
        self.conn
            .as_ref()
            .expect("a connection is set until it is dropped")
    }
}

impl Drop for PgConn {
    /// A retired connection leaves deadpool rather than going back: deadpool
    /// would hand it out again if its end had not been noticed yet.
    fn drop(&mut self) {
        if let (true, Some(conn)) = (self.retired.get(), self.conn.take()) {
            drop(Object::take(conn));
        }
    }
}

/// A query's share of a connection: the connection, and the query's turns.
pub struct PgShare {
    conn: SharedPgConn,
    turns: OwnedSemaphorePermit,
}

impl PgShare {
    fn new(conn: SharedPgConn, turns: OwnedSemaphorePermit) -> Self {
        conn.load.set(conn.load.get() + turns.num_permits());
        Self { conn, turns }
    }
}

impl PgShare {
    /// The connection, for a statement only PostgreSQL runs.
    pub fn client(&self) -> &AsyncPgConnection {
        self.conn.client()
    }
}

impl Lease for PgShare {
    fn conn(&mut self) -> DbConn<'_> {
        DbConn::Postgres(self.conn.client())
    }

    /// No new query goes to this connection; the pipeline lets go of it at
    /// its next checkout, and it is closed once the queries still on it are
    /// answered.
    fn retire(self) {
        self.conn.retired.set(true);
    }
}

impl Drop for PgShare {
    fn drop(&mut self) {
        let load = &self.conn.load;
        load.set(load.get() - self.turns.num_permits());
    }
}

pub struct Pipeline {
    pool: Pool<AsyncPgConnection>,
    /// The pool's size, read once: the pool's status takes its lock.
    max: usize,
    open: RefCell<Vec<SharedPgConn>>,
    /// Connections being opened, which count against the pool's size.
    opening: Cell<usize>,
    /// [`TURNS`] per connection the pool allows; a query waits for its
    /// own, first come first served. In an `Arc` only because its owned
    /// permits need one.
    turns: Arc<Semaphore>,
    /// Queries waiting for a turn, or for a connection to open.
    waiting: Cell<usize>,
    /// Signalled when an opening ends, well or not.
    opened: Notify,
}

impl Pipeline {
    pub fn new(pool: Pool<AsyncPgConnection>) -> Self {
        let max = pool.status().max_size;
        Self {
            turns: Arc::new(Semaphore::new(max * TURNS)),
            pool,
            max,
            open: RefCell::new(Vec::new()),
            opening: Cell::new(0),
            waiting: Cell::new(0),
            opened: Notify::new(),
        }
    }

    /// Turns, then a connection for one query: an idle one if there is one,
    /// else a new one if the pool allows it, else the least loaded open one.
    async fn share(&self, cost: QueryCost) -> Result<PgShare, DbError> {
        let turns = self.turns(cost).await?;
        let conn = self.connection().await?;
        Ok(PgShare::new(conn, turns))
    }

    /// Turns, then a connection opened since this call: a new one if the
    /// pool allows it (once the connections retired are given back), else
    /// one that another query opened meanwhile, waiting for those being
    /// opened; as [`Self::share`] if none is.
    async fn share_new(&self, cost: QueryCost) -> Result<PgShare, DbError> {
        let since = Instant::now();
        let turns = self.turns(cost).await?;
        let conn = loop {
            self.drop_dead();
            if self.open.borrow().len() + self.opening.get() < self.max {
                break self.open_one().await?;
            }
            let newer = self
                .open
                .borrow()
                .iter()
                .filter(|conn| conn.opened >= since)
                .min_by_key(|conn| conn.load.get())
                .cloned();
            match newer {
                Some(conn) => break conn,
                None if self.opening.get() == 0 => break self.connection().await?,
                None => self.wait(self.opened.notified()).await,
            }
        };
        Ok(PgShare::new(conn, turns))
    }

    /// The query's turns, waited for first come first served.
    async fn turns(&self, cost: QueryCost) -> Result<OwnedSemaphorePermit, DbError> {
        let turns = self
            .wait(timeout(
                CHECKOUT_TIMEOUT,
                Arc::clone(&self.turns).acquire_many_owned(cost.turns()),
            ))
            .await;
        turns
            .map_err(|_| {
                DbError::Unavailable(format!("no connection free within {CHECKOUT_TIMEOUT:?}"))
            })?
            .map_err(|_| DbError::Unavailable("the pool is closed".into()))
    }

    /// Counts the query as waiting while `until` is pending.
    async fn wait<T>(&self, until: impl std::future::Future<Output = T>) -> T {
        let _waiting = Counted::new(&self.waiting, None);
        until.await
    }

    async fn connection(&self) -> Result<SharedPgConn, DbError> {
        loop {
            if self.pool.is_closed() {
                return Err(DbError::Unavailable("the pool is closed".into()));
            }
            self.drop_dead();
            let may_open = self.open.borrow().len() + self.opening.get() < self.max;
            if let Some(conn) = self.least_loaded() {
                if !may_open || conn.load.get() == 0 {
                    return Ok(conn);
                }
            }
            if may_open {
                return self.open_one().await;
            }
            // Every connection the pool allows is being opened.
            self.wait(self.opened.notified()).await;
        }
    }

    fn least_loaded(&self) -> Option<SharedPgConn> {
        self.open
            .borrow()
            .iter()
            .min_by_key(|conn| conn.load.get())
            .cloned()
    }

    async fn open_one(&self) -> Result<SharedPgConn, DbError> {
        let opening = Counted::new(&self.opening, Some(&self.opened));
        let opened = self.pool.get().await;
        drop(opening);
        let conn = Rc::new(PgConn {
            conn: Some(opened?),
            load: Cell::new(0),
            retired: Cell::new(false),
            opened: Instant::now(),
        });
        self.open.borrow_mut().push(Rc::clone(&conn));
        Ok(conn)
    }

    /// Lets go of the retired connections, which are closed once no query
    /// holds them, and of those that have closed and carry no query, which
    /// go back to deadpool to be discarded.
    fn drop_dead(&self) {
        self.open.borrow_mut().retain_mut(|conn| {
            !conn.retired.get()
                && Rc::get_mut(conn)
                    .and_then(|conn| conn.conn.as_mut())
                    .is_none_or(|conn| !conn.is_broken())
        });
    }

    /// Open connections count as active while a query is in flight on them;
    /// `waiting` counts queries waiting for a turn or for a connection to
    /// open.
    pub fn status(&self) -> PoolStatus {
        let open = self.open.borrow();
        PoolStatus {
            max_size: self.max,
            size: open.len() + self.opening.get(),
            idle: open.iter().filter(|conn| conn.load.get() == 0).count(),
            waiting: self.waiting.get(),
        }
    }

    /// Later queries fail; connections go back to the closed pool, and so
    /// are closed, once their queries in flight are answered.
    pub fn close(&self) {
        self.turns.close();
        self.pool.close();
        self.open.borrow_mut().clear();
    }
}

/// One more in `count` until dropped, when `done`'s waiters are woken: a
/// query's future can be dropped while it waits (its actor stopping), and
/// must not leave itself counted.
struct Counted<'a> {
    count: &'a Cell<usize>,
    done: Option<&'a Notify>,
}

impl<'a> Counted<'a> {
    fn new(count: &'a Cell<usize>, done: Option<&'a Notify>) -> Self {
        count.set(count.get() + 1);
        Self { count, done }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.count.set(self.count.get() - 1);
        if let Some(done) = self.done {
            done.notify_waiters();
        }
    }
}

impl Checkout for Pipeline {
    type Lease = PgShare;

    async fn get(&self, cost: QueryCost) -> Result<PgShare, DbError> {
        self.share(cost).await
    }

    async fn get_new(&self, cost: QueryCost) -> Result<PgShare, DbError> {
        self.share_new(cost).await
    }
}
