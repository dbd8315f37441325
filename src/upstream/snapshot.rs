//! Turn untrusted upstream answers into a [`ProjectSnapshot`] the mirror may act on.
//!
//! The JSON API answer is the source of files; the PEP 691 project page, when fetched, adds
//! provenance (PEP 740), project status (PEP 792) and digests besides sha256. Every entry is
//! checked here, once, before anything is downloaded or written: its name, its URL (scheme,
//! raw path shape, no dot segments or encoded separators), its digests. An entry that fails is
//! refused with a reason and left out; the rest of the project goes on.

use std::collections::{BTreeMap, HashSet};

use reqwest::Url;

use crate::types::dist::DistFilename;
use crate::types::{
    Blake2b256, FileRecord, Filename, PackagePath, ProjectName, ProjectSnapshot, ProjectStatus,
    RemoteFile, Serial, Sha256, Unknown,
};
use crate::upstream::json_api::{FileJson, ProjectJson};
use crate::upstream::simple::{PageFile, ProjectPage};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("upstream answered for project {got:?} when asked for {want}")]
    WrongProject { want: ProjectName, got: String },
    #[error(
        "{project}: upstream lists {} {what}, more than {key} = {limit}; refused \
         (raise {key} if this is real)",
        match .count { Some(n) => n.to_string(), None => format!("at least {}", .limit + 1) }
    )]
    TooMany {
        project: String,
        /// None: the parse stopped at the entry past the cap (`simple::parse_capped`).
        count: Option<usize>,
        what: &'static str,
        key: &'static str,
        limit: usize,
    },
}

/// Where file URLs may point, beyond the fixed rules (https when the metadata came over
/// https, the file host layout).
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Internal addresses (loopback, private, link-local) are allowed only when the master
    /// itself is one.
    pub allow_internal: bool,
    /// Internal hosts allowed all the same: `internal_hosts` and the configured hosts.
    pub internal_hosts: crate::upstream::address::InternalHosts,
    /// When not empty, file URLs must be on one of these hosts (lowercase) or the master's.
    pub file_hosts: Vec<String>,
    /// Files larger than this are refused (0: no cap).
    pub max_file_bytes: u64,
    /// A project listing more files than this is refused whole (0: no cap).
    pub max_project_files: usize,
    /// A project listing more releases than this is refused whole (0: no cap).
    pub max_project_releases: usize,
}

impl UrlPolicy {
    pub fn new(cfg: &crate::config::Config) -> UrlPolicy {
        let trust = crate::upstream::address::Trust::of(cfg);
        UrlPolicy {
            allow_internal: trust.master_internal,
            internal_hosts: trust.hosts,
            file_hosts: match cfg.file_hosts.is_empty() {
                true => Vec::new(),
                false => cfg
                    .file_hosts
                    .iter()
                    .cloned()
                    .chain(cfg.master.host_str().map(str::to_ascii_lowercase))
                    .collect(),
            },
            max_file_bytes: cfg.max_file_bytes,
            max_project_files: cfg.max_project_files,
            max_project_releases: cfg.max_project_releases,
        }
    }

