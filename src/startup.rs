//! Building and running the application, in three steps: start the actors
//! that run once (each on an arbiter of its own: metrics, cache, fetcher,
//! and on SQLite the database writer), bind the listener (port 0 picks a
//! free one, as tests do), and serve. Each HTTP worker starts, on its own
//! thread, its own database actor (with its share of the pool), its own
//! rate limiter shard, its metrics recorder and its guard state; the
//! workers' actors are collected into the roster once they have started.
//!
//! Shutdown is one explicit sequence in [`Application::run_until_stopped`]:
//! actix-web stops accepting on SIGINT/SIGTERM and drains requests in flight
//! up to the shutdown timeout; then the roster stops every actor (see
//! [`crate::actors::roster`]).

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition};
use actix_web::rt::task::JoinHandle;
use actix_web::{web, App, HttpServer};
use tokio::sync::{mpsc, oneshot};

use crate::actors::cache::{CacheActor, CacheConfig, CacheHandle};
use crate::actors::db::DbActor;
use crate::actors::fetcher::{FetchConfig, FetcherActor};
use crate::actors::invalidator::InvalidatorActor;
use crate::actors::metrics::MetricsActor;
use crate::actors::rate_limiter::{LimiterBackend, RateLimiterActor, RateLimiterShards};
use crate::actors::roster::{Member, Roster, Started, Starter};
use crate::actors::supervision::Escalation;
use crate::actors::{ActorId, ActorKind, ActorRef};
use crate::app_state::{AppState, RateLimiting, RequestLimits};
use crate::config::{CacheInvalidation, DatabaseUrl, RateLimitBackend, Settings};
use crate::db::migrate;
use crate::fetch::allow_list::AllowList;
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::{MetricsSink, Recorder};
use crate::middleware::guards::WorkerGuards;
use crate::middleware::in_flight::InFlight;
use crate::middleware::request_context::request_context;
use crate::middleware::{compress, disconnect};
use crate::rate_limit::headers::PolicyHeaders;
use crate::rate_limit::RatePolicy;
use crate::routes;
use crate::routes::openapi::Description;

/// How long start-up waits for the cache to hear other instances' writes.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the HTTP workers may take to start their actors.
const WORKERS_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the HTTP workers did not start")]
    Workers,
    #[error("database: {0}")]
    Database(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: JoinHandle<std::io::Result<()>>,
    handle: ServerHandle,
    state: web::Data<AppState>,
    /// Given-up actors, each a reason to drain and exit non-zero.
    escalated: mpsc::UnboundedReceiver<ActorId>,
    /// Between readiness turning 503 and the listener closing.
    shutdown_delay: Duration,
}

