//! Filters (`[filters]`): each alone and in combination, checked page by page (PEP 503 HTML,
//! PEP 691 JSON, root index, JSON API mirror) and file by file; the allowlist-only request
//! pattern; a filter change that adds and prunes; the mass-delete guard on a filter change;
//! `sync --dry-run`.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::mirror::{Mirror, TEST_SETTINGS};
use support::upstream::{FakeUpstream, FileOpts};

/// (version, file name, packagetype, python_version, size): the kinds of files a long-lived
/// project on the real index has.
type Dist = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    usize,
);

const DEMO: &[Dist] = &[
    ("1.0", "demo-1.0.tar.gz", None, None, 300),
    ("1.0", "demo-1.0-py2.py3-none-any.whl", None, None, 310),
    (
        "1.0",
        "demo-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
        None,
        Some("cp27"),
        320,
    ),
    (
        "1.0",
        "demo-1.0.win32-py2.7.exe",
        Some("bdist_wininst"),
        Some("2.7"),
        330,
    ),
    (
        "1.0",
        "demo-1.0-py2.7.egg",
        Some("bdist_egg"),
        Some("2.7"),
        340,
    ),
    (
        "1.0",
        "demo-1.0-py2.7-freebsd-12.1-RELEASE-amd64.egg",
        Some("bdist_egg"),
        Some("2.7"),
        350,
    ),
    ("1.5", "demo-1.5.tar.gz", None, None, 360),
    ("2.0", "demo-2.0.tar.gz", None, None, 370),
    ("2.0", "demo-2.0.zip", None, None, 380),
    (
        "2.0",
        "demo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        None,
        Some("cp312"),
        5000,
    ),
    (
        "2.0",
        "demo-2.0-cp312-cp312-musllinux_1_1_x86_64.whl",
        None,
        Some("cp312"),
        390,
    ),
    (
        "2.0",
        "demo-2.0-cp312-cp312-win_amd64.whl",
        None,
        Some("cp312"),
        400,
    ),
    (
        "2.0",
        "demo-2.0-cp312-cp312-macosx_11_0_arm64.whl",
        None,
        Some("cp312"),
        4000,
    ),
    (
        "2.0",
        "demo-2.0-cp36-cp36m-win32.whl",
        None,
        Some("cp36"),
        410,
    ),
    (
        "2.0",
        "demo-2.0-cp38-abi3-manylinux_2_17_aarch64.whl",
        None,
        Some("cp38"),
        420,
    ),
    ("2.1rc1", "demo-2.1rc1.tar.gz", None, None, 430),
    ("2.1rc1", "demo-2.1rc1-py3-none-any.whl", None, None, 440),
];

fn content(filename: &str, size: usize) -> Vec<u8> {
    let mut bytes = filename.as_bytes().to_vec();
    bytes.extend((0..size.saturating_sub(filename.len())).map(|i| (i * 31 % 251) as u8));
    bytes
}

fn publish(up: &FakeUpstream, project: &str, dists: &[Dist]) {
    for (version, filename, packagetype, python, size) in dists {
        up.add_file(
            project,
            version,
            filename,
            content(filename, *size),
            FileOpts {
                packagetype: packagetype.map(str::to_owned),
                python_version: python.map(str::to_owned),
                ..FileOpts::default()
            },
        );
    }
}

/// `demo` (release 1.5 yanked) and four small projects.
fn catalog() -> FakeUpstream {
    let up = FakeUpstream::start();
    publish(&up, "demo", DEMO);
    up.yank("demo", "1.5", Some("broken build"));
    for (name, file) in [
        ("Other_Pkg", "other_pkg-1.0.tar.gz"),
        ("internal-tool", "internal_tool-1.0.tar.gz"),
        ("internal-lib", "internal_lib-0.3-py3-none-any.whl"),
        ("zope.interface", "zope.interface-6.0.tar.gz"),
    ] {
        up.add_release(name, "1.0", &[(file, content(file, 200))]);
    }
    up
}

fn demo_files() -> Vec<&'static str> {
    DEMO.iter().map(|d| d.1).collect()
}

/// DEMO's files but those in `dropped`.
fn demo_without(dropped: &[&str]) -> Vec<&'static str> {
    for d in dropped {
        assert!(DEMO.iter().any(|x| x.1 == *d), "typo in test: {d}");
    }
    demo_files()
        .into_iter()
        .filter(|f| !dropped.contains(f))
        .collect()
}

