//! `pymirror sync`: one run, as named phases, each in a module of its own:
//!
//! ```text
//! lock → recover → adopted → plan → for each queued project, concurrently: → prune → finish
//!                                     fetch → decide → place → publish
//! ```
//!
//! - **lock** (`storage::lock`): one writer per mirror; the run is recorded in `runs`.
//! - **recover**: clear `tmp/`, empty `trash` (what an interrupted run left).
//! - **adopted**: after `pymirror adopt`, the adopted tree's pages rewritten from the
//!   database (once, resumable).
//! - **plan**: weigh a filter change (mass-delete guard), read the change feed, queue what
//!   changed with the feed's serial in one transaction, requeue what the filter change affects.
//! - per queued project (read from `todo` a page at a time, failed ones first; `queue`):
//!   **fetch** fresh metadata, **decide** what to download, keep and delete (or remove the
//!   project), **place** the new files, **publish** its pages and record it.
//!   A project whose decision deletes held files is deferred to after the queue.
//! - **prune**: the mass-delete guard weighs what the deferred projects would delete (files;
//!   projects left without any file); those it lets through are looked at again and applied.
//!   Then projects gone upstream (guarded) or left out by the filters are removed.
//! - **finish**: root pages, `trash`, `status`.
//!
//! A project whose metadata is stale or whose files fail stays queued with its error and is
//! tried first next run; the others go on. Its old page keeps pointing at its old files.
//! A disk error (full, read-only, permission) stops the run: nothing more would succeed. A
//! symlink met inside the tree is no disk error: that project fails (stays queued), the
//! others go on.

mod adopted;
pub mod decide;
pub mod dry_run;
pub mod fetch;
pub mod filter_change;
mod finish;
pub mod guard;
mod place;
pub mod plan;
mod project;
mod prune;
mod publish;
mod queue;
mod record;
mod recover;
mod summary;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use indicatif::{HumanBytes, MultiProgress};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::progress::{Heartbeat, Progress};
use crate::state::State;
use crate::storage::download::Downloader;
use crate::storage::{Durability, Layout, MirrorLock, Storage};
use crate::types::{PACKAGES, keys};
use crate::upstream::Upstream;
use crate::upstream::snapshot::UrlPolicy;
use guard::Guard;
pub use guard::Options;
use project::{Outcome, Pass};
pub use summary::Summary;

/// What every project of a run shares.
struct Ctx {
    cfg: Config,
    policy: UrlPolicy,
    storage: Arc<Storage>,
    state: Arc<Mutex<State>>,
    upstream: Arc<Upstream>,
    downloader: Arc<Downloader>,
    metadata_permits: Semaphore,
    progress: Arc<Progress>,
    /// The change feed's serial this run: no project is recorded beyond it.
    feed_serial: crate::types::Serial,
    recorder: Arc<record::Recorder>,
    /// Nothing was under `packages/` or `simple/` when the downloads began (a first sync
    /// into an empty tree): no file can be waiting at its final path to be adopted, and no
    /// page to be compared with, so none is looked for (an `lstat` a file and an `open` a
    /// page saved, or a HEAD and a GET in a bucket).
    empty_tree: bool,
}

pub async fn run(
    cfg: &Config,
    options: Options,
    multi: Option<&MultiProgress>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let layout = Arc::new(Layout::new(&cfg.directory));
    layout.create(&cfg.storage)?;
    let _lock = MirrorLock::acquire(&layout)?;
    let state = State::open(&layout.db)?;
    if state.adoption()?.is_some() {
        anyhow::bail!(
            "an adoption of {} is unfinished: run `pymirror adopt` again to finish it, then sync",
            layout.root.display()
        );
    }
    let state = Arc::new(Mutex::new(state));
    let run_id = lock(&state).start_run()?;
    let result = run_locked(cfg, options, multi, stop, layout, state.clone()).await;
    let (outcome, line) = match &result {
        Ok(summary) => (summary.outcome(), summary.line()),
        Err(e) => ("failed", format!("{e:#}")),
    };
    if let Err(e) = lock(&state).finish_run(run_id, outcome, &line) {
        // The mirror is consistent either way; only `status` loses this run's record.
        tracing::warn!("cannot record this run's outcome: {e}");
    }
    result
}

