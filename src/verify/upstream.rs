//! `--upstream`: each project's serial and files compared with upstream's, as politely as a
//! sync asks (at most `metadata_workers` requests at a time, `metadata_rate` per second,
//! retries with backoff honouring `Retry-After`), plus the projects upstream lists that the
//! mirror does not hold. Drift is reported; `--repair` queues the project for the next sync.
//!
//! The same one look at upstream gives `--repair` the URLs of files to fetch again (the
//! database does not keep URLs: 30 million of them would add gigabytes, and the file host a
//! URL names may have moved since).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::index::ProjectView;
use crate::sync::fetch::{Asked, Fetched as Look, ask, validate};
use crate::types::{ProjectName, Serial};
use crate::types::{ProjectSnapshot, StoredProject};
use crate::upstream::feed::Feed;
use crate::upstream::snapshot::UrlPolicy;
use crate::upstream::{ProjectFetch, Upstream};

use crate::types::problem::{Kind, Problem};

/// What upstream says about a project now, through the mirror's filters.
pub struct Fetched {
    /// What a sync would hold of it now: `None` when upstream has no such project (404
    /// from every source asked) or the filters leave it out.
    pub snapshot: Option<ProjectSnapshot>,
    /// Why the filters leave the whole project out.
    pub left_out: Option<String>,
    /// The JSON API answer as served, for rewriting the JSON API mirror's documents.
    pub json_body: Option<Vec<u8>>,
    /// Upstream's answers carried a serial (an index without serials is compared by files
    /// alone).
    pub serial_known: bool,
}

/// One look at upstream for a project, through the same sources, validation and filters as
/// a sync ([`ask`], [`validate`]), at the older of the two answers' serials. Stale answers are not retried: verify compares, it records nothing.
pub async fn fetch(
    upstream: &Upstream,
    cfg: &Config,
    policy: &UrlPolicy,
    name: &ProjectName,
    display_name: &str,
) -> anyhow::Result<Fetched> {
    let asked = ask(cfg, upstream, name, display_name, None, None).await?;
    let json_body = match &asked {
        Asked::Answers {
            json: Some(ProjectFetch::Found { body, .. }),
            ..
        } => Some(body.clone()),
        _ => None,
    };
    let answered = asked.serial();
    let serial_known = answered.is_some();
    let serial = answered.unwrap_or_default();
    let mut snapshot = match validate(cfg, policy, name, display_name, asked, serial)? {
        Look::Found(snapshot, _) => snapshot,
        Look::Gone | Look::Unchanged => {
            return Ok(Fetched {
                snapshot: None,
                left_out: None,
                json_body: None,
                serial_known,
            });
        }
    };
    Ok(match cfg.filters.apply(&mut snapshot) {
        Ok(()) => Fetched {
            snapshot: Some(snapshot),
            left_out: None,
            json_body,
            serial_known,
        },
        Err(why) => Fetched {
            snapshot: None,
            left_out: Some(why),
            json_body: None,
            serial_known,
        },
    })
}

/// How the mirror's record of a project differs from what upstream and the filters say it
/// should be, if it does.
pub fn drift(stored: &StoredProject, upstream: &Fetched) -> Option<Problem> {
    let name = stored.name.as_str();
    let problem = |detail: String, serial: Option<Serial>| {
        let mut p =
            Problem::new(Kind::Drift, format!("web/simple/{name}/"), detail).of_project(name);
        p.serial = serial.map(|s| s.0);
        Some(p)
    };
    if let Some(why) = &upstream.left_out {
        return problem(format!("the filters leave this project out: {why}"), None);
    }
    let Some(snap) = &upstream.snapshot else {
        return problem("upstream no longer has this project".into(), None);
    };
    if upstream.serial_known && snap.serial > stored.serial {
        return problem(
            format!(
                "the mirror has serial {}, upstream {}",
                stored.serial, snap.serial
            ),
            Some(snap.serial),
        );
    }
    if upstream.serial_known && snap.serial < stored.serial {
        // A stale CDN answer tells nothing about drift.
        tracing::debug!(
            "{name}: upstream answered serial {} below the mirror's {}",
            snap.serial,
            stored.serial
        );
        return None;
    }
    let ours: BTreeMap<&str, String> = ProjectView::of_stored(stored)
        .files()
        .map(|f| (f.filename.as_str(), f.sha256.to_hex()))
        .collect();
    let theirs: BTreeMap<&str, String> = snap
        .files
        .iter()
        .map(|f| (f.record.filename.as_str(), f.record.sha256.to_hex()))
        .collect();
    let not_here: Vec<&str> = theirs
        .iter()
        .filter(|(f, h)| ours.get(*f) != Some(*h))
        .map(|(f, _)| *f)
        .collect();
    let not_there: Vec<&str> = ours
        .keys()
        .filter(|f| !theirs.contains_key(*f))
        .copied()
        .collect();
    let status = |s: Option<&crate::types::ProjectStatus>| s.map(|s| s.status.clone());
    let mut why = Vec::new();
    if !not_here.is_empty() {
        why.push(format!(
            "upstream has {} the mirror does not",
            listed(&not_here)
        ));
    }
    if !not_there.is_empty() {
        why.push(format!(
            "the mirror has {} upstream does not",
            listed(&not_there)
        ));
    }
    if status(stored.status.as_ref()) != status(snap.status.as_ref()) {
        why.push(format!(
            "project status is {:?} upstream, {:?} here",
            status(snap.status.as_ref()).unwrap_or_else(|| "active".into()),
            status(stored.status.as_ref()).unwrap_or_else(|| "active".into())
        ));
    }
    if why.is_empty() {
        return None;
    }
    problem(
        format!("at serial {}: {}", stored.serial, why.join("; ")),
        Some(snap.serial),
    )
}