    fn check_file_url(&self, url: &Url, size: Option<u64>) -> Result<(), String> {
        if !self.allow_internal
            && crate::upstream::address::is_internal_host(url)
            && !self.internal_hosts.allows_host(url.host())
        {
            return Err(format!(
                "URL {url} points at an internal address; refused: add its host to [mirror] internal_hosts if it is yours"
            ));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.file_hosts.is_empty() && !self.file_hosts.contains(&host) {
            return Err(format!(
                "host {host:?} is neither the master's nor in file_hosts; add it to file_hosts \
                 if it serves this index's files"
            ));
        }
        if let Some(size) = size.filter(|&s| self.max_file_bytes > 0 && s > self.max_file_bytes) {
            return Err(format!(
                "{size} bytes is more than max_file_bytes = {}",
                self.max_file_bytes
            ));
        }
        Ok(())
    }
}

/// What upstream answered for one project.
pub struct Answers<'a> {
    /// JSON API answer and where it came from; `None` on 404.
    pub json: Option<(ProjectJson, &'a Url)>,
    /// PEP 691 project page and where it came from; `None` when not fetched, 404, or not
    /// offered as JSON.
    pub page: Option<(ProjectPage, &'a Url)>,
}

/// Validate the answers as the metadata of `want` at `serial`. `display_name` is used when
/// only the project page answered (a project without releases, or quarantined).
pub fn snapshot(
    want: &ProjectName,
    display_name: &str,
    answers: Answers<'_>,
    serial: Serial,
    policy: &UrlPolicy,
) -> Result<ProjectSnapshot, MetadataError> {
    let status = answers
        .page
        .as_ref()
        .and_then(|(p, _)| check_status(p.project_status.as_ref()?));
    if let Some((page, _)) = &answers.page
        && ProjectName::new(&page.name).ok().as_ref() != Some(want)
    {
        return Err(MetadataError::WrongProject {
            want: want.clone(),
            got: page.name.chars().take(200).collect(),
        });
    }
    let json_files = answers
        .json
        .as_ref()
        .map_or(0, |(j, _)| j.releases.values().map(Vec::len).sum::<usize>());
    let page_files = answers.page.as_ref().map_or(0, |(p, _)| p.files.len());
    let releases = answers.json.as_ref().map_or(0, |(j, _)| j.releases.len());
    for (count, what, key, limit) in [
        (
            json_files.max(page_files),
            "files",
            "max_project_files",
            policy.max_project_files,
        ),
        (
            releases,
            "releases",
            "max_project_releases",
            policy.max_project_releases,
        ),
    ] {
        if limit > 0 && count > limit {
            return Err(MetadataError::TooMany {
                project: want.to_string(),
                count: Some(count),
                what,
                key,
                limit,
            });
        }
    }
    let mut snap = ProjectSnapshot {
        name: want.clone(),
        display_name: display_name.to_owned(),
        serial,
        versions: Vec::new(),
        files: Vec::new(),
        status,
        refused: Vec::new(),
        validators: None,
        held_back: Vec::new(),
    };
    let quarantined = snap
        .status
        .as_ref()
        .is_some_and(ProjectStatus::is_quarantined);
    let Some((json, source)) = answers.json else {
        // No JSON API (another mirror that serves only the simple index, or a quarantined
        // project): the PEP 691 page is the whole answer.
        if let Some((page, source)) = answers.page.filter(|_| !quarantined) {
            from_page(&mut snap, page, source, policy);
        }
        return Ok(snap);
    };
    let (page_files, page_source): (BTreeMap<String, PageFile>, _) = match answers.page {
        Some((page, url)) => (
            page.files
                .into_iter()
                .map(|f| (f.filename.clone(), f))
                .collect(),
            Some(url),
        ),
        None => (BTreeMap::new(), None),
    };
    match ProjectName::new(&json.info.name) {
        Ok(n) if &n == want => snap.display_name = json.info.name.clone(),
        _ => {
            return Err(MetadataError::WrongProject {
                want: want.clone(),
                got: json.info.name.chars().take(200).collect(),
            });
        }
    }
    let require_https = source.scheme() == "https";
    let mut seen = HashSet::new();
    for (version, entries) in json.releases {
        for entry in entries.into_iter().filter(|_| !quarantined) {
            let shown = entry.filename.chars().take(200).collect::<String>();
            let page_file = page_files.get(&entry.filename).zip(page_source);
            match check_file(&version, entry, page_file, source, require_https, policy) {
                Ok(file) if seen.insert(file.record.filename.clone()) => snap.files.push(file),
                Ok(file) => snap.refused.push(format!(
                    "{want}: file {} is listed twice",
                    file.record.filename
                )),
                Err(why) => snap
                    .refused
                    .push(format!("{want}: refused file {shown:?}: {why}")),
            }
        }
        snap.versions.push(version);
    }
    Ok(snap)
}

/// Files from a PEP 691 page alone. It has no per-file version, so each comes from the file
/// name (wheel and sdist naming rules); it has every other field the index needs.
fn from_page(snap: &mut ProjectSnapshot, page: ProjectPage, source: &Url, policy: &UrlPolicy) {
    let require_https = source.scheme() == "https";
    let mut seen = HashSet::new();
    let mut versions: Vec<String> = page.versions.unwrap_or_default();
    for f in page.files {
        let shown = f.filename.chars().take(200).collect::<String>();
        let Some(version) = version_from_filename(&snap.name, &f.filename) else {
            snap.refused.push(format!(
                "{}: refused file {shown:?}: its version cannot be told from the file name",
                snap.name
            ));
            continue;
        };
        let (yanked, yanked_reason) = match &f.yanked {
            Some(serde_json::Value::String(r)) => (true, Some(r.clone())),
            Some(serde_json::Value::Bool(b)) => (*b, None),
            _ => (false, None),
        };
        let entry = FileJson {
            filename: f.filename.clone(),
            url: f.url.clone(),
            size: f.size,
            digests: crate::upstream::json_api::Digests {
                sha256: f.hashes.get("sha256").cloned(),
                blake2b_256: None,
            },
            requires_python: f.requires_python.clone(),
            upload_time_iso_8601: f.upload_time.clone(),
            upload_time: None,
            yanked,
            yanked_reason,
            packagetype: None,
            python_version: None,
            core_metadata: f.core_metadata.clone(),
            data_dist_info_metadata: f.data_dist_info_metadata.clone(),
        };
        match check_file(
            &version,
            entry,
            Some((&f, source)),
            source,
            require_https,
            policy,
        ) {
            Ok(file) if seen.insert(file.record.filename.clone()) => {
                if !versions.contains(&version) {
                    versions.push(version);
                }
                snap.files.push(file);
            }
            Ok(file) => snap.refused.push(format!(
                "{}: file {} is listed twice",
                snap.name, file.record.filename
            )),
            Err(why) => snap
                .refused
                .push(format!("{}: refused file {shown:?}: {why}", snap.name)),
        }
    }
    versions.sort();
    versions.dedup();
    snap.versions = versions;
}

/// The version in a distribution's file name (see [`DistFilename::version`]).
pub fn version_from_filename(project: &ProjectName, filename: &str) -> Option<String> {
    DistFilename::parse(filename)?.version(project)
}

const STATUSES: &[&str] = &["active", "archived", "quarantined", "deprecated"];

fn check_status(s: &crate::upstream::simple::ProjectStatus) -> Option<ProjectStatus> {
    if !STATUSES.contains(&s.status.as_str()) {
        tracing::warn!(
            "unknown project status {:?} ignored",
            s.status.chars().take(40).collect::<String>()
        );
        return None;
    }
    Some(ProjectStatus {
        status: s.status.clone(),
        reason: s
            .reason
            .as_ref()
            .map(|r| r.chars().filter(|c| !c.is_control()).take(1000).collect()),
    })
}

/// One file entry of the JSON API (`source`), with the project page's entry for it and where
/// the page came from. The page's URL wins: it is the index's own link, where the JSON API
/// document may be a copy another mirror keeps verbatim, still naming its upstream's host.
fn check_file(
    version: &str,
    f: FileJson,
    page: Option<(&PageFile, &Url)>,
    source: &Url,
    require_https: bool,
    policy: &UrlPolicy,
) -> Result<RemoteFile, String> {
    let filename = Filename::new(&f.filename).map_err(|e| e.to_string())?;
    let url = match page.filter(|(p, _)| !p.url.is_empty()) {
        Some((p, page_source)) => check_url(&p.url, page_source, page_source.scheme() == "https")?,
        None => check_url(&f.url, source, require_https)?,
    };
    policy.check_file_url(&url, f.size)?;
    // Installers name a file by its URL's last segment: a URL that ends otherwise is not one
    // a legitimate index serves (and a file named twice two ways is refused, not guessed at).
    let last = url.path().rsplit('/').next().unwrap_or_default();
    let named = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    if named != filename.as_str() {
        return Err(format!(
            "URL {:?} does not end in the file name",
            crate::types::text::shown(url.as_str())
        ));
    }
    let sha256 = f
        .digests
        .sha256
        .as_deref()
        .ok_or("no sha256 digest")
        .and_then(|h| Sha256::from_hex(h).map_err(|_| "sha256 digest is not 64 hex characters"))?;
    // The local path is PyPI's, from the BLAKE2b-256 of the bytes: the digest upstream gives,
    // else the one a PyPI-layout URL names (under any prefix), else learned while
    // downloading. A claimed one is checked against the bytes before the file is placed.
    let in_url = PackagePath::blake2b_in_url(url.path(), &filename);
    let blake2b = match f.digests.blake2b_256.as_deref() {
        Some(b2) => {
            let b2 = Blake2b256::from_hex(b2).map_err(|e| e.to_string())?;
            if in_url.is_some_and(|u| u != b2) {
                return Err(format!(
                    "blake2b_256 {b2} does not match the path it is stored under"
                ));
            }
            Some(b2)
        }
        None => in_url,
    };
    let unknown = Unknown {
        size: f.size.is_none(),
        blake2b: blake2b.is_none(),
        core_metadata: f.core_metadata.is_none()
            && f.data_dist_info_metadata.is_none()
            && filename.as_str().ends_with(".whl"),
    };
    let path = PackagePath::new(
        blake2b.unwrap_or(Blake2b256::from_bytes([0; 32])),
        filename.clone(),
    );
    let upload_time = f.upload_time_iso_8601.or(f.upload_time);
    let core_metadata = match f.core_metadata.or(f.data_dist_info_metadata) {
        Some(cm) => match cm.sha256() {
            Some(h) => Some(
                Sha256::from_hex(h).map_err(|_| "core-metadata sha256 is not 64 hex characters")?,
            ),
            None => None, // advertised without a hash: it could not be verified, so not mirrored
        },
        None => None,
    };
    let (provenance, extra_hashes) = match page {
        Some((p, page_source)) => {
            if p.hashes
                .get("sha256")
                .is_some_and(|h| !h.eq_ignore_ascii_case(&sha256.to_hex()))
            {
                return Err("the project page and the JSON API disagree on its sha256".into());
            }
            let provenance = match &p.provenance {
                Some(raw) => {
                    Some(check_url(raw, page_source, page_source.scheme() == "https")?.to_string())
                }
                None => None,
            };
            (provenance, check_extra_hashes(&p.hashes)?)
        }
        None => (None, BTreeMap::new()),
    };
    Ok(RemoteFile {
        record: FileRecord {
            version: version.to_owned(),
            filename,
            path,
            size: f.size.unwrap_or(0),
            sha256,
            upload_time,
            requires_python: f.requires_python.filter(|s| !s.is_empty()),
            yanked: f.yanked,
            yanked_reason: if f.yanked { f.yanked_reason } else { None },
            packagetype: f.packagetype,
            python_version: f.python_version,
            core_metadata,
            provenance,
            extra_hashes,
        },
        url,
        unknown,
    })
}

/// Digests other than sha256 (which the record carries already): hashlib names, hex values.
fn check_extra_hashes(
    hashes: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (name, value) in hashes.iter().filter(|(n, _)| n.as_str() != "sha256") {
        let name_ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && value.len() % 2 == 0
            && value.bytes().all(|b| b.is_ascii_hexdigit());
        if !(name_ok && value_ok) {
            return Err(format!(
                "hash {:?} is not a digest name with a hex value",
                name.chars().take(40).collect::<String>()
            ));
        }
        out.insert(name.clone(), value.to_ascii_lowercase());
    }
    Ok(out)
}

/// Resolve a file URL, refusing anything a crafted entry could use to escape the layout. The
/// raw text is checked before parsing because URL parsing silently resolves `..` segments.
fn check_url(raw: &str, source: &Url, require_https: bool) -> Result<Url, String> {
    let path_part = raw.split(['?', '#']).next().unwrap_or_default();
    // A relative reference may climb from the page it is on (`../../packages/…`, as mirrors
    // write); after those leading steps, and anywhere in an absolute URL, a dot segment is
    // refused. Either way the resolved path must still have the exact file host layout.
    let is_relative = !path_part.contains(':') && !path_part.starts_with('/');
    let mut segments = path_part.split('/').peekable();
    if is_relative {
        while segments
            .next_if(|seg| *seg == ".." || *seg == ".")
            .is_some()
        {}
    }
    let has_dot_segment = segments.any(|seg| {
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    });
    if has_dot_segment || path_part.contains('\\') || raw.chars().any(char::is_control) {
        return Err(format!(
            "URL {:?} has dot segments or backslashes",
            raw.chars().take(200).collect::<String>()
        ));
    }
    let url = source
        .join(raw)
        .map_err(|e| format!("URL {raw:?} is invalid: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if !require_https => {}
        other => {
            return Err(format!(
                "URL scheme {other:?} refused (metadata came over {})",
                source.scheme()
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL carries credentials".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::json_api::{Digests, Info};

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn entry(filename: &str, url: &str) -> FileJson {
        FileJson {
            filename: filename.into(),
            url: url.into(),
            size: Some(3),
            digests: Digests {
                sha256: Some(SHA.into()),
                blake2b_256: None,
            },
            requires_python: None,
            upload_time_iso_8601: None,
            upload_time: None,
            yanked: false,
            yanked_reason: None,
            packagetype: None,
            python_version: None,
            core_metadata: None,
            data_dist_info_metadata: None,
        }
    }

    fn only_json<'a>(json: ProjectJson, source: &'a Url) -> Answers<'a> {
        Answers {
            json: Some((json, source)),
            page: None,
        }
    }

    fn project(files: Vec<FileJson>) -> ProjectJson {
        ProjectJson {
            info: Info {
                name: "Demo_Pkg".into(),
            },
            last_serial: Some(5),
            releases: [("1.0".to_owned(), files)].into_iter().collect(),
        }
    }

    #[test]
    fn keeps_good_files_and_refuses_bad_ones_with_reasons() {
        let e60 = "e".repeat(60);
        let good = format!("https://files.example/packages/ab/cd/{e60}/demo-1.0.tar.gz");
        let source = Url::parse("https://index.example/pypi/Demo_Pkg/json").unwrap();
        let json = project(vec![
            entry("demo-1.0.tar.gz", &good),
            entry("../evil.tar.gz", &good),
            entry(
                "demo-1.0.zip",
                &format!("https://f.example/packages/ab/cd/{e60}/../../../x/demo-1.0.zip"),
            ),
            entry(
                "demo-1.0.whl",
                &format!("http://f.example/packages/ab/cd/{e60}/demo-1.0.whl"),
            ),
            entry(
                "demo-1.0.egg",
                &format!("file:///packages/ab/cd/{e60}/demo-1.0.egg"),
            ),
            entry("demo-1.0.tar.bz2", "/+f/abc/0123/demo-1.0.tar.bz2"),
            entry("demo-1.0.tar.lz", "/etc/passwd"),
            FileJson {
                digests: Digests {
                    sha256: Some("xyz".into()),
                    blake2b_256: None,
                },
                ..entry(
                    "demo-1.0.tar.xz",
                    &format!("https://f.example/packages/ab/cd/{e60}/demo-1.0.tar.xz"),
                )
            },
            entry("demo-1.0.tar.gz", &good),
        ]);
        let name = ProjectName::new("demo-pkg").unwrap();
        let snap = snapshot(
            &name,
            "demo-pkg",
            only_json(json, &source),
            Serial(5),
            &UrlPolicy::default(),
        )
        .unwrap();
        // A URL outside PyPI's layout is fetched (it is on upstream's host), but its local path
        // comes only from the bytes' BLAKE2b-256.
        assert_eq!(snap.files.len(), 2);
        assert_eq!(snap.files[0].record.filename.as_str(), "demo-1.0.tar.gz");
        assert!(!snap.files[0].unknown.any());
        assert_eq!(snap.files[1].record.filename.as_str(), "demo-1.0.tar.bz2");
        assert_eq!(
            snap.files[1].url.as_str(),
            "https://index.example/+f/abc/0123/demo-1.0.tar.bz2"
        );
        assert!(snap.files[1].unknown.blake2b && !snap.files[1].unknown.size);
        assert_eq!(snap.refused.len(), 7, "{:#?}", snap.refused);
        assert_eq!(snap.versions, vec!["1.0".to_owned()]);
    }

    #[test]
    fn relative_urls_may_climb_only_before_the_path() {
        let source = Url::parse("https://mirror.example/simple/demo-pkg/").unwrap();
        let e60 = "e".repeat(60);
        let ok = format!("../../packages/ab/cd/{e60}/demo-1.0.tar.gz");
        assert_eq!(
            check_url(&ok, &source, true).unwrap().as_str(),
            format!("https://mirror.example/packages/ab/cd/{e60}/demo-1.0.tar.gz")
        );
        for bad in [
            format!("../../packages/../packages/ab/cd/{e60}/demo-1.0.tar.gz"),
            format!("../../packages/ab/cd/{e60}/%2e%2e/demo-1.0.tar.gz"),
            format!("/packages/ab/../cd/{e60}/demo-1.0.tar.gz"),
            format!("https://f.example/../packages/ab/cd/{e60}/demo-1.0.tar.gz"),
        ] {
            assert!(check_url(&bad, &source, true).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_url_policy_refuses_internal_hosts_foreign_hosts_and_huge_files() {
        let e60 = "e".repeat(60);
        let source = Url::parse("https://index.example/pypi/Demo_Pkg/json").unwrap();
        let name = ProjectName::new("demo-pkg").unwrap();
        let policy = UrlPolicy {
            allow_internal: false,
            file_hosts: vec!["files.example".into()],
            max_file_bytes: 2,
            ..UrlPolicy::default()
        };
        for (host, size) in [
            ("169.254.169.254", 1),
            ("[::1]", 1),
            ("localhost", 1),
            ("other.example", 1),
            ("files.example", 3),
        ] {
            let url = format!("https://{host}/packages/ab/cd/{e60}/demo-1.0.tar.gz");
            let json = project(vec![FileJson {
                size: Some(size),
                ..entry("demo-1.0.tar.gz", &url)
            }]);
            let snap = snapshot(
                &name,
                "demo-pkg",
                only_json(json, &source),
                Serial(5),
                &policy,
            )
            .unwrap();
            assert!(snap.files.is_empty(), "{host} {size} accepted");
        }
        let url = format!("https://files.example/packages/ab/cd/{e60}/demo-1.0.tar.gz");
        let json = project(vec![FileJson {
            size: Some(2),
            ..entry("demo-1.0.tar.gz", &url)
        }]);
        let snap = snapshot(
            &name,
            "demo-pkg",
            only_json(json, &source),
            Serial(5),
            &policy,
        )
        .unwrap();
        assert_eq!(snap.files.len(), 1);
    }

    #[test]
    fn refuses_an_answer_for_another_project() {
        let source = Url::parse("https://index.example/pypi/x/json").unwrap();
        let name = ProjectName::new("other").unwrap();
        assert!(
            snapshot(
                &name,
                "other",
                only_json(project(vec![]), &source),
                Serial(1),
                &UrlPolicy::default()
            )
            .is_err()
        );
    }

    fn page(status: Option<&str>, files: Vec<PageFile>) -> ProjectPage {
        serde_json::from_value::<ProjectPage>(serde_json::json!({
            "meta": {"api-version": "1.4", "_last-serial": 5},
            "name": "demo-pkg",
            "files": [],
        }))
        .map(|mut p| {
            p.files = files;
            p.project_status = status.map(|s| crate::upstream::simple::ProjectStatus {
                status: s.into(),
                reason: Some("because".into()),
            });
            p
        })
        .unwrap()
    }

    #[test]
    fn the_project_page_adds_provenance_status_and_extra_hashes() {
        let e60 = "e".repeat(60);
        let url = format!("https://files.example/packages/ab/cd/{e60}/demo-1.0.tar.gz");
        let source = Url::parse("https://index.example/pypi/Demo_Pkg/json").unwrap();
        let page_file = |hashes: &[(&str, &str)], provenance: Option<&str>| {
            let mut f: PageFile =
                serde_json::from_value(serde_json::json!({"filename": "demo-1.0.tar.gz"})).unwrap();
            f.hashes = hashes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            f.provenance = provenance.map(str::to_owned);
            f
        };
        let name = ProjectName::new("demo-pkg").unwrap();
        let good = page_file(
            &[("sha256", SHA), ("sha512", "AB12")],
            Some("https://index.example/integrity/x/provenance"),
        );
        let answers = Answers {
            json: Some((project(vec![entry("demo-1.0.tar.gz", &url)]), &source)),
            page: Some((page(Some("archived"), vec![good]), &source)),
        };
        let snap = snapshot(&name, "demo-pkg", answers, Serial(5), &UrlPolicy::default()).unwrap();
        let rec = &snap.files[0].record;
        assert_eq!(
            rec.provenance.as_deref(),
            Some("https://index.example/integrity/x/provenance")
        );
        assert_eq!(
            rec.extra_hashes.get("sha512").map(String::as_str),
            Some("ab12")
        );
        assert_eq!(snap.status.as_ref().unwrap().status, "archived");

        for bad in [
            page_file(&[("sha256", &"f".repeat(64))], None),
            page_file(&[("sha512", "not hex")], None),
            page_file(&[], Some("http://plain.example/p")),
        ] {
            let answers = Answers {
                json: Some((project(vec![entry("demo-1.0.tar.gz", &url)]), &source)),
                page: Some((page(None, vec![bad]), &source)),
            };
            let snap =
                snapshot(&name, "demo-pkg", answers, Serial(5), &UrlPolicy::default()).unwrap();
            assert!(
                snap.files.is_empty() && snap.refused.len() == 1,
                "{:?}",
                snap.refused
            );
        }
    }

    #[test]
    fn a_quarantined_project_offers_no_files() {
        let e60 = "e".repeat(60);
        let url = format!("https://files.example/packages/ab/cd/{e60}/demo-1.0.tar.gz");
        let source = Url::parse("https://index.example/pypi/Demo_Pkg/json").unwrap();
        let name = ProjectName::new("demo-pkg").unwrap();
        let answers = Answers {
            json: Some((project(vec![entry("demo-1.0.tar.gz", &url)]), &source)),
            page: Some((page(Some("quarantined"), vec![]), &source)),
        };
        let snap = snapshot(&name, "demo-pkg", answers, Serial(5), &UrlPolicy::default()).unwrap();
        assert!(snap.files.is_empty());
        assert!(snap.status.unwrap().is_quarantined());
        // Only the page answered (the JSON API hides quarantined projects): kept, no files.
        let answers = Answers {
            json: None,
            page: Some((page(Some("quarantined"), vec![]), &source)),
        };
        let snap = snapshot(&name, "Demo_Pkg", answers, Serial(5), &UrlPolicy::default()).unwrap();
        assert_eq!(snap.display_name, "Demo_Pkg");
        assert!(snap.files.is_empty());
    }

    #[test]
    fn versions_come_from_file_names() {
        let p = ProjectName::new("zope.interface").unwrap();
        for (file, want) in [
            (
                "zope.interface-5.4.0-cp39-cp39-manylinux1_x86_64.whl",
                "5.4.0",
            ),
            ("zope_interface-5.4.0-1-py3-none-any.whl", "5.4.0"),
            ("zope.interface-5.4.0.tar.gz", "5.4.0"),
            ("zope-interface-1.0rc1.zip", "1.0rc1"),
            ("zope.interface-3.3.0-py2.4-win32.egg", "3.3.0"),
        ] {
            assert_eq!(
                version_from_filename(&p, file).as_deref(),
                Some(want),
                "{file}"
            );
        }
        assert_eq!(version_from_filename(&p, "other-1.0.tar.gz"), None);
    }
}
