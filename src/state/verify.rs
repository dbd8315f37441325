//! What `pymirror verify` reads from the mirror database: the files of a range of
//! `web/packages/` shards, whether a path is staged, a project as its pages show it, and who
//! references a file. (Its checkpoint and findings are in `verify_log.rs`.)

use rusqlite::OptionalExtension;

use super::{Result, State, StateError};
use crate::types::{
    FileRecord, JsonApiRecord, ProjectName, ProjectStatus, Serial, Sha256, StoredProject,
};

/// A file (or PEP 658 sidecar) the database says is at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    /// Relative to `web/`.
    pub path: String,
    /// `None` for sidecars: the metadata gives only their hash.
    pub size: Option<u64>,
    pub sha256: String,
    /// `None` for sidecars.
    pub blake2b: Option<String>,
}

/// A project referencing a file path, with the file's record.
#[derive(Debug, Clone)]
pub struct FileOwner {
    pub name: ProjectName,
    pub display_name: String,
    pub file: FileRecord,
}

impl State {
    /// The files and sidecars with `from <= path < to` (a range of `packages/aa/bb/`
    /// shards: one index range scan), sorted by path, each once.
    pub fn files_between(&self, from: &str, to: &str) -> Result<Vec<ExpectedFile>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT path, size, sha256, blake2b_256, core_metadata_sha256 FROM files
             WHERE path >= ?1 AND path < ?2",
        )?;
        let mut rows = stmt.query([from, to])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let path: String = r.get(0)?;
            if let Some(sidecar) = r.get::<_, Option<String>>(4)? {
                out.push(ExpectedFile {
                    path: format!("{path}.metadata"),
                    size: None,
                    sha256: sidecar,
                    blake2b: None,
                });
            }
            out.push(ExpectedFile {
                path,
                size: Some(r.get::<_, i64>(1)? as u64),
                sha256: r.get(2)?,
                blake2b: Some(r.get(3)?),
            });
        }
        // A sidecar sorts after its file but not always right after it; two projects may
        // reference the same file.
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    /// Whether a sync placed this file for a project it has not recorded yet.
    pub fn is_staged(&self, path: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM staged WHERE path = ?1")?
            .query_row([path], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn holds_project(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM projects WHERE name = ?1")?
            .query_row([name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn stored_project(&self, name: &ProjectName) -> Result<Option<StoredProject>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, display_name, serial, status, status_reason, json_api_sha256
                 FROM projects WHERE name = ?1",
            )?
            .query_row([name.as_str()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .optional()?;
        let Some((id, display_name, serial, status, reason, json_api)) = row else {
            return Ok(None);
        };
        let versions = self
            .conn
            .prepare_cached("SELECT version FROM releases WHERE project_id = ?1 ORDER BY version")?
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let json_api = match json_api.as_deref() {
            None => JsonApiRecord::Unknown,
            Some("") => JsonApiRecord::Absent,
            Some(hex) => JsonApiRecord::Written(
                Sha256::from_hex(hex)
                    .map_err(|e| StateError::InvalidRow(format!("{name}: json_api_sha256: {e}")))?,
            ),
        };
        Ok(Some(StoredProject {
            files: self.project_files(name)?,
            name: name.clone(),
            display_name,
            serial: Serial::from_db(serial),
            status: status.map(|status| ProjectStatus { status, reason }),
            versions,
            json_api,
        }))
    }

    /// The projects whose files include `path` (relative to `web/`).
    pub fn file_owners(&self, path: &str) -> Result<Vec<FileOwner>> {
        let names: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT p.name, p.display_name FROM files f JOIN projects p ON p.id = f.project_id
                 WHERE f.path = ?1 ORDER BY p.name",
            )?
            .query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for (name, display_name) in names {
            let name =
                ProjectName::new(&name).map_err(|e| StateError::InvalidRow(e.to_string()))?;
            let file = self
                .project_files(&name)?
                .into_iter()
                .find(|f| f.path.relative() == path);
            if let Some(file) = file {
                out.push(FileOwner {
                    name,
                    display_name,
                    file,
                });
            }
        }
        Ok(out)
    }
}
