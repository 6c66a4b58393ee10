//! `MetricsActor`: owns the Prometheus registry and every metric in it.
//!
//! Nothing on the request path waits for it. Each thread's
//! [`crate::metrics::Recorder`] collects [`Event`]s and sends them in
//! batches ([`Record`]) with `try_send`: no await, no lock, a cross-thread
//! message per batch rather than per event. If the actor is dead, restarting
//! or its mailbox is full, the batch is dropped; recording resumes when it
//! is back, its counters starting again from zero, which Prometheus's
//! `rate()` handles as a counter reset.
//!
//! Metric names follow Prometheus conventions (base units, `_total`
//! counters, `_seconds` histograms) and labels carry route templates, never
//! raw paths, so no client can grow the label set.

mod registry;
mod stats;

pub use stats::{Latency, RouteStats, StatsSummary};

use std::time::Duration;

use actix::{AsyncContext, Context, Handler, Message};
use prometheus::{Encoder, TextEncoder};

use super::supervision::{
    run_catching, run_guarded, supervised_actor, ActorState, Supervise, Supervision,
};
use super::ActorUnavailable;
use crate::metrics::{MetricsSink, Record};
use registry::Metrics;

pub struct MetricsActor {
    metrics: Metrics,
    /// The request deadline, which the request histograms reach past.
    deadline: Duration,
    supervision: Supervision,
}

impl MetricsActor {
    pub fn new(deadline: Duration, supervision: Supervision) -> Self {
        Self {
            metrics: Metrics::new(deadline),
            deadline,
            supervision,
        }
    }
}

impl Supervise for MetricsActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A fresh registry: every counter starts again from zero.
    fn reset(&mut self) {
        self.metrics = Metrics::new(self.deadline);
    }

    fn on_start(&mut self, ctx: &mut Context<Self>) {
        // Its own restarts and messages are recorded like everyone else's.
        let me = MetricsSink::new(ctx.address().recipient());
        self.supervision.metrics().connect(me);
    }
}

supervised_actor!(MetricsActor; Gather, Summarize);

/// The text exposition of every metric.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, ActorUnavailable>")]
pub struct Gather;

/// The figures of `/stats`.
#[derive(Debug, Message)]
#[rtype(result = "Result<StatsSummary, ActorUnavailable>")]
pub struct Summarize;

impl Handler<Record> for MetricsActor {
    type Result = ();

    /// Applied even while the actor backs off before a restart: its
    /// registry is already the fresh one (`reset` runs first), and what
    /// arrives meanwhile, this actor's own restart among it, would
    /// otherwise be lost.
    fn handle(&mut self, Record(events): Record, ctx: &mut Context<Self>) {
        if self.supervision.state() == ActorState::GivenUp {
            return;
        }
        run_catching(self, ctx, |act, _| {
            events
                .into_iter()
                .for_each(|event| act.metrics.apply(event))
        })
    }
}

impl Handler<Gather> for MetricsActor {
    type Result = Result<String, ActorUnavailable>;

    fn handle(&mut self, _: Gather, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, _| {
            let mut text = Vec::new();
            let encoded = TextEncoder::new().encode(&act.metrics.registry.gather(), &mut text);
            if let Err(err) = encoded {
                tracing::error!(%err, "cannot encode metrics");
            }
            Ok(String::from_utf8(text).unwrap_or_default())
        })
    }
}

impl Handler<Summarize> for MetricsActor {
    type Result = Result<StatsSummary, ActorUnavailable>;

    fn handle(&mut self, _: Summarize, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, _| Ok(stats::summarize(&act.metrics)))
    }
}
