//! Download strategy: files reach their final path only verified, whole, and atomically.
//!
//! 1. A file already at its final path (left by an interrupted run, not yet recorded) is
//!    hashed, if it is a regular file of the expected size (never through a symlink); if it
//!    matches it is adopted instead of fetched. (Not looked for when the run began with
//!    nothing under `packages/`: a first sync into an empty tree.)
//! 2. Otherwise the body streams into a fresh file in `tmp/` (same filesystem as `web/`) while
//!    both digests and the length are computed; more bytes than promised abort at once. Bytes
//!    are spooled in memory and written in 1 MiB batches, each batch one blocking call
//!    (memory stays bounded: `workers` × 1 MiB). A file smaller than a batch is written and
//!    renamed on the async worker itself while the disk answers fast ([`super::inline`]):
//!    no hand-off at all.
//! 3. Only when length, SHA-256 (from the metadata) and BLAKE2b-256 (the path's own name for
//!    the content) all match is the file renamed into place, through directories that must
//!    not be symlinks (made durable as the storage's `Durability` says: fsynced first, or in
//!    the group flush before its project is recorded); with the tree in a bucket, uploaded
//!    from there in one PUT or a multipart upload, inside the same download slot and
//!    deadline, and the temporary file deleted.
//!
//! Failures retry with backoff (honouring `Retry-After`), up to `retries` times per source:
//! the `download_mirror` first when configured, then upstream. A body cut short by the network
//! resumes with a Range request where the server accepts ranges; the whole file's digests are
//! still checked. Each attempt has a deadline scaled to the file's size (`timeout` plus the
//! size at `min_download_rate`), so a stalled transfer is cut but a large one is not.
//! PEP 658 `.metadata` sidecars go the same way, checked against their sha256 (they have no
//! size or BLAKE2b in the metadata, so their length is capped instead).
//!
//! How many downloads run at once, across all projects, adapts to upstream
//! ([`crate::upstream::pace`]: AIMD up to `workers`; a 429, 5xx, timeout or reset halves it),
//! and at the pace a host that answered 429 allows ([`crate::upstream::hosts`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_RANGE, HeaderMap, RANGE};
use reqwest::{StatusCode, Url};

use super::fs::{Staged, Storage, is_symlink_refused};
use super::inline::InlineWrites;
use crate::config::Config;
use crate::progress::Progress;
use crate::types::hashing::{FileHasher, Hashes};
use crate::types::{Blake2b256, Sha256};
use crate::types::{Filename, PackagePath, RemoteFile};
use crate::upstream::pace::Pace;
use crate::upstream::{Upstream, retry};

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {}", crate::upstream::describe(.error))]
    Network { url: String, error: reqwest::Error },
    #[error("{url}: upstream answered {status}")]
    Status {
        url: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("{url}: got {got} bytes, expected {want}")]
    Length { url: String, got: u64, want: u64 },
    #[error("{url}: {which} mismatch (got {got}, want {want}); refused")]
    Digest {
        url: String,
        which: &'static str,
        got: String,
        want: String,
    },
    #[error("{url}: no complete answer within {secs} s")]
    TimedOut { url: String, secs: u64 },
    #[error("{path}: {error}")]
    Disk { path: String, error: std::io::Error },
    /// A symlink in the tree on the file's way: this file is refused, the others go on.
    #[error("{error}; remove it, then run again")]
    Symlink { error: std::io::Error },
}

impl DownloadError {
    /// Disk errors will not fix themselves by asking upstream again.
    fn worth_retrying(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => retry::is_transient(*status),
            DownloadError::Disk { .. } | DownloadError::Symlink { .. } => false,
            _ => true,
        }
    }

    /// A sign that upstream has more than it can take: fewer downloads at once.
    fn is_overload(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => retry::is_transient(*status),
            DownloadError::TimedOut { .. } | DownloadError::Network { .. } => true,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            DownloadError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, DownloadError::Disk { .. })
    }

    /// Upstream served other bytes than its metadata promised: asking again will not help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DownloadError::Digest { .. })
    }

    /// Upstream does not have it (404/410): for a sidecar, "not offered" rather than a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DownloadError::Status { status, .. }
            if *status == StatusCode::NOT_FOUND || *status == StatusCode::GONE)
    }
}

