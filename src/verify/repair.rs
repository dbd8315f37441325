//! `--repair` and `--delete-orphans`: act on what the checks recorded, in the order a sync
//! keeps clients safe by: files first (fetched again, hash-verified, through the sync's
//! downloader), then pages, then pages of projects the mirror does not hold, then orphan
//! files. Each outcome is recorded as it happens, so a repair killed half-way resumes with
//! `--resume`. Nothing is deleted through a symlink, and nothing that is the mirror's own
//! state (the database and its journals, the lock, `status`) is deleted at all.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::config::Config;
use crate::index::{IndexWriter, ProjectView};
use crate::state::{Change, State, VERIFY_LOG};
use crate::storage::Layout;
use crate::storage::download::{Downloader, Target};
use crate::types::FileRecord;
use crate::types::StoredProject;
use crate::types::{ProjectName, Serial};
use crate::upstream::snapshot::UrlPolicy;
use crate::upstream::{ProjectFetch, Upstream};

use super::pages::{self, Doc};
use super::upstream::fetch;
use crate::types::problem::{Kind, Problem};

/// Problems taken from the database at a time.
const CHUNK: usize = 256;

const DONE: &str = "done";

pub struct Repairer<'a> {
    pub cfg: &'a Config,
    pub layout: Arc<Layout>,
    pub upstream: Arc<Upstream>,
    pub downloader: Downloader,
    pub policy: UrlPolicy,
    pub pages: &'a pages::Checker<'a>,
    pub guard: Guard,
    pub repair: bool,
    pub delete_orphans: bool,
}

/// A file to fetch again for a project.
struct Refetch {
    problem: Problem,
    file: FileRecord,
    sidecar: bool,
}

