//! The PEP 691 JSON root index, `GET {master}/simple/` with
//! `Accept: application/vnd.pypi.simple.v1+json`: the change feed for upstreams without XML-RPC.
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#json-serialization>

use serde::Deserialize;

pub const ACCEPT_JSON: &str = "application/vnd.pypi.simple.v1+json";

#[derive(Debug, Deserialize)]
pub struct RootIndex {
    pub meta: Meta,
    pub projects: Vec<RootProject>,
}

#[derive(Debug, Deserialize)]
pub struct Meta {
    #[serde(rename = "api-version")]
    pub api_version: String,
    /// Private to PyPI (and mirrors following it): the newest journal serial.
    #[serde(rename = "_last-serial", default)]
    pub last_serial: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RootProject {
    pub name: String,
    #[serde(rename = "_last-serial", default)]
    pub last_serial: Option<u64>,
}
