//! The state database (SQLite, WAL): what the mirror holds and what it still has to do.
//!
//! It is the source of truth for every page pymirror writes and every file it keeps; the tree
//! under `web/` is derived from it, never scanned to rebuild it.

mod migrate;
mod verify;

pub use verify::{ExpectedFile, FileOwner, ProblemRow, VerifyBegin, VerifyCounts, VerifyRun};

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::types::{FileRecord, ProjectSnapshot};
use crate::types::{Filename, PackagePath, ProjectName, Serial, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database: {0}")]
    Sql(rusqlite::Error),
    #[error(
        "state database {path} has schema version {found}, newer than this pymirror knows ({known}); upgrade pymirror"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("state database holds an invalid row: {0}; restore the database from a backup")]
    Corrupt(String),
    #[error(
        "state database {path} has schema version {found}, this pymirror expects {known}; run a real `pymirror sync` with this version once (or use the pymirror that wrote it)"
    )]
    Schema {
        path: String,
        found: i64,
        known: i64,
    },
}

// Not `#[from]`: that would also make it the error's source and print the cause twice.
impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Sql(e)
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

/// A queued project.
#[derive(Debug, Clone)]
pub struct Todo {
    pub name: ProjectName,
    pub display_name: String,
    pub serial: Serial,
    pub attempts: u32,
}

/// Where a walk of the queue stands: projects that failed before, then the others, each in
/// name order.
#[derive(Debug, Clone, Default)]
pub struct TodoCursor {
    fresh: bool,
    after: String,
}

/// A change the feed reported: `name` must be mirrored at `serial` or later; the oldest of
/// its changes in this feed read was at `first_serial`.
#[derive(Debug, Clone)]
pub struct Change {
    pub name: ProjectName,
    pub display_name: String,
    pub serial: Serial,
    pub first_serial: Serial,
}

pub struct State {
    conn: Connection,
}

/// A queued project as `pymirror status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pending {
    pub name: String,
    pub serial: Serial,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// One sync run; `finished` and `outcome` are empty for a run still going or killed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub started: String,
    pub finished: Option<String>,
    pub outcome: Option<String>,
    pub summary: Option<String>,
}

const CHANGELOG_SERIAL: &str = "changelog_serial";
/// The canonical filter configuration the mirror was last evaluated against.
const FILTERS: &str = "filters";

impl State {
    /// Open the database read-only, for `sync --dry-run`: nothing is written, not even a
    /// migration (a database behind this pymirror's schema is refused).
    ///
    /// A read-only reader of a WAL database creates the `-wal` and `-shm` files when they are
    /// missing (no writer has it open) and cannot remove them. Then the database is opened
    /// `immutable` instead, which creates nothing; should a sync start and checkpoint during
    /// the read, the reader may fail ("malformed"), never the sync: it writes nothing.
    pub fn open_read_only(path: &Path) -> Result<State> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let in_use = Path::new(&wal).exists();
        // A file: URI (percent-encoded, so any path works); relative paths made absolute.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let uri = url::Url::from_file_path(&absolute)
            .map_err(|()| StateError::Sql(rusqlite::Error::InvalidPath(absolute.clone())))?;
        let uri = match in_use {
            true => format!("{uri}?mode=ro"),
            false => format!("{uri}?mode=ro&immutable=1"),
        };
        let conn = Connection::open_with_flags(
            uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_URI
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA busy_timeout = 10000;")?;
        let found: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if found != migrate::latest() {
            return Err(StateError::Schema {
                path: path.display().to_string(),
                found,
                known: migrate::latest(),
            });
        }
        Ok(State { conn })
    }

    /// An empty database in memory (a dry run on a mirror that has never synced).
    pub fn in_memory() -> Result<State> {
        let mut conn = Connection::open_in_memory()?;
        migrate::apply(&mut conn)?;
        Ok(State { conn })
    }

