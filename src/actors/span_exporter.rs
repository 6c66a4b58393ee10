//! `SpanExporterActor`: owns the finished spans on their way to the
//! collector, and their export over OTLP/HTTP.
//!
//! Spans arrive in batches from whichever thread ended them
//! ([`crate::traces`] hands them over with a `try_send`, never waiting),
//! and wait here in a queue bounded by `OTEL_BSP_MAX_QUEUE_SIZE`. A batch
//! leaves when it is full (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`) or when its
//! oldest span has waited `OTEL_BSP_SCHEDULE_DELAY`, one export at a time,
//! each within `OTEL_BSP_EXPORT_TIMEOUT`. A collector that is down or slow
//! costs requests nothing: the queue fills, and what does not fit, what
//! the mailbox could not take and what a failed export carried are
//! dropped and counted (`otel_spans_dropped_total`), with a warning at most
//! once a minute rather than a line per span.
//!
//! At shutdown the roster asks it to [`Drain`] once every other actor but
//! the metrics has stopped (each hands over its thread's last spans as it
//! stops): what is queued leaves in as many batches as it takes, within
//! the roster's drain timeout, before its thread stops. A restart keeps the exporter and drops the queue: the spans it
//! held are counted as dropped.

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};

use super::supervision::{supervised_actor, Drain, Supervise, Supervision};
use crate::metrics::{Event, Recorder};
use crate::traces::{self, Batching, Finished};

/// How often, at most, a warning says spans are being dropped.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub struct SpanExporterActor {
    batching: Batching,
    exporter: Rc<SpanExporter>,
    queue: Vec<SpanData>,
    /// When the oldest queued span arrived.
    oldest: Option<Instant>,
    exporting: bool,
    /// Dropped since the last warning, and when that was.
    unwarned: u64,
    warned: Option<Instant>,
    metrics: Recorder,
    supervision: Supervision,
}

impl SpanExporterActor {
    pub fn new(batching: Batching, exporter: SpanExporter, supervision: Supervision) -> Self {
        Self {
            batching,
            exporter: Rc::new(exporter),
            queue: Vec::new(),
            oldest: None,
            exporting: false,
            unwarned: 0,
            warned: None,
            metrics: supervision.metrics().clone(),
            supervision,
        }
    }

    /// Counts `spans` as dropped, and says so if it has not for a while.
    fn dropped(&mut self, spans: u64, why: &str) {
        if spans == 0 {
            return;
        }
        self.metrics.record(Event::SpansDropped(spans));
        self.unwarned += spans;
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            tracing::warn!(
                dropped = self.unwarned,
                why,
                "trace spans dropped: the collector is down or slow, or spans come faster than they can be exported"
            );
            self.unwarned = 0;
        }
    }

    /// Is a batch due: full, or its oldest span has waited long enough?
    fn due(&self) -> bool {
        self.queue.len() >= self.batching.max_batch
            || self
                .oldest
                .is_some_and(|at| at.elapsed() >= self.batching.schedule_delay)
    }

    /// Sends the next batch, unless one is on its way or none is due
    /// (`force`: any spans queued are due).
    fn export(&mut self, ctx: &mut Context<Self>, force: bool) {
        if self.exporting || self.queue.is_empty() || !(force || self.due()) {
            return;
        }
        let take = self.queue.len().min(self.batching.max_batch);
        let batch: Vec<SpanData> = self.queue.drain(..take).collect();
        self.oldest = (!self.queue.is_empty()).then(Instant::now);
        let (exporter, timeout, spans) = (
            Rc::clone(&self.exporter),
            self.batching.export_timeout,
            batch.len() as u64,
        );
        self.exporting = true;
        let sent = async move { tokio::time::timeout(timeout, exporter.export(batch)).await };
        ctx.spawn(sent.into_actor(self).map(move |sent, act, ctx| {
            act.exporting = false;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(err)) => act.dropped(spans, &err.to_string()),
                Err(_) => act.dropped(spans, "the export timed out"),
            }
            act.export(ctx, false);
        }));
    }
}

impl Supervise for SpanExporterActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        let lost = self.queue.len() as u64;
        self.queue.clear();
        self.oldest = None;
        self.exporting = false;
        self.dropped(lost, "the exporter restarted");
    }

    /// Room in the mailbox for a full queue's worth of hand-overs (the
    /// queue is what bounds the spans held); a timer for batches that do
    /// not fill.
    fn on_start(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity((self.batching.max_queue / traces::HAND_OVER_AT).max(8));
        let tick = (self.batching.schedule_delay / 4).max(Duration::from_millis(10));
        ctx.run_interval(tick, |act, ctx| act.export(ctx, false));
    }

    /// Spans the mailbox could not take are counted here.
    fn report(&mut self) {
        self.dropped(traces::take_refused(), "the exporter's mailbox was full");
    }
}

supervised_actor!(SpanExporterActor;);

impl Handler<Finished> for SpanExporterActor {
    type Result = ();

    fn handle(&mut self, Finished(mut spans): Finished, ctx: &mut Context<Self>) {
        let room = self.batching.max_queue - self.queue.len();
        if spans.len() > room {
            let over = spans.len() - room;
            spans.truncate(room);
            self.dropped(over as u64, "the export queue is full");
        }
        if self.queue.is_empty() && !spans.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.queue.append(&mut spans);
        self.export(ctx, false);
    }
}

/// Exports everything queued now, and answers once it has left (or failed).
impl Handler<Drain> for SpanExporterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.report();
        let mut spans = std::mem::take(&mut self.queue);
        self.oldest = None;
        let (exporter, timeout) = (Rc::clone(&self.exporter), self.batching.export_timeout);
        let max_batch = self.batching.max_batch;
        let sent = async move {
            let mut failed = 0;
            while !spans.is_empty() {
                let rest = spans.split_off(max_batch.min(spans.len()));
                let count = spans.len() as u64;
                if !matches!(
                    tokio::time::timeout(timeout, exporter.export(spans)).await,
                    Ok(Ok(()))
                ) {
                    failed += count;
                }
                spans = rest;
            }
            failed
        };
        Box::pin(
            sent.into_actor(self)
                .map(|failed, act, _| act.dropped(failed, "the last export failed")),
        )
    }
}
