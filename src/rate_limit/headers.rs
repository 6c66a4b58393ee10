//! The rate-limit fields on every limited response: the IETF httpapi draft's
//! `RateLimit-Policy` and `RateLimit`, and the older
//! `RateLimit-Limit/-Remaining/-Reset` for clients that read those.
//!
//! Every limited response carries five of them, so they are built once, not
//! per request: the policy's two never change, and the other three depend on
//! the client's remaining allowance, which with the in-memory limiter also
//! fixes the seconds to a full refill. [`PolicyHeaders`] holds the values for
//! every remaining count up to `PRECOMPUTED`; a response takes clones
//! (a reference count, no formatting, no allocation). Any other pair (a burst
//! above it, or a reset that Redis's clock rounded differently) is formatted
//! on the spot.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::RatePolicy;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Remaining counts whose values are built in advance (at most this many
/// entries of three short values each).
const PRECOMPUTED: u32 = 1024;

/// The values that depend on the remaining allowance.
#[derive(Clone)]
struct RemainingValues {
    reset_seconds: u64,
    ratelimit: HeaderValue,
    remaining: HeaderValue,
    reset: HeaderValue,
}

impl RemainingValues {
    fn new(remaining: u32, reset_seconds: u64) -> Self {
        let ratelimit = format!("\"default\";r={remaining};t={reset_seconds}");
        Self {
            reset_seconds,
            ratelimit: HeaderValue::from_str(&ratelimit)
                .unwrap_or_else(|_| HeaderValue::from_static("\"default\"")),
            remaining: HeaderValue::from(remaining),
            reset: HeaderValue::from(reset_seconds),
        }
    }
}

/// One policy's header values, built once per process.
pub struct PolicyHeaders {
    policy: HeaderValue,
    limit: HeaderValue,
    /// Indexed by the remaining allowance, with the in-memory limiter's reset.
    by_remaining: Vec<RemainingValues>,
}

impl PolicyHeaders {
    pub fn new(policy: RatePolicy) -> Self {
        let burst = policy.burst.get();
        let text = format!("\"default\";q={burst};w={}", policy.window_seconds());
        let by_remaining = (0..=burst.min(PRECOMPUTED))
            .map(|remaining| {
                let reset = policy.refill_time(burst - remaining);
                RemainingValues::new(remaining, retry_after_seconds(&reset))
            })
            .collect();
        Self {
            policy: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("\"default\"")),
            limit: HeaderValue::from(burst),
            by_remaining,
        }
    }

    fn remaining(&self, remaining: u32, reset_seconds: u64) -> RemainingValues {
        usize::try_from(remaining)
            .ok()
            .and_then(|index| self.by_remaining.get(index))
            .filter(|values| values.reset_seconds == reset_seconds)
            .cloned()
            .unwrap_or_else(|| RemainingValues::new(remaining, reset_seconds))
    }
}

/// Whole seconds to wait, rounded up, at least one: the value of
/// `Retry-After` and of the reset fields.
pub fn retry_after_seconds(wait: &Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// Sets the five fields for a client with `remaining` requests left and a
/// full allowance again after `reset`.
pub fn rate_limit_headers(
    headers: &mut HeaderMap,
    policy: &PolicyHeaders,
    remaining: u32,
    reset: Duration,
) {
    let values = policy.remaining(remaining, retry_after_seconds(&reset));
    headers.insert(RATELIMIT_POLICY, policy.policy.clone());
    headers.insert(RATELIMIT, values.ratelimit);
    headers.insert(RATELIMIT_LIMIT, policy.limit.clone());
    headers.insert(RATELIMIT_REMAINING, values.remaining);
    headers.insert(RATELIMIT_RESET, values.reset);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(remaining: u32, reset: Duration) -> Vec<(String, String)> {
        let policy = PolicyHeaders::new(RatePolicy::new(10, 50).unwrap());
        let mut headers = HeaderMap::new();
        rate_limit_headers(&mut headers, &policy, remaining, reset);
        let mut fields: Vec<_> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        fields.sort();
        fields
    }

    fn expected(remaining: u32, reset: u64) -> Vec<(String, String)> {
        let mut fields: Vec<_> = [
            ("ratelimit", format!("\"default\";r={remaining};t={reset}")),
            ("ratelimit-limit", "50".to_owned()),
            ("ratelimit-policy", "\"default\";q=50;w=5".to_owned()),
            ("ratelimit-remaining", remaining.to_string()),
            ("ratelimit-reset", reset.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        fields.sort();
        fields
    }

    #[test]
    fn precomputed_values_match_the_in_memory_limiters_reset() {
        // 12 used of 50 at 10/s: 1.2 s to refill, announced as 2 s.
        assert_eq!(fields(38, Duration::from_millis(1200)), expected(38, 2));
        assert_eq!(fields(0, Duration::from_secs(5)), expected(0, 5));
        assert_eq!(fields(50, Duration::ZERO), expected(50, 1));
    }

    #[test]
    fn other_pairs_are_formatted() {
        // A reset the table does not hold for that count (Redis's rounding).
        assert_eq!(fields(38, Duration::from_millis(3100)), expected(38, 4));
        // A count above the burst's table.
        assert_eq!(fields(5000, Duration::from_secs(7)), expected(5000, 7));
    }
}