/// What to fetch, where it goes, and what its bytes must be.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub key: Key,
    /// Unknown for a sidecar, or a file upstream gave no size for (then capped instead).
    pub size: Option<u64>,
    pub sha256: Sha256,
    pub blake2b: Option<Blake2b256>,
    /// A sidecar whose wheel is in place at this key: read from the wheel when it hashes
    /// right ([`super::wheel`]), downloaded otherwise.
    pub from_wheel: Option<String>,
}

/// Where a target goes under `web/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A known path, from a validated [`PackagePath`] (or its sidecar).
    At(String),
    /// PyPI's path for these bytes: `packages/aa/bb/<rest>/<filename>` from the BLAKE2b-256
    /// computed while they stream, known only once they are verified.
    ByContent(Filename),
}

impl Key {
    /// The path, when known before the download.
    pub fn known(&self) -> Option<&str> {
        match self {
            Key::At(key) => Some(key),
            Key::ByContent(_) => None,
        }
    }

    fn resolve(&self, blake2b: Blake2b256) -> String {
        match self {
            Key::At(key) => key.clone(),
            Key::ByContent(filename) => PackagePath::new(blake2b, filename.clone()).relative(),
        }
    }
}

/// Told a [`Key::ByContent`] target's path once its bytes are verified, before they are put
/// there (the sync stages it in the database, so a crash cannot leave it unaccounted for).
pub type OnKey = Arc<dyn Fn(&str) -> std::io::Result<()> + Send + Sync>;

impl Target {
    pub fn file(f: &RemoteFile) -> Target {
        Target {
            url: f.url.clone(),
            key: match f.unknown.blake2b {
                true => Key::ByContent(f.record.filename.clone()),
                false => Key::At(f.record.path.relative()),
            },
            size: (!f.unknown.size).then_some(f.record.size),
            sha256: f.record.sha256,
            blake2b: (!f.unknown.blake2b).then(|| f.record.blake2b()),
            from_wheel: None,
        }
    }

    /// The file's PEP 658 sidecar, when upstream promises one with a hash. `None` too while
    /// the file's own path is unknown: the sidecar is placed beside it once it is.
    pub fn sidecar(f: &RemoteFile) -> Option<Target> {
        if f.unknown.blake2b {
            return None;
        }
        Some(Target {
            url: f.metadata_url(),
            key: Key::At(format!("{}.metadata", f.record.path.relative())),
            size: None,
            sha256: f.record.core_metadata?,
            blake2b: None,
            from_wheel: None,
        })
    }

    fn matches(&self, h: &Hashes) -> bool {
        self.size.is_none_or(|s| s == h.len)
            && h.sha256 == self.sha256
            && self.blake2b.is_none_or(|b| b == h.blake2b)
    }
}

/// What it took to get a file in place, and what its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// A file already there was kept: nothing transferred.
    pub adopted: bool,
    /// Bytes transferred.
    pub downloaded: u64,
    pub size: u64,
    pub blake2b: Blake2b256,
}

/// A body cut short, kept for the next attempt to resume with a Range request.
struct Partial {
    spool: Spool,
    hasher: FileHasher,
}

type Attempt = Result<Hashes, (DownloadError, Option<Partial>)>;

pub struct Downloader {
    storage: Arc<Storage>,
    upstream: Arc<Upstream>,
    /// How many downloads are in flight: adaptive, up to `workers`.
    pace: Arc<Pace>,
    retry: retry::Policy,
    timeout: Duration,
    min_rate: u64,
    /// Length cap for sidecars (`max_metadata_bytes`).
    max_unsized: u64,
    /// Length cap for files of unknown size (`max_file_bytes`, 0: none).
    max_file: u64,
    download_mirror: Option<Url>,
    mirror_only: bool,
    progress: Arc<Progress>,
    inline: InlineWrites,
}

