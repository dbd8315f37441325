//! `pymirror sync`: one run, start to finish.
//!
//! lock → clear `tmp/`, empty `trash` → a filter change? (mass-delete guard, requeue what it
//! affects) → plan (change feed → `todo`, projects the filters leave out dropped) → for each
//! queued project, concurrently: fetch metadata (reject stale) → validate → filter → place
//! every new file
//! (downloads share one `workers` bound across all projects) → write its page → record it and
//! dequeue it → delete files nothing references any more. Then projects upstream removed
//! (behind the mass-delete guard) and projects the filters leave out: forget them, rewrite the
//! root page, delete their pages, then their files. Last, `status`.
//!
//! A project whose metadata is stale or whose files fail stays queued with its error and is
//! tried first next run; the others go on. Its old page keeps pointing at its old files.
//! A disk error (full, read-only, permission) stops the run: nothing more would succeed.

pub mod dry_run;
pub mod filter_change;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{HumanBytes, MultiProgress};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::index::{IndexWriter, ProjectView};
use crate::progress::Progress;
use crate::state::{State, Todo, TodoCursor};
use crate::storage::Layout;
use crate::storage::MirrorLock;
use crate::storage::download::{DownloadError, Downloader, Placed, Target};
use crate::sync::filter_change::{FilterChange, Impact, Revisits};
use crate::types::Serial;
use crate::types::{FileRecord, ProjectSnapshot};
use crate::upstream::snapshot;
use crate::upstream::{ProjectFetch, Upstream, retry};

/// What a run did, for the closing log line and the exit code.
#[derive(Debug, Default)]
pub struct Summary {
    pub projects_synced: u64,
    pub projects_removed: u64,
    pub projects_failed: u64,
    pub files_downloaded: u64,
    pub bytes_downloaded: u64,
    /// Refused upstream entries and invalid names: counted as failures.
    pub refused: u64,
    pub serial: Serial,
    pub elapsed: Duration,
    pub interrupted: bool,
    /// Removals held back by the mass-delete guard.
    pub deletions_refused: u64,
    /// The disk error that stopped the run.
    pub disk_error: Option<String>,
}

impl Summary {
    pub fn succeeded(&self) -> bool {
        self.projects_failed == 0
            && self.refused == 0
            && !self.interrupted
            && self.deletions_refused == 0
            && self.disk_error.is_none()
    }

    pub fn outcome(&self) -> &'static str {
        if self.interrupted {
            "interrupted"
        } else if self.succeeded() {
            "complete"
        } else {
            "partial"
        }
    }

    pub fn line(&self) -> String {
        format!(
            "sync {}: {} projects synced, {} removed, {} files ({}) downloaded, {} failures, serial {} reached, {:.1}s",
            self.outcome(),
            self.projects_synced,
            self.projects_removed,
            self.files_downloaded,
            HumanBytes(self.bytes_downloaded),
            self.projects_failed + self.refused + self.deletions_refused,
            self.serial,
            self.elapsed.as_secs_f64()
        )
    }
}

enum Outcome {
    Synced {
        files: u64,
        bytes: u64,
        refused: u64,
    },
    /// Upstream answered 404: removed once the whole queue is through, behind the mass-delete guard.
    Gone(Todo),
    /// The filters leave the project out (`why`): removed once the queue is through, with its
    /// queue entry up to `serial`. Not guarded again: a filter change is guarded before it
    /// is applied.
    Excluded {
        todo: Todo,
        serial: Serial,
        why: String,
    },
    Failed {
        error: String,
        disk: bool,
    },
}

struct Ctx {
    cfg: Config,
    policy: snapshot::UrlPolicy,
    layout: Arc<Layout>,
    state: Arc<Mutex<State>>,
    upstream: Arc<Upstream>,
    downloader: Arc<Downloader>,
    metadata_permits: Semaphore,
    progress: Arc<Progress>,
}

impl Ctx {
    fn index(&self) -> IndexWriter<'_> {
        IndexWriter::from_config(&self.layout, &self.cfg)
    }
}

/// Per-run switches from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Remove projects even when more than `max_deletions` are gone upstream (or a filter
    /// change leaves them out).
    pub allow_mass_delete: bool,
}

