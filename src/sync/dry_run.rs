//! `pymirror sync --dry-run`: what a sync would download, keep and delete, with byte totals,
//! changing nothing.
//!
//! It takes the path a sync takes as far as deciding (`plan`, then `decide::look` for each
//! project: the same fetch, filters and decision), and prints the decisions. It downloads
//! nothing, takes no lock, opens the database read-only (a mirror that never synced gets an
//! empty one in memory) and writes no file. The queue is read a page at a time, as the sync
//! reads it.
//!
//! Output (stdout), one line per file, then the totals:
//!
//! ```text
//! download <project> <file name> <bytes>
//! delete <project> <file name> <bytes>
//! remove <project> <files> files <bytes> bytes (<why>)
//! hold <project> <file name> <bytes> until <RFC 3339 time>     (the cooldown)
//! would download N files, B bytes (…)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use indicatif::HumanBytes;
use tokio::sync::Semaphore;

use super::decide::{self, Decision, Removal};
use super::filter_change::{FilterChange, Revisits};
use super::guard::{Guard, Options, Weight};
use super::{lock, plan, queue};
use crate::config::Config;
use crate::filter::cooldown;
use crate::state::{State, Todo, TodoCursor};
use crate::storage::Layout;
use crate::types::{FileRecord, HeldFile, ProjectName, Serial};
use crate::upstream::Upstream;
use crate::upstream::snapshot::UrlPolicy;

/// What the dry run found, for the exit code.
#[derive(Debug, Default)]
pub struct DryRun {
    pub download: (u64, u64),
    pub keep: (u64, u64),
    pub delete: (u64, u64),
    pub removed_projects: u64,
    /// Files the cooldown holds back, their bytes, and when the first comes of age.
    pub held_back: (u64, u64),
    pub next_release: Option<i64>,
    /// Projects whose metadata could not be read (a sync would leave them queued).
    pub failures: u64,
    /// Projects gone upstream (the mass-delete guard counts them).
    gone: u64,
    /// Projects upstream lists without any file (the guard counts them too).
    emptied: u64,
    /// Files held of the projects decided kept, and those their decisions delete (the guard
    /// weighs them too).
    weight: Weight,
}

pub async fn run(cfg: &Config, options: Options, out: &mut impl Write) -> anyhow::Result<DryRun> {
    let layout = Layout::new(&cfg.directory);
    let state = Mutex::new(match layout.db.exists() {
        true => State::open_read_only(&layout.db)?,
        false => State::in_memory()?,
    });
    let upstream = Upstream::new(cfg)?;
    let guard = Guard::new(cfg, options);
    let mut notes = Vec::new();

    let since = lock(&state).changelog_serial()?;
    let filter_change = FilterChange::detect(lock(&state).filters()?.as_deref(), &cfg.filters);
    if let Some(change) = &filter_change {
        let impact = change.impact(&cfg.filters, &lock(&state))?;
        if let Err(e) = guard.filter_change(&impact) {
            notes.push(format!("a sync would stop before changing anything: {e}"));
        }
    }
    let plan = plan::read(
        cfg,
        &upstream,
        &state,
        since,
        filter_change.as_ref(),
        None,
        false,
    )
    .await?;
    if let Some(why) = guard.unlisted(plan.unlisted) {
        notes.push(format!("a sync would stop before changing anything: {why}"));
    }

    // What a sync would queue besides what is queued already: the feed's changes and what
    // the filter change makes it look at again.
    let mut extra: BTreeMap<ProjectName, Todo> = BTreeMap::new();
    {
        let state = lock(&state);
        let mut merge = |name: ProjectName, display_name: String, serial: Serial| {
            let entry = extra.entry(name.clone()).or_insert(Todo {
                name,
                display_name,
                serial,
                attempts: 0,
                conditional: false,
            });
            entry.serial = entry.serial.max(serial);
        };
        for c in plan.changes {
            if state
                .project_serial(&c.name)?
                .is_some_and(|s| s >= c.serial)
            {
                continue;
            }
            merge(c.name, c.display_name, c.serial);
        }
        let due_by = match &filter_change {
            Some(change) if change.content_changed => i64::MAX,
            _ => cfg.filters.now(),
        };
        for c in state.held_back_due(due_by, Serial(0))? {
            merge(c.name, c.display_name, c.serial);
        }
        if let Some(change) = &filter_change {
            let mut cursor = Revisits::default();
            while let Some(batch) =
                change.next_revisits(&cfg.filters, &state, &mut cursor, Serial(0))?
            {
                for c in batch {
                    merge(c.name, c.display_name, c.serial);
                }
            }
        }
    }
    tracing::info!(
        "dry run: upstream serial {}, {} changed projects to look at besides the queue",
        plan.feed_serial,
        extra.len()
    );

    let look = Look {
        cfg,
        upstream: &upstream,
        permits: Semaphore::new(cfg.metadata_workers),
        policy: UrlPolicy::new(cfg),
        state: &state,
        feed_serial: plan.feed_serial,
    };
    let mut report = DryRun::default();
    // The queue a page at a time (each project merged with what the feed adds), then the rest.
    let mut cursor = TodoCursor::default();
    loop {
        let page =
            tokio::task::block_in_place(|| lock(&state).todo_page(&mut cursor, queue::PAGE))?;
        if page.is_empty() {
            break;
        }
        let batch: Vec<Todo> = page
            .into_iter()
            .map(|mut t| {
                if let Some(more) = extra.remove(&t.name) {
                    t.serial = t.serial.max(more.serial);
                }
                t
            })
            .collect();
        look.batch(batch, out, &mut report).await?;
    }
    look.batch(extra.into_values().collect(), out, &mut report)
        .await?;

    let (_, files, bytes) = lock(&state).totals()?;
    report.keep = (
        files.saturating_sub(report.delete.0),
        bytes.saturating_sub(report.delete.1),
    );
    if let Some(why) = guard.gone(report.gone) {
        notes.push(format!("{why}: a sync would hold their removal back"));
    }
    if let Some(why) = guard.emptied(report.emptied) {
        notes.push(format!("{why}: a sync would hold emptying them back"));
    }
    if let Some(why) = guard.files(report.weight) {
        notes.push(format!(
            "{why}: a sync would hold these deletions back (the projects stay queued)"
        ));
    }
    let total = |(n, b): (u64, u64)| format!("{n} files, {b} bytes ({})", HumanBytes(b));
    writeln!(out, "would download {}", total(report.download))?;
    writeln!(out, "would keep {}", total(report.keep))?;
    writeln!(
        out,
        "would delete {} and remove {} projects",
        total(report.delete),
        report.removed_projects
    )?;
    if let Some(next) = report.next_release {
        writeln!(
            out,
            "would hold back {} for the cooldown, the first until {}",
            total(report.held_back),
            cooldown::show_time(next)
        )?;
    }
    for note in notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out, "dry run: nothing was changed")?;
    Ok(report)
}