impl Repairer<'_> {
    pub async fn run(&self, state: &mut State, run: i64, stop: &AtomicBool) -> anyhow::Result<()> {
        if self.repair {
            self.files(state, run, stop).await?;
            self.pages(state, run).await?;
        }
        // Pages of projects not held before orphan files: a stray page may link them.
        self.orphans(state, run, true)?;
        self.orphans(state, run, false)?;
        if self.repair {
            self.drift(state, run)?;
        }
        Ok(())
    }

    fn index(&self) -> IndexWriter<'_> {
        IndexWriter::from_config(&self.layout, self.cfg)
    }

    async fn files(&self, state: &mut State, run: i64, stop: &AtomicBool) -> anyhow::Result<()> {
        let kinds = [Kind::Missing, Kind::BadSize, Kind::BadHash];
        let mut after: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            let chunk = state.verify_unrepaired(run, &kinds, after.as_deref(), CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.problem.path.clone());
            let mut outcomes = Vec::new();
            let mut by_project: BTreeMap<ProjectName, (String, Vec<Refetch>)> = BTreeMap::new();
            for row in chunk {
                let problem = row.problem;
                let rel = problem.path.strip_prefix("web/").unwrap_or(&problem.path);
                let (file_rel, sidecar) = match rel.strip_suffix(".metadata") {
                    Some(file) => (file, true),
                    None => (rel, false),
                };
                match state.file_owners(file_rel)?.into_iter().next() {
                    Some(owner) => by_project
                        .entry(owner.name)
                        .or_insert_with(|| (owner.display_name, Vec::new()))
                        .1
                        .push(Refetch {
                            problem,
                            file: owner.file,
                            sidecar,
                        }),
                    None => outcomes.push((
                        problem,
                        "not repaired: the database no longer references it".to_owned(),
                    )),
                }
            }
            let results: Vec<_> = futures::stream::iter(by_project)
                .map(|(name, (display, items))| async move {
                    let (outcomes, queue_at) = self.fetch_again(&name, &display, items).await;
                    (name, display, outcomes, queue_at)
                })
                .buffer_unordered(self.cfg.metadata_workers.max(1))
                .collect()
                .await;
            for (name, display, project_outcomes, queue_at) in results {
                outcomes.extend(project_outcomes);
                if let Some(serial) = queue_at {
                    let ours = state.project_serial(&name)?.unwrap_or_default();
                    requeue(state, name, display, serial.max(ours))?;
                }
            }
            state.verify_repaired(run, &outcomes)?;
        }
        Ok(())
    }

    /// Fetch a project's damaged files again, from where upstream serves them now. Returns
    /// the outcomes, and the serial to queue the project at when upstream no longer offers
    /// some of them (the next sync then drops them from the mirror).
    async fn fetch_again(
        &self,
        name: &ProjectName,
        display: &str,
        items: Vec<Refetch>,
    ) -> (Vec<(Problem, String)>, Option<Serial>) {
        let snapshot = match fetch(&self.upstream, self.cfg, &self.policy, name, display).await {
            Ok(fetched) => fetched.snapshot,
            Err(e) => {
                let why = format!("not repaired: cannot ask upstream: {e:#}");
                return (
                    items
                        .into_iter()
                        .map(|i| (i.problem, why.clone()))
                        .collect(),
                    None,
                );
            }
        };
        let offered: HashMap<&str, _> = snapshot
            .iter()
            .flat_map(|s| &s.files)
            .map(|f| (f.record.filename.as_str(), f))
            .collect();
        let mut queue_at = None;
        let mut outcomes = Vec::new();
        for item in items {
            let remote = offered
                .get(item.file.filename.as_str())
                .filter(|r| r.record.path == item.file.path && r.record.sha256 == item.file.sha256);
            let target = match (remote, item.sidecar, item.file.core_metadata) {
                (Some(remote), false, _) => Target {
                    url: remote.url.clone(),
                    relative: item.file.path.relative(),
                    size: Some(item.file.size),
                    sha256: item.file.sha256,
                    blake2b: Some(item.file.blake2b()),
                },
                (Some(remote), true, Some(sha256)) => Target {
                    url: remote.metadata_url(),
                    relative: format!("{}.metadata", item.file.path.relative()),
                    size: None,
                    sha256,
                    blake2b: None,
                },
                _ => {
                    queue_at = Some(snapshot.as_ref().map(|s| s.serial).unwrap_or_default());
                    outcomes.push((
                        item.problem,
                        "not repaired: upstream no longer offers it; queued for the next sync"
                            .to_owned(),
                    ));
                    continue;
                }
            };
            let outcome = match self.clear_obstacle(&target.relative) {
                Err(why) => format!("not repaired: {why}"),
                Ok(()) => match self.downloader.place(&target, false).await {
                    Ok(_) => DONE.to_owned(),
                    Err(e) => format!("not repaired: {e}"),
                },
            };
            outcomes.push((item.problem, outcome));
        }
        (outcomes, queue_at)
    }

    /// A directory or symlink where a file belongs: a rename cannot replace it.
    fn clear_obstacle(&self, relative: &str) -> Result<(), String> {
        let path = self.layout.web_path(relative);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => self.delete(&path, relative),
            _ => Ok(()),
        }
    }

    async fn pages(&self, state: &mut State, run: i64) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let chunk = state.verify_unrepaired(run, &[Kind::BadPage], after.as_deref(), CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.problem.path.clone());
            let mut outcomes = Vec::new();
            let mut root = Vec::new();
            let mut projects: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
            for row in chunk {
                match row.problem.project.clone() {
                    Some(name) => projects.entry(name).or_default().push(row.problem),
                    None => root.push(row.problem),
                }
            }
            if !root.is_empty() {
                let serial = state.fully_synced_serial()?;
                let outcome = match self.index().write_root(state, serial) {
                    Ok(()) => {
                        state.root_written()?;
                        DONE.to_owned()
                    }
                    Err(e) => format!("not repaired: {e}"),
                };
                outcomes.extend(root.into_iter().map(|p| (p, outcome.clone())));
            }
            for (name, problems) in projects {
                let name = ProjectName::new(&name)?;
                let outcome = match state.stored_project(&name)? {
                    None => "not repaired: the mirror no longer holds this project".to_owned(),
                    Some(stored) => match self.rewrite_project(state, &stored, &problems).await {
                        Ok(()) => DONE.to_owned(),
                        Err(e) => format!("not repaired: {e:#}"),
                    },
                };
                outcomes.extend(problems.into_iter().map(|p| (p, outcome.clone())));
            }
            state.verify_repaired(run, &outcomes)?;
        }
        Ok(())
    }

    async fn rewrite_project(
        &self,
        state: &mut State,
        stored: &StoredProject,
        problems: &[Problem],
    ) -> anyhow::Result<()> {
        let name = stored.name.as_str();
        if problems.iter().any(|p| p.path.starts_with("web/simple/")) {
            let rel = format!("simple/{name}");
            let dir = self.layout.web_path(&rel);
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
                self.delete(&dir, &rel).map_err(anyhow::Error::msg)?;
            }
            self.index()
                .write_project(&ProjectView::of_stored(stored))?;
        }
        let json_api = ["web/json/", "web/pypi/"];
        if problems
            .iter()
            .any(|p| json_api.iter().any(|t| p.path.starts_with(t)))
        {
            self.rewrite_json_api(state, stored).await?;
        }
        Ok(())
    }

    /// From whichever of the two documents is still good; when neither is, from upstream.
    async fn rewrite_json_api(
        &self,
        state: &mut State,
        stored: &StoredProject,
    ) -> anyhow::Result<()> {
        let index = self.index();
        let good = self
            .pages
            .json_api_state(stored, &index.json_api_docs(&stored.name))
            .into_iter()
            .find_map(|doc| match doc {
                Doc::Good(bytes) => serde_json::from_slice(&bytes).ok(),
                _ => None,
            });
        let source = match (stored.json_api, good) {
            (crate::types::JsonApiRecord::Absent, _) => None,
            (_, Some(doc)) => Some(doc),
            (_, None) => match self
                .upstream
                .project_json(&stored.display_name, None)
                .await?
            {
                ProjectFetch::Found { body, .. } => Some(serde_json::from_slice(&body)?),
                ProjectFetch::NotFound => None,
            },
        };
        match source {
            Some(doc) => {
                let view = ProjectView::of_stored(stored);
                let held: Vec<&FileRecord> = view.files().collect();
                let digest = index.write_json_api(&stored.name, &doc, &stored.versions, &held)?;
                state.set_json_api_digest(&stored.name, Some(&digest.to_hex()))?;
            }
            None => {
                index.remove_json_api(&stored.name)?;
                state.set_json_api_digest(&stored.name, Some(""))?;
            }
        }
        Ok(())
    }

    /// Delete orphans the flags cover: those under the index trees (`index`), or the rest.
    fn orphans(&self, state: &mut State, run: i64, index: bool) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let chunk = state.verify_unrepaired(run, &[Kind::Orphan], after.as_deref(), CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.problem.path.clone());
            let mut outcomes = Vec::new();
            for row in chunk {
                let p = row.problem;
                if p.in_index() != index || p.fix(self.repair, self.delete_orphans).is_none() {
                    continue;
                }
                let outcome = match self.delete_orphan(&p.path) {
                    Ok(()) => DONE.to_owned(),
                    Err(why) => format!("not deleted: {why}"),
                };
                outcomes.push((p, outcome));
            }
            state.verify_repaired(run, &outcomes)?;
        }
        Ok(())
    }

    /// `rel` is relative to the mirror directory (`web/…` or `tmp/…`).
    fn delete_orphan(&self, rel: &str) -> Result<(), String> {
        if rel.contains(char::REPLACEMENT_CHARACTER) {
            // Shown lossily: this is not the name on disk.
            return Err("its name is not UTF-8; delete it by hand".into());
        }
        let trimmed = rel.trim_end_matches('/');
        if let Some(name) = trimmed.strip_prefix("tmp/") {
            if !super::packages::is_real_dir(&self.layout.tmp) || name.contains('/') {
                return Err(format!("{} is not a directory", self.layout.tmp.display()));
            }
            return self.delete(&self.layout.tmp.join(name), "");
        }
        let Some(web_rel) = trimmed.strip_prefix("web/") else {
            return Err("not under web/ or tmp/".into());
        };
        self.delete(&self.layout.web_path(web_rel), web_rel)?;
        // Directories a deleted file leaves empty under packages/ go too (up to the shard).
        if web_rel.starts_with("packages/") {
            let mut dir = Path::new(web_rel).parent();
            while let Some(d) = dir.filter(|d| d.components().count() > 3) {
                if std::fs::remove_dir(self.layout.web.join(d)).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        Ok(())
    }

    /// Delete a file or directory tree, unless it is (or holds) the mirror's own state or a
    /// directory on its way under `web/` (`web_rel`, when not empty) is a symlink.
    fn delete(&self, path: &Path, web_rel: &str) -> Result<(), String> {
        if !web_rel.is_empty() && self.layout.through_symlink(web_rel) {
            return Err("a directory on its way is a symlink".into());
        }
        self.guard.check(path)?;
        let result = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
        };
        result.map_err(|e| format!("cannot delete {}: {e}", path.display()))
    }

    fn drift(&self, state: &mut State, run: i64) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let chunk = state.verify_unrepaired(run, &[Kind::Drift], after.as_deref(), CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.problem.path.clone());
            let mut outcomes = Vec::new();
            for row in chunk {
                let p = row.problem;
                let Some(name) = p.project.as_deref().and_then(|n| ProjectName::new(n).ok()) else {
                    continue;
                };
                let ours = state.project_serial(&name)?.unwrap_or_default();
                let serial = p.serial.map(Serial).unwrap_or_default().max(ours);
                // The JSON API redirects a normalized name to the project's own spelling.
                let display = match state.stored_project(&name)? {
                    Some(stored) => stored.display_name,
                    None => name.to_string(),
                };
                requeue(state, name, display, serial)?;
                outcomes.push((p, DONE.to_owned()));
            }
            state.verify_repaired(run, &outcomes)?;
        }
        Ok(())
    }
}