/// Why the application stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT: a clean stop.
    OnSignal,
    /// An actor was given up: the process should be replaced.
    Escalated(ActorId),
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        migrate(&settings.database_url)
            .await
            .map_err(StartupError::Database)?;
        let (escalation, escalated) = Escalation::new();
        let starter = Starter {
            escalation,
            call_timeout: settings.request_timeout,
        };
        let mut actors = SharedActors::start(&settings, &starter);
        actors.until_coherent().await;
        let (listener, address) = bind(settings.bind)?;
        let state = web::Data::new(AppState {
            cache: actors.cache.clone(),
            metrics: actors.metrics.actor.clone(),
            fetcher: actors.fetcher.actor.clone(),
            fetch_max_urls: settings.fetch_max_urls,
            rate_limiting: Default::default(),
            roster: Default::default(),
            lifecycle: Lifecycle::default(),
            limits: RequestLimits {
                body_limit_bytes: settings.body_limit_bytes,
                body_read_timeout: settings.body_read_timeout,
                request_timeout: settings.request_timeout,
                clients: settings.client_policy(),
            },
            started_at: Instant::now(),
        });
        let (spec, started) = WorkerSpec::new(&settings, &state, &actors, starter);
        let server = serve(listener, &settings, spec)
            .map_err(|source| StartupError::Bind { address, source })?;
        let handle = server.handle();
        // Polling the server is what starts its workers.
        let server = actix_web::rt::spawn(server);
        let workers = collect_workers(started, settings.workers).await?;
        let policy = RatePolicy::new(settings.rate_limit_per_second, settings.rate_limit_burst);
        if let (Some(policy), Some(shards)) = (policy, workers.limiter_shards()) {
            let headers = PolicyHeaders::new(policy);
            let _ = state.rate_limiting.set(RateLimiting { shards, headers });
        }
        let _ = state.roster.set(actors.roster(workers));
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
            state,
            escalated,
            shutdown_delay: settings.shutdown_delay,
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

    /// Serves until SIGTERM or SIGINT, or until an actor is given up; then
    /// turns readiness 503, keeps serving for the shutdown delay (the time
    /// a load balancer needs to notice), stops accepting, drains, and stops
    /// the actors.
    pub async fn run_until_stopped(mut self) -> std::io::Result<Stopped> {
        let state = self.state.clone();
        let handle = self.handle.clone();
        let delay = self.shutdown_delay;
        let on_stop = actix_web::rt::spawn(async move {
            let stopped = tokio::select! {
                signal = shutdown_signal() => {
                    tracing::info!(signal, "shutting down: readiness is 503, draining requests in flight");
                    state.lifecycle.enter(Phase::Draining);
                    Stopped::OnSignal
                }
                Some(actor) = self.escalated.recv() => {
                    tracing::error!(
                        actor = actor.name(),
                        shard = actor.shard,
                        "escalating: an actor was given up; draining, then exiting non-zero so that a fresh process replaces this one"
                    );
                    state.lifecycle.enter(Phase::Escalating);
                    Stopped::Escalated(actor)
                }
            };
            actix_web::rt::time::sleep(delay).await;
            handle.stop(true).await;
            stopped
        });
        let served = self
            .server
            .await
            .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)));
        let stopped = if on_stop.is_finished() {
            on_stop.await.unwrap_or(Stopped::OnSignal)
        } else {
            on_stop.abort();
            Stopped::OnSignal
        };
        tracing::info!("server stopped; shutting down actors");
        if let Some(roster) = self.state.roster.get() {
            roster.stop().await;
        }
        tracing::info!("switchboard stopped");
        served.map(|()| stopped)
    }
}

/// The actors that run once per process, each on a thread of its own, in
/// the order they start (and stop in reverse).
struct SharedActors {
    /// Where every thread's recorder sends its batches.
    sink: MetricsSink,
    metrics: Started<MetricsActor>,
    cache: CacheHandle,
    cache_member: Member,
    /// Hears other instances' writes (PostgreSQL), and says when it first
    /// does.
    invalidator: Option<Member>,
    listening: Option<oneshot::Receiver<()>>,
    fetcher: Started<FetcherActor>,
    /// On SQLite, the one database actor that writes.
    db_writer: Option<Started<DbActor>>,
}

impl SharedActors {
    fn start(settings: &Settings, starter: &Starter) -> Self {
        let timeout = settings.request_timeout;
        let metrics = starter.alone(
            ActorId::single(ActorKind::Metrics),
            MetricsSink::disabled(),
            move |supervision| MetricsActor::new(timeout, supervision),
        );
        let sink = if settings.metrics {
            MetricsSink::new(metrics.actor.recipient())
        } else {
            MetricsSink::disabled()
        };
        let cache_config = cache_config(settings);
        let cache = starter.alone(
            ActorId::single(ActorKind::Cache),
            sink.clone(),
            move |supervision| CacheActor::new(cache_config, supervision),
        );
        let cache_handle = CacheHandle::new(cache.actor.clone(), &cache_config);
        let (first_listen, listening) = oneshot::channel();
        let invalidator = match (&settings.database_url, settings.cache_invalidation) {
            (DatabaseUrl::Postgres(url), CacheInvalidation::Postgres) => {
                let (url, cache) = (url.clone(), cache.actor.clone());
                Some(
                    starter.alone(ActorId::single(ActorKind::Invalidator), sink.clone(), {
                        move |supervision| {
                            InvalidatorActor::new(url, cache, first_listen, supervision)
                        }
                    }),
                )
            }
            _ => None,
        };
        let fetcher = starter.alone(ActorId::single(ActorKind::Fetcher), sink.clone(), {
            let (config, cache) = (fetch_config(settings), cache_handle.clone());
            move |supervision| FetcherActor::new(config, cache, timeout, supervision)
        });
        let db_writer = match &settings.database_url {
            DatabaseUrl::Sqlite(_) => {
                let url = settings.database_url.clone();
                Some(starter.alone(
                    ActorId::single(ActorKind::DbWriter),
                    sink.clone(),
                    move |supervision| DbActor::sqlite_writer(url, supervision),
                ))
            }
            DatabaseUrl::Postgres(_) => None,
        };
        Self {
            sink,
            metrics,
            cache: cache_handle,
            cache_member: cache.member,
            listening: invalidator.is_some().then_some(listening),
            invalidator: invalidator.map(|invalidator| invalidator.member),
            fetcher,
            db_writer,
        }
    }

