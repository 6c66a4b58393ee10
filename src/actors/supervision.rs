//! Supervision that survives panics, for every switchboard actor.
//!
//! actix's own `Supervisor` restarts an actor that stops itself, on the same
//! address (so callers keep their `Addr` and queued messages survive), but a
//! panic inside a handler kills the actor for good. So every handler body runs
//! under [`run_guarded`] (or [`run_catching`]): a panic is caught, logged with
//! its message, answered as "unavailable", and turned into `ctx.stop()`, which
//! `Supervisor` answers with `restarting()`, where [`Supervision`] decides:
//!
//! - restart with fresh state ([`Supervise::reset`]) after an exponential
//!   backoff, during which the actor answers every request at once with
//!   "restarting" (callers turn that into a fast 503, never a hang);
//! - or, past the restart intensity (more than `max_restarts` within
//!   `window`, as in Erlang/OTP), give up and escalate: the actor stays
//!   reachable but refuses all work, and its [`Escalation`] tells the
//!   process, which turns `/health` and `/ready` 503, drains and exits
//!   non-zero, so that its process supervisor starts a fresh one rather
//!   than leave it half-dead.
//!
//! Every actor has one lifecycle: it starts supervised, on a thread of its
//! own or on an HTTP worker's ([`super::roster`]), and it ends when that
//! thread does. Dropping it releases what it owns (a pool's connections, a
//! client) and logs its stop; its [`Lifeline`] tells whoever waits for it.
//!
//! Each start, failure, restart, give-up and stop is one structured log line
//! that names the actor. The `supervised_actor!` macro wires an actor into
//! all of this, and adds the messages every actor answers: [`Status`] and
//! [`Crash`] (the fault drill).

use std::collections::VecDeque;
use std::future::ready;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use actix::dev::ResponseFuture;
use actix::{Actor, ActorContext, Context, Message};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::actor_ref::{ActorUnavailable, Unavailable};
use super::identity::ActorId;
use crate::metrics::{Event, Recorder};
use crate::telemetry::panic_message;

/// Mailbox bound for every actor: past it, senders wait (up to their call
/// timeout, then 503) instead of growing an unbounded queue.
pub const MAILBOX_CAPACITY: usize = 1024;

/// When to restart and when to give up.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// More restarts than this within `window` and the actor gives up.
    pub max_restarts: usize,
    pub window: Duration,
    /// Delay before the first restart in a window; doubles for each next one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// An actor's health, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Running,
    Restarting,
    GivenUp,
    Stopped,
}

impl ActorState {
    /// The `state` label of `actor_state`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "backing_off",
            Self::GivenUp => "given_up",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    pub actor: &'static str,
    pub shard: usize,
    pub state: ActorState,
    pub restarts: u64,
}

/// Where a given-up actor escalates: the process's shutdown sequence, which
/// drains and exits non-zero so that a fresh process replaces it.
#[derive(Clone)]
pub struct Escalation(mpsc::UnboundedSender<ActorId>);

impl Escalation {
    /// The escalation, and what receives the given-up actors.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ActorId>) {
        let (escalate, escalated) = mpsc::unbounded_channel();
        (Self(escalate), escalated)
    }
}

/// Held by an actor for as long as it exists; [`Ended`] resolves once it is
/// dropped.
pub struct Lifeline {
    _alive: watch::Sender<()>,
}

/// Waits for an actor's end.
#[derive(Clone)]
pub struct Ended(watch::Receiver<()>);

impl Lifeline {
    pub fn new() -> (Self, Ended) {
        let (alive, watching) = watch::channel(());
        (Self { _alive: alive }, Ended(watching))
    }
}

