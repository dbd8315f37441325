//! The verify report: one line per problem and a summary, or one JSON document. Problems are
//! streamed from verify's log (`verify.db`), so a report of millions of problems needs no
//! memory for them.
//!
//! Exit codes: 0 the mirror is proven clean; 1 problems were found (repaired or not: each
//! says which); 2 verify could not run, or could not check everything and found nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use indicatif::HumanBytes;
use serde_json::json;

use crate::state::{ProblemRow, State, VerifyCounts};

use crate::types::problem::Kind;

pub struct Report {
    pub directory: String,
    pub run: i64,
    /// Every check ran to the end (not interrupted).
    pub complete: bool,
    pub resumed: bool,
    pub checks: String,
    /// The whole verify, across resumed runs.
    pub totals: VerifyCounts,
    /// This process's share.
    pub this_run: VerifyCounts,
    pub counts: BTreeMap<Kind, u64>,
    pub repaired: u64,
    pub not_repaired: u64,
    pub elapsed: Duration,
    pub repair: bool,
    pub delete_orphans: bool,
    pub dry_run: bool,
}

impl Report {
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    pub fn problems(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn exit_code(&self) -> u8 {
        if self.problems() > 0 {
            1
        } else if !self.complete || self.totals.unchecked > 0 {
            2
        } else {
            0
        }
    }

    /// What was (or, with `--dry-run`, would be) done about a problem.
    fn action(&self, row: &ProblemRow) -> Option<String> {
        match row.repair.as_deref() {
            Some("done") => Some(match row.problem.kind {
                Kind::Orphan => "deleted".into(),
                Kind::Drift => "queued for the next sync".into(),
                _ => "repaired".into(),
            }),
            Some(failed) => Some(failed.to_owned()),
            None if self.dry_run => row
                .problem
                .fix(self.repair, self.delete_orphans)
                .map(|fix| format!("would {fix}")),
            None => None,
        }
    }

    pub fn line(&self) -> String {
        let t = &self.totals;
        let mut line = format!(
            "verify {}: {} files ({}) and {} pages checked",
            if self.complete {
                "complete"
            } else {
                "interrupted (`pymirror verify --resume` continues it)"
            },
            t.files_checked,
            HumanBytes(t.bytes_checked),
            t.pages_checked
        );
        if self.checks.contains("upstream") {
            line.push_str(&format!(
                ", {} projects compared with upstream",
                t.projects_compared
            ));
        }
        line.push_str(&format!(
            "; {} missing, {} bad size, {} bad hash, {} bad pages, {} orphans, {} drift",
            self.count(Kind::Missing),
            self.count(Kind::BadSize),
            self.count(Kind::BadHash),
            self.count(Kind::BadPage),
            self.count(Kind::Orphan),
            self.count(Kind::Drift)
        ));
        if self.repaired + self.not_repaired > 0 {
            line.push_str(&format!(
                "; {} repaired, {} not",
                self.repaired, self.not_repaired
            ));
        }
        if t.unchecked > 0 {
            line.push_str(&format!(
                "; {} parts could not be checked (see the log)",
                t.unchecked
            ));
        }
        line.push_str(&format!("; {:.1}s", self.elapsed.as_secs_f64()));
        line
    }

    pub fn write_text(&self, state: &State, out: &mut dyn Write) -> anyhow::Result<()> {
        state.verify_for_each_problem(self.run, |row| {
            let p = &row.problem;
            write!(out, "{:<9} {}: {}", p.kind.as_str(), p.path, p.detail)?;
            match self.action(&row) {
                Some(action) => writeln!(out, " [{action}]"),
                None => writeln!(out),
            }
        })?;
        writeln!(out, "{}", self.line())?;
        Ok(())
    }

    pub fn write_json(&self, state: &State, out: &mut dyn Write) -> anyhow::Result<()> {
        let t = &self.totals;
        let head = json!({
            "directory": self.directory,
            "complete": self.complete,
            "resumed": self.resumed,
            "checks": self.checks.split(',').collect::<Vec<_>>(),
            "checked": t.files_checked + t.pages_checked,
            "files_checked": t.files_checked,
            "bytes_checked": t.bytes_checked,
            "pages_checked": t.pages_checked,
            "projects_compared": t.projects_compared,
            "unchecked": t.unchecked,
            "this_run": self.this_run,
            "missing": self.count(Kind::Missing),
            "bad_size": self.count(Kind::BadSize),
            "bad_hash": self.count(Kind::BadHash),
            "bad_page": self.count(Kind::BadPage),
            "orphans": self.count(Kind::Orphan),
            "drift": self.count(Kind::Drift),
            "problems_found": self.problems(),
            "repaired": self.repaired,
            "not_repaired": self.not_repaired,
            "dry_run": self.dry_run,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "exit_code": self.exit_code(),
        });
        // The head's fields, then the problems streamed into the same object.
        let head = serde_json::to_string(&head)?;
        out.write_all(&head.as_bytes()[..head.len() - 1])?;
        out.write_all(b",\"problems\":[")?;
        let mut first = true;
        state.verify_for_each_problem(self.run, |row| {
            if !std::mem::take(&mut first) {
                out.write_all(b",")?;
            }
            let p = &row.problem;
            let item = json!({
                "kind": p.kind.as_str(),
                "path": p.path,
                "detail": p.detail,
                "project": p.project,
                "action": self.action(&row),
            });
            serde_json::to_writer(&mut *out, &item)?;
            Ok(())
        })?;
        out.write_all(b"]}\n")?;
        Ok(())
    }
}
