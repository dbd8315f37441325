//! The state database (SQLite, WAL): what the mirror holds and what it still has to do.
//!
//! It is the source of truth for every page pymirror writes and every file it keeps; the tree
//! under `web/` is derived from it, never scanned to rebuild it.

mod meta;
mod migrate;
mod projects;
mod queue;
mod runs;
mod trash;
mod verify;

pub use queue::{Change, Pending, Todo, TodoCursor};
pub use runs::RunRecord;
pub use verify::{ExpectedFile, FileOwner, ProblemRow, VerifyBegin, VerifyCounts, VerifyRun};

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

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
pub struct State {
    conn: Connection,
}

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

    /// A read-only connection, for the threads that check beside the one that records.
    pub fn open_reader(path: &Path) -> Result<State> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Mapped reads: a verify reads the whole files table, a syscall per page would show.
        conn.execute_batch("PRAGMA busy_timeout = 10000;")?;
        Ok(State { conn })
    }
}
