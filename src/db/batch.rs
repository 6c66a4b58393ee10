//! Writes in batches: the writes a database actor receives while one batch
//! of its writes is in flight go to the database together in the next.
//!
//! Each write alone costs a commit (on SQLite an fsync; on PostgreSQL a
//! round trip, and for patches and deletes the cache trigger's `NOTIFY`,
//! which PostgreSQL serializes); a batch pays it once. A quiet actor's write
//! finds nothing in flight and goes at once, alone. The backend supplies how
//! a batch runs ([`Batching`]): SQLite one transaction per batch, PostgreSQL
//! one statement per batch. The rest is said here, once for both:
//!
//! - A batch holds at most one write per user, and a write waits while an
//!   earlier write to its user waits, so writes to one user apply in the
//!   order they came. Writes of one shape ([`Batching::shape`]) share a
//!   batch; writes with no shape run alone, several at once.
//! - No write is answered before its batch has committed or failed.
//! - A batch refused as a whole, for a reason one write alone need not meet,
//!   runs again write by write, so each gets its own answer. A batch that
//!   could not start, or may have been applied (its connection lost
//!   mid-commit), is not run again: each write is answered with that failure.
//!
//! The queue lives on the actor's thread (`Rc`, no lock) and its batches run
//! as the thread's local tasks, so a request that gives up waiting takes no
//! other write down with it. It outlives a restart of the actor, which hands
//! it the fresh connections ([`WriteQueue::renew`]).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use futures_util::future::join_all;
use tokio::sync::oneshot;

use super::write::{Write, Written};
use super::DbError;

/// How one backend runs a batch of writes.
#[allow(async_fn_in_trait)] // its futures run on the actor's thread only
pub trait Batching: Clone + 'static {
    /// Most writes in one batch: a bound on how long the first waits for
    /// the last.
    const MAX_BATCH: usize;

    /// What writes that may share a batch have in common.
    type Shape: PartialEq + std::fmt::Debug;

    /// The write's shape; `None` for a write that runs alone.
    fn shape(write: &Write) -> Option<Self::Shape>;

    /// Runs writes of one shape together.
    async fn together(&self, shape: &Self::Shape, batch: &[Write]) -> Together;

    /// Runs one write alone, its own transaction.
    async fn alone(&self, write: &Write) -> Written;
}

/// What running a batch together came to.
pub enum Together {
    /// An answer for each write, in order.
    Answered(Vec<Written>),
    /// Refused as a whole, nothing applied: each write runs again alone.
    Refused(DbError),
    /// Each write fails with this, and none runs again: the batch could not
    /// start (no connection), or may have been applied (its connection was
    /// lost, or its commit failed).
    Failed(DbError),
}

type Reply = oneshot::Sender<Written>;

/// An actor's queue of writes; cloning shares it.
pub struct WriteQueue<B: Batching>(Rc<RefCell<Queue<B>>>);

struct Queue<B> {
    /// How the next batch runs, on the actor's latest connections.
    batching: B,
    pending: Vec<(Write, Reply)>,
    /// A task is running batches; it takes whatever is pending next.
    running: bool,
}

impl<B: Batching> Clone for WriteQueue<B> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<B: Batching> WriteQueue<B> {
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

    /// Runs `write` with whatever other writes are waiting when its turn
    /// comes. Must be called on the actor's thread.
    pub async fn submit(&self, write: Write) -> Written {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.0.borrow_mut();
            queue.pending.push((write, reply));
            if !queue.running {
                queue.running = true;
                tokio::task::spawn_local(run(self.clone()));
            }
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// The next batch, where its answers go and how to run it; `None` once
    /// the queue is empty (and then the running task ends, see [`Running`]).
    fn next_batch(&self) -> Option<(Vec<Write>, Vec<Reply>, B)> {
        let mut queue = self.0.borrow_mut();
        let shape = B::shape(&queue.pending.first()?.0);
        let (mut writes, mut replies, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        // Users with a write in this batch, or one that waits for the next.
        let mut held = HashSet::new();
        for (write, reply) in std::mem::take(&mut queue.pending) {
            let user = write.user();
            let joins = writes.len() < B::MAX_BATCH
                && B::shape(&write) == shape
                && user.is_none_or(|user| !held.contains(&user));
            held.extend(user);
            if joins {
                writes.push(write);
                replies.push(reply);
            } else {
                waiting.push((write, reply));
            }
        }
        queue.pending = waiting;
        match &shape {
            Some(shape) => tracing::debug!(writes = writes.len(), ?shape, "a batch of writes"),
            None => tracing::debug!(writes = writes.len(), "writes that run alone"),
        }
        Some((writes, replies, queue.batching.clone()))
    }

    fn stop_running(&self) -> Vec<(Write, Reply)> {
        let mut queue = self.0.borrow_mut();
        queue.running = false;
        std::mem::take(&mut queue.pending)
    }
}

/// Runs batches until the queue is empty.
async fn run<B: Batching>(queue: WriteQueue<B>) {
    let _stopped = Running(queue.clone());
    while let Some((writes, replies, batching)) = queue.next_batch() {
        let answers = run_batch(&batching, &writes).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            drop(reply.send(answer));
        }
    }
}

/// Ends a running task, so that the next write starts a new one. When the
/// queue ran empty this finds nothing else to do; when the task is dropped midway (a panic, or the actor's thread
/// stopping), the writes still queued are answered with an error rather
/// than left waiting.
struct Running<B: Batching>(WriteQueue<B>);

impl<B: Batching> Drop for Running<B> {
    fn drop(&mut self) {
        for (_, reply) in self.0.stop_running() {
            drop(reply.send(Err(stopped())));
        }
    }
}

/// Runs one batch: an answer for each of its writes, in order.
async fn run_batch<B: Batching>(batching: &B, writes: &[Write]) -> Vec<Written> {
    let each_alone = || join_all(writes.iter().map(|write| batching.alone(write)));
    let shape = match B::shape(&writes[0]) {
        Some(shape) if writes.len() > 1 => shape,
        _ => return each_alone().await,
    };
    match batching.together(&shape, writes).await {
        Together::Answered(answers) => answers,
        Together::Failed(err) => {
            tracing::error!(%err, writes = writes.len(), "a batch of writes failed");
            writes.iter().map(|_| Err(err.clone())).collect()
        }
        Together::Refused(err) => {
            tracing::warn!(%err, writes = writes.len(), "a batch of writes was refused; running each alone");
            each_alone().await
        }
    }
}

fn stopped() -> DbError {
    DbError::Unavailable("the database actor stopped before answering".into())
}