    pub fn open(path: &Path) -> Result<State> {
        let mut conn = Connection::open(path)?;
        // WAL: readers (status, verify) never block the writer; NORMAL is durable at each
        // checkpoint and never corrupts, which is all a re-derivable mirror needs.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 10000;",
        )?;
        let has_table: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations')",
            [],
            |r| r.get(0),
        )?;
        if has_table {
            let found: i64 = conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )?;
            if found > migrate::latest() {
                return Err(StateError::TooNew {
                    path: path.display().to_string(),
                    found,
                    known: migrate::latest(),
                });
            }
        }
        migrate::apply(&mut conn)?;
        Ok(State { conn })
    }

    /// How far the change feed has been read (and queued). `None` before the first sync.
    pub fn changelog_serial(&self) -> Result<Option<Serial>> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [CHANGELOG_SERIAL],
                |r| r.get(0),
            )
            .optional()?;
        v.map(|s| {
            s.parse()
                .map(Serial)
                .map_err(|_| StateError::Corrupt(format!("changelog_serial {s:?}")))
        })
        .transpose()
    }

    /// The serial every project is mirrored at or beyond: the feed's serial unless work is
    /// still queued, then just below the oldest queued change.
    pub fn fully_synced_serial(&self) -> Result<Serial> {
        let feed = self.changelog_serial()?.unwrap_or_default();
        let oldest: Option<i64> = self.conn.query_row(
            "SELECT MIN(COALESCE(first_serial, serial)) FROM todo",
            [],
            |r| r.get(0),
        )?;
        Ok(match oldest {
            Some(s) => Serial::from_db(s - 1).min(feed),
            None => feed,
        })
    }

    /// Serials of every mirrored project (for comparing with a PEP 691 root listing).
    pub fn project_serials(&self) -> Result<HashMap<String, Serial>> {
        let mut stmt = self.conn.prepare("SELECT name, serial FROM projects")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, Serial::from_db(r.get(1)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn project_serial(&self, name: &ProjectName) -> Result<Option<Serial>> {
        Ok(self
            .conn
            .query_row(
                "SELECT serial FROM projects WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .map(Serial::from_db))
    }

    /// Queue `changes` (skipping those already mirrored at their serial) and advance the feed
    /// serial to `feed_serial`, atomically.
    pub fn enqueue(&mut self, changes: &[Change], feed_serial: Serial) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let queued = put_todo(&tx, changes, true)?;
        put_meta(&tx, CHANGELOG_SERIAL, &feed_serial.0.to_string())?;
        tx.commit()?;
        Ok(queued)
    }

    /// The filter configuration (canonical text) the mirror was last evaluated against;
    /// `None` before the first sync with a pymirror that has filters.
    pub fn filters(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [FILTERS], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_filters(&mut self, canonical: &str) -> Result<()> {
        put_meta(&self.conn, FILTERS, canonical)
    }

    /// Queue projects whatever serial they are mirrored at (a filter change makes the sync
    /// look at them again), merging with what is already queued for them.
    pub fn requeue(&mut self, changes: &[Change]) -> Result<()> {
        let tx = self.conn.transaction()?;
        put_todo(&tx, changes, false)?;
        tx.commit()?;
        Ok(())
    }

    /// Mirrored projects named after `after`, in name order, at most `limit`: (name, display
    /// name, serial). Paging keeps memory bounded over the whole mirror.
    pub fn projects_after(
        &self,
        after: Option<&ProjectName>,
        limit: usize,
    ) -> Result<Vec<(ProjectName, String, Serial)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display_name, serial FROM projects WHERE name > ?1 ORDER BY name LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![after.map_or("", ProjectName::as_str), limit as i64],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (name, display, serial) = row?;
            let name = ProjectName::new(&name).map_err(|e| StateError::Corrupt(e.to_string()))?;
            out.push((name, display, Serial::from_db(serial)));
        }
        Ok(out)
    }

    /// The versions recorded for a project (the releases its pages list).
    pub fn project_versions(&self, name: &ProjectName) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.version FROM releases r JOIN projects p ON p.id = r.project_id
             WHERE p.name = ?1 ORDER BY r.version",
        )?;
        let rows = stmt.query_map([name.as_str()], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Queued projects, those that failed before first so a stubborn one is retried early.
    pub fn todo(&self) -> Result<Vec<Todo>> {
        let mut cursor = TodoCursor::default();
        let mut out = Vec::new();
        loop {
            let page = self.todo_page(&mut cursor, 10_000)?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// The next `limit` queued projects in [`State::todo`]'s order, an empty page at the end.
    /// A first full sync queues every project upstream has, so the sync walks the queue a
    /// page at a time instead of holding it. Projects that fail during the walk are not met
    /// again; projects queued behind the cursor are left for the next run.
    pub fn todo_page(&self, cursor: &mut TodoCursor, limit: usize) -> Result<Vec<Todo>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display_name, serial, attempts FROM todo
             WHERE (attempts = 0) = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
        )?;
        loop {
            let rows = stmt.query_map(params![cursor.fresh, cursor.after, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, display_name, serial, attempts) = row?;
                let name =
                    ProjectName::new(&name).map_err(|e| StateError::Corrupt(e.to_string()))?;
                out.push(Todo {
                    name,
                    display_name,
                    serial: Serial::from_db(serial),
                    attempts: attempts as u32,
                });
            }
            match out.last() {
                Some(last) => {
                    cursor.after = last.name.to_string();
                    return Ok(out);
                }
                None if cursor.fresh => return Ok(out),
                None => {
                    // The failed ones are through: now those never tried.
                    cursor.fresh = true;
                    cursor.after.clear();
                }
            }
        }
    }

    pub fn record_failure(&mut self, name: &ProjectName, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE todo SET attempts = attempts + 1, last_error = ?2 WHERE name = ?1",
            params![name.as_str(), error],
        )?;
        Ok(())
    }

    /// The files currently recorded for a project.
    pub fn project_files(&self, name: &ProjectName) -> Result<Vec<FileRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.version, f.filename, f.path, f.size, f.sha256, f.upload_time, f.requires_python,
                    f.yanked, f.yanked_reason, f.packagetype, f.python_version,
                    f.core_metadata_sha256, f.provenance, f.extra_hashes
             FROM files f JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = f.project_id
             WHERE p.name = ?1 ORDER BY f.filename",
        )?;
        let mut rows = stmt.query([name.as_str()])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let corrupt = |what: String| StateError::Corrupt(format!("{name}: {what}"));
            let filename: String = r.get(1)?;
            let filename = Filename::new(&filename).map_err(|e| corrupt(e.to_string()))?;
            let path: String = r.get(2)?;
            let sha256: String = r.get(4)?;
            let core_metadata: Option<String> = r.get(11)?;
            let extra_hashes: Option<String> = r.get(13)?;
            out.push(FileRecord {
                version: r.get(0)?,
                path: PackagePath::from_url_path(&format!("/{path}"), &filename)
                    .map_err(|e| corrupt(e.to_string()))?,
                filename,
                size: r.get::<_, i64>(3)? as u64,
                sha256: Sha256::from_hex(&sha256).map_err(|e| corrupt(e.to_string()))?,
                upload_time: r.get(5)?,
                requires_python: r.get(6)?,
                yanked: r.get(7)?,
                yanked_reason: r.get(8)?,
                packagetype: r.get(9)?,
                python_version: r.get(10)?,
                core_metadata: core_metadata
                    .map(|h| Sha256::from_hex(&h).map_err(|e| corrupt(e.to_string())))
                    .transpose()?,
                provenance: r.get(12)?,
                extra_hashes: extra_hashes
                    .map(|j| {
                        serde_json::from_str(&j).map_err(|e| corrupt(format!("extra_hashes: {e}")))
                    })
                    .transpose()?
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Replace everything recorded for the project with `snap`, dequeue it, and return the
    /// paths that no project references any more. They are put in `trash` in the same
    /// transaction; the caller deletes them and then calls [`State::emptied`].
    pub fn record_project(&mut self, snap: &ProjectSnapshot) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let old_paths = paths_of(&tx, &snap.name)?;
        tx.execute(
            "INSERT INTO projects (name, display_name, serial, synced_at, status, status_reason)
             VALUES (?1, ?2, ?3, unixepoch(), ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name,
                 serial = excluded.serial, synced_at = excluded.synced_at,
                 status = excluded.status, status_reason = excluded.status_reason",
            params![
                snap.name.as_str(),
                snap.display_name,
                snap.serial.to_db(),
                snap.status.as_ref().map(|s| s.status.as_str()),
                snap.status.as_ref().and_then(|s| s.reason.as_deref()),
            ],
        )?;
        let project_id: i64 = tx.query_row(
            "SELECT id FROM projects WHERE name = ?1",
            [snap.name.as_str()],
            |r| r.get(0),
        )?;
        // Rewriting the project's rows is simpler than diffing and costs the same: a project's
        // rows are few and this runs only when upstream changed it.
        tx.execute("DELETE FROM releases WHERE project_id = ?1", [project_id])?;
        {
            let mut rel =
                tx.prepare_cached("INSERT INTO releases (project_id, version) VALUES (?1, ?2)")?;
            let mut release_ids = HashMap::new();
            let file_versions = snap.files.iter().map(|f| &f.record.version);
            let mut versions: Vec<&String> = snap.versions.iter().chain(file_versions).collect();
            versions.sort();
            versions.dedup();
            for v in versions {
                rel.execute(params![project_id, v])?;
                release_ids.insert(v.as_str(), tx.last_insert_rowid());
            }
            let mut file = tx.prepare_cached(
                "INSERT INTO files (project_id, release_id, filename, path, size, sha256, blake2b_256,
                    upload_time, requires_python, yanked, yanked_reason, packagetype, python_version,
                    core_metadata_sha256, provenance, extra_hashes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            for f in snap.files.iter().map(|f| &f.record) {
                let release_id = release_ids[f.version.as_str()];
                file.execute(params![
                    project_id,
                    release_id,
                    f.filename.as_str(),
                    f.path.relative(),
                    f.size as i64,
                    f.sha256.to_hex(),
                    f.blake2b().to_hex(),
                    f.upload_time,
                    f.requires_python,
                    f.yanked,
                    f.yanked_reason,
                    f.packagetype,
                    f.python_version,
                    f.core_metadata.map(|h| h.to_hex()),
                    f.provenance,
                    (!f.extra_hashes.is_empty())
                        .then(|| serde_json::to_string(&f.extra_hashes)
                            .expect("a string map serializes")),
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM todo WHERE name = ?1 AND serial <= ?2",
            params![snap.name.as_str(), snap.serial.to_db()],
        )?;
        let mut gone = unreferenced(&tx, old_paths)?;
        gone.extend(unstaged(&tx, &snap.name)?);
        trash(&tx, &gone)?;
        set_root_dirty(&tx)?;
        tx.commit()?;
        Ok(gone)
    }

    /// Note files about to be placed for `name`, before they reach disk (see `staged`).
    pub fn stage(&mut self, name: &ProjectName, paths: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR REPLACE INTO staged (path, project) VALUES (?1, ?2)")?;
            for p in paths {
                put.execute(params![p, name.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether the root pages must be regenerated (a project was added, changed or removed
    /// since they were last written, possibly by a run that was killed).
    pub fn root_dirty(&self) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM meta WHERE key = 'root_dirty'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn root_written(&mut self) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE key = 'root_dirty'", [])?;
        Ok(())
    }

    /// Forget a project upstream no longer has. Its page directory (`simple/<name>/`) and the
    /// files nothing else references go to `trash` in the same transaction. `false` when the
    /// mirror did not hold it.
    pub fn remove_project(&mut self, name: &ProjectName, serial: Serial) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let old_paths = paths_of(&tx, name)?;
        let removed = tx.execute("DELETE FROM projects WHERE name = ?1", [name.as_str()])? > 0;
        tx.execute(
            "DELETE FROM todo WHERE name = ?1 AND serial <= ?2",
            params![name.as_str(), serial.to_db()],
        )?;
        let mut gone = unreferenced(&tx, old_paths)?;
        gone.extend(unstaged(&tx, name)?);
        set_root_dirty(&tx)?;
        gone.extend([
            format!("simple/{name}/"),
            format!("pypi/{name}/"),
            format!("json/{name}"),
        ]);
        trash(&tx, &gone)?;
        tx.commit()?;
        Ok(removed)
    }

    /// Paths queued for deletion that nothing references (any a project took back are
    /// dropped from the queue here rather than deleted). Page directories (ending in `/`)
    /// come first, so no page ever links a file already deleted.
    pub fn trash(&mut self) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM trash WHERE path IN (SELECT path FROM files)",
            [],
        )?;
        tx.execute(
            "DELETE FROM trash WHERE path IN (SELECT 'simple/' || name || '/' FROM projects)
                 OR path IN (SELECT 'pypi/' || name || '/' FROM projects)
                 OR path IN (SELECT 'json/' || name FROM projects)",
            [],
        )?;
        let paths = {
            let mut stmt =
                tx.prepare("SELECT path FROM trash ORDER BY path LIKE '%/' DESC, path")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?
        };
        tx.commit()?;
        Ok(paths)
    }

    /// The files at `paths` are gone from disk.
    pub fn emptied(&mut self, paths: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM trash WHERE path = ?1")?;
            for p in paths {
                del.execute([p])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn start_run(&mut self) -> Result<i64> {
        self.conn
            .execute("INSERT INTO runs (started_at) VALUES (unixepoch())", [])?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&mut self, id: i64, outcome: &str, summary: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished_at = unixepoch(), outcome = ?2, summary = ?3 WHERE id = ?1",
            params![id, outcome, summary],
        )?;
        Ok(())
    }

    /// (projects, files, total bytes) the mirror holds.
    pub fn totals(&self) -> Result<(u64, u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM projects), COUNT(*), COALESCE(SUM(size), 0) FROM files",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )?)
    }

    /// Queued projects with their last error, failed ones first, at most `limit`.
    pub fn pending(&self, limit: usize) -> Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, serial, attempts, last_error FROM todo
             ORDER BY attempts > 0 DESC, name LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Pending {
                name: r.get(0)?,
                serial: Serial::from_db(r.get(1)?),
                attempts: r.get::<_, i64>(2)? as u32,
                last_error: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn pending_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM todo", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The most recent run, times as ISO 8601 UTC.
    pub fn last_run(&self) -> Result<Option<RunRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT strftime('%Y-%m-%dT%H:%M:%SZ', started_at, 'unixepoch'),
                        strftime('%Y-%m-%dT%H:%M:%SZ', finished_at, 'unixepoch'), outcome, summary
                 FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunRecord {
                        started: r.get(0)?,
                        finished: r.get(1)?,
                        outcome: r.get(2)?,
                        summary: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every mirrored project as (normalized name, display name, serial), ordered by name.
    pub fn for_each_project(
        &self,
        mut f: impl FnMut(&str, &str, Serial) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, display_name, serial FROM projects ORDER BY name")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(
                row.get_ref(0)?.as_str()?,
                row.get_ref(1)?.as_str()?,
                Serial::from_db(row.get(2)?),
            )?;
        }
        Ok(())
    }
}

fn put_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Queue `changes`, merging with what is queued (newest serial, oldest first serial);
/// `skip_mirrored`: leave out those mirrored at their serial already. How many were queued.
fn put_todo(
    tx: &rusqlite::Transaction<'_>,
    changes: &[Change],
    skip_mirrored: bool,
) -> Result<usize> {
    let mut have = tx.prepare_cached("SELECT serial FROM projects WHERE name = ?1")?;
    let mut put = tx.prepare_cached(
        "INSERT INTO todo (name, display_name, serial, first_serial) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET serial = MAX(serial, excluded.serial),
             first_serial = MIN(COALESCE(first_serial, serial), excluded.first_serial),
             display_name = excluded.display_name",
    )?;
    let mut queued = 0;
    for c in changes {
        if skip_mirrored {
            let mirrored: Option<i64> =
                have.query_row([c.name.as_str()], |r| r.get(0)).optional()?;
            if mirrored.is_some_and(|s| Serial::from_db(s) >= c.serial) {
                continue;
            }
        }
        put.execute(params![
            c.name.as_str(),
            c.display_name,
            c.serial.to_db(),
            c.first_serial.to_db()
        ])?;
        queued += 1;
    }
    Ok(queued)
}

/// The project's staged paths, dropping them from `staged`; those no file row references are
/// returned for `trash`.
fn unstaged(tx: &rusqlite::Transaction<'_>, name: &ProjectName) -> Result<Vec<String>> {
    let paths: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT s.path FROM staged s WHERE s.project = ?1
               AND s.path NOT IN (SELECT path FROM files)
               AND s.path NOT IN (SELECT path || '.metadata' FROM files WHERE core_metadata_sha256 IS NOT NULL)",
        )?;
        stmt.query_map([name.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    tx.execute("DELETE FROM staged WHERE project = ?1", [name.as_str()])?;
    Ok(paths)
}

fn set_root_dirty(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('root_dirty', '1')",
        [],
    )?;
    Ok(())
}

fn trash(tx: &rusqlite::Transaction<'_>, paths: &[String]) -> Result<()> {
    let mut put = tx.prepare_cached("INSERT OR IGNORE INTO trash (path) VALUES (?1)")?;
    for p in paths {
        put.execute([p])?;
    }
    Ok(())
}

/// The project's file paths, each with whether its `.metadata` sidecar is held.
fn paths_of(tx: &rusqlite::Transaction<'_>, name: &ProjectName) -> Result<Vec<(String, bool)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT f.path, f.core_metadata_sha256 IS NOT NULL
         FROM files f JOIN projects p ON p.id = f.project_id WHERE p.name = ?1",
    )?;
    let rows = stmt.query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Of `paths`, those no file row references now (with their sidecars), and sidecars whose
/// file is still referenced but no longer with a held sidecar.
fn unreferenced(tx: &rusqlite::Transaction<'_>, paths: Vec<(String, bool)>) -> Result<Vec<String>> {
    let mut used = tx.prepare_cached(
        "SELECT COUNT(*) > 0, COALESCE(MAX(core_metadata_sha256 IS NOT NULL), 0) FROM files WHERE path = ?1",
    )?;
    let mut gone = Vec::new();
    for (path, had_sidecar) in paths {
        let (referenced, has_sidecar): (bool, bool) =
            used.query_row([&path], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if had_sidecar && !has_sidecar {
            gone.push(format!("{path}.metadata"));
        }
        if !referenced {
            gone.push(path);
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, serial: u64) -> Change {
        Change {
            name: ProjectName::new(name).unwrap(),
            display_name: name.to_owned(),
            serial: Serial(serial),
            first_serial: Serial(serial),
        }
    }

    fn names(page: &[Todo]) -> Vec<&str> {
        page.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn the_queue_is_walked_a_page_at_a_time_failed_projects_first() {
        let mut state = State::in_memory().unwrap();
        let all = ["a", "b", "c", "d", "e"];
        let changes: Vec<Change> = all.iter().map(|n| change(n, 7)).collect();
        state.enqueue(&changes, Serial(7)).unwrap();
        state
            .record_failure(&ProjectName::new("d").unwrap(), "x")
            .unwrap();
        state
            .record_failure(&ProjectName::new("b").unwrap(), "x")
            .unwrap();

        let mut cursor = TodoCursor::default();
        assert_eq!(names(&state.todo_page(&mut cursor, 3).unwrap()), ["b", "d"]);
        assert_eq!(names(&state.todo_page(&mut cursor, 2).unwrap()), ["a", "c"]);
        // A project failing during the walk is not met again.
        state
            .record_failure(&ProjectName::new("c").unwrap(), "x")
            .unwrap();
        assert_eq!(names(&state.todo_page(&mut cursor, 2).unwrap()), ["e"]);
        assert!(state.todo_page(&mut cursor, 2).unwrap().is_empty());
        assert!(state.todo_page(&mut cursor, 2).unwrap().is_empty());
        assert_eq!(names(&state.todo().unwrap()), ["b", "c", "d", "a", "e"]);
    }
}
