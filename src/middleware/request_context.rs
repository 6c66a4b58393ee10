//! Per-request context: the request id ([`crate::request_id`]), echoed on
//! every response; the request's span, in which everything that serves it
//! runs, so every line it writes carries its id, method, client and route;
//! and the access log line.
//!
//! One access line per request names the route template, never just the
//! raw path, so logs group by endpoint, and the same figures go to this
//! worker's metrics recorder (scrapes of `/metrics` excepted). Probes are
//! logged at DEBUG. What the client wrote (the path, its user agent) is cut
//! to a bounded length before it is logged.
//!
//! This runs for every request, so it costs no system call and little
//! allocation: the route template is the [`RouteLabel`] its resource
//! carries rather than a second match of the path against every route.

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::Error;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::KeyValue;
use tracing::{Instrument, Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{Event, Recorder};
use crate::request_id::{self, REQUEST_ID_HEADER};
use crate::traces::{self, propagation, spans};

/// A resource's route template, as logs and metrics name it; each resource
/// carries its own (see [`crate::routes`]).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// The route label of requests no route matched: one value for all of them,
/// so no client can grow the label set.
pub const UNMATCHED: &str = "unmatched";
/// Scrapes are not counted as traffic.
const METRICS_ROUTE: &str = "/metrics";

/// The method label: the standard methods, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Longest path or header value written to the log: the client chose them.
const MAX_LOGGED_CHARS: usize = 200;

/// Routes that probes and scrapers call: logged at DEBUG, so that they do
/// not drown real traffic.
const PROBES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// `text`, cut to at most `MAX_LOGGED_CHARS` characters.
pub fn loggable(text: &str) -> &str {
    text.char_indices()
        .nth(MAX_LOGGED_CHARS)
        .map_or(text, |(end, _)| &text[..end])
}

/// The access line, at `$level`, inside the request's span.
macro_rules! access_line {
    ($level:expr, $route:expr, $request:expr, $status:expr, $bytes:expr, $latency:expr) => {
        tracing::event!(
            $level,
            route = $route,
            path = loggable($request.path()),
            status = $status,
            bytes = $bytes,
            latency_ms = $latency,
            user_agent = $request
                .headers()
                .get(header::USER_AGENT)
                .map(|agent| loggable(&String::from_utf8_lossy(agent.as_bytes())).to_owned()),
            "request"
        )
    };
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id::of_request(req.headers());
    let (span, ids) = request_span(&req, &id);
    // Every layer inside renders its failures as responses (never `Err`), so
    // each one gets the id header and the log line below.
    let answered = next.call(req).instrument(span.clone());
    let mut response = request_id::scope(id.clone(), ids, answered).await?;
    let request = response.request();
    let route = request
        .app_data::<RouteLabel>()
        .map_or(UNMATCHED, |label| label.0);
    span.record("route", route);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let bytes = match response.response().body().size() {
        BodySize::Sized(bytes) => Some(bytes),
        BodySize::None => Some(0),
        BodySize::Stream => None,
    };
    // Milliseconds to the microsecond.
    let latency = elapsed.as_micros() as f64 / 1000.0;
    span.in_scope(|| {
        if PROBES.contains(&route) {
            access_line!(Level::DEBUG, route, request, status, bytes, latency);
        } else {
            access_line!(Level::INFO, route, request, status, bytes, latency);
        }
    });
    let method = method_label(request.method());
    if traces::enabled() {
        spans::request_ended(&span, method, route, status);
    }
    if let (Some(metrics), false) = (request.app_data::<Recorder>(), route == METRICS_ROUTE) {
        metrics.record(Event::Request {
            method,
            route,
            status,
            seconds: elapsed.as_secs_f64(),
        });
    }
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    Ok(response)
}

/// The request's span, in which everything that serves it runs, and its
/// ids in its trace: the server span's while traces are on, else made
/// here (the caller's trace continued, or a new one).
fn request_span(req: &ServiceRequest, id: &HeaderValue) -> (Span, SpanContext) {
    let parent = propagation::incoming(req.headers());
    let unrecorded = (!traces::enabled()).then(|| propagation::unrecorded(&parent));
    let client = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |peer| peer.ip().to_string());
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        request_id = id.to_str().unwrap_or_default(),
        trace_id = unrecorded.as_ref().map(|ids| tracing::field::display(ids.trace_id())),
        span_id = unrecorded.as_ref().map(|ids| tracing::field::display(ids.span_id())),
        method = %req.method(),
        route = tracing::field::Empty,
        subject = tracing::field::Empty,
        client = %client,
    );
    let ids = match unrecorded {
        Some(ids) => ids,
        None => server_span(&span, parent, req, client),
    };
    (span, ids)
}

/// Makes `span` the request's server span, a child of the caller's when it
/// sent a well-formed `traceparent`, with the HTTP attributes known now;
/// its ids go into the request's log lines.
fn server_span(
    span: &Span,
    parent: opentelemetry::Context,
    req: &ServiceRequest,
    client: String,
) -> SpanContext {
    let _ = span.set_parent(parent);
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_sampled() {
        let mut attributes = vec![
            KeyValue::new("http.request.method", method_label(req.method())),
            KeyValue::new("url.path", loggable(req.path()).to_owned()),
            KeyValue::new("client.address", client),
        ];
        if let Some(agent) = req.headers().get(header::USER_AGENT) {
            let agent = loggable(&String::from_utf8_lossy(agent.as_bytes())).to_owned();
            attributes.push(KeyValue::new("user_agent.original", agent));
        }
        context.span().set_attributes(attributes);
    }
    span.record("trace_id", tracing::field::display(ids.trace_id()));
    span.record("span_id", tracing::field::display(ids.span_id()));
    ids
}
