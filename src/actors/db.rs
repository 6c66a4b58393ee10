//! `DbActor`: owns a database pool. Its messages are the users operations
//! and a readiness ping.
//!
//! Queries never run one after another in the mailbox: each handler clones
//! the connections' handle ([`Connections`]) and answers with a future
//! (`ResponseFuture`) that actix runs as its own task, so concurrency is
//! bounded by the connections, not by the actor's thread. On PostgreSQL a
//! connection carries several queries at once ([`crate::db::pipeline`]); on
//! SQLite one. A panic inside such a future fails only that request; a panic
//! in a handler itself restarts the actor with a fresh pool, built from its
//! [`PoolSpec`].
//!
//! One actor's thread would be the ceiling: it would encode and decode every
//! query of every worker, each query paying two thread hops. So each HTTP
//! worker starts its own `DbActor` on its own thread, with its share of
//! `SWITCHBOARD_DB_POOL_SIZE`, and its handlers ask that one: no hop, and
//! the connections' I/O runs on the thread that serves the request.
//!
//! SQLite lets one connection write at a time. With every connection of
//! every worker writing, the ones that found the file locked would sleep in
//! SQLite's busy handler while others took the lock, and a write's tail
//! latency would be many times its median. So on SQLite the workers' actors
//! only read, and every write goes to one more `DbActor`, the writer, on an
//! arbiter of its own, whose pool holds one connection: writes wait their
//! turn in its queue, first come first served, and the lock is never
//! contended within the process (WAL readers never block it).
//! [`crate::app_state::WorkerDb`] tells a handler which actor to ask. The
//! writer commits the writes that queue meanwhile together, one transaction
//! per batch ([`crate::db::group_commit`]), so its rate is not capped at one
//! fsync per write.
//!
//! On PostgreSQL a worker's creates that arrive while one of its inserts is
//! in flight go together as one statement, and so do its unconditional
//! patches ([`crate::db::write_batch`]).

use std::cell::RefCell;
use std::future::{ready, Future};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::dev::ResponseFuture;
use actix::{Context, Handler, Message};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::ActorUnavailable;
use crate::config::DatabaseUrl;
use crate::db::group_commit::{GroupCommit, Reply, Write};
use crate::db::write_batch::{Create, Delete, Patch, PgBatches};
use crate::db::{users, Connections, DbError, DbPool, PageCache, PoolSpec, PoolStatus};
use crate::domain::{Expected, NewUser, User, UserEmail, UserId, UserPatch};
use crate::metrics::{Event, Recorder};

