//! Personalities: how the fake index presents itself, so one model can play Warehouse, another
//! PyPI mirror, devpi or Artifactory. A `Personality` decides where things are served (path
//! prefix, simple directory name, file URLs), which APIs exist (XML-RPC, JSON API), which
//! formats are negotiated, which PEP 691 api-version and serial forms the documents carry, and
//! whether project pages answer conditional requests. This module also holds the helpers the
//! page modules share to honour it: file URLs as listed and their reverse, serial values, and
//! the final step of a page answer (serial header, `ETag`, `Last-Modified`, 304).

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::server::{Req, bytes_response, encode_path, with_header};
use super::state::{FileRec, State};

/// The root index `<prefix>/<simple>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootIndex {
    /// PEP 503 HTML or PEP 691 JSON depending on `Accept` (Warehouse).
    Negotiated,
    /// PEP 503 HTML whatever `Accept` says (a static mirror, Artifactory).
    HtmlOnly,
    /// Negotiated, but the JSON form carries no `_last-serial` at all.
    JsonWithoutSerials,
}

/// Project pages `<prefix>/<simple>/<name>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    Negotiated,
    HtmlOnly,
}

/// The PEP 691 `api-version` of JSON pages (and the HTML `pypi:repository-version`), which
/// decides the fields present: 1.0 has no `size`, `upload-time`, `versions` and names the
/// PEP 658 field `data-dist-info-metadata` only; 1.1 adds those and `core-metadata`; 1.3
/// `provenance`; 1.4 `project-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
    V1_4,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1_0 => "1.0",
            ApiVersion::V1_1 => "1.1",
            ApiVersion::V1_2 => "1.2",
            ApiVersion::V1_3 => "1.3",
            ApiVersion::V1_4 => "1.4",
        }
    }
}

/// Serials in documents: `_last-serial` of the root and project pages (and the HTML
/// `<!--SERIAL n-->` comment), `last_serial` of the JSON API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serials {
    /// JSON numbers (Warehouse).
    Numbers,
    /// Numeric JSON strings, `"_last-serial": "123"`.
    Strings,
    /// None anywhere.
    Absent,
}

/// How documents name files (and the root names project pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlStyle {
    /// `http://host:port/<path>`.
    Absolute,
    /// Relative to the document that names it (`../../packages/...`).
    Relative,
}

/// Where files are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileLayout {
    /// `<prefix><extra>/packages/aa/bb/<60hex>/<filename>`; `extra` is "" (Warehouse) or
    /// e.g. "/packages" (a mirror serving `/packages/packages/...`).
    Warehouse { extra: String },
    /// devpi: `<prefix>/+f/<sha256[0:3]>/<sha256[3:16]>/<filename>`.
    Devpi,
}

/// Conditional requests on project pages (HTML and JSON) and the JSON API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditional {
    None,
    /// A strong `ETag` (a digest of the body); `If-None-Match` → 304.
    ETag,
    /// `Last-Modified`, the real time the project last changed; `If-Modified-Since` → 304.
    LastModified,
    Both,
}

impl Conditional {
    fn etag(self) -> bool {
        matches!(self, Conditional::ETag | Conditional::Both)
    }
    fn last_modified(self) -> bool {
        matches!(self, Conditional::LastModified | Conditional::Both)
    }
}

/// What an operator writes in `master` for this upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterForm {
    /// The index root, `http://host:port<prefix>`.
    IndexRoot,
    /// The simple root itself, `http://host:port<prefix>/<simple>/`.
    SimpleRoot,
}

