//! Place: put every file a project's decision downloads at its key, verified (the strategy
//! is `storage::download`'s). Downloads of all projects share one `workers` bound.

use std::sync::Arc;

use super::decide::Placement;
use super::{Ctx, lock};
use crate::storage::download::Placed;
use crate::types::ProjectSnapshot;

/// What placing a project's files took.
#[derive(Debug, Default)]
pub struct Transfer {
    pub files: u64,
    pub bytes: u64,
    /// Sidecars upstream served with other bytes than it promised (not advertised).
    pub refused: u64,
}

/// Place `download` for `snapshot`. A sidecar upstream does not serve, or serves with other
/// bytes than it promised, is simply not advertised (its file is fine); any other failure
/// fails the project, which stays queued.
pub async fn place(
    ctx: &Arc<Ctx>,
    snapshot: &mut ProjectSnapshot,
    download: Vec<Placement>,
) -> anyhow::Result<Transfer> {
    let mut done = Transfer::default();
    if download.is_empty() {
        return Ok(done);
    }
    // Known to the database before they reach disk, so a project that fails or disappears
    // after some of its files were placed cannot leave them behind unaccounted for. In the
    // same blocking call, which keys are empty (nothing there to adopt).
    let keys: Vec<String> = download.iter().map(|p| p.target.relative.clone()).collect();
    let (state, storage, name) = (
        ctx.state.clone(),
        ctx.storage.clone(),
        snapshot.name.clone(),
    );
    let absent = tokio::task::spawn_blocking(move || {
        let absent: Vec<bool> = keys.iter().map(|k| !storage.exists(k)).collect();
        lock(&state).stage(&name, &keys).map(|()| absent)
    })
    .await??;
    let tasks: Vec<_> = download
        .into_iter()
        .zip(absent)
        .map(|(p, absent)| {
            let (downloader, progress) = (ctx.downloader.clone(), ctx.progress.clone());
            let task = tokio::spawn(async move {
                let placed = downloader.place(&p.target, absent).await;
                if placed.is_ok() && !p.sidecar {
                    progress.file_done();
                }
                placed
            });
            (p.file, p.sidecar, task)
        })
        .collect();
    let (mut failed, mut first_error) = (0, None);
    for (i, sidecar, task) in tasks {
        match task.await? {
            Ok(Placed::Downloaded { bytes }) => {
                done.files += u64::from(!sidecar);
                done.bytes += bytes;
            }
            Ok(Placed::Adopted) => {}
            // A bad sidecar counts as refused, so the run says something is wrong upstream.
            // One that could not be fetched (network, 5xx after retries) fails the project
            // like a file would, so the next run tries it again instead of never advertising
            // it.
            Err(e) if sidecar && (e.is_not_found() || e.is_refusal()) => {
                tracing::warn!(
                    "{}: {e}; its core metadata will not be advertised",
                    snapshot.name
                );
                snapshot.files[i].record.core_metadata = None;
                done.refused += u64::from(!e.is_not_found());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(anyhow::Error::new(e).context(format!("{failed} of its files failed")));
    }
    Ok(done)
}
