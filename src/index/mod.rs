//! The index writer: everything under `web/simple/` (and `web/json/`, `web/pypi/` for the
//! optional JSON API mirror), always derived from recorded state.
//!
//! A project's pages are written only after every file they link is in place, and replaced
//! atomically; unchanged pages are left untouched (no mtime churn for rsync or caches).
//! The root pages are streamed from rows the caller supplies (the database's projects, in
//! name order), never built by listing directories; the writer itself holds no state.

pub mod html;
pub mod json;
pub mod json_api;

use std::io::Write;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::config::SimpleFormat;
use crate::storage::Storage;
use crate::types::keys::{self, Page, RootChange};
use crate::types::{FileRecord, ProjectStatus, StoredProject};
use crate::types::{ProjectName, Serial, Sha256};

/// The simple API version both formats advertise: every key up to 1.4 is written (PEP 700
/// size/upload-time/versions, PEP 740 provenance, PEP 792 project status).
pub const API_VERSION: &str = "1.4";

/// Characters that may not appear raw in a URL path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// How pages link to files: relative to the page (default), or absolute under `root_uri`.
pub struct Links {
    prefix: String,
}

impl Links {
    /// `relative_to_web`: from the page's directory up to `web/`, e.g. `../../`.
    pub fn new(root_uri: Option<&str>, relative_to_web: &str) -> Links {
        Links {
            prefix: match root_uri {
                Some(uri) => format!("{}/", uri.trim_end_matches('/')),
                None => relative_to_web.to_owned(),
            },
        }
    }

    pub fn file(&self, file: &FileRecord) -> String {
        let relative = file.path.relative();
        let (dir, name) = relative
            .rsplit_once('/')
            .expect("package paths have a directory");
        format!(
            "{}{dir}/{}",
            self.prefix,
            utf8_percent_encode(name, SEGMENT)
        )
    }
}

/// One project as its pages show it.
pub struct ProjectView<'a> {
    pub name: &'a ProjectName,
    pub display_name: &'a str,
    pub serial: Serial,
    pub status: Option<&'a ProjectStatus>,
    pub versions: &'a [String],
    files: Vec<&'a FileRecord>,
}

impl<'a> ProjectView<'a> {
    pub fn new(
        name: &'a ProjectName,
        display_name: &'a str,
        serial: Serial,
        status: Option<&'a ProjectStatus>,
        versions: &'a [String],
        mut files: Vec<&'a FileRecord>,
    ) -> Self {
        // Sorted here so output never depends on upstream's or the database's order.
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        if status.is_some_and(ProjectStatus::is_quarantined) {
            files.clear();
        }
        ProjectView {
            name,
            display_name,
            serial,
            status,
            versions,
            files,
        }
    }

    /// A project as the database records it.
    pub fn of_stored(p: &'a StoredProject) -> Self {
        ProjectView::new(
            &p.name,
            &p.display_name,
            p.serial,
            p.status.as_ref(),
            &p.versions,
            p.files.iter().collect(),
        )
    }

    pub fn files(&self) -> impl Iterator<Item = &'a FileRecord> + '_ {
        self.files.iter().copied()
    }
}

/// Every mirrored project as (normalized name, display name, serial), in name order: the
/// caller calls `each` once per row (the state database streams them).
pub type Rows<'r> =
    &'r dyn Fn(&mut dyn FnMut(&str, &str, Serial) -> std::io::Result<()>) -> std::io::Result<()>;

/// The pages a format writes, in every directory that has pages.
pub fn pages(format: SimpleFormat) -> &'static [Page] {
    match (format.html(), format.json()) {
        (true, true) => &[Page::Html, Page::V1Html, Page::V1Json],
        (true, false) => &[Page::Html, Page::V1Html],
        (false, true) => &[Page::V1Json],
        (false, false) => &[],
    }
}

pub struct IndexWriter<'a> {
    storage: &'a Storage,
    format: SimpleFormat,
    root_uri: Option<&'a str>,
}

impl<'a> IndexWriter<'a> {
    /// The writer for the mirror's configured formats and links.
    pub fn from_config(storage: &'a Storage, cfg: &'a crate::config::Config) -> Self {
        IndexWriter::new(storage, cfg.simple_format, cfg.root_uri.as_deref())
    }

    pub fn new(storage: &'a Storage, format: SimpleFormat, root_uri: Option<&'a str>) -> Self {
        IndexWriter {
            storage,
            format,
            root_uri,
        }
    }

