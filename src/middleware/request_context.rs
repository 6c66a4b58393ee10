//! Per-request context: the request id and the access log line.
//!
//! The id is taken from the client's `X-Request-Id` when it sent a sane one
//! (so a trace can follow a request across services), else made up. It is
//! kept in a task-local for the request's lifetime, so a problem body built
//! anywhere below (an extractor, a handler, the 404 fallback) can carry it
//! without threading it through every signature, and it is echoed on every
//! response. One log line per request names the route template, never just
//! the raw path, so logs group by endpoint, and the same figures go to this
//! worker's metrics batch (scrapes of `/metrics` excepted).
//!
//! This runs for every request, so it costs no system call and little
//! allocation: made-up ids come from a per-thread generator (request ids
//! need to be unique, not unguessable; `getrandom` per request was a
//! measurable share of a small request), the id lives as the header value it
//! is sent as, and the route template is the [`RouteLabel`] its resource
//! carries rather than a second match of the path against every route.

use std::rc::Rc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::Error;

use super::guards::WorkerGuards;
use crate::metrics::Event;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A resource's route template, as logs and metrics name it; each resource
/// carries its own (see [`crate::routes`]).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// The route label of requests no route matched: one value for all of them,
/// so no client can grow the label set.
const UNMATCHED: &str = "unmatched";
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

/// Longest client-sent request id that is echoed rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().map(str::to_owned).ok())
        .ok()
        .flatten()
}

/// The client's request id, if it is one we can safely echo.
fn incoming_id(req: &ServiceRequest) -> Option<HeaderValue> {
    let value = req.headers().get(&REQUEST_ID_HEADER)?;
    let bytes = value.as_bytes();
    let sane = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(u8::is_ascii_graphic);
    sane.then(|| value.clone())
}

/// A fresh random (version 4) UUID, from this thread's generator.
fn new_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid.hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = incoming_id(&req).unwrap_or_else(new_id);
    // Every layer inside renders its failures as responses (never `Err`), so
    // each one gets the id header and the log line below.
    let mut response = REQUEST_ID.scope(id.clone(), next.call(req)).await?;
    let request = response.request();
    let route = request
        .app_data::<RouteLabel>()
        .map_or(UNMATCHED, |label| label.0);
    let elapsed = started.elapsed();
    tracing::info!(
        method = %request.method(),
        route,
        path = request.path(),
        status = response.status().as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = id.to_str().unwrap_or_default(),
        "request"
    );
    if let (Some(worker), false) = (
        request.app_data::<Rc<WorkerGuards>>(),
        route == METRICS_ROUTE,
    ) {
        worker.record(Event::Request {
            method: method_label(request.method()),
            route,
            status: response.status().as_u16(),
            seconds: elapsed.as_secs_f64(),
        });
    }
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    Ok(response)
}
