//! `pymirror verify`: prove the mirror is what its state database says, and repair it.
//!
//! Driven by the database and one streaming walk of `web/`, in phases that each record how
//! far they got in verify's own log, `verify.db` (a checkpoint every second), so a verify
//! killed at any moment continues with `--resume`:
//!
//! 1. `tmp`: leftover temporary files (skipped while a sync runs: they are its own).
//! 2. `packages-top`, `packages`: the 65,536 `packages/aa/bb/` shards on every core, each a
//!    merge-join of one index range query and one sorted directory walk (see `packages.rs`);
//!    `--hash` re-hashes each file on the same threads.
//! 3. `pages`: every held project's pages regenerated in memory and compared, on every core.
//! 4. `strays`: directories under `simple/` (`json/`, `pypi/`) of projects not held.
//! 5. `root`: the root pages, streamed from the database through a comparing writer.
//! 6. `upstream-listing`, `upstream` (`--upstream`): drift from upstream.
//!
//! Then `--repair` / `--delete-orphans` (under the mirror lock), then the report.

pub mod packages;
pub mod pages;
pub mod pipeline;
pub mod repair;
pub mod report;
pub mod upstream;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::MultiProgress;

use crate::config::Config;
use crate::progress::{PhaseBar, Progress};
use crate::state::{State, VerifyBegin, VerifyCounts, VerifyLog};
use crate::storage::MirrorLock;
use crate::storage::download::Downloader;
use crate::storage::layout::{Protected, is_real_dir};
use crate::storage::{Durability, Layout, Storage};
use crate::types::ProjectName;
use crate::upstream::Upstream;
use crate::upstream::snapshot::UrlPolicy;

use crate::types::problem::{Kind, Problem};

/// A running sync that is still migrating the database gets this long to finish.
const MIGRATION_WAIT: Duration = Duration::from_secs(30);

