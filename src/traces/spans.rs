//! The spans a trace is made of, beyond the request's own: one per actor
//! message, per database statement, per batch of statements and per fetch
//! attempt. Each is created only while traces are on and inside a sampled
//! request's trace; otherwise the current span goes on, so traces that
//! are off add nothing to a request's path, a request left out by sampling
//! costs one span, and background work starts no trace of its own.
//!
//! Fields named `otel.*` are for the trace only (its name and kind); the
//! logs leave them out ([`crate::telemetry`]). Attributes the logs need not
//! carry are set on the OpenTelemetry span alone.

use std::time::Instant;

use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::KeyValue;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether a span is due here: traces on, inside a trace that is sampled.
/// An unsampled request's spans would record nothing; not making them
/// saves what they cost.
fn due() -> bool {
    super::enabled() && sampled(&Span::current())
}

/// Is `span` part of a sampled trace?
fn sampled(span: &Span) -> bool {
    !span.is_none() && span.context().span().span_context().is_sampled()
}

/// A message of type `M` to an actor, from its sending to the end of its
/// handling, named `actor Message` (`db GetUser`); `None` when no span is
/// due.
pub fn message<M>(actor: &'static str) -> Option<(Span, Instant)> {
    if !due() {
        return None;
    }
    let message = type_name::<M>();
    let span = tracing::info_span!(
        "actor message",
        otel.name = %format_args!("{actor} {message}"),
        actor = actor,
    );
    Some((span, Instant::now()))
}

/// The actor took the message off its mailbox, `sent` ago: the time it
/// waited, as an attribute and as the event that ends the wait.
pub fn dequeued(span: &Span, sent: Instant) {
    let waited = sent.elapsed().as_secs_f64() * 1000.0;
    span.set_attribute("actor.mailbox.wait_ms", waited);
    span.add_event("dequeued", Vec::new());
}

/// The short name of a message type: `GetUser` for `...::db::GetUser`.
fn type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    let plain = full.split('<').next().unwrap_or(full);
    plain.rsplit("::").next().unwrap_or(plain)
}

/// A statement on the `users` table, as the database's client sees it.
pub fn statement(system: &'static str, operation: &'static str) -> Span {
    if !due() {
        return Span::current();
    }
    tracing::info_span!(
        "db statement",
        otel.name = %format_args!("{operation} users"),
        otel.kind = "client",
        db.system = system,
        db.operation.name = operation,
        db.collection.name = "users",
    )
}

/// A batch of statements run as one, under the first it serves and linked
/// to every other, so each request's trace leads to it.
pub fn batch(served: &[Span]) -> Span {
    let Some(first) = served.first() else {
        return Span::none();
    };
    if served.len() == 1 || !super::enabled() || !sampled(first) {
        return first.clone();
    }
    let span = tracing::info_span!(
        parent: first,
        "db batch",
        otel.kind = "client",
        db.operation.batch.size = served.len() as i64,
    );
    for other in &served[1..] {
        span.add_link(other.context().span().span_context().clone());
    }
    span
}

/// The span a batch's query was sent in: kept with the query, while traces
/// are on.
pub fn sender() -> Span {
    if super::enabled() {
        Span::current()
    } else {
        Span::none()
    }
}

/// One attempt at an upstream URL.
pub fn fetch_attempt(url: &reqwest::Url, attempt: u32) -> Span {
    if !due() {
        return Span::current();
    }
    let span = tracing::info_span!("fetch attempt", otel.name = "GET", otel.kind = "client",);
    span.set_attribute("http.request.method", "GET");
    span.set_attribute("url.full", url.to_string());
    span.set_attribute(
        "server.address",
        url.host_str().unwrap_or_default().to_owned(),
    );
    if let Some(port) = url.port_or_known_default() {
        span.set_attribute("server.port", i64::from(port));
    }
    span.set_attribute(
        "http.request.resend_count",
        i64::from(attempt.saturating_sub(1)),
    );
    span
}

/// How an attempt ended: the upstream's status, or why there was none.
pub fn attempt_ended(span: &Span, status: Option<u16>, failure: Option<&'static str>) {
    if !super::enabled() {
        return;
    }
    if let Some(status) = status {
        span.set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.set_status(Status::error(status.to_string()));
        }
    }
    if let Some(reason) = failure {
        span.set_attribute("error.type", reason);
        span.set_status(Status::error(reason));
    }
}

/// The server span's name (`GET /users/{id}`) and outcome, once answered.
pub fn request_ended(span: &Span, method: &str, route: &str, status: u16) {
    let context = span.context();
    let otel = context.span();
    if !otel.span_context().is_sampled() {
        return;
    }
    otel.update_name(format!("{method} {route}"));
    otel.set_attribute(KeyValue::new("http.route", route.to_owned()));
    otel.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        otel.set_status(Status::error(status.to_string()));
    }
}
