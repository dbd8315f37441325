//! Verify's own log: its checkpoint (how far each phase got, the work counted) and its
//! findings (each problem, and what became of its repair), so that a verify killed half-way
//! continues with `--resume` and its report still lists what it found before.
//!
//! It is a small SQLite file of its own, `<directory>/verify.db`, never the mirror database: a
//! verify that only checks must be able to run with the mirror database opened read-only (by
//! a user who may not write it, beside a sync of another version). When `verify.db` cannot be
//! written, the log is kept in memory and that verify cannot be resumed. Older pymirrors kept
//! these tables in `pymirror.db` (migration 0005); they are left there, unused.
//!
//! The log is reached through the [`State`] it is attached to ([`State::with_verify_log`]), so
//! that the repairs, which read and write both, go through one value.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{Result, State, StateError};
use crate::types::problem::{Kind, Problem};

/// The log's file name in the tests (the mirror's is `storage::Layout::verify_log`).
#[cfg(test)]
const VERIFY_LOG: &str = "verify.db";

/// The log's schema version (`PRAGMA user_version`); a file ahead of it was written by a
/// newer pymirror.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
-- One row per verify; only the latest is kept.
CREATE TABLE IF NOT EXISTS verify_runs (
    id                INTEGER PRIMARY KEY,
    started_at        INTEGER NOT NULL,    -- unix seconds
    finished_at       INTEGER,             -- NULL: running, or interrupted (resumable)
    checks            TEXT NOT NULL,       -- the checks asked for, e.g. \"files,pages,hash\"
    files_checked     INTEGER NOT NULL DEFAULT 0,
    bytes_checked     INTEGER NOT NULL DEFAULT 0,
    pages_checked     INTEGER NOT NULL DEFAULT 0,
    projects_compared INTEGER NOT NULL DEFAULT 0,
    unchecked         INTEGER NOT NULL DEFAULT 0   -- units that could not be checked
);
-- How far each phase got: `position` is the last unit done in order (a shard number, a
-- project name); `done` once the whole phase is.
CREATE TABLE IF NOT EXISTS verify_progress (
    run_id   INTEGER NOT NULL REFERENCES verify_runs(id) ON DELETE CASCADE,
    phase    TEXT NOT NULL,
    position TEXT,
    done     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, phase)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verify_problems (
    run_id  INTEGER NOT NULL REFERENCES verify_runs(id) ON DELETE CASCADE,
    path    TEXT NOT NULL,     -- relative to the mirror directory (web/…, tmp/…)
    kind    TEXT NOT NULL,     -- missing | bad_size | bad_hash | bad_page | orphan | drift
    detail  TEXT NOT NULL,
    project TEXT,              -- normalized name, for pages and drift
    serial  INTEGER,           -- drift: upstream's serial, for requeueing the project
    repair  TEXT,              -- NULL: not attempted; 'done'; else why it failed
    PRIMARY KEY (run_id, path, kind)
) WITHOUT ROWID;
";

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

/// Verify's checkpoint and findings: `verify.db`, or memory when that cannot be written.
pub struct VerifyLog {
    conn: Connection,
}

impl VerifyLog {
    /// Open (creating it, or its tables, when missing) the log at `path`. When it cannot be
    /// written (a directory or file this user may not write, a read-only filesystem), a log
    /// in memory instead, with why: a verify recorded there cannot be resumed.
    pub fn open_or_in_memory(path: &Path) -> Result<(VerifyLog, Option<String>)> {
        match VerifyLog::open(path) {
            Ok(log) => Ok((log, None)),
            Err(StateError::Sql(e)) if not_writable(&e) => Ok((
                VerifyLog::in_memory()?,
                Some(format!("cannot write {}: {e}", path.display())),
            )),
            Err(StateError::Sql(e)) => Err(StateError::VerifyLog(e)),
            Err(e) => Err(e),
        }
    }

