//! The mirror directory: where everything lives, and the one way to put a file in place.
//!
//! ```text
//! <directory>/
//!   web/                 served tree: simple/ (index pages) and packages/ (files)
//!   tmp/                 temporary files; same filesystem as web/ so rename is atomic
//!   pymirror.db          state database (+ -wal, -shm)
//!   status               last fully synced serial (bandersnatch-compatible)
//!   .lock                held by the running writer; holds its pid
//! ```
//!
//! Every temporary file is created in `tmp/`, never beside its target, so a crash leaves its
//! debris in one place and the next run clears it without walking the tree.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::ProjectName;

pub struct Layout {
    pub root: PathBuf,
    pub web: PathBuf,
    pub tmp: PathBuf,
    pub db: PathBuf,
    pub status: PathBuf,
    pub lock: PathBuf,
    counter: AtomicU64,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            web: root.join("web"),
            tmp: root.join("tmp"),
            db: root.join("pymirror.db"),
            status: root.join("status"),
            lock: root.join(".lock"),
            counter: AtomicU64::new(0),
        }
    }

    /// Create the directory skeleton.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [
            &self.root,
            &self.web,
            &self.tmp,
            &self.web.join("simple"),
            &self.web.join("packages"),
        ] {
            std::fs::create_dir_all(dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }

    /// Remove what an interrupted run left in `tmp/`. Only call while holding the lock.
    pub fn clear_tmp(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// A fresh, unique temporary path in `tmp/`.
    pub fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.part", std::process::id()))
    }

    /// Absolute path of a validated `packages/...` relative path.
    pub fn web_path(&self, relative: &str) -> PathBuf {
        self.web.join(relative)
    }

    pub fn project_dir(&self, name: &ProjectName) -> PathBuf {
        self.web.join("simple").join(name.as_str())
    }

    pub fn root_index(&self) -> PathBuf {
        self.web.join("simple").join("index.html")
    }

    /// Replace `dest` with `bytes` atomically (temp file in `tmp/`, fsync when asked, rename),
    /// unless it already holds exactly those bytes. Returns whether it wrote.
    pub fn write_if_changed(
        &self,
        dest: &Path,
        bytes: &[u8],
        fsync: bool,
    ) -> std::io::Result<bool> {
        if std::fs::read(dest).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
        self.write_atomic(dest, |f| f.write_all(bytes), fsync)?;
        Ok(true)
    }

    /// Write through `fill` into a temp file, then rename it over `dest`.
    pub fn write_atomic(
        &self,
        dest: &Path,
        fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
        fsync: bool,
    ) -> std::io::Result<()> {
        let tmp = self.temp_path();
        let result = (|| {
            let mut w = std::io::BufWriter::new(std::fs::File::create_new(&tmp)?);
            fill(&mut w)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            if fsync {
                file.sync_all()?;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&tmp, dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot write {}: {e}", dest.display()))
        })
    }
}
