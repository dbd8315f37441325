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

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::ProjectName;
use crate::types::hashing::{Hashes, hash_reader};

pub struct Layout {
    pub root: PathBuf,
    pub web: PathBuf,
    pub tmp: PathBuf,
    pub db: PathBuf,
    pub status: PathBuf,
    pub lock: PathBuf,
    counter: AtomicU64,
    /// This process's id, in every temp file's name.
    pid: u32,
    /// Directories under `web/` this run created or found to be real directories (not
    /// symlinks): at most `packages/aa/bb` and `simple/<name>` levels, so bounded by the
    /// 65,536 + projects a full mirror has; the unique per-file hash level is never kept.
    verified: Mutex<HashSet<String>>,
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
            pid: std::process::id(),
            verified: Mutex::new(HashSet::new()),
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
        self.tmp.join(format!("{}-{n}.part", self.pid))
    }

    /// Create the directories above `relative` (a path under `web/`), refusing to pass
    /// through a symlink: the tree is written only where it really is. `mkdir` comes first
    /// because most levels (a file's own hash directory) are new; it never follows a symlink,
    /// and an existing entry is then checked to be a real directory.
    pub fn create_parents(&self, relative: &str) -> std::io::Result<()> {
        let parts: Vec<&str> = relative.split('/').collect();
        let dirs = &parts[..parts.len().saturating_sub(1)];
        let mut dir = self.web.clone();
        for (depth, part) in dirs.iter().enumerate() {
            dir.push(part);
            let key = dirs[..=depth].join("/");
            let per_file = dirs[0] == "packages" && depth + 1 == dirs.len();
            let remember = !per_file;
            if remember && self.verified.lock().expect("verified").contains(&key) {
                continue;
            }
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let meta = std::fs::symlink_metadata(&dir)?;
                    if meta.file_type().is_symlink() {
                        return Err(std::io::Error::other(format!(
                            "{} is a symlink; pymirror does not follow symlinks inside the mirror tree",
                            dir.display()
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
            if remember {
                self.verified.lock().expect("verified").insert(key);
            }
        }
        Ok(())
    }

    /// Whether any directory between `web/` and `relative` is a symlink.
    pub fn through_symlink(&self, relative: &str) -> bool {
        let mut dir = self.web.clone();
        let parts: Vec<&str> = relative.trim_end_matches('/').split('/').collect();
        parts[..parts.len().saturating_sub(1)].iter().any(|part| {
            dir.push(part);
            std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink())
        })
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
            match dest.strip_prefix(&self.web).ok().and_then(Path::to_str) {
                Some(relative) => self.create_parents(relative)?,
                None => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                }
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

/// Hash a file on disk, streaming (blocking: call from a blocking context).
pub fn hash_file(path: &Path) -> std::io::Result<Hashes> {
    hash_file_with(path, &mut vec![0u8; 256 * 1024])
}

/// [`hash_file`] reading through the caller's buffer: no allocation per file when hashing
/// millions of them.
pub fn hash_file_with(path: &Path, buf: &mut [u8]) -> std::io::Result<Hashes> {
    hash_reader(std::fs::File::open(path)?, buf)
}
