//! The index: every page the database says should exist does, byte for byte as the database
//! generates it now, and no page exists for a project the mirror does not hold.
//!
//! - Project pages (`simple/<name>/index.{html,v1_html,v1_json}`) are pure functions of the
//!   recorded project: rendered in memory and compared byte for byte.
//! - The root pages are streamed from the database through a comparing writer (a 740,000-
//!   project root page is never held in memory). The JSON root carries the serial it was
//!   written at, which need not be today's: it is compared at the serial its header states.
//! - The JSON API mirror (`json = true`) derives from upstream's answer, which is not stored.
//!   The digest of `json/<name>` is recorded when written; `pypi/<name>/json` is the same
//!   document linked from one level deeper, so each is checked against the other. Without a
//!   recorded digest (written by an older pymirror) a document is still checked to list only
//!   files the mirror holds, linked where they are: rewriting it for the files held must give
//!   it back unchanged; one that is absent then cannot be told missing and is not reported.
//! - Directories under `simple/` (and `json/`, `pypi/`) are read as a stream, each name
//!   looked up in the database: no listing is held in memory.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use crate::config::SimpleFormat;
use crate::index::{self, IndexWriter, Links, ProjectView, json_api};
use crate::state::{State, VerifyCounts};
use crate::storage::Storage;
use crate::types::hashing::sha256;
use crate::types::keys::{self, Page};
use crate::types::problem::{Kind, Problem};
use crate::types::{FileRecord, JsonApiRecord, ProjectName, Serial, StoredProject};

/// Projects per unit of work (and per checkpoint step).
pub const BATCH: usize = 256;

pub struct Checker<'a> {
    pub storage: &'a Storage,
    pub format: SimpleFormat,
    pub root_uri: Option<&'a str>,
    /// `json = true`: the JSON API mirror is checked too.
    pub json_api: bool,
    /// Projects named after this still have an adopted tree's pages, which the next sync
    /// rewrites (`State::adopted_pages_after`): not compared.
    pub adopted_after: Option<&'a str>,
}

#[derive(Debug, Default)]
pub struct BatchResult {
    pub projects: u64,
    pub last: Option<String>,
    pub counts: VerifyCounts,
    pub problems: Vec<Problem>,
}

/// A JSON API document as found on disk.
pub enum Doc {
    /// Consistent with the database; its bytes.
    Good(Vec<u8>),
    Bad(String),
    /// Not there, and none is expected (or none is known to be).
    None,
}

