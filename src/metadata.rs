//! Turn one untrusted JSON API answer into a [`ProjectSnapshot`] the mirror may act on.
//!
//! Every file entry is checked here, once, before anything is downloaded or written: its name,
//! its URL (scheme, raw path shape, no dot segments or encoded separators), and its digests.
//! An entry that fails is refused with a reason and left out; the rest of the project goes on.

use std::collections::{BTreeMap, HashSet};

use reqwest::Url;

use crate::types::{Blake2b256, Filename, PackagePath, ProjectName, Serial, Sha256};
use crate::upstream::json_api::{FileJson, ProjectJson};

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
}

impl FileRecord {
    pub fn blake2b(&self) -> Blake2b256 {
        self.path.blake2b()
    }
}

/// A file upstream offers, with where to fetch it.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    pub record: FileRecord,
    pub url: Url,
}

#[derive(Debug)]
pub struct ProjectSnapshot {
    pub name: ProjectName,
    pub display_name: String,
    pub serial: Serial,
    /// Every version upstream lists, including those without files.
    pub versions: Vec<String>,
    pub files: Vec<RemoteFile>,
    /// Entries left out, each with the reason (logged and counted as failures).
    pub refused: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("upstream answered for project {got:?} when asked for {want}")]
    WrongProject { want: ProjectName, got: String },
}

/// Validate `json` (fetched from `source`) as the metadata of `want` at `serial`.
pub fn snapshot(
    want: &ProjectName,
    json: ProjectJson,
    serial: Serial,
    source: &Url,
) -> Result<ProjectSnapshot, MetadataError> {
    match ProjectName::new(&json.info.name) {
        Ok(n) if &n == want => {}
        _ => {
            return Err(MetadataError::WrongProject {
                want: want.clone(),
                got: json.info.name.chars().take(200).collect(),
            });
        }
    }
    let require_https = source.scheme() == "https";
    let mut files = Vec::new();
    let mut refused = Vec::new();
    let mut seen = HashSet::new();
    let mut versions = Vec::with_capacity(json.releases.len());
    let releases: BTreeMap<String, Vec<FileJson>> = json.releases;
    for (version, entries) in releases {
        for entry in entries {
            let shown = entry.filename.chars().take(200).collect::<String>();
            match check_file(&version, entry, source, require_https) {
                Ok(file) if seen.insert(file.record.filename.clone()) => files.push(file),
                Ok(file) => refused.push(format!(
                    "{want}: file {} is listed twice",
                    file.record.filename
                )),
                Err(why) => refused.push(format!("{want}: refused file {shown:?}: {why}")),
            }
        }
        versions.push(version);
    }
    Ok(ProjectSnapshot {
        name: want.clone(),
        display_name: json.info.name,
        serial,
        versions,
        files,
        refused,
    })
}

fn check_file(
    version: &str,
    f: FileJson,
    source: &Url,
    require_https: bool,
) -> Result<RemoteFile, String> {
    let filename = Filename::new(&f.filename).map_err(|e| e.to_string())?;
    let url = check_url(&f.url, source, require_https)?;
    let path = PackagePath::from_url_path(url.path(), &filename).map_err(|e| e.to_string())?;
    let sha256 = f
        .digests
        .sha256
        .as_deref()
        .ok_or("no sha256 digest")
        .and_then(|h| Sha256::from_hex(h).map_err(|_| "sha256 digest is not 64 hex characters"))?;
    if let Some(b2) = f.digests.blake2b_256.as_deref() {
        let b2 = Blake2b256::from_hex(b2).map_err(|e| e.to_string())?;
        if b2 != path.blake2b() {
            return Err(format!(
                "blake2b_256 {b2} does not match the path it is stored under"
            ));
        }
    }
    let upload_time = f.upload_time_iso_8601.or(f.upload_time);
    Ok(RemoteFile {
        record: FileRecord {
            version: version.to_owned(),
            filename,
            path,
            size: f.size,
            sha256,
            upload_time,
            requires_python: f.requires_python.filter(|s| !s.is_empty()),
            yanked: f.yanked,
            yanked_reason: if f.yanked { f.yanked_reason } else { None },
            packagetype: f.packagetype,
            python_version: f.python_version,
        },
        url,
    })
}

/// Resolve a file URL, refusing anything a crafted entry could use to escape the layout. The
/// raw text is checked before parsing because URL parsing silently resolves `..` segments.
fn check_url(raw: &str, source: &Url, require_https: bool) -> Result<Url, String> {
    let path_part = raw.split(['?', '#']).next().unwrap_or_default();
    let has_dot_segment = path_part.split('/').any(|seg| {
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
            size: 3,
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
            entry("demo-1.0.tar.bz2", "/etc/passwd"),
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
        let snap = snapshot(&name, json, Serial(5), &source).unwrap();
        assert_eq!(snap.files.len(), 1);
        assert_eq!(snap.files[0].record.filename.as_str(), "demo-1.0.tar.gz");
        assert_eq!(snap.refused.len(), 7, "{:#?}", snap.refused);
        assert_eq!(snap.versions, vec!["1.0".to_owned()]);
    }

    #[test]
    fn refuses_an_answer_for_another_project() {
        let source = Url::parse("https://index.example/pypi/x/json").unwrap();
        let name = ProjectName::new("other").unwrap();
        assert!(snapshot(&name, project(vec![]), Serial(1), &source).is_err());
    }
}
