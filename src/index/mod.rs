//! The index writer: the simple pages under `web/simple/`, always derived from recorded state.
//!
//! A project page is written only after every file it links is in place, and replaced
//! atomically; unchanged pages are left untouched (no mtime churn for rsync or caches).
//! The root page is streamed from the database, never built by listing directories.

pub mod html;

use std::path::Path;

use crate::layout::Layout;
use crate::metadata::FileRecord;
use crate::state::State;
use crate::types::ProjectName;

pub struct IndexWriter<'a> {
    layout: &'a Layout,
    fsync: bool,
}

impl<'a> IndexWriter<'a> {
    pub fn new(layout: &'a Layout, fsync: bool) -> Self {
        IndexWriter { layout, fsync }
    }

    /// Write `simple/<name>/index.html`; returns whether the bytes changed.
    pub fn write_project(
        &self,
        name: &ProjectName,
        display_name: &str,
        files: &[&FileRecord],
    ) -> std::io::Result<bool> {
        let page = html::project_page(display_name, files);
        let dest = self.layout.project_dir(name).join("index.html");
        self.layout.write_if_changed(&dest, &page, self.fsync)
    }

    /// Regenerate `simple/index.html` from every project in the database.
    pub fn write_root(&self, state: &State) -> std::io::Result<()> {
        let dest = self.layout.root_index();
        self.layout.write_atomic(
            &dest,
            |w| {
                html::root_header(w)?;
                state
                    .for_each_project(|name, display| html::root_entry(w, name, display))
                    .map_err(std::io::Error::other)?;
                html::root_footer(w)
            },
            self.fsync,
        )
    }

    pub fn root_exists(&self) -> bool {
        Path::new(&self.layout.root_index()).exists()
    }
}
