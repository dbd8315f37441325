//! When to try a request again, and how long to wait first: the one retry policy of every
//! request kind (metadata, change feed, file downloads, and stale CDN answers retried with a
//! cache-busting query), so all back off the same way: exponential from `retry_delay`, with
//! jitter so that many workers do not retry in lock-step, and a server's `Retry-After`
//! honoured (capped, so a hostile upstream cannot park us for days).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

const MAX_BACKOFF: Duration = Duration::from_secs(120);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How often to try again and how long to wait: `retries` more attempts after the first.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub retries: u32,
    pub delay: Duration,
}

impl Policy {
    /// The wait before retry number `attempt` (0-based) — the server's `Retry-After` when it
    /// sent one, else [`backoff`] — or `None` when no attempt is left.
    pub fn next(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        (attempt < self.retries)
            .then(|| retry_after.unwrap_or_else(|| backoff(self.delay, attempt)))
    }

    /// The same waits with another number of attempts (stale answers have their own count).
    pub fn with_retries(self, retries: u32) -> Policy {
        Policy { retries, ..self }
    }
}

/// Statuses that say "not now" rather than "never": worth another attempt.
pub fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Delay before retry number `attempt` (0-based): `base * 2^attempt`, ±25 % jitter, capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    // Jitter from the clock's low bits: good enough to spread workers, no RNG dependency.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    exp.mul_f64(factor)
}

/// The server's `Retry-After` (seconds form), when it sent one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let first = backoff(base, 0);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let third = backoff(base, 2);
        assert!(third >= Duration::from_millis(300) && third <= Duration::from_millis(500));
        assert!(backoff(base, 30) <= MAX_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn a_policy_counts_attempts_and_prefers_retry_after() {
        let p = Policy {
            retries: 2,
            delay: Duration::from_millis(100),
        };
        assert!(p.next(0, None).unwrap() <= Duration::from_millis(125));
        assert_eq!(
            p.next(1, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(p.next(2, None), None);
        assert_eq!(p.with_retries(0).next(0, None), None);
    }

    #[test]
    fn retry_after_is_read_and_capped() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
