//! `--repair` and `--delete-orphans`: act on what the checks recorded, in the order a sync
//! keeps clients safe by: files first (fetched again, hash-verified, through the sync's
//! downloader), then pages, then pages of projects the mirror does not hold, then orphan
//! files. Each outcome is recorded as it happens, so a repair killed half-way resumes with
//! `--resume`. Nothing is deleted through a symlink, and nothing that is the mirror's own
//! state (the database and its journals, the lock, `status`) is deleted at all.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::config::Config;
use crate::index::{IndexWriter, ProjectView};
use crate::state::{Change, State};
use crate::storage::download::{Downloader, Key, Target};
use crate::storage::layout::{Protected, is_real_dir};
use crate::storage::{Layout, Storage};
use crate::types::FileRecord;
use crate::types::StoredProject;
use crate::types::keys::{self, RootChange};
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
    pub storage: Arc<Storage>,
    pub upstream: Arc<Upstream>,
    pub downloader: Downloader,
    pub policy: UrlPolicy,
    pub pages: &'a pages::Checker<'a>,
    pub guard: Protected,
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
        IndexWriter::from_config(&self.storage, self.cfg)
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
                .filter(|r| r.is_held_as(&item.file));
            let key = match item.sidecar {
                true => format!("{}.metadata", item.file.path.relative()),
                false => item.file.path.relative(),
            };
            let target = match (remote, item.sidecar, item.file.core_metadata) {
                (Some(remote), false, _) => Target {
                    url: remote.url.clone(),
                    key: Key::At(key.clone()),
                    size: Some(item.file.size),
                    sha256: item.file.sha256,
                    blake2b: Some(item.file.blake2b()),
                    from_wheel: None,
                },
                (Some(remote), true, Some(sha256)) => Target {
                    url: remote.metadata_url(),
                    key: Key::At(key.clone()),
                    size: None,
                    sha256,
                    blake2b: None,
                    // The wheel, when it is intact, holds the same bytes.
                    from_wheel: item
                        .file
                        .filename
                        .as_str()
                        .ends_with(".whl")
                        .then(|| item.file.path.relative()),
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
            let outcome = match self.clear_obstacle(&key) {
                Err(why) => format!("not repaired: {why}"),
                Ok(()) => match self.downloader.place(&target, false, None).await {
                    Ok(_) => DONE.to_owned(),
                    Err(e) => format!("not repaired: {e}"),
                },
            };
            outcomes.push((item.problem, outcome));
        }
        (outcomes, queue_at)
    }

    /// A directory or symlink where a file belongs: a rename cannot replace it.
    fn clear_obstacle(&self, key: &str) -> Result<(), String> {
        match self.storage.stat(key) {
            Ok(Some(m)) if !m.is_file() => self.delete(key),
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
                let rows: crate::index::Rows<'_> =
                    &|each| state.for_each_project(each).map_err(std::io::Error::other);
                let written = self.index().write_root(rows, serial, RootChange::Names);
                let outcome = match written {
                    Ok(_) => {
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
        if problems.iter().any(|p| p.path.starts_with("web/simple/")) {
            let dir = keys::project_dir(&stored.name);
            if self.storage.stat(&dir)?.is_some_and(|m| !m.is_dir()) {
                self.delete(dir.trim_end_matches('/'))
                    .map_err(anyhow::Error::msg)?;
            }
            self.index()
                .write_project(&ProjectView::of_stored(stored))?;
        }
        if problems.iter().any(|p| {
            keys::JSON_API_TREES.iter().any(|t| {
                p.path
                    .strip_prefix("web/")
                    .is_some_and(|k| k.starts_with(t))
            })
        }) {
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
            if !is_real_dir(&self.layout.tmp) || name.contains('/') {
                return Err(format!("{} is not a directory", self.layout.tmp.display()));
            }
            let path = self.layout.tmp.join(name);
            self.guard.check(&path)?;
            let result = match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => Err(e),
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
            };
            return result.map_err(|e| format!("cannot delete {}: {e}", path.display()));
        }
        let Some(key) = trimmed.strip_prefix("web/") else {
            return Err("not under web/ or tmp/".into());
        };
        self.delete(key)?;
        // Directories a deleted file leaves empty under packages/ go too (up to the shard).
        if key.starts_with("packages/") {
            let mut dir = Path::new(key).parent();
            while let Some(d) = dir.filter(|d| d.components().count() > 3) {
                if !self.storage.remove_empty_dir(&d.to_string_lossy()) {
                    break;
                }
                dir = d.parent();
            }
        }
        Ok(())
    }

    /// Delete the object or directory tree at `key`, unless it is (or holds) the mirror's
    /// own state or a directory on its way is a symlink.
    fn delete(&self, key: &str) -> Result<(), String> {
        let dir = self
            .storage
            .stat(key)
            .ok()
            .flatten()
            .is_some_and(|m| m.is_dir());
        let key = match dir {
            true => format!("{}/", key.trim_end_matches('/')),
            false => key.trim_end_matches('/').to_owned(),
        };
        self.storage
            .delete_unless(&key, &self.guard)
            .map_err(|e| e.to_string())
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
        conditional: false,
    }])?;
    Ok(())
}