/// Open the database to read it. Beside a running sync, an older schema is one the sync is
/// migrating right now: wait for it rather than refuse.
fn open_beside(layout: &Layout, sync_running: bool) -> anyhow::Result<State> {
    let deadline = Instant::now() + MIGRATION_WAIT;
    loop {
        match State::open_reader(&layout.db) {
            Err(crate::state::StateError::Schema { .. })
                if sync_running && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// Upstream errors in a row after which `--upstream` stops asking (upstream is down).
const UPSTREAM_FAILURES: u32 = 20;

/// How often found work is committed (the checkpoint).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub hash: bool,
    pub upstream: bool,
    pub repair: bool,
    pub delete_orphans: bool,
    pub dry_run: bool,
    pub resume: bool,
    pub json: bool,
    /// Threads checking files and pages (default: twice the cores, 8 to 64).
    pub jobs: Option<usize>,
    /// Only in builds with the `test-hooks` feature (the integration tests turn it on).
    #[cfg(feature = "test-hooks")]
    pub hooks: TestHooks,
}

/// Test hooks: exit as if killed, or stop as on SIGINT, right after this many units of work.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks {
    pub exit_after: Option<u64>,
    pub stop_after: Option<u64>,
}

impl Options {
    /// The checks asked for; a verify resumes only with the same.
    fn checks(&self) -> String {
        let mut checks = vec!["files", "pages"];
        if self.hash {
            checks.push("hash");
        }
        if self.upstream {
            checks.push("upstream");
        }
        checks.join(",")
    }

    fn changes_things(&self) -> bool {
        (self.repair || self.delete_orphans) && !self.dry_run
    }
}

/// Run a verify, write its report to `out`, and return the exit code (see `report.rs`).
pub async fn run(
    cfg: &Config,
    opts: Options,
    multi: Option<&MultiProgress>,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let started = Instant::now();
    let layout = Arc::new(Layout::new(&cfg.directory));
    if !layout.db.exists() {
        anyhow::bail!(
            "no mirror state at {}; run `pymirror sync` first (or fix `directory`)",
            layout.db.display()
        );
    }
    let _lock = match opts.changes_things() {
        true => Some(MirrorLock::acquire(&layout)?),
        false => None,
    };
    let sync_pid = match opts.changes_things() {
        true => None,
        false => MirrorLock::holder(&layout)?,
    };
    if let Some(pid) = &sync_pid {
        tracing::warn!(
            "a sync (pid {pid}) is running: what it is changing right now may show up as problems, \
             and tmp/ (its temporary files) is not checked"
        );
    }
    // Only a verify that repairs writes the mirror database (migrating it first, under the
    // lock, as a sync would); one that checks only reads it, and records in its own log.
    let state = match opts.changes_things() {
        true => State::open(&layout.db)?,
        false => open_beside(&layout, sync_pid.is_some())?,
    };
    if state.reads_immutable() {
        tracing::warn!(
            "this user cannot create {}-wal and -shm: the database is read as a file that does \
             not change, and a sync that starts during this verify may make it fail",
            layout.db.display()
        );
    }
    let (log, why_in_memory) = VerifyLog::open_or_in_memory(&layout.verify_log)?;
    if let Some(why) = why_in_memory {
        tracing::warn!(
            "{why}; this verify keeps its checkpoint in memory: if it is interrupted, \
             `pymirror verify --resume` will not be able to continue it"
        );
    }
    let adopted_after = state.adopted_pages_after()?;
    if let Some(after) = &adopted_after {
        tracing::info!(
            "the pages of {} adopted projects are still the adopted tree's: not compared (the \
             next sync rewrites them)",
            state.projects_after_count(after)?
        );
    }
    let mut state = state.with_verify_log(log);
    let checks = opts.checks();
    let run = match state.verify_begin(&checks, opts.resume)? {
        VerifyBegin::Run(run) => run,
        VerifyBegin::Mismatch { checks: found } => anyhow::bail!(
            "the interrupted verify checked {found}, not {checks}; resume it with the same flags \
             (--hash, --upstream), or run without --resume to start over"
        ),
    };
    if run.resumed {
        tracing::info!(
            "resuming the interrupted verify ({} files and {} pages already checked)",
            run.counts.files_checked,
            run.counts.pages_checked
        );
    } else if opts.resume {
        tracing::info!("no interrupted verify to resume; verifying from the start");
    }
    let storage = Arc::new(layout.storage(
        cfg,
        match cfg.fsync {
            true => Durability::EachObject,
            false => Durability::None,
        },
    )?);
    let verify = Verify {
        cfg,
        opts: &opts,
        layout: layout.clone(),
        storage: storage.clone(),
        multi,
        stop: &stop,
        jobs: opts.jobs.unwrap_or_else(default_jobs).max(1),
        sync_running: sync_pid.is_some(),
        adopted_after,
    };
    #[allow(unused_mut)]
    let mut rec = Recorder::new(state, run.id, run.counts, stop.clone());
    #[cfg(feature = "test-hooks")]
    {
        rec.hooks = opts.hooks;
    }
    let checked = verify.check(&mut rec).await?;
    let this_run = rec.this_run;
    let mut state = rec.into_state();

    let pages = verify.pages_checker();
    if checked && opts.changes_things() {
        let upstream = Arc::new(Upstream::new(cfg)?);
        let progress = Arc::new(Progress::new(multi));
        let repairer = repair::Repairer {
            cfg,
            downloader: Downloader::new(storage.clone(), upstream.clone(), cfg, progress.clone()),
            layout: layout.clone(),
            storage: storage.clone(),
            upstream,
            policy: UrlPolicy::new(cfg),
            pages: &pages,
            guard: Protected::new(&layout),
            repair: opts.repair,
            delete_orphans: opts.delete_orphans,
        };
        let repaired = repairer.run(&mut state, run.id, &stop).await;
        progress.finish();
        repaired?;
    }
    let complete = checked && !stop.load(Ordering::Relaxed);
    if complete {
        state.verify_finish(run.id)?;
    }
    let (repaired, not_repaired) = state.verify_repair_counts(run.id)?;
    let report = report::Report {
        directory: cfg.directory.display().to_string(),
        run: run.id,
        complete,
        resumed: run.resumed,
        checks,
        totals: state_totals(run.counts, this_run),
        this_run,
        counts: state.verify_counts(run.id)?,
        repaired,
        not_repaired,
        elapsed: started.elapsed(),
        repair: opts.repair,
        delete_orphans: opts.delete_orphans,
        dry_run: opts.dry_run,
    };
    tracing::info!("{}", report.line());
    if opts.json {
        report.write_json(&state, out)?;
    } else {
        report.write_text(&state, out)?;
    }
    Ok(report.exit_code())
}

/// Threads checking files: more than cores, so that a walk waiting on the disk (a cold
/// cache: every directory and inode read from disk) keeps other requests in flight.
fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(8, 64)
}

fn state_totals(mut before: VerifyCounts, this_run: VerifyCounts) -> VerifyCounts {
    before += this_run;
    before
}

struct Verify<'a> {
    cfg: &'a Config,
    opts: &'a Options,
    layout: Arc<Layout>,
    storage: Arc<Storage>,
    multi: Option<&'a MultiProgress>,
    stop: &'a AtomicBool,
    jobs: usize,
    sync_running: bool,
    adopted_after: Option<String>,
}