/// How the fake index presents itself. `Personality::warehouse()` is what
/// `FakeUpstream::start()` serves; the other constructors are upstreams met in the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Personality {
    /// Path prefix under which everything is served (simple root, JSON API, XML-RPC, files):
    /// "" or e.g. "/root/pypi", no trailing slash.
    pub prefix: String,
    /// The simple directory's name: "simple", or devpi's "+simple".
    pub simple_dir: String,
    /// Host name in absolute URLs and `master_url` (it must resolve to 127.0.0.1).
    pub host: String,
    /// XML-RPC at `<prefix>/pypi`; off: every POST is a 405 with `Allow: GET,HEAD` and no body.
    pub xmlrpc: bool,
    /// The JSON API `<prefix>/pypi/<name>/json`; off: 404.
    pub json_api: bool,
    pub root: RootIndex,
    pub pages: Pages,
    pub api_version: ApiVersion,
    pub serials: Serials,
    /// `X-PyPI-Last-Serial` headers.
    pub serial_headers: bool,
    pub file_urls: UrlStyle,
    pub file_layout: FileLayout,
    /// `blake2b_256` in the JSON API's `digests`.
    pub json_api_blake2b: bool,
    pub conditional: Conditional,
    pub master: MasterForm,
}

impl Default for Personality {
    fn default() -> Personality {
        Personality::warehouse()
    }
}

impl Personality {
    /// Warehouse as `FakeUpstream::start()` serves it: everything at the root, XML-RPC, the
    /// JSON API, negotiated pages of api-version 1.4 with numeric serials and serial headers,
    /// absolute file URLs at `/packages/...`, no conditional requests.
    pub fn warehouse() -> Personality {
        Personality {
            prefix: String::new(),
            simple_dir: "simple".into(),
            host: "127.0.0.1".into(),
            xmlrpc: true,
            json_api: true,
            root: RootIndex::Negotiated,
            pages: Pages::Negotiated,
            api_version: ApiVersion::V1_4,
            serials: Serials::Numbers,
            serial_headers: true,
            file_urls: UrlStyle::Absolute,
            file_layout: FileLayout::Warehouse {
                extra: String::new(),
            },
            json_api_blake2b: true,
            conditional: Conditional::None,
            master: MasterForm::IndexRoot,
        }
    }

    /// Another PyPI mirror behind nginx: no XML-RPC (405), an HTML-only root, no serial
    /// headers, string serials, api-version 1.1 pages, file URLs relative to the document
    /// under an extra prefix (`../../packages/packages/aa/bb/...`), `ETag` and
    /// `Last-Modified` like nginx. `master` is the index root.
    pub fn mirror_like() -> Personality {
        Personality {
            xmlrpc: false,
            root: RootIndex::HtmlOnly,
            api_version: ApiVersion::V1_1,
            serials: Serials::Strings,
            serial_headers: false,
            file_urls: UrlStyle::Relative,
            file_layout: FileLayout::Warehouse {
                extra: "/packages".into(),
            },
            conditional: Conditional::Both,
            ..Personality::warehouse()
        }
    }

    /// devpi: everything under `/root/pypi`, the simple root at `+simple`, files at relative
    /// `+f/` URLs, api-version 1.0 pages, no JSON API, no XML-RPC, no serials anywhere, no
    /// conditional requests. `master` is `…/root/pypi/+simple/`.
    pub fn devpi_like() -> Personality {
        Personality {
            prefix: "/root/pypi".into(),
            simple_dir: "+simple".into(),
            xmlrpc: false,
            json_api: false,
            api_version: ApiVersion::V1_0,
            serials: Serials::Absent,
            serial_headers: false,
            file_urls: UrlStyle::Relative,
            file_layout: FileLayout::Devpi,
            master: MasterForm::SimpleRoot,
            ..Personality::warehouse()
        }
    }

    /// Artifactory: everything under `/api/pypi/pypi-remote`, HTML-only root and pages
    /// (repository-version 1.0), no JSON API, no XML-RPC, no serials, absolute file URLs under
    /// the prefix, `Last-Modified` only. `master` is `…/api/pypi/pypi-remote/simple/`.
    pub fn artifactory_like() -> Personality {
        Personality {
            prefix: "/api/pypi/pypi-remote".into(),
            xmlrpc: false,
            json_api: false,
            root: RootIndex::HtmlOnly,
            pages: Pages::HtmlOnly,
            api_version: ApiVersion::V1_0,
            serials: Serials::Absent,
            serial_headers: false,
            conditional: Conditional::LastModified,
            master: MasterForm::SimpleRoot,
            ..Personality::warehouse()
        }
    }

