//! `DbActor`: owns a database pool. Its messages are the users operations
//! and the readiness probes.
//!
//! Its handlers answer with futures (`ResponseFuture`) that actix runs as
//! tasks of their own, so queries run concurrently, bounded by the
//! connections, never one after another in the mailbox; a panic inside one
//! fails only that request, a panic in a handler restarts the actor with a
//! fresh pool. Each HTTP worker starts its own `DbActor`, with its share of
//! the pool: no thread hop per query. Each actor is given its write path
//! when it is built ([`WritePath`]): on PostgreSQL a worker batches its own
//! writes; SQLite lets one connection write at a time, so its workers send
//! their writes on to one more `DbActor`, the writer, whose pool is that one
//! connection. On PostgreSQL a worker also batches its point reads (by id,
//! by email) on a queue of their own. All batch through one mechanism
//! ([`crate::db::batch`]).

use std::cell::RefCell;
use std::future::{ready, Future};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::dev::ResponseFuture;
use actix::{Context, Handler, Message};
use futures_util::FutureExt;
use tracing::Instrument;

use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::{ActorRef, ActorUnavailable};
use crate::db::batch::Batching;
use crate::db::postgres::{Lookups, Statements};
use crate::db::read::Read;
use crate::db::sqlite::Transactions;
use crate::db::{
    users, BatchQueue, Connections, DatabaseUrl, DbError, PageCache, PoolSpec, PoolStatus, Write,
};
use crate::domain::{Expected, NewUser, User, UserEmail, UserId, UserPatch};
use crate::metrics::{Event, Recorder};
use crate::traces::spans;

/// What a database actor's reply can fail with: the query, or the actor.
#[derive(Debug, thiserror::Error)]
pub enum DbFailure {
    #[error(transparent)]
    Query(#[from] DbError),
    #[error(transparent)]
    Actor(#[from] ActorUnavailable),
}

/// Where a database actor's writes go.
#[derive(Clone)]
enum WritePath {
    /// A PostgreSQL worker's own queue: one statement per batch.
    Statements(BatchQueue<Statements>),
    /// SQLite's writer's queue: one transaction per batch.
    Transactions(BatchQueue<Transactions>),
    /// A SQLite worker's: on to the writer.
    Writer(ActorRef<DbActor>),
}

impl WritePath {
    /// The path for an actor on `conns`; `writer` is SQLite's writer for
    /// the workers' actors, `None` for the writer itself.
    fn new(conns: &Connections, writer: Option<ActorRef<DbActor>>) -> Self {
        match (conns, writer) {
            (Connections::Postgres(pipeline), _) => {
                Self::Statements(BatchQueue::new(Statements(Rc::clone(pipeline))))
            }
            (Connections::Sqlite(_), Some(writer)) => Self::Writer(writer),
            (Connections::Sqlite(pool), None) => {
                Self::Transactions(BatchQueue::new(Transactions(pool.clone())))
            }
        }
    }

    /// The queue's next batches run on the actor's fresh connections.
    fn renew(&self, conns: &Connections) {
        match (self, conns) {
            (Self::Statements(queue), Connections::Postgres(pipeline)) => {
                queue.renew(Statements(Rc::clone(pipeline)))
            }
            (Self::Transactions(queue), Connections::Sqlite(pool)) => {
                queue.renew(Transactions(pool.clone()))
            }
            // The writer's connections are its own; a pool keeps its backend.
            _ => {}
        }
    }
}

pub struct DbActor {
    /// What its pool is built from, again after a restart.
    pool: PoolSpec,
    conns: Connections,
    writes: WritePath,
    /// A PostgreSQL worker's queue of point reads; on SQLite each read
    /// runs alone.
    reads: Option<BatchQueue<Lookups>>,
    /// The last write probe's answer and when it came.
    writable: Rc<RefCell<Option<Probed>>>,
    /// The recorder of its thread, which its query futures share.
    metrics: Recorder,
    supervision: Supervision,
}

impl DbActor {
    /// A worker's actor, with `size` connections, the worker's share of the
    /// pool. On SQLite they only read, so they keep a small page cache, and
    /// the writes go to `writer`.
    pub fn worker(
        url: DatabaseUrl,
        size: usize,
        writer: Option<ActorRef<DbActor>>,
        supervision: Supervision,
    ) -> Self {
        let pool = PoolSpec {
            url,
            size,
            page_cache: PageCache::Small,
        };
        Self::new(pool, writer, supervision)
    }

    /// SQLite's one writer: a pool of the one connection SQLite lets write,
    /// committing in batches.
    pub fn sqlite_writer(url: DatabaseUrl, supervision: Supervision) -> Self {
        let pool = PoolSpec {
            url,
            size: 1,
            page_cache: PageCache::Default,
        };
        Self::new(pool, None, supervision)
    }

    fn new(pool: PoolSpec, writer: Option<ActorRef<DbActor>>, supervision: Supervision) -> Self {
        let conns = Connections::new(pool.build());
        Self {
            writes: WritePath::new(&conns, writer),
            reads: match &conns {
                Connections::Postgres(pipeline) => {
                    Some(BatchQueue::new(Lookups(Rc::clone(pipeline))))
                }
                Connections::Sqlite(_) => None,
            },
            pool,
            conns,
            writable: Rc::default(),
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
            let statement = spans::statement(act.conns.system(), sql_operation(op));
            let running = statement.in_scope(|| query(act.conns.clone()));
            let query = async move {
                let result = running.await;
                let seconds = started.elapsed().as_secs_f64();
                metrics.record(Event::Query { op, seconds });
                result.map_err(DbFailure::from)
            };
            // It runs after this handler returns: in the caller's span still
            // (its statement's, while traces are on).
            Box::pin(query.instrument(statement)) as ResponseFuture<_>
        })
    }

    /// Sends `write` down the actor's write path.
    fn write(
        &mut self,
        ctx: &mut Context<Self>,
        write: Write,
    ) -> ResponseFuture<Result<User, DbFailure>> {
        match self.writes.clone() {
            WritePath::Statements(queue) => self.queue(ctx, queue, write),
            WritePath::Transactions(queue) => self.queue(ctx, queue, write),
            WritePath::Writer(writer) => {
                let to_writer = async move { writer.call(Queued(write)).await };
                Box::pin(to_writer.instrument(tracing::Span::current()))
            }
        }
    }

    fn queue<B: Batching<Query = Write, Output = User>>(
        &mut self,
        ctx: &mut Context<Self>,
        queue: BatchQueue<B>,
        write: Write,
    ) -> ResponseFuture<Result<User, DbFailure>> {
        let op = match write {
            Write::Create(_) => "create",
            Write::Patch { .. } => "update",
            Write::Delete { .. } => "delete",
        };
        self.query(ctx, op, |_| async move { queue.submit(write).await })
    }
}

/// The SQL a query's operation runs, as its span names it.
fn sql_operation(op: &'static str) -> &'static str {
    match op {
        "create" => "INSERT",
        "update" => "UPDATE",
        "delete" => "DELETE",
        _ => "SELECT",
    }
}

impl Supervise for DbActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A fresh pool: connections the failed actor held are closed as they
    /// come back.
    fn reset(&mut self) {
        let conns = Connections::new(self.pool.build());
        self.writes.renew(&conns);
        if let (Some(reads), Connections::Postgres(pipeline)) = (&self.reads, &conns) {
            reads.renew(Lookups(Rc::clone(pipeline)));
        }
        std::mem::replace(&mut self.conns, conns).close();
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
    Queued,
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

/// A SQLite worker's write, sent on to the writer.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbFailure>")]
pub struct Queued(Write);

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
        self.write(ctx, Write::Create(user))
    }
}

impl Handler<GetUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbFailure>>;

