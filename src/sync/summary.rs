//! What a run did, for the closing log line, the run record and the exit code.

use std::time::Duration;

use indicatif::HumanBytes;

use crate::types::Serial;

#[derive(Debug, Default)]
pub struct Summary {
    pub projects_synced: u64,
    /// Asked conditionally (a serial-less feed) and unchanged upstream.
    pub projects_unchanged: u64,
    pub projects_removed: u64,
    pub projects_failed: u64,
    pub files_downloaded: u64,
    pub bytes_downloaded: u64,
    /// Refused upstream entries and invalid names: counted as failures.
    pub refused: u64,
    pub serial: Serial,
    pub elapsed: Duration,
    pub interrupted: bool,
    /// Removals held back by the mass-delete guard.
    pub deletions_refused: u64,
    /// The disk error that stopped the run.
    pub disk_error: Option<String>,
    /// Why the change feed was not read to its end (`max_feed_rows`).
    pub feed_incomplete: Option<String>,
}

impl Summary {
    pub fn succeeded(&self) -> bool {
        self.projects_failed == 0
            && self.refused == 0
            && !self.interrupted
            && self.deletions_refused == 0
            && self.disk_error.is_none()
            && self.feed_incomplete.is_none()
    }

    pub fn outcome(&self) -> &'static str {
        if self.interrupted {
            "interrupted"
        } else if self.succeeded() {
            "complete"
        } else {
            "partial"
        }
    }

    pub fn line(&self) -> String {
        let unchanged = match self.projects_unchanged {
            0 => String::new(),
            n => format!(" ({n} more asked and unchanged)"),
        };
        format!(
            "sync {}: {} projects synced{unchanged}, {} removed, {} files ({}) downloaded, {} failures, serial {} reached, {:.1}s",
            self.outcome(),
            self.projects_synced,
            self.projects_removed,
            self.files_downloaded,
            HumanBytes(self.bytes_downloaded),
            self.projects_failed + self.refused + self.deletions_refused,
            self.serial,
            self.elapsed.as_secs_f64()
        )
    }
}
