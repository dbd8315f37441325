//! Prune: once the queue is through, empty the projects upstream still lists without any file,
//! and forget the projects that leave the mirror — those upstream no longer has and those the
//! filters leave out — putting their pages and files in `trash` for `finish` to delete after
//! the root page. Emptying and removing upstream's doing are behind the mass-delete guard.

use std::sync::{Arc, Mutex};

use super::decide::Removal;
use super::guard::Guard;
use super::{Ctx, Emptied, Summary, blocking, lock, publish};
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

/// Projects upstream still lists without any file: emptied once the queue is through, unless
/// there are more than `max_deletions` of them (then none is, each stays queued with why).
pub async fn empty(
    ctx: &Arc<Ctx>,
    guard: Guard,
    emptied: Vec<Emptied>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    if let Some(why) = guard.emptied(emptied.len() as u64) {
        tracing::error!(
            "{why}; none was emptied. If upstream really removed their files, run again with --allow-mass-delete"
        );
        summary.deletions_refused += emptied.len() as u64;
        let state = ctx.state.clone();
        return blocking(move || {
            let mut state = lock(&state);
            for (todo, ..) in &emptied {
                state.record_failure(
                    &todo.name,
                    "held back by the mass-delete guard: upstream lists no file of it any more",
                )?;
            }
            Ok(())
        })
        .await;
    }
    for (todo, snapshot, upstream_json) in emptied {
        tracing::info!(
            "{}: upstream lists no file of it any more; emptying it",
            todo.name
        );
        let ctx = ctx.clone();
        let name = todo.name.clone();
        let published = blocking(move || {
            let result = publish::publish(&ctx, &snapshot, upstream_json.as_ref());
            if let Err(e) = &result {
                lock(&ctx.state).record_failure(&todo.name, &format!("{e:#}"))?;
            }
            Ok(result)
        })
        .await?;
        match published {
            Ok(()) => summary.projects_synced += 1,
            Err(e) => {
                summary.projects_failed += 1;
                tracing::warn!("{name}: {e:#}; left queued for the next run");
            }
        }
    }
    Ok(())
}
