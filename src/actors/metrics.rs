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

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use actix::{AsyncContext, Context, Handler, Message, MessageResult};
use prometheus::core::{Collector, Metric};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Serialize;

use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::ActorUnavailable;
use crate::metrics::{Event, MetricsSink, RateDecision, Record};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric switchboard exports.
struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    cache_requests: IntCounterVec,
    /// `cache_requests`' two series, resolved once.
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    cache_evictions: IntCounter,
    rate_limit_decisions: IntCounterVec,
    /// `rate_limit_decisions`' series, resolved once, in
    /// [`RateDecision::ALL`]'s order.
    decisions: [IntCounter; 3],
    db_pool: IntGaugeVec,
    db_query_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_retries: IntCounterVec,
    breaker_state: IntGaugeVec,
    actor_restarts: IntCounterVec,
    actor_messages: IntCounterVec,
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

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    registered(registry, HistogramVec::new(opts, labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector registers once");
        gauge(
            &registry,
            "build_info",
            "switchboard's version; always 1",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let cache_requests = counter(
            &registry,
            "cache_requests_total",
            "Cache lookups by result",
            &["result"],
        );
        let rate_limit_decisions = counter(
            &registry,
            "rate_limit_decisions_total",
            "Rate limit decisions: allowed, limited, fail_open",
            &["decision"],
        );
        Self {
            http_requests: counter(
                &registry,
                "http_requests_total",
                "HTTP requests answered",
                &["method", "route", "status"],
            ),
            http_duration: histogram(
                &registry,
                "http_request_duration_seconds",
                "Time to answer an HTTP request",
                &["method", "route"],
            ),
            http_in_flight: registered(
                &registry,
                IntGauge::new("http_requests_in_flight", "Requests being handled now"),
            ),
            cache_hits: cache_requests.with_label_values(&["hit"]),
            cache_misses: cache_requests.with_label_values(&["miss"]),
            cache_requests,
            cache_entries: registered(
                &registry,
                IntGauge::new("cache_entries", "Entries in the response cache"),
            ),
            cache_evictions: registered(
                &registry,
                IntCounter::new("cache_evictions_total", "Entries evicted from the cache"),
            ),
            decisions: RateDecision::ALL
                .map(|decision| rate_limit_decisions.with_label_values(&[decision.label()])),
            rate_limit_decisions,
            db_pool: gauge(
                &registry,
                "db_pool_connections",
                "Database pool connections by state",
                &["state"],
            ),
            db_query_duration: histogram(
                &registry,
                "db_query_duration_seconds",
                "Database query time",
                &["op"],
            ),
            upstream_requests: counter(
                &registry,
                "upstream_requests_total",
                "Upstream attempts by host and outcome",
                &["host", "outcome"],
            ),
            upstream_duration: histogram(
                &registry,
                "upstream_request_duration_seconds",
                "Upstream attempt time",
                &["host"],
            ),
            upstream_retries: counter(
                &registry,
                "upstream_retries_total",
                "Upstream retries by host",
                &["host"],
            ),
            breaker_state: gauge(
                &registry,
                "circuit_breaker_state",
                "Per upstream host: 0 closed, 1 open, 2 half-open",
                &["host"],
            ),
            actor_restarts: counter(
                &registry,
                "actor_restarts_total",
                "Actor restarts after a failure",
                &["actor"],
            ),
            actor_messages: counter(
                &registry,
                "actor_messages_total",
                "Messages handled by each actor",
                &["actor"],
            ),
            registry,
        }
    }
}

/// Per route: what `/stats` shows beside the histogram.
#[derive(Debug, Clone, Copy, Default)]
struct RouteFigures {
    count: u64,
    errors: u64,
    total_seconds: f64,
    min_seconds: f64,
    max_seconds: f64,
}

/// One route's series, resolved once: recording a request is then one map
/// lookup, with no label hashing inside the registry and no allocation. The
/// maps on this path hash with foldhash: their keys are switchboard's own
/// route templates and status codes, never a client's text, so SipHash's
/// resistance to chosen keys would buy nothing for its cost per event.
struct RouteSeries {
    route: &'static str,
    figures: RouteFigures,
    duration: Histogram,
    by_status: foldhash::HashMap<u16, IntCounter>,
}

pub struct MetricsActor {
    metrics: Metrics,
    routes: foldhash::HashMap<(&'static str, &'static str), RouteSeries>,
    /// The latest in-flight count each worker reported.
    in_flight: HashMap<usize, i64>,
    /// The latest (active, idle, max) each database actor reported, by its
    /// name and shard.
    pools: HashMap<(&'static str, usize), [usize; 3]>,
    supervision: Supervision,
}

impl MetricsActor {
    pub fn new(supervision: Supervision) -> Self {
        Self {
            metrics: Metrics::new(),
            routes: foldhash::HashMap::default(),
            in_flight: HashMap::new(),
            pools: HashMap::new(),
            supervision,
        }
    }

    fn apply(&mut self, event: Event) {
        let m = &self.metrics;
        match event {
            Event::Request {
                method,
                route,
                status,
                seconds,
            } => {
                let http_requests = &m.http_requests;
                let series = match self.routes.entry((method, route)) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let route = entry.key().1;
                        let duration = m.http_duration.with_label_values(&[method, route]);
                        entry.insert(RouteSeries {
                            route,
                            figures: RouteFigures::default(),
                            duration,
                            by_status: foldhash::HashMap::default(),
                        })
                    }
                };
                series.duration.observe(seconds);
                let RouteSeries {
                    route,
                    figures,
                    by_status,
                    ..
                } = series;
                by_status
                    .entry(status)
                    .or_insert_with(|| {
                        http_requests.with_label_values(&[method, route, &status.to_string()])
                    })
                    .inc();
                figures.min_seconds = if figures.count == 0 {
                    seconds
                } else {
                    figures.min_seconds.min(seconds)
                };
                figures.count += 1;
                figures.errors += u64::from(status >= 500);
                figures.total_seconds += seconds;
                figures.max_seconds = figures.max_seconds.max(seconds);
            }
            Event::InFlight { worker, count } => {
                self.in_flight.insert(worker, count);
                m.http_in_flight.set(self.in_flight.values().sum());
            }
            Event::RateLimit(decision) => m.decisions[decision as usize].inc(),
            Event::Cache { hit: true } => m.cache_hits.inc(),
            Event::Cache { hit: false } => m.cache_misses.inc(),
            Event::CacheSize { entries } => m
                .cache_entries
                .set(i64::try_from(entries).unwrap_or(i64::MAX)),
            Event::CacheEvictions(n) => m.cache_evictions.inc_by(n),
            Event::Pool {
                actor,
                shard,
                active,
                idle,
                max,
            } => {
                self.pools.insert((actor, shard), [active, idle, max]);
                for (i, state) in ["active", "idle", "max"].into_iter().enumerate() {
                    let total: usize = self.pools.values().map(|pool| pool[i]).sum();
                    m.db_pool
                        .with_label_values(&[state])
                        .set(i64::try_from(total).unwrap_or(i64::MAX));
                }
            }
            Event::Query { op, seconds } => m
                .db_query_duration
                .with_label_values(&[op])
                .observe(seconds),
            Event::Upstream {
                host,
                outcome,
                seconds,
            } => {
                m.upstream_requests
                    .with_label_values(&[host.as_str(), outcome])
                    .inc();
                m.upstream_duration
                    .with_label_values(&[host.as_str()])
                    .observe(seconds);
            }
            Event::Retry { host } => m.upstream_retries.with_label_values(&[host.as_str()]).inc(),
            Event::Breaker { host, state } => m
                .breaker_state
                .with_label_values(&[host.as_str()])
                .set(i64::from(state)),
            Event::Restart { actor } => m.actor_restarts.with_label_values(&[actor]).inc(),
            Event::Messages { actor, count } => {
                m.actor_messages.with_label_values(&[actor]).inc_by(count)
            }
        }
    }

    fn summary(&self) -> StatsSummary {
        let total = |counter: &IntCounterVec| -> HashMap<String, u64> {
            let mut by_label = HashMap::new();
            for family in counter.collect() {
                for metric in family.get_metric() {
                    let label = metric
                        .get_label()
                        .first()
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default();
                    *by_label.entry(label).or_default() += metric.get_counter().get_value() as u64;
                }
            }
            by_label
        };
        let mut requests = 0;
        let mut errors_by_kind: HashMap<String, u64> = HashMap::new();
        for family in self.metrics.http_requests.collect() {
            for metric in family.get_metric() {
                let count = metric.get_counter().get_value() as u64;
                requests += count;
                let status = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "status")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                if !status.starts_with('2') && !status.starts_with('3') {
                    *errors_by_kind.entry(status).or_default() += count;
                }
            }
        }
        let cache = total(&self.metrics.cache_requests);
        let hits = cache.get("hit").copied().unwrap_or(0);
        let lookups = hits + cache.get("miss").copied().unwrap_or(0);
        let mut routes: Vec<RouteStats> = self
            .routes
            .iter()
            .map(|((method, route), series)| {
                let f = &series.figures;
                let quantile = |q| histogram_quantile(&series.duration, q);
                RouteStats {
                    method: (*method).to_owned(),
                    route: (*route).to_owned(),
                    requests: f.count,
                    server_errors: f.errors,
                    latency_ms: Latency {
                        avg: 1000.0 * f.total_seconds / f.count.max(1) as f64,
                        min: 1000.0 * f.min_seconds,
                        max: 1000.0 * f.max_seconds,
                        // Bucket interpolation can overshoot what was seen.
                        p50: 1000.0 * quantile(0.5).clamp(f.min_seconds, f.max_seconds),
                        p99: 1000.0 * quantile(0.99).clamp(f.min_seconds, f.max_seconds),
                    },
                }
            })
            .collect();
        routes.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
        StatsSummary {
            requests,
            errors_by_status: errors_by_kind,
            routes,
            cache_hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
            rate_limit_decisions: total(&self.metrics.rate_limit_decisions),
            actor_restarts: total(&self.metrics.actor_restarts),
        }
    }
}