    /// The same personality reached through another host name (which must resolve to
    /// 127.0.0.1, e.g. the machine's own name).
    pub fn with_host(self, host: &str) -> Personality {
        Personality {
            host: host.to_string(),
            ..self
        }
    }

    /// `<prefix>/<simple>/`.
    pub(super) fn simple_root(&self) -> String {
        format!("{}/{}/", self.prefix, self.simple_dir)
    }
}

// ---------------------------------------------------------------------------------------------
// Serving helpers

/// A serial as this personality writes it in a document, or None when it writes none.
pub(super) fn serial_value(st: &State, serial: u64) -> Option<Value> {
    match st.personality.serials {
        Serials::Numbers => Some(json!(serial)),
        Serials::Strings => Some(json!(serial.to_string())),
        Serials::Absent => None,
    }
}

/// The absolute path at which a file (or its `.metadata`) is served.
pub(super) fn file_path(st: &State, f: &FileRec) -> String {
    let p = &st.personality;
    match &p.file_layout {
        FileLayout::Warehouse { extra } => format!("{}{extra}/{}", p.prefix, f.path),
        FileLayout::Devpi => format!(
            "{}/+f/{}/{}/{}",
            p.prefix,
            &f.sha256[..3],
            &f.sha256[3..16],
            f.filename
        ),
    }
}

/// The file's URL as a document served at `doc_path` lists it.
pub(super) fn file_url(st: &State, f: &FileRec, doc_path: &str) -> String {
    link(st, &file_path(st, f), doc_path)
}

/// A link from the document at `doc_path` to the absolute path `target`, in this
/// personality's URL style (percent-encoded).
pub(super) fn link(st: &State, target: &str, doc_path: &str) -> String {
    match st.personality.file_urls {
        UrlStyle::Absolute => format!("{}{}", st.base_url, encode_path(target)),
        UrlStyle::Relative => encode_path(&relative(doc_path, target)),
    }
}

/// `target` relative to the directory of the document at `doc_path` (both absolute paths).
fn relative(doc_path: &str, target: &str) -> String {
    let dir: Vec<&str> = doc_path[..=doc_path.rfind('/').unwrap_or(0)]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let to: Vec<&str> = target.split('/').filter(|s| !s.is_empty()).collect();
    // Of a file's path only the directories can be in common; a directory's are all that.
    let dirs = if target.ends_with('/') {
        to.len()
    } else {
        to.len().saturating_sub(1)
    };
    let common = dir
        .iter()
        .zip(&to[..dirs])
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = "../".repeat(dir.len() - common);
    out.push_str(&to[common..].join("/"));
    if target.ends_with('/') && common < to.len() {
        out.push('/');
    }
    out
}

/// The relative path (`packages/aa/bb/<60hex>/<filename>`, optionally `.metadata`) of the
/// file served at `rest`, a decoded request path with the prefix already stripped.
pub(super) fn served_file(st: &State, rest: &str) -> Option<String> {
    match &st.personality.file_layout {
        FileLayout::Warehouse { extra } => {
            let rel = rest.strip_prefix(extra.as_str())?.strip_prefix('/')?;
            rel.starts_with("packages/").then(|| rel.to_string())
        }
        FileLayout::Devpi => {
            let parts: Vec<&str> = rest.strip_prefix("/+f/")?.split('/').collect();
            let [a, b, name] = parts[..] else {
                return None;
            };
            let digest_prefix = format!("{a}{b}");
            let (rec, suffix) = match st.files.get(name) {
                Some(rec) => (rec, ""),
                None => (st.files.get(name.strip_suffix(".metadata")?)?, ".metadata"),
            };
            (a.len() == 3 && b.len() == 13 && rec.sha256.starts_with(&digest_prefix))
                .then(|| format!("{}{suffix}", rec.path))
        }
    }
}

