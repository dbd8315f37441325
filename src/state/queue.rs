//! The work queue (`todo`): projects the feed or a filter change queued, walked a page at a
//! time by the sync, with the failures of earlier attempts; what `status` shows as pending.

use rusqlite::{OptionalExtension, params};

use super::meta::{CHANGELOG_SERIAL, put_meta};
use super::{Result, State, StateError};
use crate::types::{ProjectName, Serial};

/// A queued project.
#[derive(Debug, Clone)]
pub struct Todo {
    pub name: ProjectName,
    pub display_name: String,
    pub serial: Serial,
    pub attempts: u32,
    /// Queued by a serial-less feed: done without a change when upstream's page is as
    /// mirrored.
    pub conditional: bool,
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
    /// From a feed that cannot tell whether the project changed: ask upstream's page
    /// conditionally. Merged with an unconditional entry, unconditional wins.
    pub conditional: bool,
}

/// A queued project as `pymirror status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pending {
    pub name: String,
    pub serial: Serial,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl State {
    /// Queue `changes` (skipping those already mirrored at their serial) and advance the feed
    /// serial to `feed_serial`, atomically.
    pub fn enqueue(&mut self, changes: &[Change], feed_serial: Serial) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let queued = put_todo(&tx, changes, true)?;
        put_meta(&tx, CHANGELOG_SERIAL, &feed_serial.0.to_string())?;
        tx.commit()?;
        Ok(queued)
    }

    /// Queue part of a first run's listing, the feed serial left alone: only the
    /// transaction of the listing's last part records it, so a run killed before that lists
    /// again.
    pub fn enqueue_listed(&mut self, changes: &[Change]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let queued = put_todo(&tx, changes, true)?;
        tx.commit()?;
        Ok(queued)
    }

    /// Queue projects whatever serial they are mirrored at (a filter change makes the sync
    /// look at them again), merging with what is already queued for them.
    pub fn requeue(&mut self, changes: &[Change]) -> Result<()> {
        let tx = self.conn.transaction()?;
        put_todo(&tx, changes, false)?;
        tx.commit()?;
        Ok(())
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
            "SELECT name, display_name, serial, attempts, conditional FROM todo
             WHERE (attempts = 0) = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
        )?;
        loop {
            let rows = stmt.query_map(params![cursor.fresh, cursor.after, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, display_name, serial, attempts, conditional) = row?;
                let name =
                    ProjectName::new(&name).map_err(|e| StateError::InvalidRow(e.to_string()))?;
                out.push(Todo {
                    name,
                    display_name,
                    serial: Serial::from_db(serial),
                    attempts: attempts as u32,
                    conditional,
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
}

/// Queue `changes`, merging with what is queued (newest serial, oldest first serial);
/// `skip_mirrored`: leave out those mirrored at their serial already. How many were queued.
pub(super) fn put_todo(
    tx: &rusqlite::Transaction<'_>,
    changes: &[Change],
    skip_mirrored: bool,
) -> Result<usize> {
    let mut have = tx.prepare_cached("SELECT serial FROM projects WHERE name = ?1")?;
    let mut put = tx.prepare_cached(
        "INSERT INTO todo (name, display_name, serial, first_serial, conditional)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET serial = MAX(serial, excluded.serial),
             first_serial = MIN(COALESCE(first_serial, serial), excluded.first_serial),
             display_name = excluded.display_name,
             conditional = conditional AND excluded.conditional",
    )?;
    let mut queued = 0;
    for c in changes {
        // A conditional change says nothing about the serial: its page is asked.
        if skip_mirrored && !c.conditional {
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
            c.first_serial.to_db(),
            c.conditional
        ])?;
        queued += 1;
    }
    Ok(queued)
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
            conditional: false,
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
