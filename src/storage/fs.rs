//! The served tree, addressed by keys: on a local filesystem (`<directory>/web/`), or in a
//! bucket ([`super::s3::Bucket`], `[storage] backend = "s3"`), which every method hands its
//! key to; temporary objects are local files in `tmp/` either way.
//!
//! A key is a path relative to the tree's root, `/`-separated, as a client sees it under the
//! mirror's URL (`simple/six/index.html`, `packages/aa/bb/<60 hex>/<file>`); a key ending in
//! `/` names a directory (a project's page directory). Callers never see a `std::fs` path of
//! the tree: that is what lets another backend (object storage) take this one's place.
//!
//! Every object reaches its key whole: bytes go to a temporary file in `tmp/` (same
//! filesystem, so the rename is atomic), then renamed into place through directories that
//! must not be symlinks. When it is durable is the [`Durability`]: fsynced before the rename,
//! or flushed in a group ([`Storage::flush`]) before anyone records it. Nothing is ever written or deleted through a
//! symlink inside the tree.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::layout::Protected;
use super::s3::Bucket;
use crate::types::PACKAGES;
use crate::types::hashing::{Hashes, hash_reader};

/// A symlink met inside the tree: that one key is refused (nothing is written, read or
/// deleted through it), the rest of the tree is fine, so it is no disk error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SymlinkRefused(String);

fn symlink_refused(message: String) -> std::io::Error {
    std::io::Error::other(SymlinkRefused(message))
}

/// Whether `e` is a refusal to pass through a symlink in the tree ([`SymlinkRefused`]).
pub fn is_symlink_refused(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<SymlinkRefused>())
}

/// What is at a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A device, socket or fifo: never something pymirror wrote.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Length in bytes (files).
    pub size: u64,
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Meta {
        Meta {
            kind: Kind::of(m.file_type()),
            size: m.len(),
        }
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

impl Kind {
    fn of(t: std::fs::FileType) -> Kind {
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }

    /// What it is, in a sentence ("a symlink is in its place").
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Other => "special file",
        }
    }
}

/// One entry of a directory listing: its name (not the whole key) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub meta: Meta,
    /// A directory's own entries, when the listing that found it had them already (a
    /// bucket's flat listing of a tree): listing it again costs nothing.
    pub below: Option<Arc<Vec<Entry>>>,
}

/// When the bytes a [`Storage`] commits are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never forced (`fsync = false`): the kernel writes them back when it will.
    None,
    /// Each object fsynced before its rename.
    EachObject,
    /// Objects renamed unflushed; [`Storage::flush`] makes everything committed so far
    /// durable in one filesystem-wide flush shared by every caller waiting at that moment.
    /// Whoever records an object as held calls it first.
    Grouped,
}

pub struct Storage {
    web: PathBuf,
    /// The tree is in this bucket, not under `web`.
    bucket: Option<Bucket>,
    tmp: PathBuf,
    durability: Durability,
    /// Group commit: `requested` counts flushes started, `flushed` the newest one finished.
    requested: AtomicU64,
    flushed: AtomicU64,
    flushing: Mutex<()>,
    /// A flush is writing the filesystem back right now.
    writing_back: AtomicBool,
    counter: AtomicU64,
    /// This process's id, in every temp file's name.
    pid: u32,
    /// Directories this run created or found to be real directories (not symlinks): at most
    /// the `packages/aa/bb` and `simple/<name>` levels, so bounded by the 65,536 + projects a
    /// full mirror has; the unique per-file hash level is never kept.
    verified: Mutex<HashSet<String>>,
}

