//! Record: projects whose files and pages are written become durable and recorded as a
//! group. Each `syncfs` rewrites every inode table and bitmap block new files touched, and
//! each SQLite commit writes its pages to the WAL, so one flush and one transaction per
//! project cost far more than one per group of the projects finishing at the same moment.
//!
//! A project joins the queue, then waits its turn to lead. A leader waits up to [`GATHER`]
//! for others to join, but no longer once every project still being synced has joined (the
//! last ones of a run do not wait for projects that will not come). It takes the queue,
//! flushes (every object of every project in it was written before that project joined, so
//! before the flush starts), then records them all in one transaction
//! ([`State::record_projects`]: one that fails is recorded alone and fails alone) and hands
//! each its result. A project that joins after the queue was taken waits for the next leader,
//! whose flush starts after it joined.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    /// [`GATHER`], but for tests.
    gather: Duration,
    queue: Mutex<Vec<Arc<Entry>>>,
    /// Signalled when a project joins the queue or a project's sync ends.
    changed: Condvar,
    /// Projects being synced now ([`Recorder::syncing`]).
    syncing: AtomicUsize,
    /// One leader at a time.
    leading: Mutex<()>,
    groups: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            gather: GATHER,
            queue: Mutex::default(),
            changed: Condvar::new(),
            syncing: AtomicUsize::new(0),
            leading: Mutex::default(),
            groups: AtomicU64::new(0),
        }
    }
}

/// Held while a project is synced: a leader waits for it only while one is.
pub(super) struct Syncing<'a>(&'a Recorder);

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.0.syncing.fetch_sub(1, Ordering::SeqCst);
        // Under the queue's lock, so a leader between its check and its wait still hears it.
        let _queue = self.0.queue.lock().expect("recorder");
        self.0.changed.notify_all();
    }
}

struct Entry {
    snapshot: ProjectSnapshot,
    json_api: Option<String>,
    /// Filled by the leader that recorded it: the paths to delete, or why not.
    done: Mutex<Option<Result<Vec<String>, Failure>>>,
}

/// Why a project was not recorded, handed from the leader to each project of its group.
#[derive(Clone)]
enum Failure {
    /// The flush failed: the kind survives, so a full or read-only disk still stops the run.
    Disk(std::io::ErrorKind, String),
    Record(String),
}