pub async fn run(
    cfg: &Config,
    options: Options,
    multi: Option<&MultiProgress>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let layout = Arc::new(Layout::new(&cfg.directory));
    layout.create()?;
    let _lock = MirrorLock::acquire(&layout)?;
    let state = Arc::new(Mutex::new(State::open(&layout.db)?));
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
    let leftovers = layout.clear_tmp()?;
    if leftovers > 0 {
        tracing::info!("removed {leftovers} temporary files left by an interrupted run");
    }
    empty_trash(&layout, &mut lock(&state))?;
    let upstream = Arc::new(Upstream::new(cfg)?);
    let progress = Arc::new(Progress::new(multi));
    let mut summary = Summary::default();

    let since = lock(&state).changelog_serial()?;
    let filter_change = FilterChange::detect(lock(&state).filters()?.as_deref(), &cfg.filters);
    if let Some(change) = &filter_change
        && since.is_some()
    {
        tracing::info!("the filter configuration changed; weighing what it removes");
        let impact = change.impact(&cfg.filters, &lock(&state))?;
        guard_filter_change(cfg, options, &impact)?;
    }
    let plan = read_plan(cfg, &upstream, &state, since, filter_change.as_ref()).await?;
    for name in &plan.invalid_names {
        tracing::warn!("upstream lists {name:?}, which is not a valid project name; skipped");
    }
    summary.refused += plan.invalid_names.len() as u64;
    if let Some(why) = guard_unlisted(cfg, options, &plan) {
        anyhow::bail!("{why}; nothing was changed");
    }
    let queued = lock(&state).enqueue(&plan.changes, plan.feed_serial)?;
    if let Some(change) = &filter_change {
        // After the feed's changes are queued: a crash in between re-detects the change.
        let mut state = lock(&state);
        let first_serial = Serial(plan.feed_serial.0.saturating_add(1));
        let mut revisits = Revisits::default();
        let mut requeued = 0;
        while let Some(batch) =
            change.next_revisits(&cfg.filters, &state, &mut revisits, first_serial)?
        {
            requeued += batch.len();
            state.requeue(&batch)?;
        }
        state.set_filters(&cfg.filters.spec().to_canonical())?;
        if since.is_some() {
            tracing::info!(
                "the filter configuration changed: {requeued} projects to look at again"
            );
        }
    }
    let pending = lock(&state).pending_count()?;
    tracing::info!(
        "upstream serial {}: {} changed projects queued, {} to sync",
        plan.feed_serial,
        queued,
        pending
    );
    progress.set_projects(pending);

    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        policy: snapshot::UrlPolicy::new(cfg),
        downloader: Arc::new(Downloader::new(
            layout.clone(),
            upstream.clone(),
            cfg,
            progress.clone(),
        )),
        layout: layout.clone(),
        state: state.clone(),
        upstream,
        metadata_permits: Semaphore::new(cfg.metadata_workers),
        progress: progress.clone(),
    });

    // Enough projects in flight that downloads never wait for metadata, few enough that
    // memory stays bounded however long the queue is.
    let in_flight = cfg.metadata_workers + cfg.workers;

    let mut gone = Vec::new();
    let mut excluded = Vec::new();
    let mut last_report = Instant::now();
    let mut done = 0u64;
    let stop_flag = stop.clone();
    let queue_error = Arc::new(Mutex::new(None));
    let mut outcomes = Box::pin(queue(state.clone(), queue_error.clone()))
        .take_while(move |_| futures::future::ready(!stop_flag.load(Ordering::Relaxed)))
        .map(|t| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let name = t.name.to_string();
                (name, sync_project(&ctx, t).await)
            })
        })
        .buffer_unordered(in_flight);
    while let Some(joined) = outcomes.next().await {
        let (name, outcome) = joined.map_err(|e| anyhow::anyhow!("a project task crashed: {e}"))?;
        done += 1;
        progress.project_done(&name);
        match outcome {
            Outcome::Synced {
                files,
                bytes,
                refused,
            } => {
                summary.projects_synced += 1;
                summary.files_downloaded += files;
                summary.bytes_downloaded += bytes;
                summary.refused += refused;
            }
            Outcome::Gone(todo) => gone.push(todo),
            Outcome::Excluded { todo, serial, why } => excluded.push((todo, serial, why)),
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
        if multi.is_none() && last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            tracing::info!(
                "progress: {done}/{pending} projects, {} files ({}) downloaded",
                summary.files_downloaded,
                HumanBytes(summary.bytes_downloaded)
            );
        }
    }
    progress.finish();
    if let Some(e) = lock_slot(&queue_error).take() {
        return Err(anyhow::Error::new(e).context("cannot read the queue of projects to sync"));
    }
    summary.interrupted = stop.load(Ordering::Relaxed) && summary.disk_error.is_none();

    let mut state = lock(&state);
    if gone.len() > cfg.max_deletions && !options.allow_mass_delete {
        tracing::error!(
            "{} projects are gone upstream, more than max_deletions = {}; none was removed. \
             If upstream really removed them, run again with --allow-mass-delete",
            gone.len(),
            cfg.max_deletions
        );
        for todo in &gone {
            state.record_failure(&todo.name, "held back by the mass-delete guard")?;
        }
        summary.deletions_refused = gone.len() as u64;
    } else {
        for todo in &gone {
            if state.remove_project(&todo.name, todo.serial)? {
                tracing::info!(
                    "{}: removed upstream; removing it from the mirror",
                    todo.name
                );
                summary.projects_removed += 1;
            }
        }
    }
    for (todo, serial, why) in &excluded {
        if state.remove_project(&todo.name, *serial)? {
            tracing::info!(
                "{}: left out by the filters ({why}); removing it from the mirror",
                todo.name
            );
            summary.projects_removed += 1;
        } else {
            tracing::debug!("{}: left out by the filters ({why})", todo.name);
        }
    }
    summary.serial = state.fully_synced_serial()?;
    let finished = (|| -> anyhow::Result<()> {
        let index = IndexWriter::from_config(&layout, cfg);
        // Set in the transactions that record or remove a project (the JSON root lists each
        // project's serial), so even a killed run's changes reach the root next time.
        if state.root_dirty()? || !index.root_exists() {
            index.write_root(&state, summary.serial)?;
            state.root_written()?;
        }
        // After the root page: removed projects' pages, then their files.
        empty_trash(&layout, &mut state)?;
        layout.write_if_changed(
            &layout.status,
            format!("{}\n", summary.serial).as_bytes(),
            cfg.fsync,
        )?;
        Ok(())
    })();
    match finished {
        // The disk error is already the run's outcome; the old root page and status stay
        // valid (the root lists only projects with pages), and the next run rewrites them.
        Err(e) if summary.disk_error.is_some() => tracing::warn!("{e:#}"),
        other => other?,
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A filter change that would take more than `max_deletions` projects away stops the run
/// before anything changes.
pub(crate) fn guard_filter_change(
    cfg: &Config,
    options: Options,
    impact: &Impact,
) -> anyhow::Result<()> {
    if impact.projects() > cfg.max_deletions as u64 && !options.allow_mass_delete {
        anyhow::bail!(
            "the filter configuration changed: it removes {} mirrored projects and leaves {} \
             without any file ({} files, {}), more than max_deletions = {}; nothing was changed. \
             Check [filters]; if this is what you want, run again with --allow-mass-delete",
            impact.removed_projects,
            impact.emptied_projects,
            impact.files,
            HumanBytes(impact.bytes),
            cfg.max_deletions
        );
    }
    Ok(())
}

/// A root listing that lacks more than `max_deletions` mirrored projects: why to stop.
pub(crate) fn guard_unlisted(cfg: &Config, options: Options, plan: &plan::Plan) -> Option<String> {
    (plan.unlisted > cfg.max_deletions && !options.allow_mass_delete).then(|| {
        format!(
            "upstream's listing lacks {} projects this mirror holds, more than max_deletions = {}. \
             If upstream really removed them, run again with --allow-mass-delete",
            plan.unlisted, cfg.max_deletions
        )
    })
}

/// Read the change feed in the filters' scope, dropping the projects they leave out.
pub(crate) async fn read_plan(
    cfg: &Config,
    upstream: &Upstream,
    state: &Mutex<State>,
    since: Option<Serial>,
    filter_change: Option<&FilterChange>,
) -> anyhow::Result<plan::Plan> {
    let only = cfg.filters.listed_projects();
    // With an allowlist of names, projects newly listed are requeued by name instead.
    let relist = since.is_some()
        && only.is_none()
        && filter_change.is_some_and(|c| c.may_add_projects(&cfg.filters));
    let scope = plan::Scope { only, relist };
    let mut plan = plan::plan(upstream, state, cfg.change_feed, since, &scope)
        .await
        .map_err(|e| {
            e.context("cannot read upstream's change feed; nothing was changed, try again later")
        })?;
    plan.changes
        .retain(|c| cfg.filters.allows_project(&c.name).is_ok());
    Ok(plan)
}

/// The queue, read from the database a page at a time as the sync takes projects from it. A
/// database error ends the stream and is left in `error`.
fn queue(
    state: Arc<Mutex<State>>,
    error: Arc<Mutex<Option<crate::state::StateError>>>,
) -> impl futures::Stream<Item = Todo> {
    futures::stream::unfold(Some(TodoCursor::default()), move |cursor| {
        let (state, error) = (state.clone(), error.clone());
        async move {
            let mut cursor = cursor?;
            let page = tokio::task::spawn_blocking(move || {
                let page = lock(&state).todo_page(&mut cursor, 1000);
                (page, cursor)
            })
            .await
            .expect("reading the queue panicked");
            match page {
                (Ok(page), _) if page.is_empty() => None,
                (Ok(page), cursor) => Some((futures::stream::iter(page), Some(cursor))),
                (Err(e), _) => {
                    *lock_slot(&error) = Some(e);
                    None
                }
            }
        }
    })
    .flatten()
}

fn lock_slot<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock().expect("slot lock poisoned")
}