/// A latency quantile from a histogram, interpolated within its
/// bucket as Prometheus's `histogram_quantile` does.
fn histogram_quantile(histogram: &Histogram, q: f64) -> f64 {
    let proto = histogram.metric();
    let h = proto.get_histogram();
    let count = h.get_sample_count() as f64;
    if count == 0.0 {
        return 0.0;
    }
    let rank = q * count;
    let mut lower_bound = 0.0;
    let mut below = 0.0;
    for bucket in h.get_bucket() {
        let cumulative = bucket.cumulative_count() as f64;
        if cumulative >= rank {
            let in_bucket = (cumulative - below).max(1.0);
            return lower_bound
                + (bucket.upper_bound() - lower_bound) * ((rank - below) / in_bucket);
        }
        lower_bound = bucket.upper_bound();
        below = cumulative;
    }
    lower_bound
}

impl Supervise for MetricsActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A fresh registry: every counter starts again from zero.
    fn reset(&mut self) {
        self.metrics = Metrics::new();
        self.routes.clear();
        self.in_flight.clear();
    }

    fn on_start(&mut self, ctx: &mut Context<Self>) {
        // Its own restarts and messages are recorded like everyone else's.
        let me = MetricsSink::new(ctx.address().recipient());
        self.supervision.metrics().connect(me);
    }
}

supervised_actor!(MetricsActor);

/// The text exposition of every metric.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, ActorUnavailable>")]
pub struct Gather;

/// The figures of `/stats`.
#[derive(Debug, Message)]
#[rtype(result = "Result<StatsSummary, ActorUnavailable>")]
pub struct Summarize;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStats {
    pub method: String,
    pub route: String,
    pub requests: u64,
    pub server_errors: u64,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsSummary {
    pub requests: u64,
    /// Answers that were neither 2xx nor 3xx, by status.
    pub errors_by_status: HashMap<String, u64>,
    pub routes: Vec<RouteStats>,
    pub cache_hit_ratio: Option<f64>,
    pub rate_limit_decisions: HashMap<String, u64>,
    pub actor_restarts: HashMap<String, u64>,
}

impl Handler<Record> for MetricsActor {
    type Result = ();

    fn handle(&mut self, Record(events): Record, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            events.into_iter().for_each(|event| act.apply(event))
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
    type Result = MessageResult<Summarize>;

    fn handle(&mut self, _: Summarize, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(run_guarded(self, ctx, |act, _| Ok(act.summary())))
    }
}
