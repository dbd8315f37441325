//! An adoption in progress (`pymirror adopt`): a marker in `meta` says one is unfinished and
//! how far it got, committed with each batch of projects it records, so a killed adoption
//! continues where it stopped and a sync refuses to start before it is done.

use super::meta::{CHANGELOG_SERIAL, get_meta, put_meta};
use super::projects::record_in;
use super::queue::{Change, put_todo};
use super::{Result, State};
use crate::types::{ProjectName, ProjectSnapshot, Serial};

/// The last project directory an unfinished adoption recorded (`""`: none yet).
const ADOPT_AFTER: &str = "adopt_after";
/// The first project of the last batch, whose pages may not be written yet.
const ADOPT_PAGES_FROM: &str = "adopt_pages_from";
/// Set by an adoption, which writes pages only for projects with something to fetch: every
/// project whose name sorts after it still has the adopted tree's pages. The next sync
/// rewrites them from the database, moving it on, before it asks upstream anything.
const ADOPTED_PAGES_AFTER: &str = "adopted_pages_after";
/// Followed by the path of a file an unfinished adoption found damaged: not an orphan.
const ADOPT_DAMAGED: &str = "adopt_damaged ";
/// Sorts just after every [`ADOPT_DAMAGED`] key.
const ADOPT_DAMAGED_END: &str = "adopt_damaged!";

/// Where an unfinished adoption stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptMarker {
    /// The last project directory name done (skipped on resume; `""`: none).
    pub after: String,
    /// Pages of recorded projects from this name to `after` may still be bandersnatch's.
    pub pages_from: Option<String>,
}

/// One project adopted: what is held, and whether something is missing or damaged (then it is
/// queued, unconditionally, at its serial, so the next sync fetches exactly that).
pub struct Adopted {
    pub snapshot: ProjectSnapshot,
    pub queue: bool,
}

impl State {
    /// The marker of an unfinished adoption; `None` when there is none.
    pub fn adoption(&self) -> Result<Option<AdoptMarker>> {
        let get = |key: &str| get_meta(&self.conn, key);
        Ok(get(ADOPT_AFTER)?.map(|after| AdoptMarker {
            after,
            pages_from: get(ADOPT_PAGES_FROM).ok().flatten(),
        }))
    }

    /// For the writes of an adoption, which insert files in random path order: a page cache
    /// (64 MiB) that holds the path index of a few million files, so each batch reads and
    /// writes its index pages once rather than once per file.
    pub fn bulk_writes(&self) -> Result<()> {
        self.conn.execute_batch("PRAGMA cache_size = -65536;")?;
        Ok(())
    }

    /// Start an adoption (a fresh database): the marker, nothing done yet, every page the
    /// adopted tree's.
    pub fn begin_adoption(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        put_meta(&tx, ADOPT_AFTER, "")?;
        put_meta(&tx, ADOPTED_PAGES_AFTER, "")?;
        tx.commit()?;
        Ok(())
    }

    /// Projects whose names sort after this still have the adopted tree's pages (`None`:
    /// every page is pymirror's).
    pub fn adopted_pages_after(&self) -> Result<Option<String>> {
        get_meta(&self.conn, ADOPTED_PAGES_AFTER)
    }

