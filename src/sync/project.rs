//! One queued project, through fetch → decide → place → publish. Projects run concurrently;
//! a failure is recorded on the project's queue entry (tried first next run) and the others
//! go on.

use std::sync::Arc;

use super::decide::{self, Decision, Removal};
use super::{Ctx, lock, place, publish};
use crate::state::Todo;
use crate::storage::download::DownloadError;
use crate::types::ProjectSnapshot;

// One at a time per project, moved, never stored in bulk: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// Upstream's page is as mirrored (a conditional entry): dequeued, nothing else.
    Unchanged,
    Synced {
        files: u64,
        bytes: u64,
        refused: u64,
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
    /// Upstream still lists it but no file of it: published (emptied) only once the whole
    /// queue is through, behind the mass-delete guard.
    Emptied {
        todo: Todo,
        snapshot: ProjectSnapshot,
        upstream_json: Option<serde_json::Value>,
    },
}

pub async fn sync(ctx: &Arc<Ctx>, todo: Todo) -> Outcome {
    match try_sync(ctx, &todo).await {
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

async fn try_sync(ctx: &Arc<Ctx>, todo: &Todo) -> anyhow::Result<Outcome> {
    let known = match todo.conditional {
        true => {
            let (state, name) = (ctx.state.clone(), todo.name.clone());
            tokio::task::spawn_blocking(move || lock(&state).page_validators(&name)).await??
        }
        false => None,
    };
    let (state, name) = (ctx.state.clone(), todo.name.clone());
    let held = async move {
        Ok(tokio::task::spawn_blocking(move || lock(&state).project_files(&name)).await??)
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
    if decision.empties() {
        let Decision::Keep { snapshot, .. } = decision else {
            unreachable!("only a kept project is emptied");
        };
        return Ok(Outcome::Emptied {
            todo: todo.clone(),
            snapshot,
            upstream_json,
        });
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
            let ctx2 = ctx.clone();
            tokio::task::spawn_blocking(move || {
                publish::publish(&ctx2, &snapshot, upstream_json.as_ref())
            })
            .await??;
            Ok(Outcome::Synced {
                files: placed.files,
                bytes: placed.bytes,
                refused: refused + placed.refused,
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
