//! `FetcherActor`: owns the one reqwest client (its connection pool), the
//! per-host circuit breakers and concurrency limits, and the retry policy.
//!
//! A `FetchMany` is answered with a future that fetches every URL at once;
//! the mailbox only ever does bookkeeping. Each URL's future asks the actor
//! for admission before every attempt (`Admit`: is the host's circuit
//! closed? here is its concurrency limit) and reports how the host did
//! (`Report`), so breaker state is only ever touched by the actor itself.
//! Successful GET bodies go through the cache; a hit makes no upstream call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ResponseFuture;
use actix::{AsyncContext, Context, Handler, Message};
use futures_util::future::join_all;
use reqwest::{Client, Url};
use tokio::sync::Semaphore;

use super::cache::{self, CacheActor, Cached, Lookup};
use super::supervision::{run_guarded, supervised_actor, ActorUnavailable, Supervise, Supervision};
use super::ActorRef;
use crate::fetch::allow_list::AllowList;
use crate::fetch::attempt::{attempt, Outcome};
use crate::fetch::breaker::{Breaker, BreakerState};
use crate::fetch::retry;
use crate::fetch::FetchResult;
use crate::metrics::{Event, MetricsHandle};

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
    cache: ActorRef<CacheActor>,
    hosts: HashMap<String, Host>,
    call_timeout: Duration,
    metrics: MetricsHandle,
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
        cache: ActorRef<CacheActor>,
        call_timeout: Duration,
        metrics: MetricsHandle,
    ) -> Self {
        Self {
            metrics: metrics.clone(),
            config: Arc::new(config),
            client: build_client(),
            cache,
            hosts: HashMap::new(),
            call_timeout,
            supervision: Supervision::new("fetcher").reporting_to(metrics),
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
}

supervised_actor!(FetcherActor);

/// Fetch every URL concurrently; one result per URL, in order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<FetchResult>, ActorUnavailable>")]
pub struct FetchMany(pub Vec<String>);

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
                fetcher: ActorRef::new("fetcher", ctx.address(), act.call_timeout),
                metrics: act.metrics.clone(),
            };
            Box::pin(async move { Ok(join_all(urls.into_iter().map(|url| job.fetch(url))).await) })
                as ResponseFuture<_>
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
            act.supervision.record(breaker_event(host, state));
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
            act.supervision.record(breaker_event(report.host, state));
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
    cache: ActorRef<CacheActor>,
    fetcher: ActorRef<FetcherActor>,
    metrics: MetricsHandle,
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
            Ok(url) => self.fetch_allowed(url, &mut result, started).await,
            Err(reason) => result.error = Some(reason.to_owned()),
        }
        result.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        result
    }

    async fn fetch_allowed(&self, url: Url, result: &mut FetchResult, started: Instant) {
        let key = format!("fetch:GET {url}");
        let fill = match self.cache.ask(cache::Get(key.clone())).await {
            Ok(Ok(Lookup::Hit(cached))) => {
                result.success = true;
                result.status = Some(cached.status);
                result.bytes = cached.body.len() as u64;
                result.cached = true;
                return;
            }
            Ok(Ok(Lookup::Miss(token))) => Some(token),
            _ => None,
        };
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let mut ceilings = retry::backoff(self.config.max_attempts);
        loop {
            let permits = match self.fetcher.ask(Admit(host.clone())).await {
                Ok(Ok(permits)) => permits,
                Ok(Err(Refused(reason))) => return result.error = Some(reason.to_owned()),
                Err(_) => return result.error = Some("fetcher unavailable".to_owned()),
            };
            let Some(remaining) = self.config.total_budget.checked_sub(started.elapsed()) else {
                return result.error = Some("timeout".to_owned());
            };
            let outcome = {
                let Ok(_permit) = permits.acquire().await else {
                    return result.error = Some("fetcher unavailable".to_owned());
                };
                result.attempts += 1;
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
                self.metrics.send(vec![Event::Upstream {
                    host: host.clone(),
                    outcome: outcome_label(&outcome),
                    seconds: attempt_started.elapsed().as_secs_f64(),
                }]);
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
                    result.status = Some(status.as_u16());
                    result.bytes = body.len() as u64;
                    result.error = None;
                    if !retry::is_transient(status) {
                        result.success = status.is_success();
                        if let (true, Some(token)) = (result.success, fill) {
                            let value = Cached {
                                status: status.as_u16(),
                                body,
                            };
                            self.cache.tell(cache::Put { key, value, token });
                        }
                        return;
                    }
                    (
                        retry_after,
                        format!("upstream answered {}", status.as_u16()),
                    )
                }
                Outcome::Failed { reason, transient } => {
                    result.error = Some(reason.to_owned());
                    if !transient {
                        return;
                    }
                    (None, reason.to_owned())
                }
            };
            let Some(ceiling) = ceilings.next() else {
                return result.error = Some(format!("{error} after {} attempts", result.attempts));
            };
            let wait = match wait {
                Some(asked) if asked > retry::MAX_RETRY_AFTER => {
                    return result.error = Some(format!(
                        "{error}; asked to retry after {} s",
                        asked.as_secs()
                    ));
                }
                Some(asked) => asked,
                None => retry::full_jitter(ceiling),
            };
            if started.elapsed() + wait >= self.config.total_budget {
                return result.error = Some(format!("{error}; out of time to retry"));
            }
            self.metrics.send(vec![Event::Retry { host: host.clone() }]);
            actix_web::rt::time::sleep(wait).await;
        }
    }
}