impl Checker<'_> {
    pub fn index(&self) -> IndexWriter<'_> {
        IndexWriter::new(self.storage, self.format, self.root_uri)
    }

    /// The page files a project directory holds in the configured formats.
    pub fn page_names(&self) -> Vec<&'static str> {
        index::pages(self.format)
            .iter()
            .map(|p| p.file_name())
            .collect()
    }

    pub fn check_batch(
        &self,
        state: &State,
        names: Vec<ProjectName>,
    ) -> anyhow::Result<BatchResult> {
        let mut out = BatchResult::default();
        for name in names {
            let adopted = self.adopted_after.is_some_and(|a| name.as_str() > a);
            // Gone since the batch was listed (a sync beside a read-only verify).
            if let Some(stored) = state.stored_project(&name)?.filter(|_| !adopted) {
                self.check_project(&stored, &mut out);
            }
            out.projects += 1;
            out.last = Some(name.to_string());
        }
        Ok(out)
    }

    fn check_project(&self, stored: &StoredProject, out: &mut BatchResult) {
        let name = stored.name.as_str();
        let pages = self.index().project_pages(&ProjectView::of_stored(stored));
        let dir = keys::project_dir(&stored.name);
        out.counts.pages_checked += pages.len() as u64;
        let dir_meta = self.storage.stat(&dir).ok().flatten();
        if !dir_meta.is_some_and(|m| m.is_dir()) {
            let why = match dir_meta {
                Some(_) => format!("missing: web/simple/{name} is not a directory"),
                None => "missing".to_owned(),
            };
            for (key, _) in &pages {
                out.problems
                    .push(Problem::new(Kind::BadPage, web(key), why.clone()).of_project(name));
            }
        } else {
            for (key, want) in &pages {
                if let Some(why) = self.differs(key, want) {
                    out.problems
                        .push(Problem::new(Kind::BadPage, web(key), why).of_project(name));
                }
            }
            let expected = self.page_names();
            out.problems
                .extend(self.unexpected_entries(&dir, &expected, name));
        }
        if self.json_api {
            out.counts.pages_checked += 2;
            let index = self.index();
            let docs = index.json_api_docs(&stored.name);
            let state = self.json_api_state(stored, &docs);
            for ((key, _), doc) in docs.iter().zip(state) {
                if let Doc::Bad(why) = doc {
                    out.problems
                        .push(Problem::new(Kind::BadPage, web(key), why).of_project(name));
                }
            }
            let pypi_dir = format!("pypi/{name}/");
            out.problems
                .extend(self.unexpected_entries(&pypi_dir, &["json"], name));
        }
    }

    /// The state of a project's two JSON API documents (`json/<name>`, `pypi/<name>/json`).
    pub fn json_api_state(&self, stored: &StoredProject, docs: &[(String, Links); 2]) -> [Doc; 2] {
        let view = ProjectView::of_stored(stored);
        let held: Vec<&FileRecord> = view.files().collect();
        let read = |key: &str| -> Result<Option<Vec<u8>>, String> {
            let size = match self.storage.stat(key) {
                Ok(Some(m)) if m.is_file() => m.size,
                Ok(Some(_)) => return Err("not a regular file".to_owned()),
                _ => return Ok(None),
            };
            // No further than the regular file it was a moment ago.
            self.storage
                .read(key, size.saturating_add(1))
                .map_err(|e| format!("cannot read it: {e}"))
        };
        // The document as it would be rewritten for `links` from `bytes`.
        let derive = |bytes: &[u8], links: &Links| -> Option<Vec<u8>> {
            let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            Some(json_api::rewrite(&doc, &stored.versions, &held, links))
        };
        let [(json_path, json_links), (pypi_path, pypi_links)] = docs;
        let (json_doc, pypi_doc) = (read(json_path), read(pypi_path));
        match stored.json_api {
            JsonApiRecord::Absent => [json_doc, pypi_doc].map(|d| match d {
                Ok(None) => Doc::None,
                _ => Doc::Bad(
                    "upstream has no JSON API document for this project; none should exist".into(),
                ),
            }),
            JsonApiRecord::Written(digest) => {
                let json_doc = match json_doc {
                    Ok(Some(b)) if sha256(&b) == digest => Doc::Good(b),
                    Ok(Some(_)) => Doc::Bad("differs from the document written".into()),
                    Ok(None) => Doc::Bad("missing".into()),
                    Err(why) => Doc::Bad(why),
                };
                let pypi_doc = match (&json_doc, pypi_doc) {
                    (_, Err(why)) => Doc::Bad(why),
                    (_, Ok(None)) => Doc::Bad("missing".into()),
                    (Doc::Good(good), Ok(Some(b))) => match derive(good, pypi_links) {
                        Some(want) if want == b => Doc::Good(b),
                        _ => Doc::Bad("differs from the document written".into()),
                    },
                    (_, Ok(Some(b))) => match derive(&b, json_links) {
                        Some(json) if sha256(&json) == digest => Doc::Good(b),
                        _ => Doc::Bad("differs from the document written".into()),
                    },
                };
                [json_doc, pypi_doc]
            }
            JsonApiRecord::Unknown => {
                [(json_doc, json_links), (pypi_doc, pypi_links)].map(|(doc, links)| match doc {
                    Ok(None) => Doc::None,
                    Err(why) => Doc::Bad(why),
                    Ok(Some(b)) => match derive(&b, links) {
                        Some(again) if again == b => Doc::Good(b),
                        _ => Doc::Bad(
                            "lists files the mirror does not hold, or links them elsewhere".into(),
                        ),
                    },
                })
            }
        }
    }

    /// Entries of `simple/` (and `json/`, `pypi/`) that no held project accounts for, read
    /// as a stream with one indexed lookup each.
    pub fn check_strays(&self, state: &State) -> anyhow::Result<Vec<Problem>> {
        let mut problems = Vec::new();
        // The root pages have the same names as a project's.
        let roots = self.page_names();
        let mut trees = vec![("simple", true)];
        if self.json_api {
            trees.extend([("json", false), ("pypi", true)]);
        }
        for (tree, dirs) in trees {
            for entry in self.storage.list(tree)?.unwrap_or_default() {
                let (name, meta) = (entry.name, entry.meta);
                if tree == "simple" && meta.is_file() && roots.contains(&name.as_str()) {
                    continue;
                }
                let shape_ok = if dirs { meta.is_dir() } else { meta.is_file() };
                let slash = if meta.is_dir() { "/" } else { "" };
                let rel = format!("web/{tree}/{name}{slash}");
                if !shape_ok {
                    problems.push(Problem::new(Kind::Orphan, rel, "not part of the index"));
                } else if !state.holds_project(&name)? {
                    problems.push(Problem::new(
                        Kind::Orphan,
                        rel,
                        "a page of a project the mirror does not hold",
                    ));
                }
            }
        }
        Ok(problems)
    }

    /// The root pages, regenerated from the database as a stream and compared as they go.
    pub fn check_root(
        &self,
        state: &State,
        counts: &mut VerifyCounts,
    ) -> anyhow::Result<Vec<Problem>> {
        let mut problems = Vec::new();
        let rows: index::Rows<'_> = &|each| state.for_each_project(each).map_err(io::Error::other);
        let mut compare = |page: Page, render: &dyn Fn(&mut SameAs) -> io::Result<()>| {
            counts.pages_checked += 1;
            let key = keys::root_page(page);
            let why = match SameAs::open(self.storage, &key)? {
                None => Some("missing".to_owned()),
                Some(mut same) => {
                    render(&mut same)?;
                    (!same.finish()?).then(|| "differs from what the database generates".into())
                }
            };
            if let Some(why) = why {
                problems.push(Problem::new(Kind::BadPage, web(&key), why));
            }
            anyhow::Ok(())
        };
        if self.format.html() {
            for page in [Page::Html, Page::V1Html] {
                compare(page, &|w| index::root_html(rows, w))?;
            }
        }
        if self.format.json() {
            let serial = root_serial(self.storage, &keys::root_page(Page::V1Json))
                .map_or_else(|| state.fully_synced_serial(), Ok)?;
            compare(Page::V1Json, &|w| index::root_json(rows, serial, w))?;
        }
        Ok(problems)
    }

    /// Why the page at `key` is not `want`, if it is not.
    fn differs(&self, key: &str, want: &[u8]) -> Option<String> {
        match self.storage.stat(key) {
            Ok(Some(m)) if m.is_file() => {}
            Ok(Some(_)) => return Some("missing: not a regular file".into()),
            _ => return Some("missing".into()),
        }
        match self.storage.read(key, want.len() as u64 + 1) {
            Ok(Some(got)) if got == want => None,
            Ok(Some(_)) => Some("differs from what the database generates".into()),
            Ok(None) => Some("missing".into()),
            Err(e) => Some(format!("cannot read it: {e}")),
        }
    }

    /// Entries of a project's directory (`dir`, ending in `/`) other than its pages.
    fn unexpected_entries(&self, dir: &str, expected: &[&str], project: &str) -> Vec<Problem> {
        let Ok(Some(entries)) = self.storage.list(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries {
            if entry.meta.is_file() && expected.contains(&entry.name.as_str()) {
                continue;
            }
            let slash = if entry.meta.is_dir() { "/" } else { "" };
            out.push(
                Problem::new(
                    Kind::Orphan,
                    format!("web/{dir}{}{slash}", entry.name),
                    "not a page the index has",
                )
                .of_project(project),
            );
        }
        out
    }
}

