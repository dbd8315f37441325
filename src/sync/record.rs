//! Record: projects whose files and pages are written become durable and recorded as a
//! group. Each `syncfs` rewrites every inode table and bitmap block new files touched, and
//! each SQLite commit writes its pages to the WAL, so one flush and one transaction per
//! project cost far more than one per group of the projects finishing at the same moment.
//!
//! A project joins the queue and awaits its result; no thread waits with it. The first to
//! join an idle recorder starts a leader, one blocking thread that records groups until the
//! queue is empty. For each group it waits up to [`GATHER`] for others to join, but no longer
//! once every project still being synced has joined (the last ones of a run do not wait for
//! projects that will not come). It takes the queue, flushes (every object of every project
//! in it was written before that project joined, so before the flush starts), then records
//! them all in one transaction ([`State::record_projects`]: one that fails is recorded alone
//! and fails alone) and hands each its result. A project that joins after the queue was taken
//! is in the leader's next group, whose flush starts after it joined.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::lock;
use crate::state::State;
use crate::storage::Storage;
use crate::types::ProjectSnapshot;

/// How long a leader waits for other projects to finish. Longer groups mean fewer flushes
/// (at 50 ms of upstream latency, where projects finish one by one, 100 ms instead of 10 ms
/// took a tenth less CPU) and a project recorded a little later; a crash in between loses
/// nothing, its files are adopted by the next run.
const GATHER: Duration = Duration::from_millis(100);

pub(super) struct Recorder {
    storage: Arc<Storage>,
    state: Arc<Mutex<State>>,
    /// [`GATHER`], but for tests.
    gather: Duration,
    queue: Mutex<Queue>,
    /// Signalled once every project being synced has joined the queue.
    changed: Condvar,
    /// Projects being synced now ([`Recorder::syncing`]).
    syncing: AtomicUsize,
    groups: AtomicU64,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// A leader is running: it takes whatever joins before it finds the queue empty.
    leading: bool,
}

/// The leader's thread, started. Should it end without finishing (a panic, or a runtime that
/// shut down before running it), the projects queued hear so (their senders are dropped)
/// instead of waiting for a leader that will not come, and the next to join starts another.
struct Leader {
    recorder: Arc<Recorder>,
    done: bool,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            let mut queue = self.recorder.queue();
            queue.entries.clear();
            queue.leading = false;
        }
    }
}

/// Held while a project is synced: a leader waits for it only while one is.
pub(super) struct Syncing<'a>(&'a Recorder);

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.0.syncing.fetch_sub(1, Ordering::SeqCst);
        // Under the queue's lock, so a leader between its check and its wait still hears it.
        let queue = self.0.queue();
        self.0.wake_if_all_joined(&queue);
    }
}

struct Entry {
    snapshot: ProjectSnapshot,
    json_api: Option<String>,
    /// The paths to delete, or why it was not recorded.
    done: oneshot::Sender<Result<Vec<String>, Failure>>,
}

/// Why a project was not recorded, handed from the leader to each project of its group.
#[derive(Clone)]
enum Failure {
    /// The flush failed: the kind survives, so a full or read-only disk still stops the run.
    Disk(std::io::ErrorKind, String),
    Record(String),
}

impl Recorder {
    pub(super) fn new(storage: Arc<Storage>, state: Arc<Mutex<State>>) -> Recorder {
        Recorder {
            storage,
            state,
            gather: GATHER,
            queue: Mutex::default(),
            changed: Condvar::new(),
            syncing: AtomicUsize::new(0),
            groups: AtomicU64::new(0),
        }
    }