/// What the dry run shares across projects.
struct Look<'a> {
    cfg: &'a Config,
    upstream: &'a Upstream,
    permits: Semaphore,
    policy: UrlPolicy,
    state: &'a Mutex<State>,
    feed_serial: Serial,
}

impl Look<'_> {
    /// Decide each project of `batch` as a sync would, and print the decisions.
    async fn batch(
        &self,
        batch: Vec<Todo>,
        out: &mut impl Write,
        report: &mut DryRun,
    ) -> anyhow::Result<()> {
        let decisions = futures::stream::iter(batch)
            .map(|todo| async move {
                let held_files = AtomicU64::new(0);
                let held = async {
                    let files =
                        tokio::task::block_in_place(|| lock(self.state).project_files(&todo.name))?;
                    held_files.store(files.len() as u64, Ordering::Relaxed);
                    Ok(files)
                };
                let decision = decide::look(
                    self.cfg,
                    self.upstream,
                    &self.permits,
                    &self.policy,
                    &todo,
                    self.feed_serial,
                    None,
                    held,
                )
                .await;
                (todo, decision, held_files.into_inner())
            })
            // In order, so the same state and upstream print the same lines.
            .buffered(self.cfg.metadata_workers + self.cfg.workers);
        futures::pin_mut!(decisions);
        while let Some((todo, decision, held)) = decisions.next().await {
            let name = &todo.name;
            match decision {
                Err(e) => {
                    report.failures += 1;
                    writeln!(out, "error {name} {e:#}")?;
                }
                Ok((Decision::Unchanged, _)) => {}
                Ok((Decision::Remove(removal), _)) => {
                    if let Removal::Excluded { held_back, .. } = &removal {
                        hold(out, report, name, held_back)?;
                    }
                    let state = lock(self.state);
                    if state.project_serial(name)?.is_none() {
                        continue;
                    }
                    let why = match &removal {
                        Removal::Gone => "upstream no longer has it".to_owned(),
                        Removal::Excluded { why, .. } => {
                            format!("left out by the filters: {why}")
                        }
                    };
                    report.gone += u64::from(removal == Removal::Gone);
                    report.removed_projects += 1;
                    let held = state.project_files(name)?;
                    let bytes: u64 = held.iter().map(|f| f.size).sum();
                    writeln!(
                        out,
                        "remove {name} {} files {bytes} bytes ({why})",
                        held.len()
                    )?;
                    for f in &held {
                        delete(out, report, name, f)?;
                    }
                }
                Ok((decision @ Decision::Keep { .. }, _)) => {
                    report.emptied += u64::from(decision.empties());
                    let Decision::Keep {
                        snapshot,
                        download,
                        delete: gone,
                    } = decision
                    else {
                        unreachable!("matched above");
                    };
                    hold(out, report, name, &snapshot.held_back)?;
                    for p in download.iter().filter(|p| !p.sidecar) {
                        let f = &snapshot.files[p.file].record;
                        report.download.0 += 1;
                        report.download.1 += f.size;
                        writeln!(out, "download {name} {} {}", f.filename, f.size)?;
                    }
                    report.weight.looked += held;
                    report.weight.deleting += gone.len() as u64;
                    for old in &gone {
                        delete(out, report, name, old)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn delete(
    out: &mut impl Write,
    report: &mut DryRun,
    name: &ProjectName,
    f: &FileRecord,
) -> std::io::Result<()> {
    report.delete.0 += 1;
    report.delete.1 += f.size;
    writeln!(out, "delete {name} {} {}", f.filename, f.size)
}

/// The files the cooldown holds back of a project.
fn hold(
    out: &mut impl Write,
    report: &mut DryRun,
    name: &ProjectName,
    held: &[HeldFile],
) -> std::io::Result<()> {
    for f in held {
        report.held_back.0 += 1;
        report.held_back.1 += f.size;
        report.next_release = Some(
            report
                .next_release
                .map_or(f.matures_at, |n| n.min(f.matures_at)),
        );
        writeln!(
            out,
            "hold {name} {} {} until {}",
            f.filename,
            f.size,
            cooldown::show_time(f.matures_at)
        )?;
    }
    Ok(())
}
