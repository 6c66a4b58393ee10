//! The database families: the pools' connections by state, summed over
//! every database actor's latest report, and query durations by operation.

use std::collections::HashMap;

use prometheus::{HistogramVec, IntGaugeVec, Registry};

use super::{gauge, histogram, saturated, LATENCY_BUCKETS};

/// The `op` label of `db_query_duration_seconds`.
const QUERY_OPS: [&str; 7] = ["create", "get", "list", "update", "delete", "ping", "probe"];
/// The `state` label of `db_pool_connections`.
const POOL_STATES: [&str; 3] = ["active", "idle", "max"];

pub struct DbMetrics {
    pool: IntGaugeVec,
    query_duration: HistogramVec,
    /// The latest (active, idle, max) each database actor reported.
    pools: HashMap<(&'static str, usize), [usize; 3]>,
}

impl DbMetrics {
    pub fn new(registry: &Registry) -> Self {
        let pool = gauge(
            registry,
            "db_pool_connections",
            "Database pool connections by state",
            &["state"],
        );
        for state in POOL_STATES {
            pool.with_label_values(&[state]).set(0);
        }
        let query_duration = histogram(
            registry,
            "db_query_duration_seconds",
            "Database query time",
            &["op"],
            LATENCY_BUCKETS,
        );
        for op in QUERY_OPS {
            query_duration.with_label_values(&[op]);
        }
        Self {
            pool,
            query_duration,
            pools: HashMap::new(),
        }
    }

    /// One database actor's pool, `[active, idle, max]`.
    pub fn pool(&mut self, actor: &'static str, shard: usize, figures: [usize; 3]) {
        self.pools.insert((actor, shard), figures);
        for (i, state) in POOL_STATES.into_iter().enumerate() {
            let total: usize = self.pools.values().map(|pool| pool[i]).sum();
            self.pool.with_label_values(&[state]).set(saturated(total));
        }
    }

    pub fn query(&self, op: &str, seconds: f64) {
        self.query_duration
            .with_label_values(&[op])
            .observe(seconds);
    }
}