    /// Waits (a little) until the cache hears other instances' writes, so
    /// that a fresh instance serves from its cache from its first request.
    async fn until_coherent(&mut self) {
        if let Some(listening) = self.listening.take() {
            if tokio::time::timeout(LISTEN_TIMEOUT, listening)
                .await
                .is_err()
            {
                tracing::warn!("not yet listening for other instances' writes: the cache waits");
            }
        }
    }

    /// Every actor: these in the order they started, then the workers'.
    fn roster(&self, workers: Workers) -> Roster {
        let mut members = vec![self.metrics.member.clone(), self.cache_member.clone()];
        members.extend(self.invalidator.clone());
        members.push(self.fetcher.member.clone());
        members.extend(self.db_writer.iter().map(|writer| writer.member.clone()));
        members.extend(workers.0.into_iter().flat_map(|worker| worker.members));
        Roster::new(members)
    }
}

/// What each HTTP worker is built from; every worker clones it.
#[derive(Clone)]
struct WorkerSpec {
    state: web::Data<AppState>,
    sink: MetricsSink,
    database_url: DatabaseUrl,
    /// Each worker's share of the pool.
    pool_share: usize,
    db_writer: Option<ActorRef<DbActor>>,
    /// `None` when rate limiting is off.
    limiter: Option<(RatePolicy, LimiterBackend)>,
    starter: Starter,
    max_in_flight: usize,
    max_in_flight_per_client: usize,
    workers: usize,
    next_worker: Arc<AtomicUsize>,
    started: mpsc::UnboundedSender<WorkerActors>,
}

/// The actors one worker started.
struct WorkerActors {
    worker: usize,
    limiter: Option<ActorRef<RateLimiterActor>>,
    members: Vec<Member>,
}

impl WorkerSpec {
    fn new(
        settings: &Settings,
        state: &web::Data<AppState>,
        actors: &SharedActors,
        starter: Starter,
    ) -> (Self, mpsc::UnboundedReceiver<WorkerActors>) {
        let (started, collected) = mpsc::unbounded_channel();
        let policy = RatePolicy::new(settings.rate_limit_per_second, settings.rate_limit_burst);
        let backend = match settings.rate_limit_backend {
            RateLimitBackend::Memory => LimiterBackend::Memory,
            RateLimitBackend::Redis => LimiterBackend::Redis(settings.redis_url.clone()),
        };
        let spec = Self {
            state: state.clone(),
            sink: actors.sink.clone(),
            database_url: settings.database_url.clone(),
            pool_share: (settings.pool_size() / settings.workers).max(1),
            db_writer: actors.db_writer.as_ref().map(|w| w.actor.clone()),
            limiter: policy.map(|policy| (policy, backend)),
            starter,
            max_in_flight: settings.max_in_flight,
            max_in_flight_per_client: settings.max_in_flight_per_client(),
            workers: settings.workers,
            next_worker: Arc::default(),
            started,
        };
        (spec, collected)
    }

