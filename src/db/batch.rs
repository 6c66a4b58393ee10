//! Queries in batches: the queries of one kind a database actor receives
//! while one batch of them is in flight go to the database together in the
//! next. An actor keeps a queue for its writes, and on PostgreSQL one for
//! its point reads.
//!
//! Each write alone costs a commit (on SQLite an fsync; on PostgreSQL a
//! round trip, and for patches and deletes the cache trigger's `NOTIFY`,
//! which PostgreSQL serializes); each read alone costs a statement's round
//! trip and planning. A batch pays them once. A quiet actor's query finds
//! nothing in flight and goes at once, alone. The backend supplies how a
//! batch runs ([`Batching`]): SQLite's writes one transaction per batch,
//! PostgreSQL's writes and reads one statement per batch. The rest is said
//! here, once for all:
//!
//! - A batch holds at most one write per user, and a write waits while an
//!   earlier write to its user waits, so writes to one user apply in the
//!   order they came ([`Batching::orders`]); reads need no order. Queries
//!   of one shape ([`Batching::shape`]) share a batch; queries with no
//!   shape run alone, several at once.
//! - No query is answered before its batch has committed or failed; a
//!   batch starts after every query in it was sent, so it sees every write
//!   acknowledged before then.
//! - A batch refused as a whole, for a reason one query alone need not
//!   meet, runs again query by query, so each gets its own answer. A batch
//!   that could not start, or may have been applied (its connection lost
//!   mid-commit), is not run again: each query is answered with that
//!   failure.
//!
//! The queue lives on the actor's thread (`Rc`, no lock) and its batches run
//! as the thread's local tasks, so a request that gives up waiting takes no
//! other query down with it. It outlives a restart of the actor, which
//! hands it the fresh connections ([`BatchQueue::renew`]).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use futures_util::future::join_all;
use tokio::sync::oneshot;
use tracing::{Instrument, Span};

use super::DbError;
use crate::domain::UserId;
use crate::traces::spans;

/// How one backend runs a batch of one kind of query.
#[allow(async_fn_in_trait)] // its futures run on the actor's thread only
pub trait Batching: Clone + 'static {
    /// The queries it runs.
    type Query: std::fmt::Debug;
    /// What a query answers when it succeeds.
    type Output;

    /// Most queries in one batch: a bound on how long the first waits for
    /// the last.
    const MAX_BATCH: usize;

    /// What queries that may share a batch have in common.
    type Shape: PartialEq + std::fmt::Debug;

    /// The query's shape; `None` for a query that runs alone.
    fn shape(query: &Self::Query) -> Option<Self::Shape>;

    /// The user whose queries must apply in the order they came, one per
    /// batch; `None` for a query that needs no order.
    fn orders(query: &Self::Query) -> Option<UserId>;

    /// Runs queries of one shape together.
    async fn together(&self, shape: &Self::Shape, batch: &[Self::Query]) -> Together<Self>;

    /// Runs one query alone, its own transaction.
    async fn alone(&self, query: &Self::Query) -> Answer<Self>;
}

/// What a query of `B` answers.
pub type Answer<B> = Result<<B as Batching>::Output, DbError>;

/// What running a batch together came to.
pub enum Together<B: Batching> {
    /// An answer for each query, in order.
    Answered(Vec<Answer<B>>),
    /// Refused as a whole, nothing applied: each query runs again alone.
    Refused(DbError),
    /// Each query fails with this, and none runs again: the batch could not
    /// start (no connection), or may have been applied (its connection was
    /// lost, or its commit failed).
    Failed(DbError),
}

impl<B: Batching> Together<B> {
    /// What a batch run as one statement came to: its answers, or, if the
    /// statement failed, `Failed` when its connection was lost or could
    /// not be had (it may have been applied), else `Refused` (the database
    /// refused it as a whole, so nothing was).
    pub fn of_statement(answered: Result<Vec<Answer<B>>, DbError>) -> Self {
        match answered {
            Ok(answers) => Self::Answered(answers),
            Err(err @ (DbError::ConnectionLost(_) | DbError::Unavailable(_))) => Self::Failed(err),
            Err(err) => Self::Refused(err),
        }
    }
}

type Reply<B> = oneshot::Sender<Answer<B>>;

/// A batch taken off the queue: its queries, where their answers go, and
/// how it runs.
struct Batch<B: Batching> {
    queries: Vec<B::Query>,
    replies: Vec<Reply<B>>,
    /// The spans the queries were sent in (see [`spans::batch`]).
    served: Vec<Span>,
    batching: B,
}