pub(crate) fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().expect("state lock poisoned")
}

async fn sync_project(ctx: &Arc<Ctx>, todo: Todo) -> Outcome {
    match try_sync_project(ctx, &todo).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let msg = format!("{error:#}");
            let (state, name) = (ctx.state.clone(), todo.name.clone());
            let m = msg.clone();
            let _ =
                tokio::task::spawn_blocking(move || lock(&state).record_failure(&name, &m)).await;
            Outcome::Failed {
                error: msg,
                disk: is_disk_error(&error),
            }
        }
    }
}

async fn try_sync_project(ctx: &Arc<Ctx>, todo: &Todo) -> anyhow::Result<Outcome> {
    // Left out by name: no request at all.
    if let Err(why) = ctx.cfg.filters.allows_project(&todo.name) {
        return Ok(Outcome::Excluded {
            todo: todo.clone(),
            serial: Serial(u64::MAX),
            why,
        });
    }
    let fetched = fetch_fresh(
        &ctx.cfg,
        &ctx.upstream,
        &ctx.metadata_permits,
        &ctx.policy,
        todo,
    )
    .await?;
    let Some((mut snapshot, upstream_json)) = fetched else {
        return Ok(Outcome::Gone(todo.clone()));
    };
    for why in &snapshot.refused {
        tracing::warn!("{why}");
    }
    // Before anything is downloaded: what the filters leave out is never fetched, recorded
    // or listed.
    if let Err(why) = ctx.cfg.filters.apply(&mut snapshot) {
        return Ok(Outcome::Excluded {
            todo: todo.clone(),
            serial: snapshot.serial,
            why,
        });
    }
    let mut refused = snapshot.refused.len() as u64;

    let (state, name) = (ctx.state.clone(), todo.name.clone());
    let existing: HashMap<_, FileRecord> =
        tokio::task::spawn_blocking(move || lock(&state).project_files(&name))
            .await??
            .into_iter()
            .map(|f| (f.filename.clone(), f))
            .collect();

    // What is recorded with the same path, size and digest is in place already: no request,
    // no re-hash. Everything else is placed concurrently (bounded by the download semaphore).
    let mut targets = Vec::new();
    for (i, f) in snapshot.files.iter().enumerate() {
        let old = existing.get(&f.record.filename);
        let same_file = old.is_some_and(|o| {
            o.path == f.record.path && o.size == f.record.size && o.sha256 == f.record.sha256
        });
        let same_sidecar =
            same_file && old.is_some_and(|o| o.core_metadata == f.record.core_metadata);
        if !same_file {
            targets.push((i, false, Target::file(f)));
        }
        if let Some(t) = Target::sidecar(f).filter(|_| !same_sidecar) {
            targets.push((i, true, t));
        }
    }
    // Known to the database before they reach disk, so a project that fails or disappears
    // after some of its files were placed cannot leave them behind unaccounted for. In the
    // same blocking call, which paths are empty (nothing there to adopt).
    let mut absent = Vec::new();
    if !targets.is_empty() {
        let paths: Vec<String> = targets.iter().map(|(_, _, t)| t.relative.clone()).collect();
        let (state, name, layout) = (ctx.state.clone(), todo.name.clone(), ctx.layout.clone());
        absent = tokio::task::spawn_blocking(move || {
            let absent: Vec<bool> = paths
                .iter()
                .map(|p| std::fs::symlink_metadata(layout.web_path(p)).is_err())
                .collect();
            lock(&state).stage(&name, &paths).map(|()| absent)
        })
        .await??;
    }
    let tasks: Vec<_> = targets
        .into_iter()
        .zip(absent)
        .map(|((i, sidecar, target), absent)| {
            let (downloader, progress) = (ctx.downloader.clone(), ctx.progress.clone());
            let task = tokio::spawn(async move {
                let placed = downloader.place(&target, absent).await;
                if placed.is_ok() && !sidecar {
                    progress.file_done();
                }
                placed
            });
            (i, sidecar, task)
        })
        .collect();
    let (mut files, mut bytes, mut failed, mut first_error) = (0, 0, 0, None);
    for (i, sidecar, task) in tasks {
        match task.await? {
            Ok(Placed::Downloaded { bytes: n }) => {
                files += u64::from(!sidecar);
                bytes += n;
            }
            Ok(Placed::Adopted) => {}
            // A sidecar upstream advertises but does not serve, or serves with other bytes than
            // it promised, is simply not advertised here; the file itself is fine. A bad one
            // counts as refused, so the run says something is wrong upstream. One that could
            // not be fetched (network, 5xx after retries) fails the project like a file would,
            // so the next run tries it again instead of never advertising it.
            Err(e) if sidecar && (e.is_not_found() || e.is_refusal()) => {
                tracing::warn!(
                    "{}: {e}; its core metadata will not be advertised",
                    snapshot.name
                );
                snapshot.files[i].record.core_metadata = None;
                refused += u64::from(!e.is_not_found());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(anyhow::Error::new(e).context(format!("{failed} of its files failed")));
    }

    let ctx2 = ctx.clone();
    tokio::task::spawn_blocking(move || commit_project(&ctx2, &snapshot, upstream_json.as_ref()))
        .await??;
    Ok(Outcome::Synced {
        files,
        bytes,
        refused,
    })
}

/// Metadata at least as new as the serial the feed promised, retrying stale CDN answers with
/// a cache-busting query. `None`: upstream has no such project. With `json = true`, also
/// upstream's JSON API document, for the JSON API mirror.
pub(crate) async fn fetch_fresh(
    cfg: &Config,
    upstream: &Upstream,
    permits: &Semaphore,
    policy: &snapshot::UrlPolicy,
    todo: &Todo,
) -> anyhow::Result<Option<(ProjectSnapshot, Option<serde_json::Value>)>> {
    let mut attempt = 0;
    loop {
        let (json, page) = {
            let _permit = permits.acquire().await?;
            let bust = (attempt > 0).then_some(todo.serial.0);
            let page = async {
                match cfg.simple_json {
                    true => upstream.project_page(&todo.name, bust).await,
                    false => Ok(None),
                }
            };
            let (json, page) = tokio::join!(upstream.project_json(&todo.display_name, bust), page);
            (json?, page?)
        };
        let json_serial = match &json {
            ProjectFetch::Found { serial, .. } => Some(Serial(serial.unwrap_or(0))),
            ProjectFetch::NotFound => None,
        };
        let page_serial = page.as_ref().map(|(_, s, _)| Serial(s.unwrap_or(0)));
        let stale = [json_serial, page_serial]
            .into_iter()
            .flatten()
            .find(|&s| s < todo.serial);
        let Some(serial) = stale else {
            if json_serial.is_none() && page_serial.is_none() {
                return Ok(None);
            }
            // The older of the two answers: what the newer one adds is fetched again next
            // time rather than recorded as mirrored.
            let serial = json_serial
                .into_iter()
                .chain(page_serial)
                .min()
                .unwrap_or_default();
            let (page, page_url) = match page {
                Some((p, _, url)) => (Some(p), Some(url)),
                None => (None, None),
            };
            let (json, url, raw) = match json {
                ProjectFetch::Found {
                    json, url, body, ..
                } => {
                    let raw = if cfg.json {
                        Some(serde_json::from_slice(&body).map_err(|e| {
                            anyhow::anyhow!("{url}: invalid JSON for the JSON API mirror: {e}")
                        })?)
                    } else {
                        None
                    };
                    (Some(json), Some(url), raw)
                }
                ProjectFetch::NotFound => (None, None, None),
            };
            let answers = snapshot::Answers {
                json: json.zip(url.as_ref()),
                page: page.zip(page_url.as_ref()),
            };
            return Ok(Some((
                snapshot::snapshot(&todo.name, &todo.display_name, answers, serial, policy)?,
                raw,
            )));
        };
        if attempt >= cfg.stale_retries {
            anyhow::bail!(
                "upstream metadata is stale (serial {serial}, expected at least {}) after {} attempts",
                todo.serial,
                attempt + 1
            );
        }
        tracing::debug!(
            "{}: stale metadata (serial {serial} < {}); retrying",
            todo.name,
            todo.serial
        );
        tokio::time::sleep(retry::backoff(upstream.retry_delay(), attempt)).await;
        attempt += 1;
    }
}

/// Every file is in place: write the page, then record the project, then delete what it no
/// longer references. A crash between steps leaves the project queued and the tree valid.
fn commit_project(
    ctx: &Ctx,
    snapshot: &ProjectSnapshot,
    upstream_json: Option<&serde_json::Value>,
) -> anyhow::Result<()> {
    let records: Vec<&FileRecord> = snapshot.files.iter().map(|f| &f.record).collect();
    let view = ProjectView::new(
        &snapshot.name,
        &snapshot.display_name,
        snapshot.serial,
        snapshot.status.as_ref(),
        &snapshot.versions,
        records,
    );
    let index = ctx.index();
    index.write_project(&view)?;
    if ctx.cfg.json {
        // Unknown while it is rewritten, so a kill in between leaves no stale digest.
        lock(&ctx.state).set_json_api_digest(&snapshot.name, None)?;
    }
    let json_api = match upstream_json {
        Some(doc) => Some(
            index
                .write_json_api(
                    &snapshot.name,
                    doc,
                    &snapshot.versions,
                    &view.files().collect::<Vec<_>>(),
                )?
                .to_hex(),
        ),
        // No JSON API answer (quarantined, or upstream has none): an old document must not
        // keep listing files about to be deleted.
        None if ctx.cfg.json => {
            index.remove_json_api(&snapshot.name)?;
            Some(String::new())
        }
        None => None,
    };
    let mut state = lock(&ctx.state);
    let gone = state.record_project(snapshot)?;
    if let Some(digest) = &json_api {
        state.set_json_api_digest(&snapshot.name, Some(digest))?;
    }
    delete_files(&ctx.layout, &gone);
    state.emptied(&gone)?;
    tracing::debug!("{}: synced at serial {}", snapshot.name, snapshot.serial);
    Ok(())
}

/// Delete what `trash` holds (pages first, then files), then forget it.
fn empty_trash(layout: &Layout, state: &mut State) -> anyhow::Result<()> {
    let paths = state.trash()?;
    if paths.is_empty() {
        return Ok(());
    }
    delete_files(layout, &paths);
    state.emptied(&paths)?;
    Ok(())
}

/// Delete paths relative to `web/` (a trailing `/` names a page directory). Failures are
/// logged, not fatal: a file that cannot be deleted now is an orphan on disk, not a reason to
/// leave the index inconsistent.
fn delete_files(layout: &Layout, relative_paths: &[String]) {
    for rel in relative_paths {
        let path = layout.web_path(rel.trim_end_matches('/'));
        if layout.through_symlink(rel) {
            tracing::warn!(
                "not deleting {}: a directory on its way is a symlink",
                path.display()
            );
            continue;
        }
        let result = if rel.ends_with('/') {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = result
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot delete {}: {e}", path.display());
        }
    }
}

/// Errors that retrying other projects cannot get past.
fn is_disk_error(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::*;
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<DownloadError>(),
            Some(DownloadError::Disk { .. })
        ) || cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                StorageFull | ReadOnlyFilesystem | PermissionDenied | QuotaExceeded
            )
        })
    })
}
