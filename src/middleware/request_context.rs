//! Per-request context: the request id ([`crate::request_id`]), echoed on
//! every response, and the access log line.
//!
//! One log line per request names the route template, never just the raw
//! path, so logs group by endpoint, and the same figures go to this
//! worker's metrics recorder (scrapes of `/metrics` excepted).
//!
//! This runs for every request, so it costs no system call and little
//! allocation: the route template is the [`RouteLabel`] its resource
//! carries rather than a second match of the path against every route.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::Error;

use crate::metrics::{Event, Recorder};
use crate::request_id::{self, REQUEST_ID_HEADER};

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

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id::of_request(req.headers());
    // Every layer inside renders its failures as responses (never `Err`), so
    // each one gets the id header and the log line below.
    let mut response = request_id::scope(id.clone(), next.call(req)).await?;
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
    if let (Some(metrics), false) = (request.app_data::<Recorder>(), route == METRICS_ROUTE) {
        metrics.record(Event::Request {
            method: method_label(request.method()),
            route,
            status: response.status().as_u16(),
            seconds: elapsed.as_secs_f64(),
        });
    }
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    Ok(response)
}
