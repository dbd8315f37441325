//! What the mirror holds: projects, their releases and files. A project is recorded (or
//! removed) in one transaction that also dequeues it and puts what it no longer references in
//! `trash`.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::held_back::put_held_back;
use super::meta::{set_root_dirty, set_root_names_dirty};
use super::trash::{paths_of, put_in_trash, unreferenced, unstaged};
use super::{Result, State, StateError};
use crate::types::keys;
use crate::types::{FileRecord, HeldFile, PageValidators, ProjectSnapshot};
use crate::types::{Filename, PackagePath, ProjectName, Serial, Sha256};

impl State {
    /// Serials of every mirrored project (for comparing with a PEP 691 root listing).
    pub fn project_serials(&self) -> Result<HashMap<String, Serial>> {
        let mut stmt = self.conn.prepare("SELECT name, serial FROM projects")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, Serial::from_db(r.get(1)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forget the serial of every project recorded beyond `feed` (an absurd answer recorded
    /// before answers were bounded, or upstream restored from an older backup): set to 0, so
    /// upstream's next change to it is queued rather than skipped. How many.
    /// Project serials beyond the feed's are forgotten (0), and queue entries beyond it are
    /// brought down to it (else a queued project waits for an answer that never comes).
    pub fn forget_serials_beyond(&mut self, feed: Serial) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let forgotten = tx.execute(
            "UPDATE projects SET serial = 0 WHERE serial > ?1",
            [feed.to_db()],
        )?;
        if forgotten > 0 {
            set_root_dirty(&tx)?;
        }
        tx.execute(
            "UPDATE todo SET serial = MIN(serial, ?1),
                 first_serial = MIN(COALESCE(first_serial, serial), ?1)
             WHERE serial > ?1 OR first_serial > ?1",
            [feed.to_db()],
        )?;
        tx.commit()?;
        Ok(forgotten)
    }

    pub fn project_serial(&self, name: &ProjectName) -> Result<Option<Serial>> {
        Ok(self
            .conn
            .query_row(
                "SELECT serial FROM projects WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .map(Serial::from_db))
    }

    /// Mirrored projects named after `after`, in name order, at most `limit`: (name, display
    /// name, serial). Paging keeps memory bounded over the whole mirror.
    pub fn projects_after(
        &self,
        after: Option<&ProjectName>,
        limit: usize,
    ) -> Result<Vec<(ProjectName, String, Serial)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display_name, serial FROM projects WHERE name > ?1 ORDER BY name LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![after.map_or("", ProjectName::as_str), limit as i64],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (name, display, serial) = row?;
            let name =
                ProjectName::new(&name).map_err(|e| StateError::InvalidRow(e.to_string()))?;
            out.push((name, display, Serial::from_db(serial)));
        }
        Ok(out)
    }

    /// The versions recorded for a project (the releases its pages list).
    pub fn project_versions(&self, name: &ProjectName) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.version FROM releases r JOIN projects p ON p.id = r.project_id
             WHERE p.name = ?1 ORDER BY r.version",
        )?;
        let rows = stmt.query_map([name.as_str()], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The files currently recorded for a project.
    pub fn project_files(&self, name: &ProjectName) -> Result<Vec<FileRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.version, f.filename, f.path, f.size, f.sha256, f.upload_time, f.requires_python,
                    f.yanked, f.yanked_reason, f.packagetype, f.python_version,
                    f.core_metadata_sha256, f.provenance, f.extra_hashes
             FROM files f JOIN releases r ON r.id = f.release_id JOIN projects p ON p.id = f.project_id
             WHERE p.name = ?1 ORDER BY f.filename",
        )?;
        let mut rows = stmt.query([name.as_str()])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let invalid = |what: String| StateError::InvalidRow(format!("{name}: {what}"));
            let filename: String = r.get(1)?;
            let filename = Filename::new(&filename).map_err(|e| invalid(e.to_string()))?;
            let path: String = r.get(2)?;
            let sha256: String = r.get(4)?;
            let core_metadata: Option<String> = r.get(11)?;
            let extra_hashes: Option<String> = r.get(13)?;
            out.push(FileRecord {
                version: r.get(0)?,
                path: PackagePath::from_url_path(&format!("/{path}"), &filename)
                    .map_err(|e| invalid(e.to_string()))?,
                filename,
                size: r.get::<_, i64>(3)? as u64,
                sha256: Sha256::from_hex(&sha256).map_err(|e| invalid(e.to_string()))?,
                upload_time: r.get(5)?,
                requires_python: r.get(6)?,
                yanked: r.get(7)?,
                yanked_reason: r.get(8)?,
                packagetype: r.get(9)?,
                python_version: r.get(10)?,
                core_metadata: core_metadata
                    .map(|h| Sha256::from_hex(&h).map_err(|e| invalid(e.to_string())))
                    .transpose()?,
                provenance: r.get(12)?,
                extra_hashes: extra_hashes
                    .map(|j| {
                        serde_json::from_str(&j).map_err(|e| invalid(format!("extra_hashes: {e}")))
                    })
                    .transpose()?
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Replace everything recorded for the project with `snap`, dequeue it, and return the
    /// paths that no project references any more. They are put in `trash` in the same
    /// transaction; the caller deletes them and then calls [`State::emptied`].
    pub fn record_project(&mut self, snap: &ProjectSnapshot) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let gone = record_in(&tx, snap)?;
        tx.commit()?;
        Ok(gone)
    }

    /// [`State::record_project`] for several projects (each with its JSON API document's
    /// digest, when one was written) in one transaction: one commit instead of one per
    /// project. Each result is what recording it alone would give: should the shared
    /// transaction fail, it is rolled back and each project is recorded in its own, so one
    /// bad project fails alone.
    pub fn record_projects(
        &mut self,
        batch: &[(&ProjectSnapshot, Option<&str>)],
    ) -> Vec<Result<Vec<String>>> {
        let each = |state: &mut State, (snap, digest): &(&ProjectSnapshot, Option<&str>)| {
            let tx = state.conn.transaction()?;
            let gone = record_with_digest(&tx, snap, *digest)?;
            tx.commit()?;
            Ok(gone)
        };
        if batch.len() > 1 {
            let together = (|| {
                let tx = self.conn.transaction()?;
                let all = batch
                    .iter()
                    .map(|(snap, digest)| record_with_digest(&tx, snap, *digest))
                    .collect::<Result<Vec<_>>>()?;
                tx.commit()?;
                Ok::<_, StateError>(all)
            })();
            if let Ok(all) = together {
                return all.into_iter().map(Ok).collect();
            }
        }
        batch.iter().map(|job| each(self, job)).collect()
    }

    /// What `name`'s page was when it was last mirrored (serial-less feeds).
    pub fn page_validators(&self, name: &ProjectName) -> Result<Option<PageValidators>> {
        let row = self
            .conn
            .query_row(
                "SELECT etag, last_modified, digest FROM page_validators WHERE name = ?1",
                [name.as_str()],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((etag, last_modified, digest)) = row else {
            return Ok(None);
        };
        let digest =
            Sha256::from_hex(&digest).map_err(|e| StateError::InvalidRow(e.to_string()))?;
        Ok(Some(PageValidators {
            etag,
            last_modified,
            digest,
        }))
    }

    /// Upstream's page of a project queued conditionally is as mirrored: done, nothing to do.
    pub fn unchanged(&mut self, name: &ProjectName, serial: Serial) -> Result<()> {
        self.conn.execute(
            "DELETE FROM todo WHERE name = ?1 AND serial <= ?2 AND conditional",
            params![name.as_str(), serial.to_db()],
        )?;
        Ok(())
    }

    /// Note files about to be placed for `name`, before they reach disk (see `staged`).
    pub fn stage(&mut self, name: &ProjectName, paths: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR IGNORE INTO staged (path, project) VALUES (?1, ?2)")?;
            for p in paths {
                put.execute(params![p, name.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forget a project upstream no longer has. Its page directory (`simple/<name>/`) and the
    /// files nothing else references go to `trash` in the same transaction. `false` when the
    /// mirror did not hold it.
    pub fn remove_project(&mut self, name: &ProjectName, serial: Serial) -> Result<bool> {
        self.remove_holding_back(name, "", serial, &[])
    }

    /// [`State::remove_project`], remembering in the same transaction the files the cooldown
    /// holds back of it (`display_name` and `serial`: what to queue when they come of age).
    pub fn remove_holding_back(
        &mut self,
        name: &ProjectName,
        display_name: &str,
        serial: Serial,
        held: &[HeldFile],
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        put_held_back(&tx, name, display_name, serial, held)?;
        let old_paths = paths_of(&tx, name)?;
        let removed = tx.execute("DELETE FROM projects WHERE name = ?1", [name.as_str()])? > 0;
        tx.execute(
            "DELETE FROM page_validators WHERE name = ?1",
            [name.as_str()],
        )?;
        tx.execute(
            "DELETE FROM todo WHERE name = ?1 AND serial <= ?2",
            params![name.as_str(), serial.to_db()],
        )?;
        let mut gone = unreferenced(&tx, old_paths)?;
        gone.extend(unstaged(&tx, name)?);
        if removed {
            set_root_names_dirty(&tx)?;
        }
        gone.extend(keys::project_keys(name));
        put_in_trash(&tx, &gone)?;
        tx.commit()?;
        Ok(removed)
    }

    /// (projects, files, total bytes) the mirror holds.
    pub fn totals(&self) -> Result<(u64, u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM projects), COUNT(*), COALESCE(SUM(size), 0) FROM files",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )?)
    }

    /// Every mirrored project as (normalized name, display name, serial), ordered by name.
    pub fn for_each_project(
        &self,
        mut f: impl FnMut(&str, &str, Serial) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, display_name, serial FROM projects ORDER BY name")
            .map_err(StateError::Sql)?;
        let mut rows = stmt.query([]).map_err(StateError::Sql)?;
        while let Some(row) = rows.next().map_err(StateError::Sql)? {
            let text = |i| -> Result<&str> {
                Ok(row.get_ref(i)?.as_str().map_err(rusqlite::Error::from)?)
            };
            let serial = row.get(2).map_err(StateError::Sql)?;
            f(text(0)?, text(1)?, Serial::from_db(serial))?;
        }
        Ok(())
    }

    /// Record what the JSON API mirror holds for a project: `Some(digest)` of `web/json/<name>`
    /// as written, `Some("")` for no document, `None` before (re)writing it.
    pub fn set_json_api_digest(&mut self, name: &ProjectName, digest: Option<&str>) -> Result<()> {
        put_json_api_digest(&self.conn, name, digest)
    }
}

fn put_json_api_digest(
    conn: &rusqlite::Connection,
    name: &ProjectName,
    digest: Option<&str>,
) -> Result<()> {
    conn.prepare_cached("UPDATE projects SET json_api_sha256 = ?2 WHERE name = ?1")?
        .execute(params![name.as_str(), digest])?;
    Ok(())
}

/// [`record_in`], then the digest of the JSON API document written for it (if any).
fn record_with_digest(
    tx: &rusqlite::Transaction<'_>,
    snap: &ProjectSnapshot,
    json_api_digest: Option<&str>,
) -> Result<Vec<String>> {
    let gone = record_in(tx, snap)?;
    if json_api_digest.is_some() {
        put_json_api_digest(tx, &snap.name, json_api_digest)?;
    }
    Ok(gone)
}

/// [`State::record_project`] inside a transaction the caller commits (adoption records many
/// projects in one).
pub(super) fn record_in(
    tx: &rusqlite::Transaction<'_>,
    snap: &ProjectSnapshot,
) -> Result<Vec<String>> {
    let old_paths = paths_of(tx, &snap.name)?;
    // Cached statements: this runs once per project synced, so parsing SQL each time shows.
    let listed_as: Option<String> = tx
        .prepare_cached("SELECT display_name FROM projects WHERE name = ?1")?
        .query_row([snap.name.as_str()], |r| r.get(0))
        .optional()?;
    match listed_as {
        Some(shown) if shown == snap.display_name => set_root_dirty(tx)?,
        _ => set_root_names_dirty(tx)?,
    }
    tx.prepare_cached(
        "INSERT INTO projects (name, display_name, serial, synced_at, status, status_reason)
         VALUES (?1, ?2, ?3, unixepoch(), ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name,
             serial = excluded.serial, synced_at = excluded.synced_at,
             status = excluded.status, status_reason = excluded.status_reason",
    )?
    .execute(params![
        snap.name.as_str(),
        snap.display_name,
        snap.serial.to_db(),
        snap.status.as_ref().map(|s| s.status.as_str()),
        snap.status.as_ref().and_then(|s| s.reason.as_deref()),
    ])?;
    let project_id: i64 = tx
        .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
        .query_row([snap.name.as_str()], |r| r.get(0))?;
    // Rewriting the project's rows is simpler than diffing and costs the same: a project's
    // rows are few and this runs only when upstream changed it.
    tx.prepare_cached("DELETE FROM releases WHERE project_id = ?1")?
        .execute([project_id])?;
    {
        let mut rel =
            tx.prepare_cached("INSERT INTO releases (project_id, version) VALUES (?1, ?2)")?;
        let mut release_ids = HashMap::new();
        let file_versions = snap.files.iter().map(|f| &f.record.version);
        let mut versions: Vec<&String> = snap.versions.iter().chain(file_versions).collect();
        versions.sort();
        versions.dedup();
        for v in versions {
            rel.execute(params![project_id, v])?;
            release_ids.insert(v.as_str(), tx.last_insert_rowid());
        }
        let mut file = tx.prepare_cached(
            "INSERT INTO files (project_id, release_id, filename, path, size, sha256, blake2b_256,
                upload_time, requires_python, yanked, yanked_reason, packagetype, python_version,
                core_metadata_sha256, provenance, extra_hashes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for f in snap.files.iter().map(|f| &f.record) {
            let release_id = release_ids[f.version.as_str()];
            file.execute(params![
                project_id,
                release_id,
                f.filename.as_str(),
                f.path.relative(),
                f.size as i64,
                f.sha256.to_hex(),
                f.blake2b().to_hex(),
                f.upload_time,
                f.requires_python,
                f.yanked,
                f.yanked_reason,
                f.packagetype,
                f.python_version,
                f.core_metadata.map(|h| h.to_hex()),
                f.provenance,
                (!f.extra_hashes.is_empty()).then(
                    || serde_json::to_string(&f.extra_hashes).expect("a string map serializes")
                ),
            ])?;
        }
    }
    tx.prepare_cached("DELETE FROM todo WHERE name = ?1 AND serial <= ?2")?
        .execute(params![snap.name.as_str(), snap.serial.to_db()])?;
    put_held_back(
        tx,
        &snap.name,
        &snap.display_name,
        snap.serial,
        &snap.held_back,
    )?;
    match &snap.validators {
        Some(v) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO page_validators (name, etag, last_modified, digest)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                snap.name.as_str(),
                v.etag,
                v.last_modified,
                v.digest.to_hex()
            ])?,
        None => tx
            .prepare_cached("DELETE FROM page_validators WHERE name = ?1")?
            .execute([snap.name.as_str()])?,
    };
    let mut gone = unreferenced(tx, old_paths)?;
    gone.extend(unstaged(tx, &snap.name)?);
    put_in_trash(tx, &gone)?;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RemoteFile;

    fn snapshot(name: &str, files: &[&str]) -> ProjectSnapshot {
        let url = reqwest::Url::parse("file:///upstream").unwrap();
        let files = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let hex = format!("{i:02x}").repeat(32);
                RemoteFile::known(FileRecord::for_test("1.0", f, &hex, 3), url.clone())
            })
            .collect();
        ProjectSnapshot::for_test(name, 3, files)
    }

    #[test]
    fn projects_recorded_together_each_get_their_own_outcome() {
        let mut state = State::in_memory().unwrap();
        let a = snapshot("a", &["a-1.0.tar.gz"]);
        // The same file name twice in one project breaks UNIQUE (project_id, filename).
        let bad = snapshot("bad", &["bad-1.0.tar.gz", "bad-1.0.tar.gz"]);
        let c = snapshot("c", &["c-1.0.tar.gz", "c-1.0-py3-none-any.whl"]);
        let results =
            state.record_projects(&[(&a, None), (&bad, Some("digest")), (&c, Some("feed"))]);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(results[1].is_err(), "{results:?}");
        let held = |state: &State, name: &str| {
            state
                .project_files(&ProjectName::new(name).unwrap())
                .unwrap()
                .len()
        };
        assert_eq!(
            (held(&state, "a"), held(&state, "bad"), held(&state, "c")),
            (1, 0, 2)
        );
        let digest: Option<String> = state
            .conn
            .query_row(
                "SELECT json_api_sha256 FROM projects WHERE name = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(digest.as_deref(), Some("feed"));
        // Together when nothing fails: the same records.
        let mut together = State::in_memory().unwrap();
        let results = together.record_projects(&[(&a, None), (&c, Some("feed"))]);
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!((held(&together, "a"), held(&together, "c")), (1, 2));
    }

    #[test]
    fn the_root_pages_to_rewrite_follow_what_changed() {
        use crate::types::keys::RootChange::{Names, Serials};
        let mut state = State::in_memory().unwrap();
        let written = |state: &mut State| {
            let dirty = state.root_dirty().unwrap();
            state.root_written().unwrap();
            dirty
        };
        assert_eq!(written(&mut state), None);
        let mut a = snapshot("a", &["a-1.0.tar.gz"]);
        state.record_project(&a).unwrap();
        assert_eq!(written(&mut state), Some(Names), "a new project");
        a.serial = Serial(4);
        state.record_project(&a).unwrap();
        assert_eq!(written(&mut state), Some(Serials), "a new serial");
        a.display_name = "A".to_owned();
        state.record_project(&a).unwrap();
        assert_eq!(written(&mut state), Some(Names), "a new display name");
        // One project's new serial does not hide another's new name.
        state.record_project(&snapshot("b", &[])).unwrap();
        a.serial = Serial(5);
        state.record_project(&a).unwrap();
        assert_eq!(written(&mut state), Some(Names));
        assert_eq!(state.forget_serials_beyond(Serial(4)).unwrap(), 1);
        assert_eq!(written(&mut state), Some(Serials), "a serial forgotten");
        assert_eq!(state.forget_serials_beyond(Serial(4)).unwrap(), 0);
        assert_eq!(written(&mut state), None);
        let b = ProjectName::new("b").unwrap();
        assert!(state.remove_project(&b, Serial(6)).unwrap());
        assert_eq!(written(&mut state), Some(Names), "a project gone");
        assert!(!state.remove_project(&b, Serial(7)).unwrap());
        assert_eq!(written(&mut state), None, "nothing was listed");
    }

    #[test]
    fn a_root_flag_set_before_names_were_told_apart_rewrites_every_root_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pymirror.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::super::migrate::apply_up_to(&mut conn, 9).unwrap();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('root_dirty', '1')",
                [],
            )
            .unwrap();
        }
        let state = State::open(&path).unwrap();
        assert_eq!(
            state.root_dirty().unwrap(),
            Some(crate::types::keys::RootChange::Names)
        );
    }
}
