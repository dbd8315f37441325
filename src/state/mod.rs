//! The state database (SQLite, WAL): what the mirror holds and what it still has to do.
//!
//! It is the source of truth for every page pymirror writes and every file it keeps; the tree
//! under `web/` is derived from it, never scanned to rebuild it.
//!
//! Only a sync (and a verify that repairs, under the same lock) opens it to write, and only
//! they migrate its schema ([`State::open`]). Everything else reads it read-only and refuses a
//! schema other than this binary's, saying what to run: `status` and `sync --dry-run`
//! ([`State::open_read_only`], creating nothing beside it), and a verify that only checks
//! ([`State::open_reader`], reading through the WAL beside a running sync). Verify's own
//! checkpoint and findings live in a file of their own ([`VerifyLog`], `verify.db`).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`State`], the ways to open it, [`StateError`] and what each error tells the operator |
//! | `migrate.rs` | `migrations/NNNN_*.sql`, applied in order and recorded |
//! | `adopt.rs` | an adoption in progress: its marker, its batches of projects, its end |
//! | `meta.rs` | the feed serial and the fully synced serial, the filters last applied, which root pages to rewrite (`root_dirty`, `root_names_dirty`) |
//! | `held_back.rs` | what the cooldown holds back of each project, and when it comes of age |
//! | `queue.rs` | `todo`: enqueue and requeue, pages of the queue, failures, what is pending |
//! | `projects.rs` | projects, releases, files: record, stage, remove, read back, count |
//! | `trash.rs` | `trash`: what no project references any more, until it is deleted from disk |
//! | `runs.rs` | one row per sync, for `status` |
//! | `verify.rs` | what verify reads: a range of files, staged paths, a project as stored |
//! | `verify_log.rs` | verify's checkpoint and findings, in `verify.db` |

mod adopt;
mod held_back;
mod meta;
mod migrate;
mod projects;
mod queue;
mod runs;
mod trash;
mod verify;
mod verify_log;

pub use adopt::{AdoptMarker, Adopted};
pub use held_back::HeldBackTotals;
pub use queue::{Change, Pending, Todo, TodoCursor};
pub use runs::RunRecord;
pub use verify::{ExpectedFile, FileOwner};
pub use verify_log::{ProblemRow, VerifyBegin, VerifyCounts, VerifyLog, VerifyRun};

use std::cmp::Ordering;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed on the mirror database, or a row held a value of the wrong type.
    #[error("{}", describe(Db::Mirror, .0))]
    Sql(rusqlite::Error),
    /// The same on verify's log (`verify.db`).
    #[error("{}", describe(Db::VerifyLog, .0))]
    VerifyLog(rusqlite::Error),
    /// A value this pymirror does not accept (a project name, a digest), read from a row.
    #[error(
        "the mirror database (pymirror.db) holds a value this pymirror cannot read: {}; {}",
        .0,
        NOT_WRITTEN_BY_US
    )]
    InvalidRow(String),
    #[error(
        "the mirror database at {path} was written by a newer pymirror (schema {found} > {known}); use that version or newer"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "the mirror database at {path} has schema version {found}, this pymirror needs {known}; run `pymirror sync` once to upgrade it"
    )]
    Schema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "verify's log at {path} was written by a newer pymirror (schema {found} > {known}); use that version or newer, or delete it (the next verify then starts from the beginning)"
    )]
    VerifyLogTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("internal error: this connection to the mirror database has no verify log")]
    NoVerifyLog,
}

// Not `#[from]`: that would also make it the error's source and print the cause twice.
impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Sql(e)
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

/// What to do about a value this pymirror cannot read from a row SQLite found sound: it is
/// not damage a backup would undo.
const NOT_WRITTEN_BY_US: &str = "pymirror does not write such a value, so it was changed by hand or by another program, or written by another version of pymirror: undo that change, or use that version (if neither happened, please report this)";

#[derive(Clone, Copy)]
enum Db {
    Mirror,
    VerifyLog,
}

