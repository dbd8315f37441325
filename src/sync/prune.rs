//! Prune: once the queue is through, forget the projects that leave the mirror — those
//! upstream no longer has (behind the mass-delete guard) and those the filters leave out —
//! putting their pages and files in `trash` for `finish` to delete after the root page.

use std::sync::Mutex;

use super::decide::Removal;
use super::guard::Guard;
use super::{Summary, lock};
use crate::state::{State, Todo};

/// Blocking: run it off the async workers.
pub fn prune(
    state: &Mutex<State>,
    guard: Guard,
    removed: &[(Todo, Removal)],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut state = lock(state);
    let gone: Vec<&Todo> = removed
        .iter()
        .filter(|(_, r)| *r == Removal::Gone)
        .map(|(t, _)| t)
        .collect();
    if let Some(why) = guard.gone(gone.len() as u64) {
        tracing::error!(
            "{why}; none was removed. If upstream really removed them, run again with --allow-mass-delete"
        );
        for todo in &gone {
            state.record_failure(&todo.name, "held back by the mass-delete guard")?;
        }
        summary.deletions_refused = gone.len() as u64;
    } else {
        for todo in gone {
            if state.remove_project(&todo.name, todo.serial)? {
                tracing::info!(
                    "{}: removed upstream; removing it from the mirror",
                    todo.name
                );
                summary.projects_removed += 1;
            }
        }
    }
    for (todo, removal) in removed {
        let Removal::Excluded { why, serial } = removal else {
            continue;
        };
        if state.remove_project(&todo.name, *serial)? {
            tracing::info!(
                "{}: left out by the filters ({why}); removing it from the mirror",
                todo.name
            );
            summary.projects_removed += 1;
        } else {
            tracing::debug!("{}: left out by the filters ({why})", todo.name);
        }
    }
    Ok(())
}
