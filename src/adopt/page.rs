//! One project directory of the adopted tree: its page read (PEP 691 JSON preferred, else
//! PEP 503 HTML), each file it links checked on disk, the intact ones made into the snapshot
//! to record.

use std::collections::HashSet;

use crate::state::Adopted;
use crate::storage::Storage;
use crate::types::dist::DistFilename;
use crate::types::hashing::sha256;
use crate::types::{
    FileRecord, Filename, PackagePath, ProjectName, ProjectSnapshot, RemoteFile, Serial, Sha256,
};
use crate::upstream::html;
use crate::upstream::simple::{PageFile, ProjectPage};

/// Pages and sidecars larger than this are not read (a page of a project with 200,000 files
/// is about 60 MB).
const MAX_PAGE: u64 = 256 << 20;
const MAX_SIDECAR: u64 = 64 << 20;

/// What was found wrong, each reported on its own line.
pub enum Finding {
    /// Linked, not on disk (path relative to `web/`).
    Missing(String),
    /// On disk but not intact: the path, and why.
    Damaged(String, String),
    /// A page or entry that cannot be adopted, and why.
    NotAdopted(String),
}

/// A page whose links point outside the tree: adoption refuses it.
pub struct Outside {
    pub page: &'static str,
    pub links: Vec<String>,
}

pub struct Read {
    /// `None`: nothing to record (no page, an unreadable page, no valid name).
    pub adopted: Option<Adopted>,
    /// A project whose page could not be read: the next sync fetches it whole.
    pub fetch: Option<ProjectName>,
    pub findings: Vec<Finding>,
}

/// A placeholder for [`RemoteFile::known`]: adoption records no URL.
fn placeholder_url() -> reqwest::Url {
    reqwest::Url::parse("file:///adopted").expect("a valid URL")
}

pub fn read(
    storage: &Storage,
    dir: &str,
    hash: bool,
    buf: &mut [u8],
) -> std::io::Result<Result<Read, Outside>> {
    let mut findings = Vec::new();
    let not_adopted = |findings: Vec<Finding>, fetch: Option<ProjectName>| {
        Ok(Ok(Read {
            adopted: None,
            fetch,
            findings,
        }))
    };
    let name = match ProjectName::new(dir) {
        Ok(n) if n.as_str() == dir => n,
        Ok(n) => {
            // An older layout: the next sync fetches the project under its normalized name.
            findings.push(Finding::NotAdopted(format!(
                "web/simple/{dir}/ is not a normalized project name ({n}): queued for the next sync"
            )));
            return not_adopted(findings, Some(n));
        }
        Err(_) => {
            let shown = crate::types::text::shown(dir);
            findings.push(Finding::NotAdopted(format!(
                "web/simple/{shown}/ is no project name"
            )));
            return not_adopted(findings, None);
        }
    };
    let json_key = format!("simple/{dir}/index.v1_json");
    let html_key = format!("simple/{dir}/index.html");
    let (page, page_key, title) = match read_key(storage.read_listed(&json_key, MAX_PAGE))? {
        Some(body) => match serde_json::from_slice::<ProjectPage>(&body) {
            Ok(page) => {
                // The JSON page names the project normalized; the HTML title has its display
                // name (read no further than its head).
                let title = read_key(storage.read_listed(&html_key, 4096))?
                    .and_then(|head| title(&String::from_utf8_lossy(&head)));
                (page, "index.v1_json", title)
            }
            Err(e) => {
                findings.push(Finding::NotAdopted(format!(
                    "web/{json_key} is not a PEP 691 page: {e}; queued for the next sync"
                )));
                return not_adopted(findings, Some(name));
            }
        },
        None => match read_key(storage.read_listed(&html_key, MAX_PAGE))? {
            Some(body) => {
                let body = String::from_utf8_lossy(&body);
                (html::project_page(dir, &body), "index.html", title(&body))
            }
            None => {
                findings.push(Finding::NotAdopted(format!(
                    "web/simple/{dir}/ has no index.v1_json or index.html; queued for the next sync"
                )));
                return not_adopted(findings, Some(name));
            }
        },
    };
    let display_name = title
        .filter(|t| ProjectName::new(t).is_ok_and(|n| n == name))
        .unwrap_or_else(|| name.to_string());

    let mut outside = Vec::new();
    let mut files = Vec::new();
    let mut queue = false;
    let mut seen = HashSet::new();
    let checked = match hash && page.files.len() > 1 {
        true => super::in_order(
            &page.files,
            || vec![0; 1 << 20],
            |f, buf| check(storage, &name, f, true, buf),
        )
        .into_iter()
        .collect::<std::io::Result<Vec<_>>>()?,
        false => (page.files.iter())
            .map(|f| check(storage, &name, f, hash, buf))
            .collect::<std::io::Result<Vec<_>>>()?,
    };
    for (f, checked) in page.files.iter().zip(checked) {
        match checked {
            Checked::Intact(record) => {
                if seen.insert(record.filename.clone()) {
                    files.push(RemoteFile::known(*record, placeholder_url()));
                }
            }
            Checked::Outside => outside.push(f.url.clone()),
            Checked::Not(finding) => {
                queue = true;
                findings.push(finding);
            }
        }
    }
    if !outside.is_empty() {
        return Ok(Err(Outside {
            page: page_key,
            links: outside,
        }));
    }
    let mut versions: Vec<String> = page.versions.clone().unwrap_or_default();
    versions.extend(files.iter().map(|f| f.record.version.clone()));
    versions.sort();
    versions.dedup();
    let snapshot = ProjectSnapshot {
        name,
        display_name,
        serial: Serial(page.meta.last_serial.unwrap_or(0)),
        versions,
        files,
        status: None,
        refused: Vec::new(),
        validators: None,
        held_back: Vec::new(),
    };
    Ok(Ok(Read {
        adopted: Some(Adopted { snapshot, queue }),
        fetch: None,
        findings,
    }))
}

