//! `web/packages/`: every file the database references is there with its recorded size (with
//! `--hash`, its SHA-256 and BLAKE2b-256 too), and nothing else is.
//!
//! The tree is cut into its 65,536 `packages/aa/bb/` shards. A shard is one range query on
//! the `files.path` index and one walk of its directories, each sorted, then merge-joined:
//! one `stat` per file, no lookup per file. Even on a 30-million-file mirror a shard holds a
//! few hundred files, so memory stays small; shards are checked on every core and committed
//! in order, which is the checkpoint `--resume` continues from.
//!
//! Symlinks are never followed: where a file or directory should be, a symlink is not one.

use std::io;
use std::path::Path;

use crate::state::{ExpectedFile, State, VerifyCounts};

use crate::storage::Storage;
use crate::storage::fs::{Entry, Kind};
use crate::types::problem::{Kind as ProblemKind, Problem};

pub const SHARDS: u32 = 256 * 256;

/// Shards per unit of work: enough to keep hand-offs between threads cheap, few enough that
/// a unit stays small (a few thousand files on the largest mirrors).
pub const SHARDS_PER_UNIT: u32 = 16;

/// Read buffer per hashing thread.
const HASH_BUFFER: usize = 1024 * 1024;

pub fn shard_prefix(shard: u32) -> String {
    format!("packages/{:02x}/{:02x}/", shard >> 8, shard & 0xff)
}

/// One checking thread's own resources.
pub struct Worker {
    state: State,
    buf: Vec<u8>,
}

impl Worker {
    pub fn new(db: &Path) -> anyhow::Result<Worker> {
        Ok(Worker {
            state: State::open_reader(db)?,
            buf: vec![0; HASH_BUFFER],
        })
    }
}

#[derive(Debug, Default)]
pub struct ShardResult {
    pub counts: VerifyCounts,
    pub problems: Vec<Problem>,
}

pub struct Checker<'a> {
    pub storage: &'a Storage,
    pub hash: bool,
}

/// What the walk found at a path (relative to `web/`).
struct Found {
    path: String,
    what: What,
}

enum What {
    File(u64),
    Dir,
    Other(&'static str),
}

impl Checker<'_> {
    /// Entries of `packages/` and `packages/aa/` that are not two-hex-digit directories.
    pub fn check_top(&self) -> io::Result<Vec<Problem>> {
        let mut problems = Vec::new();
        for e in self.storage.list("packages")?.unwrap_or_default() {
            let rel = format!("packages/{}", e.name);
            if !(e.meta.is_dir() && is_hex(&e.name, 2)) {
                problems.push(orphan(&rel, e.meta.kind));
                continue;
            }
            for e in self.storage.list(&rel)?.unwrap_or_default() {
                if !(e.meta.is_dir() && is_hex(&e.name, 2)) {
                    problems.push(orphan(&format!("{rel}/{}", e.name), e.meta.kind));
                }
            }
        }
        Ok(problems)
    }

