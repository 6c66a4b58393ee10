//! Writes on PostgreSQL in batches: the creates (or the patches, or the
//! deletes) a worker's database actor receives while one of its batches of
//! them is in flight go to the database together, as one statement
//! ([`super::pg_writes::InsertUsers`], [`super::pg_writes::PatchUsers`],
//! [`super::pg_writes::DeleteUsers`]).
//!
//! Each write on its own is a statement and a commit; under load the
//! database spends more on those than on the rows, and the commit of a
//! patch or a delete also sends the cache-invalidation trigger's `NOTIFY`,
//! which PostgreSQL serializes across sessions. A batch pays them once. A
//! quiet worker's write finds nothing in flight and goes at once, alone, as
//! the prepared single-row statement; one that arrives while a batch is in
//! flight waits for that one statement and goes in the next, with every
//! write of its kind that came meanwhile, up to [`MAX_BATCH`].
//!
//! Each write is answered on its own, as it would have been alone: a
//! create its row (201), or `EmailTaken` (409) if its email was taken before
//! or by an earlier create of the same batch; a patch its user, or
//! `NotFound`; a delete nothing, or `NotFound`. No answer goes before the
//! statement has returned, and the statement commits by itself (no
//! transaction spans it), so an acknowledged write is committed. If the
//! statement fails as a whole, for a reason one write alone need not meet
//! (a value the database refuses, two patches giving users one email), the
//! batch's writes run again, each alone, and each gets its own answer; if
//! its connection was lost or none could be had, the batch may or may not
//! have committed, and each write is answered as one alone would be then
//! (503), not run twice.
//!
//! Only unconditional, non-empty patches and unconditional deletes are
//! batched, and one write per user in a batch (the next waits for the next
//! batch, so writes to one user apply in the order they came); conditional
//! ones (`If-Match`) run alone.
//!
//! The queue lives on the actor's thread (`Rc`, no lock) and its batches run
//! as the thread's local tasks, so a request that gives up waiting (its
//! deadline, a client gone) takes no other write down with it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use futures_util::future::join_all;
use tokio::sync::oneshot;

use super::connections::Connections;
use super::{users, DbError};
use crate::domain::{Expected, NewUser, User, UserId, UserPatch};

/// Most writes in one statement: a bound on its size and on how long the
/// first write waits for the last row.
pub const MAX_BATCH: usize = 256;

/// A kind of write that goes in batches. Its futures run on the actor's
/// thread (as local tasks) and are never sent elsewhere, so no `Send`
/// bound is wanted of them.
#[allow(async_fn_in_trait)]
pub trait BatchedWrite: Sized + 'static {
    /// What a batch of them is called in the log.
    const NAME: &'static str;

    /// What one of them answers when it succeeds.
    type Output: 'static;

    /// The user this write changes, if it is one that exists already: a
    /// batch holds at most one write per user.
    fn user(&self) -> Option<UserId> {
        None
    }

    /// Runs one write alone.
    async fn alone(&self, conns: &Connections) -> Result<Self::Output, DbError>;

    /// Runs several in one statement: an answer for each, in order, or the
    /// statement's failure.
    async fn together(batch: &[Self], conns: &Connections) -> Answers<Self>;
}

/// A batch's answers, one per write in order, or the statement's failure.
pub type Answers<W> = Result<Vec<Result<<W as BatchedWrite>::Output, DbError>>, DbError>;

/// A create, batched as one `INSERT`.
pub struct Create(pub NewUser);

impl BatchedWrite for Create {
    const NAME: &'static str = "a batch of creates";
    type Output = User;

    async fn alone(&self, conns: &Connections) -> Result<User, DbError> {
        users::create(conns, &self.0).await
    }

    async fn together(batch: &[Self], conns: &Connections) -> Answers<Self> {
        let new: Vec<&NewUser> = batch.iter().map(|create| &create.0).collect();
        users::create_many(conns, &new).await
    }
}

/// An unconditional, non-empty patch, batched as one `UPDATE`.
pub struct Patch(pub UserId, pub UserPatch);

impl BatchedWrite for Patch {
    const NAME: &'static str = "a batch of patches";
    type Output = User;

    fn user(&self) -> Option<UserId> {
        Some(self.0)
    }

    async fn alone(&self, conns: &Connections) -> Result<User, DbError> {
        users::update(conns, self.0, &self.1, &Expected::Any).await
    }

    async fn together(batch: &[Self], conns: &Connections) -> Answers<Self> {
        let patches: Vec<(UserId, &UserPatch)> =
            batch.iter().map(|patch| (patch.0, &patch.1)).collect();
        users::update_many(conns, &patches).await
    }
}

/// An unconditional delete, batched as one `DELETE`.
pub struct Delete(pub UserId);

impl BatchedWrite for Delete {
    const NAME: &'static str = "a batch of deletes";
    type Output = ();

    fn user(&self) -> Option<UserId> {
        Some(self.0)
    }

    async fn alone(&self, conns: &Connections) -> Result<(), DbError> {
        users::delete(conns, self.0, &Expected::Any).await
    }

