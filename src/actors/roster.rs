//! The one list of switchboard's actors, as OTP's supervisor keeps its
//! children: each instance's identity, where it runs and how to reach its
//! supervision. `/ready`, the fault drills and shutdown are all read off it,
//! so an actor added here is reported, drilled and stopped without another
//! list to keep in step.
//!
//! An actor runs either on an arbiter (thread) of its own, or on the HTTP
//! worker thread that started it, beside the requests it serves. Either way
//! it ends when its thread does: shutdown waits for the workers' actors to
//! end with their workers, then stops the others' threads in the reverse of
//! the order they started (SQLite's writer first, the metrics last, so the
//! others' final figures still reach it). An actor with work in hand at
//! that point (the span exporter's queue) is asked to [`Drain`] it first.

use std::time::Duration;

use actix::{Arbiter, ArbiterHandle, Handler, Recipient, Supervisor};
use futures_util::future::join_all;

use super::actor_ref::{ActorRef, ActorUnavailable, Traced};
use super::identity::{ActorId, ActorKind};
use super::supervision::{
    ActorState, ActorStatus, Crash, Drain, Ended, Escalation, Lifeline, Status, Supervise,
    Supervision,
};
use crate::metrics::{MetricsSink, Recorder};

/// How long a health check waits for an actor's answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long shutdown waits for one actor to end.
const END_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for one actor to finish its work ([`Drain`]).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One actor instance on the list.
#[derive(Clone)]
pub struct Member {
    id: ActorId,
    status: Recipient<Status>,
    crash: Recipient<Traced<Crash>>,
    /// Asked to finish its work before its thread stops, if it has any.
    drain: Option<Recipient<Drain>>,
    /// How long a drill waits for the crash's answer: what any call may.
    call_timeout: Duration,
    /// Its own thread; `None` when it runs on an HTTP worker's.
    arbiter: Option<ArbiterHandle>,
    ended: Ended,
}

/// An actor just started, and its entry for the roster.
pub struct Started<A: actix::Actor> {
    pub actor: ActorRef<A>,
    pub member: Member,
}

/// What every actor is started with: where it escalates, and the timeout
/// of every call to it.
#[derive(Clone)]
pub struct Starter {
    pub escalation: Escalation,
    pub call_timeout: Duration,
}

impl Starter {
    /// Starts an actor on an arbiter of its own, recording to `metrics`.
    /// `make` runs on that thread, and is handed the actor's supervision.
    pub fn alone<A>(
        &self,
        id: ActorId,
        metrics: MetricsSink,
        make: impl FnOnce(Supervision) -> A + Send + 'static,
    ) -> Started<A>
    where
        A: Supervise + Handler<Status> + Handler<Traced<Crash>>,
    {
        let arbiter = Arbiter::new().handle();
        let (alive, ended) = Lifeline::new();
        let escalation = self.escalation.clone();
        let addr = Supervisor::start_in_arbiter(&arbiter, move |_| {
            make(Supervision::new(
                id,
                Recorder::start(metrics),
                alive,
                escalation,
            ))
        });
        Member::started(id, addr, Some(arbiter), ended, self.call_timeout)
    }

    /// Starts an actor on the current thread (an HTTP worker's), recording
    /// to that thread's recorder.
    pub fn here<A>(
        &self,
        id: ActorId,
        metrics: &Recorder,
        make: impl FnOnce(Supervision) -> A,
    ) -> Started<A>
    where
        A: Supervise + Handler<Status> + Handler<Traced<Crash>>,
    {
        let (alive, ended) = Lifeline::new();
        let supervision = Supervision::new(id, metrics.clone(), alive, self.escalation.clone());
        let actor = make(supervision);
        let addr = Supervisor::start(move |_| actor);
        Member::started(id, addr, None, ended, self.call_timeout)
    }
}

impl Member {
    fn started<A>(
        id: ActorId,
        addr: actix::Addr<A>,
        arbiter: Option<ArbiterHandle>,
        ended: Ended,
        call_timeout: Duration,
    ) -> Started<A>
    where
        A: Supervise + Handler<Status> + Handler<Traced<Crash>>,
    {
        let member = Self {
            id,
            status: addr.clone().recipient(),
            crash: addr.clone().recipient(),
            drain: None,
            call_timeout,
            arbiter,
            ended,
        };
        Started {
            actor: ActorRef::new(id, addr, call_timeout),
            member,
        }
    }

    /// The actor's own account of its health; a silent or dead actor is
    /// reported as such.
    async fn status(&self) -> ActorStatus {
        let answer = self.status.send(Status).timeout(STATUS_TIMEOUT).await;
        answer.unwrap_or(ActorStatus {
            actor: self.id.name(),
            shard: self.id.shard,
            state: if self.status.connected() {
                ActorState::Restarting
            } else {
                ActorState::Stopped
            },
            restarts: 0,
        })
    }

    /// The same member, asked to [`Drain`] before its thread stops.
    pub fn draining(mut self, drain: Recipient<Drain>) -> Self {
        self.drain = Some(drain);
        self
    }

    async fn wait_ended(&self) {
        if tokio::time::timeout(END_TIMEOUT, self.ended.clone().wait())
            .await
            .is_err()
        {
            let (actor, shard) = (self.id.name(), self.id.shard);
            tracing::warn!(actor, shard, "actor did not end in time");
        }
    }
}

/// Every actor instance, in the order they started.
#[derive(Clone, Default)]
pub struct Roster {
    members: Vec<Member>,
}

impl Roster {
    pub fn new(members: Vec<Member>) -> Self {
        Self { members }
    }

    /// Every actor's own account of its health, in start order.
    pub async fn statuses(&self) -> Vec<ActorStatus> {
        join_all(self.members.iter().map(Member::status)).await
    }

    /// Runs the fault drill on every actor of `drill` (see
    /// [`ActorKind::drill`]); `None` if no kind answers to that name.
    pub async fn crash(&self, drill: &str) -> Option<Result<(), ActorUnavailable>> {
        if !ActorKind::DRILLS.contains(&drill) {
            return None;
        }
        for member in self.members.iter().filter(|m| m.id.kind.drill() == drill) {
            let sent = member
                .crash
                .send(Traced::new(member.id, Crash))
                .timeout(member.call_timeout);
            let sent = sent.await;
            if let Err(err) = sent {
                return Some(Err(ActorUnavailable::of_call(member.id, err)));
            }
        }
        Some(Ok(()))
    }

    /// Waits for the workers' actors to end with their threads, then stops
    /// each other actor's thread, the last started first (after it has
    /// drained, if it drains), and waits for it to end.
    pub async fn stop(&self) {
        let on_workers = self.members.iter().filter(|m| m.arbiter.is_none());
        join_all(on_workers.map(Member::wait_ended)).await;
        for member in self.members.iter().rev() {
            if let Some(arbiter) = &member.arbiter {
                if let Some(drain) = &member.drain {
                    if drain.send(Drain).timeout(DRAIN_TIMEOUT).await.is_err() {
                        let (actor, shard) = (member.id.name(), member.id.shard);
                        tracing::warn!(actor, shard, "actor did not finish its work in time");
                    }
                }
                arbiter.stop();
                member.wait_ended().await;
            }
        }
    }
}
