//! The guards in front of every request but the probes and the scrape
//! (`/health`, `/ready`, `/metrics`), unknown paths and methods included, in
//! this order (cheapest refusal first):
//!
//! - The body ([`super::body`]): an encoded body is 415 and one that
//!   declares a length over the limit 413, before a byte is read (the JSON
//!   extractor stops chunked bodies at the same limit); a body that does not
//!   arrive within the body-read timeout ends the request with 408.
//! - Load shedding ([`super::in_flight`]): past the worker's share of the
//!   in-flight cap, or the client's share of it, an immediate 503 with
//!   `Retry-After`.
//! - The rate limiter is asked per client, through the worker's outbox (one
//!   message per shard per turn of the event loop); if it is dead or
//!   restarting, the request is let through (fail-open) and that is logged,
//!   because a broken limiter must not take the service down with it.
//! - The deadline drops the handler's future when it fires, which cancels the
//!   work it was awaiting, and answers 504.
//!
//! The client is found as [`crate::rate_limit::client::ClientPolicy`] says (the peer, or what trusted
//! proxies wrote). [`WorkerGuards`] is one worker's state for all of this,
//! its limiter outbox too: nothing in it is shared between workers.
//!
//! This runs after routing (on each resource, and on the fallback for
//! unknown paths), so the request can be cloned to answer the 504 (cloning
//! it before routing is not allowed).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use crate::actors::rate_limiter::outbox::LimiterOutbox;
use crate::actors::rate_limiter::LimiterFailed;
use crate::app_state::AppState;
use crate::error::ApiError;
use crate::metrics::{Event, RateDecision, Recorder, FLUSH_EVERY};
use crate::rate_limit::headers::rate_limit_headers;
use crate::rate_limit::Decision;

use super::body;
use super::in_flight::{Full, InFlight};
use super::request_context::{loggable, RouteLabel};

/// The query parameters a resource takes; any other is a 400. None,
/// unless the resource says otherwise.
#[derive(Debug, Clone, Copy)]
pub struct QueryParams(pub &'static [&'static str]);

/// The first query parameter `query` holds that `allowed` does not list.
fn unknown_query_param<'a>(query: &'a str, allowed: &[&str]) -> Option<&'a str> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .find(|name| !allowed.contains(name))
}

/// How often, at most, each worker logs that it let requests through
/// because the rate limiter was unavailable.
const FAIL_OPEN_LOG_EVERY: Duration = Duration::from_secs(1);

/// One worker's guard state. Each worker builds its own; nothing is shared.
pub struct WorkerGuards {
    worker: usize,
    in_flight: Rc<InFlight>,
    fail_open: Cell<u64>,
    fail_open_logged: Cell<Option<Instant>>,
    /// This worker's rate-limit checks, sent in batches.
    limiter: Rc<LimiterOutbox>,
    /// This worker's metrics recorder.
    metrics: Recorder,
}

impl WorkerGuards {
    /// This worker's guard state, with its share of the process-wide
    /// in-flight cap, and the task that records its in-flight count every
    /// [`FLUSH_EVERY`] (call on the worker's own thread).
    pub fn start(worker: usize, in_flight: InFlight, metrics: Recorder) -> Rc<Self> {
        let guards = Rc::new(Self {
            worker,
            in_flight: Rc::new(in_flight),
            fail_open: Cell::new(0),
            fail_open_logged: Cell::new(None),
            limiter: Rc::default(),
            metrics,
        });
        let weak = Rc::downgrade(&guards);
        actix_web::rt::spawn(async move {
            let mut ticks = actix_web::rt::time::interval(FLUSH_EVERY);
            loop {
                ticks.tick().await;
                let Some(guards) = weak.upgrade() else { break };
                guards.metrics.record(Event::InFlight {
                    worker: guards.worker,
                    count: i64::try_from(guards.in_flight.count()).unwrap_or(i64::MAX),
                });
            }
        });
        guards
    }

    fn record_fail_open(&self, err: &LimiterFailed) {
        self.metrics
            .record(Event::RateLimit(RateDecision::FailOpen));
        self.fail_open.set(self.fail_open.get() + 1);
        let due = self
            .fail_open_logged
            .get()
            .is_none_or(|at| at.elapsed() >= FAIL_OPEN_LOG_EVERY);
        if due {
            self.fail_open_logged.set(Some(Instant::now()));
            tracing::warn!(%err, fail_open_total = self.fail_open.get(), "rate limiter unavailable: letting requests through");
        }
    }
}

pub async fn guards(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let (Some(state), Some(worker)) = (
        req.app_data::<web::Data<AppState>>().cloned(),
        req.app_data::<Rc<WorkerGuards>>().cloned(),
    ) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let limits = &state.limits;
    if let Some(route) = req.app_data::<RouteLabel>() {
        tracing::Span::current().record("route", route.0);
    }
    if let Err(refused) = body::check_declared(req.headers(), limits.body_limit_bytes) {
        return Ok(req.into_response(refused.error_response()));
    }
    let allowed = req
        .app_data::<QueryParams>()
        .map_or(&[][..], |params| params.0);
    if let Some(unknown) = unknown_query_param(req.query_string(), allowed) {
        let takes = match allowed {
            [] => "none".to_owned(),
            names => names.join(", "),
        };
        let unknown = loggable(unknown);
        let refused = ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?} (this route takes {takes})"
        ));
        return Ok(req.into_response(refused.error_response()));
    }
    let client = limits
        .clients
        .key(req.peer_addr().map(|peer| peer.ip()), req.headers());
    let _permit = match worker.in_flight.enter(client) {
        Ok(permit) => permit,
        Err(full) => {
            let detail = match full {
                Full::Worker => "the server is at capacity; retry shortly",
                Full::Client => "this client has too many requests in flight; retry shortly",
            };
            let shed = ApiError::Unavailable {
                detail: detail.into(),
                retry_after: Duration::from_secs(1),
            };
            return Ok(req.into_response(shed.error_response()));
        }
    };

    let mut decision = None;
    let limited_client = state.rate_limiting.get().zip(client);
    if let Some((limiting, key)) = limited_client {
        match worker.limiter.check(&limiting.shards, key).await {
            Ok(Decision::Limited { retry_after, reset }) => {
                worker
                    .metrics
                    .record(Event::RateLimit(RateDecision::Limited));
                let mut response = ApiError::TooManyRequests { retry_after }.error_response();
                rate_limit_headers(response.headers_mut(), &limiting.headers, 0, reset);
                return Ok(req.into_response(response));
            }
            Ok(Decision::Allowed { remaining, reset }) => {
                worker
                    .metrics
                    .record(Event::RateLimit(RateDecision::Allowed));
                decision = Some((&limiting.headers, remaining, reset))
            }
            Err(err) => worker.record_fail_open(&err),
        }
    }

    body::limit_read_time(&mut req, limits.body_read_timeout);
    let request = req.request().clone();
    let mut response =
        match actix_web::rt::time::timeout(limits.request_timeout, next.call(req)).await {
            Ok(response) => response?.map_into_boxed_body(),
            Err(_) => ServiceResponse::new(
                request,
                ApiError::Timeout(limits.request_timeout).error_response(),
            ),
        };
    if let Some((headers, remaining, reset)) = decision {
        rate_limit_headers(response.headers_mut(), headers, remaining, reset);
    }
    Ok(response)
}
