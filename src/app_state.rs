//! What every handler shares: the actors' handles, the request limits and
//! the start time. No pools, maps or locks: state lives inside the actors.
//! Besides, each worker hands its handlers its own database actor
//! ([`LocalDb`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::actors::cache::CacheActor;
use crate::actors::db::DbActor;
use crate::actors::fetcher::FetcherActor;
use crate::actors::metrics::MetricsActor;
use crate::actors::rate_limiter::RateLimiterShards;
use crate::actors::supervision::ActorStatus;
use crate::actors::ActorRef;

/// The database actor of the worker serving the request.
pub type LocalDb = actix_web::web::Data<ActorRef<DbActor>>;

/// The per-request limits the guards enforce.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub trust_proxy: bool,
}

pub struct AppState {
    /// One database actor per HTTP worker, set once the workers have
    /// started them. Handlers use their own worker's ([`LocalDb`]); this is
    /// for health reports and fault drills.
    pub db: OnceLock<Vec<ActorRef<DbActor>>>,
    pub cache: ActorRef<CacheActor>,
    /// Whether user reads go through the cache: not when it may hold no
    /// entry (`SWITCHBOARD_CACHE_MAX_ENTRIES=0`), which spares each read and
    /// write a call to the cache actor.
    pub users_cached: bool,
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
        let mut statuses = Vec::new();
        for shard in self.db.get().iter().flat_map(|shards| shards.iter()) {
            statuses.push(shard.status().await);
        }
        statuses.extend([
            self.cache.status().await,
            self.fetcher.status().await,
            self.metrics.status().await,
        ]);
        for shard in self.rate_limiter.get().iter().flat_map(|l| l.shards()) {
            statuses.push(shard.status().await);
        }
        statuses
    }
}
