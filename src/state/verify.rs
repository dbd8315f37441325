//! What `pymirror verify` reads and records: the files of one shard of `web/packages/`, a
//! project as its pages show it, and the verify's own checkpoint and findings (so a verify
//! killed half-way resumes, and its report still lists what it found before).

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::{Result, State, StateError};
use crate::types::problem::{Kind, Problem};
use crate::types::{
    FileRecord, JsonApiRecord, ProjectName, ProjectStatus, Serial, Sha256, StoredProject,
};

/// A file (or PEP 658 sidecar) the database says is at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    /// Relative to `web/`.
    pub path: String,
    /// `None` for sidecars: the metadata gives only their hash.
    pub size: Option<u64>,
    pub sha256: String,
    /// `None` for sidecars.
    pub blake2b: Option<String>,
}

/// A project referencing a file path, with the file's record.
#[derive(Debug, Clone)]
pub struct FileOwner {
    pub name: ProjectName,
    pub display_name: String,
    pub file: FileRecord,
}

/// Work counted by a verify (all of it, across resumed runs, or this process's share).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VerifyCounts {
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub pages_checked: u64,
    pub projects_compared: u64,
    /// Units that could not be checked (an unreadable directory, an upstream error).
    pub unchecked: u64,
}

impl std::ops::AddAssign for VerifyCounts {
    fn add_assign(&mut self, o: VerifyCounts) {
        self.files_checked += o.files_checked;
        self.bytes_checked += o.bytes_checked;
        self.pages_checked += o.pages_checked;
        self.projects_compared += o.projects_compared;
        self.unchecked += o.unchecked;
    }
}

#[derive(Debug, Clone)]
pub struct VerifyRun {
    pub id: i64,
    /// Totals recorded so far (non-zero when resumed).
    pub counts: VerifyCounts,
    pub resumed: bool,
}

pub enum VerifyBegin {
    Run(VerifyRun),
    /// `--resume`, but the interrupted verify asked for other checks.
    Mismatch {
        checks: String,
    },
}

/// A recorded problem and what became of its repair.
#[derive(Debug, Clone)]
pub struct ProblemRow {
    pub problem: Problem,
    /// `None`: not attempted; `Some("done")`; else why it failed.
    pub repair: Option<String>,
}