impl Ended {
    /// Resolves once the actor has been dropped.
    pub async fn wait(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

/// The restart bookkeeping an actor carries. It lives in the actor struct but
/// is not part of the state that [`Supervise::reset`] clears.
pub struct Supervision {
    id: ActorId,
    policy: RestartPolicy,
    recent_restarts: VecDeque<Instant>,
    restarts: u64,
    backoff_until: Option<Instant>,
    given_up: bool,
    /// Messages handled since the last report.
    handled: u64,
    metrics: Recorder,
    /// `None` for an actor outside any roster (unit tests).
    escalation: Option<Escalation>,
    _alive: Lifeline,
}

impl Supervision {
    /// `metrics`: the recorder of the thread the actor runs on.
    pub fn new(id: ActorId, metrics: Recorder, alive: Lifeline, escalation: Escalation) -> Self {
        let mut supervision = Self::with_policy(id, metrics, alive, RestartPolicy::default());
        supervision.escalation = Some(escalation);
        supervision
    }

    fn with_policy(id: ActorId, metrics: Recorder, alive: Lifeline, policy: RestartPolicy) -> Self {
        Self {
            id,
            policy,
            recent_restarts: VecDeque::new(),
            restarts: 0,
            backoff_until: None,
            given_up: false,
            handled: 0,
            metrics,
            escalation: None,
            _alive: alive,
        }
    }

    /// A supervision for an actor started on its own, outside any roster
    /// (unit tests): it records nothing and escalates to no one.
    pub fn unwatched(id: ActorId) -> Self {
        Self::with_policy(
            id,
            Recorder::disabled(),
            Lifeline::new().0,
            RestartPolicy::default(),
        )
    }

    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The recorder of the actor's thread, for the actor's own events.
    pub fn metrics(&self) -> &Recorder {
        &self.metrics
    }

    /// Records the actor's state and the messages handled since the last
    /// report.
    fn report(&mut self) {
        self.record_state();
        if self.handled > 0 {
            let count = std::mem::take(&mut self.handled);
            self.metrics.record(Event::Messages {
                actor: self.id.name(),
                shard: self.id.shard,
                count,
            });
        }
    }

    fn record_state(&self) {
        self.metrics.record(Event::ActorState {
            actor: self.id.name(),
            shard: self.id.shard,
            state: self.state().label(),
        });
    }

    pub fn state(&self) -> ActorState {
        if self.given_up {
            ActorState::GivenUp
        } else if self
            .backoff_until
            .is_some_and(|until| Instant::now() < until)
        {
            ActorState::Restarting
        } else {
            ActorState::Running
        }
    }

    pub fn status(&self) -> ActorStatus {
        ActorStatus {
            actor: self.id.name(),
            shard: self.id.shard,
            state: self.state(),
            restarts: self.restarts,
        }
    }

    /// Ok when the actor may take work now.
    pub fn check_available(&self) -> Result<(), ActorUnavailable> {
        let why = match self.state() {
            ActorState::Running => return Ok(()),
            ActorState::Restarting => Unavailable::Restarting,
            ActorState::GivenUp => Unavailable::GivenUp,
            ActorState::Stopped => Unavailable::Closed,
        };
        Err(ActorUnavailable {
            actor: self.id,
            why,
        })
    }

    pub fn started(&self) {
        tracing::info!(
            actor = self.id.name(),
            shard = self.id.shard,
            restarts = self.restarts,
            "actor started"
        );
        self.record_state();
    }

    pub fn failed(&self, reason: &str) {
        tracing::error!(
            actor = self.id.name(),
            shard = self.id.shard,
            reason,
            "actor failed"
        );
    }

    /// Called by `restarting()`: counts the restart and decides its delay, or
    /// gives up past the restart intensity.
    pub fn restarting(&mut self) {
        let now = Instant::now();
        self.restarts += 1;
        while self
            .recent_restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > self.policy.window)
        {
            self.recent_restarts.pop_front();
        }
        self.recent_restarts.push_back(now);
        self.metrics.record(Event::Restart {
            actor: self.id.name(),
            shard: self.id.shard,
        });
        let in_window = self.recent_restarts.len();
        if self.given_up {
            return;
        }
        if in_window > self.policy.max_restarts {
            self.given_up = true;
            self.record_state();
            tracing::error!(
                actor = self.id.name(),
                shard = self.id.shard,
                restarts = self.restarts,
                restarts_in_window = in_window,
                window_seconds = self.policy.window.as_secs(),
                "actor gave up: restart intensity exceeded"
            );
            if let Some(Escalation(escalate)) = &self.escalation {
                let _ = escalate.send(self.id);
            }
            return;
        }
        let exponent = u32::try_from(in_window - 1).unwrap_or(u32::MAX).min(16);
        let delay = self
            .policy
            .first_delay
            .saturating_mul(1 << exponent)
            .min(self.policy.max_delay);
        self.backoff_until = Some(now + delay);
        self.record_state();
        tracing::warn!(
            actor = self.id.name(),
            shard = self.id.shard,
            restarts = self.restarts,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "actor restarting"
        );
    }
}

impl Drop for Supervision {
    /// The actor's end: its thread stopped, and it with it.
    fn drop(&mut self) {
        tracing::info!(
            actor = self.id.name(),
            shard = self.id.shard,
            "actor stopped"
        );
    }
}

/// An actor that runs under switchboard's supervision.
pub trait Supervise: Actor<Context = Context<Self>> + actix::Supervised {
    fn supervision(&mut self) -> &mut Supervision;
    /// Replace all state with fresh state (called on every restart).
    fn reset(&mut self);
    /// Extra start-up work (timers and the like), run on every (re)start.
    fn on_start(&mut self, _ctx: &mut Context<Self>) {}
    /// Record gauges (sizes, pool state), every [`crate::metrics::FLUSH_EVERY`].
    fn report(&mut self) {}
}

/// A reply that can say "not done": what a refused or failed handler answers.
pub trait Refusal {
    fn refuse(why: ActorUnavailable) -> Self;
}

impl Refusal for () {
    fn refuse(_: ActorUnavailable) -> Self {}
}

impl<T, E: From<ActorUnavailable>> Refusal for Result<T, E> {
    fn refuse(why: ActorUnavailable) -> Self {
        Err(why.into())
    }
}

impl<T: 'static, E: From<ActorUnavailable> + 'static> Refusal for ResponseFuture<Result<T, E>> {
    fn refuse(why: ActorUnavailable) -> Self {
        Box::pin(ready(Err(why.into())))
    }
}

/// Runs a handler body if the actor is available, under [`run_catching`].
pub fn run_guarded<A, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> R,
) -> R
where
    A: Supervise,
    R: Refusal,
{
    match act.supervision().check_available() {
        Ok(()) => run_catching(act, ctx, body),
        Err(why) => R::refuse(why),
    }
}

