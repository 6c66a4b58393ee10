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
//! Recording a request is one map lookup: each route's series are resolved
//! once. The maps on this path hash with foldhash: their keys are
//! switchboard's own route templates, status codes and actor names, never a
//! client's text, so SipHash's resistance to chosen keys would buy nothing
//! for its cost per event.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::metrics::{Event, RateDecision};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The `op` label of `db_query_duration_seconds`.
const QUERY_OPS: [&str; 7] = ["create", "get", "list", "update", "delete", "ping", "probe"];
/// The `state` label of `db_pool_connections`.
const POOL_STATES: [&str; 3] = ["active", "idle", "max"];
/// The `state` label of `actor_state`.
const ACTOR_STATES: [&str; 3] = ["running", "backing_off", "given_up"];

/// Per route: what `/stats` shows beside the histogram.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteFigures {
    pub count: u64,
    pub errors: u64,
    pub total_seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
}

/// One route's series, resolved once.
pub struct RouteSeries {
    pub figures: RouteFigures,
    /// All its answers' latencies, for `/stats` (not exported: the exported
    /// histogram is per status).
    pub latency: Histogram,
    by_status: foldhash::HashMap<u16, (IntCounter, Histogram)>,
}

/// One actor instance's series.
struct ActorSeries {
    restarts: IntCounter,
    messages: IntCounter,
    /// In [`ACTOR_STATES`]' order.
    states: [IntGauge; 3],
}

