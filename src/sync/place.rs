//! Place: put every file a project's decision downloads at its key, verified (the strategy
//! is `storage::download`'s). Downloads of all projects share one `workers` bound.
//!
//! Files first, then, in a second round, the PEP 658 sidecars of the files just placed: a
//! wheel's is read from the wheel itself when it hashes to what upstream promised (no
//! request), and a file whose path upstream did not give (no BLAKE2b-256: devpi's `+f/`
//! URLs, a download handler) has one only once its bytes named its path. What the bytes tell (size, path)
//! is filled into the snapshot, so the pages and the database record them.

use std::collections::HashSet;
use std::sync::Arc;

use super::decide::Placement;
use super::{Ctx, lock};
use crate::storage::download::{DownloadError, OnKey, Target};
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
    let downloading: HashSet<usize> = download
        .iter()
        .filter(|p| !p.sidecar)
        .map(|p| p.file)
        .collect();
    let content_addressed: HashSet<usize> = download
        .iter()
        .filter(|p| p.target.key.known().is_none())
        .map(|p| p.file)
        .collect();
    // The sidecars of files downloaded now wait for them: a wheel's is read from the wheel.
    let (later, now): (Vec<Placement>, Vec<Placement>) = download
        .into_iter()
        .partition(|p| p.sidecar && downloading.contains(&p.file));
    // Their keys, where known now, are staged with the files: one transaction, not two.
    let mut staged: HashSet<String> = HashSet::new();
    let early: Vec<String> = later
        .iter()
        .filter_map(|p| p.target.key.known().map(str::to_owned))
        .collect();
    let mut failures = round(ctx, snapshot, now, early, &mut staged, &mut done).await?;
    let later: HashSet<usize> = later.into_iter().map(|p| p.file).collect();
    let sidecars: Vec<Placement> = downloading
        .into_iter()
        // Placed, so its path is known (a content-addressed one, only now); its sidecar is
        // wanted if decided for (a known path) or promised (a content-addressed one).
        .filter(|i| !snapshot.files[*i].unknown.any())
        .filter(|i| later.contains(i) || content_addressed.contains(i))
        .filter_map(|i| {
            let f = &snapshot.files[i];
            let mut target = Target::sidecar(f)?;
            // From a bucket the wheel would be fetched again: upstream's sidecar is smaller.
            if f.record.filename.as_str().ends_with(".whl") && ctx.storage.is_local() {
                target.from_wheel = Some(f.record.path.relative());
            }
            Some(Placement {
                file: i,
                sidecar: true,
                target,
            })
        })
        .collect();
    failures.extend(round(ctx, snapshot, sidecars, Vec::new(), &mut staged, &mut done).await?);
    derive_core_metadata(ctx, snapshot).await?;
    let failed = failures.len();
    if let Some(e) = failures.into_iter().next() {
        return Err(anyhow::Error::new(e).context(format!("{failed} of its files failed")));
    }
    Ok(done)
}

/// Wheels whose documents do not say whether they have core metadata (older pages): their
/// `METADATA`, read from the wheel just placed and verified, becomes their PEP 658 sidecar.
async fn derive_core_metadata(
    ctx: &Arc<Ctx>,
    snapshot: &mut ProjectSnapshot,
) -> anyhow::Result<()> {
    let wheels: Vec<(usize, String)> = snapshot
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.unknown.core_metadata && !f.unknown.any())
        .map(|(i, f)| (i, f.record.path.relative()))
        .collect();
    if wheels.is_empty() {
        return Ok(());
    }
    let (state, storage, name, limit) = (
        ctx.state.clone(),
        ctx.storage.clone(),
        snapshot.name.clone(),
        ctx.cfg.max_metadata_bytes,
    );
    let derived = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<_>> {
        // All staged in one transaction; a wheel without METADATA leaves a staged key that
        // names nothing, which recording the project clears.
        let sidecars: Vec<String> = wheels
            .iter()
            .map(|(_, k)| format!("{k}.metadata"))
            .collect();
        lock(&state).stage(&name, &sidecars)?;
        let mut derived = Vec::new();
        for ((i, key), sidecar) in wheels.into_iter().zip(sidecars) {
            // Only wheels placed in this run are still unknown (held ones took theirs in decide).
            let Some(bytes) = crate::storage::wheel::read_metadata(&storage, &key, limit) else {
                derived.push((i, None));
                continue;
            };
            storage.put_if_changed(&sidecar, &bytes)?;
            derived.push((i, Some(crate::types::hashing::sha256(&bytes))));
        }
        Ok(derived)
    })
    .await??;
    for (i, sha256) in derived {
        snapshot.files[i].learn_core_metadata(sha256);
    }
    Ok(())
}

/// One round of downloads, all at once; the failures that fail the project. Its keys are
/// staged first, with `early` (keys a later round will place), except those in `staged`.
async fn round(
    ctx: &Arc<Ctx>,
    snapshot: &mut ProjectSnapshot,
    download: Vec<Placement>,
    early: Vec<String>,
    staged: &mut HashSet<String>,
    done: &mut Transfer,
) -> anyhow::Result<Vec<DownloadError>> {
    if download.is_empty() {
        return Ok(Vec::new());
    }
    // Known to the database before they reach disk, so a project that fails or disappears
    // after some of its files were placed cannot leave them behind unaccounted for. In the
    // same blocking call, which keys are empty (nothing there to adopt). A path known only
    // from the bytes is staged by `on_key` just before they are put there.
    let keys: Vec<String> = download
        .iter()
        .filter_map(|p| p.target.key.known().map(str::to_owned))
        .collect();
    let to_stage: Vec<String> = keys
        .iter()
        .chain(&early)
        .filter(|k| !staged.contains(*k))
        .cloned()
        .collect();
    staged.extend(to_stage.iter().cloned());
    let (state, storage, name) = (
        ctx.state.clone(),
        ctx.storage.clone(),
        snapshot.name.clone(),
    );
    let empty_tree = ctx.empty_tree;
    let absent = tokio::task::spawn_blocking(move || {
        let absent: Vec<bool> = keys
            .iter()
            .map(|k| empty_tree || !storage.exists(k))
            .collect();
        match to_stage.is_empty() {
            true => Ok(absent),
            false => lock(&state).stage(&name, &to_stage).map(|()| absent),
        }
    })
    .await??;
    let on_key: OnKey = {
        let (state, name) = (ctx.state.clone(), snapshot.name.clone());
        Arc::new(move |key: &str| {
            lock(&state)
                .stage(&name, &[key.to_owned()])
                .map_err(std::io::Error::other)
        })
    };
    let mut absent = absent.into_iter();
    let tasks: Vec<_> = download
        .into_iter()
        .map(|p| {
            let absent = p.target.key.known().is_some() && absent.next().unwrap_or(false);
            let (downloader, progress, on_key) =
                (ctx.downloader.clone(), ctx.progress.clone(), on_key.clone());
            let task = tokio::spawn(async move {
                let placed = downloader.place(&p.target, absent, Some(on_key)).await;
                if placed.is_ok() && !p.sidecar {
                    progress.file_done();
                }
                placed
            });
            (p.file, p.sidecar, task)
        })
        .collect();
    let mut failures = Vec::new();
    for (i, sidecar, task) in tasks {
        match task.await? {
            Ok(placed) => {
                done.bytes += placed.downloaded;
                if !sidecar {
                    done.files += u64::from(!placed.adopted);
                    snapshot.files[i].learn(placed.size, placed.blake2b);
                }
            }
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
            Err(e) => failures.push(e),
        }
    }
    Ok(failures)
}