    /// A project's pages in the configured formats, each with its key, rendered in memory.
    pub fn project_pages(&self, view: &ProjectView<'_>) -> Vec<(String, Vec<u8>)> {
        let links = Links::new(self.root_uri, "../../");
        let mut html = None;
        pages(self.format)
            .iter()
            .map(|&page| {
                let body = match page {
                    Page::V1Json => json::project_page(view, &links),
                    _ => html
                        .get_or_insert_with(|| html::project_page(view, &links))
                        .clone(),
                };
                (keys::project_page(view.name, page), body)
            })
            .collect()
    }

    /// Write the project's pages in the configured formats.
    pub fn write_project(&self, view: &ProjectView<'_>) -> std::io::Result<()> {
        for (key, body) in self.project_pages(view) {
            self.storage.put_if_changed(&key, &body)?;
        }
        Ok(())
    }

    /// [`IndexWriter::write_project`] for a project known to have no pages yet: nothing is
    /// read first (per page, two `lstat`s and an `open` saved, or a GET in a bucket).
    pub fn write_new_project(&self, view: &ProjectView<'_>) -> std::io::Result<()> {
        for (key, body) in self.project_pages(view) {
            self.storage.put_streamed(&[&key], |w| w.write_all(&body))?;
        }
        Ok(())
    }

    /// Regenerate the root pages `change` reaches from every project (`rows`). The HTML page
    /// is streamed once into both of its names. Whether it wrote any (an HTML-only index
    /// lists no serial).
    pub fn write_root(
        &self,
        rows: Rows<'_>,
        serial: Serial,
        change: RootChange,
    ) -> std::io::Result<bool> {
        let html = self.format.html() && change == RootChange::Names;
        if html {
            let keys = [keys::root_page(Page::Html), keys::root_page(Page::V1Html)];
            self.storage
                .put_streamed(&[&keys[0], &keys[1]], |w| root_html(rows, w))?;
        }
        if self.format.json() {
            self.storage
                .put_streamed(&[&keys::root_page(Page::V1Json)], |w| {
                    root_json(rows, serial, w)
                })?;
        }
        Ok(html || self.format.json())
    }

    pub fn root_exists(&self) -> bool {
        pages(self.format)
            .iter()
            .all(|&page| self.storage.exists(&keys::root_page(page)))
    }

    pub fn remove_json_api(&self, name: &ProjectName) -> std::io::Result<()> {
        for (key, _) in keys::json_api_docs(name) {
            self.storage.delete(&key)?;
        }
        Ok(())
    }

    /// The optional JSON API mirror: `json/<name>` and `pypi/<name>/json`, listing only the
    /// releases in `versions` (those the filters keep) and the files the mirror holds.
    /// Returns the SHA-256 of `json/<name>` as written, for `pymirror verify`.
    pub fn write_json_api(
        &self,
        name: &ProjectName,
        upstream: &serde_json::Value,
        versions: &[String],
        held: &[&FileRecord],
    ) -> std::io::Result<Sha256> {
        let mut digest = None;
        for (key, links) in self.json_api_docs(name) {
            let body = json_api::rewrite(upstream, versions, held, &links);
            digest.get_or_insert_with(|| crate::types::hashing::sha256(&body));
            self.storage.put_if_changed(&key, &body)?;
        }
        Ok(digest.expect("two documents"))
    }

    /// The JSON API documents of a project, `json/<name>` first, each with how it links to
    /// files.
    pub fn json_api_docs(&self, name: &ProjectName) -> [(String, Links); 2] {
        keys::json_api_docs(name).map(|(key, up)| (key, Links::new(self.root_uri, up)))
    }
}

/// The root HTML page (`simple/index.html`, also `index.v1_html`), streamed from `rows`.
pub fn root_html(rows: Rows<'_>, w: &mut dyn Write) -> std::io::Result<()> {
    html::root_header(w)?;
    rows(&mut |name, display, _| html::root_entry(w, name, display))?;
    html::root_footer(w)
}

/// The root PEP 691 page (`simple/index.v1_json`), streamed from `rows`.
pub fn root_json(rows: Rows<'_>, serial: Serial, w: &mut dyn Write) -> std::io::Result<()> {
    json::root_header(w, serial)?;
    let mut first = true;
    rows(&mut |_, display, serial| {
        json::root_entry(w, std::mem::take(&mut first), display, serial)
    })?;
    json::root_footer(w)
}