    /// A log in memory: nothing survives the process.
    pub fn in_memory() -> Result<VerifyLog> {
        let conn = Connection::open_in_memory().map_err(StateError::VerifyLog)?;
        VerifyLog::setup(conn, Path::new(":memory:")).map_err(|e| match e {
            StateError::Sql(e) => StateError::VerifyLog(e),
            e => e,
        })
    }

    /// Open (creating) the log at `path`; SQLite's errors as [`StateError::Sql`].
    fn open(path: &Path) -> Result<VerifyLog> {
        let conn = Connection::open(path)?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            // SQLite opens a file it may not write read-only, without a word.
            return Err(StateError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the file is read-only for this user".into()),
            )));
        }
        // WAL and NORMAL, as the mirror database: a checkpoint a second costs no fsync.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 10000;",
        )?;
        VerifyLog::setup(conn, path)
    }

    fn setup(conn: Connection, path: &Path) -> Result<VerifyLog> {
        // Starting a verify deletes the previous one's run; its progress and problems go with
        // it (run ids are reused once the table is empty).
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StateError::VerifyLogTooNew {
                path: path.display().to_string(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        }
        Ok(VerifyLog { conn })
    }

    fn begin(&mut self, checks: &str, resume: bool) -> rusqlite::Result<VerifyBegin> {
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

    fn phase(&self, run: i64, phase: &str) -> rusqlite::Result<(Option<String>, bool)> {
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

    fn commit(
        &mut self,
        run: i64,
        phase: &str,
        position: Option<&str>,
        done: bool,
        add: &VerifyCounts,
        problems: &[Problem],
    ) -> rusqlite::Result<()> {
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
        tx.commit()
    }

    fn finish(&mut self, run: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE verify_runs SET finished_at = unixepoch() WHERE id = ?1",
            [run],
        )?;
        Ok(())
    }

    fn counts(&self, run: i64) -> rusqlite::Result<BTreeMap<Kind, u64>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, COUNT(*) FROM verify_problems WHERE run_id = ?1 GROUP BY kind",
        )?;
        let rows = stmt.query_map([run], |r| Ok((kind(r, 0)?, r.get::<_, i64>(1)? as u64)))?;
        rows.collect()
    }

    fn repair_counts(&self, run: i64) -> rusqlite::Result<(u64, u64)> {
        self.conn.query_row(
            "SELECT COALESCE(SUM(repair = 'done'), 0), COALESCE(SUM(repair <> 'done'), 0)
             FROM verify_problems WHERE run_id = ?1",
            [run],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
    }

    fn for_each_problem(
        &self,
        run: i64,
        mut f: impl FnMut(ProblemRow) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT path, kind, detail, project, serial, repair FROM verify_problems
                 WHERE run_id = ?1 ORDER BY {}, path",
                kind_order()
            ))
            .map_err(StateError::VerifyLog)?;
        let mut rows = stmt.query([run]).map_err(StateError::VerifyLog)?;
        while let Some(r) = rows.next().map_err(StateError::VerifyLog)? {
            f(problem_row(r).map_err(StateError::VerifyLog)?)?;
        }
        Ok(())
    }

    fn unrepaired(
        &self,
        run: i64,
        kinds: &[Kind],
        after: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Vec<ProblemRow>> {
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
            out.push(problem_row(r)?);
        }
        Ok(out)
    }

    fn repaired(&mut self, run: i64, outcomes: &[(Problem, String)]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut set = tx.prepare_cached(
                "UPDATE verify_problems SET repair = ?4 WHERE run_id = ?1 AND path = ?2 AND kind = ?3",
            )?;
            for (p, outcome) in outcomes {
                set.execute(params![run, p.path, p.kind.as_str(), outcome])?;
            }
        }
        tx.commit()
    }
}

/// Whether opening the log failed only because this user or filesystem may not write it.
fn not_writable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    )
}

