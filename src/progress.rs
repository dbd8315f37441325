//! What the operator sees while a sync runs: indicatif bars on a terminal, nothing but log
//! lines under cron. Counters are atomics so download tasks can bump them without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    projects: Option<ProgressBar>,
    transfer: Option<ProgressBar>,
    bytes: AtomicU64,
    files: AtomicU64,
}

impl Progress {
    /// Bars only when `multi` is given (stderr is a terminal).
    pub fn new(multi: Option<&MultiProgress>) -> Progress {
        let (projects, transfer) = match multi {
            Some(m) => {
                let projects = m.add(ProgressBar::new(0));
                projects.set_style(
                    ProgressStyle::with_template("projects {bar:30} {pos}/{len} {wide_msg}")
                        .expect("valid template"),
                );
                let transfer = m.add(ProgressBar::new_spinner());
                transfer.set_style(
                    ProgressStyle::with_template("files    {msg} {bytes} at {bytes_per_sec}")
                        .expect("valid template"),
                );
                transfer.enable_steady_tick(Duration::from_millis(200));
                (Some(projects), Some(transfer))
            }
            None => (None, None),
        };
        Progress {
            projects,
            transfer,
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
        }
    }

    pub fn hidden() -> Progress {
        Progress::new(None)
    }

    pub fn set_projects(&self, total: u64) {
        if let Some(p) = &self.projects {
            p.set_length(total);
        }
    }

    pub fn project_done(&self, name: &str) {
        if let Some(p) = &self.projects {
            p.inc(1);
            p.set_message(name.to_owned());
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.transfer {
            t.inc(n);
        }
    }

    pub fn file_done(&self) {
        let files = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(t) = &self.transfer {
            t.set_message(files.to_string());
        }
    }

    pub fn finish(&self) {
        for bar in [&self.projects, &self.transfer].into_iter().flatten() {
            bar.finish_and_clear();
        }
    }
}

/// How often a run without a terminal (cron) logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// "A log line every 30 s" when no bar is drawn: the one cadence of every long phase.
pub struct Heartbeat {
    enabled: bool,
    last: Instant,
}

impl Heartbeat {
    /// `enabled`: no bar shows the progress (stderr is not a terminal).
    pub fn new(enabled: bool) -> Heartbeat {
        Heartbeat {
            enabled,
            last: Instant::now(),
        }
    }

    /// Whether a progress line is due now (then the next one is 30 s away).
    pub fn due(&mut self) -> bool {
        if self.enabled && self.last.elapsed() >= LOG_EVERY {
            self.last = Instant::now();
            return true;
        }
        false
    }
}

/// A phase's progress: a bar on a terminal, a log line every 30 s otherwise (cron).
pub struct PhaseBar {
    bar: Option<ProgressBar>,
    label: &'static str,
    what: &'static str,
    total: u64,
    heartbeat: Heartbeat,
}

impl PhaseBar {
    /// `label` starts the log lines (`verify: pages 10 of 20`); `bytes` counts bytes.
    pub fn new(
        multi: Option<&MultiProgress>,
        label: &'static str,
        what: &'static str,
        total: u64,
        bytes: bool,
    ) -> PhaseBar {
        let bar = multi.map(|m| {
            let template = match bytes {
                true => "{prefix:>8} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                false => "{prefix:>8} {bar:30} {human_pos}/{human_len} {per_sec} eta {eta}",
            };
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
            bar.set_prefix(what);
            bar
        });
        PhaseBar {
            heartbeat: Heartbeat::new(bar.is_none()),
            bar,
            label,
            what,
            total,
        }
    }

    pub fn set(&mut self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        } else if self.heartbeat.due() {
            tracing::info!("{}: {} {position} of {}", self.label, self.what, self.total);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A hidden MultiProgress never draws; used to route log lines uniformly.
pub fn multi_for_terminal(is_terminal: bool) -> Option<MultiProgress> {
    is_terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}
