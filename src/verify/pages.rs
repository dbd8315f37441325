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
use std::path::{Path, PathBuf};

use crate::config::SimpleFormat;
use crate::index::{self, IndexWriter, Links, ProjectView, html, json, json_api};
use crate::state::{State, VerifyCounts};
use crate::storage::Layout;
use crate::types::FileRecord;
use crate::types::hashing::sha256;
use crate::types::{JsonApiRecord, StoredProject};
use crate::types::{ProjectName, Serial};

use super::packages::is_real_dir;
use crate::types::problem::{Kind, Problem};

/// Projects per unit of work (and per checkpoint step).
pub const BATCH: usize = 256;

pub struct Checker<'a> {
    pub layout: &'a Layout,
    pub format: SimpleFormat,
    pub root_uri: Option<&'a str>,
    /// `json = true`: the JSON API mirror is checked too.
    pub json_api: bool,
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
        IndexWriter::new(self.layout, false, self.format, self.root_uri)
    }

    /// The page files a project directory holds in the configured formats.
    pub fn page_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.format.html() {
            names.extend(["index.html", "index.v1_html"]);
        }
        if self.format.json() {
            names.push("index.v1_json");
        }
        names
    }

    pub fn check_batch(
        &self,
        state: &State,
        names: Vec<ProjectName>,
    ) -> anyhow::Result<BatchResult> {
        let mut out = BatchResult::default();
        for name in names {
            // Gone since the batch was listed (a sync beside a read-only verify).
            if let Some(stored) = state.stored_project(&name)? {
                self.check_project(&stored, &mut out);
            }
            out.projects += 1;
            out.last = Some(name.to_string());
        }
        Ok(out)
    }

    fn check_project(&self, stored: &StoredProject, out: &mut BatchResult) {
        let name = stored.name.as_str();
        let view = ProjectView::of_stored(stored);
        let links = Links::new(self.root_uri, "../../");
        let dir = self.layout.project_dir(&stored.name);
        let rel_dir = format!("web/simple/{name}/");
        let page = |file: &str| format!("{rel_dir}{file}");
        let mut pages: Vec<(&str, Vec<u8>)> = Vec::new();
        if self.format.html() {
            let html = html::project_page(&view, &links);
            pages.push(("index.v1_html", html.clone()));
            pages.push(("index.html", html));
        }
        if self.format.json() {
            pages.push(("index.v1_json", json::project_page(&view, &links)));
        }
        out.counts.pages_checked += pages.len() as u64;
        if !is_real_dir(&dir) {
            let why = match std::fs::symlink_metadata(&dir) {
                Ok(_) => format!("missing: web/simple/{name} is not a directory"),
                Err(_) => "missing".to_owned(),
            };
            for (file, _) in &pages {
                out.problems
                    .push(Problem::new(Kind::BadPage, page(file), why.clone()).of_project(name));
            }
        } else {
            for (file, want) in &pages {
                if let Some(why) = differs(&dir.join(file), want) {
                    out.problems
                        .push(Problem::new(Kind::BadPage, page(file), why).of_project(name));
                }
            }
            let expected = self.page_names();
            out.problems
                .extend(unexpected_entries(&dir, &rel_dir, &expected, name));
        }
        if self.json_api {
            out.counts.pages_checked += 2;
            let index = self.index();
            let docs = index.json_api_docs(&stored.name);
            let state = self.json_api_state(stored, &docs);
            for ((path, _), doc) in docs.iter().zip(state) {
                if let Doc::Bad(why) = doc {
                    let rel = self.relative(path);
                    out.problems
                        .push(Problem::new(Kind::BadPage, rel, why).of_project(name));
                }
            }
            let pypi_dir = self.layout.web.join("pypi").join(name);
            if is_real_dir(&pypi_dir) {
                out.problems.extend(unexpected_entries(
                    &pypi_dir,
                    &format!("web/pypi/{name}/"),
                    &["json"],
                    name,
                ));
            }
        }
    }

    /// The state of a project's two JSON API documents (`json/<name>`, `pypi/<name>/json`).
    pub fn json_api_state(&self, stored: &StoredProject, docs: &[(PathBuf, Links); 2]) -> [Doc; 2] {
        let view = ProjectView::of_stored(stored);
        let held: Vec<&FileRecord> = view.files().collect();
        let read = |path: &Path| -> Result<Option<Vec<u8>>, String> {
            if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
                return match std::fs::symlink_metadata(path) {
                    Ok(_) => Err("not a regular file".to_owned()),
                    Err(_) => Ok(None),
                };
            }
            std::fs::read(path)
                .map(Some)
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
            let top = self.layout.web.join(tree);
            if !is_real_dir(&top) {
                continue;
            }
            for entry in std::fs::read_dir(&top)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let ft = entry.file_type()?;
                if tree == "simple" && ft.is_file() && roots.contains(&name.as_str()) {
                    continue;
                }
                let shape_ok = if dirs { ft.is_dir() } else { ft.is_file() };
                let slash = if ft.is_dir() { "/" } else { "" };
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
        let simple = self.layout.web.join("simple");
        let mut problems = Vec::new();
        let mut compare = |file: &str, render: &dyn Fn(&mut SameAs) -> io::Result<()>| {
            counts.pages_checked += 1;
            let path = simple.join(file);
            let why = match SameAs::open(&path)? {
                None => Some("missing".to_owned()),
                Some(mut same) => {
                    render(&mut same)?;
                    (!same.finish()?).then(|| "differs from what the database generates".into())
                }
            };
            if let Some(why) = why {
                problems.push(Problem::new(
                    Kind::BadPage,
                    format!("web/simple/{file}"),
                    why,
                ));
            }
            anyhow::Ok(())
        };
        if self.format.html() {
            for file in ["index.html", "index.v1_html"] {
                compare(file, &|w| index::root_html(state, w))?;
            }
        }
        if self.format.json() {
            let serial = root_serial(&simple.join("index.v1_json"))
                .map_or_else(|| state.fully_synced_serial(), Ok)?;
            compare("index.v1_json", &|w| index::root_json(state, serial, w))?;
        }
        Ok(problems)
    }

    fn relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.layout.web).unwrap_or(path);
        format!("web/{}", rel.display())
    }
}

