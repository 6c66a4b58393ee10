//! `RateLimiterActor`: owns per-client limiter state, a keyed GCRA from
//! `governor` (its `HashMap` store: one actor thread touches it, so the lock
//! inside is never contended), or, with the `redis` backend, the connection
//! to the shared Redis that holds every instance's allowances
//! ([`crate::rate_limit::redis`]).
//!
//! Memory stays bounded under a flood of distinct clients: every second the
//! actor drops keys whose state is indistinguishable from a fresh one (idle
//! for `burst / rate` seconds), and shrinks the map now and then.
//!
//! One actor's thread would be the ceiling, so [`RateLimiterShards`] runs one
//! instance per HTTP worker, on that worker's own thread, and routes each
//! client to one shard by a hash of its key: a client's allowance lives in
//! exactly one place. Checks arrive in batches ([`CheckMany`], or a lone
//! [`Check`]): each worker collects the checks its requests need during one
//! turn of its event loop and sends each shard one message for all of them
//! ([`outbox`]), so a message and its thread hop are paid per batch, not per
//! request.

pub mod outbox;
mod shards;

pub use shards::RateLimiterShards;

use std::future::ready;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use actix::dev::ResponseFuture;
use actix::{AsyncContext, Context, Handler, Message, MessageResponse};
use futures_util::future::join_all;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::Serialize;

use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::ActorUnavailable;
use crate::rate_limit::redis::{Outage, RedisGcra};
use crate::rate_limit::{Decision, RateKey, RatePolicy};

const PURGE_EVERY: Duration = Duration::from_secs(1);
const SHRINK_EVERY: Duration = Duration::from_secs(10);

type Limiter =
    RateLimiter<RateKey, HashMapStateStore<RateKey>, DefaultClock, StateInformationMiddleware>;

fn quota(policy: RatePolicy) -> Quota {
    Quota::per_second(policy.per_second).allow_burst(policy.burst)
}

#[derive(Debug, Clone, Copy, Default, Serialize, MessageResponse)]
pub struct LimiterStats {
    pub keys: usize,
    pub allowed: u64,
    pub limited: u64,
}

/// Where the allowances live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimiterBackend {
    /// In each limiter actor: per instance.
    Memory,
    /// In a shared Redis (its URL): one allowance across instances.
    Redis(String),
}

enum Store {
    Memory(Limiter),
    /// Shared with the batches in flight, which report how Redis did.
    Redis(RedisGcra, Rc<Outage>),
    /// The Redis client could not be built; every check fails (open).
    Broken(String),
}

impl Store {
    fn open(policy: RatePolicy, backend: &LimiterBackend) -> Self {
        match backend {
            LimiterBackend::Memory => Self::Memory(new_limiter(policy)),
            LimiterBackend::Redis(url) => RedisGcra::new(url).map_or_else(
                |why| {
                    tracing::error!(%why, "cannot set up the Redis rate limiter");
                    Self::Broken(why)
                },
                |gcra| Self::Redis(gcra, Rc::default()),
            ),
        }
    }
}

/// Why a check could not be decided; the guard lets the request through.
#[derive(Debug, Clone)]
pub struct LimiterFailed(pub String);

impl std::fmt::Display for LimiterFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ActorUnavailable> for LimiterFailed {
    fn from(why: ActorUnavailable) -> Self {
        Self(why.to_string())
    }
}

pub struct RateLimiterActor {
    policy: RatePolicy,
    backend: LimiterBackend,
    store: Store,
    stats: LimiterStats,
    supervision: Supervision,
}

impl RateLimiterActor {
    pub fn new(policy: RatePolicy, backend: LimiterBackend, supervision: Supervision) -> Self {
        Self {
            policy,
            store: Store::open(policy, &backend),
            backend,
            stats: LimiterStats::default(),
            supervision,
        }
    }
}

/// One check against the in-memory GCRA.
fn check_memory(limiter: &Limiter, policy: RatePolicy, Check { key, cost }: Check) -> Decision {
    let full = policy.refill_time(policy.burst.get());
    match limiter.check_key_n(&key, cost) {
        Ok(Ok(snapshot)) => {
            let remaining = snapshot.remaining_burst_capacity();
            Decision::Allowed {
                remaining,
                reset: policy.refill_time(policy.burst.get() - remaining),
            }
        }
        Ok(Err(not_until)) => Decision::Limited {
            retry_after: not_until.wait_time_from(limiter.clock().now()),
            reset: full,
        },
        // A cost above the burst can never pass.
        Err(_) => Decision::Limited {
            retry_after: full,
            reset: full,
        },
    }
}

fn new_limiter(policy: RatePolicy) -> Limiter {
    Limiter::new(
        quota(policy),
        HashMapStateStore::default(),
        DefaultClock::default(),
    )
}

impl Supervise for RateLimiterActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        self.store = Store::open(self.policy, &self.backend);
        self.stats = LimiterStats::default();
    }

    fn on_start(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(PURGE_EVERY, |act, _| {
            if let Store::Memory(limiter) = &act.store {
                limiter.retain_recent();
            }
        });
        ctx.run_interval(SHRINK_EVERY, |act, _| {
            if let Store::Memory(limiter) = &act.store {
                limiter.shrink_to_fit();
            }
        });
    }
}

