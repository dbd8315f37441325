//! `held_back`: what the cooldown holds back of each project, and when the next file comes
//! of age (a sync queues the project then: no upstream change announces it).

use rusqlite::{Transaction, params};

use super::{Change, Result, State, StateError};
use crate::types::{HeldFile, ProjectName, Serial};

/// What `status` shows of the cooldown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HeldBackTotals {
    pub files: u64,
    pub bytes: u64,
    pub projects: u64,
    /// Unix seconds: when the next held-back file comes of age.
    pub next_release: Option<i64>,
}

impl State {
    /// Projects holding back a file that comes of age at `now` or before, as changes to
    /// queue at the serial they were judged at. `first_serial` is what they hold the fully
    /// synced serial back to (past the feed's: coming of age is no upstream change).
    pub fn held_back_due(&self, now: i64, first_serial: Serial) -> Result<Vec<Change>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display_name, serial FROM held_back WHERE matures_at <= ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, display_name, serial) = row?;
            let name =
                ProjectName::new(&name).map_err(|e| StateError::InvalidRow(e.to_string()))?;
            out.push(Change {
                name,
                display_name,
                serial: Serial::from_db(serial),
                first_serial,
                conditional: false,
            });
        }
        Ok(out)
    }

    pub fn held_back_totals(&self) -> Result<HeldBackTotals> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(files), 0), COALESCE(SUM(bytes), 0), COUNT(*), MIN(matures_at)
             FROM held_back",
            [],
            |r| {
                Ok(HeldBackTotals {
                    files: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                    projects: r.get::<_, i64>(2)? as u64,
                    next_release: r.get(3)?,
                })
            },
        )?)
    }
}

/// Record what the cooldown holds back of a project judged at `serial` (nothing: forget it).
pub(super) fn put_held_back(
    tx: &Transaction<'_>,
    name: &ProjectName,
    display_name: &str,
    serial: Serial,
    held: &[HeldFile],
) -> Result<()> {
    let Some(next) = held.iter().map(|f| f.matures_at).min() else {
        tx.prepare_cached("DELETE FROM held_back WHERE name = ?1")?
            .execute([name.as_str()])?;
        return Ok(());
    };
    let bytes: u64 = held.iter().map(|f| f.size).sum();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO held_back (name, display_name, serial, files, bytes, matures_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        name.as_str(),
        display_name,
        serial.to_db(),
        held.len() as i64,
        bytes as i64,
        next
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Filename, ProjectSnapshot};

    fn held(filename: &str, size: u64, matures_at: i64) -> HeldFile {
        HeldFile {
            filename: Filename::new(filename).unwrap(),
            size,
            matures_at,
        }
    }

    #[test]
    fn what_is_held_back_is_due_when_it_comes_of_age_and_forgotten_once_released() {
        let mut state = State::in_memory().unwrap();
        let name = ProjectName::new("demo").unwrap();
        let mut snap = ProjectSnapshot {
            name: name.clone(),
            display_name: "Demo".into(),
            serial: Serial(5),
            versions: Vec::new(),
            files: Vec::new(),
            status: None,
            refused: Vec::new(),
            validators: None,
            held_back: vec![held("demo-2.tar.gz", 10, 200), held("demo-2.zip", 5, 100)],
        };
        state.record_project(&snap).unwrap();
        // Not held at all (every file young): remembered all the same.
        let other = ProjectName::new("other").unwrap();
        state
            .remove_holding_back(
                &other,
                "Other",
                Serial(6),
                &[held("other-1.tar.gz", 1, 300)],
            )
            .unwrap();
        let totals = state.held_back_totals().unwrap();
        assert_eq!(
            totals,
            HeldBackTotals {
                files: 3,
                bytes: 16,
                projects: 2,
                next_release: Some(100)
            }
        );
        let due = |now| -> Vec<(String, String, u64)> {
            state
                .held_back_due(now, Serial(9))
                .unwrap()
                .into_iter()
                .map(|c| (c.name.to_string(), c.display_name, c.serial.0))
                .collect()
        };
        assert!(due(99).is_empty());
        assert_eq!(due(100), [("demo".into(), "Demo".into(), 5)]);
        assert_eq!(due(300).len(), 2);
        // Judged again with nothing held back: forgotten; removed: forgotten too.
        snap.held_back.clear();
        state.record_project(&snap).unwrap();
        state.remove_project(&other, Serial(6)).unwrap();
        assert_eq!(state.held_back_totals().unwrap(), HeldBackTotals::default());
    }
}
