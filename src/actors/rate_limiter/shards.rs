//! The limiter actors of every HTTP worker behind one handle: a client
//! always maps to the same shard, so its allowance lives in one place
//! whichever worker serves it.

use super::{LimiterStats, RateLimiterActor, Stats};
use crate::actors::sharding::ShardPicker;
use crate::actors::ActorRef;
use crate::rate_limit::RateKey;

pub struct RateLimiterShards {
    shards: Vec<ActorRef<RateLimiterActor>>,
    picker: ShardPicker,
}

impl RateLimiterShards {
    /// `None` without a shard (limiting is off).
    pub fn new(shards: Vec<ActorRef<RateLimiterActor>>) -> Option<Self> {
        (!shards.is_empty()).then(|| Self {
            shards,
            picker: ShardPicker::default(),
        })
    }

    pub fn shards(&self) -> &[ActorRef<RateLimiterActor>] {
        &self.shards
    }

    /// The index of the shard that holds this client's allowance.
    pub fn shard_of(&self, key: &RateKey) -> usize {
        self.picker.index(key, self.shards.len())
    }

    /// Totals over every shard.
    pub async fn stats(&self) -> LimiterStats {
        let mut total = LimiterStats::default();
        for shard in &self.shards {
            if let Ok(stats) = shard.ask(Stats).await {
                total.keys += stats.keys;
                total.allowed += stats.allowed;
                total.limited += stats.limited;
            }
        }
        total
    }
}