    /// Up to `limit` recorded projects named after `after`, in name order.
    pub fn project_names_after(&self, after: &str, limit: usize) -> Result<Vec<ProjectName>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM projects WHERE name > ?1 ORDER BY name LIMIT ?2")?;
        let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|name| {
            let name = name?;
            ProjectName::new(&name)
                .map_err(|_| super::StateError::InvalidRow(format!("project name {name:?}")))
        })
        .collect()
    }

    /// How many recorded projects are named after `after`.
    pub fn projects_after_count(&self, after: &str) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM projects WHERE name > ?1",
            [after],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// The adopted tree's pages are rewritten up to `last` (`None`: all of them).
    pub fn adopted_pages_written(&mut self, last: Option<&str>) -> Result<()> {
        match last {
            Some(last) => put_meta(&self.conn, ADOPTED_PAGES_AFTER, last),
            None => {
                self.conn
                    .execute("DELETE FROM meta WHERE key = ?1", [ADOPTED_PAGES_AFTER])?;
                Ok(())
            }
        }
    }

    /// Record a batch of adopted projects, queue the damaged ones and `fetch` (projects whose
    /// page could not be read: fetched whole), note the `damaged` paths, and move the marker
    /// past `last` (the last directory looked at), in one transaction.
    pub fn record_adopted(
        &mut self,
        batch: &[Adopted],
        fetch: &[ProjectName],
        damaged: &[String],
        last: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        for path in damaged {
            put_meta(&tx, &format!("{ADOPT_DAMAGED}{path}"), "")?;
        }
        let mut queue: Vec<Change> = fetch
            .iter()
            .map(|name| Change {
                name: name.clone(),
                display_name: name.to_string(),
                serial: Serial(0),
                first_serial: Serial(0),
                conditional: false,
            })
            .collect();
        for a in batch {
            record_in(&tx, &a.snapshot)?;
            if a.queue {
                queue.push(Change {
                    name: a.snapshot.name.clone(),
                    display_name: a.snapshot.display_name.clone(),
                    serial: a.snapshot.serial,
                    first_serial: a.snapshot.serial,
                    conditional: false,
                });
            }
        }
        put_todo(&tx, &queue, false)?;
        put_meta(&tx, ADOPT_AFTER, last)?;
        if let Some(first) = batch.first() {
            put_meta(&tx, ADOPT_PAGES_FROM, first.snapshot.name.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The adoption is done: the marker goes, and the feed serial (bandersnatch's `status`)
    /// is set when the tree had one, in one transaction.
    pub fn finish_adoption(&mut self, feed_serial: Option<Serial>) -> Result<()> {
        let tx = self.conn.transaction()?;
        if let Some(serial) = feed_serial {
            put_meta(&tx, CHANGELOG_SERIAL, &serial.0.to_string())?;
        }
        tx.execute(
            "DELETE FROM meta WHERE key IN (?1, ?2) OR (key >= ?3 AND key < ?4)",
            [
                ADOPT_AFTER,
                ADOPT_PAGES_FROM,
                ADOPT_DAMAGED,
                ADOPT_DAMAGED_END,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every path an unfinished adoption found damaged with `from <= path < to`.
    pub fn adopt_damaged_between(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT substr(key, ?3) FROM meta WHERE key >= ?1 AND key < ?2 ORDER BY key",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![
                format!("{ADOPT_DAMAGED}{from}"),
                format!("{ADOPT_DAMAGED}{to}"),
                ADOPT_DAMAGED.len() as i64 + 1
            ],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every path (relative to `web/`) recorded with `from <= path < to`, sorted.
    pub fn paths_between(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT path FROM files WHERE path >= ?1 AND path < ?2 ORDER BY path",
        )?;
        let rows = stmt.query_map([from, to], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FileRecord, RemoteFile};

    fn adopted(name: &str, serial: u64, queue: bool) -> Adopted {
        let hex = "ab".repeat(32);
        let record = FileRecord::for_test("1.0", &format!("{name}-1.0.tar.gz"), &hex, 3);
        let url = reqwest::Url::parse("file:///adopted").unwrap();
        Adopted {
            snapshot: ProjectSnapshot::for_test(name, serial, vec![RemoteFile::known(record, url)]),
            queue,
        }
    }

    #[test]
    fn an_adoption_records_batches_queues_damage_and_finishes_with_the_feed_serial() {
        let mut state = State::in_memory().unwrap();
        assert_eq!(state.adoption().unwrap(), None);
        state.begin_adoption().unwrap();
        assert_eq!(state.adoption().unwrap().unwrap().after, "");
        state
            .record_adopted(
                &[adopted("a", 5, false), adopted("b", 7, true)],
                &[],
                &["packages/ab/cd/x/b-1.0.tar.gz".into()],
                "b",
            )
            .unwrap();
        let damaged = |state: &State| state.adopt_damaged_between("packages/ab/", "packages/ab0");
        assert_eq!(damaged(&state).unwrap(), ["packages/ab/cd/x/b-1.0.tar.gz"]);
        assert!(
            state
                .adopt_damaged_between("packages/ac/", "packages/ac0")
                .unwrap()
                .is_empty()
        );
        let marker = state.adoption().unwrap().unwrap();
        assert_eq!(marker.after, "b");
        assert_eq!(marker.pages_from.as_deref(), Some("a"));
        let todo = state.todo().unwrap();
        assert_eq!(todo.len(), 1);
        assert_eq!((todo[0].name.as_str(), todo[0].serial), ("b", Serial(7)));
        assert_eq!(state.totals().unwrap().0, 2);
        assert_eq!(state.changelog_serial().unwrap(), None);
        state.finish_adoption(Some(Serial(9))).unwrap();
        assert_eq!(state.adoption().unwrap(), None);
        assert!(damaged(&state).unwrap().is_empty());
        assert_eq!(state.changelog_serial().unwrap(), Some(Serial(9)));
    }

    #[test]
    fn the_adopted_pages_marker_moves_through_the_projects_in_name_order_then_goes() {
        let mut state = State::in_memory().unwrap();
        assert_eq!(state.adopted_pages_after().unwrap(), None);
        state.begin_adoption().unwrap();
        let batch = [
            adopted("c", 1, false),
            adopted("a", 1, false),
            adopted("b", 1, true),
        ];
        state.record_adopted(&batch, &[], &[], "c").unwrap();
        state.finish_adoption(None).unwrap();
        assert_eq!(state.adopted_pages_after().unwrap().as_deref(), Some(""));
        assert_eq!(state.projects_after_count("").unwrap(), 3);
        let names = |after, n| -> Vec<String> {
            let found = state.project_names_after(after, n).unwrap();
            found.iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(names("", 2), ["a", "b"]);
        assert_eq!(names("b", 2), ["c"]);
        assert!(names("c", 2).is_empty());
        state.adopted_pages_written(Some("b")).unwrap();
        assert_eq!(state.adopted_pages_after().unwrap().as_deref(), Some("b"));
        assert_eq!(state.projects_after_count("b").unwrap(), 1);
        state.adopted_pages_written(None).unwrap();
        assert_eq!(state.adopted_pages_after().unwrap(), None);
    }
}
