//! The cache families: lookups by result, entries, evictions, and whether
//! this instance hears other instances' writes.

use std::collections::HashMap;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, registered};

pub struct CacheMetrics {
    pub requests: IntCounterVec,
    hits: IntCounter,
    misses: IntCounter,
    entries: IntGauge,
    entries_by_shard: HashMap<usize, u64>,
    evictions: IntCounter,
    listening: IntGauge,
    heard: IntCounter,
}

impl CacheMetrics {
    pub fn new(registry: &Registry) -> Self {
        let requests = counter(
            registry,
            "cache_requests_total",
            "Cache lookups by result",
            &["result"],
        );
        Self {
            hits: requests.with_label_values(&["hit"]),
            misses: requests.with_label_values(&["miss"]),
            requests,
            entries: registered(
                registry,
                IntGauge::new("cache_entries", "Entries in the response cache"),
            ),
            entries_by_shard: HashMap::new(),
            evictions: registered(
                registry,
                IntCounter::new("cache_evictions_total", "Entries evicted from the cache"),
            ),
            listening: registered(
                registry,
                IntGauge::new(
                    "cache_invalidation_listening",
                    "1 while this instance hears other instances' writes (its cache serves); 0 while it does not (paused), or with no channel",
                ),
            ),
            heard: registered(
                registry,
                IntCounter::new(
                    "cache_invalidations_received_total",
                    "Cache invalidations heard from other instances' writes (and this one's)",
                ),
            ),
        }
    }

    pub fn lookup(&self, hit: bool) {
        if hit {
            self.hits.inc()
        } else {
            self.misses.inc()
        }
    }

    pub fn size(&mut self, shard: usize, entries: u64) {
        self.entries_by_shard.insert(shard, entries);
        let total: u64 = self.entries_by_shard.values().sum();
        self.entries.set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    pub fn evicted(&self, n: u64) {
        self.evictions.inc_by(n);
    }

    pub fn listening(&self, listening: bool) {
        self.listening.set(i64::from(listening));
    }

    pub fn heard(&self) {
        self.heard.inc();
    }
}
