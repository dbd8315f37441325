//! Download strategy: files reach their final path only verified, whole, and atomically.
//!
//! 1. A file already at its final path (left by an interrupted run, not yet recorded) is
//!    hashed; if size, SHA-256 and BLAKE2b-256 match it is adopted instead of fetched.
//! 2. Otherwise the body streams into a fresh file in `tmp/` (same filesystem as `web/`) while
//!    both digests and the length are computed; more bytes than promised abort at once. Bytes
//!    are spooled in memory and written in 1 MiB batches, each batch one blocking call, so a
//!    typical file costs one hand-off to the blocking pool instead of one per file operation
//!    (memory stays bounded: `workers` × 1 MiB).
//! 3. Only when length, SHA-256 (from the metadata) and BLAKE2b-256 (the path's own name for
//!    the content) all match is the file flushed, optionally fsynced, and renamed into place.
//!    Anything else deletes the temp file and retries with backoff, up to `retries` times.
//!
//! PEP 658 `.metadata` sidecars go the same way, checked against their sha256 (they have no
//! size or BLAKE2b in the metadata, so their length is capped instead).
//!
//! A global semaphore bounds concurrent downloads across all projects (`workers`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Client;
use reqwest::header::ACCEPT_ENCODING;
use tokio::sync::Semaphore;

use crate::hashing::{FileHasher, hash_file};
use crate::layout::Layout;
use crate::metadata::RemoteFile;
use crate::progress::Progress;
use crate::types::{Blake2b256, Sha256};
use crate::upstream::retry;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {error}")]
    Network { url: String, error: reqwest::Error },
    #[error("{url}: upstream answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
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
    #[error("{path}: {error}")]
    Disk { path: String, error: std::io::Error },
}

impl DownloadError {
    /// Disk errors will not fix themselves by asking upstream again.
    fn worth_retrying(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => retry::is_transient(*status),
            DownloadError::Disk { .. } => false,
            _ => true,
        }
    }
}

/// What it took to get a file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Downloaded { bytes: u64 },
    Adopted,
}

/// What to fetch, where it goes, and what its bytes must be.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    /// Path under `web/`, from a validated [`crate::types::PackagePath`].
    pub relative: String,
    pub size: Option<u64>,
    pub sha256: Sha256,
    pub blake2b: Option<Blake2b256>,
}

impl Target {
    pub fn file(f: &RemoteFile) -> Target {
        Target {
            url: f.url.clone(),
            relative: f.record.path.relative(),
            size: Some(f.record.size),
            sha256: f.record.sha256,
            blake2b: Some(f.record.blake2b()),
        }
    }

    /// The file's PEP 658 sidecar, when upstream promises one with a hash.
    pub fn sidecar(f: &RemoteFile) -> Option<Target> {
        Some(Target {
            url: f.metadata_url(),
            relative: format!("{}.metadata", f.record.path.relative()),
            size: None,
            sha256: f.record.core_metadata?,
            blake2b: None,
        })
    }

    fn matches(&self, h: &crate::hashing::Hashes) -> bool {
        self.size.is_none_or(|s| s == h.len)
            && h.sha256 == self.sha256
            && self.blake2b.is_none_or(|b| b == h.blake2b)
    }
}

impl DownloadError {
    pub fn is_disk(&self) -> bool {
        matches!(self, DownloadError::Disk { .. })
    }

    /// Upstream does not have it (404/410): for a sidecar, "not offered" rather than a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DownloadError::Status { status, .. }
            if *status == reqwest::StatusCode::NOT_FOUND || *status == reqwest::StatusCode::GONE)
    }
}

pub struct Downloader {
    /// Length cap for targets without a known size.
    max_unsized: u64,
    layout: Arc<Layout>,
    client: Client,
    permits: Semaphore,
    fsync: bool,
    retries: u32,
    retry_delay: Duration,
    progress: Arc<Progress>,
}

/// Bytes held in memory before they are written out in one blocking call.
const SPOOL_BATCH: usize = 1024 * 1024;

impl Downloader {
    pub fn new(
        layout: Arc<Layout>,
        client: Client,
        cfg: &crate::config::Config,
        progress: Arc<Progress>,
    ) -> Downloader {
        let (workers, fsync, retries, retry_delay) =
            (cfg.workers, cfg.fsync, cfg.retries, cfg.retry_delay);
        Downloader {
            max_unsized: cfg.max_metadata_bytes,
            layout,
            client,
            permits: Semaphore::new(workers),
            fsync,
            retries,
            retry_delay,
            progress,
        }
    }

