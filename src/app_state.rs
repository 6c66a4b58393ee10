//! What every handler shares: the actors' handles, the request limits and
//! the start time. No pools, maps or locks: state lives inside the actors.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::actors::cache::CacheActor;
use crate::actors::db::DbActor;
use crate::actors::fetcher::FetcherActor;
use crate::actors::metrics::MetricsActor;
use crate::actors::rate_limiter::RateLimiterShards;
use crate::actors::supervision::ActorStatus;
use crate::actors::ActorRef;

/// The per-request limits the guards enforce.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub trust_proxy: bool,
}

pub struct AppState {
    pub db: ActorRef<DbActor>,
    pub cache: ActorRef<CacheActor>,
    pub metrics: ActorRef<MetricsActor>,
    pub fetcher: ActorRef<FetcherActor>,
    /// Most URLs one `POST /fetch` may ask for.
    pub fetch_max_urls: usize,
    /// One shard per HTTP worker, set once the workers have started them;
    /// never set when rate limiting is turned off.
    pub rate_limiter: OnceLock<RateLimiterShards>,
    pub limits: RequestLimits,
    pub started_at: Instant,
}

impl AppState {
    /// Every actor's own account of its health.
    pub async fn actor_statuses(&self) -> Vec<ActorStatus> {
        let mut statuses = vec![
            self.db.status().await,
            self.cache.status().await,
            self.fetcher.status().await,
            self.metrics.status().await,
        ];
        for shard in self.rate_limiter.get().iter().flat_map(|l| l.shards()) {
            statuses.push(shard.status().await);
        }
        statuses
    }
}
