//! Building and running the application, in three steps: start the actors
//! that run once ([`shared`]), load the token keys, bind the listeners
//! (port 0 picks a free one, as tests do) and serve ([`server`]), each HTTP worker starting its own
//! actors on its own thread ([`workers`]); the workers' actors are
//! collected into the roster once they have started.
//!
//! Shutdown is one explicit sequence in [`Application::run_until_stopped`]:
//! on SIGINT/SIGTERM (or an escalation) readiness turns 503, requests are
//! still served for the shutdown delay, then actix-web stops accepting and
//! drains requests in flight up to the shutdown timeout; then the roster
//! stops every actor (see [`crate::actors::roster`]).

mod server;
mod shared;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::rt::task::JoinHandle;
use actix_web::web;
use tokio::sync::{mpsc, watch};

use crate::actors::roster::Starter;
use crate::actors::supervision::Escalation;
use crate::actors::ActorId;
use crate::app_state::{AppState, RateLimiting};
use crate::auth::keyring;
use crate::auth::keys::KeySet;
use crate::config::Settings;
use crate::db::migrate::{migrate, schema_status};
use crate::db::postgres::durability::warn_if_commits_are_not_flushed;
use crate::db::DatabaseUrl;
use crate::lifecycle::{shutdown_signal, Lifecycle, Phase};
use crate::rate_limit::headers::PolicyHeaders;
use crate::traces;
use server::Listeners;
use shared::SharedActors;
use workers::WorkerSpec;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the HTTP workers did not start")]
    Workers,
    #[error("database: {0}")]
    Database(String),
    /// With `SWITCHBOARD_MIGRATE=false`, the database lacks migrations
    /// this build needs.
    #[error(
        "the database lacks migrations this build needs ({}); run `switchboard migrate` first, or start with SWITCHBOARD_MIGRATE=true",
        .0.join(", ")
    )]
    MigrationsPending(Vec<String>),
    /// A token key file cannot be read or used.
    #[error("access control: {0}")]
    Keys(String),
    /// The trace exporter cannot be set up as the `OTEL_*` variables say.
    #[error("traces: {0}")]
    Traces(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    /// The admin listener's port, when it is set.
    admin_port: Option<u16>,
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
        tracing::info!(settings = %settings.effective(), "effective settings");
        prepare_schema(&settings).await?;
        let (escalation, escalated) = Escalation::new();
        let starter = Starter {
            escalation,
            call_timeout: settings.server.request_timeout,
        };
        let span_exporter = traces::exporter().map_err(StartupError::Traces)?;
        let mut actors = SharedActors::start(&settings, &starter, span_exporter);
        let keys = token_keys(&settings)?;
        let (public, address) = server::bind(settings.server.bind)?;
        let admin = settings.server.admin_bind.map(server::bind).transpose()?;
        let admin_address = admin.as_ref().map(|(_, admin)| *admin);
        let state = web::Data::new(app_state(&settings, &actors));
        let (spec, started) = WorkerSpec::new(&settings, &state, &actors, starter.clone(), keys);
        let server = server::serve(Listeners { public, admin }, &settings, spec)
            .map_err(|source| StartupError::Bind { address, source })?;
        let handle = server.handle();
        // Polling the server is what starts its workers.
        let server = actix_web::rt::spawn(server);
        let workers = workers::collect(started, settings.server.workers).await?;
        actors.cache.set_shards(workers.cache_shards());
        actors.until_coherent(&settings, &starter).await;
        if let (Some((policy, _)), Some(shards)) =
            (settings.rate_limiter(), workers.limiter_shards())
        {
            let headers = PolicyHeaders::new(policy);
            let _ = state.rate_limiting.set(RateLimiting { shards, headers });
        }
        let _ = state.roster.set(actors.roster(workers.members()));
        if let Some(traces) = traces::settings() {
            tracing::info!(endpoint = %traces.endpoint, "exporting traces over OTLP/HTTP");
        }
        tracing::info!(
            %address,
            admin = admin_address.map(tracing::field::display),
            backend = settings.database.url.backend_name(),
            workers = settings.server.workers,
            auth = if settings.auth_keys().any() { "bearer tokens" } else { "off" },
            "listening"
        );
        Ok(Self {
            port: address.port(),
            admin_port: admin_address.map(|admin| admin.port()),
            server,
            handle,
            state,
            escalated,
            shutdown_delay: settings.shutdown.delay,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
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
    pub async fn run_until_stopped(self) -> std::io::Result<Stopped> {
        let on_stop = actix_web::rt::spawn(stop_on_demand(
            self.state.clone(),
            self.handle.clone(),
            self.escalated,
            self.shutdown_delay,
        ));
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

/// Migrates the database, unless told not to; then refuses a schema that
/// lacks what this build needs, and warns of migrations it does not know
/// (a newer build ran first: migrations stay compatible for one release).
async fn prepare_schema(settings: &Settings) -> Result<(), StartupError> {
    let url = &settings.database.url;
    if settings.database.migrate {
        migrate(url).await.map_err(StartupError::Database)?;
    }
    let status = schema_status(url).await.map_err(StartupError::Database)?;
    if !status.pending.is_empty() {
        return Err(StartupError::MigrationsPending(status.pending));
    }
    if !status.unknown.is_empty() {
        tracing::warn!(
            unknown = ?status.unknown,
            "the database has migrations this build does not know: a newer build migrated it; serving, as every migration stays compatible with the release before it"
        );
    }
    if let DatabaseUrl::Postgres(url) = url {
        warn_if_commits_are_not_flushed(url).await;
    }
    Ok(())
}

/// The token keys, loaded and kept current; `None` with none configured.
fn token_keys(settings: &Settings) -> Result<Option<watch::Receiver<Arc<KeySet>>>, StartupError> {
    let files = settings.auth_keys();
    if !files.any() {
        return Ok(None);
    }
    keyring::start(files, settings.auth_rules())
        .map(Some)
        .map_err(StartupError::Keys)
}

/// What the handlers share, before the workers have started.
fn app_state(settings: &Settings, actors: &SharedActors) -> AppState {
    AppState {
        cache: actors.cache.clone(),
        metrics: actors.metrics.actor.clone(),
        fetcher: actors.fetcher.actor.clone(),
        fetch_max_urls: settings.fetch.max_urls,
        rate_limiting: Default::default(),
        roster: Default::default(),
        lifecycle: Lifecycle::default(),
        limits: settings.request_limits(),
        started_at: Instant::now(),
    }
}

/// Waits for a shutdown signal or an escalation, turns readiness 503,
/// serves on for `delay`, then stops the server gracefully.
async fn stop_on_demand(
    state: web::Data<AppState>,
    server: ServerHandle,
    mut escalated: mpsc::UnboundedReceiver<ActorId>,
    delay: Duration,
) -> Stopped {
    let stopped = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down: readiness is 503, draining requests in flight");
            state.lifecycle.enter(Phase::Draining);
            Stopped::OnSignal
        }
        Some(actor) = escalated.recv() => {
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
    server.stop(true).await;
    stopped
}
