//! The PEP 691 JSON simple API as upstream serves it, read-side.
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#json-serialization>
//!
//! The root index (`/simple/`) is the change feed for upstreams without XML-RPC; a project
//! page (`/simple/<name>/`) adds what the JSON API lacks: PEP 740 provenance, PEP 792 project
//! status, and any digests besides sha256. Nothing here is trusted; `metadata.rs` checks it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

/// PEP 691 JSON preferred, PEP 503 HTML accepted (an HTML-only index answers with it).
pub const ACCEPT_ANY: &str = "application/vnd.pypi.simple.v1+json, \
                              application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

#[derive(Debug, Deserialize)]
pub struct RootIndex {
    #[serde(default)]
    pub meta: Meta,
    pub projects: Vec<RootProject>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    /// "1.0" to "1.4" are read alike: what a version adds is optional below.
    #[serde(rename = "api-version", default)]
    pub api_version: String,
    /// Private to PyPI (and mirrors following it): the newest journal serial.
    #[serde(rename = "_last-serial", default, deserialize_with = "lenient_serial")]
    pub last_serial: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RootProject {
    pub name: String,
    #[serde(rename = "_last-serial", default, deserialize_with = "lenient_serial")]
    pub last_serial: Option<u64>,
}

/// A serial as upstreams write it: a number, or (some mirrors, api-version 1.1) a
/// numeric string. Anything else (negative, fractional, text) is no serial at all rather than a
/// reason to refuse the whole document: the change is then detected without it.
pub fn lenient_serial<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// `GET /simple/<name>/` (JSON, or PEP 503 HTML read by [`super::html`]).
#[derive(Debug, Deserialize)]
pub struct ProjectPage {
    #[serde(default)]
    pub meta: Meta,
    pub name: String,
    #[serde(default, deserialize_with = "capped_files")]
    pub files: Vec<PageFile>,
    /// PEP 700 (api-version 1.1).
    #[serde(default, deserialize_with = "capped_versions")]
    pub versions: Option<Vec<String>>,
    /// PEP 792 (api-version 1.4).
    #[serde(rename = "project-status", default)]
    pub project_status: Option<ProjectStatus>,
}

#[derive(Debug, Deserialize)]
pub struct PageFile {
    pub filename: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    #[serde(rename = "requires-python", default)]
    pub requires_python: Option<String>,
    /// `false`, `true`, or the reason.
    #[serde(default)]
    pub yanked: Option<serde_json::Value>,
    /// PEP 700 (api-version 1.1); learned while downloading when missing.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(rename = "upload-time", default)]
    pub upload_time: Option<String>,
    #[serde(rename = "core-metadata", default)]
    pub core_metadata: Option<CoreMetadata>,
    #[serde(rename = "data-dist-info-metadata", default)]
    pub data_dist_info_metadata: Option<CoreMetadata>,
    /// PEP 740 (api-version 1.3): URL of the file's provenance, or null.
    #[serde(default)]
    pub provenance: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectStatus {
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// PEP 658/714 `core-metadata`: `false`, `true` (no hash given) or `{"sha256": …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CoreMetadata {
    Flag(bool),
    Hashes(BTreeMap<String, String>),
}

impl CoreMetadata {
    /// The sha256 to verify the sidecar against; without one it cannot be mirrored.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            CoreMetadata::Hashes(h) => h.get("sha256").map(String::as_str),
            CoreMetadata::Flag(_) => None,
        }
    }
}

/// Caps on one project's metadata, applied while it is parsed (0: no cap): a document of
/// 18 million releases or a million files is refused at the entry past the cap, before the
/// rest is read or held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// `max_project_releases`: releases of the JSON API, `versions` of a PEP 691 page.
    pub releases: usize,
    /// `max_project_files`: files of all releases together, or of a page.
    pub files: usize,
}

/// The cap a document passed while it was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// "releases" or "files".
    pub what: &'static str,
    /// The key that raises it.
    pub key: &'static str,
    pub limit: usize,
}

