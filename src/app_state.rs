//! What every handler shares: the actors' handles, the request limits and
//! the start time. No pools, maps or locks: state lives inside the actors.
//! Besides, each worker hands its handlers its own database actors
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

/// The database actors of the worker serving the request.
pub type LocalDb = actix_web::web::Data<WorkerDb>;

/// Whom a worker's handlers ask: reads go to the worker's own database
/// actor; writes too on PostgreSQL, and to SQLite's one writer on SQLite
/// (see [`crate::actors::db`]).
pub struct WorkerDb {
    reads: ActorRef<DbActor>,
    writes: ActorRef<DbActor>,
}

impl WorkerDb {
    /// `writer`: SQLite's writer, if there is one.
    pub fn new(own: ActorRef<DbActor>, writer: Option<&ActorRef<DbActor>>) -> Self {
        Self {
            writes: writer.unwrap_or(&own).clone(),
            reads: own,
        }
    }

    pub fn reads(&self) -> &ActorRef<DbActor> {
        &self.reads
    }

    pub fn writes(&self) -> &ActorRef<DbActor> {
        &self.writes
    }
}

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
    /// On SQLite, the one database actor that writes.
    pub db_writer: Option<ActorRef<DbActor>>,
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
        for db in self.db_actors() {
            statuses.push(db.status().await);
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

    /// Every database actor: the workers', then SQLite's writer.
    pub fn db_actors(&self) -> impl Iterator<Item = &ActorRef<DbActor>> {
        let workers = self.db.get().into_iter().flatten();
        workers.chain(&self.db_writer)
    }
}
