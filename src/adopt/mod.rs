//! `pymirror adopt`: take over an existing bandersnatch mirror (or any PEP 503 tree in
//! PyPI's layout) without downloading it again. Offline: upstream is never asked.
//!
//! ```text
//! adopt::run
//!   refuse      no web/simple/; a pymirror database that is no unfinished adoption
//!   lock        storage::lock, as a sync (bandersnatch's own `.lock` is the same file)
//!   projects    web/simple/<dir>/ in name order (page.rs): index.v1_json, else index.html;
//!               each file checked on disk (present, regular, size; --hash: both digests),
//!               intact ones recorded, a project with a missing or damaged file queued at
//!               its serial; a batch of projects per transaction with the marker; then the
//!               pages of those queued rewritten from what was recorded (index::IndexWriter);
//!               the others keep the adopted tree's pages until the next sync rewrites them
//!               (sync/adopted.rs) before anything else
//!   orphans     web/packages/ shard by shard against the database (temporary files too),
//!               on every core; what was found damaged is noted in the database, not an orphan
//!   finish      the feed serial from bandersnatch's `status` (none: the next sync is a
//!               first run), the marker removed; the root pages written
//! ```
//!
//! Killed at any moment, the next `pymirror adopt` continues after the last batch recorded
//! (and rewrites that batch's pages); a sync refuses to start while an adoption is
//! unfinished. Memory is bounded by one batch and one directory listing.

mod page;

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{HumanBytes, MultiProgress};

use crate::config::Config;
use crate::index::{IndexWriter, ProjectView};
use crate::progress::PhaseBar;
use crate::state::{Adopted, State};
use crate::storage::{Durability, Layout, MirrorLock, Storage};
use crate::types::keys::RootChange;
use crate::types::{ProjectName, Serial};
use page::{Finding, Outside};

/// Projects per transaction (and files: whichever comes first).
const BATCH_PROJECTS: usize = 2_000;
const BATCH_FILES: usize = 20_000;
/// Project directories read at once (on every core) before they are recorded in order.
const READ_AHEAD: usize = 64;
/// `packages/<aa>/` directories walked at once for orphans.
const ORPHAN_DIRS: usize = 16;

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Also hash every file (SHA-256 against the page, BLAKE2b-256 against its path).
    pub hash: bool,
    /// Test hook: exit as if killed (code 137) once N projects are recorded.
    #[cfg(feature = "test-hooks")]
    pub exit_after: Option<u64>,
}

/// What an adoption found.
#[derive(Debug, Default)]
struct Counts {
    /// Projects recorded by this run (an adoption that continues one killed did the rest).
    projects: u64,
    missing: u64,
    damaged: u64,
    not_adopted: u64,
    orphans: u64,
    temporary: u64,
}