fn demo_of(versions: &[&str]) -> Vec<&'static str> {
    DEMO.iter()
        .filter(|d| versions.contains(&d.0))
        .map(|d| d.1)
        .collect()
}

fn sorted<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    let set: BTreeSet<String> = items.iter().map(|s| s.as_ref().to_owned()).collect();
    set.into_iter().collect()
}

fn mirror_with(up: &FakeUpstream, filters: &str) -> Mirror {
    Mirror::with_settings(
        &up.url(),
        &format!("{TEST_SETTINGS}\n[filters]\n{filters}\n"),
    )
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Check one project page by page and file by file: the HTML page links exactly `want`
/// (each link followed and its hash checked), `index.v1_html` is the same page, the PEP 691
/// page lists the same files (and `versions`, when given), and of `candidates` exactly the
/// files in `want` are on disk.
#[track_caller]
fn assert_project(
    mirror: &Mirror,
    up: &FakeUpstream,
    project: &str,
    want: &[&str],
    candidates: &[&str],
    versions: Option<&[&str]>,
) {
    let links = mirror.links(project);
    let linked: Vec<String> = links.iter().map(|l| l.text.clone()).collect();
    assert_eq!(sorted(&linked), sorted(want), "{project}: HTML page");
    for link in &links {
        mirror.follow(project, link);
    }
    let dir = mirror.web().join("simple").join(project);
    assert_eq!(
        std::fs::read(dir.join("index.v1_html")).unwrap(),
        std::fs::read(dir.join("index.html")).unwrap()
    );
    let page = read_json(&dir.join("index.v1_json"));
    let files: Vec<String> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sorted(&files), sorted(want), "{project}: JSON page");
    if let Some(versions) = versions {
        let listed: Vec<String> = page["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            sorted(&listed),
            sorted(versions),
            "{project}: JSON versions"
        );
    }
    for file in candidates {
        let path = mirror.web().join(up.file_info(file).unwrap().path);
        assert_eq!(
            path.exists(),
            want.contains(file),
            "{project}: {file} on disk"
        );
    }
}

