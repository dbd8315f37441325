//! The mirror directory on local disk: where everything lives.
//!
//! ```text
//! <directory>/
//!   web/                 served tree: simple/ (index pages) and packages/ (files); written
//!                        only through [`Storage`] (absent with `[storage] backend = "s3"`:
//!                        the tree is in the bucket)
//!   tmp/                 temporary files; same filesystem as web/ so rename is atomic
//!   pymirror.db          state database (+ -wal, -shm)
//!   verify.db            verify's checkpoint and findings (+ -wal, -shm)
//!   status               last fully synced serial (bandersnatch-compatible)
//!   .lock                held by the running writer; holds its pid
//! ```
//!
//! Every temporary file is created in `tmp/`, never beside its target, so a crash leaves its
//! debris in one place and the next run clears it without walking the tree.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Durability, Storage};
use crate::config::Config;
use crate::config::storage::Backend;

pub struct Layout {
    pub root: PathBuf,
    pub web: PathBuf,
    pub tmp: PathBuf,
    pub db: PathBuf,
    pub verify_log: PathBuf,
    pub status: PathBuf,
    pub lock: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            web: root.join("web"),
            tmp: root.join("tmp"),
            db: root.join("pymirror.db"),
            verify_log: root.join("verify.db"),
            status: root.join("status"),
            lock: root.join(".lock"),
        }
    }

    /// The served tree where `[storage]` puts it, its temporary objects in `tmp/`.
    pub fn storage(&self, cfg: &Config, durability: Durability) -> std::io::Result<Storage> {
        match &cfg.storage {
            Backend::Filesystem => Ok(Storage::new(&self.web, &self.tmp, durability)),
            Backend::S3(s3) => {
                let bucket = super::s3::Bucket::new(s3, cfg.retries, cfg.retry_delay, cfg.timeout)?;
                Ok(Storage::in_bucket(bucket, &self.tmp))
            }
        }
    }

    /// Create the directory skeleton (`web/` only for a tree on this filesystem). `tmp/`
    /// must be a real directory: a symlink there is refused, never followed (clearing it
    /// would empty wherever it points).
    pub fn create(&self, backend: &Backend) -> std::io::Result<()> {
        self.check_tmp()?;
        let web = [
            &self.web,
            &self.web.join("simple"),
            &self.web.join("packages"),
        ];
        let local = match backend {
            Backend::Filesystem => &web[..],
            Backend::S3(_) => &[],
        };
        for dir in [&self.root, &self.tmp]
            .into_iter()
            .chain(local.iter().copied())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        self.check_tmp()
    }

    /// `tmp/` is a directory, or nothing yet; anything else (a symlink) is refused in one line
    /// naming the fix.
    fn check_tmp(&self) -> std::io::Result<()> {
        let kind = match std::fs::symlink_metadata(&self.tmp) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(m) if m.file_type().is_symlink() => "a symlink",
            Ok(_) => "not a directory",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot check {}: {e}", self.tmp.display()),
                ));
            }
        };
        Err(std::io::Error::other(format!(
            "{} is {kind}; pymirror clears and writes its temporary files there and does not \
             follow it: replace it with a directory on the same filesystem as {} (or remove it), \
             then run again",
            self.tmp.display(),
            self.web.display()
        )))
    }

    /// Remove what an interrupted run left in `tmp/`. Only call while holding the lock; a
    /// symlink at `tmp/` is refused (its target is never emptied), and entries are removed
    /// without following symlinks among them.
    pub fn clear_tmp(&self) -> std::io::Result<usize> {
        self.check_tmp()?;
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

    /// Write the `status` file (the last fully synced serial) atomically, when it changed.
    pub fn write_status(&self, serial: u64, fsync: bool) -> std::io::Result<()> {
        let bytes = format!("{serial}\n");
        // Compared without following a symlink, reading at most one byte past the new
        // contents (a planted /dev/zero is never read); the rename below replaces a symlink
        // there, never writes through it.
        let old = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.status)
            .and_then(|file| {
                if !file.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                let mut old = Vec::new();
                file.take(bytes.len() as u64 + 1).read_to_end(&mut old)?;
                Ok(old)
            });
        if old.is_ok_and(|old| old == bytes.as_bytes()) {
            return Ok(());
        }
        let tmp = self.tmp.join(format!("status-{}.part", std::process::id()));
        let result = (|| {
            // O_EXCL: never through a symlink planted at that name.
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::File::create_new(&tmp)?;
            file.write_all(bytes.as_bytes())?;
            if fsync {
                file.sync_all()?;
            }
            std::fs::rename(&tmp, &self.status)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot write {}: {e}", self.status.display()),
            )
        })
    }
}

/// A directory, not a symlink to one.
pub fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The mirror's own state, which no orphan deletion may touch: the database, verify's log
/// and their journals, the lock and `status`, however they are reached (a hard link, a
/// symlinked directory on the way).
pub struct Protected {
    protected: Vec<(u64, u64, PathBuf)>,
}

impl Protected {
    pub fn new(layout: &Layout) -> Protected {
        let journals = |db: &Path| {
            let db = db.display().to_string();
            ["", "-wal", "-shm", "-journal"].map(|suffix| PathBuf::from(format!("{db}{suffix}")))
        };
        let protected = journals(&layout.db)
            .into_iter()
            .chain(journals(&layout.verify_log))
            .chain([layout.lock.clone(), layout.status.clone()])
            .filter_map(|p| {
                let m = std::fs::symlink_metadata(&p).ok()?;
                let canonical = std::fs::canonicalize(&p).unwrap_or(p);
                Some((m.dev(), m.ino(), canonical))
            })
            .collect();
        Protected { protected }
    }

    pub fn check(&self, path: &Path) -> Result<(), String> {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if let Some((.., own)) = self
            .protected
            .iter()
            .find(|(dev, ino, _)| (*dev, *ino) == (m.dev(), m.ino()))
        {
            return Err(format!(
                "refused: it is {}, the mirror's own state",
                own.display()
            ));
        }
        if m.is_dir() {
            let canonical = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
            if let Some((.., own)) = self
                .protected
                .iter()
                .find(|(.., p)| p.starts_with(&canonical))
            {
                return Err(format!(
                    "refused: it holds {}, the mirror's own state",
                    own.display()
                ));
            }
        }
        Ok(())
    }
}
