//! One URL's fetch, from the cache or the upstream, as a future that the
//! requests asking for that URL share (a flight).
//!
//! A flight runs in the tasks of the requests that wait for it, not in the
//! fetcher's: whichever of them polls it drives it, and when every request
//! that wanted it has gone (its client disconnected, or its deadline
//! passed), the flight is dropped, its upstream request with it, so no
//! upstream work is done for nobody. Only the bookkeeping goes to the
//! actor: admission before each attempt (the host's breaker and
//! concurrency limit) and how the attempt went.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, Shared};
use reqwest::{Client, Url};

use super::{Admit, FetchConfig, FetcherActor, Refused, Report, Verdict};
use crate::actors::cache::{CacheHandle, Cached, Read};
use crate::actors::ActorRef;
use tracing::Instrument;

use crate::fetch::attempt::{attempt, Outbound, Outcome};
use crate::fetch::retry;
use crate::fetch::FetchResult;
use crate::traces::propagation::{upstream_headers, Origin};
use crate::traces::spans;

/// What a flight brought back; every request that shared it gets a copy.
#[derive(Debug, Clone, Default)]
pub struct Landed {
    cached: bool,
    attempts: u32,
    status: Option<u16>,
    bytes: u64,
    success: bool,
    error: Option<String>,
}

impl Landed {
    fn failed(self, error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..self
        }
    }
}

pub type Flight = Shared<BoxFuture<'static, Landed>>;

/// What one URL of a request waits for.
enum Leg {
    /// Not fetched at all (not allowed), and why.
    Refused(&'static str),
    Flying(Flight),
}

/// The URLs of one `POST /fetch`, in order, each with its flight (URLs
/// asked for twice share one). Awaiting them ([`Flights::land`]) is what
/// drives the fetches.
pub struct Flights {
    started: Instant,
    legs: Vec<(String, Leg)>,
}

impl Flights {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            legs: Vec::new(),
        }
    }

    pub(super) fn refused(&mut self, url: String, why: &'static str) {
        self.legs.push((url, Leg::Refused(why)));
    }

    pub(super) fn flying(&mut self, url: String, flight: Flight) {
        self.legs.push((url, Leg::Flying(flight)));
    }

    /// One result per URL, in order, once every flight has landed.
    pub async fn land(self) -> Vec<FetchResult> {
        let started = self.started;
        let landings = self.legs.into_iter().map(|(url, leg)| async move {
            let landed = match leg {
                Leg::Refused(why) => Landed::default().failed(why),
                Leg::Flying(flight) => flight.await,
            };
            FetchResult {
                url,
                success: landed.success,
                status: landed.status,
                bytes: landed.bytes,
                cached: landed.cached,
                attempts: landed.attempts,
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                error: landed.error,
            }
        });
        futures_util::future::join_all(landings).await
    }
}

/// What a flight needs: the actor's configuration and handles, no state.
#[derive(Clone)]
pub struct Crew {
    pub config: Arc<FetchConfig>,
    pub client: Client,
    pub cache: CacheHandle,
    pub fetcher: ActorRef<FetcherActor>,
    /// The request that started the flight, as its upstream hears of it.
    pub origin: Origin,
}

impl Crew {
    /// `url` from the cache, or else from its upstream (filling the cache
    /// when it answers 2xx).
    pub async fn fly(self, url: Url) -> Landed {
        let key = format!("fetch:GET {url}");
        let load = || async { Ok::<_, std::convert::Infallible>(self.fetch_upstream(url).await) };
        let fill = |(_, fill): &(Landed, Option<Cached>)| fill.clone();
        match self.cache.read_through(key, load, fill).await {
            Ok(Read::Hit(cached)) => Landed {
                cached: true,
                status: Some(cached.status),
                bytes: cached.body.len() as u64,
                success: true,
                ..Landed::default()
            },
            Ok(Read::Loaded((landed, _))) => landed,
            Err(never) => match never {},
        }
    }

    /// Attempts the URL until it answers for good, fails for good, or runs
    /// out of attempts or time; a successful answer comes with what to
    /// cache.
    async fn fetch_upstream(&self, url: Url) -> (Landed, Option<Cached>) {
        let started = Instant::now();
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let mut landed = Landed::default();
        let mut ceilings = retry::backoff(self.config.max_attempts);
        loop {
            let outcome = match self.attempt_once(&host, &url, started, &mut landed).await {
                Ok(outcome) => outcome,
                Err(reason) => return (landed.failed(reason), None),
            };
            let (asked, error) = match landed.record(outcome) {
                Next::Done(fill) => return (landed, fill),
                Next::Retry { asked, error } => (asked, error),
            };
            let wait = self.wait_to_retry(ceilings.next(), asked, started, landed.attempts);
            let wait = match wait {
                Ok(wait) => wait,
                Err(why) => return (landed.failed(format!("{error}{why}")), None),
            };
            self.fetcher.tell(Report {
                host: host.clone(),
                verdict: Verdict::Retrying,
            });
            actix_web::rt::time::sleep(wait).await;
        }
    }