/// A key as the report names it (relative to the mirror directory).
fn web(key: &str) -> String {
    format!("web/{key}")
}

/// The serial a JSON root page states in its header (`{"meta":{"_last-serial":N,`).
fn root_serial(storage: &Storage, key: &str) -> Option<Serial> {
    let mut head = [0u8; 64];
    let n = storage.open(key).ok()?.read(&mut head).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    let digits = text.strip_prefix("{\"meta\":{\"_last-serial\":")?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok().map(Serial)
}

/// A writer that compares what it is given with a file's bytes, holding only a buffer.
pub struct SameAs {
    file: BufReader<File>,
    same: bool,
    buf: Vec<u8>,
}

impl SameAs {
    /// `None` when there is no regular file at `key`.
    pub fn open(storage: &Storage, key: &str) -> io::Result<Option<SameAs>> {
        if !storage.stat(key)?.is_some_and(|m| m.is_file()) {
            return Ok(None);
        }
        Ok(Some(SameAs {
            file: BufReader::with_capacity(256 * 1024, storage.open(key)?),
            same: true,
            buf: Vec::new(),
        }))
    }

    /// Whether everything written matched and the file has nothing more.
    pub fn finish(mut self) -> io::Result<bool> {
        let mut one = [0u8; 1];
        Ok(self.same && self.file.read(&mut one)? == 0)
    }
}

impl Write for SameAs {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.same {
            self.buf.resize(bytes.len(), 0);
            match self.file.read_exact(&mut self.buf) {
                Ok(()) => self.same = self.buf == bytes,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.same = false,
                Err(e) => return Err(e),
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree in a temporary directory, with `web/` and `tmp/`.
    fn storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["web", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let storage = Storage::new(
            &dir.path().join("web"),
            &dir.path().join("tmp"),
            crate::storage::Durability::None,
        );
        (dir, storage)
    }

    fn same(file: &[u8], written: &[&[u8]]) -> bool {
        let (_dir, storage) = storage();
        storage.put_if_changed("f", file).unwrap();
        let mut w = SameAs::open(&storage, "f").unwrap().unwrap();
        for chunk in written {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn same_as_compares_the_whole_file() {
        assert!(same(b"hello world", &[b"hello", b" ", b"world"]));
        assert!(!same(b"hello world", &[b"hello", b" ", b"World"]));
        assert!(!same(b"hello world!", &[b"hello world"]), "file longer");
        assert!(!same(b"hello", &[b"hello world"]), "file shorter");
        assert!(same(b"", &[]));
    }

    #[test]
    fn root_serial_reads_the_header() {
        let (_dir, storage) = storage();
        let key = "simple/index.v1_json";
        storage
            .put_if_changed(
                key,
                b"{\"meta\":{\"_last-serial\":1234,\"api-version\":\"1.4\"},\"projects\":[]}\n",
            )
            .unwrap();
        assert_eq!(root_serial(&storage, key), Some(Serial(1234)));
        storage.put_if_changed(key, b"garbage").unwrap();
        assert_eq!(root_serial(&storage, key), None);
    }
}
