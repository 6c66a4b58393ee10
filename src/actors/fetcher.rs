//! `FetcherActor`: owns the one reqwest client (its connection pool), the
//! per-host circuit breakers and concurrency limits, and the retry policy.
//!
//! A `FetchMany` is answered with a future that fetches every URL at once;
//! the mailbox only ever does bookkeeping. Each URL's future asks the actor
//! for admission before every attempt (`Admit`: is the host's circuit
//! closed? here is its concurrency limit) and reports how the host did
//! (`Report`), so breaker state is only ever touched by the actor itself.
//! Every URL is read through the cache ([`CacheHandle::read_through`]):
//! successful GET bodies fill it, and a hit makes no upstream call.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ResponseFuture;
use actix::{AsyncContext, Context, Handler, Message};
use futures_util::future::join_all;
use reqwest::{Client, Url};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::cache::{CacheHandle, Cached, Read};
use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::{ActorRef, ActorUnavailable};
use crate::domain::FetchUrls;
use crate::fetch::allow_list::AllowList;
use crate::fetch::attempt::{attempt, Outcome};
use crate::fetch::breaker::{Breaker, BreakerState};
use crate::fetch::retry;
use crate::fetch::FetchResult;
use crate::metrics::{Event, Recorder};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_CONNECTIONS_PER_HOST: usize = 32;

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub allow: AllowList,
    pub max_attempts: u32,
    /// Each attempt's deadline.
    pub attempt_timeout: Duration,
    /// All attempts and waits for one URL; kept inside the request deadline
    /// so one slow URL never fails the others.
    pub total_budget: Duration,
    pub max_body_bytes: usize,
    /// Attempts in flight to one host at once; more wait their turn.
    pub host_concurrency: usize,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

struct Host {
    breaker: Breaker,
    permits: Arc<Semaphore>,
}

pub struct FetcherActor {
    config: Arc<FetchConfig>,
    client: Client,
    cache: CacheHandle,
    hosts: HashMap<String, Host>,
    call_timeout: Duration,
    metrics: Recorder,
    supervision: Supervision,
}

fn build_client() -> Client {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|err| {
            tracing::error!(%err, "cannot build the configured HTTP client; using defaults");
            Client::new()
        })
}

impl FetcherActor {
    pub fn new(
        config: FetchConfig,
        cache: CacheHandle,
        call_timeout: Duration,
        supervision: Supervision,
    ) -> Self {
        Self {
            metrics: supervision.metrics().clone(),
            config: Arc::new(config),
            client: build_client(),
            cache,
            hosts: HashMap::new(),
            call_timeout,
            supervision,
        }
    }

    fn host(&mut self, key: &str) -> &mut Host {
        let config = &self.config;
        self.hosts.entry(key.to_owned()).or_insert_with(|| Host {
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            permits: Arc::new(Semaphore::new(config.host_concurrency)),
        })
    }
}

impl Supervise for FetcherActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A fresh client and no breaker history. Fetches already in flight keep
    /// their clone of the old client and finish.
    fn reset(&mut self) {
        self.client = build_client();
        self.hosts.clear();
    }

    /// Each host's breaker as its clock has it: an open circuit turns
    /// half-open after its cool-down whether or not a fetch comes to see.
    fn report(&mut self) {
        for (host, entry) in &self.hosts {
            let event = breaker_event(host.clone(), entry.breaker.state());
            self.metrics.record(event);
        }
    }
}

supervised_actor!(FetcherActor; FetchMany, Admit, Report);

/// Fetch every URL concurrently; one result per URL, in order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<FetchResult>, ActorUnavailable>")]
pub struct FetchMany(pub FetchUrls);

/// May an attempt go to this host now? Answers the host's concurrency limit.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<Semaphore>, Refused>")]
struct Admit(String);

/// How the host did on one attempt.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Report {
    host: String,
    healthy: bool,
}

#[derive(Debug)]
struct Refused(&'static str);

impl From<ActorUnavailable> for Refused {
    fn from(_: ActorUnavailable) -> Self {
        Self("fetcher unavailable")
    }
}

impl Handler<FetchMany> for FetcherActor {
    type Result = ResponseFuture<Result<Vec<FetchResult>, ActorUnavailable>>;

    fn handle(&mut self, FetchMany(urls): FetchMany, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, ctx| {
            let job = Job {
                config: Arc::clone(&act.config),
                client: act.client.clone(),
                cache: act.cache.clone(),
                fetcher: ActorRef::new(act.supervision.id(), ctx.address(), act.call_timeout),
                metrics: act.metrics.clone(),
            };
            let urls = urls.into_inner();
            let fetches =
                async move { Ok(join_all(urls.into_iter().map(|url| job.fetch(url))).await) };
            // It runs after this handler returns: in the caller's span still.
            Box::pin(fetches.instrument(tracing::Span::current())) as ResponseFuture<_>
        })
    }
}

impl Handler<Admit> for FetcherActor {
    type Result = Result<Arc<Semaphore>, Refused>;

    fn handle(&mut self, Admit(host): Admit, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, _| {
            let entry = act.host(&host);
            let admitted = entry.breaker.admit();
            let (permits, state) = (Arc::clone(&entry.permits), entry.breaker.state());
            act.metrics.record(breaker_event(host, state));
            if admitted {
                Ok(permits)
            } else {
                Err(Refused("circuit open"))
            }
        })
    }
}