impl Verify<'_> {
    fn pages_checker(&self) -> pages::Checker<'_> {
        pages::Checker {
            storage: &self.storage,
            format: self.cfg.simple_format,
            root_uri: self.cfg.root_uri.as_deref(),
            json_api: self.cfg.json,
            adopted_after: self.adopted_after.as_deref(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Every phase not done yet; `false` when interrupted.
    async fn check(&self, rec: &mut Recorder) -> anyhow::Result<bool> {
        self.tmp(rec)?;
        if !self.packages(rec)? || self.stopped() {
            return Ok(false);
        }
        if !self.pages(rec)? || self.stopped() {
            return Ok(false);
        }
        let pages = self.pages_checker();
        if !rec.is_done("strays")? {
            rec.start("strays");
            let problems = pages.check_strays(&rec.state)?;
            rec.unit(VerifyCounts::default(), problems, None)?;
            rec.finish_phase()?;
        }
        if !rec.is_done("root")? {
            rec.start("root");
            let mut counts = VerifyCounts::default();
            let problems = pages.check_root(&rec.state, &mut counts)?;
            rec.unit(counts, problems, None)?;
            rec.finish_phase()?;
        }
        if self.opts.upstream && !self.upstream(rec).await? {
            return Ok(false);
        }
        Ok(!self.stopped())
    }

    fn tmp(&self, rec: &mut Recorder) -> anyhow::Result<()> {
        if rec.is_done("tmp")? {
            return Ok(());
        }
        rec.start("tmp");
        let mut problems = Vec::new();
        let tmp = &self.layout.tmp;
        if self.sync_running {
            // Its temporary files are in use.
        } else if is_real_dir(tmp) {
            for entry in std::fs::read_dir(tmp)? {
                let entry = entry?;
                let slash = if entry.file_type()?.is_dir() { "/" } else { "" };
                problems.push(Problem::new(
                    Kind::Orphan,
                    format!("tmp/{}{slash}", entry.file_name().to_string_lossy()),
                    "leftover temporary file",
                ));
            }
        } else if std::fs::symlink_metadata(tmp).is_ok() {
            tracing::warn!(
                "{} is not a directory; temporary files were not checked",
                tmp.display()
            );
        }
        rec.unit(VerifyCounts::default(), problems, None)?;
        rec.finish_phase()
    }

    fn packages(&self, rec: &mut Recorder) -> anyhow::Result<bool> {
        let checker = packages::Checker {
            storage: &self.storage,
            hash: self.opts.hash,
        };
        if !rec.is_done("packages-top")? {
            rec.start("packages-top");
            let problems = checker
                .check_top()
                .with_context(|| format!("cannot read {}", self.layout.web.display()))?;
            rec.unit(VerifyCounts::default(), problems, None)?;
            rec.finish_phase()?;
        }
        let (position, done) = rec.state.verify_phase(rec.run, "packages")?;
        if done {
            return Ok(true);
        }
        rec.start("packages");
        let first = position.and_then(|p| p.parse::<u32>().ok()).map_or(0, |p| {
            (p + 1) / packages::SHARDS_PER_UNIT * packages::SHARDS_PER_UNIT
        });
        let (_, files, bytes) = rec.state.totals()?;
        let mut bar = match self.opts.hash {
            true => PhaseBar::new(self.multi, "verify", "hashed", bytes, true),
            false => PhaseBar::new(self.multi, "verify", "files", files, false),
        };
        let workers = (0..self.jobs)
            .map(|_| packages::Worker::new(&self.layout.db))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let complete = pipeline::run_ordered(
            workers,
            (first..packages::SHARDS)
                .step_by(packages::SHARDS_PER_UNIT as usize)
                .map(Ok),
            |w, first| Ok((first, checker.check_unit(w, first)?)),
            |(first, result)| {
                let last = first + packages::SHARDS_PER_UNIT - 1;
                rec.unit(result.counts, result.problems, Some(last.to_string()))?;
                bar.set(match self.opts.hash {
                    true => rec.total.bytes_checked,
                    false => rec.total.files_checked,
                });
                Ok(())
            },
            self.stop,
        )?;
        bar.finish();
        rec.end(complete)?;
        Ok(complete)
    }

    fn pages(&self, rec: &mut Recorder) -> anyhow::Result<bool> {
        let (position, done) = rec.state.verify_phase(rec.run, "pages")?;
        if done {
            return Ok(true);
        }
        rec.start("pages");
        let checker = self.pages_checker();
        let (projects, ..) = rec.state.totals()?;
        let mut bar = PhaseBar::new(self.multi, "verify", "projects", projects, false);
        let mut projects_done = 0u64;
        let workers = (0..self.jobs)
            .map(|_| State::open_reader(&self.layout.db))
            .collect::<Result<Vec<_>, _>>()?;
        let batches = NameBatches::new(&self.layout, position)?;
        let complete = pipeline::run_ordered(
            workers,
            batches,
            |state, names| checker.check_batch(state, names),
            |result| {
                projects_done += result.projects;
                rec.unit(result.counts, result.problems, result.last)?;
                bar.set(projects_done);
                Ok(())
            },
            self.stop,
        )?;
        bar.finish();
        rec.end(complete)?;
        Ok(complete)
    }

    async fn upstream(&self, rec: &mut Recorder) -> anyhow::Result<bool> {
        let client = Upstream::new(self.cfg)?;
        let policy = UrlPolicy::new(self.cfg);
        let concurrency = self.cfg.metadata_workers.max(1);
        let fetch = |name: ProjectName, display: String| {
            let (client, policy) = (&client, &policy);
            async move {
                let fetched = upstream::fetch(client, self.cfg, policy, &name, &display).await;
                (name, fetched)
            }
        };
        if !rec.is_done("upstream-listing")? {
            rec.start("upstream-listing");
            let listed = match upstream::listing(&client, self.cfg).await {
                Ok(listed) => listed,
                Err(e) => return self.upstream_unreachable(rec, e),
            };
            let mut candidates = Vec::new();
            for (display, serial) in listed {
                if let Ok(name) = ProjectName::new(&display)
                    && self.cfg.filters.allows_project(&name).is_ok()
                    && !rec.state.holds_project(name.as_str())?
                {
                    candidates.push((name, display, serial));
                }
            }
            // Listed but not held: drift only if upstream offers something to mirror (a
            // project without releases or files is listed, yet nothing is to be held).
            let mut counts = VerifyCounts::default();
            let mut problems = Vec::new();
            let mut answers = futures::stream::iter(candidates)
                .map(|(name, display, serial)| async move { (fetch(name, display).await, serial) })
                .buffer_unordered(concurrency);
            while let Some(((name, fetched), serial)) = answers.next().await {
                match fetched {
                    Ok(f) if f.snapshot.is_some() => {
                        let mut p = Problem::new(
                            Kind::Drift,
                            format!("web/simple/{name}/"),
                            format!(
                                "upstream has this project (serial {serial}); the mirror does not"
                            ),
                        )
                        .of_project(name.as_str());
                        p.serial = Some(serial.0);
                        problems.push(p);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("{name}: cannot compare with upstream: {e:#}");
                        counts.unchecked += 1;
                    }
                }
            }
            rec.unit(counts, problems, None)?;
            rec.finish_phase()?;
        }
        let (position, done) = rec.state.verify_phase(rec.run, "upstream")?;
        if done {
            return Ok(true);
        }
        rec.start("upstream");
        let (projects, ..) = rec.state.totals()?;
        let mut bar = PhaseBar::new(self.multi, "verify", "upstream", projects, false);
        let reader = State::open_reader(&self.layout.db)?;
        let mut failures_in_a_row = 0;
        for batch in NameBatches::new(&self.layout, position)? {
            if self.stopped() {
                rec.end(false)?;
                return Ok(false);
            }
            let mut stored = Vec::new();
            for name in batch? {
                if let Some(s) = reader.stored_project(&name)? {
                    stored.push(s);
                }
            }
            let mut answers = futures::stream::iter(stored)
                .map(|s| async move {
                    let (_, fetched) = fetch(s.name.clone(), s.display_name.clone()).await;
                    (s, fetched)
                })
                .buffered(concurrency);
            while let Some((s, fetched)) = answers.next().await {
                let mut counts = VerifyCounts::default();
                let mut problems = Vec::new();
                match fetched {
                    Ok(f) => {
                        failures_in_a_row = 0;
                        counts.projects_compared += 1;
                        problems.extend(upstream::drift(&s, &f));
                    }
                    // Upstream is down, not one project odd: stop asking.
                    Err(e) if failures_in_a_row + 1 >= UPSTREAM_FAILURES => {
                        return self.upstream_unreachable(rec, e);
                    }
                    Err(e) => {
                        failures_in_a_row += 1;
                        tracing::warn!("{}: cannot compare with upstream: {e:#}", s.name);
                        counts.unchecked += 1;
                    }
                }
                rec.unit(counts, problems, Some(s.name.to_string()))?;
                bar.set(rec.total.projects_compared + rec.total.unchecked);
            }
        }
        bar.finish();
        rec.end(true)?;
        Ok(true)
    }
}

impl Verify<'_> {
    /// The comparison with upstream cannot go on: what is checked stays recorded, the report
    /// says the verify did not finish, and `--resume` takes it up again.
    fn upstream_unreachable(&self, rec: &mut Recorder, e: anyhow::Error) -> anyhow::Result<bool> {
        tracing::error!(
            "cannot compare with upstream: {e:#}; the comparison stopped (`pymirror verify --upstream --resume` takes it up again)"
        );
        rec.end(false)?;
        Ok(false)
    }
}

