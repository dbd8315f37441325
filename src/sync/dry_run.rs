//! `pymirror sync --dry-run`: what a sync would download, keep and delete, with byte totals,
//! changing nothing.
//!
//! It takes the path a sync takes as far as deciding: the filter change and its guard, the
//! change feed, each queued project's metadata (fetched and filtered like a sync's), compared
//! with what the database records. It downloads nothing, takes no lock, opens the database
//! read-only (a mirror that never synced gets an empty one in memory) and writes no file.
//!
//! Output (stdout), one line per file, then the totals:
//!
//! ```text
//! download <project> <file name> <bytes>
//! delete <project> <file name> <bytes>
//! remove <project> <files> files <bytes> bytes (<why>)
//! would download N files, B bytes (…)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Mutex;

use futures::StreamExt;
use indicatif::HumanBytes;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::state::{State, Todo};
use crate::storage::Layout;
use crate::sync::filter_change::{FilterChange, Revisits};
use crate::sync::{self, Options, lock};
use crate::types::{FileRecord, ProjectSnapshot};
use crate::types::{ProjectName, Serial};
use crate::upstream::Upstream;
use crate::upstream::snapshot::UrlPolicy;

/// What the dry run found, for the exit code.
#[derive(Debug, Default)]
pub struct DryRun {
    pub download: (u64, u64),
    pub keep: (u64, u64),
    pub delete: (u64, u64),
    pub removed_projects: u64,
    /// Projects whose metadata could not be read (a sync would leave them queued).
    pub failures: u64,
}

enum Verdict {
    Keep(ProjectSnapshot),
    Remove { why: String, gone_upstream: bool },
}

pub async fn run(cfg: &Config, options: Options, out: &mut impl Write) -> anyhow::Result<DryRun> {
    let layout = Layout::new(&cfg.directory);
    let state = Mutex::new(match layout.db.exists() {
        true => State::open_read_only(&layout.db)?,
        false => State::in_memory()?,
    });
    let upstream = Upstream::new(cfg)?;
    let mut notes = Vec::new();

    let since = lock(&state).changelog_serial()?;
    let filter_change = FilterChange::detect(lock(&state).filters()?.as_deref(), &cfg.filters);
    if let Some(change) = &filter_change {
        let impact = change.impact(&cfg.filters, &lock(&state))?;
        if let Err(e) = sync::guard_filter_change(cfg, options, &impact) {
            notes.push(format!("a sync would stop before changing anything: {e}"));
        }
    }
    let plan = sync::read_plan(cfg, &upstream, &state, since, filter_change.as_ref()).await?;
    if let Some(why) = sync::guard_unlisted(cfg, options, &plan) {
        notes.push(format!("a sync would stop before changing anything: {why}"));
    }

    // What a sync would queue: what is queued already, the feed's changes, and what the
    // filter change makes it look at again.
    let mut work: BTreeMap<ProjectName, Todo> = BTreeMap::new();
    let mut merge = |name: ProjectName, display_name: String, serial: Serial| {
        let entry = work.entry(name.clone()).or_insert(Todo {
            name,
            display_name,
            serial,
            attempts: 0,
        });
        entry.serial = entry.serial.max(serial);
    };
    {
        let state = lock(&state);
        for t in state.todo()? {
            merge(t.name, t.display_name, t.serial);
        }
        for c in plan.changes {
            if state
                .project_serial(&c.name)?
                .is_some_and(|s| s >= c.serial)
            {
                continue;
            }
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
        "dry run: upstream serial {}, {} projects to look at",
        plan.feed_serial,
        work.len()
    );

    let permits = Semaphore::new(cfg.metadata_workers);
    let policy = UrlPolicy::new(cfg);
    let verdicts = futures::stream::iter(work.into_values())
        .map(|todo| {
            let (upstream, permits, policy) = (&upstream, &permits, &policy);
            async move {
                let verdict = verdict(cfg, upstream, permits, policy, &todo).await;
                (todo, verdict)
            }
        })
        // In order, so the same state and upstream print the same lines.
        .buffered(cfg.metadata_workers + cfg.workers);
    futures::pin_mut!(verdicts);

    let mut report = DryRun::default();
    let mut gone = 0;
    while let Some((todo, verdict)) = verdicts.next().await {
        let name = &todo.name;
        let state = lock(&state);
        let held = state.project_files(name)?;
        match verdict {
            Err(e) => {
                report.failures += 1;
                writeln!(out, "error {name} {e:#}")?;
            }
            Ok(Verdict::Remove { why, gone_upstream }) => {
                if state.project_serial(name)?.is_none() {
                    continue;
                }
                gone += u64::from(gone_upstream);
                report.removed_projects += 1;
                let bytes: u64 = held.iter().map(|f| f.size).sum();
                writeln!(
                    out,
                    "remove {name} {} files {bytes} bytes ({why})",
                    held.len()
                )?;
                for f in &held {
                    delete(out, &mut report, name, f)?;
                }
            }
            Ok(Verdict::Keep(snapshot)) => {
                let held: HashMap<&str, &FileRecord> =
                    held.iter().map(|f| (f.filename.as_str(), f)).collect();
                let mut wanted = HashMap::new();
                for f in snapshot.files.iter().map(|f| &f.record) {
                    wanted.insert(f.filename.as_str(), f);
                    let same = held.get(f.filename.as_str()).is_some_and(|o| {
                        o.path == f.path && o.size == f.size && o.sha256 == f.sha256
                    });
                    if !same {
                        report.download.0 += 1;
                        report.download.1 += f.size;
                        writeln!(out, "download {name} {} {}", f.filename, f.size)?;
                    }
                }
                let mut held: Vec<&&FileRecord> = held.values().collect();
                held.sort_by_key(|f| f.filename.as_str());
                for old in held {
                    let kept = wanted
                        .get(old.filename.as_str())
                        .is_some_and(|f| f.path == old.path);
                    if !kept {
                        delete(out, &mut report, name, old)?;
                    }
                }
            }
        }
    }
    let (_, files, bytes) = lock(&state).totals()?;
    report.keep = (
        files.saturating_sub(report.delete.0),
        bytes.saturating_sub(report.delete.1),
    );
    if gone > cfg.max_deletions as u64 && !options.allow_mass_delete {
        notes.push(format!(
            "{gone} projects are gone upstream, more than max_deletions = {}: a sync would hold their removal back",
            cfg.max_deletions
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
    for note in notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out, "dry run: nothing was changed")?;
    Ok(report)
}

/// What a sync would do with one queued project.
async fn verdict(
    cfg: &Config,
    upstream: &Upstream,
    permits: &Semaphore,
    policy: &UrlPolicy,
    todo: &Todo,
) -> anyhow::Result<Verdict> {
    if let Err(why) = cfg.filters.allows_project(&todo.name) {
        return Ok(Verdict::Remove {
            why: format!("left out by the filters: {why}"),
            gone_upstream: false,
        });
    }
    let Some((mut snapshot, _)) = sync::fetch_fresh(cfg, upstream, permits, policy, todo).await?
    else {
        return Ok(Verdict::Remove {
            why: "upstream no longer has it".into(),
            gone_upstream: true,
        });
    };
    Ok(match cfg.filters.apply(&mut snapshot) {
        Ok(()) => Verdict::Keep(snapshot),
        Err(why) => Verdict::Remove {
            why: format!("left out by the filters: {why}"),
            gone_upstream: false,
        },
    })
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
