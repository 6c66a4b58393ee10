//! Building and running the application: migrate the database, start the
//! metrics, cache and fetcher actors each on an arbiter (thread) of its own
//! under supervision, bind the listener (port 0 picks a free one, as tests
//! do), and wire the routes. Each HTTP worker starts, on its own thread, its
//! own database actor (with its share of the pool), its own rate limiter
//! shard and its own guard state. On SQLite, one more database actor, on an
//! arbiter of its own, does every write (see [`crate::actors::db`]).
//!
//! Shutdown is one explicit sequence in [`Application::run_until_stopped`]:
//! actix-web stops accepting on SIGINT/SIGTERM and drains requests in flight
//! up to the shutdown timeout; the workers' database actors close their pools
//! as their threads end, and are waited for; then each other actor (SQLite's
//! writer first) is told to shut down and its arbiter is stopped and joined.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::{Arbiter, Supervisor};
use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::rt::task::JoinHandle;
use actix_web::{web, App, HttpServer};

use crate::actors::cache::{CacheActor, CacheConfig};
use crate::actors::db::{DbActor, SQLITE_WRITERS};
use crate::actors::fetcher::{FetchConfig, FetcherActor};
use crate::actors::metrics::MetricsActor;
use crate::actors::rate_limiter::{
    LimiterBackend, RateLimiterActor, RateLimiterShards, RatePolicy,
};
use crate::actors::supervision::{Shutdown, Supervise};
use crate::actors::ActorRef;
use crate::app_state::{AppState, RequestLimits, WorkerDb};
use crate::config::{DatabaseUrl, RateLimitBackend, Settings};
use crate::db::{migrate, DbPool, PageCache};
use crate::fetch::allow_list::AllowList;
use crate::metrics::MetricsHandle;
use crate::middleware::guards::WorkerGuards;
use crate::middleware::request_context::request_context;
use crate::routes;

