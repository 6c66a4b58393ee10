//! Creates on PostgreSQL in batches: the creates a worker's database actor
//! receives while one of its inserts is in flight go to the database
//! together, as one statement ([`super::pg_writes::InsertUsers`]).
//!
//! Each create on its own is a statement, a commit and a WAL flush; under
//! load the database spends more on those than on the rows. A batch pays
//! them once. A quiet worker's create finds nothing in flight and goes at
//! once, alone, as the prepared single-row insert; one that arrives while a
//! batch is in flight waits for that one statement and goes in the next,
//! with every create that came meanwhile, up to [`MAX_BATCH`].
//!
//! Each create is answered on its own: its row (201), or `EmailTaken`
//! (409) if its email was taken before or by an earlier create of the same
//! batch, as it would have been alone. No answer goes before the statement
//! has returned, and the statement commits by itself (no transaction spans
//! it), so an acknowledged create is committed. If the statement fails as a
//! whole, for a reason one create alone need not meet (a value the database
//! refuses, say), the batch's creates run again, each alone, and each gets
//! its own answer; if its connection was lost or none could be had, the
//! batch may or may not have committed, and each create is answered as one
//! alone would be then (503), not run twice.
//!
//! The queue lives on the actor's thread (`Rc`, no lock) and its batches run
//! as the thread's local tasks, so a request that gives up waiting (its
//! deadline, a client gone) takes no other create down with it.

use std::cell::RefCell;
use std::rc::Rc;

use futures_util::future::join_all;
use tokio::sync::oneshot;

use super::connections::Connections;
use super::{users, DbError};
use crate::domain::{NewUser, User};

/// Most creates in one statement: a bound on its size and on how long the
/// first create waits for the last row.
pub const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<User, DbError>>;

/// A worker's queue of creates; cloning shares it.
#[derive(Clone, Default)]
pub struct CreateBatches(Rc<RefCell<Queue>>);

#[derive(Default)]
struct Queue {
    pending: Vec<(NewUser, Reply)>,
    /// The connections the next batch runs on: the actor's latest.
    conns: Option<Connections>,
    /// A task is sending batches; it takes whatever is pending next.
    sending: bool,
}

impl CreateBatches {
    /// Creates `user` on `conns` (the actor's connections now), with
    /// whatever other creates are waiting when its turn comes. Must be
    /// called on the actor's thread.
    pub async fn create(&self, conns: &Connections, user: NewUser) -> Result<User, DbError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.0.borrow_mut();
            queue.pending.push((user, reply));
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

    /// The next batch and the connections to send it on; `None` once the
    /// queue is empty, and then sending stops.
    fn next_batch(&self) -> Option<(Vec<(NewUser, Reply)>, Connections)> {
        let mut queue = self.0.borrow_mut();
        let conns = queue.conns.clone().filter(|_| !queue.pending.is_empty());
        let Some(conns) = conns else {
            queue.sending = false;
            return None;
        };
        let take = queue.pending.len().min(MAX_BATCH);
        tracing::debug!(creates = take, "a batch of creates");
        Some((queue.pending.drain(..take).collect(), conns))
    }
}

/// Sends batches until the queue is empty.
async fn send(queue: CreateBatches) {
    let _stopped = Sending(queue.clone());
    while let Some((batch, conns)) = queue.next_batch() {
        insert(&conns, batch).await;
    }
}

/// Ends a sending task. When the queue ran empty this finds nothing to do;
/// when the task is dropped midway (a panic, or the thread stopping), the
/// creates still queued are answered with an error rather than left
/// waiting, and the next create starts a new task.
struct Sending(CreateBatches);

impl Drop for Sending {
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

/// Inserts one batch and answers each of its creates.
async fn insert(conns: &Connections, batch: Vec<(NewUser, Reply)>) {
    let (new, replies): (Vec<NewUser>, Vec<Reply>) = batch.into_iter().unzip();
    let answers = match &new[..] {
        [user] => vec![users::create(conns, user).await],
        _ => match users::create_many(conns, &new).await {
            Ok(answers) => answers,
            Err(err @ (DbError::ConnectionLost(_) | DbError::Unavailable(_))) => {
                vec![Err(err); new.len()]
            }
            Err(err) => {
                tracing::warn!(%err, creates = new.len(), "a batch of creates failed; running each alone");
                join_all(new.iter().map(|user| users::create(conns, user))).await
            }
        },
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        drop(reply.send(answer));
    }
}
