//! What each HTTP worker starts on its own thread: its database actor (with
//! its share of the pool), its rate limiter shard, its cache shard, its
//! metrics recorder and its guard state. The workers report their actors back, and start-up
//! collects them into the roster.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use tokio::sync::{mpsc, watch};

use crate::actors::cache::{CacheActor, CacheConfig};
use crate::actors::db::DbActor;
use crate::actors::rate_limiter::{LimiterBackend, RateLimiterActor, RateLimiterShards};
use crate::actors::roster::{Member, Starter};
use crate::actors::{ActorId, ActorKind, ActorRef};
use crate::app_state::AppState;
use crate::auth::keys::KeySet;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::db::DatabaseUrl;
use crate::metrics::{MetricsSink, Recorder};
use crate::middleware::guards::WorkerGuards;
use crate::middleware::in_flight::InFlight;
use crate::rate_limit::RatePolicy;

use super::shared::SharedActors;
use super::StartupError;

/// How long the HTTP workers may take to start their actors.
const WORKERS_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What each HTTP worker is built from; every worker clones it.
#[derive(Clone)]
pub(super) struct WorkerSpec {
    pub state: web::Data<AppState>,
    sink: MetricsSink,
    database_url: DatabaseUrl,
    /// Each worker's share of the pool.
    pool_share: usize,
    db_writer: Option<ActorRef<DbActor>>,
    /// `None` when rate limiting is off.
    limiter: Option<(RatePolicy, LimiterBackend)>,
    /// Each worker's cache shard.
    cache: CacheConfig,
    starter: Starter,
    max_in_flight: usize,
    max_in_flight_per_client: usize,
    workers: usize,
    next_worker: Arc<AtomicUsize>,
    started: mpsc::UnboundedSender<WorkerActors>,
    /// The token keys as they change; `None`: access control off.
    keys: Option<watch::Receiver<Arc<KeySet>>>,
}

/// The actors one worker started.
pub(super) struct WorkerActors {
    worker: usize,
    limiter: Option<ActorRef<RateLimiterActor>>,
    cache: ActorRef<CacheActor>,
    members: Vec<Member>,
}

/// What one worker's handlers are given.
#[derive(Clone)]
pub(super) struct Worker {
    pub db: ActorRef<DbActor>,
    pub guards: Rc<WorkerGuards>,
    pub metrics: Recorder,
}

impl WorkerSpec {
    pub fn new(
        settings: &Settings,
        state: &web::Data<AppState>,
        actors: &SharedActors,
        starter: Starter,
        keys: Option<watch::Receiver<Arc<KeySet>>>,
    ) -> (Self, mpsc::UnboundedReceiver<WorkerActors>) {
        let (started, collected) = mpsc::unbounded_channel();
        let spec = Self {
            state: state.clone(),
            sink: actors.sink.clone(),
            database_url: settings.database.url.clone(),
            pool_share: settings.pool_share(),
            db_writer: actors.db_writer.as_ref().map(|w| w.actor.clone()),
            limiter: settings.rate_limiter(),
            cache: settings.cache_config(),
            starter,
            max_in_flight: settings.server.max_in_flight,
            max_in_flight_per_client: settings.server.max_in_flight_per_client(),
            workers: settings.server.workers,
            next_worker: Arc::default(),
            started,
            keys,
        };
        (spec, collected)
    }

    /// Starts this worker's actors on the calling (worker) thread.
    pub fn start_worker(&self) -> Worker {
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
        let config = self.cache;
        let cache = self.starter.here(id(ActorKind::Cache), &metrics, |s| {
            CacheActor::new(config, s)
        });
        let mut members = vec![db.member, cache.member];
        members.extend(limiter.as_ref().map(|limiter| limiter.member.clone()));
        let _ = self.started.send(WorkerActors {
            worker,
            limiter: limiter.map(|limiter| limiter.actor),
            cache: cache.actor,
            members,
        });
        let in_flight = InFlight::new(
            self.max_in_flight,
            self.max_in_flight_per_client,
            self.workers,
        );
        Worker {
            db: db.actor,
            guards: WorkerGuards::start(
                worker,
                in_flight,
                metrics.clone(),
                self.keys.clone().map(Authenticator::start),
            ),
            metrics,
        }
    }
}

/// Every worker's actors, in worker order.
pub(super) struct Workers(Vec<WorkerActors>);

impl Workers {
    /// The limiter shards, one per worker; `None` when limiting is off.
    pub fn limiter_shards(&self) -> Option<RateLimiterShards> {
        let shards = self.0.iter().filter_map(|w| w.limiter.clone()).collect();
        RateLimiterShards::new(shards)
    }

    /// The cache shards, one per worker, in worker order.
    pub fn cache_shards(&self) -> Vec<ActorRef<CacheActor>> {
        self.0.iter().map(|w| w.cache.clone()).collect()
    }

    pub fn members(self) -> impl Iterator<Item = Member> {
        self.0.into_iter().flat_map(|worker| worker.members)
    }
}

/// Waits for every worker to have started its actors.
pub(super) async fn collect(
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
