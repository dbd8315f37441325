//! What the mirror records about a project and its files: the records the upstream client
//! produces, the filters select from, the state database stores and the index renders.

use std::collections::BTreeMap;

use reqwest::Url;

use super::{Blake2b256, Filename, PackagePath, ProjectName, Serial, Sha256};

/// A distribution file as the mirror records and serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub version: String,
    pub filename: Filename,
    pub path: PackagePath,
    pub size: u64,
    pub sha256: Sha256,
    pub upload_time: Option<String>,
    pub requires_python: Option<String>,
    pub yanked: bool,
    pub yanked_reason: Option<String>,
    pub packagetype: Option<String>,
    pub python_version: Option<String>,
    /// sha256 of the PEP 658 `.metadata` sidecar. Upstream's promise on a [`RemoteFile`];
    /// on a recorded file, set only when the mirror holds the sidecar.
    pub core_metadata: Option<Sha256>,
    /// PEP 740 provenance URL, as upstream gave it (absolute).
    pub provenance: Option<String>,
    /// Digests besides sha256 from upstream's project page: {hashlib name: hex}.
    pub extra_hashes: BTreeMap<String, String>,
}

impl FileRecord {
    pub fn blake2b(&self) -> Blake2b256 {
        self.path.blake2b()
    }

    /// A record for unit tests: stored under `hex` (64 hex digits, also its sha256), no
    /// optional fields.
    #[cfg(test)]
    pub fn for_test(version: &str, filename: &str, hex: &str, size: u64) -> FileRecord {
        let filename = Filename::new(filename).unwrap();
        let url_path = format!(
            "/packages/{}/{}/{}/{filename}",
            &hex[..2],
            &hex[2..4],
            &hex[4..]
        );
        FileRecord {
            version: version.into(),
            path: PackagePath::from_url_path(&url_path, &filename).unwrap(),
            filename,
            size,
            sha256: Sha256::from_hex(hex).unwrap(),
            upload_time: None,
            requires_python: None,
            yanked: false,
            yanked_reason: None,
            packagetype: None,
            python_version: None,
            core_metadata: None,
            provenance: None,
            extra_hashes: BTreeMap::new(),
        }
    }
}

/// A file upstream offers, with where to fetch it.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    pub record: FileRecord,
    pub url: Url,
    /// What upstream did not say about it, learned from its bytes.
    pub unknown: Unknown,
}

/// Facts upstream did not give about a file: an HTML page has no size; a file URL outside
/// PyPI's layout with no `blake2b_256` digest has no BLAKE2b-256, so no path yet. They are
/// learned from the bytes as they download, or from the file the mirror already holds under
/// the same name and SHA-256. Until then the record holds placeholders (size 0, a path under
/// an all-zero BLAKE2b) that are never recorded or published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unknown {
    pub size: bool,
    pub blake2b: bool,
    /// A wheel whose documents do not say whether it has PEP 658 core metadata (older pages
    /// have no such field; `false` is an answer): derived from the wheel itself once held.
    pub core_metadata: bool,
}

impl Unknown {
    /// The size or the path is unknown: the file cannot be recorded or listed yet.
    pub fn any(self) -> bool {
        self.size || self.blake2b
    }
}

impl RemoteFile {
    /// A file with every fact known.
    pub fn known(record: FileRecord, url: Url) -> RemoteFile {
        RemoteFile {
            record,
            url,
            unknown: Unknown::default(),
        }
    }

    /// Whether `held` (recorded under the same file name) is this file: same SHA-256, and the
    /// same size and path wherever upstream gave them.
    pub fn is_held_as(&self, held: &FileRecord) -> bool {
        held.sha256 == self.record.sha256
            && (self.unknown.size || held.size == self.record.size)
            && (self.unknown.blake2b || held.path == self.record.path)
    }

    /// Fill in what upstream left out, from the bytes (`size`, `blake2b`).
    pub fn learn(&mut self, size: u64, blake2b: Blake2b256) {
        if self.unknown.size {
            self.record.size = size;
        }
        if self.unknown.blake2b {
            self.record.path = PackagePath::new(blake2b, self.record.filename.clone());
        }
        self.unknown.size = false;
        self.unknown.blake2b = false;
    }

    /// The digest of core metadata derived from the wheel (or held from an earlier run).
    pub fn learn_core_metadata(&mut self, sha256: Option<Sha256>) {
        if self.unknown.core_metadata {
            self.record.core_metadata = sha256;
            self.unknown.core_metadata = false;
        }
    }

    /// PEP 658: the sidecar lives at the file's URL plus `.metadata`.
    pub fn metadata_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!("{}.metadata", self.url.path()));
        url
    }
}

/// PEP 792 project status, when upstream gave one other than the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectStatus {
    pub status: String,
    pub reason: Option<String>,
}

impl ProjectStatus {
    /// A quarantined project offers no files.
    pub fn is_quarantined(&self) -> bool {
        self.status == "quarantined"
    }
}

#[derive(Debug)]
pub struct ProjectSnapshot {
    pub name: ProjectName,
    pub display_name: String,
    pub serial: Serial,
    /// Every version upstream lists, including those without files.
    pub versions: Vec<String>,
    pub files: Vec<RemoteFile>,
    pub status: Option<ProjectStatus>,
    /// Entries left out, each with the reason (logged and counted as failures).
    pub refused: Vec<String>,
    /// How to ask upstream next time whether the project page changed (serial-less feeds).
    pub validators: Option<PageValidators>,
    /// Files upstream offers that the cooldown holds back for now (not in `files`).
    pub held_back: Vec<HeldFile>,
}

impl ProjectSnapshot {
    /// A snapshot for unit tests: `name` (also its display name) at `serial`, version 1.0
    /// with `files`, nothing else.
    #[cfg(test)]
    pub fn for_test(name: &str, serial: u64, files: Vec<RemoteFile>) -> ProjectSnapshot {
        ProjectSnapshot {
            name: ProjectName::new(name).unwrap(),
            display_name: name.to_owned(),
            serial: Serial(serial),
            versions: vec!["1.0".into()],
            files,
            status: None,
            refused: Vec::new(),
            validators: None,
            held_back: Vec::new(),
        }
    }
}

/// A file the cooldown holds back, and when it comes of age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFile {
    pub filename: Filename,
    pub size: u64,
    /// Unix seconds.
    pub matures_at: i64,
}

/// What a project's page was when it was read: HTTP validators to send back
/// (`If-None-Match`, `If-Modified-Since`), and the body's digest for upstreams without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageValidators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub digest: Sha256,
}

/// What the database knows about a project's JSON API document (`json = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonApiRecord {
    /// Not recorded (an older pymirror wrote it, or a sync was killed before recording it).
    Unknown,
    /// Upstream had no document for it: none may be on disk.
    Absent,
    /// The SHA-256 of `web/json/<name>` as written.
    Written(Sha256),
}

/// A project as recorded, everything its pages are generated from.
#[derive(Debug, Clone)]
pub struct StoredProject {
    pub name: ProjectName,
    pub display_name: String,
    pub serial: Serial,
    pub status: Option<ProjectStatus>,
    pub versions: Vec<String>,
    pub files: Vec<FileRecord>,
    pub json_api: JsonApiRecord,
}
