//! The served tree in an S3-compatible bucket (`[storage] backend = "s3"`), through
//! `object_store`: every key of the tree is an object at `<prefix><key>`.
//!
//! [`super::Storage`] is synchronous (called from blocking threads, and from a few places
//! that run on the main runtime's thread, as the filesystem's calls do); the requests run on
//! a small runtime of the bucket's own, and a caller waits for the answer on a channel, never
//! entering that runtime (tokio's `block_on` would panic inside another). Bodies stream
//! through a bounded channel: the bytes are hashed or copied on the caller's thread, never
//! on the runtime's.
//!
//! An object reaches its key only whole: the bytes were verified in a local temporary file
//! first ([`super::Staged`]), then uploaded in one PUT, or as a multipart upload completed
//! only after every part is in (an interrupted one leaves no object, only parts that the
//! bucket's lifecycle rule for incomplete uploads removes). Directories do not exist in a
//! bucket: a key ending in `/` names every object under it.

use std::future::Future;
use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use super::fs::{Entry, Kind, Meta};
use crate::config::storage::S3;
use crate::types::keys;

/// Objects larger than this are uploaded in parts of this size (S3 wants at least 5 MiB a
/// part, except the last; 10,000 parts of 16 MiB is 160 GB, beyond any wheel).
pub const PART_SIZE: usize = 16 << 20;
/// Parts of one object in flight at once: an upload holds at most this many parts in memory.
const PARTS_IN_FLIGHT: usize = 4;
/// Chunks of a body waiting for the caller's thread.
const CHUNKS_IN_FLIGHT: usize = 8;

