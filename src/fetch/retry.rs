//! When to try again: exponential backoff from `backon` (base 100 ms,
//! doubling, capped at 2 s) with full jitter (a uniform wait between zero and
//! the backoff), unless the upstream said when with `Retry-After` (seconds or
//! an HTTP date), which is honoured up to a cap.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

pub const BASE_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// The longest `Retry-After` that is waited out; longer ones end the retries.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The backoff ceilings for the retries after the first attempt.
pub fn backoff(max_attempts: u32) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(BASE_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_max_times(max_attempts.saturating_sub(1) as usize)
        .build()
}

/// Full jitter: anywhere from zero to the ceiling.
pub fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

/// Statuses worth another attempt.
pub fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// The wait an upstream asked for, if it asked.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let ceilings: Vec<Duration> = backoff(7).collect();
        let ms: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000]);
        for ceiling in ceilings {
            assert!(full_jitter(ceiling) <= ceiling);
        }
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(3) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );
    }
}