impl Recorder {
    /// Count a project as being synced until the guard is dropped.
    pub(super) fn syncing(&self) -> Syncing<'_> {
        self.syncing.fetch_add(1, Ordering::SeqCst);
        Syncing(self)
    }

    /// How many flushes and transactions recorded the projects so far.
    pub(super) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// The queue, once every project being synced joined it or [`GATHER`] passed.
    fn gather(&self) -> Vec<Arc<Entry>> {
        let deadline = Instant::now() + self.gather;
        let mut queue = self.queue.lock().expect("recorder");
        while queue.len() < self.syncing.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self.changed.wait_timeout(queue, left).expect("recorder").0;
        }
        self.groups.fetch_add(1, Ordering::Relaxed);
        std::mem::take(&mut *queue)
    }

    /// Make `snapshot`'s files and pages durable, then record it (with its JSON API
    /// document's digest), together with whatever else is queued. Blocking.
    pub(super) fn record(
        &self,
        storage: &Storage,
        state: &Mutex<State>,
        snapshot: ProjectSnapshot,
        json_api: Option<String>,
    ) -> anyhow::Result<Vec<String>> {
        let entry = Arc::new(Entry {
            snapshot,
            json_api,
            done: Mutex::new(None),
        });
        self.queue.lock().expect("recorder").push(entry.clone());
        self.changed.notify_all();
        let lead = self.leading.lock().expect("recorder");
        if entry.done.lock().expect("recorder").is_none() {
            let group = self.gather();
            let results: Vec<Result<Vec<String>, Failure>> = match storage.flush() {
                Err(e) => {
                    let failure = Failure::Disk(e.kind(), e.to_string());
                    vec![Err(failure); group.len()]
                }
                Ok(()) => {
                    let jobs: Vec<_> = group
                        .iter()
                        .map(|e| (&e.snapshot, e.json_api.as_deref()))
                        .collect();
                    let recorded = lock(state).record_projects(&jobs);
                    recorded
                        .into_iter()
                        .map(|r| r.map_err(|e| Failure::Record(e.to_string())))
                        .collect()
                }
            };
            for (e, result) in group.iter().zip(results) {
                *e.done.lock().expect("recorder") = Some(result);
            }
        }
        drop(lead);
        let result = entry.done.lock().expect("recorder").take();
        match result.expect("a group holds every project queued before it was taken") {
            Ok(gone) => Ok(gone),
            Err(Failure::Disk(kind, message)) => Err(std::io::Error::new(kind, message).into()),
            Err(Failure::Record(message)) => Err(anyhow::Error::msg(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::Durability;
    use crate::types::{FileRecord, ProjectName, RemoteFile};

    fn snapshot(i: u64) -> ProjectSnapshot {
        let name = format!("p{i}");
        let file = format!("{name}-1.0.tar.gz");
        let hex = format!("{i:02x}").repeat(32);
        let record = FileRecord::for_test("1.0", &file, &hex, 3);
        let url = reqwest::Url::parse("file:///upstream").unwrap();
        ProjectSnapshot::for_test(&name, i, vec![RemoteFile::known(record, url)])
    }

    /// Twelve projects recorded from twelve threads at once; each result, by its thread.
    fn record_all(
        storage: &Storage,
        state: &Mutex<State>,
        recorder: &Recorder,
    ) -> Vec<anyhow::Result<Vec<String>>> {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..12)
                .map(|i| scope.spawn(move || recorder.record(storage, state, snapshot(i), None)))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    #[test]
    fn projects_recorded_at_once_each_get_their_own_result() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let web = dir.path().join("web");
        let storage = Storage::new(&web, &dir.path().join("tmp"), Durability::Grouped);
        let state = Mutex::new(State::in_memory().unwrap());
        let recorder = Recorder::default();
        let held = |state: &Mutex<State>, i: u64| {
            let name = ProjectName::new(&format!("p{i}")).unwrap();
            state.lock().unwrap().project_files(&name).unwrap().len()
        };
        // A flush that fails (no tree to flush) fails every project of its group, as a disk
        // error the run can recognize, and records none.
        for result in record_all(&storage, &state, &recorder) {
            let error = result.unwrap_err();
            let io = error
                .downcast_ref::<std::io::Error>()
                .expect("an io::Error");
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        }
        assert!((0..12).all(|i| held(&state, i) == 0));
        std::fs::create_dir_all(&web).unwrap();
        for result in record_all(&storage, &state, &recorder) {
            assert_eq!(result.unwrap(), Vec::<String>::new());
        }
        assert!((0..12).all(|i| held(&state, i) == 1));
        assert!(recorder.queue.lock().unwrap().is_empty());
    }

    #[test]
    fn a_leader_waits_only_for_projects_still_being_synced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let web = dir.path().join("web");
        std::fs::create_dir_all(&web).unwrap();
        let storage = Storage::new(&web, &dir.path().join("tmp"), Durability::Grouped);
        let state = Mutex::new(State::in_memory().unwrap());
        // Long enough that a wait for it shows as a failure, not as a slow test.
        let recorder = Recorder {
            gather: Duration::from_secs(30),
            ..Recorder::default()
        };
        let (recorder, storage, state) = (&recorder, &storage, &state);
        let started = Instant::now();
        // Two projects being synced: the first records while the second ends with `second`.
        let two = |first: u64, second: &dyn Fn(Syncing)| {
            std::thread::scope(|scope| {
                let (a, b) = (recorder.syncing(), recorder.syncing());
                let first = scope.spawn(move || {
                    let result = recorder.record(storage, state, snapshot(first), None);
                    drop(a);
                    result
                });
                std::thread::sleep(Duration::from_millis(50));
                second(b);
                first.join().unwrap().unwrap();
            })
        };
        // The first to finish waits for the second.
        two(0, &|b: Syncing| {
            recorder.record(storage, state, snapshot(1), None).unwrap();
            drop(b);
        });
        assert_eq!(recorder.groups(), 1, "both recorded by one flush");
        // The second one's sync ends without a record (unchanged, failed): no one to wait for.
        two(2, &|b: Syncing| drop(b));
        assert_eq!(recorder.groups(), 2);
        // The last project of a run: recorded at once.
        let last = recorder.syncing();
        recorder.record(storage, state, snapshot(3), None).unwrap();
        drop(last);
        assert_eq!(recorder.groups(), 3);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a leader waited out its gathering time"
        );
    }
}
