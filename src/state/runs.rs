//! `runs`: one row per sync, started and finished, for `pymirror status`.

use rusqlite::{OptionalExtension, params};

use super::{Result, State};

/// One sync run; `finished` and `outcome` are empty for a run still going or killed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub started: String,
    pub finished: Option<String>,
    pub outcome: Option<String>,
    pub summary: Option<String>,
}

impl State {
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
}