/// How long the HTTP workers may take to start their actors.
const SHARD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped worker's database actor may take to close its pool.
const SHARD_END_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the HTTP workers did not start")]
    Workers,
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
    server: JoinHandle<std::io::Result<()>>,
    handle: ServerHandle,
    state: web::Data<AppState>,
    db_writer: Option<Running<DbActor>>,
    fetcher: Running<FetcherActor>,
    cache: Running<CacheActor>,
    metrics: Running<MetricsActor>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        migrate(&settings.database_url)
            .await
            .map_err(StartupError::Database)?;
        // The pool is split between the workers' database actors. The
        // settings are checked here, so the workers' builds cannot fail.
        let shard_pool_size = (settings.pool_size() / settings.workers).max(1);
        DbPool::build(
            &settings.database_url,
            shard_pool_size,
            DbActor::WORKER_PAGE_CACHE,
        )
        .map_err(StartupError::Database)?;
        let call_timeout = settings.request_timeout;
        let metrics = Running::start("metrics", call_timeout, MetricsActor::new);
        let recording = if settings.metrics {
            MetricsHandle::new(metrics.actor.clone())
        } else {
            MetricsHandle::disabled()
        };
        let db_writer = match &settings.database_url {
            DatabaseUrl::Sqlite(_) => {
                let (url, writer_metrics) = (settings.database_url.clone(), recording.clone());
                let pool = DbPool::build(&url, SQLITE_WRITERS, PageCache::Default)
                    .map_err(StartupError::Database)?;
                // Its pool's series comes after the workers' (0..workers).
                let shard = settings.workers;
                Some(Running::start("db_writer", call_timeout, move || {
                    DbActor::sqlite_writer(url, pool, shard, writer_metrics)
                }))
            }
            DatabaseUrl::Postgres(_) => None,
        };
        let cache_config = cache_config(&settings);
        let cache = Running::start("cache", call_timeout, {
            let recording = recording.clone();
            move || CacheActor::new(cache_config, recording)
        });
        let fetch_config = fetch_config(&settings);
        let (fetch_cache, fetch_metrics) = (cache.actor.clone(), recording.clone());
        let fetcher = Running::start("fetcher", call_timeout, move || {
            FetcherActor::new(fetch_config, fetch_cache, call_timeout, fetch_metrics)
        });
        let policy = RatePolicy::new(settings.rate_limit_per_second, settings.rate_limit_burst);
        let state = web::Data::new(AppState {
            db: OnceLock::new(),
            db_writer: db_writer.as_ref().map(|writer| writer.actor.clone()),
            cache: cache.actor.clone(),
            users_cached: settings.cache_max_entries > 0,
            metrics: metrics.actor.clone(),
            fetcher: fetcher.actor.clone(),
            fetch_max_urls: settings.fetch_max_urls,
            rate_limiter: OnceLock::new(),
            limits: RequestLimits {
                body_limit_bytes: settings.body_limit_bytes,
                request_timeout: call_timeout,
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
        // One rate limiter shard per worker, on the worker's own thread: a
        // check for a client whose shard is local costs no thread hop.
        let (shard_started, mut started_shards) = tokio::sync::mpsc::unbounded_channel();
        let (db_started, mut started_dbs) = tokio::sync::mpsc::unbounded_channel();
        let database_url = settings.database_url.clone();
        let worker_ids = Arc::new(AtomicUsize::new(0));
        let limiter_backend = match settings.rate_limit_backend {
            RateLimitBackend::Memory => LimiterBackend::Memory,
            RateLimitBackend::Redis => LimiterBackend::Redis(settings.redis_url.clone()),
        };
        let server = HttpServer::new(move || {
            if let Some(policy) = policy {
                let shard_metrics = recording.clone();
                let backend = limiter_backend.clone();
                let shard = Supervisor::start(move |_| {
                    RateLimiterActor::new(policy, backend, shard_metrics)
                });
                let _ = shard_started.send(ActorRef::new("rate_limiter", shard, call_timeout));
            }
            let worker = worker_ids.fetch_add(1, Ordering::Relaxed);
            let db = {
                let (url, db_metrics) = (database_url.clone(), recording.clone());
                let pool = DbPool::build(&url, shard_pool_size, DbActor::WORKER_PAGE_CACHE)
                    .expect("the pool settings were checked before the workers started");
                let actor = Supervisor::start(move |_| {
                    DbActor::new(url, shard_pool_size, pool, worker, db_metrics)
                });
                ActorRef::new("db", actor, call_timeout)
            };
            let _ = db_started.send(db.clone());
            let db = WorkerDb::new(db, state.db_writer.as_ref());
            App::new()
                .app_data(state.clone())
                .app_data(web::Data::new(db))
                .app_data(WorkerGuards::start(
                    worker,
                    max_in_flight,
                    workers,
                    recording.clone(),
                ))
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
        let handle = server.handle();
        // Polling the server is what starts its workers.
        let server = actix_web::rt::spawn(server);
        // Set once, here; nothing else writes them.
        let _ = app_state
            .db
            .set(collect_shards(&mut started_dbs, settings.workers).await?);
        if let Some(policy) = policy {
            let shards = collect_shards(&mut started_shards, settings.workers).await?;
            let _ = app_state
                .rate_limiter
                .set(RateLimiterShards::new(policy, shards));
        }
        tracing::info!(
            %address,
            backend = settings.database_url.backend_name(),
            workers = settings.workers,
            "listening"
        );
        Ok(Self {
            port: address.port(),
            server,
            handle,
            state: app_state,
            db_writer,
            metrics,
            fetcher,
            cache,
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

    /// Serves until SIGTERM or SIGINT, drains, then stops the actors and
    /// closes the pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.handle;
        let on_signal = actix_web::rt::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down: draining requests in flight");
            handle.stop(true).await;
        });
        let served = self
            .server
            .await
            .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)));
        on_signal.abort();
        tracing::info!("server stopped; shutting down actors");
        for shard in self.state.db.get().into_iter().flatten() {
            shard.ended(SHARD_END_TIMEOUT).await;
        }
        if let Some(writer) = self.db_writer {
            writer.stop().await;
        }
        self.fetcher.stop().await;
        self.cache.stop().await;
        self.metrics.stop().await;
        tracing::info!("switchboard stopped");
        served
    }
}

/// The actors each worker started, one per worker, in the order they came.
async fn collect_shards<A: actix::Actor>(
    started: &mut tokio::sync::mpsc::UnboundedReceiver<ActorRef<A>>,
    workers: usize,
) -> Result<Vec<ActorRef<A>>, StartupError> {
    let mut shards = Vec::with_capacity(workers);
    while shards.len() < workers {
        match tokio::time::timeout(SHARD_START_TIMEOUT, started.recv()).await {
            Ok(Some(shard)) => shards.push(shard),
            _ => return Err(StartupError::Workers),
        }
    }
    Ok(shards)
}

fn cache_config(settings: &Settings) -> CacheConfig {
    CacheConfig {
        max_entries: settings.cache_max_entries,
        max_bytes: settings.cache_max_bytes,
        ttl: settings.cache_ttl,
        fill_window: settings.request_timeout,
    }
}

fn fetch_config(settings: &Settings) -> FetchConfig {
    FetchConfig {
        allow: AllowList::new(&settings.fetch_allow_hosts),
        max_attempts: settings.fetch_max_attempts,
        attempt_timeout: settings.fetch_timeout,
        // Inside the request deadline, so one slow URL never fails the rest.
        total_budget: settings.request_timeout.mul_f64(0.9),
        max_body_bytes: settings.fetch_max_body_bytes,
        host_concurrency: settings.fetch_host_concurrency,
        breaker_threshold: settings.fetch_breaker_threshold,
        breaker_cooldown: settings.fetch_breaker_cooldown,
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
