//! The HTTP families: requests, their durations (per route template and
//! status), requests in flight; and each route's figures for `/stats`,
//! resolved once per route so that recording a request is one map lookup.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry,
};

use super::{counter, histogram, registered, LATENCY_BUCKETS};

/// Per route: what `/stats` shows beside the histogram.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteFigures {
    pub count: u64,
    pub errors: u64,
    pub total_seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
}

impl RouteFigures {
    fn observe(&mut self, status: u16, seconds: f64) {
        self.min_seconds = if self.count == 0 {
            seconds
        } else {
            self.min_seconds.min(seconds)
        };
        self.count += 1;
        self.errors += u64::from(status >= 500);
        self.total_seconds += seconds;
        self.max_seconds = self.max_seconds.max(seconds);
    }
}

/// One route's series, resolved once.
pub struct RouteSeries {
    pub figures: RouteFigures,
    /// All its answers' latencies, for `/stats` (not exported: the exported
    /// histogram is per status).
    pub latency: Histogram,
    by_status: foldhash::HashMap<u16, (IntCounter, Histogram)>,
}

pub struct HttpMetrics {
    pub requests: IntCounterVec,
    duration: HistogramVec,
    /// Buckets of the exported request histograms, reaching past the
    /// request deadline.
    buckets: Vec<f64>,
    in_flight: IntGauge,
    pub routes: foldhash::HashMap<(&'static str, &'static str), RouteSeries>,
    /// The latest in-flight count each worker reported.
    in_flight_by_worker: HashMap<usize, i64>,
}

impl HttpMetrics {
    /// `deadline`: the request deadline, which the buckets reach past.
    pub fn new(registry: &Registry, deadline: Duration) -> Self {
        let deadline = deadline.as_secs_f64();
        let mut buckets = LATENCY_BUCKETS.to_vec();
        buckets.extend([deadline, 2.0 * deadline].into_iter().filter(|b| *b > 10.0));
        Self {
            requests: counter(
                registry,
                "http_requests_total",
                "HTTP requests answered",
                &["method", "route", "status"],
            ),
            duration: histogram(
                registry,
                "http_request_duration_seconds",
                "Time to answer an HTTP request",
                &["method", "route", "status"],
                &buckets,
            ),
            buckets,
            in_flight: registered(
                registry,
                IntGauge::new("http_requests_in_flight", "Requests being handled now"),
            ),
            routes: foldhash::HashMap::default(),
            in_flight_by_worker: HashMap::new(),
        }
    }

    pub fn in_flight(&mut self, worker: usize, count: i64) {
        self.in_flight_by_worker.insert(worker, count);
        self.in_flight.set(self.in_flight_by_worker.values().sum());
    }

    pub fn request(
        &mut self,
        method: &'static str,
        route: &'static str,
        status: u16,
        seconds: f64,
    ) {
        let series = match self.routes.entry((method, route)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let opts =
                    HistogramOpts::new("route_latency", "for /stats").buckets(self.buckets.clone());
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
                self.requests.with_label_values(&labels),
                self.duration.with_label_values(&labels),
            )
        });
        requests.inc();
        duration.observe(seconds);
        series.figures.observe(status, seconds);
    }
}