    fn handle(&mut self, GetUser(id): GetUser, ctx: &mut Context<Self>) -> Self::Result {
        let reads = self.reads.clone();
        self.query(ctx, "get", |conns| async move {
            match reads {
                Some(reads) => reads.submit(Read::Id(id)).await?.ok_or(DbError::NotFound),
                None => users::get(&conns, id).await,
            }
        })
    }
}

impl Handler<ListUsers> for DbActor {
    type Result = ResponseFuture<Result<Vec<User>, DbFailure>>;

    fn handle(&mut self, msg: ListUsers, ctx: &mut Context<Self>) -> Self::Result {
        let ListUsers {
            after,
            limit,
            email,
        } = msg;
        match (email, self.reads.clone()) {
            // One user at most: a point read, batched with the others.
            (Some(email), Some(reads)) => self.query(ctx, "list", |_| async move {
                let found = reads.submit(Read::Email(email)).await?;
                Ok(found.into_iter().filter(|user| user.id > after).collect())
            }),
            (email, _) => self.query(ctx, "list", |conns| async move {
                users::list(&conns, after, limit, email.as_ref()).await
            }),
        }
    }
}

impl Handler<UpdateUser> for DbActor {
    type Result = ResponseFuture<Result<User, DbFailure>>;

    fn handle(&mut self, msg: UpdateUser, ctx: &mut Context<Self>) -> Self::Result {
        let UpdateUser {
            id,
            patch,
            expected,
        } = msg;
        self.write(
            ctx,
            Write::Patch {
                id,
                patch,
                expected,
            },
        )
    }
}

impl Handler<DeleteUser> for DbActor {
    type Result = ResponseFuture<Result<(), DbFailure>>;

    fn handle(
        &mut self,
        DeleteUser { id, expected }: DeleteUser,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let deleted = self.write(ctx, Write::Delete { id, expected });
        Box::pin(deleted.map(|deleted| deleted.map(drop)))
    }
}

impl Handler<Queued> for DbActor {
    type Result = ResponseFuture<Result<User, DbFailure>>;

    fn handle(&mut self, Queued(write): Queued, ctx: &mut Context<Self>) -> Self::Result {
        self.write(ctx, write)
    }
}

impl Handler<CheckWritable> for DbActor {
    type Result = ResponseFuture<Result<(), DbFailure>>;

    fn handle(&mut self, _: CheckWritable, ctx: &mut Context<Self>) -> Self::Result {
        if let WritePath::Writer(writer) = self.writes.clone() {
            return Box::pin(async move { writer.call(CheckWritable).await });
        }
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