/// The root index (HTML and JSON) lists exactly these normalized names, and no other
/// project directory has pages.
#[track_caller]
fn assert_root(mirror: &Mirror, want: &[&str]) {
    let html: Vec<String> = mirror
        .root_links()
        .iter()
        .map(|l| l.href.trim_end_matches('/').to_owned())
        .collect();
    assert_eq!(sorted(&html), sorted(want), "root HTML");
    let json = read_json(&mirror.web().join("simple/index.v1_json"));
    let names: Vec<String> = json["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| support::mirror::normalize(p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(sorted(&names), sorted(want), "root JSON");
    let dirs: Vec<String> = std::fs::read_dir(mirror.web().join("simple"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(sorted(&dirs), sorted(want), "project page directories");
}

/// Each filter alone, on one fresh mirror each: exactly the expected files, everywhere.
#[test]
fn each_file_and_release_filter_alone() {
    let up = catalog();
    let all = demo_files();
    let sdists = [
        "demo-1.0.tar.gz",
        "demo-1.5.tar.gz",
        "demo-2.0.tar.gz",
        "demo-2.0.zip",
        "demo-2.1rc1.tar.gz",
    ];
    let every_version = ["1.0", "1.5", "2.0", "2.1rc1"];
    let requirements = "demo == 2.0  # pinned\n";
    let cases: Vec<(&str, Vec<&str>, Option<Vec<&str>>)> = vec![
        (
            r#"exclude_platforms = ["windows"]"#,
            demo_without(&[
                "demo-1.0.win32-py2.7.exe",
                "demo-2.0-cp312-cp312-win_amd64.whl",
                "demo-2.0-cp36-cp36m-win32.whl",
            ]),
            Some(every_version.to_vec()),
        ),
        (
            r#"exclude_platforms = ["macos"]"#,
            demo_without(&["demo-2.0-cp312-cp312-macosx_11_0_arm64.whl"]),
            None,
        ),
        (
            r#"exclude_platforms = ["linux"]"#,
            demo_without(&[
                "demo-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
                "demo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                "demo-2.0-cp312-cp312-musllinux_1_1_x86_64.whl",
                "demo-2.0-cp38-abi3-manylinux_2_17_aarch64.whl",
            ]),
            None,
        ),
        (
            r#"exclude_platforms = ["musllinux"]"#,
            demo_without(&["demo-2.0-cp312-cp312-musllinux_1_1_x86_64.whl"]),
            None,
        ),
        (
            r#"exclude_platforms = ["freebsd", "*_aarch64"]"#,
            demo_without(&[
                "demo-1.0-py2.7-freebsd-12.1-RELEASE-amd64.egg",
                "demo-2.0-cp38-abi3-manylinux_2_17_aarch64.whl",
            ]),
            None,
        ),
        (
            r#"exclude_platforms = ["win32"]"#,
            demo_without(&["demo-1.0.win32-py2.7.exe", "demo-2.0-cp36-cp36m-win32.whl"]),
            None,
        ),
        (
            r#"exclude_python = ["py2"]"#,
            demo_without(&[
                "demo-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
                "demo-1.0.win32-py2.7.exe",
                "demo-1.0-py2.7.egg",
                "demo-1.0-py2.7-freebsd-12.1-RELEASE-amd64.egg",
            ]),
            None,
        ),
        (
            // cp38-abi3 also serves 3.9+: only cp36's own wheel goes.
            r#"exclude_python = ["cp36", "cp38"]"#,
            demo_without(&["demo-2.0-cp36-cp36m-win32.whl"]),
            None,
        ),
        (
            r#"exclude_python = ["cp27"]"#,
            demo_without(&["demo-1.0-cp27-cp27mu-manylinux1_x86_64.whl"]),
            None,
        ),
        (
            r#"exclude_packagetypes = ["sdist"]"#,
            demo_without(&sdists),
            // A file filter keeps the release: 1.5 has no file left but is still listed.
            Some(every_version.to_vec()),
        ),
        (
            r#"exclude_packagetypes = ["egg", "bdist_wininst"]"#,
            demo_without(&[
                "demo-1.0.win32-py2.7.exe",
                "demo-1.0-py2.7.egg",
                "demo-1.0-py2.7-freebsd-12.1-RELEASE-amd64.egg",
            ]),
            None,
        ),
        (
            r#"exclude_packagetypes = ["wheel"]"#,
            demo_of(&every_version)
                .into_iter()
                .filter(|f| !f.ends_with(".whl"))
                .collect(),
            None,
        ),
        (
            r#"exclude_filenames = ["\\.zip$", "musllinux"]"#,
            demo_without(&[
                "demo-2.0.zip",
                "demo-2.0-cp312-cp312-musllinux_1_1_x86_64.whl",
            ]),
            None,
        ),
        (
            r#"max_file_size = "1 KiB""#,
            demo_without(&[
                "demo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                "demo-2.0-cp312-cp312-macosx_11_0_arm64.whl",
            ]),
            None,
        ),
        (
            "max_file_size = 1024\nsize_allowlist = [\"Demo\"]",
            all.clone(),
            None,
        ),
        (
            r#"yanked = "drop""#,
            demo_without(&["demo-1.5.tar.gz"]),
            Some(vec!["1.0", "2.0", "2.1rc1"]),
        ),
        (
            "exclude_prereleases = true",
            demo_of(&["1.0", "1.5", "2.0"]),
            Some(vec!["1.0", "1.5", "2.0"]),
        ),
        (
            r#"exclude_prereleases = ["other-pkg"]"#,
            all.clone(),
            Some(every_version.to_vec()),
        ),
        (
            "latest_releases = 1",
            demo_of(&["2.1rc1"]),
            Some(vec!["2.1rc1"]),
        ),
        (
            "latest_releases = 2\nexclude_prereleases = [\"demo\"]",
            demo_of(&["1.5", "2.0"]),
            Some(vec!["1.5", "2.0"]),
        ),
        (
            r#"exclude_versions = ["^1\\."]"#,
            demo_of(&["2.0", "2.1rc1"]),
            Some(vec!["2.0", "2.1rc1"]),
        ),
        (
            // A final release matches, so pre-releases do not (as pip chooses).
            r#"allowlist = ["demo>=2.0"]"#,
            demo_of(&["2.0"]),
            Some(vec!["2.0"]),
        ),
        (
            r#"allowlist = ["demo==1.*"]"#,
            demo_of(&["1.0", "1.5"]),
            Some(vec!["1.0", "1.5"]),
        ),
        (
            r#"allowlist = ["demo>=2.1rc1"]"#,
            demo_of(&["2.1rc1"]),
            Some(vec!["2.1rc1"]),
        ),
        (
            r#"blocklist = ["demo<2"]"#,
            demo_of(&["2.0", "2.1rc1"]),
            Some(vec!["2.0", "2.1rc1"]),
        ),
        (
            r#"requirements = ["requirements.txt"]"#,
            demo_of(&["2.0"]),
            Some(vec!["2.0"]),
        ),
    ];
    for (filters, want, versions) in cases {
        let mirror = mirror_with(&up, filters);
        std::fs::write(mirror.sandbox.path().join("requirements.txt"), requirements).unwrap();
        let run = mirror.sync();
        assert_eq!(run.code, 0, "{filters}:\n{}", run.stderr);
        eprintln!("checking {filters}");
        assert_project(&mirror, &up, "demo", &want, &all, versions.as_deref());
        mirror.assert_consistent();
    }
}

#[test]
fn project_filters_alone_and_with_each_other() {
    let up = catalog();
    let everything = [
        "demo",
        "other-pkg",
        "internal-tool",
        "internal-lib",
        "zope-interface",
    ];
    let cases: &[(&str, &[&str])] = &[
        (
            r#"allowlist = ["Demo", "Zope.Interface"]"#,
            &["demo", "zope-interface"],
        ),
        (
            r#"allowlist_regex = ["^internal-"]"#,
            &["internal-tool", "internal-lib"],
        ),
        (
            r#"blocklist = ["other_pkg"]"#,
            &["demo", "internal-tool", "internal-lib", "zope-interface"],
        ),
        (
            r#"blocklist_regex = ["^internal-"]"#,
            &["demo", "other-pkg", "zope-interface"],
        ),
        (
            "allowlist = [\"demo\", \"other-pkg\"]\nallowlist_regex = [\"-lib$\"]\nblocklist = [\"other-pkg\"]",
            &["demo", "internal-lib"],
        ),
        // demo's files take ~13 KB: over the limit, it is left out entirely.
        (
            r#"max_project_size = "10 kB""#,
            &[
                "other-pkg",
                "internal-tool",
                "internal-lib",
                "zope-interface",
            ],
        ),
        (
            "max_project_size = \"10 kB\"\nsize_allowlist = [\"demo\"]",
            &everything,
        ),
    ];
    for (filters, want) in cases {
        let mirror = mirror_with(&up, filters);
        let run = mirror.sync();
        assert_eq!(run.code, 0, "{filters}:\n{}", run.stderr);
        eprintln!("checking {filters}");
        assert_root(&mirror, want);
        if want.contains(&"demo") {
            assert_project(&mirror, &up, "demo", &demo_files(), &demo_files(), None);
        } else {
            for f in demo_files() {
                assert!(!mirror.web().join(up.file_info(f).unwrap().path).exists());
            }
        }
        mirror.assert_consistent();
    }
}

#[test]
fn filters_in_combination_with_the_json_api_mirror() {
    let up = catalog();
    let mirror = mirror_with(
        &up,
        r#"allowlist = ["demo", "zope.interface"]
exclude_platforms = ["windows", "macos"]
exclude_python = ["py2"]
exclude_prereleases = true
yanked = "drop"
exclude_packagetypes = ["egg"]"#,
    );
    // The JSON API mirror is a [mirror] key: put it before [filters].
    let config = std::fs::read_to_string(&mirror.config).unwrap();
    std::fs::write(
        &mirror.config,
        config.replacen("[filters]", "json = true\n[filters]", 1),
    )
    .unwrap();
    mirror.sync().assert_ok();
    let want = [
        "demo-1.0.tar.gz",
        "demo-1.0-py2.py3-none-any.whl",
        "demo-2.0.tar.gz",
        "demo-2.0.zip",
        "demo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "demo-2.0-cp312-cp312-musllinux_1_1_x86_64.whl",
        "demo-2.0-cp38-abi3-manylinux_2_17_aarch64.whl",
    ];
    assert_project(
        &mirror,
        &up,
        "demo",
        &want,
        &demo_files(),
        Some(&["1.0", "2.0"]),
    );
    assert_root(&mirror, &["demo", "zope-interface"]);
    mirror.assert_consistent();
    for doc in ["pypi/demo/json", "json/demo"] {
        let api = read_json(&mirror.web().join(doc));
        let releases = api["releases"].as_object().unwrap();
        let keys: Vec<&String> = releases.keys().collect();
        assert_eq!(keys, ["1.0", "2.0"], "{doc}: releases");
        let files: Vec<String> = releases
            .values()
            .flat_map(|r| r.as_array().unwrap())
            .map(|f| f["filename"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(sorted(&files), sorted(&want), "{doc}: files");
    }
    assert!(!mirror.web().join("pypi/other-pkg").exists());
}