async fn run_locked(
    cfg: &Config,
    options: Options,
    multi: Option<&MultiProgress>,
    stop: Arc<AtomicBool>,
    layout: Arc<Layout>,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    // Files and pages are made durable in groups, just before the transaction that records
    // them (`Storage::flush` in publish and finish), not one fsync each.
    let storage = Arc::new(layout.storage(
        cfg,
        match cfg.fsync {
            true => Durability::Grouped,
            false => Durability::None,
        },
    )?);
    blocking({
        let (layout, storage, state) = (layout.clone(), storage.clone(), state.clone());
        move || recover::recover(&layout, &storage, &state)
    })
    .await?;
    blocking({
        let (cfg, storage, state) = (cfg.clone(), storage.clone(), state.clone());
        let (multi, stop) = (multi.cloned(), stop.clone());
        move || adopted::rewrite(&cfg, &storage, &state, multi.as_ref(), &stop)
    })
    .await?;
    let upstream = Arc::new(Upstream::new(cfg)?);
    let guard = Guard::new(cfg, options);
    let mut summary = Summary::default();
    let pending = plan::run(cfg, guard, &upstream, &state, &mut summary, &stop).await?;
    // 0: not known (a first allowlist-only run without XML-RPC); then nothing is bounded now
    // and the next run's plan forgets what was recorded beyond the feed.
    let feed_serial = (lock(&state).changelog_serial()?)
        .filter(|s| s.0 > 0)
        .unwrap_or(crate::types::Serial(u64::MAX));

    let empty_tree = blocking({
        let storage = storage.clone();
        move || Ok(!storage.holds_any(PACKAGES)? && !storage.holds_any(keys::SIMPLE)?)
    })
    .await?;

    let progress = Arc::new(Progress::new(multi));
    progress.set_projects(pending);
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        policy: UrlPolicy::new(cfg),
        downloader: Arc::new(Downloader::new(
            storage.clone(),
            upstream.clone(),
            cfg,
            progress.clone(),
        )),
        storage: storage.clone(),
        state: state.clone(),
        upstream,
        metadata_permits: Semaphore::new(cfg.metadata_workers),
        progress: progress.clone(),
        feed_serial,
        recorder: Arc::new(record::Recorder::new(storage.clone(), state.clone())),
        empty_tree,
    });
    let queue_error = Arc::new(Mutex::new(None));
    let todo = queue::stream(state.clone(), queue_error.clone()).map(|t| (t, Pass::Queue));
    let queued = sync_queue(&ctx, todo, &stop, multi.is_none(), pending, &mut summary).await;
    if let Some(e) = queue_error.lock().expect("slot lock poisoned").take() {
        return Err(anyhow::Error::new(e).context("cannot read the queue of projects to sync"));
    }
    let Passed {
        mut removed,
        deferred,
        looked,
    } = queued?;
    // Stopped (a signal, a disk error): what was deferred stays queued, unweighed.
    if !stop.load(Ordering::Relaxed) && !deferred.is_empty() {
        let again = prune::deferred(&ctx, guard, deferred, looked, &mut summary).await?;
        let more = again.len() as u64;
        progress.set_projects(pending + more);
        let again = futures::stream::iter(again);
        let passed = sync_queue(&ctx, again, &stop, multi.is_none(), more, &mut summary).await?;
        removed.extend(passed.removed);
    }
    progress.finish();
    summary.interrupted = stop.load(Ordering::Relaxed) && summary.disk_error.is_none();

    let summary = blocking({
        let cfg = cfg.clone();
        move || {
            prune::prune(&state, guard, &removed, &mut summary)?;
            finish::finish(&cfg, &layout, &storage, &state, &mut summary)?;
            Ok(summary)
        }
    })
    .await?;
    Ok(Summary {
        elapsed: started.elapsed(),
        ..summary
    })
}

