//! `FetcherActor`: owns the one reqwest client (its connection pool), the
//! per-host circuit breakers and concurrency limits, the retry policy, and
//! the list of fetches in flight.
//!
//! A `FetchMany` is answered at once with the request's [`Flights`]: one
//! shared future per distinct URL ([`flight`]), which the request awaits in
//! its own task. A URL asked for again while its fetch is in flight, by the
//! same request or another, joins that flight instead of starting a new one
//! (single flight), so a burst of identical URLs costs one upstream call.
//! The actor keeps only weak references to flights: when every request
//! waiting for one has gone, it is dropped and its upstream request
//! cancelled.
//!
//! Each attempt asks the actor for admission first (`Admit`: is the host's
//! circuit closed? here is its concurrency limit) and reports how the host
//! did (`Report`), so breaker state and upstream metrics are only ever
//! touched by the actor itself. Every URL is read through the cache
//! ([`CacheHandle::read_through`]): successful GET bodies fill it, and a hit
//! makes no upstream call.

mod flight;

pub use flight::Flights;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{AsyncContext, Context, Handler, Message};
use futures_util::future::BoxFuture;
use futures_util::future::{FutureExt, WeakShared};
use reqwest::Client;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::cache::CacheHandle;
use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::{ActorRef, ActorUnavailable};
use crate::domain::FetchUrls;
use crate::fetch::allow_list::AllowList;
use crate::fetch::breaker::{Breaker, BreakerState};
use crate::metrics::{Event, Recorder};
use crate::traces::propagation::Origin;
use flight::{Crew, Landed};

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
    /// The fetches in flight, by URL; weak, so a flight nobody waits for is
    /// dropped.
    in_flight: HashMap<String, WeakShared<BoxFuture<'static, Landed>>>,
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
            in_flight: HashMap::new(),
            call_timeout,
            supervision,
        }
    }

    /// The flight for `url`: the one in flight, or a new one.
    fn flight(&mut self, url: reqwest::Url, crew: &Crew) -> flight::Flight {
        let key = url.as_str().to_owned();
        if let Some(flying) = self.in_flight.get(&key).and_then(WeakShared::upgrade) {
            return flying;
        }
        // It runs in its requests' tasks: in the span of the one that
        // started it.
        let flight = crew
            .clone()
            .fly(url)
            .instrument(tracing::Span::current())
            .boxed()
            .shared();
        if let Some(weak) = flight.downgrade() {
            self.in_flight.insert(key, weak);
        }
        flight
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
        self.in_flight.clear();
    }

    /// Each host's breaker as its clock has it: an open circuit turns
    /// half-open after its cool-down whether or not a fetch comes to see.
    /// Also forgets the flights that have landed and been read, or that
    /// nobody waits for any more.
    fn report(&mut self) {
        for (host, entry) in &self.hosts {
            let event = breaker_event(host.clone(), entry.breaker.state());
            self.metrics.record(event);
        }
        self.in_flight
            .retain(|_, weak| weak.upgrade().is_some_and(|flight| flight.peek().is_none()));
    }
}

supervised_actor!(FetcherActor; FetchMany, Admit, Report);

/// Fetch every URL concurrently: the request's flights, one per URL, in
/// order, which it awaits ([`Flights::land`]).
#[derive(Message)]
#[rtype(result = "Result<Flights, ActorUnavailable>")]
pub struct FetchMany(pub FetchUrls, pub Origin);

/// May an attempt go to this host now? Answers the host's concurrency limit.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<Semaphore>, Refused>")]
struct Admit(String);

/// How an admitted attempt at a host went.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Report {
    host: String,
    verdict: Verdict,
}

#[derive(Debug)]
enum Verdict {
    /// The attempt was made: whether the host did its job, the `outcome`
    /// label, and how long it took.
    Attempted {
        healthy: bool,
        outcome: &'static str,
        seconds: f64,
    },
    /// Another attempt follows.
    Retrying,
    /// The attempt was dropped before it ended: it says nothing of the host.
    Abandoned,
}

#[derive(Debug)]
struct Refused(&'static str);

impl From<ActorUnavailable> for Refused {
    fn from(_: ActorUnavailable) -> Self {
        Self("fetcher unavailable")
    }
}

impl Handler<FetchMany> for FetcherActor {
    type Result = Result<Flights, ActorUnavailable>;

    fn handle(
        &mut self,
        FetchMany(urls, origin): FetchMany,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        run_guarded(self, ctx, |act, ctx| {
            let crew = Crew {
                config: Arc::clone(&act.config),
                client: act.client.clone(),
                cache: act.cache.clone(),
                fetcher: ActorRef::new(act.supervision.id(), ctx.address(), act.call_timeout),
                origin,
            };
            let mut flights = Flights::new();
            for raw in urls.into_inner() {
                match act.config.allow.check(&raw) {
                    Ok(url) => {
                        let flight = act.flight(url, &crew);
                        flights.flying(raw, flight);
                    }
                    Err(why) => flights.refused(raw, why),
                }
            }
            Ok(flights)
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

    fn handle(&mut self, Report { host, verdict }: Report, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            let breaker = &mut act.host(&host).breaker;
            match verdict {
                Verdict::Attempted {
                    healthy,
                    outcome,
                    seconds,
                } => {
                    breaker.record(healthy);
                    let state = breaker.state();
                    act.metrics.record(Event::Upstream {
                        host: host.clone(),
                        outcome,
                        seconds,
                    });
                    act.metrics.record(breaker_event(host, state));
                }
                Verdict::Retrying => act.metrics.record(Event::Retry { host }),
                Verdict::Abandoned => breaker.abandon(),
            }
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