/// At most a few names, then how many more.
fn listed(names: &[&str]) -> String {
    const SHOWN: usize = 3;
    let mut s = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Every project upstream lists, with its serial (through the configured change feed).
pub async fn listing(upstream: &Upstream, cfg: &Config) -> anyhow::Result<Vec<(String, Serial)>> {
    Feed::new(upstream, cfg.change_feed).listing().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::JsonApiRecord;
    use crate::types::{FileRecord, RemoteFile};

    fn record(filename: &str, byte: u8) -> FileRecord {
        FileRecord::for_test("1.0", filename, &format!("{byte:02x}").repeat(32), 1)
    }

    fn stored(serial: u64, files: Vec<FileRecord>) -> StoredProject {
        StoredProject {
            name: ProjectName::new("demo").unwrap(),
            display_name: "demo".into(),
            serial: Serial(serial),
            status: None,
            versions: vec!["1.0".into()],
            files,
            json_api: JsonApiRecord::Unknown,
        }
    }

    fn snap(serial: u64, files: Vec<FileRecord>) -> Fetched {
        let snapshot = ProjectSnapshot {
            name: ProjectName::new("demo").unwrap(),
            display_name: "demo".into(),
            serial: Serial(serial),
            versions: vec!["1.0".into()],
            files: files
                .into_iter()
                .map(|record| RemoteFile::known(record, "https://files.invalid/x".parse().unwrap()))
                .collect(),
            status: None,
            refused: Vec::new(),
            validators: None,
            held_back: Vec::new(),
        };
        Fetched {
            snapshot: Some(snapshot),
            left_out: None,
            json_body: None,
            serial_known: true,
        }
    }

    #[test]
    fn drift_is_a_newer_serial_or_other_files_at_the_same_serial() {
        let a = || record("demo-1.0.tar.gz", 1);
        let b = || record("demo-1.0-py3-none-any.whl", 2);
        assert_eq!(drift(&stored(5, vec![a()]), &snap(5, vec![a()])), None);
        assert_eq!(
            drift(&stored(5, vec![a()]), &snap(4, vec![])),
            None,
            "stale"
        );
        let newer = drift(&stored(5, vec![a()]), &snap(7, vec![a()])).unwrap();
        assert_eq!(newer.detail, "the mirror has serial 5, upstream 7");
        assert_eq!(newer.serial, Some(7));
        let files = drift(&stored(5, vec![a()]), &snap(5, vec![b()])).unwrap();
        assert_eq!(
            files.detail,
            "at serial 5: upstream has demo-1.0-py3-none-any.whl the mirror does not; \
             the mirror has demo-1.0.tar.gz upstream does not"
        );
        let changed = drift(
            &stored(5, vec![a()]),
            &snap(5, vec![record("demo-1.0.tar.gz", 3)]),
        )
        .unwrap();
        assert_eq!(
            changed.detail,
            "at serial 5: upstream has demo-1.0.tar.gz the mirror does not"
        );
        let none = Fetched {
            snapshot: None,
            left_out: None,
            json_body: None,
            serial_known: true,
        };
        let gone = drift(&stored(5, vec![a()]), &none).unwrap();
        assert_eq!(gone.path, "web/simple/demo/");
        assert_eq!(gone.detail, "upstream no longer has this project");
        let left_out = Fetched {
            left_out: Some("it is in the blocklist".into()),
            ..none
        };
        assert_eq!(
            drift(&stored(5, vec![a()]), &left_out).unwrap().detail,
            "the filters leave this project out: it is in the blocklist"
        );
    }
}
