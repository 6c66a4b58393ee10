//! `/stats`: the registry's figures summed up for people, as JSON.

use std::collections::HashMap;

use prometheus::core::{Collector, Metric};
use prometheus::{Histogram, IntCounterVec};
use serde::Serialize;

use super::registry::Metrics;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouteStats {
    pub method: String,
    pub route: String,
    pub requests: u64,
    pub server_errors: u64,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSummary {
    pub requests: u64,
    /// Answers that were neither 2xx nor 3xx, by status.
    pub errors_by_status: HashMap<String, u64>,
    pub routes: Vec<RouteStats>,
    pub cache_hit_ratio: Option<f64>,
    pub rate_limit_decisions: HashMap<String, u64>,
    pub actor_restarts: HashMap<String, u64>,
}

/// The figures of `/stats`, read off the registry.
pub fn summarize(metrics: &Metrics) -> StatsSummary {
    let (requests, errors_by_status) = requests(&metrics.http.requests);
    let cache = by_first_label(&metrics.cache.requests);
    let hits = cache.get("hit").copied().unwrap_or(0);
    let lookups = hits + cache.get("miss").copied().unwrap_or(0);
    StatsSummary {
        requests,
        errors_by_status,
        routes: routes(metrics),
        cache_hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
        rate_limit_decisions: by_first_label(&metrics.rate_limit_decisions),
        actor_restarts: by_first_label(&metrics.actors.restarts),
    }
}

/// A counter's total per value of its first label.
fn by_first_label(counter: &IntCounterVec) -> HashMap<String, u64> {
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
}

/// Requests answered, and those neither 2xx nor 3xx by status.
fn requests(http_requests: &IntCounterVec) -> (u64, HashMap<String, u64>) {
    let mut requests = 0;
    let mut errors: HashMap<String, u64> = HashMap::new();
    for family in http_requests.collect() {
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
                *errors.entry(status).or_default() += count;
            }
        }
    }
    (requests, errors)
}

/// Each route's figures, in route order.
fn routes(metrics: &Metrics) -> Vec<RouteStats> {
    let mut routes: Vec<RouteStats> = metrics
        .http
        .routes
        .iter()
        .map(|((method, route), series)| {
            let f = &series.figures;
            let quantile = |q| histogram_quantile(&series.latency, q);
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
    routes
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
