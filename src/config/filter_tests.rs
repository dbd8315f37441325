//! What each `[filters]` table keeps: the selection of `crate::filter`, driven by the
//! configuration text an operator writes.

use crate::filter::*;
use crate::types::{FileRecord, ProjectName};

fn filters(body: &str) -> Filters {
    let table: toml::Table = format!("[filters]\n{body}").parse().unwrap();
    super::filters::parse(table.get("filters"), std::path::Path::new("/")).unwrap()
}

fn file(version: &str, filename: &str, size: u64, yanked: bool) -> FileRecord {
    let hex = format!("{:064x}", filename.len() as u64 * 7919 + size);
    FileRecord {
        yanked,
        ..FileRecord::for_test(version, filename, &hex, size)
    }
}

/// (kept versions, kept file names) or the exclusion reason.
fn run(
    f: &Filters,
    versions: &[&str],
    files: &[FileRecord],
) -> Result<(Vec<String>, Vec<String>), String> {
    let versions: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
    let refs: Vec<&FileRecord> = files.iter().collect();
    let s = f.select(&ProjectName::new("demo").unwrap(), &versions, &refs);
    if let Some(why) = s.excluded {
        return Err(why);
    }
    Ok((
        versions
            .iter()
            .zip(&s.versions)
            .filter(|(_, k)| **k)
            .map(|(v, _)| v.clone())
            .collect(),
        files
            .iter()
            .zip(&s.files)
            .filter(|(_, k)| **k)
            .map(|(f, _)| f.filename.to_string())
            .collect(),
    ))
}

fn sample() -> Vec<FileRecord> {
    vec![
        file("0.9", "demo-0.9.tar.gz", 10, false),
        file("1.0", "demo-1.0.tar.gz", 10, true),
        file("1.0", "demo-1.0-py3-none-any.whl", 10, true),
        file("1.1", "demo-1.1.tar.gz", 10, true),
        file("1.1", "demo-1.1-py3-none-any.whl", 10, false),
        file("2.0b1", "demo-2.0b1.tar.gz", 10, false),
        file("legacy-x", "demo-legacy-x.tar.gz", 10, false),
    ]
}

const VERSIONS: &[&str] = &["0.9", "1.0", "1.1", "2.0b1", "legacy-x", "3.0"];

#[test]
fn no_filters_keep_everything() {
    let (v, f) = run(&Filters::default(), VERSIONS, &sample()).unwrap();
    assert_eq!(v.len(), VERSIONS.len());
    assert_eq!(f.len(), sample().len());
}

#[test]
fn yanked_drop_removes_files_and_fully_yanked_releases() {
    let (v, f) = run(&filters("yanked = \"drop\""), VERSIONS, &sample()).unwrap();
    // 1.0 is entirely yanked; 1.1 keeps its one good file; 3.0 has no file at all.
    assert_eq!(v, ["0.9", "1.1", "2.0b1", "legacy-x", "3.0"]);
    assert!(!f.iter().any(|f| f.starts_with("demo-1.0")));
    assert_eq!(f.iter().filter(|f| f.starts_with("demo-1.1")).count(), 1);
}

#[test]
fn latest_counts_releases_with_files_and_sorts_invalid_versions_lowest() {
    let (v, _) = run(&filters("latest_releases = 2"), VERSIONS, &sample()).unwrap();
    assert_eq!(
        v,
        ["1.1", "2.0b1"],
        "3.0 has no file, legacy-x sorts lowest"
    );
    let (v, _) = run(&filters("latest_releases = 9"), VERSIONS, &sample()).unwrap();
    assert_eq!(v, ["0.9", "1.0", "1.1", "2.0b1", "legacy-x"]);
    let f = filters("latest_releases = 1\nexclude_packagetypes = [\"sdist\"]");
    let (v, files) = run(&f, VERSIONS, &sample()).unwrap();
    assert_eq!(v, ["1.1"], "2.0b1 has no wheel left");
    assert_eq!(files, ["demo-1.1-py3-none-any.whl"]);
}

#[test]
fn allow_entries_for_one_project_add_up_and_blocks_take_away() {
    let f = filters("allowlist = [\"demo<1\", \"demo==1.1\"]");
    assert_eq!(run(&f, VERSIONS, &sample()).unwrap().0, ["0.9", "1.1"]);
    let f = filters("allowlist = [\"demo<1\", \"demo\"]");
    assert_eq!(
        run(&f, VERSIONS, &sample()).unwrap().0.len(),
        VERSIONS.len()
    );
    let f = filters("blocklist = [\"demo>=1,<2\"]");
    assert_eq!(
        run(&f, VERSIONS, &sample()).unwrap().0,
        ["0.9", "2.0b1", "legacy-x", "3.0"],
        "2.0b1 is a pre-release of 2.0, which <2 leaves alone"
    );
    let f = filters("allowlist = [\"other\"]");
    assert!(
        run(&f, VERSIONS, &sample())
            .unwrap_err()
            .contains("not in the allowlist")
    );
}

#[test]
fn project_size_counts_what_is_kept() {
    let f = filters("max_project_size = 60");
    assert!(
        run(&f, VERSIONS, &sample())
            .unwrap_err()
            .contains("max_project_size")
    );
    let f = filters("max_project_size = 60\nexclude_prereleases = true\nyanked = \"drop\"");
    assert!(run(&f, VERSIONS, &sample()).is_ok());
    let f = filters("max_project_size = 60\nsize_allowlist = [\"demo\"]");
    assert!(run(&f, VERSIONS, &sample()).is_ok());
}

#[test]
fn listed_projects_only_for_an_allowlist_of_names() {
    let f = filters("allowlist = [\"b\", \"a>=1\", \"c\"]\nblocklist = [\"c\"]");
    let names: Vec<String> = f
        .listed_projects()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        filters("allowlist = [\"a\"]\nallowlist_regex = [\"^b\"]")
            .listed_projects()
            .is_none()
    );
    assert!(filters("blocklist = [\"a\"]").listed_projects().is_none());
}