impl Handler<Report> for FetcherActor {
    type Result = ();

    fn handle(&mut self, report: Report, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            let breaker = &mut act.host(&report.host).breaker;
            breaker.record(report.healthy);
            let state = breaker.state();
            act.metrics.record(breaker_event(report.host, state));
        })
    }
}

fn breaker_event(host: String, state: BreakerState) -> Event {
    let state = match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    };
    Event::Breaker { host, state }
}

/// The `outcome` label of one upstream attempt.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Answered { status, .. } => match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Outcome::Failed { reason, .. } => match *reason {
            "timeout" => "timeout",
            "connect error" => "connect_error",
            "body too large" => "body_too_large",
            _ => "error",
        },
    }
}

/// What each URL's future needs: clones of the actor's handles, no state.
struct Job {
    config: Arc<FetchConfig>,
    client: Client,
    cache: CacheHandle,
    fetcher: ActorRef<FetcherActor>,
    metrics: Recorder,
}

/// What the upstream gave for one URL.
#[derive(Debug, Default)]
struct Fetched {
    attempts: u32,
    status: Option<u16>,
    bytes: u64,
    success: bool,
    error: Option<String>,
    /// A successful answer, to be cached.
    fill: Option<Cached>,
}

impl Fetched {
    fn failed(self, error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..self
        }
    }
}

impl Job {
    async fn fetch(&self, raw: String) -> FetchResult {
        let started = Instant::now();
        let mut result = FetchResult {
            url: raw.clone(),
            success: false,
            status: None,
            bytes: 0,
            cached: false,
            attempts: 0,
            elapsed_ms: 0,
            error: None,
        };
        match self.config.allow.check(&raw) {
            Ok(url) => {
                let key = format!("fetch:GET {url}");
                let load =
                    || async { Ok::<_, Infallible>(self.fetch_upstream(url, started).await) };
                let read = self.cache.read_through(key, load, |f| f.fill.clone());
                match read.await {
                    Ok(Read::Hit(cached)) => {
                        result.success = true;
                        result.status = Some(cached.status);
                        result.bytes = cached.body.len() as u64;
                        result.cached = true;
                    }
                    Ok(Read::Loaded(fetched)) => {
                        result.success = fetched.success;
                        result.status = fetched.status;
                        result.bytes = fetched.bytes;
                        result.attempts = fetched.attempts;
                        result.error = fetched.error;
                    }
                    Err(never) => match never {},
                }
            }
            Err(reason) => result.error = Some(reason.to_owned()),
        }
        result.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        result
    }

    /// Attempts the URL until it answers for good, fails for good, or runs
    /// out of attempts or time.
    async fn fetch_upstream(&self, url: Url, started: Instant) -> Fetched {
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let mut fetched = Fetched::default();
        let mut ceilings = retry::backoff(self.config.max_attempts);
        loop {
            let permits = match self.fetcher.call(Admit(host.clone())).await {
                Ok(permits) => permits,
                Err(Refused(reason)) => return fetched.failed(reason),
            };
            let Some(remaining) = self.config.total_budget.checked_sub(started.elapsed()) else {
                return fetched.failed("timeout");
            };
            let outcome = {
                let Ok(_permit) = permits.acquire().await else {
                    return fetched.failed("fetcher unavailable");
                };
                fetched.attempts += 1;
                let timeout = self.config.attempt_timeout.min(remaining);
                let attempt_started = Instant::now();
                let outcome = attempt(
                    &self.client,
                    &self.config.allow,
                    url.clone(),
                    timeout,
                    self.config.max_body_bytes,
                )
                .await;
                self.metrics.record(Event::Upstream {
                    host: host.clone(),
                    outcome: outcome_label(&outcome),
                    seconds: attempt_started.elapsed().as_secs_f64(),
                });
                outcome
            };
            self.fetcher.tell(Report {
                host: host.clone(),
                healthy: outcome.host_healthy(),
            });
            let (wait, error) = match outcome {
                Outcome::Answered {
                    status,
                    body,
                    retry_after,
                } => {
                    fetched.status = Some(status.as_u16());
                    fetched.bytes = body.len() as u64;
                    fetched.error = None;
                    if !retry::is_transient(status) {
                        fetched.success = status.is_success();
                        if fetched.success {
                            fetched.fill = Some(Cached {
                                status: status.as_u16(),
                                body,
                            });
                        }
                        return fetched;
                    }
                    (
                        retry_after,
                        format!("upstream answered {}", status.as_u16()),
                    )
                }
                Outcome::Failed { reason, transient } => {
                    fetched.error = Some(reason.to_owned());
                    if !transient {
                        return fetched;
                    }
                    (None, reason.to_owned())
                }
            };
            let Some(ceiling) = ceilings.next() else {
                let attempts = fetched.attempts;
                return fetched.failed(format!("{error} after {attempts} attempts"));
            };
            let wait = match wait {
                Some(asked) if asked > retry::MAX_RETRY_AFTER => {
                    let asked = asked.as_secs();
                    return fetched.failed(format!("{error}; asked to retry after {asked} s"));
                }
                Some(asked) => asked,
                None => retry::full_jitter(ceiling),
            };
            if started.elapsed() + wait >= self.config.total_budget {
                return fetched.failed(format!("{error}; out of time to retry"));
            }
            self.metrics.record(Event::Retry { host: host.clone() });
            actix_web::rt::time::sleep(wait).await;
        }
    }
}
