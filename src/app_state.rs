//! What every handler shares: the actors' handles, the roster, the request
//! limits and the start time. No pools, maps or locks: state lives inside
//! the actors. Besides, each worker hands its handlers its own database
//! actor ([`LocalDb`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::actors::cache::CacheHandle;
use crate::actors::db::DbActor;
use crate::actors::fetcher::FetcherActor;
use crate::actors::metrics::MetricsActor;
use crate::actors::rate_limiter::RateLimiterShards;
use crate::actors::roster::Roster;
use crate::actors::ActorRef;
use crate::lifecycle::Lifecycle;
use crate::rate_limit::client::ClientPolicy;
use crate::rate_limit::headers::PolicyHeaders;

/// The database actor of the worker serving the request.
pub type LocalDb = actix_web::web::Data<ActorRef<DbActor>>;

/// The per-request limits the guards enforce.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub body_limit_bytes: usize,
    /// A body must arrive in full within this (408).
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    /// Who a request counts against.
    pub clients: ClientPolicy,
}

/// The rate limiter: its shards, one per worker, and the response headers
/// of its policy.
pub struct RateLimiting {
    pub shards: RateLimiterShards,
    pub headers: PolicyHeaders,
}

pub struct AppState {
    pub cache: CacheHandle,
    pub metrics: ActorRef<MetricsActor>,
    pub fetcher: ActorRef<FetcherActor>,
    /// Most URLs one `POST /fetch` may ask for.
    pub fetch_max_urls: usize,
    /// Set once the workers have started their shards; never set when rate
    /// limiting is turned off.
    pub rate_limiting: OnceLock<RateLimiting>,
    /// Every actor, set once the workers have started theirs.
    pub roster: OnceLock<Roster>,
    /// Serving, draining or escalating, as the probes report it.
    pub lifecycle: Lifecycle,
    pub limits: RequestLimits,
    pub started_at: Instant,
}