/// What a database actor's reply can fail with: the query, or the actor.
#[derive(Debug, thiserror::Error)]
pub enum DbFailure {
    #[error(transparent)]
    Query(#[from] DbError),
    #[error(transparent)]
    Actor(#[from] ActorUnavailable),
}

pub struct DbActor {
    /// What its pool is built from, again after a restart.
    pool: PoolSpec,
    conns: Connections,
    /// The last write probe's answer and when it came.
    writable: Rc<RefCell<Option<Probed>>>,
    /// SQLite's writer: the queue its writes are committed from in batches.
    batches: Option<GroupCommit>,
    /// A PostgreSQL worker's: the creates and patches waiting for their
    /// next batch.
    pg_batches: Option<PgBatches>,
    /// The recorder of its thread, which its query futures share.
    metrics: Recorder,
    supervision: Supervision,
}

impl DbActor {
    /// A worker's actor, with `size` connections, the worker's share of the
    /// pool. On SQLite they only read, so they keep a small page cache.
    pub fn worker(url: DatabaseUrl, size: usize, supervision: Supervision) -> Self {
        let pool = PoolSpec {
            url,
            size,
            page_cache: PageCache::Small,
        };
        Self::new(pool, false, supervision)
    }

    /// SQLite's one writer: a pool of the one connection SQLite lets write,
    /// committing in batches.
    pub fn sqlite_writer(url: DatabaseUrl, supervision: Supervision) -> Self {
        let pool = PoolSpec {
            url,
            size: 1,
            page_cache: PageCache::Default,
        };
        Self::new(pool, true, supervision)
    }

    fn new(pool: PoolSpec, in_batches: bool, supervision: Supervision) -> Self {
        let built = pool.build();
        let batches = match (&built, in_batches) {
            (DbPool::Sqlite(sqlite), true) => Some(GroupCommit::new(sqlite.clone())),
            _ => None,
        };
        let pg_batches = matches!(built, DbPool::Postgres(_)).then(PgBatches::default);
        Self {
            pool,
            conns: Connections::new(built),
            writable: Rc::default(),
            batches,
            pg_batches,
            metrics: supervision.metrics().clone(),
            supervision,
        }
    }

    /// Runs one query as its own task on a clone of the connections'
    /// handle, and records how long operation `op` took.
    fn query<T, F, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        op: &'static str,
        query: F,
    ) -> ResponseFuture<Result<T, DbFailure>>
    where
        T: 'static,
        F: FnOnce(Connections) -> Fut,
        Fut: Future<Output = Result<T, DbError>> + 'static,
    {
        run_guarded(self, ctx, |act, _| {
            let metrics = act.metrics.clone();
            let started = Instant::now();
            let running = query(act.conns.clone());
            let query = async move {
                let result = running.await;
                let seconds = started.elapsed().as_secs_f64();
                metrics.record(Event::Query { op, seconds });
                result.map_err(DbFailure::from)
            };
            // It runs after this handler returns: in the caller's span still.
            Box::pin(query.instrument(tracing::Span::current())) as ResponseFuture<_>
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
    ) -> ResponseFuture<Result<T, DbFailure>>
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
        let pool = self.pool.build();
        if let (Some(batches), DbPool::Sqlite(pool)) = (&self.batches, &pool) {
            batches.replace_pool(pool.clone());
        }
        std::mem::replace(&mut self.conns, Connections::new(pool)).close();
    }

    fn report(&mut self) {
        let status = self.conns.status();
        let id = self.supervision.id();
        self.metrics.record(Event::Pool {
            actor: id.name(),
            shard: id.shard,
            active: status.size.saturating_sub(status.idle),
            idle: status.idle,
            max: status.max_size,
        });
    }
}

supervised_actor!(
    DbActor;
    CreateUser,
    GetUser,
    ListUsers,
    UpdateUser,
    DeleteUser,
    CheckWritable,
    Ping
);

#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbFailure>")]
pub struct CreateUser(pub NewUser);

#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbFailure>")]
pub struct GetUser(pub UserId);

/// Up to `limit` users with ids above `after`, in id order; only the one
/// with `email`, if given.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<User>, DbFailure>")]
pub struct ListUsers {
    pub after: i64,
    pub limit: i64,
    pub email: Option<UserEmail>,
}

/// Changes a user, if it is at the version the client expects.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbFailure>")]
pub struct UpdateUser {
    pub id: UserId,
    pub patch: UserPatch,
    pub expected: Expected,
}

/// Deletes a user, if it is at the version the client expects.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DbFailure>")]
pub struct DeleteUser {
    pub id: UserId,
    pub expected: Expected,
}

/// Does the database take writes? Answered from a write at most
/// [`PROBE_EVERY`] old.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DbFailure>")]
pub struct CheckWritable;

/// A write probe's answer and when it came.
type Probed = (Instant, Result<(), DbError>);

/// How long a write probe's answer stands.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A round trip to the database; answers the pool's state.
#[derive(Debug, Message)]
#[rtype(result = "Result<PoolStatus, DbFailure>")]
pub struct Ping;

impl Handler<CreateUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbFailure>>;

    fn handle(&mut self, CreateUser(user): CreateUser, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(batches) = self.pg_batches.clone() {
            return self.query(ctx, "create", |conns| async move {
                batches.creates.run(&conns, Create(user)).await
            });
        }
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
    type Result = ResponseFuture<Result<User, DbFailure>>;

    fn handle(&mut self, GetUser(id): GetUser, ctx: &mut Context<Self>) -> Self::Result {
        self.query(
            ctx,
            "get",
            |conns| async move { users::get(&conns, id).await },
        )
    }
}

impl Handler<ListUsers> for DbActor {
    type Result = ResponseFuture<Result<Vec<User>, DbFailure>>;

    fn handle(&mut self, msg: ListUsers, ctx: &mut Context<Self>) -> Self::Result {
        self.query(ctx, "list", |conns| async move {
            users::list(&conns, msg.after, msg.limit, msg.email.as_ref()).await
        })
    }
}

impl Handler<UpdateUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbFailure>>;

    fn handle(&mut self, msg: UpdateUser, ctx: &mut Context<Self>) -> Self::Result {
        let batched = msg.expected == Expected::Any && !msg.patch.is_empty();
        if let Some(batches) = self.pg_batches.clone().filter(|_| batched) {
            return self.query(ctx, "update", |conns| async move {
                batches.patches.run(&conns, Patch(msg.id, msg.patch)).await
            });
        }
        self.write(
            ctx,
            "update",
            (msg.id, msg.patch, msg.expected),
            |(id, patch, expected), reply| Write::Update(id, patch, expected, reply),
            |conns, (id, patch, expected)| async move {
                users::update(&conns, id, &patch, &expected).await
            },
        )
    }
}

impl Handler<DeleteUser> for DbActor {
    type Result = ResponseFuture<Result<(), DbFailure>>;

    fn handle(&mut self, msg: DeleteUser, ctx: &mut Context<Self>) -> Self::Result {
        let batched = msg.expected == Expected::Any;
        if let Some(batches) = self.pg_batches.clone().filter(|_| batched) {
            return self.query(ctx, "delete", |conns| async move {
                batches.deletes.run(&conns, Delete(msg.id)).await
            });
        }
        self.write(
            ctx,
            "delete",
            (msg.id, msg.expected),
            |(id, expected), reply| Write::Delete(id, expected, reply),
            |conns, (id, expected)| async move { users::delete(&conns, id, &expected).await },
        )
    }
}

impl Handler<CheckWritable> for DbActor {
    type Result = ResponseFuture<Result<(), DbFailure>>;

    fn handle(&mut self, _: CheckWritable, ctx: &mut Context<Self>) -> Self::Result {
        let fresh = self
            .writable
            .borrow()
            .as_ref()
            .and_then(|(at, answer)| (at.elapsed() < PROBE_EVERY).then(|| answer.clone()));
        if let Some(answer) = fresh {
            return Box::pin(ready(answer.map_err(DbFailure::from)));
        }
        let writable = Rc::clone(&self.writable);
        self.query(ctx, "probe", |conns| async move {
            let answer = users::probe_write(&conns).await;
            *writable.borrow_mut() = Some((Instant::now(), answer.clone()));
            answer
        })
    }
}

impl Handler<Ping> for DbActor {
    type Result = ResponseFuture<Result<PoolStatus, DbFailure>>;

    fn handle(&mut self, _: Ping, ctx: &mut Context<Self>) -> Self::Result {
        self.query(ctx, "ping", |conns| async move {
            users::ping(&conns).await?;
            Ok(conns.status())
        })
    }
}