/// Why a capped parse failed.
#[derive(Debug)]
pub enum CappedError {
    Exceeded(Exceeded),
    Json(serde_json::Error),
}

/// The counts of the parse in progress on this thread. serde's derive cannot hand state down
/// to a field (a `DeserializeSeed` would mean writing every struct's field handling by hand),
/// so the capped fields read it here; a parse is synchronous, so it is one thread's.
#[derive(Debug, Clone, Copy, Default)]
struct Counting {
    caps: Caps,
    releases: usize,
    files: usize,
    exceeded: Option<Exceeded>,
}

thread_local! {
    static COUNTING: Cell<Counting> = Cell::new(Counting::default());
}

/// Parse `body` as `T`, with `caps` applied to its capped fields (`releases` of the JSON API,
/// `files` and `versions` of a PEP 691 page) while they stream.
pub fn parse_capped<T: DeserializeOwned>(body: &[u8], caps: Caps) -> Result<T, CappedError> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            COUNTING.set(Counting::default());
        }
    }
    let _reset = Reset;
    COUNTING.set(Counting {
        caps,
        ..Counting::default()
    });
    let parsed = serde_json::from_slice(body);
    match (parsed, COUNTING.get().exceeded) {
        (_, Some(exceeded)) => Err(CappedError::Exceeded(exceeded)),
        (Ok(t), None) => Ok(t),
        (Err(e), None) => Err(CappedError::Json(e)),
    }
}

#[derive(Clone, Copy)]
pub(super) enum Counted {
    Release,
    File,
}

/// Count one more release or file of the parse in progress; past its cap, the error that
/// ends the parse there.
pub(super) fn count<E: serde::de::Error>(what: Counted) -> Result<(), E> {
    let mut c = COUNTING.get();
    let (n, limit, name, key) = match what {
        Counted::Release => (
            &mut c.releases,
            c.caps.releases,
            "releases",
            "max_project_releases",
        ),
        Counted::File => (&mut c.files, c.caps.files, "files", "max_project_files"),
    };
    *n += 1;
    let over = limit > 0 && *n > limit;
    if over {
        c.exceeded = Some(Exceeded {
            what: name,
            key,
            limit,
        });
    }
    COUNTING.set(c);
    match over {
        true => Err(E::custom(format_args!("more than {limit} {name}"))),
        false => Ok(()),
    }
}

/// A JSON array read element by element, each counted as `what` before the next is read.
pub(super) struct CountedSeq<T> {
    what: Counted,
    _t: PhantomData<T>,
}

impl<T> CountedSeq<T> {
    pub(super) fn new(what: Counted) -> Self {
        CountedSeq {
            what,
            _t: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for CountedSeq<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            count(self.what)?;
            out.push(item);
        }
        Ok(out)
    }
}

/// A release's files: counted against `max_project_files` as they are read.
pub(super) struct CountedFiles<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CountedFiles<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(CountedSeq::new(Counted::File))
            .map(CountedFiles)
    }
}

fn capped_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PageFile>, D::Error> {
    d.deserialize_seq(CountedSeq::new(Counted::File))
}

fn capped_versions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Versions;
    impl<'de> Visitor<'de> for Versions {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of versions, or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(CountedSeq::new(Counted::Release))
                .map(Some)
        }
    }
    d.deserialize_option(Versions)
}

/// The JSON API's `releases`, version → files, each release and file counted as it is read.
pub(super) fn capped_releases<'de, D, T>(d: D) -> Result<BTreeMap<String, Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Releases<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Releases<T> {
        type Value = BTreeMap<String, Vec<T>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of versions to files")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(version) = map.next_key::<String>()? {
                count(Counted::Release)?;
                let CountedFiles(files) = map.next_value()?;
                out.insert(version, files);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Releases(PhantomData))
}

impl fmt::Display for CappedError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CappedError::Exceeded(e) => write!(f, "more than {} {}", e.limit, e.what),
            CappedError::Json(e) => e.fmt(f),
        }
    }
}