    /// One attempt, once the fetcher admits it and the host has room for
    /// it, within what is left of the fetch's time; `Err` says why none
    /// was made.
    async fn attempt_once(
        &self,
        host: &str,
        url: &Url,
        started: Instant,
        landed: &mut Landed,
    ) -> Result<Outcome, &'static str> {
        let permits = match self.fetcher.call(Admit(host.to_owned())).await {
            Ok(permits) => permits,
            Err(Refused(reason)) => return Err(reason),
        };
        // From here until it is reported, the attempt holds the host's
        // half-open probe, if it is one: reported abandoned if dropped.
        let report = Reporting::new(&self.fetcher, host);
        let remaining = self
            .config
            .total_budget
            .checked_sub(started.elapsed())
            .ok_or("timeout")?;
        let _permit = permits.acquire().await.map_err(|_| "fetcher unavailable")?;
        landed.attempts += 1;
        let timeout = self.config.attempt_timeout.min(remaining);
        let attempt_started = Instant::now();
        let span = spans::fetch_attempt(url, landed.attempts);
        let outbound = Outbound {
            url: url.clone(),
            headers: upstream_headers(&span, &self.origin),
            timeout,
            max_body: self.config.max_body_bytes,
        };
        let outcome = attempt(&self.client, &self.config.allow, outbound)
            .instrument(span.clone())
            .await;
        match &outcome {
            Outcome::Answered { status, .. } => {
                spans::attempt_ended(&span, Some(status.as_u16()), None);
            }
            Outcome::Failed { reason, .. } => spans::attempt_ended(&span, None, Some(reason)),
        }
        report.done(&outcome, attempt_started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// How long to wait before the next attempt: what the upstream asked
    /// for, or a jittered backoff under `ceiling`; `Err` says why there is
    /// no next attempt (to follow the last error).
    fn wait_to_retry(
        &self,
        ceiling: Option<Duration>,
        asked: Option<Duration>,
        started: Instant,
        attempts: u32,
    ) -> Result<Duration, String> {
        let ceiling = ceiling.ok_or_else(|| format!(" after {attempts} attempts"))?;
        let wait = match asked {
            Some(asked) if asked > retry::MAX_RETRY_AFTER => {
                return Err(format!("; asked to retry after {} s", asked.as_secs()));
            }
            Some(asked) => asked,
            None => retry::full_jitter(ceiling),
        };
        if started.elapsed() + wait >= self.config.total_budget {
            return Err("; out of time to retry".into());
        }
        Ok(wait)
    }
}

/// What one attempt's outcome means for the fetch.
enum Next {
    /// It is over; a success comes with what to cache.
    Done(Option<Cached>),
    /// It may be tried again, after the wait the upstream asked for, if
    /// any; `error` says what went wrong.
    Retry {
        asked: Option<Duration>,
        error: String,
    },
}

impl Landed {
    /// Takes in an attempt's outcome.
    fn record(&mut self, outcome: Outcome) -> Next {
        match outcome {
            Outcome::Answered {
                status,
                body,
                retry_after,
            } => {
                self.status = Some(status.as_u16());
                self.bytes = body.len() as u64;
                self.error = None;
                if retry::is_transient(status) {
                    let error = format!("upstream answered {}", status.as_u16());
                    return Next::Retry {
                        asked: retry_after,
                        error,
                    };
                }
                self.success = status.is_success();
                Next::Done(self.success.then(|| Cached {
                    status: status.as_u16(),
                    body,
                    tag: None,
                }))
            }
            Outcome::Failed { reason, transient } => {
                self.error = Some(reason.to_owned());
                if !transient {
                    return Next::Done(None);
                }
                Next::Retry {
                    asked: None,
                    error: reason.to_owned(),
                }
            }
        }
    }
}

/// An admitted attempt's report to the fetcher, sent once: how it went, or,
/// if the attempt is dropped first, that it was abandoned (so a half-open
/// circuit's probe is not held forever by a fetch nobody waits for).
struct Reporting<'a> {
    fetcher: &'a ActorRef<FetcherActor>,
    host: &'a str,
    sent: bool,
}

impl<'a> Reporting<'a> {
    fn new(fetcher: &'a ActorRef<FetcherActor>, host: &'a str) -> Self {
        Self {
            fetcher,
            host,
            sent: false,
        }
    }

    fn done(mut self, outcome: &Outcome, seconds: f64) {
        self.send(Verdict::Attempted {
            healthy: outcome.host_healthy(),
            outcome: outcome_label(outcome),
            seconds,
        });
    }

    fn send(&mut self, verdict: Verdict) {
        self.sent = true;
        self.fetcher.tell(Report {
            host: self.host.to_owned(),
            verdict,
        });
    }
}

impl Drop for Reporting<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Verdict::Abandoned);
        }
    }
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