/// Bytes held in memory before they are written out in one blocking call.
const SPOOL_BATCH: usize = 1024 * 1024;

/// The longest any download attempt may take, however large the file says it is.
const MAX_DOWNLOAD_DEADLINE: Duration = Duration::from_secs(6 * 3600);

impl Downloader {
    pub fn new(
        storage: Arc<Storage>,
        upstream: Arc<Upstream>,
        cfg: &Config,
        progress: Arc<Progress>,
    ) -> Downloader {
        Downloader {
            storage,
            retry: upstream.retry_policy(),
            upstream,
            pace: Pace::new(cfg.workers),
            timeout: cfg.timeout,
            min_rate: cfg.min_download_rate,
            max_unsized: cfg.max_metadata_bytes,
            max_file: match cfg.max_file_bytes {
                0 => u64::MAX,
                n => n,
            },
            download_mirror: cfg.download_mirror.clone(),
            mirror_only: cfg.download_mirror_no_fallback,
            progress,
            inline: InlineWrites::default(),
        }
    }

    /// Make sure `target` is at its final path, verified. `absent`: the caller has just seen
    /// that nothing is there (checking a whole project's paths in one blocking call is cheaper
    /// than one per file), so there is nothing to adopt.
    /// `on_key` is told a [`Key::ByContent`] target's path before its bytes are put there.
    pub async fn place(
        &self,
        target: &Target,
        absent: bool,
        on_key: Option<OnKey>,
    ) -> Result<Placed, DownloadError> {
        // One blocking call: stat, and hash only if something is there.
        // Only a regular file of the expected size is hashed (never a symlink, a device or a
        // file larger than the target can be): reads stay bounded by what is expected.
        let (storage, key) = (self.storage.clone(), target.key.known().map(str::to_owned));
        let (size, cap) = (target.size, self.limit(target));
        let present = match key {
            None => None,
            Some(_) if absent => None,
            Some(key) => tokio::task::spawn_blocking(move || match storage.stat(&key) {
                Ok(None) => None,
                Ok(Some(m)) if m.is_file() && size.map_or(m.size <= cap, |s| s == m.size) => {
                    Some(storage.hash(&key, &mut vec![0u8; 256 * 1024]))
                }
                Ok(Some(m)) if m.is_file() => Some(Err(std::io::Error::other(format!(
                    "{} bytes, not the {} expected",
                    m.size,
                    size.unwrap_or(cap)
                )))),
                Ok(Some(m)) => Some(Err(std::io::Error::other(format!(
                    "a {} is in its place",
                    m.kind.describe()
                )))),
                Err(e) => Some(Err(e)),
            })
            .await
            .expect("hashing panicked"),
        };
        let shown = || {
            self.storage
                .describe(target.key.known().unwrap_or_default())
        };
        match present {
            Some(Ok(h)) if target.matches(&h) => {
                return Ok(Placed {
                    adopted: true,
                    downloaded: 0,
                    size: h.len,
                    blake2b: h.blake2b,
                });
            }
            Some(Ok(_)) => tracing::warn!(
                "{}: does not match its metadata; downloading it again",
                shown()
            ),
            Some(Err(e)) => tracing::warn!("{}: not adopted ({e}); downloading it again", shown()),
            None => {}
        }
        if let Some(placed) = self.read_from_wheel(target).await? {
            return Ok(placed);
        }
        let mut last = None;
        for url in self.sources(target) {
            match self.place_from(target, &url, on_key.clone()).await {
                Ok(h) => {
                    return Ok(Placed {
                        adopted: false,
                        downloaded: h.len,
                        size: h.len,
                        blake2b: h.blake2b,
                    });
                }
                Err(e) if e.is_disk() || matches!(e, DownloadError::Symlink { .. }) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one source"))
    }

    /// A sidecar read from its wheel, already in place, when the bytes are what upstream
    /// promised: no request.
    async fn read_from_wheel(&self, target: &Target) -> Result<Option<Placed>, DownloadError> {
        let (Some(wheel), Some(key)) = (target.from_wheel.clone(), target.key.known()) else {
            return Ok(None);
        };
        let (storage, key, want, limit) = (
            self.storage.clone(),
            key.to_owned(),
            target.sha256,
            self.max_unsized,
        );
        tokio::task::spawn_blocking(move || {
            let Some((bytes, hashes)) = super::wheel::metadata(&storage, &wheel, want, limit)
            else {
                return Ok(None);
            };
            let mut staged = storage.stage();
            let written = staged
                .write_all(&bytes)
                .and_then(|()| storage.commit(staged, &key));
            match written {
                Ok(()) => Ok(Some(Placed {
                    adopted: false,
                    downloaded: 0,
                    size: hashes.len,
                    blake2b: hashes.blake2b,
                })),
                Err(error) if is_symlink_refused(&error) => Err(DownloadError::Symlink { error }),
                Err(error) => Err(DownloadError::Disk {
                    path: storage.describe(&key),
                    error,
                }),
            }
        })
        .await
        .expect("wheel reader panicked")
    }

    /// The most bytes `target` may have.
    fn limit(&self, target: &Target) -> u64 {
        match (target.size, &target.key, target.blake2b) {
            (Some(size), _, _) => size,
            // A file (content-addressed, or with a BLAKE2b) of unknown size.
            (None, Key::ByContent(_), _) | (None, _, Some(_)) => self.max_file,
            (None, Key::At(_), None) => self.max_unsized,
        }
    }

    /// The `download_mirror` copy first (same relative path; only for a path known
    /// beforehand), then upstream unless told not to.
    fn sources(&self, target: &Target) -> Vec<Url> {
        let mirror = self.download_mirror.as_ref().and_then(|m| {
            let key = target.key.known()?;
            Url::parse(&format!("{}/{key}", m.as_str().trim_end_matches('/'))).ok()
        });
        match mirror {
            Some(m) if self.mirror_only => vec![m],
            Some(m) => vec![m, target.url.clone()],
            None => vec![target.url.clone()],
        }
    }

    async fn place_from(
        &self,
        target: &Target,
        url: &Url,
        on_key: Option<OnKey>,
    ) -> Result<Hashes, DownloadError> {
        let deadline = attempt_deadline(
            self.timeout,
            target.size.unwrap_or_else(|| self.limit(target)),
            self.min_rate,
        );
        let mut partial = None;
        let mut attempt = 0;
        loop {
            let result = {
                let _slot = self.pace.acquire().await;
                let host = self.upstream.host_permit(url).await;
                let fetch = self.fetch(target, url, partial.take(), on_key.clone());
                let result = match tokio::time::timeout(deadline, fetch).await {
                    Ok(result) => result,
                    Err(_) => Err((
                        DownloadError::TimedOut {
                            url: url.to_string(),
                            secs: deadline.as_secs(),
                        },
                        None,
                    )),
                };
                match &result {
                    Err((DownloadError::Status { status, .. }, _))
                        if *status == StatusCode::TOO_MANY_REQUESTS =>
                    {
                        host.too_many()
                    }
                    Err((DownloadError::Network { .. } | DownloadError::TimedOut { .. }, _)) => {}
                    _ => host.accepted(),
                }
                result
            };
            let (e, keep) = match result {
                Ok(hashes) => {
                    self.pace.success();
                    return Ok(hashes);
                }
                Err(failed) => failed,
            };
            if e.is_overload() {
                self.pace.overload();
            }
            let wait = match e.worth_retrying() {
                true => self.retry.next(attempt, e.retry_after()),
                false => None,
            };
            let Some(wait) = wait else {
                return Err(e);
            };
            tracing::debug!(
                "{e}; retrying{}",
                if keep.is_some() {
                    " from where it stopped"
                } else {
                    ""
                }
            );
            partial = keep;
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn fetch(
        &self,
        target: &Target,
        url: &Url,
        partial: Option<Partial>,
        on_key: Option<OnKey>,
    ) -> Attempt {
        let shown = || url.to_string();
        let net = |error| DownloadError::Network {
            url: shown(),
            error,
        };
        let disk = |path: String, error| DownloadError::Disk { path, error };
        let limit = self.limit(target);
        let mut request = self
            .upstream
            .files()
            .get(url.clone())
            .header(ACCEPT_ENCODING, "identity");
        if let Some(p) = &partial {
            request = request.header(RANGE, format!("bytes={}-", p.hasher.len()));
        }
        let resp = match request.send().await {
            Ok(resp) => resp,
            Err(error) => return Err((net(error), partial)),
        };
        let status = resp.status();
        let resumes = partial.as_ref().is_some_and(|p| {
            status == StatusCode::PARTIAL_CONTENT
                && range_start(resp.headers()) == Some(p.hasher.len())
        });
        let (mut spool, mut hasher) = match partial {
            Some(p) if resumes => (p.spool, p.hasher),
            partial if !status.is_success() || status == StatusCode::PARTIAL_CONTENT => {
                let error = DownloadError::Status {
                    url: shown(),
                    status,
                    retry_after: retry::retry_after(resp.headers()),
                };
                return Err((error, partial.filter(|_| retry::is_transient(status))));
            }
            // No partial, or the server sent the whole file again: start over.
            _ => (
                // A sidecar's size is unknown: core metadata is a few KiB.
                Spool::new(self.storage.stage(), target.size.unwrap_or(64 << 10)),
                FileHasher::default(),
            ),
        };
        let accepts_ranges = resumes
            || resp
                .headers()
                .get(ACCEPT_RANGES)
                .is_some_and(|v| v == "bytes");
        let offset = hasher.len();
        if let Some(n) = resp.content_length() {
            let total = offset + n;
            if target.size.map_or(total > limit, |want| total != want) {
                return Err((
                    DownloadError::Length {
                        url: shown(),
                        got: total,
                        want: limit,
                    },
                    None,
                ));
            }
        }
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let keep =
                        (accepts_ranges && !hasher.is_empty()).then_some(Partial { spool, hasher });
                    return Err((net(error), keep));
                }
            };
            if hasher.len() + chunk.len() as u64 > limit {
                let got = hasher.len() + chunk.len() as u64;
                return Err((
                    DownloadError::Length {
                        url: shown(),
                        got,
                        want: limit,
                    },
                    None,
                ));
            }
            hasher.update(&chunk);
            self.progress.add_bytes(chunk.len() as u64);
            spool = (spool.push(&chunk).await).map_err(|(tmp, e)| (disk(tmp, e), None))?;
        }
        if let Some(want) = target.size.filter(|&want| hasher.len() < want) {
            let got = hasher.len();
            let keep = (accepts_ranges && got > 0).then_some(Partial { spool, hasher });
            return Err((
                DownloadError::Length {
                    url: shown(),
                    got,
                    want,
                },
                keep,
            ));
        }
        let got = hasher.finish();
        let mismatch = |which, got: String, want: String| DownloadError::Digest {
            url: shown(),
            which,
            got,
            want,
        };
        if got.sha256 != target.sha256 {
            return Err((
                mismatch("sha256", got.sha256.to_hex(), target.sha256.to_hex()),
                None,
            ));
        }
        if let Some(want) = target.blake2b.filter(|&b| b != got.blake2b) {
            return Err((
                mismatch("blake2b_256", got.blake2b.to_hex(), want.to_hex()),
                None,
            ));
        }
        let (storage, key) = (self.storage.clone(), target.key.resolve(got.blake2b));
        let on_key = on_key.filter(|_| matches!(target.key, Key::ByContent(_)));
        // Not here: staging a key takes the state database's lock, a bucket uploads, an
        // fsync waits for the disk, and so may a file created while a flush writes back.
        let here = on_key.is_none()
            && spool.in_memory()
            && self.storage.commits_cheaply()
            && !self.storage.is_writing_back()
            && self.inline.allowed();
        let write = move || {
            if let Some(on_key) = on_key {
                on_key(&key).map_err(|e| (storage.describe(&key), e))?;
            }
            spool.finish(&storage, &key)
        };
        let written = match here {
            true => self.inline.run(write),
            false => tokio::task::spawn_blocking(write)
                .await
                .expect("file writer panicked"),
        };
        written.map_err(|(path, error)| match is_symlink_refused(&error) {
            true => (DownloadError::Symlink { error }, None),
            false => (disk(path, error), None),
        })?;
        Ok(got)
    }
}

/// How long one attempt at a file of `size` bytes may take: `timeout` plus the size at
/// `min_rate` bytes/s, bounded whatever size upstream declares (`max_file_bytes` may be 0: no
/// cap), and never a panic on an absurd one.
fn attempt_deadline(timeout: Duration, size: u64, min_rate: u64) -> Duration {
    let transfer = Duration::try_from_secs_f64(size as f64 / min_rate.max(1) as f64)
        .unwrap_or(MAX_DOWNLOAD_DEADLINE);
    timeout.saturating_add(transfer).min(MAX_DOWNLOAD_DEADLINE)
}

/// The first byte a 206 answer's `Content-Range: bytes N-M/T` starts at.
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A staged object written in batches from the async side, one blocking call per batch.
/// Dropped before [`Spool::finish`] committed it (a failed, abandoned or timed-out attempt),
/// its staged object deletes itself.
struct Spool {
    staged: Staged,
    pending: Vec<u8>,
}

impl Spool {
    /// `expected`: the body's likely length, so the buffer is allocated once rather than
    /// grown chunk by chunk.
    fn new(staged: Staged, expected: u64) -> Spool {
        Spool {
            staged,
            pending: Vec::with_capacity(expected.min(SPOOL_BATCH as u64) as usize),
        }
    }

