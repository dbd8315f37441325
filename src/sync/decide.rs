//! Decide: the one per-project decision, from what upstream offers now (through the filters)
//! and what the mirror holds. The sync applies it, and `sync --dry-run` prints it. Whether a
//! held file is the one offered is [`crate::types::RemoteFile::is_held_as`]: then it is in place already,
//! no request, no re-hash.
//!
//! - **remove** the project: upstream no longer has it, or the filters leave it out;
//! - otherwise **download** each file (and PEP 658 sidecar) not held as it is offered,
//!   **keep** the rest without a request or a re-hash, and **delete** the held files the
//!   project no longer lists.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::Semaphore;

use super::fetch::{self, Fetched};
use crate::config::Config;
use crate::filter::Filters;
use crate::state::Todo;
use crate::storage::download::Target;
use crate::types::{FileRecord, HeldFile, PageValidators, ProjectSnapshot, Serial};
use crate::upstream::Upstream;
use crate::upstream::snapshot::UrlPolicy;

/// Why a project leaves the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Upstream answered 404: removed behind the mass-delete guard, with its queue entry.
    Gone,
    /// The filters leave it out (`why`): not guarded again, a filter change is guarded
    /// before it is applied. Its queue entry goes up to `serial` (the answer's; left out by
    /// name, before any answer: every entry). `held_back`: every file it offers is in its
    /// cooldown, and the mirror holds none of it; it is looked at again when one comes of age.
    Excluded {
        why: String,
        serial: Serial,
        held_back: Vec<HeldFile>,
    },
}

/// One file (or sidecar) to put in place.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Index of its file in the snapshot.
    pub file: usize,
    pub sidecar: bool,
    pub target: Target,
}

#[derive(Debug)]
// One at a time per project, moved, never stored in bulk: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    Keep {
        snapshot: ProjectSnapshot,
        download: Vec<Placement>,
        /// Held files the project no longer lists (or lists with other content).
        delete: Vec<FileRecord>,
    },
    /// Remove the project.
    Remove(Removal),
    /// Queued conditionally, and upstream's page is as mirrored: nothing to do.
    Unchanged,
}

impl Decision {
    /// Whether applying it leaves a project the mirror holds files of without any file:
    /// upstream still lists the project but no file of it. Guarded like a removal (an answer
    /// such as `{"releases": {"1.0": []}}` must not empty a mirror).
    pub fn empties(&self) -> bool {
        matches!(self, Decision::Keep { snapshot, delete, .. }
            if snapshot.files.is_empty() && !delete.is_empty())
    }
}

/// Look at a queued project: left out by name (no request), or fetched and decided against
/// `held` (the files the mirror holds of it, read only when upstream answered). With
/// `json = true`, also upstream's JSON API document. `announced`: the change feed's serial
/// (no answer is recorded beyond it). `known`: for a conditional entry, what the project's
/// page was when last mirrored.
#[allow(clippy::too_many_arguments)]
pub async fn look(
    cfg: &Config,
    upstream: &Upstream,
    permits: &Semaphore,
    policy: &UrlPolicy,
    todo: &Todo,
    announced: Serial,
    known: Option<&PageValidators>,
    held: impl Future<Output = anyhow::Result<Vec<FileRecord>>>,
) -> anyhow::Result<(Decision, Option<serde_json::Value>)> {
    if let Some(decision) = by_name(&cfg.filters, todo) {
        return Ok((decision, None));
    }
    let (mut snapshot, json) =
        match fetch::fetch_fresh(cfg, upstream, permits, policy, todo, announced, known).await? {
            Fetched::Gone => return Ok((decide(&cfg.filters, None, Vec::new()), None)),
            Fetched::Unchanged => return Ok((Decision::Unchanged, None)),
            Fetched::Found(snapshot, json) => (snapshot, json),
        };
    for file in cfg.filters.check_locked(&mut snapshot) {
        tracing::warn!(
            "{}: a lock file names {file}, which upstream does not list",
            snapshot.name
        );
    }
    for why in &snapshot.refused {
        tracing::warn!("{}", crate::types::text::shown(why));
    }
    let held = held.await?;
    Ok((decide(&cfg.filters, Some(snapshot), held), json))
}

/// Left out by name: decided before any request.
fn by_name(filters: &Filters, todo: &Todo) -> Option<Decision> {
    filters.allows_project(&todo.name).err().map(|why| {
        Decision::Remove(Removal::Excluded {
            why,
            serial: Serial(u64::MAX),
            held_back: Vec::new(),
        })
    })
}

