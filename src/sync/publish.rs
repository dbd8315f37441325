//! Publish: every file of a project is in place; write its pages (and JSON API documents),
//! then record it and dequeue it in one transaction that also puts the files it no longer
//! references in `trash`, then delete those. A crash between steps leaves the project queued
//! and the tree valid: new files before the page that links them, pages before the files
//! they stopped linking. The flush and the transaction are shared with the projects that
//! finish at the same moment (`sync/record.rs`).

use super::{Ctx, delete, lock};
use crate::index::{IndexWriter, ProjectView};
use crate::types::{FileRecord, ProjectSnapshot};

/// Blocking: run it off the async workers.
pub fn publish(
    ctx: &Ctx,
    snapshot: ProjectSnapshot,
    upstream_json: Option<&serde_json::Value>,
) -> anyhow::Result<()> {
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
    index.write_project(&view)?;
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
    drop(view);
    let (name, serial) = (snapshot.name.clone(), snapshot.serial);
    let gone = ctx
        .recorder
        .record(&ctx.storage, &ctx.state, snapshot, json_api)?;
    // Not under the state lock: other projects record theirs meanwhile.
    delete(&ctx.storage, &gone);
    lock(&ctx.state).emptied(&gone)?;
    tracing::debug!("{name}: synced at serial {serial}");
    Ok(())
}