    /// Starts this worker's actors on the calling (worker) thread; returns
    /// what its handlers are given.
    fn start_worker(&self) -> (ActorRef<DbActor>, Rc<WorkerGuards>, Recorder) {
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let metrics = Recorder::start(self.sink.clone());
        let id = |kind| ActorId {
            kind,
            shard: worker,
        };
        let (url, size, writer) = (
            self.database_url.clone(),
            self.pool_share,
            self.db_writer.clone(),
        );
        let db = self.starter.here(id(ActorKind::Db), &metrics, |s| {
            DbActor::worker(url, size, writer, s)
        });
        let limiter = self.limiter.clone().map(|(policy, backend)| {
            self.starter
                .here(id(ActorKind::RateLimiter), &metrics, |s| {
                    RateLimiterActor::new(policy, backend, s)
                })
        });
        let local_db = db.actor;
        let mut members = vec![db.member];
        members.extend(limiter.as_ref().map(|limiter| limiter.member.clone()));
        let _ = self.started.send(WorkerActors {
            worker,
            limiter: limiter.map(|limiter| limiter.actor),
            members,
        });
        let in_flight = InFlight::new(
            self.max_in_flight,
            self.max_in_flight_per_client,
            self.workers,
        );
        let guards = WorkerGuards::start(worker, in_flight, metrics.clone());
        (local_db, guards, metrics)
    }
}

fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { address, source };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// The HTTP server: each worker starts its actors, then serves the routes.
fn serve(listener: TcpListener, settings: &Settings, spec: WorkerSpec) -> std::io::Result<Server> {
    let (body_limit, chaos) = (settings.body_limit_bytes, settings.chaos);
    let origins = settings.cors_origins.clone();
    let description = web::Data::new(Description::new(settings.fetch_max_urls));
    Ok(HttpServer::new(move || {
        let (db, guards, metrics) = spec.start_worker();
        App::new()
            .app_data(spec.state.clone())
            .app_data(description.clone())
            .app_data(web::Data::new(db))
            .app_data(guards)
            .app_data(metrics)
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(routes::json_error),
            )
            .app_data(web::PayloadConfig::default().limit(body_limit))
            .app_data(web::QueryConfig::default().error_handler(routes::query_error))
            .app_data(web::PathConfig::default().error_handler(routes::path_error))
            .configure(|cfg| routes::configure(cfg, chaos))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(request_context))
            .wrap(from_fn(compress::compress))
    })
    .on_connect(disconnect::remember_connection)
    .workers(settings.workers)
    // Signals are handled in `run_until_stopped`: actix-server's own
    // handler would also stop the actix system, and with it the actors'
    // arbiters, before they are shut down in order.
    .disable_signals()
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .listen(listener)?
    .run())
}

/// CORS for browsers on `origins`: the methods and request headers the API
/// takes, the response headers a client reads, preflights cached an hour.
fn cors(origins: &[String]) -> Cors {
    let exposed = [
        "location",
        "link",
        "etag",
        "retry-after",
        "x-request-id",
        "x-cache",
        "ratelimit-policy",
        "ratelimit",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ];
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers(["content-type", "if-match", "if-none-match", "x-request-id"])
        .expose_headers(exposed)
        .max_age(3600)
}

/// Every worker's actors, in worker order.
struct Workers(Vec<WorkerActors>);

impl Workers {
    /// The limiter shards, one per worker; `None` when limiting is off.
    fn limiter_shards(&self) -> Option<RateLimiterShards> {
        let shards = self.0.iter().filter_map(|w| w.limiter.clone()).collect();
        RateLimiterShards::new(shards)
    }
}

/// Waits for every worker to have started its actors.
async fn collect_workers(
    mut started: mpsc::UnboundedReceiver<WorkerActors>,
    workers: usize,
) -> Result<Workers, StartupError> {
    let mut collected = Vec::with_capacity(workers);
    while collected.len() < workers {
        match tokio::time::timeout(WORKERS_START_TIMEOUT, started.recv()).await {
            Ok(Some(worker)) => collected.push(worker),
            _ => return Err(StartupError::Workers),
        }
    }
    collected.sort_by_key(|worker| worker.worker);
    Ok(Workers(collected))
}

fn cache_config(settings: &Settings) -> CacheConfig {
    CacheConfig {
        max_entries: settings.cache_max_entries,
        max_bytes: settings.cache_max_bytes,
        ttl: settings.cache_ttl,
        fill_window: settings.request_timeout,
        start_paused: settings.cache_invalidation != CacheInvalidation::None,
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
