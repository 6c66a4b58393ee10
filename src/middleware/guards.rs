//! The guards in front of every limited route: body size, load shedding,
//! per-client rate limit and the request deadline, in that order (cheapest
//! refusal first).
//!
//! - Bodies that declare a length over the limit get 413 before a byte is
//!   read (the JSON extractor stops chunked bodies at the same limit).
//! - Load shedding counts requests in flight per worker: each worker owns its
//!   share of `SWITCHBOARD_MAX_IN_FLIGHT` in a plain `Cell`, so there is no
//!   shared counter and no lock. Past it: an immediate 503 with Retry-After.
//! - The rate limiter is asked per client, through the worker's outbox (one
//!   message per shard per turn of the event loop); if it is dead or
//!   restarting, the request is let through (fail-open) and that is logged,
//!   because a broken limiter must not take the service down with it.
//! - The deadline drops the handler's future when it fires, which cancels the
//!   work it was awaiting, and answers 504.
//!
//! [`WorkerGuards`] is one worker's state for all of this, its limiter outbox
//! too: nothing in it is shared between workers.
//!
//! This runs as resource middleware, after routing, so the request can be
//! cloned to answer the 504 (cloning it before routing is not allowed).

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use crate::actors::rate_limiter::outbox::LimiterOutbox;
use crate::actors::rate_limiter::LimiterFailed;
use crate::app_state::AppState;
use crate::error::ApiError;
use crate::metrics::{Event, RateDecision, Recorder, FLUSH_EVERY};
use crate::rate_limit::headers::rate_limit_headers;
use crate::rate_limit::Decision;

use super::request_context::RouteLabel;

/// How often, at most, each worker logs that it let requests through
/// because the rate limiter was unavailable.
const FAIL_OPEN_LOG_EVERY: Duration = Duration::from_secs(1);

/// One worker's guard state. Each worker builds its own; nothing is shared.
pub struct WorkerGuards {
    worker: usize,
    in_flight: Cell<usize>,
    max_in_flight: usize,
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
    pub fn start(
        worker: usize,
        max_in_flight: usize,
        workers: usize,
        metrics: Recorder,
    ) -> Rc<Self> {
        let guards = Rc::new(Self {
            worker,
            in_flight: Cell::new(0),
            max_in_flight: max_in_flight.div_ceil(workers.max(1)).max(1),
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
                    count: i64::try_from(guards.in_flight.get()).unwrap_or(i64::MAX),
                });
            }
        });
        guards
    }

    fn try_enter(self: &Rc<Self>) -> Option<InFlightPermit> {
        let current = self.in_flight.get();
        (current < self.max_in_flight).then(|| {
            self.in_flight.set(current + 1);
            InFlightPermit(Rc::clone(self))
        })
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

/// A request's place among those in flight, given back when dropped (also
/// when the request is cancelled).
struct InFlightPermit(Rc<WorkerGuards>);

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// The client a request is counted against.
fn client_key(req: &ServiceRequest, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        // The last hop is the one our proxy saw; earlier ones are the
        // client's word and can be forged.
        let forwarded = req
            .headers()
            .get(header::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(|list| list.rsplit_once(',').map_or(list, |(_, last)| last))
            .and_then(|last| last.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.peer_addr().map(|addr| addr.ip())
}

pub async fn guards(
    req: ServiceRequest,
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

    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|len| len > limits.body_limit_bytes as u64) {
        return Ok(
            req.into_response(ApiError::PayloadTooLarge(limits.body_limit_bytes).error_response())
        );
    }

    let Some(_permit) = worker.try_enter() else {
        let shed = ApiError::Unavailable {
            detail: "the server is at capacity; retry shortly".into(),
            retry_after: Duration::from_secs(1),
        };
        return Ok(req.into_response(shed.error_response()));
    };

    let mut decision = None;
    let limited_client = state
        .rate_limiting
        .get()
        .and_then(|limiting| Some((limiting, client_key(&req, limits.trust_proxy)?)));
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