supervised_actor!(RateLimiterActor; Check, CheckMany, Stats);

/// May this client spend `cost` requests of its allowance now?
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Decision, LimiterFailed>")]
pub struct Check {
    pub key: RateKey,
    pub cost: NonZeroU32,
}

impl Check {
    /// One request of this client.
    pub fn one(key: RateKey) -> Self {
        Self {
            key,
            cost: NonZeroU32::MIN,
        }
    }
}

/// Several checks in one message: one answer per check, in order. A client
/// may appear more than once (each check spends). The whole batch fails if
/// the actor is restarting or given up.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Result<Decision, LimiterFailed>>, LimiterFailed>")]
pub struct CheckMany(pub Vec<Check>);

#[derive(Debug, Message)]
#[rtype(result = "LimiterStats")]
pub struct Stats;

type Answers = ResponseFuture<Vec<Result<Decision, LimiterFailed>>>;

impl RateLimiterActor {
    /// The answers to these checks, in order.
    fn decide(&mut self, checks: Vec<Check>) -> Answers {
        match &self.store {
            Store::Memory(limiter) => {
                let decisions = checks
                    .into_iter()
                    .map(|check| {
                        let decision = check_memory(limiter, self.policy, check);
                        match decision {
                            Decision::Allowed { .. } => self.stats.allowed += 1,
                            Decision::Limited { .. } => self.stats.limited += 1,
                        }
                        Ok(decision)
                    })
                    .collect();
                Box::pin(ready(decisions))
            }
            // One multiplexed connection: the scripts of a batch travel
            // together.
            Store::Redis(gcra, outage) => {
                if !outage.may_ask() {
                    let failed = Err(LimiterFailed("Redis failed a moment ago".into()));
                    return Box::pin(ready(vec![failed; checks.len()]));
                }
                let policy = self.policy;
                let checks: Vec<_> = checks
                    .into_iter()
                    .map(|Check { key, cost }| {
                        let gcra = gcra.clone();
                        async move {
                            gcra.check(key, cost.get(), policy)
                                .await
                                .map_err(LimiterFailed)
                        }
                    })
                    .collect();
                let outage = Rc::clone(outage);
                Box::pin(async move {
                    let answers = join_all(checks).await;
                    outage.answered(answers.iter().all(Result::is_ok));
                    answers
                })
            }
            Store::Broken(why) => {
                let failed = Err(LimiterFailed(why.clone()));
                Box::pin(ready(vec![failed; checks.len()]))
            }
        }
    }
}

impl Handler<Check> for RateLimiterActor {
    type Result = ResponseFuture<Result<Decision, LimiterFailed>>;

    fn handle(&mut self, check: Check, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, _| -> Self::Result {
            let answers = act.decide(vec![check]);
            Box::pin(async move {
                let answer = answers.await.pop();
                answer.unwrap_or_else(|| Err(LimiterFailed("no answer to the check".into())))
            })
        })
    }
}

impl Handler<CheckMany> for RateLimiterActor {
    type Result = ResponseFuture<Result<Vec<Result<Decision, LimiterFailed>>, LimiterFailed>>;

    fn handle(&mut self, CheckMany(checks): CheckMany, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, _| -> Self::Result {
            let answers = act.decide(checks);
            Box::pin(async move { Ok(answers.await) })
        })
    }
}

impl Handler<Stats> for RateLimiterActor {
    type Result = LimiterStats;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        let keys = match &self.store {
            Store::Memory(limiter) => limiter.len(),
            Store::Redis(..) | Store::Broken(_) => 0,
        };
        LimiterStats { keys, ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn a_batch_counts_every_check_in_order() {
        let policy = RatePolicy::new(10, 5).unwrap();
        let limiter = actix::Supervisor::start(move |_| {
            let id = crate::actors::ActorId::single(crate::actors::ActorKind::RateLimiter);
            RateLimiterActor::new(policy, LimiterBackend::Memory, Supervision::unwatched(id))
        });
        let key = RateKey::Address("10.0.0.1".parse().unwrap());
        let other = RateKey::Subject("ada".into());
        let mut batch = vec![Check::one(key); 6];
        batch.push(Check::one(other));
        let decisions: Vec<Decision> = limiter
            .send(CheckMany(batch))
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for (decision, expected) in decisions.iter().zip((0..5).rev()) {
            match decision {
                Decision::Allowed { remaining, .. } => assert_eq!(*remaining, expected),
                other => panic!("{other:?}"),
            }
        }
        let Decision::Limited { retry_after, .. } = decisions[5] else {
            panic!("the sixth request passed: {:?}", decisions[5])
        };
        assert!(retry_after <= Duration::from_millis(100));
        assert!(matches!(
            decisions[6],
            Decision::Allowed { remaining: 4, .. }
        ));
        // A lone check, as the outbox sends a batch of one.
        let lone = Check {
            key: RateKey::Address("10.0.0.3".parse().unwrap()),
            cost: NonZeroU32::new(2).unwrap(),
        };
        let decision = limiter.send(lone).await.unwrap().unwrap();
        assert!(matches!(decision, Decision::Allowed { remaining: 3, .. }));
        let stats = limiter.send(Stats).await.unwrap();
        assert_eq!((stats.allowed, stats.limited, stats.keys), (7, 1, 3));
    }
}