pub struct Bucket {
    store: Arc<AmazonS3>,
    prefix: String,
    shown: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Bucket {
    fn drop(&mut self) {
        // Dropping a runtime blocks; inside another runtime that panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn io_error(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Bucket {
    /// Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, web identity, container or instance metadata). Requests retry
    /// `retries` times with backoff from `retry_delay`, like downloads; a transfer that stalls
    /// for `timeout` is cut.
    pub fn new(
        s3: &S3,
        retries: u32,
        retry_delay: Duration,
        timeout: Duration,
    ) -> std::io::Result<Bucket> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&s3.bucket);
        if let Some(region) = &s3.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &s3.endpoint {
            if endpoint.scheme() == "http" && !crate::config::host_is_loopback(endpoint) {
                tracing::warn!(
                    "[storage] endpoint {endpoint} is plain http: objects and their signatures \
                     cross the network unencrypted"
                );
            }
            builder = builder
                .with_endpoint(endpoint.as_str().trim_end_matches('/'))
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.scheme() == "http");
        }
        let store = builder
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(timeout)
                    .with_read_timeout(timeout)
                    .with_allow_http(s3.endpoint.as_ref().is_some_and(|e| e.scheme() == "http")),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: retry_delay,
                    max_backoff: retry_delay * 60,
                    base: 2.0,
                },
                max_retries: retries as usize,
                retry_timeout: Duration::from_secs(600),
            })
            .build()
            .map_err(|e| {
                std::io::Error::other(format!(
                    "cannot use bucket {:?}: {e}; check [storage] and the AWS_* environment",
                    s3.bucket
                ))
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pymirror-s3")
            .enable_all()
            .build()?;
        let bucket = Bucket {
            store: Arc::new(store),
            prefix: s3.prefix.clone(),
            shown: format!("s3://{}/{}", s3.bucket, s3.prefix),
            runtime: Some(runtime),
        };
        // One listing of the tree's root (a few entries) before any work: a missing bucket or
        // wrong credentials stop the run here, in one line, not at the first upload.
        bucket.list("").map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{e}; check that bucket {:?} exists{} and that the credentials \
                     (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) may list, read, write and \
                     delete objects in it",
                    s3.bucket,
                    s3.endpoint
                        .as_ref()
                        .map_or(String::new(), |e| format!(" at {e}"))
                ),
            )
        })?;
        Ok(bucket)
    }

    /// Run `work` on the bucket's runtime and wait for it.
    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime
            .as_ref()
            .expect("runtime until dropped")
            .spawn(async move {
                let _ = tx.send(work.await);
            });
        rx.recv().expect("the bucket's runtime stopped")
    }

    /// `s3://bucket/prefix/key`, for messages.
    pub fn describe(&self, key: &str) -> String {
        format!("{}{key}", self.shown)
    }

    fn path(&self, key: &str) -> std::io::Result<Path> {
        let full = format!("{}{}", self.prefix, key.trim_end_matches('/'));
        Path::parse(&full).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} cannot be an object key: {e}", self.describe(key)),
            )
        })
    }

    /// The object at `key` (its size), or, for a key ending in `/` or a name with no object,
    /// a directory when some object is under it.
    pub fn stat(&self, key: &str) -> std::io::Result<Option<Meta>> {
        if !key.ends_with('/') {
            let (store, path) = (self.store.clone(), self.path(key)?);
            match self.run(async move { store.head(&path).await }) {
                Ok(m) => {
                    return Ok(Some(Meta {
                        kind: Kind::File,
                        size: m.size,
                    }));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("cannot look at", key, e)),
            }
        }
        let (store, path) = (self.store.clone(), self.path(key)?);
        let any = self.run(async move {
            let mut objects = store.list(Some(&path));
            objects.next().await.transpose()
        });
        match any {
            Ok(Some(_)) => Ok(Some(Meta {
                kind: Kind::Dir,
                size: 0,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(self.failed("cannot list", key, e)),
        }
    }

    /// Whether an object is at `key` (one HEAD), or anything under it when it ends in `/`.
    pub fn exists(&self, key: &str) -> bool {
        if key.ends_with('/') {
            return self.stat(key).is_ok_and(|m| m.is_some());
        }
        let Ok(path) = self.path(key) else {
            return false;
        };
        let store = self.store.clone();
        self.run(async move { store.head(&path).await }).is_ok()
    }

    fn failed(&self, what: &str, key: &str, e: object_store::Error) -> std::io::Error {
        let kind = io_error_kind(&e);
        std::io::Error::new(kind, format!("{what} {}: {e}", self.describe(key)))
    }

    /// A reader of the object at `key`, and its length; `None` when there is none.
    pub fn reader(&self, key: &str) -> std::io::Result<Option<(ObjectReader, u64)>> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        self.runtime
            .as_ref()
            .expect("runtime until dropped")
            .spawn(async move {
                let got = match store.get(&path).await {
                    Ok(got) => got,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if tx.send(Ok(Chunk::Size(got.meta.size))).await.is_err() {
                    return;
                }
                let mut body = got.into_stream();
                while let Some(chunk) = body.next().await {
                    let stop = chunk.is_err();
                    // The reader went away (enough read): stop streaming.
                    if tx.send(chunk.map(Chunk::Bytes)).await.is_err() || stop {
                        return;
                    }
                }
            });
        match futures::executor::block_on(rx.recv()) {
            Some(Ok(Chunk::Size(size))) => Ok(Some((
                ObjectReader {
                    rx,
                    current: Bytes::new(),
                },
                size,
            ))),
            Some(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Some(Err(e)) => Err(self.failed("cannot read", key, e)),
            Some(Ok(Chunk::Bytes(_))) | None => Err(std::io::Error::other(format!(
                "cannot read {}: no answer",
                self.describe(key)
            ))),
        }
    }

    /// The object at `key` in an unnamed local file in `tmp` (for a reader that seeks: a
    /// wheel's zip directory).
    pub fn download(&self, key: &str, tmp: &std::path::Path) -> std::io::Result<std::fs::File> {
        let Some((mut reader, _)) = self.reader(key)? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such object", self.describe(key)),
            ));
        };
        let name = tmp.join(format!(
            "{}-get-{}.part",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&name)?;
        let _ = std::fs::remove_file(&name);
        std::io::copy(&mut reader, &mut file)?;
        file.flush()?;
        file.rewind()?;
        Ok(file)
    }

    /// The entries directly under `prefix` (`""`: the tree's root), sorted by name: a
    /// delimited listing, paged. `None` when nothing is under it.
    pub fn list(&self, prefix: &str) -> std::io::Result<Option<Vec<Entry>>> {
        let path = self.list_path(prefix)?;
        let store = self.store.clone();
        let listed = self
            .run(async move { store.list_with_delimiter(path.as_ref()).await })
            .map_err(|e| self.failed("cannot list", prefix, e))?;
        let mut out: Vec<Entry> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .map(|name| Entry {
                name,
                meta: Meta {
                    kind: Kind::Dir,
                    size: 0,
                },
                below: None,
            })
            .chain(listed.objects.iter().filter_map(|o| {
                Some(Entry {
                    name: o.location.filename()?.to_owned(),
                    meta: Meta {
                        kind: Kind::File,
                        size: o.size,
                    },
                    below: None,
                })
            }))
            .collect();
        if out.is_empty() {
            return Ok(None);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    /// Whether any object lies under the directory `prefix`: one page of a listing, left
    /// as soon as its first key is in.
    pub fn holds_any(&self, prefix: &str) -> std::io::Result<bool> {
        let path = self.list_path(prefix)?;
        let store = self.store.clone();
        self.run(async move { store.list(path.as_ref()).next().await.transpose() })
            .map(|first| first.is_some())
            .map_err(|e| self.failed("cannot list", prefix, e))
    }

    fn list_path(&self, prefix: &str) -> std::io::Result<Option<Path>> {
        Ok(
            match format!("{}{prefix}", self.prefix).trim_end_matches('/') {
                "" => None,
                _ => Some(self.path(prefix)?),
            },
        )
    }

    /// Everything under the directory `prefix`, from one flat listing (paged), as a tree:
    /// each directory entry carries its own entries (`Entry::below`), so a walk of a
    /// `packages/aa/bb/` shard is one listing, not one per file's directory.
    pub fn list_tree(&self, prefix: &str) -> std::io::Result<Option<Vec<Entry>>> {
        let path = self.list_path(prefix)?;
        let store = self.store.clone();
        let objects = self
            .run(async move {
                let mut out = Vec::new();
                let mut listing = store.list(path.as_ref());
                while let Some(o) = listing.next().await {
                    let o = o?;
                    out.push((o.location.to_string(), o.size));
                }
                Ok::<_, object_store::Error>(out)
            })
            .map_err(|e| self.failed("cannot list", prefix, e))?;
        let base = match format!("{}{prefix}", self.prefix) {
            b if b.is_empty() || b.ends_with('/') => b,
            b => format!("{b}/"),
        };
        let mut root: Vec<Entry> = Vec::new();
        for (key, size) in objects {
            let Some(rel) = key.strip_prefix(&base) else {
                continue;
            };
            insert(&mut root, rel, size);
        }
        Ok((!root.is_empty()).then_some(root))
    }

    /// Upload the local file at `from` to `key`, typed by what the key is.
    pub fn upload(&self, from: &std::path::Path, key: &str) -> std::io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        let attributes = Attributes::from_iter([(
            Attribute::ContentType,
            AttributeValue::from(keys::content_type(key)),
        )]);
        let from = from.to_owned();
        let size = std::fs::metadata(&from)?.len();
        let result = self.run(async move {
            let mut file = tokio::fs::File::open(&from).await?;
            if size <= PART_SIZE as u64 {
                let mut bytes = Vec::with_capacity(size as usize);
                tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes).await?;
                let opts = PutOptions {
                    attributes,
                    ..PutOptions::default()
                };
                store
                    .put_opts(&path, PutPayload::from(bytes), opts)
                    .await
                    .map_err(io_error)?;
                return Ok(());
            }
            let opts = PutMultipartOptions {
                attributes,
                ..PutMultipartOptions::default()
            };
            let upload = store
                .put_multipart_opts(&path, opts)
                .await
                .map_err(io_error)?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match tokio::io::AsyncReadExt::read(&mut file, &mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = parts.abort().await;
                        return Err(e);
                    }
                };
                if let Err(e) = parts.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = parts.abort().await;
                    return Err(io_error(e));
                }
                parts.write(&buf[..n]);
            }
            parts.finish().await.map_err(io_error)?;
            Ok::<_, std::io::Error>(())
        });
        result.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot upload {}: {e}", self.describe(key)),
            )
        })
    }

    /// Delete the object at `key`, or every object under it when `key` ends in `/`. Nothing
    /// there is fine.
    pub fn delete(&self, key: &str) -> std::io::Result<()> {
        let store = self.store.clone();
        let result = match key.ends_with('/') {
            false => {
                let path = self.path(key)?;
                self.run(async move {
                    match store.delete(&path).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        other => other,
                    }
                })
            }
            true => {
                let path = self.list_path(key)?;
                self.run(async move {
                    let locations = store.list(path.as_ref()).map(|o| o.map(|o| o.location));
                    let mut deleted = store.delete_stream(locations.boxed());
                    while let Some(d) = deleted.next().await {
                        match d {
                            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                })
            }
        };
        result.map_err(|e| self.failed("cannot delete", key, e))
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn io_error_kind(e: &object_store::Error) -> std::io::ErrorKind {
    match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::Other,
    }
}

/// Put the object at `rel` (relative to the listed directory) into the tree of entries.
/// Objects come sorted by key, so each directory's entries arrive in order too... except
/// that a name sorts against a directory by its full key (`a-b` before `a/`): sorted at the
/// end.
fn insert(level: &mut Vec<Entry>, rel: &str, size: u64) {
    match rel.split_once('/') {
        None => level.push(Entry {
            name: rel.to_owned(),
            meta: Meta {
                kind: Kind::File,
                size,
            },
            below: None,
        }),
        Some((dir, rest)) => {
            let at = match level
                .iter()
                .rposition(|e| e.name == dir && e.meta.kind == Kind::Dir)
            {
                Some(at) => at,
                None => {
                    level.push(Entry {
                        name: dir.to_owned(),
                        meta: Meta {
                            kind: Kind::Dir,
                            size: 0,
                        },
                        below: Some(Arc::new(Vec::new())),
                    });
                    level.len() - 1
                }
            };
            let below = level[at].below.get_or_insert_with(Default::default);
            insert(Arc::make_mut(below), rest, size);
            sort_tail(level);
        }
    }
}

fn sort_tail(level: &mut [Entry]) {
    if level.len() >= 2 && level[level.len() - 2].name > level[level.len() - 1].name {
        level.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

enum Chunk {
    Size(u64),
    Bytes(Bytes),
}

/// An object's body, read on the caller's thread as it streams in.
pub struct ObjectReader {
    rx: tokio::sync::mpsc::Receiver<object_store::Result<Chunk>>,
    current: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match futures::executor::block_on(self.rx.recv()) {
                None => return Ok(0),
                Some(Ok(Chunk::Bytes(b))) => self.current = b,
                Some(Ok(Chunk::Size(_))) => {}
                Some(Err(e)) => return Err(io_error(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn a_flat_listing_becomes_a_sorted_tree() {
        let mut root = Vec::new();
        for (key, size) in [
            ("aa/f-1.whl", 1),
            ("aa/f-1.whl.metadata", 2),
            ("ab", 3),
            ("a-b/x", 4),
            ("b/c/d", 5),
        ] {
            insert(&mut root, key, size);
        }
        assert_eq!(names(&root), ["a-b", "aa", "ab", "b"]);
        let aa = root[1].below.as_ref().unwrap();
        assert_eq!(names(aa), ["f-1.whl", "f-1.whl.metadata"]);
        assert_eq!(aa[1].meta.size, 2);
        assert_eq!(root[2].meta.kind, Kind::File);
        let c = &root[3].below.as_ref().unwrap()[0];
        assert_eq!(names(c.below.as_ref().unwrap()), ["d"]);
    }
}