fn kind_order() -> String {
    let arms: Vec<String> = Kind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| format!("WHEN '{}' THEN {i}", k.as_str()))
        .collect();
    format!("CASE kind {} END", arms.join(" "))
}

fn kind(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Kind> {
    let kind: String = r.get(column)?;
    Kind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            Type::Text,
            format!("unknown verify problem kind {kind:?}").into(),
        )
    })
}

fn problem_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProblemRow> {
    Ok(ProblemRow {
        problem: Problem {
            path: r.get(0)?,
            kind: kind(r, 1)?,
            detail: r.get(2)?,
            project: r.get(3)?,
            serial: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
        },
        repair: r.get(5)?,
    })
}

/// Verify's checkpoint and findings, in the [`VerifyLog`] attached to this connection (the
/// threads that only read have none).
impl State {
    /// Attach the log a verify records in.
    pub fn with_verify_log(mut self, log: VerifyLog) -> State {
        self.log = Some(log);
        self
    }

    fn log(&self) -> Result<&VerifyLog> {
        self.log.as_ref().ok_or(StateError::NoVerifyLog)
    }

    fn log_mut(&mut self) -> Result<&mut VerifyLog> {
        self.log.as_mut().ok_or(StateError::NoVerifyLog)
    }

    /// Start a verify, or with `resume` continue the last one that did not finish (when it
    /// asked for the same `checks`). Starting one forgets the previous verify.
    pub fn verify_begin(&mut self, checks: &str, resume: bool) -> Result<VerifyBegin> {
        self.log_mut()?
            .begin(checks, resume)
            .map_err(StateError::VerifyLog)
    }

    /// How far `phase` got: (last unit done, whole phase done).
    pub fn verify_phase(&self, run: i64, phase: &str) -> Result<(Option<String>, bool)> {
        self.log()?.phase(run, phase).map_err(StateError::VerifyLog)
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
        self.log_mut()?
            .commit(run, phase, position, done, add, problems)
            .map_err(StateError::VerifyLog)
    }

    pub fn verify_finish(&mut self, run: i64) -> Result<()> {
        self.log_mut()?.finish(run).map_err(StateError::VerifyLog)
    }

    /// Problems found, by kind.
    pub fn verify_counts(&self, run: i64) -> Result<BTreeMap<Kind, u64>> {
        self.log()?.counts(run).map_err(StateError::VerifyLog)
    }

    /// Repairs (done, failed) so far.
    pub fn verify_repair_counts(&self, run: i64) -> Result<(u64, u64)> {
        self.log()?
            .repair_counts(run)
            .map_err(StateError::VerifyLog)
    }

    /// Every problem, in report order (by kind, then path), streamed.
    pub fn verify_for_each_problem(
        &self,
        run: i64,
        f: impl FnMut(ProblemRow) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        self.log()?.for_each_problem(run, f)
    }

    /// Up to `limit` problems of `kinds` not yet repaired, with a path after `after`, by path.
    pub fn verify_unrepaired(
        &self,
        run: i64,
        kinds: &[Kind],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProblemRow>> {
        self.log()?
            .unrepaired(run, kinds, after, limit)
            .map_err(StateError::VerifyLog)
    }

    /// Record what became of repairs: "done", or why not.
    pub fn verify_repaired(&mut self, run: i64, outcomes: &[(Problem, String)]) -> Result<()> {
        self.log_mut()?
            .repaired(run, outcomes)
            .map_err(StateError::VerifyLog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str) -> Problem {
        Problem::new(Kind::Missing, path.to_owned(), "gone")
    }

    fn run(begin: VerifyBegin) -> VerifyRun {
        match begin {
            VerifyBegin::Run(run) => run,
            VerifyBegin::Mismatch { checks } => panic!("mismatch: {checks}"),
        }
    }

    fn checking_verify(dir: &Path) -> State {
        let db = dir.join("pymirror.db");
        let (log, in_memory) = VerifyLog::open_or_in_memory(&dir.join(VERIFY_LOG)).unwrap();
        assert_eq!(in_memory, None);
        State::open_reader(&db).unwrap().with_verify_log(log)
    }

    #[test]
    fn a_checking_verify_records_in_its_log_and_leaves_the_mirror_database_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pymirror.db");
        drop(State::open(&db).unwrap());
        let before = std::fs::read(&db).unwrap();
        let mtime = std::fs::metadata(&db).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));

