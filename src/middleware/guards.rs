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
//! - Access control ([`super::authorize`]): the token is verified here, and
//!   its subject decides whose allowance the request spends.
//! - The rate limiter is asked per client (the token's subject, else the
//!   address), through the worker's outbox (one message per shard per turn
//!   of the event loop); if it is dead or restarting, the request is let
//!   through (fail-open) and that is logged, because a broken limiter must
//!   not take the service down with it.
//! - A request access control refused is answered now, 401 or 403.
//! - The query: a parameter the route does not take is a 400 naming it.
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
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse, ResponseError};

use crate::actors::rate_limiter::outbox::LimiterOutbox;
use crate::actors::rate_limiter::LimiterFailed;
use crate::app_state::AppState;
use crate::auth::Authenticator;
use crate::error::ApiError;
use crate::metrics::{Event, RateDecision, Recorder, FLUSH_EVERY};
use crate::rate_limit::headers::{rate_limit_headers, PolicyHeaders};
use crate::rate_limit::{Decision, RateKey};

use super::authorize::{self, authorize};
use super::body;
use super::in_flight::{Full, InFlight, Permit};
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
    /// This worker's copy of the token keys; `None`: access control off.
    auth: Option<Rc<Authenticator>>,
}

impl WorkerGuards {
    /// This worker's guard state, with its share of the process-wide
    /// in-flight cap, and the task that records its in-flight count every
    /// [`FLUSH_EVERY`] (call on the worker's own thread).
    pub fn start(
        worker: usize,
        in_flight: InFlight,
        metrics: Recorder,
        auth: Option<Rc<Authenticator>>,
    ) -> Rc<Self> {
        let guards = Rc::new(Self {
            worker,
            in_flight: Rc::new(in_flight),
            fail_open: Cell::new(0),
            fail_open_logged: Cell::new(None),
            limiter: Rc::default(),
            metrics,
            auth,
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

    pub fn auth(&self) -> Option<&Authenticator> {
        self.auth.as_deref()
    }

    pub fn metrics(&self) -> &Recorder {
        &self.metrics
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

/// The guards, in order; the first to refuse answers.
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
    if let Some(route) = req.app_data::<RouteLabel>() {
        tracing::Span::current().record("route", route.0);
    }
    let limits = &state.limits;
    let client = limits
        .clients
        .key(req.peer_addr().map(|peer| peer.ip()), req.headers());
    let refused = |err: ApiError| err.error_response();
    let admitted = async {
        body::check_declared(req.headers(), limits.body_limit_bytes).map_err(refused)?;
        let permit = match shed(&worker, client) {
            Ok(permit) => permit,
            Err(shed) => {
                actix_web::rt::time::sleep(SHED_PAUSE).await;
                return Err(refused(shed));
            }
        };
        let principal = authorize(&req, worker.auth());
        let key = match &principal {
            Ok(Some(principal)) => Some(RateKey::Subject(Arc::clone(&principal.subject))),
            _ => client.map(RateKey::Address),
        };
        let allowance = rate_limit(&state, &worker, key).await?;
        principal.map_err(|refusal| authorize::refused(refusal, &worker.metrics))?;
        known_query(&req).map_err(refused)?;
        Ok::<_, HttpResponse>((permit, allowance))
    };
    let (_permit, allowance) = match admitted.await {
        Ok(admitted) => admitted,
        Err(refused) => return Ok(req.into_response(refused)),
    };
    body::limit_read_time(&mut req, limits.body_read_timeout);
    let mut response = within_deadline(req, next, limits.request_timeout).await?;
    if let Some(Allowance {
        headers,
        remaining,
        reset,
    }) = allowance
    {
        rate_limit_headers(response.headers_mut(), headers, remaining, reset);
    }
    Ok(response)
}

/// A query parameter the route does not take is a 400 naming it.
fn known_query(req: &ServiceRequest) -> Result<(), ApiError> {
    let allowed = req
        .app_data::<QueryParams>()
        .map_or(&[][..], |params| params.0);
    let Some(unknown) = unknown_query_param(req.query_string(), allowed) else {
        return Ok(());
    };
    let takes = match allowed {
        [] => "none".to_owned(),
        names => names.join(", "),
    };
    let unknown = loggable(unknown);
    Err(ApiError::BadRequest(format!(
        "unknown query parameter {unknown:?} (this route takes {takes})"
    )))
}

/// How long a request refused for want of room waits for its 503. Clients
/// that retry at once (a tight retry loop, a load balancer's retries) would
/// otherwise get their 503s as fast as the server can write them, and spend
/// on refusals the time the admitted requests need (docs/PERFORMANCE.md,
/// "How the figures grow"). Held, a refused request costs a timer and no
/// permit.
const SHED_PAUSE: Duration = Duration::from_millis(500);

/// A place among the requests in flight, or 503 past the worker's share of
/// the cap or the client's share of it.
fn shed(worker: &WorkerGuards, client: Option<IpAddr>) -> Result<Permit, ApiError> {
    worker.in_flight.enter(client).map_err(|full| {
        let detail = match full {
            Full::Worker => "the server is at capacity; retry shortly",
            Full::Client => "this client has too many requests in flight; retry shortly",
        };
        ApiError::Unavailable {
            detail: detail.into(),
            retry_after: Duration::from_secs(1),
        }
    })
}

/// What the limiter allowed, for the response's headers.
struct Allowance<'a> {
    headers: &'a PolicyHeaders,
    remaining: u32,
    reset: Duration,
}

/// The client's allowance, or 429 once it is spent; `None` when limiting
/// is off, the client is unknown, or the limiter cannot be asked (the
/// request goes through: fail-open).
async fn rate_limit<'a>(
    state: &'a AppState,
    worker: &WorkerGuards,
    key: Option<RateKey>,
) -> Result<Option<Allowance<'a>>, HttpResponse> {
    let Some((limiting, key)) = state.rate_limiting.get().zip(key) else {
        return Ok(None);
    };
    match worker.limiter.check(&limiting.shards, key).await {
        Ok(Decision::Limited { retry_after, reset }) => {
            worker
                .metrics
                .record(Event::RateLimit(RateDecision::Limited));
            let mut response = ApiError::TooManyRequests { retry_after }.error_response();
            rate_limit_headers(response.headers_mut(), &limiting.headers, 0, reset);
            Err(response)
        }
        Ok(Decision::Allowed { remaining, reset }) => {
            worker
                .metrics
                .record(Event::RateLimit(RateDecision::Allowed));
            Ok(Some(Allowance {
                headers: &limiting.headers,
                remaining,
                reset,
            }))
        }
        Err(err) => {
            worker.record_fail_open(&err);
            Ok(None)
        }
    }
}

/// The handler's answer, or 504 once `deadline` passes (its future, and
/// the work it awaited, dropped).
async fn within_deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    deadline: Duration,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let request = req.request().clone();
    match actix_web::rt::time::timeout(deadline, next.call(req)).await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => Ok(ServiceResponse::new(
            request,
            ApiError::Timeout(deadline).error_response(),
        )),
    }
}

/// For a resource outside the guards: refuses at once what
/// [`authorize`] refuses (the one guard of `/metrics`).
pub async fn authorized_at_once(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let worker = req.app_data::<Rc<WorkerGuards>>().cloned();
    let auth = worker.as_ref().and_then(|worker| worker.auth());
    if let (Err(refusal), Some(worker)) = (authorize(&req, auth), &worker) {
        let response = authorize::refused(refusal, worker.metrics());
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