/// Run an adoption; the exit code (0 everything adopted, 1 something missing, damaged or not
/// adopted). An error is exit 2: it could not run.
pub fn run(
    cfg: &Config,
    options: Options,
    multi: Option<&MultiProgress>,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let started = Instant::now();
    let layout = Layout::new(&cfg.directory);
    if cfg.storage != crate::config::storage::Backend::Filesystem {
        bail!(
            "adopt takes over a tree on this filesystem (web/ under [mirror] directory), and \
             [storage] backend is \"s3\": adopt with the default backend, then copy web/ into \
             the bucket and switch the backend"
        );
    }
    if !crate::storage::layout::is_real_dir(&layout.web.join("simple")) {
        bail!(
            "{} has no web/simple/ directory, so it is not a bandersnatch mirror (nor a PEP 503 \
             tree in its layout): set [mirror] directory to the directory that holds web/ \
             (bandersnatch's `directory`)",
            layout.root.display()
        );
    }
    let had_db = layout.db.exists();
    layout.create(&cfg.storage)?;
    let _lock = MirrorLock::acquire(&layout)?;
    let mut state = State::open(&layout.db)?;
    state.bulk_writes()?;
    let marker = match state.adoption()? {
        Some(marker) => {
            if state.adopted_pages_after()?.is_none() {
                // Begun by a pymirror that wrote every batch's pages.
                state.adopted_pages_written(Some(&marker.after))?;
            }
            tracing::info!(
                "continuing the unfinished adoption{}",
                match marker.after.as_str() {
                    "" => String::new(),
                    after => format!(" after {after}"),
                }
            );
            marker
        }
        None if had_db => bail!(
            "{} already has a pymirror database (pymirror.db): this mirror is pymirror's \
             already, there is nothing to adopt; run `pymirror sync` (or set [mirror] directory \
             to the bandersnatch mirror to adopt)",
            layout.root.display()
        ),
        None => {
            state.begin_adoption()?;
            state
                .adoption()?
                .context("the adoption marker was just written")?
        }
    };
    let feed_serial = read_status(&layout)?;
    if layout.root.join("todo").exists() {
        tracing::warn!(
            "bandersnatch's `todo` is there: its last run was interrupted; what it did not \
             finish is fetched by the next sync"
        );
    }
    let storage = layout.storage(
        cfg,
        match cfg.fsync {
            true => Durability::Grouped,
            false => Durability::None,
        },
    )?;
    let mut adoption = Adoption {
        cfg,
        storage: &storage,
        state: &mut state,
        hash: options.hash,
        out,
        counts: Counts::default(),
        damaged: Vec::new(),
        #[cfg(feature = "test-hooks")]
        exit_after: options.exit_after,
    };
    adoption.projects(&marker, multi, &stop)?;
    tracing::debug!(
        "adopt: projects read in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted: what was adopted is kept; run `pymirror adopt` again to continue");
    }
    adoption.orphans(&layout.db, multi)?;
    tracing::debug!(
        "adopt: orphans walked at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    adoption.state.finish_adoption(feed_serial)?;
    // The root pages, pymirror's, from what was recorded (bandersnatch's list every
    // directory, adopted or not).
    let state = &*adoption.state;
    let rows: crate::index::Rows<'_> =
        &|each| state.for_each_project(each).map_err(std::io::Error::other);
    IndexWriter::from_config(&storage, cfg).write_root(
        rows,
        state.fully_synced_serial()?,
        RootChange::Names,
    )?;
    storage.flush()?;
    adoption.state.root_written()?;
    // What the database holds and has queued: the whole adoption's, across resumes.
    let (projects, files, bytes) = adoption.state.totals()?;
    let queued = adoption.state.pending_count()?;
    let c = &adoption.counts;
    let serial = match feed_serial {
        Some(s) => format!("feed serial {}", s.0),
        None => "no status file: the next sync compares every project".to_owned(),
    };
    let line = format!(
        "adopt complete: {projects} projects ({} by this run), {files} files ({}) adopted; {} missing, {} \
         damaged, {} not adopted, {queued} projects queued for the next sync; {} orphans, {} \
         temporary files; {serial}; {:.1}s",
        c.projects,
        HumanBytes(bytes),
        c.missing,
        c.damaged,
        c.not_adopted,
        c.orphans,
        c.temporary,
        started.elapsed().as_secs_f64()
    );
    writeln!(adoption.out, "{line}")?;
    // Something queued: found missing or damaged by this run or by the one it continues.
    Ok(match c.missing + c.damaged + c.not_adopted + queued {
        0 => 0,
        _ => 1,
    })
}

/// bandersnatch's `status`: the serial its last complete run reached. `None` without one.
fn read_status(layout: &Layout) -> anyhow::Result<Option<Serial>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&layout.status)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!(
            "cannot read {}: {e}; make it a regular file holding bandersnatch's serial (or \
             remove it: the next sync then compares every project)",
            layout.status.display()
        ),
    };
    let mut text = String::new();
    if file.metadata()?.is_file() {
        let _ = file.take(64).read_to_string(&mut text);
    }
    match text.trim().parse() {
        Ok(serial) => Ok(Some(Serial(serial))),
        Err(_) => bail!(
            "{} holds no serial ({:?}); put bandersnatch's serial there, or remove it (the \
             next sync then compares every project)",
            layout.status.display(),
            crate::types::text::shown(text.trim())
        ),
    }
}

struct Adoption<'a> {
    cfg: &'a Config,
    storage: &'a Storage,
    state: &'a mut State,
    hash: bool,
    out: &'a mut dyn Write,
    counts: Counts,
    /// Paths found damaged in the batch being read, recorded with it (so the orphan walk,
    /// even of an adoption that continues this one, does not report them again).
    damaged: Vec<String>,
    #[cfg(feature = "test-hooks")]
    exit_after: Option<u64>,
}

