//! Recover: finish what an interrupted run left. Its temporary files in `tmp/` are debris
//! (nothing recorded points at them); what it put in `trash` was already unreferenced and is
//! deleted now. Queued projects and the feed serial need nothing: they were committed together.

use std::sync::Mutex;

use super::{delete, lock};
use crate::state::State;
use crate::storage::{Layout, Storage};

/// Clear `tmp/` and empty `trash`. Blocking: run it off the async workers.
pub fn recover(layout: &Layout, storage: &Storage, state: &Mutex<State>) -> anyhow::Result<()> {
    let leftovers = layout.clear_tmp()?;
    if leftovers > 0 {
        tracing::info!("removed {leftovers} temporary files left by an interrupted run");
    }
    empty_trash(storage, state)
}

/// Delete what `trash` holds (pages first, then files), then forget it. The state lock is
/// not held while files are deleted.
pub fn empty_trash(storage: &Storage, state: &Mutex<State>) -> anyhow::Result<()> {
    let keys = lock(state).trash()?;
    if keys.is_empty() {
        return Ok(());
    }
    delete(storage, &keys);
    lock(state).emptied(&keys)?;
    Ok(())
}