/// Every metric switchboard exports, and the latest reports behind its
/// summed gauges.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// Buckets of the exported request histograms, reaching past the
    /// request deadline.
    http_buckets: Vec<f64>,
    http_in_flight: IntGauge,
    pub cache_requests: IntCounterVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    cache_evictions: IntCounter,
    invalidation_listening: IntGauge,
    invalidations_heard: IntCounter,
    pub rate_limit_decisions: IntCounterVec,
    /// In [`RateDecision::ALL`]'s order.
    decisions: [IntCounter; 3],
    db_pool: IntGaugeVec,
    db_query_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_retries: IntCounterVec,
    breaker_state: IntGaugeVec,
    pub actor_restarts: IntCounterVec,
    actor_messages: IntCounterVec,
    actor_state: IntGaugeVec,
    pub routes: foldhash::HashMap<(&'static str, &'static str), RouteSeries>,
    actors: foldhash::HashMap<(&'static str, usize), ActorSeries>,
    /// The latest in-flight count each worker reported.
    in_flight: HashMap<usize, i64>,
    /// The latest (active, idle, max) each database actor reported.
    pools: HashMap<(&'static str, usize), [usize; 3]>,
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
        let deadline = deadline.as_secs_f64();
        let mut http_buckets = LATENCY_BUCKETS.to_vec();
        http_buckets.extend([deadline, 2.0 * deadline].into_iter().filter(|b| *b > 10.0));
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
        let db_pool = gauge(
            &registry,
            "db_pool_connections",
            "Database pool connections by state",
            &["state"],
        );
        for state in POOL_STATES {
            db_pool.with_label_values(&[state]).set(0);
        }
        let db_query_duration = histogram(
            &registry,
            "db_query_duration_seconds",
            "Database query time",
            &["op"],
            LATENCY_BUCKETS,
        );
        for op in QUERY_OPS {
            db_query_duration.with_label_values(&[op]);
        }
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
                &["method", "route", "status"],
                &http_buckets,
            ),
            http_buckets,
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
            invalidation_listening: registered(
                &registry,
                IntGauge::new(
                    "cache_invalidation_listening",
                    "1 while this instance hears other instances' writes (its cache serves); 0 while it does not (paused), or with no channel",
                ),
            ),
            invalidations_heard: registered(
                &registry,
                IntCounter::new(
                    "cache_invalidations_received_total",
                    "Cache invalidations heard from other instances' writes (and this one's)",
                ),
            ),
            decisions: RateDecision::ALL
                .map(|decision| rate_limit_decisions.with_label_values(&[decision.label()])),
            rate_limit_decisions,
            db_pool,
            db_query_duration,
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
                LATENCY_BUCKETS,
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
                &["actor", "shard"],
            ),
            actor_messages: counter(
                &registry,
                "actor_messages_total",
                "Messages handled by each actor",
                &["actor", "shard"],
            ),
            actor_state: gauge(
                &registry,
                "actor_state",
                "1 for each actor's current state (running, backing_off, given_up), else 0",
                &["actor", "shard", "state"],
            ),
            registry,
            routes: foldhash::HashMap::default(),
            actors: foldhash::HashMap::default(),
            in_flight: HashMap::new(),
            pools: HashMap::new(),
        }
    }

    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Request {
                method,
                route,
                status,
                seconds,
            } => self.request(method, route, status, seconds),
            Event::InFlight { worker, count } => {
                self.in_flight.insert(worker, count);
                self.http_in_flight.set(self.in_flight.values().sum());
            }
            Event::RateLimit(decision) => self.decisions[decision as usize].inc(),
            Event::Cache { hit: true } => self.cache_hits.inc(),
            Event::Cache { hit: false } => self.cache_misses.inc(),
            Event::CacheSize { entries } => self
                .cache_entries
                .set(i64::try_from(entries).unwrap_or(i64::MAX)),
            Event::CacheEvictions(n) => self.cache_evictions.inc_by(n),
            Event::Invalidations { listening } => {
                self.invalidation_listening.set(i64::from(listening))
            }
            Event::InvalidationHeard => self.invalidations_heard.inc(),
            Event::Pool {
                actor,
                shard,
                active,
                idle,
                max,
            } => {
                self.pools.insert((actor, shard), [active, idle, max]);
                for (i, state) in POOL_STATES.into_iter().enumerate() {
                    let total: usize = self.pools.values().map(|pool| pool[i]).sum();
                    self.db_pool
                        .with_label_values(&[state])
                        .set(saturated(total));
                }
            }
            Event::Query { op, seconds } => self
                .db_query_duration
                .with_label_values(&[op])
                .observe(seconds),
            Event::Upstream {
                host,
                outcome,
                seconds,
            } => {
                self.upstream_requests
                    .with_label_values(&[host.as_str(), outcome])
                    .inc();
                self.upstream_duration
                    .with_label_values(&[host.as_str()])
                    .observe(seconds);
            }
            Event::Retry { host } => self
                .upstream_retries
                .with_label_values(&[host.as_str()])
                .inc(),
            Event::Breaker { host, state } => {
                self.breaker_state
                    .with_label_values(&[host.as_str()])
                    .set(i64::from(state));
                // The host is known from now on: its retries exist at 0.
                self.upstream_retries.with_label_values(&[host.as_str()]);
            }
            Event::Restart { actor, shard } => self.actor(actor, shard).restarts.inc(),
            Event::Messages {
                actor,
                shard,
                count,
            } => self.actor(actor, shard).messages.inc_by(count),
            Event::ActorState {
                actor,
                shard,
                state,
            } => {
                for (gauge, name) in self.actor(actor, shard).states.iter().zip(ACTOR_STATES) {
                    gauge.set(i64::from(name == state));
                }
            }
        }
    }

    fn request(&mut self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        let series = match self.routes.entry((method, route)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let opts = HistogramOpts::new("route_latency", "for /stats")
                    .buckets(self.http_buckets.clone());
                entry.insert(RouteSeries {
                    figures: RouteFigures::default(),
                    latency: Histogram::with_opts(opts).expect("valid buckets"),
                    by_status: foldhash::HashMap::default(),
                })
            }
        };
        series.latency.observe(seconds);
        let (requests, duration) = series.by_status.entry(status).or_insert_with(|| {
            let status = status.to_string();
            let labels = [method, route, status.as_str()];
            (
                self.http_requests.with_label_values(&labels),
                self.http_duration.with_label_values(&labels),
            )
        });
        requests.inc();
        duration.observe(seconds);
        let figures = &mut series.figures;
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

    /// An actor instance's series, created at zero on first sight.
    fn actor(&mut self, actor: &'static str, shard: usize) -> &ActorSeries {
        let (restarts, messages, states) = (
            &self.actor_restarts,
            &self.actor_messages,
            &self.actor_state,
        );
        self.actors.entry((actor, shard)).or_insert_with(|| {
            let shard = shard.to_string();
            let labels = [actor, shard.as_str()];
            ActorSeries {
                restarts: restarts.with_label_values(&labels),
                messages: messages.with_label_values(&labels),
                states: ACTOR_STATES
                    .map(|state| states.with_label_values(&[actor, shard.as_str(), state])),
            }
        })
    }
}
