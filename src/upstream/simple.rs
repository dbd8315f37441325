//! The PEP 691 JSON simple API as upstream serves it, read-side.
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#json-serialization>
//!
//! The root index (`/simple/`) is the change feed for upstreams without XML-RPC; a project
//! page (`/simple/<name>/`) adds what the JSON API lacks: PEP 740 provenance, PEP 792 project
//! status, and any digests besides sha256. Nothing here is trusted; `metadata.rs` checks it.

use std::collections::BTreeMap;

use serde::Deserialize;

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
    #[serde(default)]
    pub files: Vec<PageFile>,
    /// PEP 700 (api-version 1.1).
    #[serde(default)]
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