/// Runs a handler body; a panic is logged, answered as a refusal, and stops
/// the actor so that its supervisor restarts it.
pub fn run_catching<A, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> R,
) -> R
where
    A: Supervise,
    R: Refusal,
{
    act.supervision().handled += 1;
    match catch_unwind(AssertUnwindSafe(|| body(act, ctx))) {
        Ok(reply) => reply,
        Err(payload) => {
            let supervision = act.supervision();
            supervision.failed(&panic_message(payload.as_ref()));
            let why = ActorUnavailable {
                actor: supervision.id(),
                why: Unavailable::Failed,
            };
            ctx.stop();
            R::refuse(why)
        }
    }
}

/// Runs the actor's periodic report: its gauges, then its supervision's;
/// and hands the trace spans its thread holds to the exporter.
pub fn report<A: Supervise>(act: &mut A) {
    act.report();
    act.supervision().report();
    crate::traces::hand_over();
}

/// What state is the actor in? Answered even while restarting or given up.
#[derive(Debug, Message)]
#[rtype(result = "ActorStatus")]
pub struct Status;

/// Finish the work in hand (at shutdown, before the actor's thread stops);
/// answered once it is done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// The fault drill: the handler panics, as a bug would.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Implements `Actor`, `actix::Supervised`, the [`Status`] and [`Crash`]
/// handlers, and the handling of every message inside the span it was sent
/// from ([`Traced`](super::actor_ref::Traced)), for a type that implements
/// [`Supervise`].
macro_rules! supervised_actor {
    (@traced $actor:ty, $message:ty) => {
        impl actix::Handler<$crate::actors::actor_ref::Traced<$message>> for $actor {
            type Result = <Self as actix::Handler<$message>>::Result;

            fn handle(
                &mut self,
                traced: $crate::actors::actor_ref::Traced<$message>,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                let (msg, _entered) = traced.open();
                <Self as actix::Handler<$message>>::handle(self, msg, ctx)
            }
        }
    };
    ($actor:ty; $($message:ty),* $(,)?) => {
        $(supervised_actor!(@traced $actor, $message);)*
        supervised_actor!(@traced $actor, $crate::actors::supervision::Crash);

        impl actix::Actor for $actor {
            type Context = actix::Context<Self>;

            fn started(&mut self, ctx: &mut Self::Context) {
                ctx.set_mailbox_capacity($crate::actors::supervision::MAILBOX_CAPACITY);
                $crate::actors::supervision::Supervise::on_start(self, ctx);
                $crate::actors::supervision::Supervise::supervision(self).started();
                actix::AsyncContext::run_interval(ctx, $crate::metrics::FLUSH_EVERY, |act, _| {
                    $crate::actors::supervision::report(act)
                });
            }

            /// The trace spans its thread holds leave before the thread does.
            fn stopped(&mut self, _: &mut Self::Context) {
                $crate::traces::hand_over();
            }
        }

        impl actix::Supervised for $actor {
            fn restarting(&mut self, _: &mut actix::Context<Self>) {
                $crate::actors::supervision::Supervise::supervision(self).restarting();
                $crate::actors::supervision::Supervise::reset(self);
            }
        }

        impl actix::Handler<$crate::actors::supervision::Status> for $actor {
            type Result = actix::MessageResult<$crate::actors::supervision::Status>;

            fn handle(
                &mut self,
                _: $crate::actors::supervision::Status,
                _: &mut Self::Context,
            ) -> Self::Result {
                actix::MessageResult(
                    $crate::actors::supervision::Supervise::supervision(self).status(),
                )
            }
        }

        impl actix::Handler<$crate::actors::supervision::Crash> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::supervision::Crash, ctx: &mut Self::Context) {
                $crate::actors::supervision::run_catching(self, ctx, |act, _| {
                    let actor = $crate::actors::supervision::Supervise::supervision(act).id();
                    panic!("crash drill: the {actor} actor was told to fail")
                })
            }
        }
    };
}
pub(crate) use supervised_actor;

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ActorId {
        ActorId::single(crate::actors::identity::ActorKind::Cache)
    }

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(60),
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(25),
        }
    }

    #[test]
    fn backs_off_then_gives_up_past_the_intensity() {
        let mut s =
            Supervision::with_policy(id(), Recorder::disabled(), Lifeline::new().0, policy());
        s.restarting();
        assert_eq!(s.state(), ActorState::Restarting);
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(s.state(), ActorState::Running);
        s.restarting();
        s.restarting();
        assert_ne!(s.state(), ActorState::GivenUp);
        s.restarting();
        assert_eq!(s.state(), ActorState::GivenUp);
        assert_eq!(s.status().restarts, 4);
        assert!(s.check_available().is_err());
    }

    #[test]
    fn delays_double_and_are_capped() {
        let mut s =
            Supervision::with_policy(id(), Recorder::disabled(), Lifeline::new().0, policy());
        let delay_of = |s: &Supervision| s.backoff_until.unwrap().duration_since(Instant::now());
        s.restarting();
        assert!(delay_of(&s) <= Duration::from_millis(10));
        s.restarting();
        assert!(
            delay_of(&s) > Duration::from_millis(10) && delay_of(&s) <= Duration::from_millis(20)
        );
        s.restarting();
        assert!(
            delay_of(&s) > Duration::from_millis(20) && delay_of(&s) <= Duration::from_millis(25)
        );
    }
}