impl Adoption<'_> {
    /// Every project directory under `web/simple/`, in name order, after the marker.
    fn projects(
        &mut self,
        marker: &crate::state::AdoptMarker,
        multi: Option<&MultiProgress>,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let listing = self
            .storage
            .list("simple")?
            .context("web/simple/ cannot be listed")?;
        let dirs: Vec<String> = listing
            .into_iter()
            .filter(|e| e.meta.is_dir())
            .map(|e| e.name)
            .collect();
        let mut bar = PhaseBar::new(multi, "adopt", "projects", dirs.len() as u64, false);
        // Done before (the listing is sorted); the last batch's pages may not have been written.
        let start = dirs.partition_point(|d| !marker.after.is_empty() && *d <= marker.after);
        if let Some(from) = &marker.pages_from {
            for dir in dirs[..start].iter().filter(|d| *d >= from) {
                self.rewrite_stored(dir)?;
            }
        }
        let mut batch: Vec<Adopted> = Vec::new();
        let mut fetch: Vec<ProjectName> = Vec::new();
        let mut batch_files = 0;
        let mut last = marker.after.clone();
        let (storage, hash) = (self.storage, self.hash);
        for (c, chunk) in dirs[start..].chunks(READ_AHEAD).enumerate() {
            bar.set((start + c * READ_AHEAD) as u64);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // Read and checked on every core; recorded in order, so the marker stays right.
            let reads = in_order(
                chunk,
                || vec![0; 1 << 20],
                |dir, buf| page::read(storage, dir, hash, buf),
            );
            for (dir, read) in chunk.iter().zip(reads) {
                match read? {
                    Ok(read) => {
                        self.report(dir, &read.findings)?;
                        fetch.extend(read.fetch);
                        if let Some(adopted) = read.adopted {
                            self.counts.projects += 1;
                            batch_files += adopted.snapshot.files.len();
                            batch.push(adopted);
                        }
                    }
                    Err(outside) => {
                        self.commit(&mut batch, &mut fetch, &last)?;
                        return Err(refuse_outside(dir, &outside));
                    }
                }
                last.clone_from(dir);
                #[cfg(feature = "test-hooks")]
                if self.exit_after == Some(self.counts.projects) {
                    // As if killed right after the commit, before the batch's pages.
                    (self.state).record_adopted(&batch, &fetch, &self.damaged, &last)?;
                    std::process::exit(137);
                }
                if batch.len() + fetch.len() >= BATCH_PROJECTS || batch_files >= BATCH_FILES {
                    self.commit(&mut batch, &mut fetch, &last)?;
                    batch_files = 0;
                }
            }
        }
        self.commit(&mut batch, &mut fetch, &last)?;
        bar.finish();
        Ok(())
    }

    /// Record a batch (with the marker), then write the pages of its projects with a file
    /// missing or damaged from what was recorded: never a file the mirror does not hold.
    fn commit(
        &mut self,
        batch: &mut Vec<Adopted>,
        fetch: &mut Vec<ProjectName>,
        last: &str,
    ) -> anyhow::Result<()> {
        if last.is_empty() {
            return Ok(());
        }
        self.state
            .record_adopted(batch, fetch, &self.damaged, last)?;
        fetch.clear();
        self.damaged.clear();
        let index = IndexWriter::from_config(self.storage, self.cfg);
        // Only pages that would list what the mirror does not hold are rewritten now; the
        // others, right as they are, wait for the next sync (`State::adopted_pages_after`).
        for a in batch.drain(..).filter(|a| a.queue) {
            let s = &a.snapshot;
            let view = ProjectView::new(
                &s.name,
                &s.display_name,
                s.serial,
                s.status.as_ref(),
                &s.versions,
                s.files.iter().map(|f| &f.record).collect(),
            );
            index.write_project(&view)?;
        }
        Ok(())
    }

    /// The pages of a project recorded by an adoption that was killed before writing them.
    fn rewrite_stored(&mut self, dir: &str) -> anyhow::Result<()> {
        let Ok(name) = ProjectName::new(dir) else {
            return Ok(());
        };
        if let Some(stored) = self.state.stored_project(&name)? {
            IndexWriter::from_config(self.storage, self.cfg)
                .write_project(&ProjectView::of_stored(&stored))?;
        }
        Ok(())
    }

    fn report(&mut self, dir: &str, findings: &[Finding]) -> anyhow::Result<()> {
        for f in findings {
            match f {
                Finding::Missing(path) => {
                    self.counts.missing += 1;
                    writeln!(self.out, "missing {path} (project {dir})")?;
                }
                Finding::Damaged(path, why) => {
                    self.counts.damaged += 1;
                    self.damaged.push(path.clone());
                    writeln!(self.out, "damaged {path}: {why} (project {dir})")?;
                }
                Finding::NotAdopted(what) => {
                    self.counts.not_adopted += 1;
                    writeln!(self.out, "not adopted: {what}")?;
                }
            }
        }
        Ok(())
    }

    /// Files under `web/packages/` no recorded file accounts for, shard by shard: orphans,
    /// and bandersnatch's leftover temporary files (`.<name>.<8 chars>`). Reported, not
    /// deleted (`pymirror verify --delete-orphans` does that). A few `aa/` directories at a
    /// time, on every core (each thread with its own reader of the database).
    fn orphans(
        &mut self,
        db: &std::path::Path,
        multi: Option<&MultiProgress>,
    ) -> anyhow::Result<()> {
        let Some(aas) = self.storage.list("packages")? else {
            return Ok(());
        };
        let mut bar = PhaseBar::new(multi, "adopt", "shards", aas.len() as u64, false);
        let storage = self.storage;
        for (c, chunk) in aas.chunks(ORPHAN_DIRS).enumerate() {
            bar.set((c * ORPHAN_DIRS) as u64);
            let found = in_order(
                chunk,
                || State::open_reader(db),
                |aa, reader| match reader {
                    Ok(reader) => strays(storage, reader, aa),
                    Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", db.display())),
                },
            );
            let found = found.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            for stray in found.into_iter().flatten() {
                match stray {
                    Stray::Temporary(key) => {
                        self.counts.temporary += 1;
                        writeln!(self.out, "temporary {key} (bandersnatch's, left over)")?;
                    }
                    Stray::Orphan(key) => {
                        self.counts.orphans += 1;
                        writeln!(self.out, "orphan {key} (no page links it)")?;
                    }
                }
            }
        }
        bar.finish();
        Ok(())
    }
}

