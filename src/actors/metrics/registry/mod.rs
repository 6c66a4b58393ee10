//! The Prometheus registry and every metric in it, and how each [`Event`]
//! lands in it. Owned by [`super::MetricsActor`]; a restart replaces it
//! whole, so every series starts again from zero.
//!
//! Every series with a known label set exists from start-up, at zero:
//! dashboards then show 0 rather than "No data", and `rate()` and
//! `increase()` see the first increment. Actor series appear with the
//! actor's first state report (each actor reports every
//! [`crate::metrics::FLUSH_EVERY`]), an upstream host's with its first
//! breaker report.
//!
//! The families live by subsystem, each with its own file. The maps on the
//! recording path hash with foldhash: their keys are switchboard's own
//! route templates, status codes and actor names, never a client's text, so
//! SipHash's resistance to chosen keys would buy nothing for its cost per
//! event.

mod actors;
mod cache;
mod http;
mod storage;
mod upstream;

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::auth::Refusal;
use crate::metrics::{Event, RateDecision};
use actors::ActorMetrics;
use cache::CacheMetrics;
pub use http::HttpMetrics;
use storage::DbMetrics;
use upstream::UpstreamMetrics;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric switchboard exports, by subsystem.
pub struct Metrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    pub cache: CacheMetrics,
    pub rate_limit_decisions: IntCounterVec,
    /// In [`RateDecision::ALL`]'s order.
    decisions: [IntCounter; 3],
    auth_failures: IntCounterVec,
    db: DbMetrics,
    upstream: UpstreamMetrics,
    pub actors: ActorMetrics,
    /// Batches of events no thread could hand to the metrics actor.
    batches_dropped: IntCounter,
    /// Trace spans that never reached the collector.
    spans_dropped: IntCounter,
}

/// Registers a metric (defined here, so a failure is a bug) and keeps a handle.
fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("a valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("a unique metric name");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(registry, HistogramVec::new(opts, labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn saturated(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Every metric, at zero. `deadline`: the request deadline, which the
    /// request histograms' buckets reach past.
    pub fn new(deadline: Duration) -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector registers once");
        let version = gauge(
            &registry,
            "build_info",
            "switchboard's version; always 1",
            &["version"],
        );
        version
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let rate_limit_decisions = counter(
            &registry,
            "rate_limit_decisions_total",
            "Rate limit decisions: allowed, limited, fail_open",
            &["decision"],
        );
        let auth_failures = counter(
            &registry,
            "auth_failures_total",
            "Requests refused by access control: missing, invalid or expired token, or a scope it lacks",
            &["reason"],
        );
        for reason in Refusal::REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        Self {
            auth_failures,
            http: HttpMetrics::new(&registry, deadline),
            cache: CacheMetrics::new(&registry),
            decisions: RateDecision::ALL
                .map(|decision| rate_limit_decisions.with_label_values(&[decision.label()])),
            rate_limit_decisions,
            db: DbMetrics::new(&registry),
            upstream: UpstreamMetrics::new(&registry),
            actors: ActorMetrics::new(&registry),
            batches_dropped: registered(
                &registry,
                IntCounter::new(
                    "metrics_batches_dropped_total",
                    "Batches of metric events dropped because the metrics actor could not take them (down, restarting or its mailbox full): the other metrics undercount",
                ),
            ),
            spans_dropped: registered(
                &registry,
                IntCounter::new(
                    "otel_spans_dropped_total",
                    "Trace spans dropped on their way to the collector: the export queue full, or an export that failed or timed out",
                ),
            ),
            registry,
        }
    }

    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Request {
                method,
                route,
                status,
                seconds,
            } => self.http.request(method, route, status, seconds),
            Event::InFlight { worker, count } => self.http.in_flight(worker, count),
            Event::RateLimit(decision) => self.decisions[decision as usize].inc(),
            Event::AuthFailure(reason) => self.auth_failures.with_label_values(&[reason]).inc(),
            Event::Cache { hit } => self.cache.lookup(hit),
            Event::CacheSize { shard, entries } => self.cache.size(shard, entries),
            Event::CacheEvictions(n) => self.cache.evicted(n),
            Event::Invalidations { listening } => self.cache.listening(listening),
            Event::InvalidationHeard => self.cache.heard(),
            Event::Pool {
                actor,
                shard,
                active,
                idle,
                max,
            } => self.db.pool(actor, shard, [active, idle, max]),
            Event::Query { op, seconds } => self.db.query(op, seconds),
            Event::Upstream {
                host,
                outcome,
                seconds,
            } => self.upstream.attempt(&host, outcome, seconds),
            Event::Retry { host } => self.upstream.retry(&host),
            Event::Breaker { host, state } => self.upstream.breaker(&host, state),
            Event::Restart { actor, shard } => self.actors.restarted(actor, shard),
            Event::Messages {
                actor,
                shard,
                count,
            } => self.actors.handled(actor, shard, count),
            Event::ActorState {
                actor,
                shard,
                state,
            } => self.actors.state(actor, shard, state),
            Event::BatchesDropped(n) => self.batches_dropped.inc_by(n),
            Event::SpansDropped(n) => self.spans_dropped.inc_by(n),
        }
    }
}
