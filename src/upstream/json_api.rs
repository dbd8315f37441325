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
    /// version → the release's files (an empty list for a release without files); read
    /// under [`super::simple::parse_capped`], each release and file is counted as it streams.
    #[serde(default, deserialize_with = "super::simple::capped_releases")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::simple::{CappedError, Caps, Exceeded, ProjectPage, parse_capped};

    /// `{"info": …, "releases": {"0": [], "1": [], …}}` with `releases` empty releases, then
    /// `tail`.
    fn empty_releases(releases: usize, tail: &str) -> Vec<u8> {
        let mut doc = br#"{"info": {"name": "demo"}, "releases": {"#.to_vec();
        for i in 0..releases {
            if i > 0 {
                doc.push(b',');
            }
            doc.extend_from_slice(format!(r#""{i}": []"#).as_bytes());
        }
        doc.extend_from_slice(tail.as_bytes());
        doc
    }

    fn file(name: &str) -> String {
        format!(r#"{{"filename": "{name}", "url": "https://f.example/{name}"}}"#)
    }

    #[test]
    fn the_release_cap_stops_the_parse_at_the_entry_past_it() {
        // 300,000 releases, the document broken at its very end: a parse that read it all
        // would fail on the syntax; the cap answers first, having read 1,001 entries.
        let doc = empty_releases(300_000, "<broken");
        let caps = Caps {
            releases: 1000,
            files: 0,
        };
        let e = parse_capped::<ProjectJson>(&doc, caps).unwrap_err();
        assert!(
            matches!(
                e,
                CappedError::Exceeded(Exceeded {
                    what: "releases",
                    key: "max_project_releases",
                    limit: 1000
                })
            ),
            "{e}"
        );
        // Without the cap the whole document is read, and refused for its syntax.
        let e = parse_capped::<ProjectJson>(&doc, Caps::default()).unwrap_err();
        assert!(matches!(e, CappedError::Json(_)), "{e}");
    }

    #[test]
    fn files_are_counted_across_releases() {
        let doc = format!(
            r#"{{"info": {{"name": "demo"}}, "last_serial": 7, "urls": [{a}],
                "releases": {{"1.0": [{a}, {b}], "2.0": [], "3.0": [{c}]}}}}"#,
            a = file("a.tar.gz"),
            b = file("b.tar.gz"),
            c = file("c.tar.gz")
        );
        let caps = |files| Caps { releases: 3, files };
        let json: ProjectJson = parse_capped(doc.as_bytes(), caps(3)).unwrap();
        assert_eq!(json.last_serial, Some(7));
        assert_eq!(json.releases.len(), 3);
        assert_eq!(json.releases["1.0"].len(), 2);
        let e = parse_capped::<ProjectJson>(doc.as_bytes(), caps(2)).unwrap_err();
        assert!(
            matches!(
                e,
                CappedError::Exceeded(Exceeded {
                    what: "files",
                    limit: 2,
                    ..
                })
            ),
            "{e}"
        );
        let e = parse_capped::<ProjectJson>(
            doc.as_bytes(),
            Caps {
                releases: 2,
                files: 0,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CappedError::Exceeded(Exceeded {
                    what: "releases",
                    ..
                })
            ),
            "{e}"
        );
        // The counts are the parse's own: the next one starts from zero, and a plain
        // serde parse has no caps.
        let json: ProjectJson = parse_capped(doc.as_bytes(), caps(3)).unwrap();
        assert_eq!(json.releases.len(), 3);
        let json: ProjectJson = serde_json::from_str(&doc).unwrap();
        assert_eq!(json.releases.len(), 3);
    }

    #[test]
    fn a_page_s_files_and_versions_are_capped_while_parsed() {
        let mut files: Vec<String> = (0..200_000).map(|i| file(&format!("f{i}.zip"))).collect();
        files.push("<broken".into());
        let doc = format!(r#"{{"name": "demo", "files": [{}"#, files.join(","));
        let caps = Caps {
            releases: 0,
            files: 100,
        };
        let e = parse_capped::<ProjectPage>(doc.as_bytes(), caps).unwrap_err();
        assert!(
            matches!(
                e,
                CappedError::Exceeded(Exceeded {
                    what: "files",
                    key: "max_project_files",
                    limit: 100
                })
            ),
            "{e}"
        );
        let doc = r#"{"name": "demo", "files": [], "versions": ["1", "2", "3"]}"#;
        let caps = |releases| Caps { releases, files: 1 };
        let page: ProjectPage = parse_capped(doc.as_bytes(), caps(3)).unwrap();
        assert_eq!(page.versions.unwrap().len(), 3);
        let e = parse_capped::<ProjectPage>(doc.as_bytes(), caps(2)).unwrap_err();
        assert!(
            matches!(
                e,
                CappedError::Exceeded(Exceeded {
                    what: "releases",
                    ..
                })
            ),
            "{e}"
        );
        let doc = r#"{"name": "demo", "versions": null}"#;
        let page: ProjectPage = parse_capped(doc.as_bytes(), caps(2)).unwrap();
        assert!(page.versions.is_none() && page.files.is_empty());
    }
}
