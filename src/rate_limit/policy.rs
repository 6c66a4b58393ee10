//! A per-client allowance and what the limiter decides against it. The
//! limiter actors, the Redis backend and the response headers all speak
//! these types.

use std::num::NonZeroU32;
use std::time::Duration;

/// The per-client allowance: `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RatePolicy {
    /// `None` when limiting is turned off (`0` per second).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    /// Seconds for an empty allowance to refill completely.
    pub fn window_seconds(self) -> u64 {
        u64::from(self.burst.get())
            .div_ceil(u64::from(self.per_second.get()))
            .max(1)
    }

    /// Time for `used` requests' worth of allowance to come back.
    pub fn refill_time(self, used: u32) -> Duration {
        Duration::from_secs_f64(f64::from(used) / f64::from(self.per_second.get()))
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        remaining: u32,
        reset: Duration,
    },
    Limited {
        retry_after: Duration,
        reset: Duration,
    },
}
