//! Prune: once the queue is through, weigh what the deferred projects would delete (files,
//! projects left without any file) behind the mass-delete guard, and forget the projects that
//! leave the mirror — those upstream no longer has (guarded) and those the filters leave out —
//! putting their pages and files in `trash` for `finish` to delete after the root page.

use std::sync::{Arc, Mutex};

use super::decide::Removal;
use super::guard::{Guard, Weight};
use super::project::{Deferral, Deferred, Pass};
use super::{Ctx, Summary, blocking, lock};
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
        let Removal::Excluded {
            why,
            serial,
            held_back,
        } = removal
        else {
            continue;
        };
        if state.remove_holding_back(&todo.name, &todo.display_name, *serial, held_back)? {
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

/// The projects deferred in the queue's pass (their decisions delete held files), weighed by
/// the mass-delete guard against the files the run `looked` at. When the file count holds,
/// none is applied; else when more than `max_deletions` of them would be left without any
/// file, those are not. Each held back stays queued with why; the others are returned, to be
/// looked at again with the deletions weighed for each.
pub async fn deferred(
    ctx: &Arc<Ctx>,
    guard: Guard,
    deferred: Vec<Deferred>,
    looked: u64,
    summary: &mut Summary,
) -> anyhow::Result<Vec<(Todo, Pass)>> {
    let weight = Weight {
        looked,
        deleting: deferred.iter().map(|d| d.deletes).sum(),
    };
    let emptied = deferred
        .iter()
        .filter(|d| d.why == Deferral::Emptied)
        .count();
    let files = guard.files(weight);
    let emptying = guard.emptied(emptied as u64);
    if let Some(why) = &files {
        tracing::error!(
            "{why}; none was deleted ({} projects stay queued). If upstream (or a filter change) \
             really removed them, run again with --allow-mass-delete",
            deferred.len()
        );
    } else if let Some(why) = &emptying {
        tracing::error!(
            "{why}; none was emptied. If upstream really removed their files, run again with \
             --allow-mass-delete"
        );
    }
    let (held, again): (Vec<Deferred>, Vec<Deferred>) = deferred
        .into_iter()
        .partition(|d| files.is_some() || (emptying.is_some() && d.why == Deferral::Emptied));
    summary.deletions_refused += held.len() as u64;
    if !held.is_empty() {
        let state = ctx.state.clone();
        blocking(move || {
            let mut state = lock(&state);
            for d in &held {
                let why = match (&files, d.why) {
                    (Some(run), Deferral::Emptied) => format!(
                        "upstream lists no file of it any more ({} files); {run}",
                        d.deletes
                    ),
                    (Some(run), Deferral::Deletes) => format!(
                        "it would delete {} of its {} files; {run}",
                        d.deletes, d.held
                    ),
                    (None, _) => "upstream lists no file of it any more".to_owned(),
                };
                state.record_failure(
                    &d.todo.name,
                    &format!("held back by the mass-delete guard: {why}"),
                )?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(again
        .into_iter()
        .map(|d| {
            if d.why == Deferral::Emptied {
                tracing::info!(
                    "{}: upstream lists no file of it any more; emptying it",
                    d.todo.name
                );
            }
            (d.todo, Pass::Weighed(d.deletes))
        })
        .collect())
}
