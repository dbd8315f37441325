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

    /// Start an adoption (a fresh database): the marker, nothing done yet.
    pub fn begin_adoption(&mut self) -> Result<()> {
        put_meta(&self.conn, ADOPT_AFTER, "")
    }

    /// Record a batch of adopted projects, queue the damaged ones and `fetch` (projects whose
    /// page could not be read: fetched whole), and move the marker past `last` (the last
    /// directory looked at), in one transaction.
    pub fn record_adopted(
        &mut self,
        batch: &[Adopted],
        fetch: &[ProjectName],
        last: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
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
            "DELETE FROM meta WHERE key IN (?1, ?2)",
            [ADOPT_AFTER, ADOPT_PAGES_FROM],
        )?;
        tx.commit()?;
        Ok(())
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
            snapshot: ProjectSnapshot {
                name: ProjectName::new(name).unwrap(),
                display_name: name.to_owned(),
                serial: Serial(serial),
                versions: vec!["1.0".into()],
                files: vec![RemoteFile::known(record, url)],
                status: None,
                refused: Vec::new(),
                validators: None,
                held_back: Vec::new(),
            },
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
            .record_adopted(&[adopted("a", 5, false), adopted("b", 7, true)], &[], "b")
            .unwrap();
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
        assert_eq!(state.changelog_serial().unwrap(), Some(Serial(9)));
    }
}
