//! The upstream families, per host: attempts by outcome, their durations,
//! retries, and the circuit breaker's state.

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use super::{counter, gauge, histogram, LATENCY_BUCKETS};

pub struct UpstreamMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    breaker: IntGaugeVec,
}

impl UpstreamMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: counter(
                registry,
                "upstream_requests_total",
                "Upstream attempts by host and outcome",
                &["host", "outcome"],
            ),
            duration: histogram(
                registry,
                "upstream_request_duration_seconds",
                "Upstream attempt time",
                &["host"],
                LATENCY_BUCKETS,
            ),
            retries: counter(
                registry,
                "upstream_retries_total",
                "Upstream retries by host",
                &["host"],
            ),
            breaker: gauge(
                registry,
                "circuit_breaker_state",
                "Per upstream host: 0 closed, 1 open, 2 half-open",
                &["host"],
            ),
        }
    }

    pub fn attempt(&self, host: &str, outcome: &str, seconds: f64) {
        self.requests.with_label_values(&[host, outcome]).inc();
        self.duration.with_label_values(&[host]).observe(seconds);
    }

    pub fn retry(&self, host: &str) {
        self.retries.with_label_values(&[host]).inc();
    }

    /// `state`: 0 closed, 1 open, 2 half-open.
    pub fn breaker(&self, host: &str, state: u8) {
        self.breaker
            .with_label_values(&[host])
            .set(i64::from(state));
        // The host is known from now on: its retries exist at 0.
        self.retries.with_label_values(&[host]);
    }
}