/// Project names in order after a position, a batch at a time, from a connection of its own.
struct NameBatches {
    state: State,
    after: Option<ProjectName>,
    failed: bool,
}

impl NameBatches {
    fn new(layout: &Layout, after: Option<String>) -> anyhow::Result<NameBatches> {
        Ok(NameBatches {
            state: State::open_reader(&layout.db)?,
            after: after.map(|a| ProjectName::new(&a)).transpose()?,
            failed: false,
        })
    }
}

impl Iterator for NameBatches {
    type Item = anyhow::Result<Vec<ProjectName>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.state.projects_after(self.after.as_ref(), pages::BATCH) {
            Ok(projects) if projects.is_empty() => None,
            Ok(projects) => {
                let names: Vec<ProjectName> = projects.into_iter().map(|(n, ..)| n).collect();
                self.after = names.last().cloned();
                Some(Ok(names))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e.into()))
            }
        }
    }
}

/// Records checked work and findings, committing them with the phase's position at most
/// every [`CHECKPOINT_EVERY`]: a kill loses at most that much work.
struct Recorder {
    state: State,
    run: i64,
    phase: &'static str,
    pending: VerifyCounts,
    problems: Vec<Problem>,
    position: Option<String>,
    last_commit: Instant,
    /// The whole verify so far, including before a resume.
    total: VerifyCounts,
    /// This process's share.
    this_run: VerifyCounts,
    units: u64,
    #[cfg(feature = "test-hooks")]
    hooks: TestHooks,
    /// Set by the `--test-stop-after` hook only.
    #[cfg(feature = "test-hooks")]
    stop: Arc<AtomicBool>,
}

