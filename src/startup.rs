//! Building and running the application: migrate the database, start each
//! actor on an arbiter (thread) of its own under supervision, bind the
//! listener (port 0 picks a free one, as tests do), and wire the routes.
//!
//! Shutdown is one explicit sequence in [`Application::run_until_stopped`]:
//! actix-web stops accepting on SIGINT/SIGTERM and drains requests in flight
//! up to the shutdown timeout; then each actor is told to shut down (the
//! database actor closes its pool) and its arbiter is stopped and joined.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix::{Arbiter, Supervisor};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::actors::cache::{CacheActor, CacheConfig};
use crate::actors::db::DbActor;
use crate::actors::rate_limiter::{RateLimiterActor, RateLimiterShards, RatePolicy};
use crate::actors::supervision::{Shutdown, Supervise};
use crate::actors::ActorRef;
use crate::app_state::{AppState, RequestLimits};
use crate::config::Settings;
use crate::db::{migrate, DbPool};
use crate::middleware::guards::WorkerGuards;
use crate::middleware::request_context::request_context;
use crate::routes;

/// Rate limiter actors, each on its own arbiter; clients are spread over
/// them by a hash of their address.
const RATE_LIMITER_SHARDS: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// An actor and the arbiter thread it runs on.
struct Running<A: Supervise> {
    actor: ActorRef<A>,
    arbiter: Arbiter,
}

impl<A: Supervise + actix::Handler<Shutdown>> Running<A> {
    fn start(
        name: &'static str,
        call_timeout: Duration,
        make: impl FnOnce() -> A + Send + 'static,
    ) -> Self {
        let arbiter = Arbiter::new();
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| make());
        Self {
            actor: ActorRef::new(name, addr, call_timeout),
            arbiter,
        }
    }

    async fn stop(self) {
        let _ = self.actor.ask(Shutdown).await;
        self.arbiter.stop();
        let arbiter = self.arbiter;
        let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
    }
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    rate_limiter: Vec<Running<RateLimiterActor>>,
    cache: Running<CacheActor>,
    db: Running<DbActor>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        migrate(&settings.database_url)
            .await
            .map_err(StartupError::Database)?;
        let pool = DbPool::build(&settings.database_url, settings.pool_size())
            .map_err(StartupError::Database)?;
        let call_timeout = settings.request_timeout;
        let (url, pool_size) = (settings.database_url.clone(), settings.pool_size());
        let db = Running::start("db", call_timeout, move || {
            DbActor::new(url, pool_size, pool)
        });
        let cache_config = CacheConfig {
            max_entries: settings.cache_max_entries,
            max_bytes: settings.cache_max_bytes,
            ttl: settings.cache_ttl,
            fill_window: call_timeout,
        };
        let cache = Running::start("cache", call_timeout, move || CacheActor::new(cache_config));
        let policy = RatePolicy::new(settings.rate_limit_per_second, settings.rate_limit_burst);
        let rate_limiter: Vec<Running<RateLimiterActor>> = policy
            .map(|policy| {
                (0..RATE_LIMITER_SHARDS)
                    .map(|_| {
                        Running::start("rate_limiter", call_timeout, move || {
                            RateLimiterActor::new(policy, "rate_limiter")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();

        let state = web::Data::new(AppState {
            db: db.actor.clone(),
            cache: cache.actor.clone(),
            rate_limiter: policy.map(|policy| {
                RateLimiterShards::new(policy, rate_limiter.iter().map(|r| r.actor.clone()).collect())
            }),
            limits: RequestLimits {
                body_limit_bytes: settings.body_limit_bytes,
                request_timeout: settings.request_timeout,
                trust_proxy: settings.trust_proxy,
            },
            started_at: Instant::now(),
        });
        let app_state = state.clone();
        let listener = TcpListener::bind(settings.bind).map_err(|source| StartupError::Bind {
            address: settings.bind.to_string(),
            source,
        })?;
        let bind_error = |source| StartupError::Bind {
            address: settings.bind.to_string(),
            source,
        };
        let address = listener.local_addr().map_err(bind_error)?;
        let (body_limit, chaos) = (settings.body_limit_bytes, settings.chaos);
        let (max_in_flight, workers) = (settings.max_in_flight, settings.workers);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(WorkerGuards::new(max_in_flight, workers))
                .app_data(
                    web::JsonConfig::default()
                        .limit(body_limit)
                        .error_handler(routes::json_error),
                )
                .app_data(web::PayloadConfig::default().limit(body_limit))
                .app_data(web::QueryConfig::default().error_handler(routes::query_error))
                .app_data(web::PathConfig::default().error_handler(routes::path_error))
                .configure(|cfg| routes::configure(cfg, chaos))
                .default_service(web::to(routes::not_found))
                .wrap(from_fn(request_context))
        })
        .workers(settings.workers)
        // Signals are handled in `run_until_stopped`: actix-server's own
        // handler would also stop the actix system, and with it the actors'
        // arbiters, before they are shut down in order.
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .listen(listener)
        .map_err(bind_error)?
        .run();
        tracing::info!(
            %address,
            backend = settings.database_url.backend_name(),
            workers = settings.workers,
            "listening"
        );
        Ok(Self {
            port: address.port(),
            server,
            state: app_state,
            rate_limiter,
            cache,
            db,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the handlers share: the actors' handles (tests ask actors
    /// directly for figures no route shows yet).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Stops the server from outside (tests; signals do the same).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until a signal or [`ServerHandle::stop`], drains, then stops
    /// the actors and closes the pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let on_signal = actix_web::rt::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down: draining requests in flight");
            handle.stop(true).await;
        });
        let served = self.server.await;
        on_signal.abort();
        tracing::info!("server stopped; shutting down actors");
        for shard in self.rate_limiter {
            shard.stop().await;
        }
        self.cache.stop().await;
        self.db.stop().await;
        tracing::info!("switchboard stopped");
        served
    }
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for shutdown signals");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}