/// One line for the operator: what went wrong with which file, and what to do. Only damage
/// SQLite itself detects (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) calls for a backup.
fn describe(db: Db, e: &rusqlite::Error) -> String {
    let (what, file) = match db {
        Db::Mirror => ("the mirror database", "pymirror.db"),
        Db::VerifyLog => ("verify's log", "verify.db"),
    };
    let value_type = matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    );
    match (e.sqlite_error_code(), db) {
        (Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase), Db::Mirror) => format!(
            "the mirror database (pymirror.db) is damaged: {e}; restore it from a backup, or move it (and any pymirror.db-wal and -shm beside it) aside and run `pymirror sync`, which rebuilds it from upstream (files already in place are checked and kept, not downloaded again)"
        ),
        (Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase), Db::VerifyLog) => format!(
            "verify's log (verify.db) is damaged: {e}; delete it (it holds only verify's checkpoint and findings): the next verify starts from the beginning"
        ),
        (Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked), _) => format!(
            "{what} ({file}) stayed locked by another process for 10 seconds: {e}; run again once it is done (a pymirror that is writing it, or an open sqlite3 shell)"
        ),
        (Some(ErrorCode::DiskFull), _) => format!(
            "the disk holding {file} is full: {e}; free some space and run again (nothing already committed is lost)"
        ),
        (Some(ErrorCode::SystemIoFailure), _) => format!(
            "I/O error on {file}: {e}; check the disk (the kernel log says more) and run again"
        ),
        (Some(ErrorCode::ReadOnly), _) => format!(
            "cannot write {file}: {e}; it, its directory or the filesystem is read-only for this user: run as the user that owns the mirror"
        ),
        (Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied), _) => format!(
            "cannot open {file}: {e}; check that the mirror directory exists and that this user may read it (and write it, to sync or repair)"
        ),
        (Some(ErrorCode::ConstraintViolation), _) => format!(
            "{what} ({file}) refused a change: {e}; the change was rolled back and nothing is lost, but this is a bug in pymirror: please report it with this message"
        ),
        (Some(ErrorCode::OutOfMemory), _) => format!("out of memory while reading {file}: {e}"),
        _ if value_type => match db {
            Db::Mirror => format!(
                "the mirror database (pymirror.db) holds a value of the wrong type: {e}; {NOT_WRITTEN_BY_US}"
            ),
            Db::VerifyLog => format!(
                "verify's log (verify.db) holds a value of the wrong type: {e}; delete it (it holds only verify's checkpoint and findings): the next verify starts from the beginning"
            ),
        },
        _ => format!("{what} ({file}): {e}"),
    }
}

pub struct State {
    conn: Connection,
    /// Read `immutable`: the file alone, without its WAL and without locks.
    immutable: bool,
    /// Where verify records, when this connection is a verify's (see `verify_log.rs`).
    log: Option<VerifyLog>,
}

impl State {
    fn new(conn: Connection, immutable: bool) -> State {
        State {
            conn,
            immutable,
            log: None,
        }
    }

    /// Open the database to write: a sync (holding the mirror lock), or a verify that repairs
    /// (holding it too). The schema is migrated to this binary's; a database written by a
    /// newer pymirror is refused.
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
        // Room for every statement a project's sync runs, so none is parsed twice; and plans
        // that do not depend on the values bound (SQLite otherwise compiles a cached join
        // again each time its parameters change).
        conn.set_prepared_statement_cache_capacity(64);
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        let found = schema_version(&conn)?;
        if found > migrate::latest() {
            return Err(StateError::TooNew {
                path: path.display().to_string(),
                found,
                known: migrate::latest(),
            });
        }
        migrate::apply(&mut conn)?;
        Ok(State::new(conn, false))
    }

    /// Open the database read-only for a short read (`status`, `sync --dry-run`): nothing is
    /// written, not even a migration (a schema other than this binary's is refused, saying
    /// what to run), and nothing is created beside the file.
    ///
    /// A read-only reader of a WAL database creates the `-wal` and `-shm` files when they are
    /// missing (no writer has it open) and cannot remove them; a user who may not write the
    /// directory cannot create them, and cannot read at all. Then the database is opened
    /// `immutable` instead, which creates nothing; should a sync start and checkpoint during
    /// the read, the reader may fail ("malformed"), never the sync: it writes nothing.
    /// [`State::with_read_only`] reads once more when that happens.
    pub fn open_read_only(path: &Path) -> Result<State> {
        let immutable = !wal_exists(path);
        let conn = connect_read_only(path, immutable)?;
        check_schema(schema_version(&conn)?, path)?;
        Ok(State::new(conn, immutable))
    }

    /// `read` on [`State::open_read_only`]; when it fails and a sync has begun writing the
    /// database meanwhile (its WAL appeared during an `immutable` read), once more, reading
    /// beside the sync.
    pub fn with_read_only<T>(path: &Path, read: impl Fn(&State) -> Result<T>) -> Result<T> {
        let immutable = !wal_exists(path);
        match State::open_read_only(path).and_then(|state| read(&state)) {
            Err(_) if immutable && wal_exists(path) => {
                State::open_read_only(path).and_then(|state| read(&state))
            }
            result => result,
        }
    }

    /// A read-only connection for a long read beside a running sync: a verify that only
    /// checks, and the threads of every verify. It reads through the WAL, so a sync may write
    /// meanwhile, and creates the `-wal` and `-shm` files when they are missing (the next
    /// sync removes them). A user who may not create them reads the file `immutable` instead
    /// ([`State::reads_immutable`]): a sync that starts meanwhile may then make it fail.
    pub fn open_reader(path: &Path) -> Result<State> {
        let conn = connect_read_only(path, false)?;
        match schema_version(&conn) {
            Err(e) if cannot_create_wal(&e) && !wal_exists(path) => {
                let conn = connect_read_only(path, true)?;
                check_schema(schema_version(&conn)?, path)?;
                Ok(State::new(conn, true))
            }
            found => {
                check_schema(found?, path)?;
                Ok(State::new(conn, false))
            }
        }
    }

    /// An empty database in memory (a dry run on a mirror that has never synced).
    pub fn in_memory() -> Result<State> {
        let mut conn = Connection::open_in_memory()?;
        migrate::apply(&mut conn)?;
        Ok(State::new(conn, false))
    }

    /// Whether this connection reads the file `immutable` (see [`State::open_reader`]).
    pub fn reads_immutable(&self) -> bool {
        self.immutable
    }
}