    /// Make sure `target` is at its final path, verified.
    pub async fn place(&self, target: &Target) -> Result<Placed, DownloadError> {
        let dest = self.layout.web_path(&target.relative);
        // One blocking call: stat, and hash only if something is there.
        let d = dest.clone();
        let present = tokio::task::spawn_blocking(move || {
            std::fs::symlink_metadata(&d).is_ok().then(|| hash_file(&d))
        })
        .await
        .expect("hashing panicked");
        if let Some(hashed) = present {
            match hashed {
                Ok(h) if target.matches(&h) => {
                    return Ok(Placed::Adopted);
                }
                _ => tracing::warn!(
                    "{}: does not match its metadata; downloading it again",
                    dest.display()
                ),
            }
        }
        let mut attempt = 0;
        loop {
            let result = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .expect("semaphore never closed");
                self.attempt(target, &dest).await
            };
            match result {
                Ok(bytes) => return Ok(Placed::Downloaded { bytes }),
                Err(e) if attempt < self.retries && e.worth_retrying() => {
                    tracing::debug!("{e}; retrying");
                    tokio::time::sleep(retry::backoff(self.retry_delay, attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(&self, target: &Target, dest: &Path) -> Result<u64, DownloadError> {
        let tmp = self.layout.temp_path();
        let result = self.fetch_into(target, &tmp, dest).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn fetch_into(
        &self,
        target: &Target,
        tmp: &Path,
        dest: &Path,
    ) -> Result<u64, DownloadError> {
        let url = target.url.as_str();
        let limit = target.size.unwrap_or(self.max_unsized);
        let net = |error| DownloadError::Network {
            url: url.to_owned(),
            error,
        };
        let disk = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |error| DownloadError::Disk { path, error }
        };
        let resp = self
            .client
            .get(target.url.clone())
            .header(ACCEPT_ENCODING, "identity")
            .send()
            .await
            .map_err(net)?;
        if !resp.status().is_success() {
            return Err(DownloadError::Status {
                url: url.to_owned(),
                status: resp.status(),
            });
        }
        if let Some(got) = resp
            .content_length()
            .filter(|&n| target.size.map_or(n > limit, |want| n != want))
        {
            return Err(DownloadError::Length {
                url: url.to_owned(),
                got,
                want: limit,
            });
        }
        let mut spool = Spool::new(tmp.to_owned());
        let mut hasher = FileHasher::default();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(net)?;
            if hasher.len() + chunk.len() as u64 > limit {
                return Err(DownloadError::Length {
                    url: url.to_owned(),
                    got: hasher.len() + chunk.len() as u64,
                    want: limit,
                });
            }
            hasher.update(&chunk);
            self.progress.add_bytes(chunk.len() as u64);
            spool = spool.push(&chunk).await.map_err(disk(tmp))?;
        }
        let got = hasher.finish();
        if let Some(want) = target.size.filter(|&want| want != got.len) {
            return Err(DownloadError::Length {
                url: url.to_owned(),
                got: got.len,
                want,
            });
        }
        let mismatch = |which, got: String, want: String| DownloadError::Digest {
            url: url.to_owned(),
            which,
            got,
            want,
        };
        if got.sha256 != target.sha256 {
            return Err(mismatch(
                "sha256",
                got.sha256.to_hex(),
                target.sha256.to_hex(),
            ));
        }
        if let Some(want) = target.blake2b.filter(|&b| b != got.blake2b) {
            return Err(mismatch("blake2b_256", got.blake2b.to_hex(), want.to_hex()));
        }
        let (fsync, dest) = (self.fsync, dest.to_owned());
        tokio::task::spawn_blocking(move || spool.finish(&dest, fsync))
            .await
            .expect("file writer panicked")
            .map_err(|(path, error)| DownloadError::Disk {
                path: path.display().to_string(),
                error,
            })?;
        Ok(got.len)
    }
}

/// A temp file written in batches from the async side, one blocking call per batch.
struct Spool {
    path: PathBuf,
    file: Option<File>,
    pending: Vec<u8>,
}

impl Spool {
    fn new(path: PathBuf) -> Spool {
        Spool {
            path,
            file: None,
            pending: Vec::new(),
        }
    }

    async fn push(mut self, bytes: &[u8]) -> std::io::Result<Spool> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() < SPOOL_BATCH {
            return Ok(self);
        }
        tokio::task::spawn_blocking(move || {
            self.write_pending()?;
            Ok(self)
        })
        .await
        .expect("file writer panicked")
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::create_new(&self.path)?),
        };
        file.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Write the rest, optionally fsync, and rename into place. Errors name the path involved.
    fn finish(mut self, dest: &Path, fsync: bool) -> Result<(), (PathBuf, std::io::Error)> {
        let tmp = self.path.clone();
        let on_tmp = |e| (tmp.clone(), e);
        self.write_pending().map_err(on_tmp)?;
        let file = self.file.take().expect("write_pending opened the file");
        if fsync {
            file.sync_all().map_err(on_tmp)?;
        }
        drop(file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| (parent.to_owned(), e))?;
        }
        std::fs::rename(&tmp, dest).map_err(|e| (dest.to_owned(), e))
    }
}
