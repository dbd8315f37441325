//! Publish: every file of a project is in place; write its pages (and JSON API documents),
//! then record it and dequeue it in one transaction that also puts the files it no longer
//! references in `trash`, then delete those. A crash between steps leaves the project queued
//! and the tree valid: new files before the page that links them, pages before the files
//! they stopped linking. The flush and the transaction are shared with the projects that
//! finish at the same moment (`sync/record.rs`).

use std::sync::Arc;

use super::{Ctx, blocking, delete, lock};
use crate::index::{IndexWriter, ProjectView};
use crate::state::Change;
use crate::types::{FileRecord, ProjectSnapshot};

/// The pages on a blocking thread; the record awaited, not waited for on one. `again`: the
/// project is to be looked at again next run (a sidecar was refused).
pub async fn publish(
    ctx: &Arc<Ctx>,
    snapshot: ProjectSnapshot,
    upstream_json: Option<serde_json::Value>,
    again: Option<Change>,
) -> anyhow::Result<()> {
    let pages = ctx.clone();
    let (snapshot, json_api) = blocking(move || {
        let json_api = write_pages(&pages, &snapshot, upstream_json.as_ref())?;
        Ok((snapshot, json_api))
    })
    .await?;
    let (name, serial) = (snapshot.name.clone(), snapshot.serial);
    let gone = ctx.recorder.record(snapshot, json_api).await?;
    if !gone.is_empty() || again.is_some() {
        // One blocking task, which runs to its end even if this one is dropped meanwhile.
        let ctx = ctx.clone();
        blocking(move || {
            // Not under the state lock: other projects record theirs meanwhile.
            delete(&ctx.storage, &gone);
            let mut state = lock(&ctx.state);
            state.emptied(&gone)?;
            if let Some(change) = again {
                state.requeue(&[change])?;
            }
            Ok(())
        })
        .await?;
    }
    tracing::debug!("{name}: synced at serial {serial}");
    Ok(())
}

/// Its pages and JSON API document; the digest to record for the latter. Blocking.
fn write_pages(
    ctx: &Ctx,
    snapshot: &ProjectSnapshot,
    upstream_json: Option<&serde_json::Value>,
) -> anyhow::Result<Option<String>> {
    // Every fact upstream left out was learned when the file was placed or found held.
    if let Some(f) = snapshot.files.iter().find(|f| f.unknown.any()) {
        anyhow::bail!(
            "{}: the size or path of {} is still unknown; not published (a bug: please report it)",
            snapshot.name,
            f.record.filename
        );
    }
    let records: Vec<&FileRecord> = snapshot.files.iter().map(|f| &f.record).collect();
    let view = ProjectView::new(
        &snapshot.name,
        &snapshot.display_name,
        snapshot.serial,
        snapshot.status.as_ref(),
        &snapshot.versions,
        records,
    );
    let index = IndexWriter::from_config(&ctx.storage, &ctx.cfg);
    match ctx.empty_tree {
        true => index.write_new_project(&view)?,
        false => index.write_project(&view)?,
    }
    if ctx.cfg.json {
        // Unknown while it is rewritten, so a kill in between leaves no stale digest.
        lock(&ctx.state).set_json_api_digest(&snapshot.name, None)?;
    }
    let json_api = match upstream_json {
        Some(doc) => Some(
            index
                .write_json_api(
                    &snapshot.name,
                    doc,
                    &snapshot.versions,
                    &view.files().collect::<Vec<_>>(),
                )?
                .to_hex(),
        ),
        // No JSON API answer (quarantined, or upstream has none): an old document must not
        // keep listing files about to be deleted.
        None if ctx.cfg.json => {
            index.remove_json_api(&snapshot.name)?;
            Some(String::new())
        }
        None => None,
    };
    Ok(json_api)
}
