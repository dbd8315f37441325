//! Finish: the root pages (the JSON one when projects' serials changed, every one when projects
//! came, went or were renamed), then what
//! `trash` holds (removed projects' pages first, then their files), then `status`, the last
//! fully synced serial.

use std::sync::Mutex;

use super::{Summary, lock, recover};
use crate::config::Config;
use crate::index::IndexWriter;
use crate::state::State;
use crate::storage::{Layout, Storage};
use crate::types::keys::RootChange;

/// Blocking: run it off the async workers.
pub fn finish(
    cfg: &Config,
    layout: &Layout,
    storage: &Storage,
    state: &Mutex<State>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    summary.serial = lock(state).fully_synced_serial()?;
    let held = lock(state).held_back_totals()?;
    if let Some(next) = held.next_release {
        tracing::info!(
            "the cooldown holds back {} files of {} projects; the first comes of age at {}",
            held.files,
            held.projects,
            crate::filter::cooldown::show_time(next)
        );
    }
    let finished = (|| -> anyhow::Result<()> {
        let index = IndexWriter::from_config(storage, cfg);
        let state_now = lock(state);
        // Set in the transactions that record or remove a project (the JSON root lists each
        // project's serial), so even a killed run's changes reach the root next time.
        let change = match state_now.root_dirty()? {
            _ if !index.root_exists() => Some(RootChange::Names),
            change => change,
        };
        if let Some(change) = change {
            let started = std::time::Instant::now();
            let listed = std::cell::Cell::new(0u64);
            let rows: crate::index::Rows<'_> = &|each| {
                listed.set(0);
                state_now
                    .for_each_project(|name, display, serial| {
                        listed.set(listed.get() + 1);
                        each(name, display, serial)
                    })
                    .map_err(std::io::Error::other)
            };
            let wrote = index.write_root(rows, summary.serial, change)?;
            drop(state_now);
            storage.flush()?;
            lock(state).root_written()?;
            if wrote {
                tracing::info!(
                    "root index: {} projects written in {:.2} s{}",
                    listed.get(),
                    started.elapsed().as_secs_f64(),
                    match change {
                        RootChange::Names => "",
                        RootChange::Serials =>
                            " (the JSON page: no project came, went or was renamed)",
                    }
                );
            }
        } else {
            drop(state_now);
        }
        // After the root page: removed projects' pages, then their files.
        recover::empty_trash(storage, state)?;
        layout.write_status(summary.serial.0, cfg.fsync)?;
        Ok(())
    })();
    match finished {
        // The disk error is already the run's outcome; the old root page and status stay
        // valid (the root lists only projects with pages), and the next run rewrites them.
        Err(e) if summary.disk_error.is_some() => tracing::warn!("{e:#}"),
        other => other?,
    }
    Ok(())
}