fn wal_exists(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Path::new(&wal).exists()
}

/// A read-only connection through a `file:` URI (percent-encoded, so any path works; a
/// relative path made absolute).
fn connect_read_only(path: &Path, immutable: bool) -> Result<Connection> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let uri = url::Url::from_file_path(&absolute)
        .map_err(|()| StateError::Sql(rusqlite::Error::InvalidPath(absolute.clone())))?;
    let uri = match immutable {
        false => format!("{uri}?mode=ro"),
        true => format!("{uri}?mode=ro&immutable=1"),
    };
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 10000;")?;
    Ok(conn)
}

/// A read-only reader of a WAL database it may not create the `-wal` and `-shm` of.
fn cannot_create_wal(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

/// The newest migration recorded; 0 for a database without any (a new, empty file).
fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )
}

/// A reader needs exactly this binary's schema: only a sync migrates.
fn check_schema(found: i64, path: &Path) -> Result<()> {
    let known = migrate::latest();
    let path = path.display().to_string();
    match found.cmp(&known) {
        Ordering::Equal => Ok(()),
        Ordering::Less => Err(StateError::Schema { path, found, known }),
        Ordering::Greater => Err(StateError::TooNew { path, found, known }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ProjectName, Serial};

    /// A mirror database with a little of everything a status reads, closed (so that, as
    /// after a sync, no `-wal` or `-shm` is left beside it).
    fn synced_db(dir: &Path) -> std::path::PathBuf {
        let db = dir.join("pymirror.db");
        let mut state = State::open(&db).unwrap();
        let change = Change {
            name: ProjectName::new("demo").unwrap(),
            display_name: "Demo".into(),
            serial: Serial(7),
            first_serial: Serial(5),
            conditional: false,
        };
        state.enqueue(&[change], Serial(9)).unwrap();
        let run = state.start_run().unwrap();
        state.finish_run(run, "complete", "synced").unwrap();
        drop(state);
        db
    }

    /// The bytes and modification time of the database, and the files beside it.
    fn snapshot(db: &Path) -> (Vec<u8>, std::time::SystemTime, Vec<String>) {
        let mut beside: Vec<String> = std::fs::read_dir(db.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        let mtime = std::fs::metadata(db).unwrap().modified().unwrap();
        (std::fs::read(db).unwrap(), mtime, beside)
    }

    fn set_schema(db: &Path, sql: &str) {
        let conn = Connection::open(db).unwrap();
        conn.execute_batch(sql).unwrap();
    }

    #[test]
    fn a_read_only_open_writes_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_db(dir.path());
        let before = snapshot(&db);
        assert_eq!(before.2, ["pymirror.db"]);
        // Past the filesystem's timestamp granularity, so a write would show in the mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let read = State::with_read_only(&db, |state| {
            Ok((
                state.fully_synced_serial()?,
                state.changelog_serial()?,
                state.totals()?,
                state.pending(10)?.len(),
                state.last_run()?.and_then(|r| r.outcome),
            ))
        })
        .unwrap();
        assert_eq!(
            read,
            (
                Serial(4),
                Some(Serial(9)),
                (0, 0, 0),
                1,
                Some("complete".into())
            )
        );
        assert!(State::open_read_only(&db).unwrap().reads_immutable());
        assert_eq!(snapshot(&db), before);
    }

    #[test]
    fn a_read_only_open_beside_a_writer_reads_what_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_db(dir.path());
        let mut writer = State::open(&db).unwrap();
        writer.set_filters("new").unwrap();
        let reader = State::open_read_only(&db).unwrap();
        assert!(!reader.reads_immutable(), "the WAL is read");
        assert_eq!(reader.filters().unwrap().as_deref(), Some("new"));
        let reader = State::open_reader(&db).unwrap();
        assert_eq!(reader.filters().unwrap().as_deref(), Some("new"));
        assert!(
            reader.conn.execute("DELETE FROM todo", []).is_err(),
            "a reader cannot write"
        );
    }

    #[test]
    fn readers_refuse_an_older_schema_saying_what_to_run_and_leave_it_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_db(dir.path());
        let known = migrate::latest();
        set_schema(
            &db,
            &format!("DELETE FROM schema_migrations WHERE version = {known}"),
        );
        let before = snapshot(&db);
        let expected = format!(
            "the mirror database at {} has schema version {}, this pymirror needs {known}; \
             run `pymirror sync` once to upgrade it",
            db.display(),
            known - 1
        );
        let err = State::open_read_only(&db).err().unwrap();
        assert_eq!(err.to_string(), expected);
        let err = State::open_reader(&db).err().unwrap();
        assert_eq!(err.to_string(), expected);
        assert_eq!(snapshot(&db).0, before.0, "not migrated");
        assert_eq!(snapshot(&db).1, before.1);
    }

    #[test]
    fn every_open_refuses_a_newer_schema_saying_what_to_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_db(dir.path());
        set_schema(
            &db,
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'x', 0)",
        );
        let expected = format!(
            "the mirror database at {} was written by a newer pymirror (schema 99 > {}); \
             use that version or newer",
            db.display(),
            migrate::latest()
        );
        for open in [State::open_read_only, State::open_reader, State::open] {
            assert_eq!(open(&db).err().unwrap().to_string(), expected);
        }
    }

    #[test]
    fn only_damage_sqlite_detects_calls_for_a_backup() {
        let failure = |code| {
            StateError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
            .to_string()
        };
        for code in [rusqlite::ffi::SQLITE_CORRUPT, rusqlite::ffi::SQLITE_NOTADB] {
            let message = failure(code);
            assert!(message.contains("damaged"), "{message}");
            assert!(message.contains("backup"), "{message}");
        }
        for (code, says) in [
            (rusqlite::ffi::SQLITE_BUSY, "locked by another process"),
            (rusqlite::ffi::SQLITE_FULL, "is full"),
            (rusqlite::ffi::SQLITE_IOERR, "I/O error"),
            (rusqlite::ffi::SQLITE_CONSTRAINT, "bug in pymirror"),
            (rusqlite::ffi::SQLITE_READONLY, "cannot write"),
            (rusqlite::ffi::SQLITE_CANTOPEN, "cannot open"),
        ] {
            let message = failure(code);
            assert!(message.contains(says), "{message}");
            assert!(!message.contains("backup"), "{message}");
        }
        let message = StateError::VerifyLog(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        ))
        .to_string();
        assert!(message.contains("verify.db") && message.contains("delete it"));
        assert!(!message.contains("backup"), "{message}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_called_damage() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_db(dir.path());
        set_schema(&db, "UPDATE todo SET attempts = 'many'");
        let state = State::open(&db).unwrap();
        let message = state.pending(10).err().unwrap().to_string();
        assert!(message.contains("wrong type"), "{message}");
        assert!(!message.contains("backup"), "{message}");

        set_schema(&db, "UPDATE todo SET attempts = 0, name = 'Not Normalized'");
        let message = state.todo().err().unwrap().to_string();
        assert!(message.contains("cannot read"), "{message}");
        assert!(!message.contains("backup"), "{message}");
    }

    #[test]
    fn a_file_that_is_no_database_is_called_damage() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pymirror.db");
        std::fs::write(&db, vec![b'x'; 4096]).unwrap();
        for open in [State::open_read_only, State::open_reader, State::open] {
            let message = open(&db).err().unwrap().to_string();
            assert!(message.contains("damaged"), "{message}");
            assert!(message.contains("backup"), "{message}");
        }
    }
}
