//! The actors that run once per process, each on an arbiter of its own:
//! metrics, the span exporter (while traces are on), fetcher, on SQLite the
//! database writer, and once the workers have started their cache shards,
//! the cache's invalidator (PostgreSQL). They start in that order and stop
//! in reverse.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::actors::cache::CacheHandle;
use crate::actors::db::DbActor;
use crate::actors::fetcher::FetcherActor;
use crate::actors::invalidator::InvalidatorActor;
use crate::actors::metrics::MetricsActor;
use crate::actors::roster::{Member, Roster, Started, Starter};
use crate::actors::span_exporter::SpanExporterActor;
use crate::actors::{ActorId, ActorKind};
use crate::config::{CacheInvalidation, Settings};
use crate::db::DatabaseUrl;
use crate::metrics::MetricsSink;
use crate::traces;
use opentelemetry_otlp::SpanExporter;

/// How long start-up waits for the cache to hear other instances' writes.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct SharedActors {
    /// Where every thread's recorder sends its batches.
    pub sink: MetricsSink,
    pub metrics: Started<MetricsActor>,
    /// Exports trace spans, while traces are on.
    span_exporter: Option<Started<SpanExporterActor>>,
    /// The workers' cache shards, once they have started them.
    pub cache: CacheHandle,
    /// Hears other instances' writes (PostgreSQL), once started.
    invalidator: Option<Member>,
    pub fetcher: Started<FetcherActor>,
    /// On SQLite, the one database actor that writes.
    pub db_writer: Option<Started<DbActor>>,
}

impl SharedActors {
    pub fn start(
        settings: &Settings,
        starter: &Starter,
        span_exporter: Option<SpanExporter>,
    ) -> Self {
        let (metrics, sink) = start_metrics(settings, starter);
        let span_exporter = span_exporter
            .zip(traces::settings())
            .map(|(exporter, traces)| {
                let batching = traces.batching;
                starter.alone(
                    ActorId::single(ActorKind::SpanExporter),
                    sink.clone(),
                    move |supervision| SpanExporterActor::new(batching, exporter, supervision),
                )
            });
        if let Some(exporter) = &span_exporter {
            traces::deliver_to(exporter.actor.recipient());
        }
        let cache_handle = CacheHandle::new(&settings.cache_config());
        let fetcher = starter.alone(ActorId::single(ActorKind::Fetcher), sink.clone(), {
            let (config, cache) = (settings.fetch_config(), cache_handle.clone());
            let timeout = settings.server.request_timeout;
            move |supervision| FetcherActor::new(config, cache, timeout, supervision)
        });
        let db_writer = start_db_writer(settings, starter, &sink);
        Self {
            sink,
            metrics,
            span_exporter,
            cache: cache_handle,
            invalidator: None,
            fetcher,
            db_writer,
        }
    }

    /// Once the cache's shards are set: on PostgreSQL, starts hearing
    /// other instances' writes, and waits (a little) until the cache does,
    /// so that a fresh instance serves from its cache from its first
    /// requests (until then the shards are paused: reads go to the
    /// database).
    pub async fn until_coherent(&mut self, settings: &Settings, starter: &Starter) {
        let (invalidator, listening) =
            start_invalidator(settings, starter, &self.sink, &self.cache);
        self.invalidator = invalidator;
        if let Some(listening) = listening {
            if tokio::time::timeout(LISTEN_TIMEOUT, listening)
                .await
                .is_err()
            {
                tracing::warn!("not yet listening for other instances' writes: the cache waits");
            }
        }
    }

    /// Every actor: these in the order they started, then the workers'.
    pub fn roster(&self, workers: impl IntoIterator<Item = Member>) -> Roster {
        let mut members = vec![self.metrics.member.clone()];
        members.extend(self.span_exporter.iter().map(|exporter| {
            let drain = exporter.actor.recipient();
            exporter.member.clone().draining(drain)
        }));
        members.push(self.fetcher.member.clone());
        members.extend(self.db_writer.iter().map(|writer| writer.member.clone()));
        members.extend(self.invalidator.clone());
        members.extend(workers);
        Roster::new(members)
    }
}

/// The metrics actor, and the sink every thread's recorder sends to (one
/// that drops everything when metrics are turned off).
fn start_metrics(settings: &Settings, starter: &Starter) -> (Started<MetricsActor>, MetricsSink) {
    let timeout = settings.server.request_timeout;
    let metrics = starter.alone(
        ActorId::single(ActorKind::Metrics),
        MetricsSink::disabled(),
        move |supervision| MetricsActor::new(timeout, supervision),
    );
    let sink = if settings.metrics.enabled {
        MetricsSink::new(metrics.actor.recipient())
    } else {
        MetricsSink::disabled()
    };
    (metrics, sink)
}

/// On PostgreSQL with its channel on: the actor that hears other
/// instances' writes, and what says when it first does.
fn start_invalidator(
    settings: &Settings,
    starter: &Starter,
    sink: &MetricsSink,
    cache: &CacheHandle,
) -> (Option<Member>, Option<oneshot::Receiver<()>>) {
    let DatabaseUrl::Postgres(url) = &settings.database.url else {
        return (None, None);
    };
    if settings.cache_invalidation() != CacheInvalidation::Postgres {
        return (None, None);
    }
    let (first_listen, listening) = oneshot::channel();
    let (url, cache) = (url.clone(), cache.clone());
    let invalidator = starter.alone(
        ActorId::single(ActorKind::Invalidator),
        sink.clone(),
        move |supervision| InvalidatorActor::new(url, cache, first_listen, supervision),
    );
    (Some(invalidator.member), Some(listening))
}

/// On SQLite, the one database actor that writes.
fn start_db_writer(
    settings: &Settings,
    starter: &Starter,
    sink: &MetricsSink,
) -> Option<Started<DbActor>> {
    let url @ DatabaseUrl::Sqlite(_) = settings.database.url.clone() else {
        return None;
    };
    Some(starter.alone(
        ActorId::single(ActorKind::DbWriter),
        sink.clone(),
        move |supervision| DbActor::sqlite_writer(url, supervision),
    ))
}
