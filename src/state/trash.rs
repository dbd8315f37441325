//! `trash`: paths no project references any more, put there in the transaction that dropped
//! their last reference and deleted from disk after it (a crash in between leaks nothing: the
//! next run empties what is left).

use super::{Result, State};
use crate::types::ProjectName;

impl State {
    /// Paths queued for deletion that nothing references (any a project took back are
    /// dropped from the queue here rather than deleted). Page directories (ending in `/`)
    /// come first, so no page ever links a file already deleted.
    pub fn trash(&mut self) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let mut paths = Vec::new();
        {
            // Row by row through the indexes (files.path, projects.name): the trash is a
            // run's deletions, the tables are the whole mirror.
            let mut stmt =
                tx.prepare("SELECT path FROM trash ORDER BY path LIKE '%/' DESC, path")?;
            let mut file = tx.prepare_cached("SELECT 1 FROM files WHERE path = ?1")?;
            let mut project = tx.prepare_cached("SELECT 1 FROM projects WHERE name = ?1")?;
            let mut taken_back = tx.prepare_cached("DELETE FROM trash WHERE path = ?1")?;
            let queued = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for path in queued {
                let referenced = file.exists([&path])?
                    || crate::types::keys::project_of_key(&path)
                        .map(|name| project.exists([name]))
                        .transpose()?
                        .unwrap_or(false);
                match referenced {
                    true => _ = taken_back.execute([&path])?,
                    false => paths.push(path),
                }
            }
        }
        tx.commit()?;
        Ok(paths)
    }

    /// The files at `paths` are gone from disk.
    pub fn emptied(&mut self, paths: &[String]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM trash WHERE path = ?1")?;
            for p in paths {
                del.execute([p])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The project's staged paths, dropping them from `staged`; those no file row references are
/// returned for `trash`.
pub(super) fn unstaged(tx: &rusqlite::Transaction<'_>, name: &ProjectName) -> Result<Vec<String>> {
    let paths: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            // Correlated lookups through files.path: a NOT IN over an expression would
            // build a table of every file in the mirror for each project recorded.
            "SELECT s.path FROM staged s WHERE s.project = ?1
               AND NOT EXISTS (SELECT 1 FROM files f WHERE f.path = s.path)
               AND NOT (substr(s.path, -9) = '.metadata' AND EXISTS (
                   SELECT 1 FROM files f WHERE f.path = substr(s.path, 1, length(s.path) - 9)
                     AND f.core_metadata_sha256 IS NOT NULL))",
        )?;
        stmt.query_map([name.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    tx.prepare_cached("DELETE FROM staged WHERE project = ?1")?
        .execute([name.as_str()])?;
    Ok(paths)
}

pub(super) fn put_in_trash(tx: &rusqlite::Transaction<'_>, paths: &[String]) -> Result<()> {
    let mut put = tx.prepare_cached("INSERT OR IGNORE INTO trash (path) VALUES (?1)")?;
    for p in paths {
        put.execute([p])?;
    }
    Ok(())
}

/// The project's file paths, each with whether its `.metadata` sidecar is held.
pub(super) fn paths_of(
    tx: &rusqlite::Transaction<'_>,
    name: &ProjectName,
) -> Result<Vec<(String, bool)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT f.path, f.core_metadata_sha256 IS NOT NULL
         FROM files f JOIN projects p ON p.id = f.project_id WHERE p.name = ?1",
    )?;
    let rows = stmt.query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Of `paths`, those no file row references now (with their sidecars), and sidecars whose
/// file is still referenced but no longer with a held sidecar.
pub(super) fn unreferenced(
    tx: &rusqlite::Transaction<'_>,
    paths: Vec<(String, bool)>,
) -> Result<Vec<String>> {
    let mut used = tx.prepare_cached(
        "SELECT COUNT(*) > 0, COALESCE(MAX(core_metadata_sha256 IS NOT NULL), 0) FROM files WHERE path = ?1",
    )?;
    let mut gone = Vec::new();
    for (path, had_sidecar) in paths {
        let (referenced, has_sidecar): (bool, bool) =
            used.query_row([&path], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if had_sidecar && !has_sidecar {
            gone.push(format!("{path}.metadata"));
        }
        if !referenced {
            gone.push(path);
        }
    }
    Ok(gone)
}
