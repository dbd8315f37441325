//! One queued project, through fetch → decide → place → publish. Projects run concurrently;
//! a failure is recorded on the project's queue entry (tried first next run) and the others
//! go on.
//!
//! A project whose decision deletes held files is deferred: nothing of it is placed or
//! published in the queue's pass, and it stays queued. Once the whole queue is through and
//! the mass-delete guard has weighed the run (`prune::deferred`), it is looked at again and
//! applied, if upstream does not now delete more of it than was weighed. Only its name and
//! two counts wait, not its snapshot: memory stays bounded however many projects defer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::decide::{self, Decision, Removal};
use super::{Ctx, lock, place, publish};
use crate::state::Todo;
use crate::storage::download::DownloadError;

/// Why a project waits for the end of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Upstream still lists it but no file of it: applying it empties the project.
    Emptied,
    /// Its decision deletes some of the files the mirror holds of it.
    Deletes,
}

/// A project deferred in the queue's pass: what the guard weighs.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub todo: Todo,
    pub why: Deferral,
    /// Files the mirror holds of it.
    pub held: u64,
    /// Of those, the files its decision deletes.
    pub deletes: u64,
}

/// Which pass a project is in.
#[derive(Debug, Clone, Copy)]
pub enum Pass {
    /// The queue's: a decision that deletes held files is deferred.
    Queue,
    /// After the guard let the run's deletions through: applied, unless it now deletes more
    /// than this many files (what the guard weighed).
    Weighed(u64),
}

pub enum Outcome {
    /// Upstream's page is as mirrored (a conditional entry): dequeued, nothing else.
    Unchanged,
    Synced {
        files: u64,
        bytes: u64,
        refused: u64,
        /// Files the mirror held of it before (what the guard counts as looked at).
        held: u64,
    },
    /// Removed once the whole queue is through (behind the mass-delete guard when gone
    /// upstream).
    Removed {
        todo: Todo,
        removal: Removal,
    },
    Failed {
        error: String,
        disk: bool,
    },
    /// Its decision deletes held files: looked at again once the whole queue is through,
    /// behind the mass-delete guard.
    Deferred(Deferred),
}

pub async fn sync(ctx: &Arc<Ctx>, todo: Todo, pass: Pass) -> Outcome {
    match try_sync(ctx, &todo, pass).await {
        Ok(outcome) => outcome,
        Err(error) => {
            // Upstream's text inside (a value serde quotes, a fault string): cut and escaped
            // before it reaches the log, `last_error` and `status`.
            let msg = crate::types::text::shown(&format!("{error:#}"));
            let (state, name) = (ctx.state.clone(), todo.name.clone());
            let m = msg.clone();
            let _ =
                tokio::task::spawn_blocking(move || lock(&state).record_failure(&name, &m)).await;
            Outcome::Failed {
                error: msg,
                disk: is_disk_error(&error),
            }
        }
    }
}

async fn try_sync(ctx: &Arc<Ctx>, todo: &Todo, pass: Pass) -> anyhow::Result<Outcome> {
    let known = match todo.conditional {
        true => {
            let (state, name) = (ctx.state.clone(), todo.name.clone());
            tokio::task::spawn_blocking(move || lock(&state).page_validators(&name)).await??
        }
        false => None,
    };
    let (state, name) = (ctx.state.clone(), todo.name.clone());
    let held_files = AtomicU64::new(0);
    let counted = &held_files;
    let held = async move {
        let files =
            tokio::task::spawn_blocking(move || lock(&state).project_files(&name)).await??;
        counted.store(files.len() as u64, Ordering::Relaxed);
        Ok(files)
    };
    let (decision, upstream_json) = decide::look(
        &ctx.cfg,
        &ctx.upstream,
        &ctx.metadata_permits,
        &ctx.policy,
        todo,
        ctx.feed_serial,
        known.as_ref(),
        held,
    )
    .await?;
    let held = held_files.load(Ordering::Relaxed);
    let held_back = match &decision {
        Decision::Keep { snapshot, .. } => &snapshot.held_back[..],
        Decision::Remove(Removal::Excluded { held_back, .. }) => held_back,
        _ => &[],
    };
    if let Some(next) = held_back.iter().map(|f| f.matures_at).min() {
        tracing::info!(
            "{}: {} files held back by the cooldown, the first until {}",
            todo.name,
            held_back.len(),
            crate::filter::cooldown::show_time(next)
        );
    }
    if let Decision::Keep { delete, .. } = &decision {
        let deletes = delete.len() as u64;
        match pass {
            Pass::Queue if deletes > 0 => {
                return Ok(Outcome::Deferred(Deferred {
                    todo: todo.clone(),
                    why: match decision.empties() {
                        true => Deferral::Emptied,
                        false => Deferral::Deletes,
                    },
                    held,
                    deletes,
                }));
            }
            Pass::Weighed(weighed) if deletes > weighed => anyhow::bail!(
                "held back by the mass-delete guard: upstream now takes {deletes} of its files \
                 away, more than the {weighed} this run weighed; weighed again next run"
            ),
            _ => {}
        }
    }
    match decision {
        Decision::Unchanged => {
            let (state, name, serial) = (ctx.state.clone(), todo.name.clone(), todo.serial);
            tokio::task::spawn_blocking(move || lock(&state).unchanged(&name, serial)).await??;
            Ok(Outcome::Unchanged)
        }
        Decision::Remove(removal) => Ok(Outcome::Removed {
            todo: todo.clone(),
            removal,
        }),
        Decision::Keep {
            mut snapshot,
            download,
            delete: _,
        } => {
            let refused = snapshot.refused.len() as u64;
            let placed = place::place(ctx, &mut snapshot, download).await?;
            let again = (placed.refused > 0).then(|| crate::state::Change {
                name: snapshot.name.clone(),
                display_name: snapshot.display_name.clone(),
                serial: snapshot.serial,
                first_serial: snapshot.serial,
                conditional: false,
            });
            // A sidecar refused for its bytes (upstream's error, or one corrupted on the way)
            // is not advertised, and the project is looked at again next run.
            publish::publish(ctx, snapshot, upstream_json, again).await?;
            Ok(Outcome::Synced {
                files: placed.files,
                bytes: placed.bytes,
                refused: refused + placed.refused,
                held,
            })
        }
    }
}

/// Errors that retrying other projects cannot get past.
fn is_disk_error(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::*;
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<DownloadError>(),
            Some(DownloadError::Disk { .. })
        ) || cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                StorageFull | ReadOnlyFilesystem | PermissionDenied | QuotaExceeded
            )
        })
    })
}
