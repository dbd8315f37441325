//! A catalog of generated projects, PyPI-sized (the scale benchmark's ~740,000), made into
//! real projects of the model only when something asks for one: its page, its JSON API
//! document, its file, or a change to it. Until then it exists only as a number.
//!
//! Project `i` is `scale-<i, 7 digits>`, created at serial `i + 1` (the catalog is the
//! journal's first `count` rows); every other project (even `i`) holds one tiny sdist in
//! release 1.0, the rest have no file at all, as most of PyPI's long tail.

use std::collections::HashSet;

use super::FileOpts;
use super::state::State;

const PREFIX: &str = "scale-";

pub(super) struct Catalog {
    pub(super) count: u64,
    /// Made real (and so in `State::projects`, unless removed since): no longer generated.
    touched: HashSet<u64>,
}

impl Catalog {
    pub(super) fn new(count: u64) -> Catalog {
        Catalog {
            count,
            touched: HashSet::new(),
        }
    }

    /// The generated projects still only numbers: (name, serial), in name order.
    pub(super) fn untouched(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        (0..self.count)
            .filter(|i| !self.touched.contains(i))
            .map(|i| (name(i), i + 1))
    }

    /// The catalog's journal rows after `since`: (name, serial), at most `limit`.
    pub(super) fn changelog(
        &self,
        since: i64,
        limit: usize,
    ) -> impl Iterator<Item = (String, u64)> {
        let from = since.max(0) as u64;
        (from..self.count).take(limit).map(|i| (name(i), i + 1))
    }
}

pub fn name(i: u64) -> String {
    format!("{PREFIX}{i:07}")
}

fn index_of(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(PREFIX)?;
    (digits.len() == 7 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The index of the generated project a file name belongs to (`scale_0001234-1.0.tar.gz`).
fn index_of_file(filename: &str) -> Option<u64> {
    let stem = filename
        .strip_prefix("scale_")?
        .strip_suffix("-1.0.tar.gz")?;
    index_of(&format!("{PREFIX}{stem}"))
}

impl State {
    /// Make generated project `key` real, as it was created (no journal row: the catalog's
    /// rows are its serials). Anything else, or a project already made, is left alone.
    pub(super) fn materialize(&mut self, key: &str) {
        let Some(catalog) = &mut self.catalog else {
            return;
        };
        let Some(i) = index_of(key).filter(|i| *i < catalog.count) else {
            return;
        };
        if !catalog.touched.insert(i) {
            return;
        }
        let (serial, journal) = (self.serial, self.journal.len());
        let display = name(i);
        self.ensure_project(&display);
        if i % 2 == 0 {
            self.ensure_release(&display, "1.0");
            let filename = format!("scale_{i:07}-1.0.tar.gz");
            let content = format!("scale project {i}\n").into_bytes();
            self.add_file(&display, "1.0", &filename, content, FileOpts::default());
        }
        self.serial = serial;
        self.journal.truncate(journal);
        let p = self.projects.get_mut(&display).expect("just made");
        p.last_serial = i + 1;
    }

    /// Make real the generated project a file path (`packages/…/<file>`) belongs to.
    pub(super) fn materialize_file(&mut self, rel_path: &str) {
        let filename = rel_path.rsplit('/').next().unwrap_or_default();
        let filename = filename.strip_suffix(".metadata").unwrap_or(filename);
        if let Some(i) = index_of_file(filename) {
            self.materialize(&name(i));
        }
    }
}

/// One project of the root listing.
pub(super) struct Listed<'a> {
    pub(super) key: &'a str,
    pub(super) display: &'a str,
    pub(super) serial: u64,
    pub(super) quarantined: bool,
}

impl State {
    /// Every live project, real or still generated, in name order.
    pub(super) fn each_listed(&self, mut f: impl FnMut(Listed<'_>)) {
        let mut real = self.projects.iter().peekable();
        let generated = self.catalog.iter().flat_map(Catalog::untouched);
        for (name, serial) in generated {
            while let Some((key, p)) = real.next_if(|(key, _)| key.as_str() < name.as_str()) {
                f(Listed {
                    key,
                    display: &p.display,
                    serial: p.last_serial,
                    quarantined: p.quarantined(),
                });
            }
            f(Listed {
                key: &name,
                display: &name,
                serial,
                quarantined: false,
            });
        }
        for (key, p) in real {
            f(Listed {
                key,
                display: &p.display,
                serial: p.last_serial,
                quarantined: p.quarantined(),
            });
        }
    }
}
