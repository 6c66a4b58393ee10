//! GCRA in Redis, so that every switchboard instance sharing one Redis
//! enforces one allowance per client. The algorithm runs as one Lua script,
//! atomically, on Redis's own clock: each client key holds its theoretical
//! arrival time (TAT) and expires once it is in the past, so Redis holds
//! only clients seen within their refill window.
//!
//! When Redis fails (down, or silent past the timeout), the limiter fails
//! open, and [`Outage`] keeps every request from paying the timeout again:
//! for a second, checks fail at once; then one batch probes Redis, while the
//! others still fail at once, until it answers.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{Decision, RateKey, RatePolicy};

const KEY_PREFIX: &str = "switchboard:ratelimit:";
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Returns {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission * cost
local allow_at = new_tat - burst * emission
if allow_at > now then
  return {0, 0, math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / emission), 0, math.ceil((new_tat - now) / 1000)}
";

/// One connection (multiplexed, reconnecting) to the shared Redis.
#[derive(Clone)]
pub struct RedisGcra {
    connection: ConnectionManager,
    script: Arc<Script>,
}

impl RedisGcra {
    /// Connects lazily: the first check opens the connection. Call inside
    /// the async runtime.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(Self {
            connection,
            script: Arc::new(Script::new(GCRA)),
        })
    }

    pub async fn check(
        mut self,
        key: RateKey,
        cost: u32,
        policy: RatePolicy,
    ) -> Result<Decision, String> {
        let emission_us = 1_000_000 / u64::from(policy.per_second.get()).max(1);
        let (allowed, remaining, retry_after_ms, reset_ms): (u8, u32, u64, u64) = self
            .script
            .key(format!("{KEY_PREFIX}{key}"))
            .arg(emission_us)
            .arg(policy.burst.get())
            .arg(cost)
            .invoke_async(&mut self.connection)
            .await
            .map_err(|e| e.to_string())?;
        let reset = Duration::from_millis(reset_ms);
        Ok(if allowed == 1 {
            Decision::Allowed { remaining, reset }
        } else {
            Decision::Limited {
                retry_after: Duration::from_millis(retry_after_ms),
                reset,
            }
        })
    }
}

/// How long checks fail at once after Redis failed.
const OUTAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether Redis is worth asking now. One limiter actor's, on its thread.
#[derive(Debug, Default)]
pub struct Outage {
    /// Redis failed; it is not asked again before this.
    until: Cell<Option<Instant>>,
    /// A batch is asking Redis whether it is back.
    probing: Cell<bool>,
}

impl Outage {
    /// Whether a batch of checks may go to Redis now (a probe, if Redis
    /// failed and its pause is over).
    pub fn may_ask(&self) -> bool {
        if self.probing.get() {
            return false;
        }
        match self.until.get() {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.probing.set(true);
                true
            }
        }
    }

    /// What a batch that went to Redis learned.
    pub fn answered(&self, ok: bool) {
        self.probing.set(false);
        self.until
            .set((!ok).then(|| Instant::now() + OUTAGE_RETRY_AFTER));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failure_checks_pause_then_one_batch_probes() {
        let outage = Outage::default();
        assert!(outage.may_ask());
        outage.answered(false);
        assert!(!outage.may_ask(), "paused");
        outage.until.set(Some(Instant::now()));
        assert!(outage.may_ask(), "the probe");
        assert!(!outage.may_ask(), "one probe at a time");
        outage.answered(true);
        assert!(outage.may_ask() && outage.may_ask(), "back");
    }
}