    /// Count a project as being synced until the guard is dropped.
    pub(super) fn syncing(&self) -> Syncing<'_> {
        self.syncing.fetch_add(1, Ordering::SeqCst);
        Syncing(self)
    }

    /// How many flushes and transactions recorded the projects so far.
    pub(super) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// A leader gathering waits for every project being synced to join: wake it only once
    /// they all have, not for each project that joins or ends (two thread wake-ups per
    /// project, for a check that fails until the last one).
    fn wake_if_all_joined(&self, queue: &Queue) {
        if queue.entries.len() >= self.syncing.load(Ordering::SeqCst) {
            self.changed.notify_all();
        }
    }

    /// The queue's lock. A leader that panicked holding it left nothing half-done in it.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make `snapshot`'s files and pages durable, then record it (with its JSON API
    /// document's digest), together with whatever else is queued.
    pub(super) async fn record(
        self: &Arc<Self>,
        snapshot: ProjectSnapshot,
        json_api: Option<String>,
    ) -> anyhow::Result<Vec<String>> {
        let (done, result) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.entries.push(Entry {
                snapshot,
                json_api,
                done,
            });
            self.wake_if_all_joined(&queue);
            !std::mem::replace(&mut queue.leading, true)
        };
        if start {
            let leader = Leader {
                recorder: self.clone(),
                done: false,
            };
            tokio::task::spawn_blocking(move || {
                let mut leader = leader;
                leader.recorder.lead();
                leader.done = true;
            });
        }
        match result.await {
            Ok(Ok(gone)) => Ok(gone),
            Ok(Err(Failure::Disk(kind, message))) => Err(std::io::Error::new(kind, message).into()),
            Ok(Err(Failure::Record(message))) => Err(anyhow::Error::msg(message)),
            Err(_) => anyhow::bail!(
                "not recorded: the recorder stopped (a bug: please report it); synced again next run"
            ),
        }
    }

    /// Record groups until none is left. Blocking.
    fn lead(&self) {
        loop {
            let group = self.gather();
            if group.is_empty() {
                return;
            }
            let results: Vec<Result<Vec<String>, Failure>> = match self.storage.flush() {
                Err(e) => {
                    let failure = Failure::Disk(e.kind(), e.to_string());
                    vec![Err(failure); group.len()]
                }
                Ok(()) => {
                    let jobs: Vec<_> = group
                        .iter()
                        .map(|e| (&e.snapshot, e.json_api.as_deref()))
                        .collect();
                    let recorded = lock(&self.state).record_projects(&jobs);
                    recorded
                        .into_iter()
                        .map(|r| r.map_err(|e| Failure::Record(e.to_string())))
                        .collect()
                }
            };
            for (e, result) in group.into_iter().zip(results) {
                // Its task is gone only when the runtime shuts down after a run that returned
                // early: recorded all the same, and what it left in `trash` is deleted by the
                // next run's recovery.
                let _ = e.done.send(result);
            }
        }
    }

    /// The queue, once every project being synced joined it or [`GATHER`] passed; empty, and
    /// the leader to stop, when no project is waiting.
    fn gather(&self) -> Vec<Entry> {
        let deadline = Instant::now() + self.gather;
        let mut queue = self.queue();
        if queue.entries.is_empty() {
            queue.leading = false;
            return Vec::new();
        }
        while queue.entries.len() < self.syncing.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self
                .changed
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.groups.fetch_add(1, Ordering::Relaxed);
        std::mem::take(&mut queue.entries)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::storage::fs::Durability;
    use crate::types::{FileRecord, ProjectName, RemoteFile};

    /// Project `i` with one file; the next `generation` has another in its place.
    fn snapshot_of(i: u64, generation: u64) -> ProjectSnapshot {
        let name = format!("p{i}");
        let file = format!("{name}-1.{generation}.tar.gz");
        let hex = format!("{:02x}", i * 2 + generation).repeat(32);
        let record = FileRecord::for_test("1.0", &file, &hex, 3);
        let url = reqwest::Url::parse("file:///upstream").unwrap();
        ProjectSnapshot::for_test(&name, i, vec![RemoteFile::known(record, url)])
    }

    fn snapshot(i: u64) -> ProjectSnapshot {
        snapshot_of(i, 0)
    }

    /// Twelve projects recorded at once; each result, by its project. A leader that stops
    /// handing results out fails it rather than hanging it.
    fn record_all(recorder: &Arc<Recorder>, generation: u64) -> Vec<anyhow::Result<Vec<String>>> {
        let all = futures::future::join_all(
            (0..12).map(|i| recorder.record(snapshot_of(i, generation), None)),
        );
        runtime()
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), all).await })
            .expect("every project heard its result")
    }
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn recorder(dir: &Path, gather: Duration) -> (Arc<Recorder>, PathBuf) {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let web = dir.join("web");
        let storage = Storage::new(&web, &dir.join("tmp"), Durability::Grouped);
        let state = State::in_memory().unwrap();
        let recorder = Recorder {
            gather,
            ..Recorder::new(Arc::new(storage), Arc::new(Mutex::new(state)))
        };
        (Arc::new(recorder), web)
    }

    #[test]
    fn projects_recorded_at_once_each_get_their_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, web) = recorder(dir.path(), GATHER);
        let held = |i: u64| {
            let name = ProjectName::new(&format!("p{i}")).unwrap();
            lock(&recorder.state).project_files(&name).unwrap().len()
        };
        // A flush that fails (no tree to flush) fails every project of its group, as a disk
        // error the run can recognize, and records none.
        for result in record_all(&recorder, 0) {
            let error = result.unwrap_err();
            let io = error
                .downcast_ref::<std::io::Error>()
                .expect("an io::Error");
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        }
        assert!((0..12).all(|i| held(i) == 0));
        std::fs::create_dir_all(&web).unwrap();
        for result in record_all(&recorder, 0) {
            assert_eq!(result.unwrap(), Vec::<String>::new());
        }
        assert!((0..12).all(|i| held(i) == 1));
        // Each project's next generation: the file it no longer holds, its own.
        for (i, result) in (0..12).zip(record_all(&recorder, 1)) {
            let first = snapshot_of(i, 0).files[0].record.path.relative();
            assert_eq!(result.unwrap(), vec![first], "project {i}");
        }
        let queue = recorder.queue();
        assert!(queue.entries.is_empty() && !queue.leading);
    }

    #[test]
    fn a_leader_that_panics_fails_its_projects_and_the_next_one_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, web) = recorder(dir.path(), GATHER);
        std::fs::create_dir_all(&web).unwrap();
        // A poisoned state lock: the leader panics taking it.
        let state = recorder.state.clone();
        let _ = std::thread::spawn(move || {
            let _held = state.lock().unwrap();
            panic!("poisoning the state lock");
        })
        .join();
        for result in record_all(&recorder, 0) {
            let error = result.unwrap_err().to_string();
            assert!(error.contains("the recorder stopped"), "{error}");
        }
        {
            let queue = recorder.queue();
            assert!(queue.entries.is_empty() && !queue.leading);
        }
        recorder.state.clear_poison();
        for result in record_all(&recorder, 0) {
            assert_eq!(result.unwrap(), Vec::<String>::new());
        }
    }

    /// Record project `i`, then end its sync (after a pause, if asked).
    async fn finish(recorder: &Arc<Recorder>, i: u64, pause: bool, syncing: Syncing<'_>) {
        if pause {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        recorder.record(snapshot(i), None).await.unwrap();
        drop(syncing);
    }

    #[test]
    fn a_leader_waits_only_for_projects_still_being_synced() {
        let dir = tempfile::tempdir().unwrap();
        // Long enough that a wait for it shows as a failure, not as a slow test.
        let (recorder, web) = recorder(dir.path(), Duration::from_secs(30));
        std::fs::create_dir_all(&web).unwrap();
        let started = Instant::now();
        let recorder = &recorder;
        let finish = |i, pause, syncing| finish(recorder, i, pause, syncing);
        runtime().block_on(async {
            // Two projects being synced: the first to finish waits for the second.
            let (a, b) = (recorder.syncing(), recorder.syncing());
            tokio::join!(finish(0, false, a), finish(1, true, b));
            assert_eq!(recorder.groups(), 1, "both recorded by one flush");
            // The second one's sync ends without a record (unchanged, failed): no one to wait
            // for.
            let (a, b) = (recorder.syncing(), recorder.syncing());
            let end = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(b);
            };
            tokio::join!(finish(2, false, a), end);
            assert_eq!(recorder.groups(), 2);
            // The last project of a run: recorded at once.
            finish(3, false, recorder.syncing()).await;
            assert_eq!(recorder.groups(), 3);
        });
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a leader waited out its gathering time"
        );
    }
}
