//! Units of work checked on every core, their results handed back in order.
//!
//! Order is what makes a checkpoint possible: the coordinator commits results as a
//! contiguous prefix ("everything up to shard N is done"), so a verify killed at any moment
//! resumes right after the last commit. Memory stays bounded: at most `2 × jobs` units are
//! queued or waiting to be committed, whatever the number of units.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

/// Run `work` over `units` on `workers.len()` threads (each owning one worker state, e.g. a
/// database connection and a buffer), calling `commit` with each result in unit order.
/// Stops feeding units when `stop` is set, and at the first error (of a unit or a commit).
/// Returns whether every unit was done.
pub fn run_ordered<U, R, W>(
    workers: Vec<W>,
    units: impl Iterator<Item = anyhow::Result<U>> + Send,
    work: impl Fn(&mut W, U) -> anyhow::Result<R> + Sync,
    mut commit: impl FnMut(R) -> anyhow::Result<()>,
    stop: &AtomicBool,
) -> anyhow::Result<bool>
where
    U: Send,
    R: Send,
    W: Send,
{
    let jobs = workers.len().max(1);
    let (unit_tx, unit_rx) = mpsc::sync_channel::<(u64, anyhow::Result<U>)>(jobs * 2);
    let (result_tx, result_rx) = mpsc::sync_channel::<(u64, anyhow::Result<R>)>(jobs * 2);
    // Owned by the workers: when the last one ends, the feeder's sends fail and it ends too.
    let unit_rx = Arc::new(Mutex::new(unit_rx));
    let failed = AtomicBool::new(false);
    let fed_all = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        // Dropped when this closure returns, before the scope joins the threads: workers
        // blocked on a full result queue then fail their send and end.
        let result_rx = result_rx;
        let (failed, fed_all, work) = (&failed, &fed_all, &work);
        scope.spawn(move || {
            for (seq, unit) in (0u64..).zip(units) {
                if stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                    return;
                }
                if unit_tx.send((seq, unit)).is_err() {
                    return;
                }
            }
            fed_all.store(true, Ordering::Relaxed);
        });
        for mut worker in workers {
            let (result_tx, unit_rx) = (result_tx.clone(), unit_rx.clone());
            scope.spawn(move || {
                loop {
                    let next = unit_rx.lock().expect("unit queue poisoned").recv();
                    let Ok((seq, unit)) = next else { return };
                    let result = unit.and_then(|u| work(&mut worker, u));
                    if result_tx.send((seq, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((result_tx, unit_rx));
        let mut waiting = BTreeMap::new();
        let mut next = 0u64;
        for (seq, result) in result_rx.iter() {
            waiting.insert(seq, result);
            while let Some(result) = waiting.remove(&next) {
                next += 1;
                if let Err(e) = result.and_then(&mut commit) {
                    // Dropping the receiver (by returning) ends the workers and the feeder.
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(())
    });
    outcome?;
    Ok(fed_all.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_from_many_threads() {
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        let all = run_ordered(
            vec![(); 4],
            (0..1000u32).map(Ok),
            |_, u| {
                if u % 7 == 0 {
                    std::thread::yield_now();
                }
                Ok(u * 2)
            },
            |r| {
                seen.push(r);
                Ok(())
            },
            &stop,
        )
        .unwrap();
        assert!(all);
        assert_eq!(seen, (0..1000).map(|u| u * 2).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_stops_at_the_unit_that_failed() {
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        let err = run_ordered(
            vec![(); 3],
            (0..100u32).map(Ok),
            |_, u| match u {
                40 => anyhow::bail!("unit 40 failed"),
                u => Ok(u),
            },
            |r| {
                seen.push(r);
                Ok(())
            },
            &stop,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "unit 40 failed");
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn a_stop_commits_what_is_done_and_says_so() {
        let stop = AtomicBool::new(false);
        let mut seen = 0;
        let all = run_ordered(
            vec![(); 2],
            (0..10_000u32).map(Ok),
            |_, u| Ok(u),
            |u| {
                seen += 1;
                if u == 50 {
                    stop.store(true, Ordering::Relaxed);
                }
                Ok(())
            },
            &stop,
        )
        .unwrap();
        assert!(!all);
        assert!((51..10_000).contains(&seen), "{seen}");
    }
}