    /// Shards `first..first + SHARDS_PER_UNIT` (within one `packages/aa/`): one range query,
    /// one walk per shard, one merge-join.
    pub fn check_unit(&self, w: &mut Worker, first: u32) -> anyhow::Result<ShardResult> {
        let last = first + SHARDS_PER_UNIT - 1;
        let mut expected = w.state.files_between(
            &shard_prefix(first),
            &format!("{}0", shard_prefix(last).trim_end_matches('/')),
        )?;
        let mut out = ShardResult::default();
        let mut found = Vec::new();
        // The unit's `bb` directories that really are directories (the top-level check
        // reports anything else), from one listing of `aa` rather than a stat per shard.
        let aa_rel = shard_prefix(first);
        let aa_rel = &aa_rel[..aa_rel.len() - 3];
        let present: Vec<(String, Entry)> = match self.storage.list(aa_rel) {
            Ok(entries) => entries
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.meta.is_dir() && is_hex(&e.name, 2))
                .map(|e| (format!("{aa_rel}{}/", e.name), e))
                .collect(),
            Err(e) => {
                out.counts.unchecked += 1;
                tracing::warn!("cannot read web/{aa_rel}: {e}; its files were not checked");
                return Ok(out);
            }
        };
        for shard in first..=last {
            let prefix = shard_prefix(shard);
            let Ok(i) = present.binary_search_by(|(p, _)| p.cmp(&prefix)) else {
                continue;
            };
            match self.walk_shard(aa_rel, &present[i].1, &mut out.problems) {
                Ok(files) => found.extend(files),
                Err(e) => {
                    // Its files can be told neither missing nor present: left out.
                    out.counts.unchecked += 1;
                    tracing::warn!("cannot read web/{prefix}: {e}; its files were not checked");
                    expected.retain(|f| !f.path.starts_with(&prefix));
                }
            }
        }
        let mut expected = expected.into_iter().peekable();
        let mut found = found.into_iter().peekable();
        loop {
            let order = match (expected.peek(), found.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(e), Some(f)) => e.path.cmp(&f.path),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let e = expected.next().expect("peeked");
                    out.counts.files_checked += 1;
                    out.problems.push(Problem::new(
                        ProblemKind::Missing,
                        web(&e.path),
                        "not on disk",
                    ));
                }
                std::cmp::Ordering::Greater => {
                    let f = found.next().expect("peeked");
                    // Placed by a sync for a project it has not recorded yet: its to keep.
                    if !w.state.is_staged(&f.path)? {
                        let dir = matches!(f.what, What::Dir);
                        out.problems.push(Problem::new(
                            ProblemKind::Orphan,
                            web(&format!("{}{}", f.path, if dir { "/" } else { "" })),
                            "not referenced by the database",
                        ));
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (e, f) = (
                        expected.next().expect("peeked"),
                        found.next().expect("peeked"),
                    );
                    out.counts.files_checked += 1;
                    if let Some(p) = self.check_file(w, &e, &f, &mut out.counts) {
                        out.problems.push(p);
                    }
                }
            }
        }
        Ok(out)
    }

    fn check_file(
        &self,
        w: &mut Worker,
        e: &ExpectedFile,
        f: &Found,
        counts: &mut VerifyCounts,
    ) -> Option<Problem> {
        let len = match f.what {
            What::File(len) => len,
            What::Dir => {
                return Some(Problem::new(
                    ProblemKind::Missing,
                    web(&e.path),
                    "a directory is in its place",
                ));
            }
            What::Other(what) => {
                return Some(Problem::new(
                    ProblemKind::Missing,
                    web(&e.path),
                    format!("a {what} is in its place"),
                ));
            }
        };
        counts.bytes_checked += len;
        if let Some(size) = e.size.filter(|&s| s != len) {
            return Some(Problem::new(
                ProblemKind::BadSize,
                web(&e.path),
                format!("{len} bytes, expected {size}"),
            ));
        }
        if !self.hash {
            return None;
        }
        let bad = |detail: String| Some(Problem::new(ProblemKind::BadHash, web(&e.path), detail));
        match self.storage.hash_listed(&e.path, &mut w.buf) {
            Err(err) => bad(format!("cannot read it: {err}")),
            Ok(h) if h.sha256.to_hex() != e.sha256 => {
                bad(format!("sha256 is {}, expected {}", h.sha256, e.sha256))
            }
            Ok(h) => match &e.blake2b {
                Some(b) if &h.blake2b.to_hex() != b => {
                    bad(format!("blake2b_256 is {}, expected {b}", h.blake2b))
                }
                _ => None,
            },
        }
    }

    /// The files under a shard's 60-hex directories, sorted by path; anything else in the
    /// shard is an orphan, reported as it is met.
    fn walk_shard(
        &self,
        aa_rel: &str,
        bb: &Entry,
        orphans: &mut Vec<Problem>,
    ) -> io::Result<Vec<Found>> {
        let prefix = &format!("{aa_rel}{}/", bb.name);
        let mut found = Vec::new();
        for e in self.storage.list_within(aa_rel, bb)?.unwrap_or_default() {
            let rel = format!("{prefix}{}", e.name);
            if !(e.meta.is_dir() && is_hex(&e.name, 60)) {
                orphans.push(orphan(&rel, e.meta.kind));
                continue;
            }
            for entry in self.storage.list_within(prefix, &e)?.unwrap_or_default() {
                let what = match entry.meta.kind {
                    Kind::File => What::File(entry.meta.size),
                    Kind::Dir => What::Dir,
                    other => What::Other(other.describe()),
                };
                found.push(Found {
                    path: format!("{rel}/{}", entry.name),
                    what,
                });
            }
        }
        Ok(found)
    }
}

fn web(rel: &str) -> String {
    format!("web/{rel}")
}

fn orphan(rel: &str, kind: Kind) -> Problem {
    let slash = if kind == Kind::Dir { "/" } else { "" };
    Problem::new(
        ProblemKind::Orphan,
        format!("web/{rel}{slash}"),
        "not part of the package tree",
    )
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