/// Why the file at `path` is not `want`, if it is not.
fn differs(path: &Path, want: &[u8]) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Err(_) => return Some("missing".into()),
        Ok(m) if !m.is_file() => return Some("missing: not a regular file".into()),
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(got) if got == want => None,
        Ok(_) => Some("differs from what the database generates".into()),
        Err(e) => Some(format!("cannot read it: {e}")),
    }
}

/// Entries of a project's directory other than its pages.
fn unexpected_entries(dir: &Path, rel_dir: &str, expected: &[&str], project: &str) -> Vec<Problem> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && expected.contains(&name.as_str()) {
            continue;
        }
        let slash = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            "/"
        } else {
            ""
        };
        out.push(
            Problem::new(
                Kind::Orphan,
                format!("{rel_dir}{name}{slash}"),
                "not a page the index has",
            )
            .of_project(project),
        );
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The serial a JSON root page states in its header (`{"meta":{"_last-serial":N,`).
fn root_serial(path: &Path) -> Option<Serial> {
    let mut head = [0u8; 64];
    let n = File::open(path).ok()?.read(&mut head).ok()?;
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
    /// `None` when there is no regular file at `path`.
    pub fn open(path: &Path) -> io::Result<Option<SameAs>> {
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
            return Ok(None);
        }
        Ok(Some(SameAs {
            file: BufReader::with_capacity(256 * 1024, File::open(path)?),
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

    fn same(file: &[u8], written: &[&[u8]]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, file).unwrap();
        let mut w = SameAs::open(&path).unwrap().unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.v1_json");
        std::fs::write(
            &path,
            b"{\"meta\":{\"_last-serial\":1234,\"api-version\":\"1.4\"},\"projects\":[]}\n",
        )
        .unwrap();
        assert_eq!(root_serial(&path), Some(Serial(1234)));
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(root_serial(&path), None);
    }
}
