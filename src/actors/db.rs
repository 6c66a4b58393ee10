//! `DbActor`: owns a database pool. Its messages are the users operations
//! and a readiness ping.
//!
//! Queries never run one after another in the mailbox: each handler clones
//! the connections' handle ([`Connections`]) and answers with a future
//! (`ResponseFuture`) that actix runs as its own task, so concurrency is
//! bounded by the connections, not by the actor's thread. On PostgreSQL a
//! connection carries several queries at once ([`crate::db::pipeline`]); on
//! SQLite one. A panic inside such a future fails only that request; a panic
//! in a handler itself restarts the actor with a fresh pool.
//!
//! One actor's thread was the ceiling: it encoded and decoded every query of
//! every worker, and each query cost two thread hops. So each HTTP worker
//! starts its own `DbActor` on its own thread, with its share of
//! `SWITCHBOARD_DB_POOL_SIZE`, and its handlers ask that one: no hop, and the
//! connections' I/O runs on the thread that serves the request. A shard ends
//! with its worker; dropping it closes its pool.
//!
//! SQLite lets one connection write at a time. With every connection of
//! every worker writing, the ones that found the file locked slept in
//! SQLite's busy handler (1, 2, 5 ... 100 ms) while others took the lock,
//! and a write's p99 was up to 75 times its median (576 ms against 7.7 ms
//! under the benchmark suite's POST load). So on SQLite the
//! workers' actors only read, and every write goes to one more `DbActor`,
//! the writer, on an arbiter of its own, whose pool holds one connection:
//! writes wait their turn in its queue, first come first served, and the
//! lock is never contended within the process (WAL readers never block
//! it). [`crate::app_state::WorkerDb`] tells a handler which actor to ask.
//! One connection committing one write at a time then capped writes at the
//! rate of fsyncs, so the writer commits the writes that queue meanwhile
//! together, one transaction per batch ([`super::group_commit`]).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use actix::dev::ResponseFuture;
use actix::{Context, Handler, Message};

use tokio::sync::oneshot;

use super::group_commit::{GroupCommit, Reply, Write};
use super::supervision::{run_guarded, supervised_actor, ActorUnavailable, Supervise, Supervision};
use crate::config::DatabaseUrl;
use crate::db::pool::PoolStatus;
use crate::db::{users, Connections, DbError, DbPool, PageCache};
use crate::domain::{NewUser, User, UserId, UserPatch};
use crate::metrics::{Event, MetricsBuffer, MetricsHandle};

/// Connections in the SQLite writer's pool: the one SQLite lets write.
pub const SQLITE_WRITERS: usize = 1;

pub struct DbActor {
    url: DatabaseUrl,
    pool_size: usize,
    /// On SQLite: small for the workers' readers, the default for the writer.
    page_cache: PageCache,
    conns: Connections,
    /// Its pool's series in the metrics: the worker's index, or for SQLite's
    /// writer the one after the workers'.
    shard: usize,
    /// Query timings, kept by the query futures (they run on this actor's
    /// thread) and sent with the actor's report every
    /// [`crate::metrics::FLUSH_EVERY`]: a message to the metrics actor per
    /// query woke that actor's thread for every request.
    timings: Rc<RefCell<MetricsBuffer>>,
    /// SQLite's writer: the queue its writes are committed from in batches.
    batches: Option<GroupCommit>,
    supervision: Supervision,
}

impl DbActor {
    /// A worker's actor, with the worker's share of the pool.
    pub fn new(
        url: DatabaseUrl,
        pool_size: usize,
        pool: DbPool,
        shard: usize,
        metrics: MetricsHandle,
    ) -> Self {
        Self::named("db", url, pool_size, pool, shard, metrics)
    }

    /// The page cache of a worker's actor's connections (on SQLite, they
    /// only read).
    pub const WORKER_PAGE_CACHE: PageCache = PageCache::Small;

    /// SQLite's one writer: a pool of one connection (`shard` names it in
    /// the pool metrics, after the workers' pools), committing in batches.
    pub fn sqlite_writer(
        url: DatabaseUrl,
        pool: DbPool,
        shard: usize,
        metrics: MetricsHandle,
    ) -> Self {
        let batches = match &pool {
            DbPool::Sqlite(pool) => Some(GroupCommit::new(pool.clone())),
            DbPool::Postgres(_) => None,
        };
        let mut writer = Self::named("db_writer", url, SQLITE_WRITERS, pool, shard, metrics);
        writer.batches = batches;
        writer.page_cache = PageCache::Default;
        writer
    }

    fn named(
        name: &'static str,
        url: DatabaseUrl,
        pool_size: usize,
        pool: DbPool,
        shard: usize,
        metrics: MetricsHandle,
    ) -> Self {
        Self {
            url,
            pool_size,
            page_cache: Self::WORKER_PAGE_CACHE,
            conns: Connections::new(pool),
            shard,
            supervision: Supervision::new(name).reporting_to(metrics.clone()),
            timings: Rc::new(RefCell::new(MetricsBuffer::new(metrics))),
            batches: None,
        }
    }

