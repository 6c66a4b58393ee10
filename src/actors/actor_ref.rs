//! The caller's side of an actor: its address, its identity and the timeout
//! every call carries. Handlers hold these (never a pool, map or registry).
//! Every message goes as a [`Traced`], carrying the caller's span, so what
//! the actor logs while handling it (a failure above all) names the request
//! that sent it.
//! Every way a call can fail (the actor is gone, restarting, given up, or
//! silent past the timeout) is an [`ActorUnavailable`], which the HTTP edge
//! turns into a fast 503; nothing here knows HTTP.

use std::fmt;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError, Message, Recipient};

use super::identity::ActorId;
use crate::traces::spans;

/// Why an actor did not do what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Its mailbox is closed: it has ended.
    Closed,
    /// It did not answer within the call timeout.
    TimedOut,
    /// It is waiting out its restart backoff.
    Restarting,
    /// It failed too often and refuses all work.
    GivenUp,
    /// It panicked while handling this very request.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorUnavailable {
    pub actor: ActorId,
    pub why: Unavailable,
}

impl fmt::Display for ActorUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.why {
            Unavailable::Closed => "is not running",
            Unavailable::TimedOut => "did not answer in time",
            Unavailable::Restarting => "is restarting",
            Unavailable::GivenUp => "has failed too often and was given up",
            Unavailable::Failed => "failed while handling the request",
        };
        write!(f, "the {} actor {why}", self.actor)
    }
}

impl std::error::Error for ActorUnavailable {}

impl ActorUnavailable {
    /// Why a message to `actor` got no answer.
    pub fn of_call(actor: ActorId, err: MailboxError) -> Self {
        let why = match err {
            MailboxError::Timeout => Unavailable::TimedOut,
            MailboxError::Closed => Unavailable::Closed,
        };
        Self { actor, why }
    }
}

/// A message and the span it was sent from; the actor handles it inside
/// that span (`supervised_actor!` implements the handler). While traces
/// are on, that span is the message's own (`db GetUser`), a child of the
/// sender's, which marks when the actor took it off its mailbox.
pub struct Traced<M> {
    pub msg: M,
    pub span: tracing::Span,
    /// When it was sent, if its span is its own.
    pub sent: Option<Instant>,
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

impl<M> Traced<M> {
    /// `msg` to `actor`, sent from the current span.
    pub fn new(actor: ActorId, msg: M) -> Self {
        match spans::message::<M>(actor.name()) {
            Some((span, sent)) => Self {
                msg,
                span,
                sent: Some(sent),
            },
            None => Self {
                msg,
                span: tracing::Span::current(),
                sent: None,
            },
        }
    }

    /// The message, and its span entered; the wait in the mailbox ends.
    pub fn open(self) -> (M, tracing::span::EnteredSpan) {
        if let Some(sent) = self.sent {
            spans::dequeued(&self.span, sent);
        }
        (self.msg, self.span.entered())
    }
}

pub struct ActorRef<A: Actor> {
    id: ActorId,
    addr: Addr<A>,
    timeout: Duration,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            addr: self.addr.clone(),
            timeout: self.timeout,
        }
    }
}

impl<A: Actor> ActorRef<A> {
    pub fn new(id: ActorId, addr: Addr<A>, timeout: Duration) -> Self {
        Self { id, addr, timeout }
    }

    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The actor as a recipient of one kind of message, whoever it is.
    pub fn recipient<M>(&self) -> Recipient<M>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.addr.clone().recipient()
    }

    /// Sends a message and waits for the reply, at most the call timeout.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, ActorUnavailable>
    where
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.addr
            .send(Traced::new(self.id, msg))
            .timeout(self.timeout)
            .await
            .map_err(|err| {
                let (actor, shard) = (self.id.name(), self.id.shard);
                tracing::warn!(actor, shard, %err, "actor call failed");
                ActorUnavailable::of_call(self.id, err)
            })
    }

    /// [`Self::ask`] for a message whose reply can fail: one error for both
    /// ways of failing, the call's and the reply's.
    pub async fn call<M, T, E>(&self, msg: M) -> Result<T, E>
    where
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
        M: Message<Result = Result<T, E>> + Send + 'static,
        T: Send,
        E: Send + From<ActorUnavailable>,
    {
        self.ask(msg).await?
    }

    /// Sends a message that needs no answer; dropped if the mailbox is full.
    pub fn tell<M>(&self, msg: M)
    where
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let _ = self.addr.try_send(Traced::new(self.id, msg));
    }

    /// Queues a message the actor must get, past the mailbox's capacity,
    /// without waiting for its answer. The mailbox is first in, first out:
    /// the actor handles it before any message sent after this returns,
    /// from whichever thread. Lost only if the actor has ended.
    pub fn post<M>(&self, msg: M)
    where
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.addr.do_send(Traced::new(self.id, msg));
    }
}