/// Queue a project for the next sync, at least at `serial`, whatever serial it is mirrored at.
fn requeue(
    state: &mut State,
    name: ProjectName,
    display_name: String,
    serial: Serial,
) -> anyhow::Result<()> {
    state.requeue(&[Change {
        name,
        display_name,
        serial,
        first_serial: serial,
    }])?;
    Ok(())
}

/// The mirror's own state, which no orphan deletion may touch: the database, verify's log
/// (`verify.db`) and their journals, the lock and `status`, however they are reached (a hard
/// link, a symlinked directory on the way).
pub struct Guard {
    protected: Vec<(u64, u64, PathBuf)>,
}

impl Guard {
    pub fn new(layout: &Layout) -> Guard {
        let db = layout.db.display().to_string();
        let log = layout.root.join(VERIFY_LOG).display().to_string();
        let protected = [
            layout.db.clone(),
            PathBuf::from(format!("{db}-wal")),
            PathBuf::from(format!("{db}-shm")),
            PathBuf::from(format!("{db}-journal")),
            PathBuf::from(&log),
            PathBuf::from(format!("{log}-wal")),
            PathBuf::from(format!("{log}-shm")),
            PathBuf::from(format!("{log}-journal")),
            layout.lock.clone(),
            layout.status.clone(),
        ]
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(&p).ok()?;
            let canonical = std::fs::canonicalize(&p).unwrap_or(p);
            Some((m.dev(), m.ino(), canonical))
        })
        .collect();
        Guard { protected }
    }

    pub fn check(&self, path: &Path) -> Result<(), String> {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if let Some((.., own)) = self
            .protected
            .iter()
            .find(|(dev, ino, _)| (*dev, *ino) == (m.dev(), m.ino()))
        {
            return Err(format!(
                "refused: it is {}, the mirror's own state",
                own.display()
            ));
        }
        if m.is_dir() {
            let canonical = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
            if let Some((.., own)) = self
                .protected
                .iter()
                .find(|(.., p)| p.starts_with(&canonical))
            {
                return Err(format!(
                    "refused: it holds {}, the mirror's own state",
                    own.display()
                ));
            }
        }
        Ok(())
    }
}