/// The decision for a project upstream answered for (`None`: 404), given the files the mirror
/// holds of it. The snapshot's refused entries are logged by the caller before.
pub fn decide(
    filters: &Filters,
    fetched: Option<ProjectSnapshot>,
    held: Vec<FileRecord>,
) -> Decision {
    let Some(mut snapshot) = fetched else {
        return Decision::Remove(Removal::Gone);
    };
    // Before anything is downloaded: what the filters leave out is never fetched, recorded
    // or listed.
    if let Err(why) = filters.apply(&mut snapshot) {
        return Decision::Remove(Removal::Excluded {
            why,
            serial: snapshot.serial,
            held_back: Vec::new(),
        });
    }
    // A project new to the mirror whose files are all in their cooldown is not listed yet,
    // not even in the root: it has nothing to offer.
    if snapshot.files.is_empty() && !snapshot.held_back.is_empty() && held.is_empty() {
        return Decision::Remove(Removal::Excluded {
            why: format!(
                "each of its {} files is younger than the cooldown",
                snapshot.held_back.len()
            ),
            serial: snapshot.serial,
            held_back: snapshot.held_back,
        });
    }
    let mut held: HashMap<_, FileRecord> =
        held.into_iter().map(|f| (f.filename.clone(), f)).collect();
    let mut download = Vec::new();
    let mut kept_paths = Vec::new();
    for (i, f) in snapshot.files.iter_mut().enumerate() {
        let old = held.get(&f.record.filename);
        let same = old.is_some_and(|o| f.is_held_as(o));
        if let Some(o) = old.filter(|_| same) {
            // What upstream left out (size, path, core metadata) is what the mirror holds.
            f.learn(o.size, o.blake2b());
            f.learn_core_metadata(o.core_metadata);
        }
        let same_sidecar = same && old.is_some_and(|o| o.core_metadata == f.record.core_metadata);
        if !same {
            download.push(Placement {
                file: i,
                sidecar: false,
                target: Target::file(f),
            });
        }
        if let Some(target) = Target::sidecar(f).filter(|_| !same_sidecar) {
            download.push(Placement {
                file: i,
                sidecar: true,
                target,
            });
        }
        if old.is_some_and(|o| o.path == f.record.path && !f.unknown.blake2b) {
            kept_paths.push(f.record.filename.clone());
        }
    }
    for name in kept_paths {
        held.remove(&name);
    }
    let mut delete: Vec<FileRecord> = held.into_values().collect();
    delete.sort_by(|a, b| a.filename.cmp(&b.filename));
    Decision::Keep {
        snapshot,
        download,
        delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RemoteFile;

    fn record(filename: &str, byte: u8) -> FileRecord {
        FileRecord::for_test("1.0", filename, &format!("{byte:02x}").repeat(32), 10)
    }

    fn snapshot(files: Vec<FileRecord>) -> ProjectSnapshot {
        let files = files
            .into_iter()
            .map(|record| {
                let url = format!("https://files.example/{}", record.path.relative());
                RemoteFile::known(record, url.parse().unwrap())
            })
            .collect();
        ProjectSnapshot::for_test("demo", 7, files)
    }

    #[test]
    fn downloads_what_is_new_keeps_what_is_held_and_deletes_the_rest() {
        let (a, b, c) = (
            record("demo-1.0.tar.gz", 1),
            record("demo-1.0-py3-none-any.whl", 2),
            record("demo-0.9.tar.gz", 3),
        );
        let changed = record("demo-1.0-py3-none-any.whl", 4);
        let Decision::Keep {
            download, delete, ..
        } = decide(
            &Filters::default(),
            Some(snapshot(vec![a.clone(), changed.clone()])),
            vec![a, b.clone(), c.clone()],
        )
        else {
            panic!("kept");
        };
        let names: Vec<&str> = download
            .iter()
            .filter_map(|p| p.target.key.known())
            .collect();
        assert_eq!(names, [changed.path.relative()]);
        assert_eq!(delete, [c, b]);
    }

    #[test]
    fn a_project_left_without_files_is_an_emptying() {
        let held = record("demo-1.0.tar.gz", 1);
        let emptied = decide(
            &Filters::default(),
            Some(snapshot(vec![])),
            vec![held.clone()],
        );
        assert!(emptied.empties());
        let kept = decide(
            &Filters::default(),
            Some(snapshot(vec![held.clone()])),
            vec![held],
        );
        assert!(!kept.empties());
        let new = decide(&Filters::default(), Some(snapshot(vec![])), vec![]);
        assert!(!new.empties());
    }

    #[test]
    fn upstream_without_the_project_removes_it() {
        assert!(matches!(
            decide(&Filters::default(), None, vec![]),
            Decision::Remove(Removal::Gone)
        ));
    }

    #[test]
    fn a_new_project_with_only_young_files_is_not_listed_a_held_one_is_emptied_behind_the_guard() {
        let young = record("demo-1.0.tar.gz", 1);
        let filters = {
            let table: toml::Table = "[filters]\ncooldown = \"1h\"".parse().unwrap();
            crate::config::filters::parse(table.get("filters"), std::path::Path::new("/"))
                .unwrap()
                .at(7200)
        };
        let fresh = || {
            snapshot(vec![FileRecord {
                upload_time: Some("1970-01-01T01:30:00Z".into()),
                ..young.clone()
            }])
        };
        let Decision::Remove(Removal::Excluded { held_back, .. }) =
            decide(&filters, Some(fresh()), vec![])
        else {
            panic!("a new project with only young files is left out");
        };
        assert_eq!(held_back.len(), 1);
        assert_eq!(held_back[0].matures_at, 9000);
        // Held already (the cooldown grew): kept, emptied, which the guard weighs.
        let held = decide(&filters, Some(fresh()), vec![young.clone()]);
        assert!(held.empties());
        let Decision::Keep { snapshot, .. } = held else {
            panic!("kept");
        };
        assert_eq!(snapshot.held_back.len(), 1);
        assert!(snapshot.versions.is_empty(), "its one release is all young");
    }
}
