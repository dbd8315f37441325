//! Publish: every file of a project is in place; write its pages (and JSON API documents),
//! then record it and dequeue it in one transaction that also puts the files it no longer
//! references in `trash`, then delete those. A crash between steps leaves the project queued
//! and the tree valid: new files before the page that links them, pages before the files
//! they stopped linking. Projects that reach the database at the same moment (typically
//! those made durable by the same flush) are recorded in one transaction ([`Recorder`]).

use std::sync::{Arc, Mutex};

use super::{Ctx, delete, lock};
use crate::index::{IndexWriter, ProjectView};
use crate::state::State;
use crate::types::{FileRecord, ProjectSnapshot};

/// Group commit: a project ready to be recorded joins the queue, then waits for the state
/// lock; whoever gets the lock records everything queued by then in one transaction, so a
/// commit (its WAL writes and file locks) is shared by every project that arrived meanwhile.
#[derive(Default)]
pub(super) struct Recorder {
    queue: Mutex<Vec<Arc<Entry>>>,
}

struct Entry {
    snapshot: ProjectSnapshot,
    json_api: Option<String>,
    /// Filled, under the state lock, by whoever recorded it: the paths to delete, or why not.
    done: Mutex<Option<Result<Vec<String>, String>>>,
}

impl Recorder {
    /// Record `snapshot` (and its JSON API document's digest), with whatever else is queued.
    /// Blocking.
    fn record(
        &self,
        state: &Mutex<State>,
        snapshot: ProjectSnapshot,
        json_api: Option<String>,
    ) -> anyhow::Result<Vec<String>> {
        let entry = Arc::new(Entry {
            snapshot,
            json_api,
            done: Mutex::new(None),
        });
        self.queue.lock().expect("recorder").push(entry.clone());
        let mut state = lock(state);
        let recorded = entry.done.lock().expect("recorder").take();
        let result = match recorded {
            Some(result) => result,
            None => {
                let batch = std::mem::take(&mut *self.queue.lock().expect("recorder"));
                let jobs: Vec<_> = batch
                    .iter()
                    .map(|e| (&e.snapshot, e.json_api.as_deref()))
                    .collect();
                for (e, result) in batch.iter().zip(state.record_projects(&jobs)) {
                    *e.done.lock().expect("recorder") = Some(result.map_err(|e| e.to_string()));
                }
                drop(state);
                entry
                    .done
                    .lock()
                    .expect("recorder")
                    .take()
                    .expect("a batch holds its own entry")
            }
        };
        result.map_err(anyhow::Error::msg)
    }
}

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
    // Its files and pages durable before the database says it holds them.
    ctx.storage.flush()?;
    drop(view);
    let (name, serial) = (snapshot.name.clone(), snapshot.serial);
    let gone = ctx.recorder.record(&ctx.state, snapshot, json_api)?;
    // Not under the state lock: other projects record theirs meanwhile.
    delete(&ctx.storage, &gone);
    lock(&ctx.state).emptied(&gone)?;
    tracing::debug!("{name}: synced at serial {serial}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FileRecord, ProjectName, RemoteFile, Serial};

    #[test]
    fn projects_recorded_at_once_each_get_their_own_result() {
        let state = Mutex::new(State::in_memory().unwrap());
        let recorder = Recorder::default();
        let url = reqwest::Url::parse("file:///upstream").unwrap();
        std::thread::scope(|scope| {
            for i in 0..12 {
                let (state, recorder, url) = (&state, &recorder, url.clone());
                scope.spawn(move || {
                    let name = format!("p{i}");
                    let file = format!("{name}-1.0.tar.gz");
                    let hex = format!("{i:02x}").repeat(32);
                    let record = FileRecord::for_test("1.0", &file, &hex, 3);
                    let snapshot = ProjectSnapshot {
                        name: ProjectName::new(&name).unwrap(),
                        display_name: name.clone(),
                        serial: Serial(i),
                        versions: vec!["1.0".into()],
                        files: vec![RemoteFile::known(record, url)],
                        status: None,
                        refused: Vec::new(),
                        validators: None,
                        held_back: Vec::new(),
                    };
                    assert_eq!(
                        recorder.record(state, snapshot, None).unwrap(),
                        Vec::<String>::new()
                    );
                });
            }
        });
        let state = state.lock().unwrap();
        for i in 0..12 {
            let files = state.project_files(&ProjectName::new(&format!("p{i}")).unwrap());
            assert_eq!(files.unwrap().len(), 1, "p{i}");
        }
        assert!(recorder.queue.lock().unwrap().is_empty());
    }
}