/// A POST when XML-RPC is off: 405, `Allow: GET,HEAD`, no body.
pub(super) fn xmlrpc_off() -> Response {
    let r = bytes_response(StatusCode::METHOD_NOT_ALLOWED, "text/html", Bytes::new());
    with_header(r, header::ALLOW, "GET,HEAD")
}

/// A project page or JSON API document about to be answered.
pub(super) struct Page {
    pub(super) content_type: &'static str,
    pub(super) body: Bytes,
    /// For `X-PyPI-Last-Serial`.
    pub(super) serial: u64,
    /// The project's normalized name, whose change time is `Last-Modified`.
    pub(super) key: String,
}

/// Answer a page: serial header, validators, and 304 when the request's validator matches
/// (`If-None-Match` wins over `If-Modified-Since`, as RFC 9110 says).
pub(super) fn answer_page(st: &mut State, req: &Req<'_>, page: Page) -> Response {
    let p = &st.personality;
    let (headers, cond) = (p.serial_headers, p.conditional);
    let etag = cond
        .etag()
        .then(|| format!("\"{}\"", &hex::encode(Sha256::digest(&page.body))[..32]));
    let modified = match st.projects.get_mut(&page.key) {
        Some(proj) if cond.last_modified() => {
            proj.modified_served = true;
            Some(proj.modified)
        }
        _ => None,
    };
    let not_modified = match (req.if_none_match, req.if_modified_since) {
        (Some(inm), _) => etag.as_deref().is_some_and(|tag| {
            inm.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
        }),
        (None, Some(ims)) => {
            modified.is_some_and(|m| parse_http_date(ims).is_some_and(|since| m <= since))
        }
        (None, None) => false,
    };
    let mut r = if not_modified {
        let mut r = bytes_response(StatusCode::NOT_MODIFIED, page.content_type, Bytes::new());
        r.headers_mut().remove(header::CONTENT_TYPE);
        r
    } else {
        bytes_response(StatusCode::OK, page.content_type, page.body)
    };
    if headers {
        r = with_header(
            r,
            header::HeaderName::from_static("x-pypi-last-serial"),
            &page.serial.to_string(),
        );
    }
    if let Some(tag) = etag {
        r = with_header(r, header::ETAG, &tag);
    }
    if let Some(m) = modified {
        r = with_header(r, header::LAST_MODIFIED, &http_date(m));
    }
    r
}

/// Seconds since the epoch, now.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = super::state::civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// IMF-fixdate back to seconds since the epoch; None for anything else.
fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, d, mon, y, hms, "GMT"] = parts[..] else {
        return None;
    };
    let m = MONTHS.iter().position(|x| *x == mon)? as i64 + 1;
    let (d, y): (i64, i64) = (d.parse().ok()?, y.parse().ok()?);
    let t: Vec<u64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t[..] else { return None };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        for t in [0, 784_111_777, 1_600_000_000, 1_709_251_199, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
        }
    }

    #[test]
    fn relative_links_climb_to_the_common_directory() {
        let file = "/packages/packages/aa/bb/cc/f.whl";
        assert_eq!(
            relative("/pypi/idna/json", file),
            "../../packages/packages/aa/bb/cc/f.whl"
        );
        assert_eq!(
            relative("/simple/idna/", file),
            "../../packages/packages/aa/bb/cc/f.whl"
        );
        assert_eq!(
            relative("/root/pypi/+simple/idna/", "/root/pypi/+f/abc/def/f.whl"),
            "../../+f/abc/def/f.whl"
        );
        assert_eq!(relative("/simple/", "/simple/idna/"), "idna/");
    }
}
