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
//!   `window`, as in Erlang/OTP), give up: the actor stays reachable but
//!   refuses all work, and `/ready` reports it, so the instance leaves the
//!   load balancer and an operator is alerted.
//!
//! Each start, failure, restart and give-up is one structured log line that
//! names the actor. The `supervised_actor!` macro wires an actor into all of
//! this, and adds the messages every actor answers: [`Status`], [`Crash`] (the
//! fault drill) and [`Shutdown`].

use std::collections::VecDeque;
use std::fmt;
use std::future::ready;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use actix::dev::ResponseFuture;
use actix::{Actor, ActorContext, Context, Message};
use serde::Serialize;

use crate::metrics::{Event, MetricsBuffer, MetricsHandle};
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

#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    pub actor: &'static str,
    pub state: ActorState,
    pub restarts: u64,
}

/// Why an actor did not do what it was asked.
#[derive(Debug, Clone)]
pub struct ActorUnavailable {
    pub actor: &'static str,
    pub state: ActorState,
}

impl fmt::Display for ActorUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.state {
            ActorState::Running => "failed while handling the request",
            ActorState::Restarting => "is restarting",
            ActorState::GivenUp => "has failed too often and was given up",
            ActorState::Stopped => "is shut down",
        };
        write!(f, "the {} actor {why}", self.actor)
    }
}

/// The restart bookkeeping an actor carries. It lives in the actor struct but
/// is not part of the state that [`Supervise::reset`] clears.
pub struct Supervision {
    actor: &'static str,
    policy: RestartPolicy,
    recent_restarts: VecDeque<Instant>,
    restarts: u64,
    backoff_until: Option<Instant>,
    given_up: bool,
    stopped: bool,
    /// Messages handled since the last report.
    handled: u64,
    metrics: MetricsBuffer,
}

impl Supervision {
    pub fn new(actor: &'static str) -> Self {
        Self::with_policy(actor, RestartPolicy::default())
    }

    pub fn with_policy(actor: &'static str, policy: RestartPolicy) -> Self {
        Self {
            actor,
            policy,
            recent_restarts: VecDeque::new(),
            restarts: 0,
            backoff_until: None,
            given_up: false,
            stopped: false,
            handled: 0,
            metrics: MetricsBuffer::default(),
        }
    }

    /// Report this actor's restarts, messages and own events here.
    pub fn reporting_to(mut self, metrics: MetricsHandle) -> Self {
        self.report_to(metrics);
        self
    }

    pub fn report_to(&mut self, metrics: MetricsHandle) {
        self.metrics.send_to(metrics);
    }

    /// Keep an event for the next report.
    pub fn record(&mut self, event: Event) {
        self.metrics.push(event);
    }

    /// Send what was recorded since the last report.
    pub fn flush(&mut self) {
        if self.handled > 0 {
            let count = std::mem::take(&mut self.handled);
            self.metrics.push(Event::Messages {
                actor: self.actor,
                count,
            });
        }
        self.metrics.flush();
    }

    pub fn actor(&self) -> &'static str {
        self.actor
    }

    pub fn state(&self) -> ActorState {
        if self.stopped {
            ActorState::Stopped
        } else if self.given_up {
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
            actor: self.actor,
            state: self.state(),
            restarts: self.restarts,
        }
    }

    /// Ok when the actor may take work now.
    pub fn check_available(&self) -> Result<(), ActorUnavailable> {
        match self.state() {
            ActorState::Running => Ok(()),
            state => Err(ActorUnavailable {
                actor: self.actor,
                state,
            }),
        }
    }

    pub fn started(&self) {
        tracing::info!(
            actor = self.actor,
            restarts = self.restarts,
            "actor started"
        );
    }

    pub fn failed(&self, reason: &str) {
        tracing::error!(actor = self.actor, reason, "actor failed");
    }

    /// Logged once, whether the actor was told to shut down, was dropped, or
    /// both.
    pub fn stopped(&mut self) {
        if !std::mem::replace(&mut self.stopped, true) {
            tracing::info!(actor = self.actor, "actor stopped");
        }
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
        self.metrics.push(Event::Restart { actor: self.actor });
        let in_window = self.recent_restarts.len();
        if self.given_up || self.stopped {
            return;
        }
        if in_window > self.policy.max_restarts {
            self.given_up = true;
            tracing::error!(
                actor = self.actor,
                restarts = self.restarts,
                restarts_in_window = in_window,
                window_seconds = self.policy.window.as_secs(),
                "actor gave up: restart intensity exceeded"
            );
            return;
        }
        let exponent = u32::try_from(in_window - 1).unwrap_or(u32::MAX).min(16);
        let delay = self
            .policy
            .first_delay
            .saturating_mul(1 << exponent)
            .min(self.policy.max_delay);
        self.backoff_until = Some(now + delay);
        tracing::warn!(
            actor = self.actor,
            restarts = self.restarts,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "actor restarting"
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
    /// Release resources before the process exits.
    fn on_shutdown(&mut self) {}
    /// Record gauges (sizes, pool state) before each report.
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
                actor: supervision.actor(),
                state: ActorState::Running,
            };
            ctx.stop();
            R::refuse(why)
        }
    }
}

/// What state is the actor in? Answered even while restarting or given up.
#[derive(Debug, Message)]
#[rtype(result = "ActorStatus")]
pub struct Status;

/// The fault drill: the handler panics, as a bug would.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Release resources and refuse further work; the process is exiting.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Implements `Actor`, `actix::Supervised` and the [`Status`], [`Crash`] and
/// [`Shutdown`] handlers for a type that implements [`Supervise`].
macro_rules! supervised_actor {
    ($actor:ty) => {
        impl actix::Actor for $actor {
            type Context = actix::Context<Self>;

            fn started(&mut self, ctx: &mut Self::Context) {
                ctx.set_mailbox_capacity($crate::actors::supervision::MAILBOX_CAPACITY);
                $crate::actors::supervision::Supervise::supervision(self).started();
                $crate::actors::supervision::Supervise::on_start(self, ctx);
                actix::AsyncContext::run_interval(ctx, $crate::metrics::FLUSH_EVERY, |act, _| {
                    $crate::actors::supervision::Supervise::report(act);
                    $crate::actors::supervision::Supervise::supervision(act).flush();
                });
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
                    let actor = $crate::actors::supervision::Supervise::supervision(act).actor();
                    panic!("crash drill: the {actor} actor was told to fail")
                })
            }
        }

        impl actix::Handler<$crate::actors::supervision::Shutdown> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::supervision::Shutdown, _: &mut Self::Context) {
                $crate::actors::supervision::Supervise::on_shutdown(self);
                $crate::actors::supervision::Supervise::supervision(self).stopped();
            }
        }
    };
}
pub(crate) use supervised_actor;

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut s = Supervision::with_policy("test", policy());
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
        let mut s = Supervision::with_policy("test", policy());
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
