//! The per-project JSON API, `GET {master}/pypi/<name>/json`, as Warehouse serves it.
//! <https://docs.pypi.org/api/json/>
//!
//! Only the fields a mirror needs are read; everything is optional-tolerant where Warehouse
//! has changed over time, and nothing here is trusted: [`crate::upstream::snapshot`] validates it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::simple::CoreMetadata;

#[derive(Debug, Deserialize)]
pub struct ProjectJson {
    pub info: Info,
    #[serde(default, deserialize_with = "super::simple::lenient_serial")]
    pub last_serial: Option<u64>,
    /// version → the release's files (an empty list for a release without files).
    #[serde(default)]
    pub releases: BTreeMap<String, Vec<FileJson>>,
}

#[derive(Debug, Deserialize)]
pub struct Info {
    pub name: String,
}

/// One distribution file of a release.
#[derive(Debug, Deserialize)]
pub struct FileJson {
    pub filename: String,
    pub url: String,
    /// Missing only from documents other than Warehouse's: learned while downloading.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub digests: Digests,
    #[serde(default)]
    pub requires_python: Option<String>,
    #[serde(default)]
    pub upload_time_iso_8601: Option<String>,
    #[serde(default)]
    pub upload_time: Option<String>,
    #[serde(default)]
    pub yanked: bool,
    #[serde(default)]
    pub yanked_reason: Option<String>,
    #[serde(default)]
    pub packagetype: Option<String>,
    #[serde(default)]
    pub python_version: Option<String>,
    /// PEP 658/714 metadata sidecar (`data_dist_info_metadata` in older answers).
    #[serde(rename = "core-metadata", default)]
    pub core_metadata: Option<CoreMetadata>,
    #[serde(default)]
    pub data_dist_info_metadata: Option<CoreMetadata>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Digests {
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub blake2b_256: Option<String>,
}
