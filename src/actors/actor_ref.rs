//! The caller's side of an actor: its address, its name and the timeout every
//! call carries. Handlers hold these (never a pool, map or registry), and
//! every way a call can fail (the actor is dead, restarting, given up, or
//! silent past the timeout) becomes a fast 503 problem, never a hang.

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError, Message};

use super::supervision::{ActorState, ActorStatus, Status, Supervise};
use crate::error::ApiError;

/// How long a health check waits for an actor's answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

pub struct ActorRef<A: Actor> {
    name: &'static str,
    addr: Addr<A>,
    timeout: Duration,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            addr: self.addr.clone(),
            timeout: self.timeout,
        }
    }
}

impl<A: Actor> ActorRef<A> {
    pub fn new(name: &'static str, addr: Addr<A>, timeout: Duration) -> Self {
        Self {
            name,
            addr,
            timeout,
        }
    }

    /// Sends a message and waits for the reply, at most the call timeout.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, ApiError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.addr
            .send(msg)
            .timeout(self.timeout)
            .await
            .map_err(|err| {
                let detail = match err {
                    MailboxError::Timeout => {
                        format!("the {} actor did not answer in time", self.name)
                    }
                    MailboxError::Closed => format!("the {} actor is not running", self.name),
                };
                tracing::warn!(actor = self.name, %err, "actor call failed");
                ApiError::unavailable(detail)
            })
    }

    /// Sends a message that needs no answer; dropped if the mailbox is full.
    pub fn tell<M>(&self, msg: M)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let _ = self.addr.try_send(msg);
    }

    /// Queues a message the actor must get, past the mailbox's capacity,
    /// without waiting for its answer. The mailbox is first in, first out:
    /// the actor handles it before any message sent after this returns,
    /// from whichever thread. Lost only if the actor has ended.
    pub fn post<M>(&self, msg: M)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.addr.do_send(msg);
    }
}

impl<A: Actor> ActorRef<A> {
    /// Waits, at most `within`, until the actor has ended (its mailbox is
    /// gone): a worker's actor ends with the worker's thread.
    pub async fn ended(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.addr.connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl<A: Supervise> ActorRef<A> {
    /// The actor's own account of its health; a silent or dead actor is
    /// reported as such. Readiness probes wait at most [`STATUS_TIMEOUT`],
    /// whatever the call timeout.
    pub async fn status(&self) -> ActorStatus
    where
        A: Handler<Status>,
    {
        let answer = self.addr.send(Status).timeout(STATUS_TIMEOUT).await;
        answer.unwrap_or(ActorStatus {
            actor: self.name,
            state: if self.addr.connected() {
                ActorState::Restarting
            } else {
                ActorState::Stopped
            },
            restarts: 0,
        })
    }
}
