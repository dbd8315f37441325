//! Where a verified small file is put in place: on the async worker that downloaded it, or
//! through the blocking pool.
//!
//! A file whose bytes are all still in memory (under the spool's batch, most of a mirror by
//! count) takes a handful of metadata calls to place: mkdir, create, write, rename. On a local
//! disk that is cheaper than the trip through the blocking pool, which wakes a pool thread and
//! then the worker again: two cross-CPU wake-ups per file, and at 50 ms of upstream latency
//! (answers trickling in one by one) the largest cost left after the filesystem itself.
//!
//! A disk that answers slowly (a network filesystem, cold directories on a spinning disk)
//! would stall the runtime instead, and with it every download. So the writes are timed, and
//! once their moving average passes [`SLOW`], every later one of the run goes through the
//! blocking pool, as all of them did before. While a group flush writes the filesystem back,
//! small files go through the pool too: a create then may wait for a bitmap or directory
//! block under write. (On this project's 2-core test machine a small file takes 0.1 ms at
//! the median and 1.4 ms at the 99th percentile, and now and then 8 ms behind a flush; a
//! network filesystem takes a round trip per call.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A moving average of write times above this means the disk, not an unlucky write.
const SLOW: Duration = Duration::from_millis(1);

/// The moving average's weight for the newest write: 1/16, so one write of 3 ms among fast
/// ones moves it by under 0.2 ms.
const WEIGHT: u64 = 16;

/// What one write counts for at most: a stall of 8 ms (seen on the test machine now and
/// then) counts as 4, so it takes a run of slow writes to pass [`SLOW`], not two stalls.
const CAP: Duration = Duration::from_millis(4);

#[derive(Debug, Default)]
pub struct InlineWrites {
    /// Moving average of write times, in µs.
    average_us: AtomicU64,
    off: AtomicBool,
}

impl InlineWrites {
    /// Whether small files are still written on the async worker.
    pub fn allowed(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    /// Run `write` here, and time it.
    pub fn run<T>(&self, write: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = write();
        self.took(started.elapsed());
        out
    }

    fn took(&self, time: Duration) {
        let us = time.min(CAP).as_micros() as u64;
        // Racing writers may lose an update to each other: an average, not an account.
        let old = self.average_us.load(Ordering::Relaxed);
        let average = old - old / WEIGHT + us / WEIGHT;
        self.average_us.store(average, Ordering::Relaxed);
        if average > SLOW.as_micros() as u64 && !self.off.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                "small files take {} ms each to write: writing the rest through the blocking pool",
                average as f64 / 1000.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_disk_sends_the_rest_to_the_blocking_pool() {
        let writes = InlineWrites::default();
        assert_eq!(writes.run(|| 7), 7);
        let ms = Duration::from_millis;
        for _ in 0..1000 {
            writes.took(Duration::from_micros(100));
        }
        // Outliers on a fast disk: the worker preempted, a write behind a flush.
        for _ in 0..3 {
            writes.took(ms(3));
            writes.took(Duration::from_micros(100));
        }
        writes.took(ms(8));
        writes.took(ms(8));
        for _ in 0..100 {
            writes.took(Duration::from_micros(100));
        }
        assert!(
            writes.allowed(),
            "an unlucky write or three is not a slow disk"
        );
        // A file server: a few ms a write, every write.
        for _ in 0..16 {
            writes.took(ms(4));
        }
        assert!(!writes.allowed());
        for _ in 0..1000 {
            writes.took(Duration::from_micros(100));
        }
        assert!(!writes.allowed(), "off for the rest of the run");
    }
}