/// What the orphan walk finds under `web/packages/`.
enum Stray {
    Orphan(String),
    Temporary(String),
}

/// The strays of `packages/<aa>/`, in name order: per `bb` shard, one range query of what
/// was recorded (or found damaged) merged with the listing of its hash directories.
fn strays(
    storage: &Storage,
    state: &State,
    aa: &crate::storage::fs::Entry,
) -> anyhow::Result<Vec<Stray>> {
    let mut out = Vec::new();
    let aa_key = format!("packages/{}", aa.name);
    let Some(bbs) = storage.list_within("packages", aa)? else {
        out.push(Stray::Orphan(aa_key));
        return Ok(out);
    };
    for bb in &bbs {
        let shard = format!("{aa_key}/{}", bb.name);
        let Some(hashes) = storage.list_within(&aa_key, bb)? else {
            out.push(Stray::Orphan(shard));
            continue;
        };
        let (from, to) = (format!("{shard}/"), format!("{shard}0"));
        let mut known: HashSet<String> = state.paths_between(&from, &to)?.into_iter().collect();
        known.extend(state.adopt_damaged_between(&from, &to)?);
        for h in &hashes {
            let dir = format!("{shard}/{}", h.name);
            let Some(files) = storage.kinds_within(&shard, h)? else {
                out.push(Stray::Orphan(dir));
                continue;
            };
            for f in files {
                let key = format!("{dir}/{}", f.name);
                if is_temporary(&f.name) {
                    out.push(Stray::Temporary(key));
                    continue;
                }
                let file = key.strip_suffix(".metadata").unwrap_or(&key);
                if !f.meta.is_file() || !(known.contains(&key) || known.contains(file)) {
                    out.push(Stray::Orphan(key));
                }
            }
        }
    }
    Ok(out)
}

/// `f` on every item, on every core (each thread with the state `init` gives it), results in
/// the items' order.
fn in_order<T: Sync, S, R: Send>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&T, &mut S) -> R + Sync,
) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut state = init();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item, &mut state);
                    *results[i].lock().expect("result slot") = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("result slot")
                .expect("every item was done")
        })
        .collect()
}

/// bandersnatch's temporary files: `.<name>.<8 chars>` (Python's `NamedTemporaryFile`).
fn is_temporary(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    rest.rsplit_once('.').is_some_and(|(stem, suffix)| {
        !stem.is_empty()
            && suffix.len() == 8
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn refuse_outside(dir: &str, outside: &Outside) -> anyhow::Error {
    anyhow::anyhow!(
        "web/simple/{dir}/{} links outside the tree ({} such links, the first: {:?}): adopt \
         maps only links of the form ../../packages/aa/bb/<60 hex>/<file>; fix or remove that \
         page, then run `pymirror adopt` again (it continues with this project)",
        outside.page,
        outside.links.len(),
        crate::types::text::shown(&outside.links[0]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_are_bandersnatchs_pattern() {
        assert!(is_temporary(".six-1.0.tar.gz.a1b2_c3d"));
        assert!(!is_temporary("six-1.0.tar.gz"));
        assert!(!is_temporary(".six"));
        assert!(!is_temporary(".six-1.0.tar.gz.ninechars"));
        assert!(is_temporary(".six-1.0.tar.gz.metadata.abcdefgh"));
    }
}