impl Recorder {
    #[cfg_attr(not(feature = "test-hooks"), allow(unused_variables))]
    fn new(state: State, run: i64, before: VerifyCounts, stop: Arc<AtomicBool>) -> Recorder {
        Recorder {
            state,
            run,
            phase: "",
            pending: VerifyCounts::default(),
            problems: Vec::new(),
            position: None,
            last_commit: Instant::now(),
            total: before,
            this_run: VerifyCounts::default(),
            units: 0,
            #[cfg(feature = "test-hooks")]
            hooks: TestHooks::default(),
            #[cfg(feature = "test-hooks")]
            stop,
        }
    }

    fn into_state(self) -> State {
        self.state
    }

    fn is_done(&self, phase: &str) -> anyhow::Result<bool> {
        Ok(self.state.verify_phase(self.run, phase)?.1)
    }

    fn start(&mut self, phase: &'static str) {
        self.phase = phase;
        self.position = None;
    }

    fn unit(
        &mut self,
        counts: VerifyCounts,
        problems: Vec<Problem>,
        position: Option<String>,
    ) -> anyhow::Result<()> {
        for p in &problems {
            tracing::debug!("{} {}: {}", p.kind, p.path, p.detail);
        }
        self.pending += counts;
        self.total += counts;
        self.this_run += counts;
        self.problems.extend(problems);
        if position.is_some() {
            self.position = position;
        }
        self.units += 1;
        #[cfg(feature = "test-hooks")]
        {
            if self.hooks.exit_after == Some(self.units) {
                self.commit(false)?;
                std::process::exit(137);
            }
            if self.hooks.stop_after == Some(self.units) {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
        if self.last_commit.elapsed() >= CHECKPOINT_EVERY || self.problems.len() >= 10_000 {
            self.commit(false)?;
        }
        Ok(())
    }

    fn finish_phase(&mut self) -> anyhow::Result<()> {
        self.commit(true)
    }

    /// The phase ended: finished, or interrupted (committing what is done).
    fn end(&mut self, finished: bool) -> anyhow::Result<()> {
        self.commit(finished)
    }

    fn commit(&mut self, done: bool) -> anyhow::Result<()> {
        self.state.verify_commit(
            self.run,
            self.phase,
            self.position.as_deref(),
            done,
            &self.pending,
            &self.problems,
        )?;
        self.pending = VerifyCounts::default();
        self.problems.clear();
        self.last_commit = Instant::now();
        Ok(())
    }
}
