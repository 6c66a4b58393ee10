//! What each part of switchboard is built from, derived from the settings
//! once, so that start-up reads them and nothing computes them twice.

use crate::actors::cache::CacheConfig;
use crate::actors::fetcher::FetchConfig;
use crate::actors::rate_limiter::LimiterBackend;
use crate::app_state::RequestLimits;
use crate::auth::{KeyFiles, Rules};
use crate::fetch::allow_list::AllowList;
use crate::rate_limit::RatePolicy;

use super::{CacheInvalidation, RateLimitBackend, Settings};

impl Settings {
    /// One worker's cache shard: its share of the bounds (at least one
    /// entry each, while the cache is on).
    pub fn cache_config(&self) -> CacheConfig {
        let shards = self.server.workers.max(1) as u64;
        let share = |bound: u64| {
            if bound == 0 {
                0
            } else {
                (bound / shards).max(1)
            }
        };
        CacheConfig {
            max_entries: share(self.cache.max_entries),
            max_bytes: share(self.cache.max_bytes),
            ttl: self.cache.ttl,
            fill_window: self.server.request_timeout,
            start_paused: self.cache_invalidation() != CacheInvalidation::None,
        }
    }

    pub fn fetch_config(&self) -> FetchConfig {
        FetchConfig {
            allow: AllowList::new(&self.fetch.allow_hosts),
            max_attempts: self.fetch.max_attempts,
            attempt_timeout: self.fetch.timeout,
            // Inside the request deadline, so one slow URL never fails the rest.
            total_budget: self.server.request_timeout.mul_f64(0.9),
            max_body_bytes: self.fetch.max_body_bytes,
            host_concurrency: self.fetch.host_concurrency,
            breaker_threshold: self.fetch.breaker_threshold,
            breaker_cooldown: self.fetch.breaker_cooldown,
        }
    }

    /// The rate limiter's policy and where its allowances live; `None`
    /// when limiting is turned off.
    pub fn rate_limiter(&self) -> Option<(RatePolicy, LimiterBackend)> {
        let policy = RatePolicy::new(self.rate_limit.per_second, self.rate_limit.burst)?;
        let backend = match self.rate_limit.backend {
            RateLimitBackend::Memory => LimiterBackend::Memory,
            RateLimitBackend::Redis => LimiterBackend::Redis(self.rate_limit.redis_url.clone()),
        };
        Some((policy, backend))
    }

    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            body_limit_bytes: self.server.body_limit_bytes,
            body_read_timeout: self.server.body_read_timeout,
            request_timeout: self.server.request_timeout,
            clients: self.clients.policy(),
        }
    }

    /// Where the token keys are read from; none configured: no checks.
    pub fn auth_keys(&self) -> KeyFiles {
        KeyFiles {
            secret: self.auth.jwt_secret_file.clone(),
            jwks: self.auth.jwks_file.clone(),
        }
    }

    /// What a token must satisfy besides its signature.
    pub fn auth_rules(&self) -> Rules {
        Rules {
            issuer: self.auth.issuer.clone(),
            audience: self.auth.audience.clone(),
            leeway_seconds: self.auth.leeway_seconds,
        }
    }

    /// Each HTTP worker's share of the database pool.
    pub fn pool_share(&self) -> usize {
        (self.database.pool_size() / self.server.workers).max(1)
    }
}
