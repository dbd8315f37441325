//! One writer per mirror: an exclusive advisory lock on `<directory>/.lock`, held for the
//! whole run. The file records the holder's pid so the refusal can name it. The kernel drops
//! the lock when the process dies, however it dies, so there is never a stale lock to clean.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};

use crate::storage::Layout;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another pymirror (pid {pid}) is working on {dir}; wait for it to finish (this run changed nothing)"
    )]
    Held { pid: String, dir: String },
    #[error("cannot lock {path}: {error}; check the mirror directory's permissions")]
    Io { path: String, error: std::io::Error },
}

pub struct MirrorLock {
    _file: File,
}

impl MirrorLock {
    pub fn acquire(layout: &Layout) -> Result<MirrorLock, LockError> {
        let io = |error| LockError::Io {
            path: layout.lock.display().to_string(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&layout.lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_owned()
                    },
                    dir: layout.root.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(MirrorLock { _file: file })
    }

    /// The pid of the process holding the lock, if one does (a sync running now). Probing
    /// takes the lock for an instant; a sync starting in that instant is refused as usual.
    pub fn holder(layout: &Layout) -> Result<Option<String>, LockError> {
        let mut file = match File::open(&layout.lock) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(LockError::Io {
                    path: layout.lock.display().to_string(),
                    error,
                });
            }
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Ok(Some(pid.trim().to_owned()))
            }
            Err(TryLockError::Error(error)) => Err(LockError::Io {
                path: layout.lock.display().to_string(),
                error,
            }),
        }
    }
}
