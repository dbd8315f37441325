//! The first sync after an adoption: the adopted tree's project pages (bandersnatch's, left
//! in place by `pymirror adopt`) rewritten in pymirror's format from the database, before
//! upstream is asked anything. A batch at a time, rendered on every core; each batch made
//! durable before the marker moves past it, so a killed run continues where it stopped and the
//! served tree keeps a valid page for every project throughout.
//!
//! With `json = true`, bandersnatch's `json/<name>` is upstream's JSON API document as it was:
//! both of pymirror's documents are rewritten from it for the files held (as `verify --repair`
//! does) and their digest recorded; a project without a readable one is queued, so this sync
//! fetches it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::MultiProgress;

use super::lock;
use crate::config::Config;
use crate::index::{IndexWriter, ProjectView};
use crate::progress::PhaseBar;
use crate::state::{Change, State};
use crate::storage::Storage;
use crate::types::{JsonApiRecord, StoredProject, keys};

/// Projects per batch (and per move of the marker).
const BATCH: usize = 512;
/// A JSON API document larger than this is not read (queued instead).
const MAX_DOC: u64 = 256 << 20;

/// A project's JSON API documents after its pages were written (`json = true`).
enum JsonApi {
    /// Not to be touched: `json = false`, or recorded already.
    Kept,
    /// Rewritten from the adopted document: its digest.
    Written(String),
    /// No readable adopted document: fetched by this sync.
    Fetch,
}

/// Blocking: run it off the async workers. Stops early, marker kept, when `stop` is set.
pub fn rewrite(
    cfg: &Config,
    storage: &Storage,
    state: &Mutex<State>,
    multi: Option<&MultiProgress>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let Some(mut after) = lock(state).adopted_pages_after()? else {
        return Ok(());
    };
    let started = Instant::now();
    let total = lock(state).projects_after_count(&after)?;
    tracing::info!("rewriting the pages of {total} adopted projects in pymirror's format");
    let mut bar = PhaseBar::new(multi, "adopted", "projects", total, false);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<StoredProject> = {
            let state = lock(state);
            let names = state.project_names_after(&after, BATCH)?;
            let mut stored = Vec::with_capacity(names.len());
            for name in &names {
                stored.extend(state.stored_project(name)?);
            }
            stored
        };
        let Some(last) = batch.last().map(|p| p.name.to_string()) else {
            lock(state).adopted_pages_written(None)?;
            bar.finish();
            tracing::info!(
                "adopted projects' pages rewritten: {done} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        };
        let json_api = write_pages(cfg, storage, &batch, threads)?;
        // Durable before the marker says so.
        storage.flush()?;
        let mut fetch = Vec::new();
        let mut state = lock(state);
        for (p, doc) in batch.iter().zip(json_api) {
            match doc {
                JsonApi::Kept => {}
                JsonApi::Written(digest) => state.set_json_api_digest(&p.name, Some(&digest))?,
                JsonApi::Fetch => fetch.push(Change {
                    name: p.name.clone(),
                    display_name: p.display_name.clone(),
                    serial: p.serial,
                    first_serial: p.serial,
                    conditional: false,
                }),
            }
        }
        state.requeue(&fetch)?;
        state.adopted_pages_written(Some(&last))?;
        drop(state);
        done += batch.len() as u64;
        bar.set(done);
        after = last;
    }
    Ok(())
}

/// Each project's pages (and JSON API documents), the batch split across `threads`.
fn write_pages(
    cfg: &Config,
    storage: &Storage,
    batch: &[StoredProject],
    threads: usize,
) -> std::io::Result<Vec<JsonApi>> {
    let chunk = batch.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = batch
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|p| write(cfg, storage, p)).collect()))
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for part in parts {
            let written: std::io::Result<Vec<JsonApi>> = part
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            out.extend(written?);
        }
        Ok(out)
    })
}

fn write(cfg: &Config, storage: &Storage, p: &StoredProject) -> std::io::Result<JsonApi> {
    let index = IndexWriter::from_config(storage, cfg);
    let view = ProjectView::of_stored(p);
    index.write_project(&view)?;
    if !cfg.json || p.json_api != JsonApiRecord::Unknown {
        return Ok(JsonApi::Kept);
    }
    let [(adopted, _), _] = keys::json_api_docs(&p.name);
    let doc = match storage.read(&adopted, MAX_DOC) {
        Ok(Some(bytes)) => serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
        _ => None,
    };
    Ok(match doc.filter(|d| d.is_object()) {
        Some(doc) => {
            let held: Vec<_> = view.files().collect();
            let digest = index.write_json_api(&p.name, &doc, &p.versions, &held)?;
            JsonApi::Written(digest.to_hex())
        }
        None => JsonApi::Fetch,
    })
}
