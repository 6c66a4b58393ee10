//! Distributed traces: switchboard's `tracing` spans become OpenTelemetry
//! spans (through `tracing-opentelemetry`) and leave over OTLP/HTTP,
//! configured by the standard `OTEL_*` variables alone ([`settings`]).
//!
//! A request is a server span, a child of the caller's when it sent a W3C
//! `traceparent` ([`propagation`]); each message to an actor is a child
//! span that shows its wait in the mailbox apart from its handling
//! ([`spans`]); each database statement and each fetch attempt is a client
//! span, and an upstream receives the attempt's `traceparent`.
//!
//! Finished spans go to the trace exporter actor
//! ([`crate::actors::span_exporter`]), which owns the bounded queue and
//! the exports; the SDK's processor here only hands spans over, a batch
//! per thread at a time (a message per span would wake the exporter's
//! thread for each), with a `try_send` that never waits, so a slow or
//! absent collector costs a request nothing: past the queue's bound, spans
//! are dropped and counted.
//!
//! With no endpoint set nothing is installed: no layer, no processor, and
//! the actor spans are not even created ([`enabled`] is false), so traces
//! that are off cost one branch per actor message. The layer and the
//! subscriber are the process's, so whether traces are on is decided once
//! per process.

pub mod propagation;
mod settings;
pub mod spans;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use actix::{Message, Recipient};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub use settings::{Batching, TraceSettings, TraceSettingsError};

/// The settings traces were turned on with; unset: they are off.
static SETTINGS: OnceLock<TraceSettings> = OnceLock::new();
/// Where finished spans go: the exporter actor, once it has started.
static EXPORTER: OnceLock<Recipient<Finished>> = OnceLock::new();
/// Spans the exporter's mailbox could not take (full, or not yet there),
/// since the exporter last collected the count ([`take_refused`]).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Are spans exported? Decided once, when logging starts.
pub fn enabled() -> bool {
    SETTINGS.get().is_some()
}

/// The settings traces were turned on with.
pub fn settings() -> Option<&'static TraceSettings> {
    SETTINGS.get()
}

/// The layer that makes switchboard's spans OpenTelemetry's, when there
/// is somewhere to export them; it sees switchboard's own spans at INFO and
/// above, and its warnings and errors (which become events on their spans),
/// whatever `RUST_LOG` keeps for the logs.
pub fn layer<S>(settings: Option<TraceSettings>) -> Option<impl Layer<S>>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    SETTINGS.set(settings?).ok()?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(HandOver)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("switchboard");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Spans find their parents through `tracing`, and switchboard asks a
        // span for its context (`OpenTelemetrySpanExt::context`) where it
        // needs it: nothing reads the active OpenTelemetry context, so no
        // span is made active at every poll of its future.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_filter(filter_fn(|metadata| {
            let level = if metadata.is_span() {
                Level::INFO
            } else {
                Level::WARN
            };
            metadata.target().starts_with("switchboard") && *metadata.level() <= level
        }));
    Some(layer)
}

/// The resource every span names: `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them, the service named
/// `switchboard` unless they name it.
fn resource() -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let resource = Resource::builder();
    if named {
        resource.build()
    } else {
        resource.with_service_name("switchboard").build()
    }
}

/// The OTLP/HTTP exporter, as the `OTEL_EXPORTER_OTLP_*` variables set it
/// up, naming [`resource`]; `None` while traces are off.
pub fn exporter() -> Result<Option<SpanExporter>, String> {
    if !enabled() {
        return Ok(None);
    }
    let mut exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|err| format!("the OTLP exporter (OTEL_EXPORTER_OTLP_*): {err}"))?;
    exporter.set_resource(&resource());
    Ok(Some(exporter))
}

/// Finished spans, on their way to the exporter.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Finished(pub Vec<SpanData>);

/// Finished spans go to the exporter from here on.
pub fn deliver_to(exporter: Recipient<Finished>) {
    let _ = EXPORTER.set(exporter);
}

/// Spans refused since the last call, and the count back to zero.
pub fn take_refused() -> u64 {
    REFUSED.swap(0, Ordering::Relaxed)
}

/// Spans a thread holds before it hands them over, at most: a message per
/// span would wake the exporter's thread for each one.
pub const HAND_OVER_AT: usize = 64;

thread_local! {
    /// The spans this thread has finished and not yet handed over.
    static HELD: RefCell<Held> = const { RefCell::new(Held(Vec::new())) };
}

/// A thread's held spans; what a thread holds when it ends is handed over.
struct Held(Vec<SpanData>);

impl Held {
    fn hand_over(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.0);
        let count = spans.len() as u64;
        let taken = EXPORTER
            .get()
            .is_some_and(|exporter| exporter.try_send(Finished(spans)).is_ok());
        if !taken {
            REFUSED.fetch_add(count, Ordering::Relaxed);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.hand_over();
    }
}

/// Hands the spans this thread holds to the exporter. Every thread that
/// ends spans runs actors, whose periodic report calls this, so no span is
/// held longer than a report's interval.
pub fn hand_over() {
    if enabled() {
        let _ = HELD.try_with(|held| held.borrow_mut().hand_over());
    }
}

/// The SDK's processor: keeps each sampled span with the thread that ended
/// it, and hands them to the exporter actor in batches, never waiting; a
/// batch its mailbox cannot take is counted as dropped.
#[derive(Debug)]
struct HandOver;

impl SpanProcessor for HandOver {
    fn on_start(&self, _: &mut Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let held = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            held.0.push(span);
            if held.0.len() >= HAND_OVER_AT {
                held.hand_over();
            }
        });
        if held.is_err() {
            REFUSED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exporter flushes at shutdown ([`crate::actors::span_exporter`]).
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}
