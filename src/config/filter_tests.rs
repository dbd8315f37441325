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

/// `sample()` with upload times: 1.1's wheel and 2.0b1 uploaded at `now - 100`, the rest
/// long ago (0.9's sdist without any upload time: old).
fn uploaded(now: i64) -> Vec<FileRecord> {
    let young = crate::filter::cooldown::show_time(now - 100);
    sample()
        .into_iter()
        .map(|mut f| {
            f.upload_time = match (f.version.as_str(), f.filename.as_str()) {
                ("0.9", _) => None,
                ("1.1", "demo-1.1-py3-none-any.whl") | ("2.0b1", _) => Some(young.clone()),
                _ => Some("2020-01-01T00:00:00.000000Z".into()),
            };
            f
        })
        .collect()
}

#[test]
fn the_cooldown_holds_back_young_files_and_releases_made_only_of_them() {
    let now = 1_800_000_000;
    let files = uploaded(now);
    let refs: Vec<&FileRecord> = files.iter().collect();
    let versions: Vec<String> = VERSIONS.iter().map(|v| v.to_string()).collect();
    let name = ProjectName::new("demo").unwrap();

    let f = filters("cooldown = \"3m\"").at(now);
    let s = f.select(&name, &versions, &refs);
    let kept: Vec<&str> = files
        .iter()
        .zip(&s.files)
        .filter(|(_, k)| **k)
        .map(|(f, _)| f.filename.as_str())
        .collect();
    assert_eq!(
        kept,
        [
            "demo-0.9.tar.gz",
            "demo-1.0.tar.gz",
            "demo-1.0-py3-none-any.whl",
            "demo-1.1.tar.gz",
            "demo-legacy-x.tar.gz"
        ]
    );
    let held: Vec<Option<i64>> = s.held_back.clone();
    assert_eq!(
        held,
        [None, None, None, None, Some(now + 80), Some(now + 80), None]
    );
    // 2.0b1 has only young files: not offered yet; 1.1 still has its sdist; 3.0 has none.
    let offered: Vec<&str> = VERSIONS
        .iter()
        .zip(&s.versions)
        .filter(|(_, k)| **k)
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(offered, ["0.9", "1.0", "1.1", "legacy-x", "3.0"]);

    // Old enough a minute and a half later; a shorter cooldown, or an exempt project, never
    // held them.
    for f in [
        filters("cooldown = \"3m\"").at(now + 90),
        filters("cooldown = \"90s\"").at(now),
        filters("cooldown = \"7d\"\ncooldown_exempt = [\"Demo\"]").at(now),
        filters("cooldown = 0").at(now),
    ] {
        let s = f.select(&name, &versions, &refs);
        assert!(s.files.iter().all(|k| *k), "{:?}", f.spec().content);
        assert!(s.held_back.iter().all(Option::is_none));
    }
}

#[test]
fn cooldown_mistakes_name_the_key() {
    for body in [
        "cooldown = \"7\"",
        "cooldown = \"1w\"",
        "cooldown = 7",
        "cooldown = true",
        "cooldown_exempt = [\"-x\"]",
        "cooldown_exempt = \"certifi\"",
    ] {
        let table: toml::Table = format!("[filters]\n{body}").parse().unwrap();
        let e = super::filters::parse(table.get("filters"), std::path::Path::new("/")).unwrap_err();
        let key = body.split(' ').next().unwrap();
        assert!(e.starts_with(&format!("[filters] {key}")), "{body}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn lock_files_pin_versions_and_their_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let sha = "ab".repeat(32);
    std::fs::write(
        dir.path().join("uv.lock"),
        format!(
            "version = 1\n[[package]]\nname = \"Demo\"\nversion = \"1.1\"\nsource = {{ registry = \"https://index.example/simple\" }}\nsdist = {{ url = \"https://files.example/demo-1.1.tar.gz\", hash = \"sha256:{sha}\", size = 10 }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pylock.toml"),
        "lock-version = \"1.0\"\ncreated-by = \"x\"\n[[packages]]\nname = \"demo\"\nversion = \"0.9\"\n",
    )
    .unwrap();
    let table: toml::Table = "[filters]\nlockfiles = [\"uv.lock\", \"pylock.toml\"]"
        .parse()
        .unwrap();
    let f = super::filters::parse(table.get("filters"), dir.path()).unwrap();
    assert_eq!(run(&f, VERSIONS, &sample()).unwrap().0, ["0.9", "1.1"]);
    assert_eq!(
        f.spec().locked["demo"]["demo-1.1.tar.gz"],
        sha,
        "{:?}",
        f.spec().locked
    );
    std::fs::write(
        dir.path().join("other.lock"),
        std::fs::read_to_string(dir.path().join("uv.lock"))
            .unwrap()
            .replace(&sha, &"cd".repeat(32)),
    )
    .unwrap();
    for (body, needle) in [
        ("lockfiles = [\"missing.lock\"]", "cannot read lock file"),
        (
            "lockfiles = [\"uv.lock\", \"other.lock\"]",
            "other.lock names the sha256 cdcd",
        ),
        (
            "lockfiles = [\"uv.lock\", \"bad.toml\"]",
            "bad.toml is not a lock file",
        ),
    ] {
        std::fs::write(dir.path().join("bad.toml"), "[[package]\n").unwrap();
        let table: toml::Table = format!("[filters]\n{body}").parse().unwrap();
        let e = super::filters::parse(table.get("filters"), dir.path()).unwrap_err();
        assert!(
            e.starts_with("[filters] lockfiles") && e.contains(needle),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