    /// Runs one query as its own task on a clone of the connections'
    /// handle, and records how long operation `op` took.
    fn query<T, F, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        op: &'static str,
        query: F,
    ) -> ResponseFuture<Result<T, DbError>>
    where
        T: 'static,
        F: FnOnce(Connections) -> Fut,
        Fut: Future<Output = Result<T, DbError>> + 'static,
    {
        run_guarded(self, ctx, |act, _| {
            let timings = Rc::clone(&act.timings);
            let started = Instant::now();
            let running = query(act.conns.clone());
            Box::pin(async move {
                let result = running.await;
                let seconds = started.elapsed().as_secs_f64();
                timings.borrow_mut().push(Event::Query { op, seconds });
                result
            }) as ResponseFuture<_>
        })
    }

    /// Runs a write of `input`: queued for the writer's next batch if this
    /// actor commits in batches, else on its own, as [`Self::query`] runs it.
    fn write<V, T, F, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        op: &'static str,
        input: V,
        queued: impl FnOnce(V, Reply<T>) -> Write,
        alone: F,
    ) -> ResponseFuture<Result<T, DbError>>
    where
        T: 'static,
        F: FnOnce(Connections, V) -> Fut,
        Fut: Future<Output = Result<T, DbError>> + 'static,
    {
        let Some(batches) = self.batches.clone() else {
            return self.query(ctx, op, |conns| alone(conns, input));
        };
        self.query(ctx, op, move |_| {
            let (reply, answer) = oneshot::channel();
            batches.push(queued(input, reply));
            async move {
                answer.await.unwrap_or_else(|_| {
                    Err(DbError::Unavailable(
                        "the writer stopped before answering".into(),
                    ))
                })
            }
        })
    }
}

impl Supervise for DbActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A fresh pool: connections the failed actor held are closed as they
    /// come back.
    fn reset(&mut self) {
        match DbPool::build(&self.url, self.pool_size, self.page_cache) {
            Ok(pool) => {
                if let (Some(batches), DbPool::Sqlite(pool)) = (&self.batches, &pool) {
                    batches.replace_pool(pool.clone());
                }
                std::mem::replace(&mut self.conns, Connections::new(pool)).close();
            }
            Err(reason) => tracing::error!(
                actor = "db",
                reason,
                "cannot rebuild the pool; keeping the old one"
            ),
        }
    }

    fn on_shutdown(&mut self) {
        self.conns.close();
        self.timings.borrow_mut().flush();
    }

    fn report(&mut self) {
        let status = self.conns.status();
        self.supervision.record(Event::Pool {
            shard: self.shard,
            active: status.size.saturating_sub(status.idle),
            idle: status.idle,
            max: status.max_size,
        });
        self.timings.borrow_mut().flush();
    }
}

supervised_actor!(DbActor);

/// A shard is dropped when its worker's thread ends (restarts keep the same
/// instance): the pool is closed and the stop logged, as [`super::supervision::Shutdown`]
/// does for the actors on arbiters of their own.
impl Drop for DbActor {
    fn drop(&mut self) {
        self.on_shutdown();
        self.supervision.stopped();
    }
}

impl From<ActorUnavailable> for DbError {
    fn from(why: ActorUnavailable) -> Self {
        Self::ActorUnavailable(why)
    }
}

#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbError>")]
pub struct CreateUser(pub NewUser);

#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbError>")]
pub struct GetUser(pub UserId);

/// Up to `limit` users with ids above `after`, in id order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<User>, DbError>")]
pub struct ListUsers {
    pub after: i64,
    pub limit: i64,
}

#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbError>")]
pub struct UpdateUser {
    pub id: UserId,
    pub patch: UserPatch,
}

#[derive(Debug, Message)]
#[rtype(result = "Result<(), DbError>")]
pub struct DeleteUser(pub UserId);

/// A round trip to the database; answers the pool's state.
#[derive(Debug, Message)]
#[rtype(result = "Result<PoolStatus, DbError>")]
pub struct Ping;

impl Handler<CreateUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbError>>;

    fn handle(&mut self, CreateUser(user): CreateUser, ctx: &mut Context<Self>) -> Self::Result {
        self.write(
            ctx,
            "create",
            user,
            Write::Create,
            |conns, user| async move { users::create(&conns, &user).await },
        )
    }
}

impl Handler<GetUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbError>>;

    fn handle(&mut self, GetUser(id): GetUser, ctx: &mut Context<Self>) -> Self::Result {
        self.query(
            ctx,
            "get",
            |conns| async move { users::get(&conns, id).await },
        )
    }
}

impl Handler<ListUsers> for DbActor {
    type Result = ResponseFuture<Result<Vec<User>, DbError>>;

    fn handle(&mut self, msg: ListUsers, ctx: &mut Context<Self>) -> Self::Result {
        self.query(ctx, "list", |conns| async move {
            users::list(&conns, msg.after, msg.limit).await
        })
    }
}

impl Handler<UpdateUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbError>>;

    fn handle(&mut self, msg: UpdateUser, ctx: &mut Context<Self>) -> Self::Result {
        self.write(
            ctx,
            "update",
            (msg.id, msg.patch),
            |(id, patch), reply| Write::Update(id, patch, reply),
            |conns, (id, patch)| async move { users::update(&conns, id, &patch).await },
        )
    }
}

impl Handler<DeleteUser> for DbActor {
    type Result = ResponseFuture<Result<(), DbError>>;

    fn handle(&mut self, DeleteUser(id): DeleteUser, ctx: &mut Context<Self>) -> Self::Result {
        self.write(ctx, "delete", id, Write::Delete, |conns, id| async move {
            users::delete(&conns, id).await
        })
    }
}

impl Handler<Ping> for DbActor {
    type Result = ResponseFuture<Result<PoolStatus, DbError>>;

    fn handle(&mut self, _: Ping, ctx: &mut Context<Self>) -> Self::Result {
        self.query(ctx, "ping", |conns| async move {
            users::ping(&conns).await?;
            Ok(conns.status())
        })
    }
}
