//! The index writer: everything under `web/simple/` (and `web/json/`, `web/pypi/` for the
//! optional JSON API mirror), always derived from recorded state.
//!
//! A project's pages are written only after every file they link is in place, and replaced
//! atomically; unchanged pages are left untouched (no mtime churn for rsync or caches).
//! The root pages are streamed from the database, never built by listing directories.

pub mod html;
pub mod json;
pub mod json_api;

use std::io::Write;
use std::path::PathBuf;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::config::SimpleFormat;
use crate::state::State;
use crate::storage::Layout;
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

pub struct IndexWriter<'a> {
    layout: &'a Layout,
    fsync: bool,
    format: SimpleFormat,
    root_uri: Option<&'a str>,
}

impl<'a> IndexWriter<'a> {
    /// The writer for the mirror's configured formats, links and durability.
    pub fn from_config(layout: &'a Layout, cfg: &'a crate::config::Config) -> Self {
        IndexWriter::new(
            layout,
            cfg.fsync,
            cfg.simple_format,
            cfg.root_uri.as_deref(),
        )
    }

    pub fn new(
        layout: &'a Layout,
        fsync: bool,
        format: SimpleFormat,
        root_uri: Option<&'a str>,
    ) -> Self {
        IndexWriter {
            layout,
            fsync,
            format,
            root_uri,
        }
    }

    /// Write the project's pages in the configured formats.
    pub fn write_project(&self, view: &ProjectView<'_>) -> std::io::Result<()> {
        let dir = self.layout.project_dir(view.name);
        let links = Links::new(self.root_uri, "../../");
        if self.format.html() {
            let page = html::project_page(view, &links);
            self.layout
                .write_if_changed(&dir.join("index.html"), &page, self.fsync)?;
            self.layout
                .write_if_changed(&dir.join("index.v1_html"), &page, self.fsync)?;
        }
        if self.format.json() {
            let page = json::project_page(view, &links);
            self.layout
                .write_if_changed(&dir.join("index.v1_json"), &page, self.fsync)?;
        }
        Ok(())
    }

    /// Regenerate the root pages from every project in the database.
    pub fn write_root(&self, state: &State, serial: Serial) -> std::io::Result<()> {
        let simple = self.layout.web.join("simple");
        if self.format.html() {
            let dest = simple.join("index.html");
            self.layout
                .write_atomic(&dest, |w| root_html(state, w), self.fsync)?;
            self.layout.write_if_changed(
                &simple.join("index.v1_html"),
                &std::fs::read(&dest)?,
                self.fsync,
            )?;
        }
        if self.format.json() {
            self.layout.write_atomic(
                &simple.join("index.v1_json"),
                |w| root_json(state, serial, w),
                self.fsync,
            )?;
        }
        Ok(())
    }

    pub fn root_exists(&self) -> bool {
        let simple = self.layout.web.join("simple");
        (!self.format.html() || simple.join("index.html").exists())
            && (!self.format.json() || simple.join("index.v1_json").exists())
    }

    pub fn remove_json_api(&self, name: &ProjectName) -> std::io::Result<()> {
        for path in [
            self.layout.web.join("json").join(name.as_str()),
            self.layout
                .web
                .join("pypi")
                .join(name.as_str())
                .join("json"),
        ] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
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
        for (dest, links) in self.json_api_docs(name) {
            let body = json_api::rewrite(upstream, versions, held, &links);
            digest.get_or_insert_with(|| crate::types::hashing::sha256(&body));
            self.layout.write_if_changed(&dest, &body, self.fsync)?;
        }
        Ok(digest.expect("two documents"))
    }

    /// Where the JSON API documents of a project live, `json/<name>` first, each with how
    /// it links to files.
    pub fn json_api_docs(&self, name: &ProjectName) -> [(PathBuf, Links); 2] {
        [
            (
                self.layout.web.join("json").join(name.as_str()),
                Links::new(self.root_uri, "../"),
            ),
            (
                self.layout
                    .web
                    .join("pypi")
                    .join(name.as_str())
                    .join("json"),
                Links::new(self.root_uri, "../../"),
            ),
        ]
    }
}

/// The root HTML page (`simple/index.html`, also `index.v1_html`), streamed from the database.
pub fn root_html(state: &State, w: &mut impl Write) -> std::io::Result<()> {
    html::root_header(w)?;
    state
        .for_each_project(|name, display, _| html::root_entry(w, name, display))
        .map_err(std::io::Error::other)?;
    html::root_footer(w)
}

/// The root PEP 691 page (`simple/index.v1_json`), streamed from the database.
pub fn root_json(state: &State, serial: Serial, w: &mut impl Write) -> std::io::Result<()> {
    json::root_header(w, serial)?;
    let mut first = true;
    state
        .for_each_project(|_, display, serial| {
            json::root_entry(w, std::mem::take(&mut first), display, serial)
        })
        .map_err(std::io::Error::other)?;
    json::root_footer(w)
}