    /// Errors name the temporary file.
    async fn push(mut self, bytes: &[u8]) -> Result<Spool, (String, std::io::Error)> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() < SPOOL_BATCH {
            return Ok(self);
        }
        tokio::task::spawn_blocking(move || match self.write_pending() {
            Ok(()) => Ok(self),
            Err(e) => Err((self.staged.describe(), e)),
        })
        .await
        .expect("file writer panicked")
    }

    /// Whether none of its bytes were written out yet.
    fn in_memory(&self) -> bool {
        !self.staged.is_open()
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        self.staged.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Write the rest and commit it at `key`. Errors name the path involved.
    fn finish(mut self, storage: &Storage, key: &str) -> Result<(), (String, std::io::Error)> {
        self.write_pending()
            .map_err(|e| (self.staged.describe(), e))?;
        storage
            .commit(self.staged, key)
            .map_err(|e| (storage.describe(key), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_deadline_scales_with_size_and_is_capped() {
        let timeout = Duration::from_secs(30);
        assert_eq!(
            attempt_deadline(timeout, 10_000_000, 100_000),
            Duration::from_secs(130)
        );
        // A file declared at 10^12 bytes, or at 2^64 - 1, at 1 byte/s: six hours, no panic.
        assert_eq!(
            attempt_deadline(timeout, 1_000_000_000_000, 1),
            MAX_DOWNLOAD_DEADLINE
        );
        assert_eq!(
            attempt_deadline(timeout, u64::MAX, 0),
            MAX_DOWNLOAD_DEADLINE
        );
    }
}