    async fn together(batch: &[Self], conns: &Connections) -> Answers<Self> {
        let ids: Vec<UserId> = batch.iter().map(|delete| delete.0).collect();
        users::delete_many(conns, &ids).await
    }
}

type Reply<W> = oneshot::Sender<Result<<W as BatchedWrite>::Output, DbError>>;

/// A worker's queue of writes of one kind; cloning shares it.
pub struct WriteBatches<W: BatchedWrite>(Rc<RefCell<Queue<W>>>);

/// A worker's creates.
pub type CreateBatches = WriteBatches<Create>;
/// A worker's unconditional patches.
pub type PatchBatches = WriteBatches<Patch>;
/// A worker's unconditional deletes.
pub type DeleteBatches = WriteBatches<Delete>;

/// A PostgreSQL worker's queues.
#[derive(Clone, Default)]
pub struct PgBatches {
    pub creates: CreateBatches,
    pub patches: PatchBatches,
    pub deletes: DeleteBatches,
}

impl<W: BatchedWrite> Clone for WriteBatches<W> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<W: BatchedWrite> Default for WriteBatches<W> {
    fn default() -> Self {
        Self(Rc::new(RefCell::new(Queue {
            pending: Vec::new(),
            conns: None,
            sending: false,
        })))
    }
}

struct Queue<W: BatchedWrite> {
    pending: Vec<(W, Reply<W>)>,
    /// The connections the next batch runs on: the actor's latest.
    conns: Option<Connections>,
    /// A task is sending batches; it takes whatever is pending next.
    sending: bool,
}

impl<W: BatchedWrite> WriteBatches<W> {
    /// Runs `write` on `conns` (the actor's connections now), with whatever
    /// other writes are waiting when its turn comes. Must be called on the
    /// actor's thread.
    pub async fn run(&self, conns: &Connections, write: W) -> Result<W::Output, DbError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.0.borrow_mut();
            queue.pending.push((write, reply));
            queue.conns = Some(conns.clone());
            if !queue.sending {
                queue.sending = true;
                tokio::task::spawn_local(send(self.clone()));
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(DbError::Unavailable(
                "the database actor stopped before answering".into(),
            ))
        })
    }

    /// The next batch (its writes and where their answers go) and the
    /// connections to send it on; `None` once the queue is empty, and then
    /// sending stops. A write that may not join the batch stays first in
    /// line for the next.
    fn next_batch(&self) -> Option<(Vec<W>, Vec<Reply<W>>, Connections)> {
        let mut queue = self.0.borrow_mut();
        let conns = queue.conns.clone().filter(|_| !queue.pending.is_empty());
        let Some(conns) = conns else {
            queue.sending = false;
            return None;
        };
        let (mut writes, mut replies, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        let mut users = HashSet::new();
        for (write, reply) in std::mem::take(&mut queue.pending) {
            let user_free = write.user().is_none_or(|user| !users.contains(&user));
            if writes.len() < MAX_BATCH && user_free {
                users.extend(write.user());
                writes.push(write);
                replies.push(reply);
            } else {
                waiting.push((write, reply));
            }
        }
        queue.pending = waiting;
        tracing::debug!(writes = writes.len(), "{}", W::NAME);
        Some((writes, replies, conns))
    }
}

/// Sends batches until the queue is empty.
async fn send<W: BatchedWrite>(queue: WriteBatches<W>) {
    let _stopped = Sending(queue.clone());
    while let Some((writes, replies, conns)) = queue.next_batch() {
        let answers = run_batch(&conns, &writes).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            drop(reply.send(answer));
        }
    }
}

/// Ends a sending task. When the queue ran empty this finds nothing to do;
/// when the task is dropped midway (a panic, or the thread stopping), the
/// writes still queued are answered with an error rather than left
/// waiting, and the next write starts a new task.
struct Sending<W: BatchedWrite>(WriteBatches<W>);

impl<W: BatchedWrite> Drop for Sending<W> {
    fn drop(&mut self) {
        let pending = {
            let mut queue = (self.0).0.borrow_mut();
            queue.sending = false;
            std::mem::take(&mut queue.pending)
        };
        for (_, reply) in pending {
            drop(reply.send(Err(DbError::Unavailable(
                "the database actor stopped before answering".into(),
            ))));
        }
    }
}

/// Runs one batch: an answer for each of its writes, in order.
async fn run_batch<W: BatchedWrite>(
    conns: &Connections,
    writes: &[W],
) -> Vec<Result<W::Output, DbError>> {
    if let [write] = writes {
        return vec![write.alone(conns).await];
    }
    match W::together(writes, conns).await {
        Ok(answers) => answers,
        Err(err @ (DbError::ConnectionLost(_) | DbError::Unavailable(_))) => {
            writes.iter().map(|_| Err(err.clone())).collect()
        }
        Err(err) => {
            tracing::warn!(%err, writes = writes.len(), "{} failed; running each alone", W::NAME);
            join_all(writes.iter().map(|write| write.alone(conns))).await
        }
    }
}
