//! One writer per mirror: an exclusive advisory lock on `<directory>/.lock`, held for the
//! whole run. The file records the holder's pid so the refusal can name it. The kernel drops
//! the lock when the process dies, however it dies, so there is never a stale lock to clean.
//!
//! `.lock` is opened with `O_NOFOLLOW` (and `O_NONBLOCK`, so a fifo there cannot hang the
//! open): a symlink or anything but a regular file in its place is refused, never written or
//! read through.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::storage::Layout;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another pymirror or bandersnatch (pid {pid}) is working on {dir}; wait for it to finish \
         (this run changed nothing)"
    )]
    Held { pid: String, dir: String },
    #[error("cannot lock {path}: {error}; check the mirror directory's permissions")]
    Io { path: String, error: std::io::Error },
    #[error(
        "{path} is {what}; pymirror does not follow or write through it (it holds the running \
         writer's pid): remove it, then run again"
    )]
    NotAFile { path: String, what: &'static str },
}

/// The pid a lock file holds, read no further than a pid's length.
fn read_pid(file: &mut File) -> String {
    let mut pid = String::new();
    let _ = file.take(64).read_to_string(&mut pid);
    pid.trim().to_owned()
}

/// The pid the kernel names as holding a `flock` on `file`, from `/proc/locks` (bandersnatch
/// writes no pid into `.lock`). Lines read `1: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode>
/// 0 EOF`; a waiter's line has `->` after the number.
fn pid_from_proc_locks(file: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let lock = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    // The kernel serves `/proc/locks` a page per read and finds where it left off by
    // position, so a lock released by another process between two reads shifts the list and
    // can skip the line wanted. The holder's line stays while it holds the lock: read again.
    for attempt in 0..20 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let found = locks.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "FLOCK", _, _, pid, at, ..] if *at == lock => Some((*pid).to_owned()),
                _ => None,
            }
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Who holds the lock on `file`: the pid pymirror wrote there, else the one the kernel names
/// (bandersnatch's), else "unknown".
fn holder_pid(file: &mut File) -> String {
    Some(read_pid(file))
        .filter(|pid| !pid.is_empty())
        .or_else(|| pid_from_proc_locks(file))
        .unwrap_or_else(|| "unknown".into())
}

/// Open `.lock` without following a symlink there; `Ok(None)`: nothing there (when not
/// creating it).
fn open(path: &Path, create: bool) -> Result<Option<File>, LockError> {
    let shown = || path.display().to_string();
    let opened = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LockError::NotAFile {
                path: shown(),
                what: "a symlink",
            });
        }
        Err(error) => {
            return Err(LockError::Io {
                path: shown(),
                error,
            });
        }
    };
    let meta = file.metadata().map_err(|error| LockError::Io {
        path: shown(),
        error,
    })?;
    if !meta.is_file() {
        return Err(LockError::NotAFile {
            path: shown(),
            what: "not a regular file",
        });
    }
    Ok(Some(file))
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
        let mut file = open(&layout.lock, true)?.expect("created");
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    pid: holder_pid(&mut file),
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
        let Some(mut file) = open(&layout.lock, false)? else {
            return Ok(None);
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(holder_pid(&mut file))),
            Err(TryLockError::Error(error)) => Err(LockError::Io {
                path: layout.lock.display().to_string(),
                error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Other processes take and drop locks all the time (SQLite, other mirrors, our own
    /// tests); a held lock must still be found every time, never reported as "pid unknown".
    #[test]
    fn the_holders_pid_is_found_while_other_locks_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = File::create(dir.path().join(".lock")).unwrap();
        held.try_lock().unwrap();
        let (started, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            let churn = s.spawn(|| {
                // Enough locks that `/proc/locks` spans several pages.
                let files: Vec<File> = (0..200)
                    .map(|i| File::create(dir.path().join(format!("churn{i}"))).unwrap())
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    files.iter().for_each(|f| f.lock().unwrap());
                    started.store(true, Ordering::Relaxed);
                    files.iter().for_each(|f| f.unlock().unwrap());
                }
            });
            while !started.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            let pid = std::process::id().to_string();
            let misses = (0..600)
                .filter(|_| pid_from_proc_locks(&held).as_deref() != Some(pid.as_str()))
                .count();
            stop.store(true, Ordering::Relaxed);
            churn.join().unwrap();
            assert_eq!(misses, 0, "the held lock was missed in /proc/locks");
        });
    }
}