/// An actor's queue of one kind of query; cloning shares it.
pub struct BatchQueue<B: Batching>(Rc<RefCell<Queue<B>>>);

struct Queue<B: Batching> {
    /// How the next batch runs, on the actor's latest connections.
    batching: B,
    pending: Vec<(B::Query, Reply<B>, Span)>,
    /// A task is running batches; it takes whatever is pending next.
    running: bool,
}

impl<B: Batching> Clone for BatchQueue<B> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<B: Batching> BatchQueue<B> {
    pub fn new(batching: B) -> Self {
        Self(Rc::new(RefCell::new(Queue {
            batching,
            pending: Vec::new(),
            running: false,
        })))
    }

    /// The next batches run this way (on an actor's fresh connections).
    pub fn renew(&self, batching: B) {
        self.0.borrow_mut().batching = batching;
    }

    /// Runs `query` with whatever other queries are waiting when its turn
    /// comes. Must be called on the actor's thread.
    pub async fn submit(&self, query: B::Query) -> Answer<B> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.0.borrow_mut();
            queue.pending.push((query, reply, spans::sender()));
            if !queue.running {
                queue.running = true;
                tokio::task::spawn_local(run(self.clone()));
            }
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// The next batch, where its answers go and how to run it; `None` once
    /// the queue is empty (and then the running task ends, see [`Running`]).
    fn next_batch(&self) -> Option<Batch<B>> {
        let mut queue = self.0.borrow_mut();
        let shape = B::shape(&queue.pending.first()?.0);
        let (mut queries, mut replies, mut served) = (Vec::new(), Vec::new(), Vec::new());
        let mut waiting = Vec::new();
        // Users with a query in this batch, or one that waits for the next.
        let mut held = HashSet::new();
        for (query, reply, span) in std::mem::take(&mut queue.pending) {
            let user = B::orders(&query);
            let joins = queries.len() < B::MAX_BATCH
                && B::shape(&query) == shape
                && user.is_none_or(|user| !held.contains(&user));
            held.extend(user);
            if joins {
                queries.push(query);
                replies.push(reply);
                served.push(span);
            } else {
                waiting.push((query, reply, span));
            }
        }
        queue.pending = waiting;
        match &shape {
            Some(shape) => tracing::debug!(queries = queries.len(), ?shape, "a batch"),
            None => tracing::debug!(queries = queries.len(), "queries that run alone"),
        }
        Some(Batch {
            queries,
            replies,
            served,
            batching: queue.batching.clone(),
        })
    }

    fn stop_running(&self) -> Vec<(B::Query, Reply<B>, Span)> {
        let mut queue = self.0.borrow_mut();
        queue.running = false;
        std::mem::take(&mut queue.pending)
    }
}

/// Runs batches until the queue is empty.
async fn run<B: Batching>(queue: BatchQueue<B>) {
    let _stopped = Running(queue.clone());
    while let Some(Batch {
        queries,
        replies,
        served,
        batching,
    }) = queue.next_batch()
    {
        let answers = run_batch(&batching, &queries)
            .instrument(spans::batch(&served))
            .await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            drop(reply.send(answer));
        }
    }
}

/// Ends a running task, so that the next query starts a new one. When the
/// queue ran empty this finds nothing else to do; when the task is dropped
/// midway (a panic, or the actor's thread stopping), the queries still
/// queued are answered with an error rather than left waiting.
struct Running<B: Batching>(BatchQueue<B>);

impl<B: Batching> Drop for Running<B> {
    fn drop(&mut self) {
        for (_, reply, _) in self.0.stop_running() {
            drop(reply.send(Err(stopped())));
        }
    }
}

/// Runs one batch: an answer for each of its queries, in order.
async fn run_batch<B: Batching>(batching: &B, queries: &[B::Query]) -> Vec<Answer<B>> {
    let each_alone = || join_all(queries.iter().map(|query| batching.alone(query)));
    let shape = match B::shape(&queries[0]) {
        Some(shape) if queries.len() > 1 => shape,
        _ => return each_alone().await,
    };
    match batching.together(&shape, queries).await {
        Together::Answered(answers) => answers,
        Together::Failed(err) => {
            tracing::error!(%err, queries = queries.len(), ?shape, "a batch failed");
            queries.iter().map(|_| Err(err.clone())).collect()
        }
        Together::Refused(err) => {
            tracing::warn!(%err, queries = queries.len(), ?shape, "a batch was refused; running each alone");
            each_alone().await
        }
    }
}

fn stopped() -> DbError {
    DbError::Unavailable("the database actor stopped before answering".into())
}