        // Killed after its first unit of work.
        let mut state = checking_verify(dir.path());
        let first = run(state.verify_begin("files,pages", false).unwrap());
        let counts = VerifyCounts {
            files_checked: 3,
            ..VerifyCounts::default()
        };
        state
            .verify_commit(
                first.id,
                "packages",
                Some("15"),
                false,
                &counts,
                &[problem("web/a")],
            )
            .unwrap();
        drop(state);

        let mut state = checking_verify(dir.path());
        assert!(matches!(
            state.verify_begin("files,pages,hash", true).unwrap(),
            VerifyBegin::Mismatch { checks } if checks == "files,pages"
        ));
        let resumed = run(state.verify_begin("files,pages", true).unwrap());
        assert!(resumed.resumed);
        assert_eq!((resumed.id, resumed.counts), (first.id, counts));
        assert_eq!(
            state.verify_phase(resumed.id, "packages").unwrap(),
            (Some("15".into()), false)
        );
        state
            .verify_commit(
                resumed.id,
                "packages",
                None,
                true,
                &counts,
                &[problem("web/b")],
            )
            .unwrap();
        state.verify_finish(resumed.id).unwrap();
        assert_eq!(state.verify_counts(resumed.id).unwrap()[&Kind::Missing], 2);
        let unrepaired = state
            .verify_unrepaired(resumed.id, &[Kind::Missing], None, 10)
            .unwrap();
        assert_eq!(unrepaired.len(), 2);
        drop(state);

        // Finished: nothing to resume; starting over forgets what the last one found.
        let mut state = checking_verify(dir.path());
        let next = run(state.verify_begin("files,pages", true).unwrap());
        assert!(!next.resumed);
        assert!(state.verify_counts(next.id).unwrap().is_empty());
        drop(state);

        assert_eq!(std::fs::read(&db).unwrap(), before);
        assert_eq!(std::fs::metadata(&db).unwrap().modified().unwrap(), mtime);
        let log = Connection::open(dir.path().join(VERIFY_LOG)).unwrap();
        let rows: i64 = log
            .query_row("SELECT COUNT(*) FROM verify_problems", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "the old run's problems went with it");
    }

    #[test]
    fn a_log_that_cannot_be_written_is_kept_in_memory_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no such directory").join(VERIFY_LOG);
        let (mut log, why) = VerifyLog::open_or_in_memory(&path).unwrap();
        let why = why.expect("in memory");
        assert!(
            why.contains("cannot write") && why.contains("no such directory"),
            "{why}"
        );
        assert!(!path.exists());
        let id = match log.begin("files,pages", false).unwrap() {
            VerifyBegin::Run(run) => run.id,
            VerifyBegin::Mismatch { .. } => unreachable!(),
        };
        log.commit(
            id,
            "tmp",
            None,
            true,
            &VerifyCounts::default(),
            &[problem("tmp/x")],
        )
        .unwrap();
        assert_eq!(log.counts(id).unwrap()[&Kind::Missing], 1);
    }

    #[test]
    fn a_log_written_by_a_newer_pymirror_is_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VERIFY_LOG);
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 7")
            .unwrap();
        let message = VerifyLog::open_or_in_memory(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("newer pymirror") && message.contains("delete it"),
            "{message}"
        );
    }

    #[test]
    fn a_connection_without_a_log_says_so() {
        let state = State::in_memory().unwrap();
        assert!(matches!(
            state.verify_phase(1, "tmp"),
            Err(StateError::NoVerifyLog)
        ));
    }
}
