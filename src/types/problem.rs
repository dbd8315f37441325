//! What a verify can find, and what fixing each takes.

use std::fmt;

/// The kinds of problem, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A file the database references is not on disk (or something else is in its place).
    Missing,
    /// A file whose length is not the recorded size.
    BadSize,
    /// A file whose SHA-256 or BLAKE2b-256 is not the recorded one (`--hash`).
    BadHash,
    /// A page missing, or not what the database generates now.
    BadPage,
    /// Something on disk the database does not reference (files under `web/packages/`,
    /// pages of projects the mirror does not hold, leftover temporary files).
    Orphan,
    /// A project whose serial or files differ from upstream's (`--upstream`).
    Drift,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Missing,
        Kind::BadSize,
        Kind::BadHash,
        Kind::BadPage,
        Kind::Orphan,
        Kind::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::BadSize => "bad_size",
            Kind::BadHash => "bad_hash",
            Kind::BadPage => "bad_page",
            Kind::Orphan => "orphan",
            Kind::Drift => "drift",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A file to fetch again from upstream.
    pub fn is_file(self) -> bool {
        matches!(self, Kind::Missing | Kind::BadSize | Kind::BadHash)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    /// Relative to the mirror directory: `web/packages/…`, `web/simple/<name>/index.html`,
    /// `tmp/…`. A trailing `/` names a directory.
    pub path: String,
    pub detail: String,
    /// The project a page or a drift belongs to (normalized name).
    pub project: Option<String>,
    /// Drift: upstream's serial for the project.
    pub serial: Option<u64>,
}

impl Problem {
    pub fn new(kind: Kind, path: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            path: path.into(),
            detail: detail.into(),
            project: None,
            serial: None,
        }
    }

    pub fn of_project(mut self, name: &str) -> Problem {
        self.project = Some(name.to_owned());
        self
    }

    /// What `--repair` / `--delete-orphans` do about it, when the flags given cover it.
    pub fn fix(&self, repair: bool, delete_orphans: bool) -> Option<&'static str> {
        match self.kind {
            k if k.is_file() && repair => Some("re-download"),
            Kind::BadPage if repair => Some("rewrite"),
            Kind::Drift if repair => Some("queue for the next sync"),
            // Pages of projects the mirror does not hold are the index's own business.
            Kind::Orphan if delete_orphans || (repair && self.in_index()) => Some("delete"),
            _ => None,
        }
    }

    /// Under the index trees (`web/simple/`, `web/json/`, `web/pypi/`).
    pub fn in_index(&self) -> bool {
        ["web/simple/", "web/json/", "web/pypi/"]
            .iter()
            .any(|p| self.path.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_follow_the_flags() {
        let orphan_file = Problem::new(Kind::Orphan, "web/packages/aa/junk", "x");
        let stray_page = Problem::new(Kind::Orphan, "web/simple/gone/", "x");
        let temp = Problem::new(Kind::Orphan, "tmp/1-0.part", "x");
        assert_eq!(orphan_file.fix(true, false), None);
        assert_eq!(orphan_file.fix(false, true), Some("delete"));
        assert_eq!(stray_page.fix(true, false), Some("delete"));
        assert_eq!(temp.fix(true, false), None);
        assert_eq!(temp.fix(false, true), Some("delete"));
        let missing = Problem::new(Kind::Missing, "web/packages/a", "x");
        assert_eq!(missing.fix(false, true), None);
        assert_eq!(missing.fix(true, false), Some("re-download"));
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
