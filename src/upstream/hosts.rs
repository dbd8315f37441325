//! What each upstream host (and port) allows: a ceiling on connections
//! (`max_connections_per_host`) and, once the host has answered 429, a request rate learned
//! from it.
//!
//! Concurrency alone cannot respect a rate limit: with fast answers one request in flight
//! may already be far above it. So a host that says "too many requests" is paced by time
//! instead. When 429s are more than a few percent of its answers over the last second (a
//! stray 429 is no limit), the rate is set to 90% of the answers it accepted in that second
//! (what it actually lets through), requests are then spread evenly at that rate, and every
//! second the rate grows by 2%, so a lifted limit is found again. A cut is followed by a
//! second without another (its 429s were already in flight). Downloads and metadata requests
//! to a host share its rate, as the host counts them together.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

/// The span over which accepted answers are counted, and within which 429s are one event.
const WINDOW: Duration = Duration::from_secs(1);
/// The share of the accepted rate a cut sets.
const CUT: f64 = 0.9;
/// 429s are a limit, not a stray answer, from this share of a window's answers (and two).
const LIMITED_SHARE: f64 = 0.05;
/// Growth per second without a 429.
const GROWTH: f64 = 0.02;
/// A rate this high is no limit any more: pacing stops.
const UNLIMITED: f64 = 100_000.0;

pub struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

struct Host {
    connections: Option<Arc<Semaphore>>,
    rate: Mutex<Rate>,
}

#[derive(Default)]
struct Rate {
    /// Requests per second; `None` until the host's first 429.
    per_second: Option<f64>,
    /// When the next paced request may start.
    next: Option<Instant>,
    /// When answers other than 429 came, within the last `WINDOW`.
    accepted: VecDeque<Instant>,
    /// When 429s came, within the last `WINDOW`.
    limited: VecDeque<Instant>,
    last_cut: Option<Instant>,
    last_raise: Option<Instant>,
}

/// A request's place at its host: a connection under the ceiling, and its turn in the
/// host's rate. Tell it how the host answered.
pub struct HostPermit {
    _connection: Option<OwnedSemaphorePermit>,
    host: Arc<Host>,
}

impl HostLimits {
    pub fn new(per_host: usize) -> HostLimits {
        HostLimits {
            per_host,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Wait for a connection to `url`'s host under its ceiling, then for its turn.
    pub async fn acquire(&self, url: &Url) -> HostPermit {
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let host = self
            .hosts
            .lock()
            .expect("host limits lock")
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Host {
                    connections: (self.per_host > 0)
                        .then(|| Arc::new(Semaphore::new(self.per_host))),
                    rate: Mutex::new(Rate::default()),
                })
            })
            .clone();
        let connection = match &host.connections {
            Some(sem) => sem.clone().acquire_owned().await.ok(),
            None => None,
        };
        let turn = host.rate().turn(Instant::now());
        if let Some(turn) = turn {
            tokio::time::sleep_until(turn.into()).await;
        }
        HostPermit {
            _connection: connection,
            host,
        }
    }
}

impl Host {
    fn rate(&self) -> std::sync::MutexGuard<'_, Rate> {
        self.rate.lock().expect("host rate lock")
    }
}

impl HostPermit {
    /// The host answered, with anything but 429.
    pub fn accepted(&self) {
        self.host.rate().accepted(Instant::now());
    }

    /// The host answered 429.
    pub fn too_many(&self) {
        self.host.rate().too_many(Instant::now());
    }
}

impl Rate {
    /// When a request may start: `None` for now (unpaced), else its slot.
    fn turn(&mut self, now: Instant) -> Option<Instant> {
        let per_second = self.per_second?;
        let slot = self.next.map_or(now, |next| next.max(now));
        self.next = Some(slot + Duration::from_secs_f64(1.0 / per_second));
        Some(slot)
    }

    fn forget_before(&mut self, now: Instant) {
        for times in [&mut self.accepted, &mut self.limited] {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > WINDOW)
            {
                times.pop_front();
            }
        }
    }

    fn accepted(&mut self, now: Instant) {
        self.forget_before(now);
        self.accepted.push_back(now);
        let Some(per_second) = self.per_second else {
            return;
        };
        let since = now.duration_since(*self.last_raise.get_or_insert(now));
        if since >= WINDOW / 10 {
            let raised = per_second * (1.0 + GROWTH * since.as_secs_f64());
            self.per_second = (raised < UNLIMITED).then_some(raised);
            self.last_raise = Some(now);
        }
    }

    fn too_many(&mut self, now: Instant) {
        self.forget_before(now);
        self.limited.push_back(now);
        let limited = self.limited.len() as f64;
        let share = limited / (limited + self.accepted.len() as f64);
        if limited < 2.0
            || share < LIMITED_SHARE
            || self
                .last_cut
                .is_some_and(|t| now.duration_since(t) < WINDOW)
        {
            return;
        }
        let accepted = self.accepted.len() as f64 / WINDOW.as_secs_f64();
        let cut = match self.per_second {
            // Nothing got through lately: the limit is below what we asked; halve.
            Some(r) if accepted < 1.0 => r / 2.0,
            Some(r) => (accepted * CUT).min(r * CUT),
            None => accepted * CUT,
        };
        self.per_second = Some(cut.max(1.0));
        self.last_cut = Some(now);
        self.last_raise = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaced_until_a_429_then_just_under_what_got_through() {
        let t0 = Instant::now();
        let mut rate = Rate::default();
        assert_eq!(rate.turn(t0), None, "no 429 yet: no pacing");
        // 100 answers accepted over the last second, then 429s: a stray one is no limit.
        for i in 0..100 {
            rate.accepted(t0 + Duration::from_millis(i * 10));
        }
        let at = t0 + Duration::from_millis(999);
        for _ in 0..5 {
            rate.too_many(at);
        }
        assert_eq!(
            rate.per_second, None,
            "5 429s in 105 answers: not yet a limit"
        );
        rate.too_many(at);
        let per_second = rate.per_second.expect("paced once 429s are 5% of answers");
        assert!((per_second - 90.0).abs() < 1.0, "{per_second}");
        // The same burst's other 429s count once.
        rate.too_many(at + Duration::from_millis(100));
        assert_eq!(rate.per_second, Some(per_second));
        // Requests are spread evenly at that rate.
        let a = rate.turn(at).unwrap();
        let b = rate.turn(at).unwrap();
        let gap = b.duration_since(a).as_secs_f64();
        assert!((gap - 1.0 / per_second).abs() < 1e-6, "{gap}");
    }

    #[test]
    fn grows_without_429s_and_halves_when_nothing_gets_through() {
        let t0 = Instant::now();
        let mut rate = Rate {
            per_second: Some(50.0),
            last_raise: Some(t0),
            ..Rate::default()
        };
        for s in 1..=10 {
            rate.accepted(t0 + Duration::from_secs(s));
        }
        let grown = rate.per_second.unwrap();
        assert!(
            grown > 59.0 && grown < 62.0,
            "2% a second for 10 s: {grown}"
        );
        // 429s long after the last accepted answer: nothing got through in the window.
        rate.too_many(t0 + Duration::from_secs(30));
        rate.too_many(t0 + Duration::from_secs(30));
        assert!((rate.per_second.unwrap() - grown / 2.0).abs() < 1e-9);
    }
}