/// What one pass over projects leaves for after it.
#[derive(Default)]
struct Passed {
    /// Projects to remove (behind the mass-delete guard when gone upstream).
    removed: Vec<Removed>,
    /// Projects whose decisions delete held files, for the guard to weigh.
    deferred: Vec<project::Deferred>,
    /// Files the mirror held of the projects decided kept (the guard's "looked at").
    looked: u64,
}

/// Projects through fetch → decide → place → publish, `metadata_workers + workers` at a
/// time: enough that downloads never wait for metadata, few enough that memory stays bounded
/// however long the queue is. The queue's pass defers what deletes held files; the pass after
/// the guard applies it.
async fn sync_queue(
    ctx: &Arc<Ctx>,
    todo: impl futures::Stream<Item = (crate::state::Todo, project::Pass)>,
    stop: &Arc<AtomicBool>,
    log_progress: bool,
    pending: u64,
    summary: &mut Summary,
) -> anyhow::Result<Passed> {
    let in_flight = ctx.cfg.metadata_workers + ctx.cfg.workers;
    let mut passed = Passed::default();
    let mut heartbeat = Heartbeat::new(log_progress);
    let mut done = 0u64;
    let progress = ctx.progress.clone();
    let stop_flag = stop.clone();
    let mut outcomes = Box::pin(todo)
        .take_while(move |_| futures::future::ready(!stop_flag.load(Ordering::Relaxed)))
        .map(|(t, pass)| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _syncing = ctx.recorder.syncing();
                let name = t.name.to_string();
                let weighed = matches!(pass, Pass::Weighed(_));
                (name, weighed, project::sync(&ctx, t, pass).await)
            })
        })
        .buffer_unordered(in_flight);
    while let Some(joined) = outcomes.next().await {
        let (name, weighed, outcome) =
            joined.map_err(|e| anyhow::anyhow!("a project task crashed: {e}"))?;
        done += 1;
        progress.project_done(&name);
        match outcome {
            Outcome::Synced {
                files,
                bytes,
                refused,
                held,
            } => {
                // Counted once, in the queue's pass.
                if !weighed {
                    passed.looked += held;
                }
                summary.projects_synced += 1;
                summary.files_downloaded += files;
                summary.bytes_downloaded += bytes;
                summary.refused += refused;
            }
            Outcome::Unchanged => summary.projects_unchanged += 1,
            Outcome::Removed { todo, removal } => passed.removed.push((todo, removal)),
            Outcome::Deferred(deferred) => {
                passed.looked += deferred.held;
                passed.deferred.push(deferred);
            }
            Outcome::Failed { error, disk } => {
                summary.projects_failed += 1;
                if disk && summary.disk_error.is_none() {
                    // Every other project would fail the same way: stop, keep what is done.
                    stop.store(true, Ordering::Relaxed);
                    tracing::error!(
                        "disk error, stopping: {error}; free space or fix permissions, then run again"
                    );
                    summary.disk_error = Some(error);
                } else {
                    tracing::warn!("{name}: {error}; left queued for the next run");
                }
            }
        }
        if heartbeat.due() {
            tracing::info!(
                "progress: {done}/{pending} projects, {} files ({}) downloaded",
                summary.files_downloaded,
                HumanBytes(summary.bytes_downloaded)
            );
        }
    }
    tracing::debug!(
        "{} projects recorded in {} groups",
        summary.projects_synced,
        ctx.recorder.groups()
    );
    Ok(passed)
}

type Removed = (crate::state::Todo, decide::Removal);

/// Database and file work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow::anyhow!("a blocking task crashed: {e}"))?
}

pub(crate) fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().expect("state lock poisoned")
}

/// Delete keys of the served tree (a trailing `/` names a page directory). Failures are
/// logged, not fatal: an object that cannot be deleted now is an orphan, not a reason to
/// leave the index inconsistent.
fn delete(storage: &Storage, keys: &[String]) {
    for key in keys {
        if let Err(e) = storage.delete(key) {
            tracing::warn!("{e}");
        }
    }
}