impl State {
    /// The files and sidecars with `from <= path < to` (a range of `packages/aa/bb/`
    /// shards: one index range scan), sorted by path, each once.
    pub fn files_between(&self, from: &str, to: &str) -> Result<Vec<ExpectedFile>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT path, size, sha256, blake2b_256, core_metadata_sha256 FROM files
             WHERE path >= ?1 AND path < ?2",
        )?;
        let mut rows = stmt.query([from, to])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let path: String = r.get(0)?;
            if let Some(sidecar) = r.get::<_, Option<String>>(4)? {
                out.push(ExpectedFile {
                    path: format!("{path}.metadata"),
                    size: None,
                    sha256: sidecar,
                    blake2b: None,
                });
            }
            out.push(ExpectedFile {
                path,
                size: Some(r.get::<_, i64>(1)? as u64),
                sha256: r.get(2)?,
                blake2b: Some(r.get(3)?),
            });
        }
        // A sidecar sorts after its file but not always right after it; two projects may
        // reference the same file.
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    /// Whether a sync placed this file for a project it has not recorded yet.
    pub fn is_staged(&self, path: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM staged WHERE path = ?1")?
            .query_row([path], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn holds_project(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM projects WHERE name = ?1")?
            .query_row([name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn stored_project(&self, name: &ProjectName) -> Result<Option<StoredProject>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, display_name, serial, status, status_reason, json_api_sha256
                 FROM projects WHERE name = ?1",
            )?
            .query_row([name.as_str()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .optional()?;
        let Some((id, display_name, serial, status, reason, json_api)) = row else {
            return Ok(None);
        };
        let versions = self
            .conn
            .prepare_cached("SELECT version FROM releases WHERE project_id = ?1 ORDER BY version")?
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let json_api = match json_api.as_deref() {
            None => JsonApiRecord::Unknown,
            Some("") => JsonApiRecord::Absent,
            Some(hex) => JsonApiRecord::Written(
                Sha256::from_hex(hex)
                    .map_err(|e| StateError::InvalidRow(format!("{name}: json_api_sha256: {e}")))?,
            ),
        };
        Ok(Some(StoredProject {
            files: self.project_files(name)?,
            name: name.clone(),
            display_name,
            serial: Serial::from_db(serial),
            status: status.map(|status| ProjectStatus { status, reason }),
            versions,
            json_api,
        }))
    }

    /// The projects whose files include `path` (relative to `web/`).
    pub fn file_owners(&self, path: &str) -> Result<Vec<FileOwner>> {
        let names: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT p.name, p.display_name FROM files f JOIN projects p ON p.id = f.project_id
                 WHERE f.path = ?1 ORDER BY p.name",
            )?
            .query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for (name, display_name) in names {
            let name =
                ProjectName::new(&name).map_err(|e| StateError::InvalidRow(e.to_string()))?;
            let file = self
                .project_files(&name)?
                .into_iter()
                .find(|f| f.path.relative() == path);
            if let Some(file) = file {
                out.push(FileOwner {
                    name,
                    display_name,
                    file,
                });
            }
        }
        Ok(out)
    }

    /// Start a verify, or with `resume` continue the last one that did not finish (when it
    /// asked for the same `checks`). Starting one forgets the previous verify.
    pub fn verify_begin(&mut self, checks: &str, resume: bool) -> Result<VerifyBegin> {
        if resume {
            let last = self
                .conn
                .query_row(
                    "SELECT id, checks, files_checked, bytes_checked, pages_checked,
                            projects_compared, unchecked
                     FROM verify_runs WHERE finished_at IS NULL ORDER BY id DESC LIMIT 1",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            VerifyCounts {
                                files_checked: r.get::<_, i64>(2)? as u64,
                                bytes_checked: r.get::<_, i64>(3)? as u64,
                                pages_checked: r.get::<_, i64>(4)? as u64,
                                projects_compared: r.get::<_, i64>(5)? as u64,
                                unchecked: r.get::<_, i64>(6)? as u64,
                            },
                        ))
                    },
                )
                .optional()?;
            match last {
                Some((id, found, counts)) if found == checks => {
                    return Ok(VerifyBegin::Run(VerifyRun {
                        id,
                        counts,
                        resumed: true,
                    }));
                }
                Some((_, found, _)) => return Ok(VerifyBegin::Mismatch { checks: found }),
                None => {}
            }
        }
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM verify_runs", [])?;
        tx.execute(
            "INSERT INTO verify_runs (started_at, checks) VALUES (unixepoch(), ?1)",
            [checks],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(VerifyBegin::Run(VerifyRun {
            id,
            counts: VerifyCounts::default(),
            resumed: false,
        }))
    }

    /// How far `phase` got: (last unit done, whole phase done).
    pub fn verify_phase(&self, run: i64, phase: &str) -> Result<(Option<String>, bool)> {
        Ok(self
            .conn
            .query_row(
                "SELECT position, done FROM verify_progress WHERE run_id = ?1 AND phase = ?2",
                params![run, phase],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((None, false)))
    }

    /// Record checked work, its findings and the new position of `phase`, atomically.
    pub fn verify_commit(
        &mut self,
        run: i64,
        phase: &str,
        position: Option<&str>,
        done: bool,
        add: &VerifyCounts,
        problems: &[Problem],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR IGNORE INTO verify_problems (run_id, path, kind, detail, project, serial)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for p in problems {
                put.execute(params![
                    run,
                    p.path,
                    p.kind.as_str(),
                    p.detail,
                    p.project,
                    p.serial.map(|s| s as i64)
                ])?;
            }
        }
        tx.execute(
            "UPDATE verify_runs SET files_checked = files_checked + ?2,
                 bytes_checked = bytes_checked + ?3, pages_checked = pages_checked + ?4,
                 projects_compared = projects_compared + ?5, unchecked = unchecked + ?6
             WHERE id = ?1",
            params![
                run,
                add.files_checked as i64,
                add.bytes_checked as i64,
                add.pages_checked as i64,
                add.projects_compared as i64,
                add.unchecked as i64
            ],
        )?;
        tx.execute(
            "INSERT INTO verify_progress (run_id, phase, position, done) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id, phase) DO UPDATE SET
                 position = COALESCE(excluded.position, position), done = excluded.done",
            params![run, phase, position, done],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn verify_finish(&mut self, run: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE verify_runs SET finished_at = unixepoch() WHERE id = ?1",
            [run],
        )?;
        Ok(())
    }

    /// Problems found, by kind.
    pub fn verify_counts(&self, run: i64) -> Result<BTreeMap<Kind, u64>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, COUNT(*) FROM verify_problems WHERE run_id = ?1 GROUP BY kind",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (kind, n) = row?;
            let kind = Kind::parse(&kind)
                .ok_or_else(|| StateError::InvalidRow(format!("verify problem kind {kind:?}")))?;
            out.insert(kind, n);
        }
        Ok(out)
    }

    /// Repairs (done, failed) so far.
    pub fn verify_repair_counts(&self, run: i64) -> Result<(u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(repair = 'done'), 0), COALESCE(SUM(repair <> 'done'), 0)
             FROM verify_problems WHERE run_id = ?1",
            [run],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Every problem, in report order (by kind, then path), streamed.
    pub fn verify_for_each_problem(
        &self,
        run: i64,
        mut f: impl FnMut(ProblemRow) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT path, kind, detail, project, serial, repair FROM verify_problems
             WHERE run_id = ?1 ORDER BY {}, path",
            kind_order()
        ))?;
        let mut rows = stmt.query([run])?;
        while let Some(r) = rows.next()? {
            f(problem_row(r)?)?;
        }
        Ok(())
    }

    /// Up to `limit` problems of `kinds` not yet repaired, with a path after `after`, by path.
    pub fn verify_unrepaired(
        &self,
        run: i64,
        kinds: &[Kind],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProblemRow>> {
        let kinds: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT path, kind, detail, project, serial, repair FROM verify_problems
             WHERE run_id = ?1 AND repair IS NULL AND kind IN ({}) AND path > ?2
             ORDER BY path LIMIT ?3",
            kinds.join(",")
        ))?;
        let mut rows = stmt.query(params![run, after.unwrap_or(""), limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(problem_row(r).map_err(|e| StateError::InvalidRow(e.to_string()))?);
        }
        Ok(out)
    }

    /// Record what became of repairs: "done", or why not.
    pub fn verify_repaired(&mut self, run: i64, outcomes: &[(Problem, String)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut set = tx.prepare_cached(
                "UPDATE verify_problems SET repair = ?4 WHERE run_id = ?1 AND path = ?2 AND kind = ?3",
            )?;
            for (p, outcome) in outcomes {
                set.execute(params![run, p.path, p.kind.as_str(), outcome])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn kind_order() -> String {
    let arms: Vec<String> = Kind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| format!("WHEN '{}' THEN {i}", k.as_str()))
        .collect();
    format!("CASE kind {} END", arms.join(" "))
}

fn problem_row(r: &rusqlite::Row<'_>) -> anyhow::Result<ProblemRow> {
    let kind: String = r.get(1)?;
    Ok(ProblemRow {
        problem: Problem {
            path: r.get(0)?,
            kind: Kind::parse(&kind)
                .ok_or_else(|| anyhow::anyhow!("unknown verify problem kind {kind:?}"))?,
            detail: r.get(2)?,
            project: r.get(3)?,
            serial: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
        },
        repair: r.get(5)?,
    })
}
