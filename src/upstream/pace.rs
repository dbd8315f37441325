//! Concurrency that finds the upstream's capacity by itself: additive increase,
//! multiplicative decrease (AIMD), between 1 and a ceiling (`workers`, `metadata_workers`).
//!
//! It starts low and doubles every round trip's worth of successes (slow start) until the
//! first sign of overload: a 429, a 5xx, a timeout, a connection reset. That halves the limit
//! (at most once per `COOL_DOWN`, so one burst of failures from the same moment counts once)
//! and from then on each full window of successes adds one. `Retry-After` is honoured by the
//! retry policy; this only decides how many requests are in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Slow start begins with this many in flight (or the ceiling, if lower): a third of the
/// default per-host ceiling, so a fast upstream is at full speed after two round trips.
const START: usize = 16;
/// Failures closer together than this are one overload.
const COOL_DOWN: Duration = Duration::from_millis(500);

pub struct Pace {
    ceiling: usize,
    state: Mutex<State>,
    freed: Notify,
}

struct State {
    limit: usize,
    /// Successes since the limit last grew (congestion avoidance: a window of them adds one).
    acked: usize,
    in_flight: usize,
    slow_start: bool,
    last_cut: Option<Instant>,
}

/// One request's place; dropped when the request is done.
pub struct Slot {
    pace: Arc<Pace>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pace.lock().in_flight -= 1;
        self.pace.freed.notify_one();
    }
}

impl Pace {
    pub fn new(ceiling: usize) -> Arc<Pace> {
        let ceiling = ceiling.max(1);
        Arc::new(Pace {
            ceiling,
            state: Mutex::new(State {
                limit: START.min(ceiling),
                acked: 0,
                in_flight: 0,
                slow_start: true,
                last_cut: None,
            }),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("pace lock poisoned")
    }

    /// Wait for a place under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return Slot { pace: self.clone() };
                }
            }
            freed.await;
        }
    }

    /// A request went through.
    pub fn success(&self) {
        let grown = {
            let mut s = self.lock();
            s.acked += 1;
            let grow = s.slow_start || s.acked >= s.limit;
            if grow && s.limit < self.ceiling {
                s.limit += 1;
                s.acked = 0;
                true
            } else {
                false
            }
        };
        if grown {
            self.freed.notify_one();
        }
    }

    /// Upstream showed it is overloaded (429, 5xx, a timeout, a reset): halve the limit.
    pub fn overload(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        if s.last_cut
            .is_some_and(|t| now.duration_since(t) < COOL_DOWN)
        {
            return;
        }
        s.last_cut = Some(now);
        s.slow_start = false;
        s.acked = 0;
        s.limit = (s.limit / 2).max(1);
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_fast_then_halves_on_overload_then_grows_by_one_a_window() {
        let pace = Pace::new(64);
        assert_eq!(pace.limit(), START);
        for _ in 0..START {
            pace.success();
        }
        assert_eq!(pace.limit(), 2 * START, "slow start doubles a window");
        pace.overload();
        assert_eq!(pace.limit(), START);
        pace.overload(); // the same burst
        assert_eq!(pace.limit(), START);
        for _ in 0..START {
            pace.success();
        }
        assert_eq!(
            pace.limit(),
            START + 1,
            "one more per window after the first overload"
        );
        for _ in 0..10_000 {
            pace.success();
        }
        assert_eq!(pace.limit(), 64, "never beyond the ceiling");
        let small = Pace::new(3);
        assert_eq!(small.limit(), 3);
        for _ in 0..10 {
            small.lock().last_cut = None;
            small.overload();
        }
        assert_eq!(small.limit(), 1, "never below one");
    }

    #[tokio::test]
    async fn holds_requests_beyond_the_limit_until_one_is_done() {
        let pace = Pace::new(2);
        let a = pace.acquire().await;
        let _b = pace.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), pace.acquire()).await;
        assert!(third.is_err(), "a third request went in at limit 2");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), pace.acquire()).await;
        assert!(third.is_ok());
    }
}