/// A temporary object being written; [`Storage::commit`] puts it at its key. Dropped
/// uncommitted (a failed or abandoned write), it deletes itself.
pub struct Staged {
    path: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl Staged {
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::create_new(&self.path)?),
        };
        file.write_all(bytes)
    }

    /// Whether its file was created yet (by a first write).
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Where its bytes are, for error messages.
    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Flush the filesystem holding `dir` (`syncfs`; where the kernel lacks it, `sync`).
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() };
        return Ok(());
    }
    Err(std::io::Error::new(
        error.kind(),
        format!("flushing {} to disk: {error}", dir.display()),
    ))
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// At most `limit` bytes of what was opened; `None` when there was nothing to open.
fn read_opened(opened: std::io::Result<File>, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

impl Storage {
    /// The tree at `web`, with temporary files in `tmp` (the same filesystem).
    pub fn new(web: &Path, tmp: &Path, durability: Durability) -> Storage {
        Storage {
            web: web.to_owned(),
            bucket: None,
            tmp: tmp.to_owned(),
            durability,
            requested: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushing: Mutex::new(()),
            writing_back: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            pid: std::process::id(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// The tree in `bucket`, with temporary objects in `tmp`. Every object is durable once
    /// uploaded: no durability to choose.
    pub fn in_bucket(bucket: Bucket, tmp: &Path) -> Storage {
        Storage {
            bucket: Some(bucket),
            ..Storage::new(Path::new(""), tmp, Durability::None)
        }
    }

    /// Whether reading an object back is as cheap as reading a local file (else, a wheel's
    /// sidecar is asked of upstream rather than read from the wheel).
    pub fn is_local(&self) -> bool {
        self.bucket.is_none()
    }

    /// Whether committing a small object costs a few metadata calls on a local disk: no
    /// upload, no fsync of its own.
    pub fn commits_cheaply(&self) -> bool {
        self.bucket.is_none() && self.durability != Durability::EachObject
    }

    /// The path (or `s3://` URL) of a key, for messages only.
    pub fn describe(&self, key: &str) -> String {
        match &self.bucket {
            Some(b) => b.describe(key),
            None => self.path(key).display().to_string(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.web.join(key.trim_end_matches('/'))
    }

    /// What is at `key`, without following a symlink there. `None`: nothing.
    pub fn stat(&self, key: &str) -> std::io::Result<Option<Meta>> {
        if let Some(b) = &self.bucket {
            return b.stat(key);
        }
        match std::fs::symlink_metadata(self.path(key)) {
            Ok(m) => Ok(Some(Meta::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether anything (even a symlink) is at `key`.
    pub fn exists(&self, key: &str) -> bool {
        if let Some(b) = &self.bucket {
            return b.exists(key);
        }
        std::fs::symlink_metadata(self.path(key)).is_ok()
    }

    /// The bytes of the object at `key`, at most `limit` of them (a caller comparing with `n`
    /// bytes asks for `n + 1`: one more says the object is longer); `None` when there is none.
    /// Like [`Storage::open`], never through a symlink nor from anything but a regular file.
    pub fn read(&self, key: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(b) = &self.bucket {
            let Some((reader, _)) = b.reader(key)? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            reader.take(limit).read_to_end(&mut bytes)?;
            return Ok(Some(bytes));
        }
        read_opened(self.open(key), limit)
    }

    /// Open the object at `key` for reading: refused when a directory on its way or the key
    /// itself is a symlink (`O_NOFOLLOW`), or when it is not a regular file (`O_NONBLOCK`, so
    /// a fifo cannot hang the open; a device such as /dev/zero is never read).
    pub fn open(&self, key: &str) -> std::io::Result<File> {
        if let Some(b) = &self.bucket {
            return b.download(key, &self.tmp);
        }
        if self.through_symlink(key) {
            return Err(symlink_refused(format!(
                "not reading {}: a directory on its way is a symlink",
                self.describe(key)
            )));
        }
        self.open_listed(key)
    }

    /// [`Storage::open`] for a walk that opens many keys under the same directories (an
    /// adoption): the directories on the way that are remembered (not a file's own hash
    /// directory, see `verified`) are checked once per run, the others every time.
    pub fn open_walking(&self, key: &str) -> std::io::Result<File> {
        if self.bucket.is_some() {
            return self.open(key);
        }
        self.walk(key)?;
        self.open_listed(key)
    }

    /// The size of the regular file at `key`, checked as [`Storage::open_walking`] would
    /// open it but without opening it: a symlink on the way or at the key is refused, and
    /// anything but a regular file is an error (an adoption's size check: two `lstat`s).
    pub fn size_walking(&self, key: &str) -> std::io::Result<u64> {
        if self.bucket.is_some() {
            return match self.stat(key)? {
                Some(m) if m.is_file() => Ok(m.size),
                Some(_) => Err(std::io::Error::other(format!(
                    "not reading {}: not a regular file",
                    self.describe(key)
                ))),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{}: no such object", self.describe(key)),
                )),
            };
        }
        self.walk(key)?;
        let path = self.path(key);
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            return Err(symlink_refused(format!(
                "not reading {}: it is a symlink",
                path.display()
            )));
        }
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "not reading {}: not a regular file",
                path.display()
            )));
        }
        Ok(meta.len())
    }

    /// The directories on the way to `key` checked for symlinks (see `verified`).
    fn walk(&self, key: &str) -> std::io::Result<()> {
        let parts: Vec<&str> = key.trim_end_matches('/').split('/').collect();
        let dirs = &parts[..parts.len().saturating_sub(1)];
        let mut dir = self.web.clone();
        for (depth, part) in dirs.iter().enumerate() {
            dir.push(part);
            let per_file = dirs[0] == PACKAGES && depth + 1 == dirs.len();
            let way = dirs[..=depth].join("/");
            if !per_file && self.verified.lock().expect("verified").contains(&way) {
                continue;
            }
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(symlink_refused(format!(
                        "not reading {}: a directory on its way is a symlink",
                        self.describe(key)
                    )));
                }
                Ok(m) if m.is_dir() && !per_file => {
                    self.verified.lock().expect("verified").insert(way);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// [`Storage::read`] of a key in a directory just met in a listing (see
    /// [`Storage::open_listed`]).
    pub fn read_listed(&self, key: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        if self.bucket.is_some() {
            return self.read(key, limit);
        }
        read_opened(self.open_listed(key), limit)
    }

    /// [`Storage::read`] through [`Storage::open_walking`].
    pub fn read_walking(&self, key: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        if self.bucket.is_some() {
            return self.read(key, limit);
        }
        read_opened(self.open_walking(key), limit)
    }

    /// [`Storage::open`] for a key just met in a listing of its directory (which checked the
    /// way there): only the key itself is checked (`O_NOFOLLOW`, a regular file).
    pub fn open_listed(&self, key: &str) -> std::io::Result<File> {
        if self.bucket.is_some() {
            return self.open(key);
        }
        let path = self.path(key);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => {
                    symlink_refused(format!("not reading {}: it is a symlink", path.display()))
                }
                _ => e,
            })?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other(format!(
                "not reading {}: not a regular file",
                path.display()
            )));
        }
        Ok(file)
    }

    /// Both digests and the length of the object at `key`, read through `buf`; no further
    /// than the length it had when opened (and one byte more, so growth shows as a length
    /// mismatch).
    pub fn hash(&self, key: &str, buf: &mut [u8]) -> std::io::Result<Hashes> {
        if let Some(b) = &self.bucket {
            // Streamed, never stored locally.
            let Some((reader, len)) = b.reader(key)? else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{}: no such object", self.describe(key)),
                ));
            };
            return hash_reader(reader.take(len.saturating_add(1)), buf);
        }
        hash_file(self.open(key)?, buf)
    }

    /// [`Storage::hash`] through [`Storage::open_walking`].
    pub fn hash_walking(&self, key: &str, buf: &mut [u8]) -> std::io::Result<Hashes> {
        if self.bucket.is_some() {
            return self.hash(key, buf);
        }
        hash_file(self.open_walking(key)?, buf)
    }

    /// [`Storage::hash`] of a key just met in a listing of its directory (see
    /// [`Storage::open_listed`]).
    pub fn hash_listed(&self, key: &str, buf: &mut [u8]) -> std::io::Result<Hashes> {
        if self.bucket.is_some() {
            return self.hash(key, buf);
        }
        hash_file(self.open_listed(key)?, buf)
    }

    /// The entries directly under the directory `prefix` (`""`: the root), sorted by name;
    /// `None` when there is no such directory (or a symlink is there: never listed through).
    /// A name that is not UTF-8 is given lossily: it can be reported, not addressed (no key
    /// pymirror writes has one). Sizes are read for files only.
    pub fn list(&self, prefix: &str) -> std::io::Result<Option<Vec<Entry>>> {
        if let Some(b) = &self.bucket {
            return b.list(prefix);
        }
        if !self.is_listable_dir(prefix)? {
            return Ok(None);
        }
        self.read_entries(prefix, true)
    }

    /// Whether [`Storage::list`] would find anything under `prefix`, from its first entry
    /// alone: a full mirror's `simple/` holds a directory per project, too many to read
    /// each run to learn that it is not empty.
    pub fn holds_any(&self, prefix: &str) -> std::io::Result<bool> {
        if let Some(b) = &self.bucket {
            return b.holds_any(prefix);
        }
        if !self.is_listable_dir(prefix)? {
            return Ok(false);
        }
        Ok(std::fs::read_dir(self.path(prefix))?
            .next()
            .transpose()?
            .is_some())
    }

    /// A real directory at `prefix`, reached through no symlink: never listed through one.
    fn is_listable_dir(&self, prefix: &str) -> std::io::Result<bool> {
        Ok(!self.through_symlink(prefix) && self.stat(prefix)?.is_some_and(|m| m.is_dir()))
    }

    /// The entries of `entry`, a directory met in the listing of `parent`: that listing
    /// checked the way there, and the entry's type (from the directory itself, not a
    /// followed link) says it is a real directory, so this is one `read_dir` and nothing more
    /// (a walk of a million-file tree saves five `lstat`s a file). `None` for anything else.
    pub fn list_within(&self, parent: &str, entry: &Entry) -> std::io::Result<Option<Vec<Entry>>> {
        if !entry.meta.is_dir() {
            return Ok(None);
        }
        if let Some(below) = &entry.below {
            return Ok(Some(below.as_ref().clone()));
        }
        let prefix = format!("{}/{}", parent.trim_end_matches('/'), entry.name);
        self.read_entries(&prefix, true)
    }

    /// [`Storage::list_within`] without sizes (every size 0): one `read_dir` and no `lstat`,
    /// for a walk that needs only names and kinds (an adoption's orphans).
    pub fn kinds_within(&self, parent: &str, entry: &Entry) -> std::io::Result<Option<Vec<Entry>>> {
        if !entry.meta.is_dir() {
            return Ok(None);
        }
        let prefix = format!("{}/{}", parent.trim_end_matches('/'), entry.name);
        if self.bucket.is_some() {
            return self.list_within(parent, entry);
        }
        self.read_entries(&prefix, false)
    }

    /// One `read_dir` of `prefix`, sorted; `sizes`: an `lstat` per file for its size (else 0).
    fn read_entries(&self, prefix: &str, sizes: bool) -> std::io::Result<Option<Vec<Entry>>> {
        if let Some(b) = &self.bucket {
            return b.list_tree(prefix);
        }
        let entries = match std::fs::read_dir(self.path(prefix)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let kind = Kind::of(entry.file_type()?);
            let size = match kind {
                Kind::File if sizes => entry.metadata()?.len(),
                _ => 0,
            };
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                meta: Meta { kind, size },
                below: None,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    /// A fresh temporary object.
    pub fn stage(&self) -> Staged {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        Staged {
            path: self.tmp.join(format!("{}-{n}.part", self.pid)),
            file: None,
            committed: false,
        }
    }

    /// With [`Durability::Grouped`], make every object committed before this call durable:
    /// one `syncfs` of the tree's filesystem, shared by all callers waiting at once (a flush
    /// that started after a caller arrived covers its objects). Blocking.
    pub fn flush(&self) -> std::io::Result<()> {
        if self.durability != Durability::Grouped {
            return Ok(());
        }
        let arrived = self.requested.load(Ordering::SeqCst);
        let _one_at_a_time = self.flushing.lock().expect("flush lock poisoned");
        if self.flushed.load(Ordering::SeqCst) > arrived {
            return Ok(());
        }
        let this = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.writing_back.store(true, Ordering::Relaxed);
        let flushed = sync_filesystem(&self.web);
        self.writing_back.store(false, Ordering::Relaxed);
        flushed?;
        self.flushed.store(this, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a flush is writing the filesystem back right now: a file created meanwhile
    /// may wait for a bitmap or directory block under write.
    pub fn is_writing_back(&self) -> bool {
        self.writing_back.load(Ordering::Relaxed)
    }

    /// Put `staged` at `key`: flushed (and fsynced when configured), then renamed into place.
    /// Errors name the path involved.
    pub fn commit(&self, mut staged: Staged, key: &str) -> std::io::Result<()> {
        let on = |path: &Path, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        let file = match staged.file.take() {
            Some(f) => f,
            None => File::create_new(&staged.path).map_err(|e| on(&staged.path, e))?,
        };
        if self.durability == Durability::EachObject {
            file.sync_all().map_err(|e| on(&staged.path, e))?;
        }
        drop(file);
        if let Some(b) = &self.bucket {
            // Uploaded whole, then the staged file deletes itself as it is dropped.
            return b.upload(&staged.path, key);
        }
        let dest = self.path(key);
        self.create_parents(key)
            .map_err(|e| match is_symlink_refused(&e) {
                true => e,
                false => on(&dest, e),
            })?;
        std::fs::rename(&staged.path, &dest).map_err(|e| on(&dest, e))?;
        staged.committed = true;
        Ok(())
    }

    /// Put the bytes `fill` writes at every key in `keys` (the same page under several
    /// names), streamed once.
    pub fn put_streamed(
        &self,
        keys: &[&str],
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let result = (|| {
            let mut staged: Vec<Staged> = keys.iter().map(|_| self.stage()).collect();
            {
                let mut out = Tee::new(&mut staged)?;
                fill(&mut out)?;
                out.flush()?;
            }
            for (s, key) in staged.into_iter().zip(keys) {
                self.commit(s, key)?;
            }
            Ok(())
        })();
        result.map_err(|e: std::io::Error| {
            let key = keys.first().copied().unwrap_or_default();
            std::io::Error::new(
                e.kind(),
                format!("cannot write {}: {e}", self.describe(key)),
            )
        })
    }

    /// Put `bytes` at `key`, unless it already holds exactly those bytes. Returns whether it
    /// wrote (unchanged pages keep their mtime: no churn for rsync or caches).
    pub fn put_if_changed(&self, key: &str, bytes: &[u8]) -> std::io::Result<bool> {
        // Read no more than one byte past the new page: a planted /dev/zero or a huge file
        // there costs nothing (and is never read at all through a symlink).
        let limit = bytes.len() as u64 + 1;
        if self
            .read(key, limit)
            .is_ok_and(|old| old.is_some_and(|old| old == bytes))
        {
            return Ok(false);
        }
        self.put_streamed(&[key], |w| w.write_all(bytes))?;
        Ok(true)
    }

    /// [`Storage::delete`], refused when what is at `key` is (or holds) one of the mirror
    /// directory's own files (a hard link to the database, say).
    pub fn delete_unless(&self, key: &str, protected: &Protected) -> std::io::Result<()> {
        if self.bucket.is_some() {
            // The mirror's own state is local: no object can be it.
            return self.delete(key);
        }
        protected
            .check(&self.path(key))
            .map_err(std::io::Error::other)?;
        self.delete(key)
    }

    /// Delete the object at `key`, or the directory and everything under it when `key` ends
    /// in `/`. Nothing there is fine; a symlink on the way is refused.
    pub fn delete(&self, key: &str) -> std::io::Result<()> {
        if let Some(b) = &self.bucket {
            return b.delete(key);
        }
        if self.through_symlink(key) {
            return Err(symlink_refused(format!(
                "not deleting {}: a directory on its way is a symlink",
                self.describe(key)
            )));
        }
        let path = self.path(key);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && key.ends_with('/') => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(std::io::Error::new(
                e.kind(),
                format!("cannot delete {}: {e}", path.display()),
            )),
            _ => Ok(()),
        }
    }

    /// Remove the directory `prefix` if it is empty (after its last object went).
    pub fn remove_empty_dir(&self, prefix: &str) -> bool {
        // A bucket has no directories to remove: say "not removed" so no one climbs further.
        self.bucket.is_none() && std::fs::remove_dir(self.path(prefix)).is_ok()
    }

    /// Whether any directory between the root and `key` is a symlink.
    pub fn through_symlink(&self, key: &str) -> bool {
        if self.bucket.is_some() {
            return false;
        }
        let mut dir = self.web.clone();
        let parts: Vec<&str> = key.trim_end_matches('/').split('/').collect();
        parts[..parts.len().saturating_sub(1)].iter().any(|part| {
            dir.push(part);
            std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink())
        })
    }

    /// Create the directories above `key`, refusing to pass through a symlink. `mkdir` comes
    /// first because most levels (a file's own hash directory) are new; it never follows a
    /// symlink, and an existing entry is then checked to be a real directory.
    fn create_parents(&self, key: &str) -> std::io::Result<()> {
        let parts: Vec<&str> = key.split('/').collect();
        let dirs = &parts[..parts.len().saturating_sub(1)];
        let mut dir = self.web.clone();
        for (depth, part) in dirs.iter().enumerate() {
            dir.push(part);
            let key = dirs[..=depth].join("/");
            let per_file = dirs[0] == PACKAGES && depth + 1 == dirs.len();
            let remember = !per_file;
            if remember && self.verified.lock().expect("verified").contains(&key) {
                continue;
            }
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let meta = std::fs::symlink_metadata(&dir)?;
                    if meta.file_type().is_symlink() {
                        return Err(symlink_refused(format!(
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
}

/// Both digests of an open file, no further than the length it had when opened (and one byte
/// more, so growth shows as a length mismatch).
fn hash_file(file: File, buf: &mut [u8]) -> std::io::Result<Hashes> {
    let len = file.metadata()?.len();
    hash_reader(file.take(len.saturating_add(1)), buf)
}

/// Writes the same bytes to several staged objects.
struct Tee<'a> {
    outs: Vec<std::io::BufWriter<&'a mut File>>,
}

impl<'a> Tee<'a> {
    fn new(staged: &'a mut [Staged]) -> std::io::Result<Tee<'a>> {
        let mut outs = Vec::with_capacity(staged.len());
        for s in staged.iter_mut() {
            if s.file.is_none() {
                s.file = Some(File::create_new(&s.path)?);
            }
            outs.push(std::io::BufWriter::new(
                s.file.as_mut().expect("just created"),
            ));
        }
        Ok(Tee { outs })
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for out in &mut self.outs {
            out.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for out in &mut self.outs {
            out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_any_agrees_with_list_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web");
        let s = Storage::new(&web, &dir.path().join("tmp"), Durability::None);
        let agree = |prefix: &str, holds: bool| {
            assert_eq!(s.holds_any(prefix).unwrap(), holds, "{prefix}");
            let listed = s.list(prefix).unwrap().is_some_and(|e| !e.is_empty());
            assert_eq!(listed, holds, "{prefix}: list disagrees");
        };
        agree("simple", false);
        std::fs::create_dir_all(web.join("simple")).unwrap();
        agree("simple", false);
        std::fs::create_dir_all(web.join("simple/demo")).unwrap();
        agree("simple", true);
        // Never looked into through a symlink, like a listing.
        std::os::unix::fs::symlink(web.join("simple"), web.join("packages")).unwrap();
        agree("packages", false);
    }

    #[test]
    fn a_walk_never_opens_through_a_symlinked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web");
        let hash = "c".repeat(60);
        for (shard, target) in [("aa/bb", "real"), ("aa/cc", "elsewhere")] {
            let d = web.join(format!("packages/{shard}/{hash}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f.tar.gz"), target).unwrap();
        }
        let s = Storage::new(&web, &dir.path().join("tmp"), Durability::None);
        let key = |shard: &str| format!("packages/{shard}/{hash}/f.tar.gz");
        let mut text = String::new();
        s.open_walking(&key("aa/bb"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "real");
        // A file's own hash directory, then a shard remembered as real, replaced by symlinks.
        let own = web.join(format!("packages/aa/bb/{}", "d".repeat(60)));
        std::os::unix::fs::symlink(web.join(format!("packages/aa/cc/{hash}")), &own).unwrap();
        let e = s
            .open_walking(&format!("packages/aa/bb/{}/f.tar.gz", "d".repeat(60)))
            .unwrap_err();
        assert!(is_symlink_refused(&e), "{e}");
        std::fs::remove_dir_all(web.join("packages/aa/cc")).unwrap();
        std::os::unix::fs::symlink(web.join("packages/aa/bb"), web.join("packages/aa/cc")).unwrap();
        let e = s.open_walking(&key("aa/cc")).unwrap_err();
        assert!(is_symlink_refused(&e), "{e}");
    }

    #[test]
    fn grouped_flushes_are_shared_by_the_callers_waiting_at_once() {
        let (_dir, s) = storage_with(Durability::Grouped);
        std::thread::scope(|scope| {
            for i in 0..16 {
                let s = &s;
                scope.spawn(move || {
                    let mut staged = s.stage();
                    staged.write_all(b"bytes").unwrap();
                    s.commit(staged, &format!("simple/p{i}/index.html"))
                        .unwrap();
                    s.flush().unwrap();
                    // This caller's object is covered by a flush that started after it.
                    assert!(s.flushed.load(Ordering::SeqCst) >= 1);
                });
            }
        });
        let flushes = s.requested.load(Ordering::SeqCst);
        assert!((1..=16).contains(&flushes), "{flushes} flushes");
        // Nothing to do without grouping.
        let (_dir, plain) = storage();
        plain.flush().unwrap();
        assert_eq!(plain.requested.load(Ordering::SeqCst), 0);
    }

    fn storage() -> (tempfile::TempDir, Storage) {
        storage_with(Durability::None)
    }

    fn storage_with(durability: Durability) -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("web")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let s = Storage::new(&dir.path().join("web"), &dir.path().join("tmp"), durability);
        (dir, s)
    }

    #[test]
    fn objects_are_put_listed_read_and_deleted_by_key() {
        let (dir, s) = storage();
        s.put_streamed(&["simple/index.html", "simple/index.v1_html"], |w| {
            w.write_all(b"root")
        })
        .unwrap();
        assert_eq!(
            s.read("simple/index.v1_html", 100).unwrap().unwrap(),
            b"root"
        );
        assert_eq!(s.read("simple/index.v1_html", 2).unwrap().unwrap(), b"ro");
        assert!(!s.put_if_changed("simple/index.html", b"root").unwrap());
        assert!(s.put_if_changed("simple/a/index.html", b"a").unwrap());
        let names: Vec<String> = s
            .list("simple")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a", "index.html", "index.v1_html"]);
        assert_eq!(s.stat("simple/a/").unwrap().unwrap().kind, Kind::Dir);
        s.delete("simple/a/").unwrap();
        assert_eq!(s.stat("simple/a/").unwrap(), None);
        s.delete("simple/nothing").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn nothing_is_written_or_deleted_through_a_symlink() {
        let (dir, s) = storage();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("web/simple")).unwrap();
        assert!(s.put_if_changed("simple/x", b"x").is_err());
        assert!(s.delete("simple/f").is_err());
        assert!(s.read("simple/f", 100).is_err());
        assert!(s.hash("simple/f", &mut [0; 64]).is_err());
        assert_eq!(s.list("simple/").unwrap(), None);
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"keep");
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn a_symlink_or_device_at_a_key_is_never_read_but_replaced() {
        let (dir, s) = storage();
        std::fs::create_dir_all(dir.path().join("web/simple")).unwrap();
        std::fs::write(dir.path().join("outside"), b"page").unwrap();
        for target in [Path::new("/dev/zero"), &dir.path().join("outside")] {
            let page = dir.path().join("web/simple/index.html");
            let _ = std::fs::remove_file(&page);
            std::os::unix::fs::symlink(target, &page).unwrap();
            assert!(s.read("simple/index.html", 100).is_err());
            assert!(s.hash("simple/index.html", &mut [0; 64]).is_err());
            assert!(s.put_if_changed("simple/index.html", b"page").unwrap());
            assert!(std::fs::symlink_metadata(&page).unwrap().is_file());
        }
        assert_eq!(std::fs::read(dir.path().join("outside")).unwrap(), b"page");
    }

    #[test]
    fn a_symlink_at_the_key_is_deleted_as_a_link_never_followed() {
        let (dir, s) = storage();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("json"), b"keep").unwrap();
        std::fs::create_dir_all(dir.path().join("web/pypi")).unwrap();
        std::fs::create_dir_all(dir.path().join("web/json")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("web/pypi/a")).unwrap();
        std::os::unix::fs::symlink(outside.join("json"), dir.path().join("web/json/a")).unwrap();
        s.delete("pypi/a/").unwrap();
        s.delete("json/a").unwrap();
        assert_eq!(s.stat("pypi/a/").unwrap(), None);
        assert_eq!(s.stat("json/a").unwrap(), None);
        assert_eq!(std::fs::read(outside.join("json")).unwrap(), b"keep");
    }

    #[test]
    fn an_uncommitted_object_leaves_nothing() {
        let (dir, s) = storage();
        let mut staged = s.stage();
        staged.write_all(b"half").unwrap();
        drop(staged);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
