//! Facts about the mirror as a whole, in `meta`: how far the change feed has been read (and
//! what that makes the fully synced serial), the filters last applied, and whether the root
//! pages must be written again.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, State, StateError};
use crate::types::Serial;
use crate::types::keys::RootChange;

pub(super) const CHANGELOG_SERIAL: &str = "changelog_serial";
/// The canonical filter configuration the mirror was last evaluated against.
const FILTERS: &str = "filters";

/// Set when a project's serial changed since the root pages were written (the JSON root lists
/// serials); with [`ROOT_NAMES_DIRTY`] too when a project came, went or was renamed.
const ROOT_DIRTY: &str = "root_dirty";
const ROOT_NAMES_DIRTY: &str = "root_names_dirty";
/// Which change feed the last plan read (`upstream::feed::Source::key`).
const CHANGE_FEED: &str = "change_feed";
/// `<serial> <unix seconds>`: upstream's `changelog_last_serial` was found at or beyond this
/// feed serial at that time.
const FEED_CONFIRMED: &str = "feed_confirmed";

impl State {
    /// How far the change feed has been read (and queued). `None` before the first sync.
    pub fn changelog_serial(&self) -> Result<Option<Serial>> {
        get_meta(&self.conn, CHANGELOG_SERIAL)?
            .map(|s| {
                s.parse()
                    .map(Serial)
                    .map_err(|_| StateError::InvalidRow(format!("changelog_serial {s:?}")))
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

    /// Which change feed the last plan read, as recorded (`None` before the first).
    pub fn change_feed(&self) -> Result<Option<String>> {
        get_meta(&self.conn, CHANGE_FEED)
    }

    pub fn set_change_feed(&mut self, key: &str) -> Result<()> {
        put_meta(&self.conn, CHANGE_FEED, key)
    }

    /// The feed serial upstream last confirmed, and when (unix seconds).
    pub fn feed_confirmed(&self) -> Result<Option<(Serial, i64)>> {
        Ok(get_meta(&self.conn, FEED_CONFIRMED)?.and_then(|v| {
            let (serial, at) = v.split_once(' ')?;
            Some((Serial(serial.parse().ok()?), at.parse().ok()?))
        }))
    }

    pub fn set_feed_confirmed(&mut self, serial: Serial, at: i64) -> Result<()> {
        put_meta(&self.conn, FEED_CONFIRMED, &format!("{serial} {at}"))
    }

    /// The filter configuration (canonical text) the mirror was last evaluated against;
    /// `None` before the first sync with a pymirror that has filters.
    pub fn filters(&self) -> Result<Option<String>> {
        get_meta(&self.conn, FILTERS)
    }

    pub fn set_filters(&mut self, canonical: &str) -> Result<()> {
        put_meta(&self.conn, FILTERS, canonical)
    }

    /// What the root pages must be regenerated for: a project was added, changed or removed
    /// since they were last written, possibly by a run that was killed. `None`: nothing.
    pub fn root_dirty(&self) -> Result<Option<RootChange>> {
        let set = |key| Ok::<_, StateError>(get_meta(&self.conn, key)?.is_some());
        Ok(if set(ROOT_NAMES_DIRTY)? {
            Some(RootChange::Names)
        } else if set(ROOT_DIRTY)? {
            Some(RootChange::Serials)
        } else {
            None
        })
    }

    pub fn root_written(&mut self) -> Result<()> {
        self.conn.execute(
            "DELETE FROM meta WHERE key IN (?1, ?2)",
            [ROOT_DIRTY, ROOT_NAMES_DIRTY],
        )?;
        Ok(())
    }
}

pub(super) fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(super) fn put_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// A project's serial changed: the JSON root lists it.
pub(super) fn set_root_dirty(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    set_flag(tx, ROOT_DIRTY)
}

/// A project came, went or was renamed: every root page lists it.
pub(super) fn set_root_names_dirty(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    set_root_dirty(tx)?;
    set_flag(tx, ROOT_NAMES_DIRTY)
}

/// Cached: set once per project recorded.
fn set_flag(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, '1')")?
        .execute([key])?;
    Ok(())
}
