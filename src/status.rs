//! `pymirror status`: where the mirror stands, for an operator or a monitoring system.
//!
//! Reads the state database read-only without taking the lock (WAL lets it read beside a
//! running sync; a user who may not write the mirror can run it; it writes and creates
//! nothing) and asks upstream for its current serial, one request, to show the lag.

use std::fmt::Write as _;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::config::Config;
use crate::filter::cooldown;
use crate::state::{HeldBackTotals, Pending, RunRecord, State};
use crate::storage::Layout;
use crate::types::Serial;
use crate::upstream::Upstream;
use crate::upstream::feed::{Feed, Source};

/// At most this many pending projects are listed (the count is always exact).
const PENDING_SHOWN: usize = 100;

#[derive(Debug, Serialize)]
pub struct Report {
    pub directory: String,
    /// Every project is mirrored at or beyond this serial (also in `<directory>/status`).
    pub serial: Serial,
    /// How far the change feed has been read and queued.
    pub feed_serial: Option<Serial>,
    pub upstream_serial: Option<u64>,
    pub upstream_error: Option<String>,
    /// The change feed the last sync read (`xmlrpc`, `root`, `root-without-serials`,
    /// `allowlist`), and what it means.
    pub change_feed: Option<String>,
    pub change_feed_description: Option<String>,
    pub lag: Option<u64>,
    pub projects: u64,
    pub files: u64,
    pub bytes: u64,
    pub pending_count: u64,
    pub pending: Vec<Pending>,
    /// What the cooldown holds back.
    pub held_back: HeldBack,
    pub last_run: Option<RunRecord>,
}

#[derive(Debug, Serialize)]
pub struct HeldBack {
    /// The configured cooldown, in seconds (0: off).
    pub cooldown: u64,
    pub files: u64,
    pub bytes: u64,
    pub projects: u64,
    /// When the next held-back file comes of age: unix seconds, and as RFC 3339. The first
    /// sync from then on mirrors it.
    pub next_release: Option<i64>,
    pub next_release_at: Option<String>,
}

pub async fn report(cfg: &Config) -> anyhow::Result<Report> {
    let layout = Layout::new(&cfg.directory);
    if !layout.db.exists() {
        anyhow::bail!(
            "no mirror state at {}; run `pymirror sync` first (or fix `directory`)",
            layout.db.display()
        );
    }
    // Read-only, without migrating (a newer pymirror's status must not change the schema under
    // a running older sync) and creating nothing beside the database; on a blocking thread,
    // off the async runtime's.
    let db = layout.db.clone();
    let read = tokio::task::spawn_blocking(move || {
        State::with_read_only(&db, |state| {
            Ok((
                state.fully_synced_serial()?,
                state.changelog_serial()?,
                state.totals()?,
                state.pending_count()?,
                state.pending(PENDING_SHOWN)?,
                state.last_run()?,
                state.change_feed()?,
                state.held_back_totals()?,
            ))
        })
    });
    let (
        serial,
        feed_serial,
        (projects, files, bytes),
        pending_count,
        pending,
        last_run,
        feed,
        held,
    ) = read.await??;
    let HeldBackTotals {
        files: held_files,
        bytes: held_bytes,
        projects: held_projects,
        next_release,
    } = held;
    // A feed without serials has none to compare: not worth reading a whole listing for.
    let serialless = feed
        .as_deref()
        .and_then(Source::from_key)
        .is_some_and(|s| !s.has_serials());
    let (upstream_serial, upstream_error) = match serialless {
        true => (None, None),
        false => match upstream_serial(cfg).await {
            Ok(n) => (n, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        },
    };
    let change_feed_description = feed
        .as_deref()
        .and_then(Source::from_key)
        .map(|s| s.to_string());
    Ok(Report {
        directory: cfg.directory.display().to_string(),
        serial,
        feed_serial,
        lag: upstream_serial.map(|u| u.saturating_sub(serial.0)),
        upstream_serial,
        upstream_error,
        change_feed: feed,
        change_feed_description,
        projects,
        files,
        bytes,
        pending_count,
        pending,
        held_back: HeldBack {
            cooldown: cfg.filters.spec().content.cooldown,
            files: held_files,
            bytes: held_bytes,
            projects: held_projects,
            next_release,
            next_release_at: next_release.map(cooldown::show_time),
        },
        last_run,
    })
}

async fn upstream_serial(cfg: &Config) -> anyhow::Result<Option<u64>> {
    let upstream = Upstream::new(cfg)?;
    Feed::new(&upstream, cfg.change_feed).last_serial().await
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mirror:    {}", self.directory);
        let feed = self.feed_serial.map_or("never".into(), |s| s.to_string());
        let _ = writeln!(
            out,
            "serial:    {} fully synced (change feed read to {feed})",
            self.serial
        );
        match (&self.upstream_serial, &self.upstream_error) {
            (Some(u), _) => {
                let _ = writeln!(out, "upstream:  {u} (lag {})", self.lag.unwrap_or(0));
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "upstream:  unreachable: {e}");
            }
            (None, None) => {
                let _ = writeln!(out, "upstream:  no serials to compare");
            }
        }
        if let Some(feed) = &self.change_feed_description {
            let _ = writeln!(out, "feed:      {feed}");
        }
        let _ = writeln!(
            out,
            "holds:     {} projects, {} files, {}",
            self.projects,
            self.files,
            HumanBytes(self.bytes)
        );
        let _ = writeln!(out, "pending:   {} projects", self.pending_count);
        for p in &self.pending {
            let _ = writeln!(
                out,
                "  {} (serial {}, {} failed attempts){}",
                p.name,
                p.serial,
                p.attempts,
                p.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        if self.pending_count > self.pending.len() as u64 {
            let _ = writeln!(
                out,
                "  … and {} more",
                self.pending_count - self.pending.len() as u64
            );
        }
        let held = &self.held_back;
        if held.cooldown > 0 || held.files > 0 {
            let _ = write!(
                out,
                "cooldown:  {}, {} files ({}) of {} projects held back",
                cooldown::show_duration(held.cooldown),
                held.files,
                HumanBytes(held.bytes),
                held.projects
            );
            match (held.next_release, &held.next_release_at) {
                (Some(at), Some(shown)) => {
                    let wait = at - cooldown::unix_now();
                    let when = match wait > 0 {
                        true => format!(
                            "in {}",
                            indicatif::HumanDuration(std::time::Duration::from_secs(wait as u64))
                        ),
                        false => "due: the next sync mirrors it".into(),
                    };
                    let _ = writeln!(out, ", the next released at {shown} ({when})");
                }
                _ => {
                    let _ = writeln!(out);
                }
            }
        }
        match &self.last_run {
            Some(run) => {
                let _ = writeln!(
                    out,
                    "last run:  started {}, {}",
                    run.started,
                    match (&run.finished, &run.outcome) {
                        (Some(f), Some(o)) => format!("finished {f}, {o}"),
                        _ => "still running, or killed before it finished".into(),
                    }
                );
                if let Some(summary) = &run.summary {
                    let _ = writeln!(out, "           {summary}");
                }
            }
            None => {
                let _ = writeln!(out, "last run:  none");
            }
        }
        out
    }
}