enum Checked {
    Intact(Box<FileRecord>),
    Outside,
    Not(Finding),
}

/// One linked file: where it must be, and whether it is there intact.
fn check(
    storage: &Storage,
    name: &ProjectName,
    f: &PageFile,
    hash: bool,
    buf: &mut [u8],
) -> std::io::Result<Checked> {
    let shown = crate::types::text::shown(&f.filename);
    let not = |why: String| Ok(Checked::Not(Finding::NotAdopted(why)));
    let Ok(filename) = Filename::new(&f.filename) else {
        return not(format!(
            "{name}: file name {shown:?} is not a plain file name"
        ));
    };
    let path = match f.url.strip_prefix("../../") {
        Some(rest) => PackagePath::from_url_path(&format!("/{rest}"), &filename).ok(),
        None => None,
    };
    let Some(path) = path else {
        return Ok(Checked::Outside);
    };
    let key = path.relative();
    let Some(sha) = f
        .hashes
        .get("sha256")
        .and_then(|h| Sha256::from_hex(h).ok())
    else {
        return not(format!("{name}: {shown} has no sha256 on its page"));
    };
    let Some(version) = crate::upstream::snapshot::version_from_filename(name, &f.filename) else {
        return not(format!(
            "{name}: {shown}: its version cannot be told from the file name"
        ));
    };
    let damaged = |why: String| Ok(Checked::Not(Finding::Damaged(key.clone(), why)));
    let size = if hash {
        match storage.hash_walking(&key, buf) {
            Ok(h) if h.sha256 != sha => return damaged("its sha256 is not the page's".into()),
            Ok(h) if h.blake2b != path.blake2b() => {
                return damaged("its blake2b_256 is not its path's".into());
            }
            Ok(h) => h.len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checked::Not(Finding::Missing(key)));
            }
            Err(e) => return damaged(e.to_string()),
        }
    } else {
        match storage.size_walking(&key) {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checked::Not(Finding::Missing(key)));
            }
            Err(e) => return damaged(e.to_string()),
        }
    };
    match f.size {
        Some(want) if want != size => {
            return damaged(format!("{size} bytes, its page says {want}"));
        }
        None if size == 0 => return damaged("empty".into()),
        _ => {}
    }
    // The PEP 658 sidecar, when present and as the page promises.
    let promised = (f.core_metadata.as_ref())
        .or(f.data_dist_info_metadata.as_ref())
        .and_then(|m| m.sha256())
        .and_then(|h| Sha256::from_hex(h).ok());
    let core_metadata = match promised {
        Some(want) => read_key(storage.read_walking(&format!("{key}.metadata"), MAX_SIDECAR))?
            .filter(|bytes| sha256(bytes) == want)
            .map(|_| want),
        None => None,
    };
    let (yanked, yanked_reason) = match &f.yanked {
        Some(serde_json::Value::String(r)) => (true, Some(r.clone())),
        Some(serde_json::Value::Bool(b)) => (*b, None),
        _ => (false, None),
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    Ok(Checked::Intact(Box::new(FileRecord {
        version,
        filename,
        path,
        size,
        sha256: sha,
        upload_time: nonempty(&f.upload_time),
        requires_python: nonempty(&f.requires_python),
        yanked,
        yanked_reason,
        packagetype: DistFilename::parse(&f.filename).map(|d| d.packagetype.name().to_owned()),
        python_version: None,
        core_metadata,
        provenance: None,
        extra_hashes: Default::default(),
    })))
}

/// A key's bytes as read (never through a symlink); `None` when absent or a symlink.
fn read_key(read: std::io::Result<Option<Vec<u8>>>) -> std::io::Result<Option<Vec<u8>>> {
    match read {
        Ok(found) => Ok(found),
        Err(e) if crate::storage::fs::is_symlink_refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The project's display name from bandersnatch's `<title>Links for X</title>`.
fn title(body: &str) -> Option<String> {
    let start = body.find("<title>")? + "<title>".len();
    let end = start + body[start..].find("</title>")?;
    let t = body[start..end].trim();
    Some(t.strip_prefix("Links for ").unwrap_or(t).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_gives_the_display_name() {
        let page = "<html><head><title>Links for Beta.Lib</title></head>";
        assert_eq!(title(page).as_deref(), Some("Beta.Lib"));
        assert_eq!(title("<html>"), None);
    }
}
