//! Filters (`[filters]`): each alone and in combination, checked page by page (PEP 503 HTML,
//! PEP 691 JSON, root index, JSON API mirror) and file by file; the allowlist-only request
//! pattern; a filter change that adds and prunes; the mass-delete guard on a filter change;
//! `sync --dry-run`.

use std::collections::BTreeSet;

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts};
use serde_json::Value;

use crate::PYMIRROR;

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

pub(crate) fn content(filename: &str, size: usize) -> Vec<u8> {
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

pub(crate) fn sorted<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    let set: BTreeSet<String> = items.iter().map(|s| s.as_ref().to_owned()).collect();
    set.into_iter().collect()
}

fn mirror_with(up: &FakeUpstream, filters: &str) -> Mirror {
    Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}\n[filters]\n{filters}\n"),
    )
}

pub(crate) fn read_json(path: &std::path::Path) -> Value {
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
pub(crate) fn assert_project(
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
pub(crate) fn assert_root(mirror: &Mirror, want: &[&str]) {
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
        .map(|p| pymirror_testkit::mirror::normalize(p["name"].as_str().unwrap()))
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
    // (filters, the files kept, the versions the JSON page lists when checked)
    type Case<'a> = (&'a str, Vec<&'a str>, Option<Vec<&'a str>>);
    let cases: Vec<Case> = vec![
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

/// The project a request is about: `/pypi/<name>/json`, `/simple/<name>/`, or a file
/// (named `<name>-<version>…`). `None` for the root index and XML-RPC.
fn project_of(path: &str) -> Option<String> {
    let path = pymirror_testkit::mirror::percent_decode(path);
    if let Some(name) = path
        .strip_prefix("/pypi/")
        .and_then(|r| r.strip_suffix("/json"))
    {
        return Some(pymirror_testkit::mirror::normalize(name));
    }
    if let Some(rest) = path.strip_prefix("/simple/") {
        let name = rest.trim_end_matches('/');
        return (!name.is_empty()).then(|| pymirror_testkit::mirror::normalize(name));
    }
    let file = path.strip_prefix("/packages/")?.rsplit('/').next()?;
    let file = file.strip_suffix(".metadata").unwrap_or(file);
    Some(pymirror_testkit::mirror::normalize(file.split('-').next()?))
}

/// Files downloaded (not `.metadata` sidecars), by name.
fn downloads(up: &FakeUpstream) -> Vec<String> {
    let files: Vec<String> = up
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/packages/"))
        .filter(|r| !r.path.ends_with(".metadata"))
        .map(|r| pymirror_testkit::mirror::percent_decode(r.path.rsplit('/').next().unwrap()))
        .collect();
    sorted(&files)
}

#[test]
fn an_allowlist_of_names_asks_upstream_about_those_projects_only() {
    for no_xmlrpc in [false, true] {
        let up = catalog();
        for i in 0..20 {
            let file = format!("noise_{i}-1.0.tar.gz");
            up.add_release(
                &format!("noise-{i}"),
                "1.0",
                &[(&file, content(&file, 100))],
            );
        }
        if no_xmlrpc {
            up.set_xmlrpc_status(Some(405));
        }
        let mirror = mirror_with(
            &up,
            r#"allowlist = ["Demo>=2.0", "zope.interface", "not-on-upstream"]"#,
        );
        mirror.sync().assert_ok();
        let requests = up.requests();
        let calls: Vec<&str> = requests
            .iter()
            .filter_map(|r| r.xmlrpc_method.as_deref())
            .collect();
        // The feed serial, nothing more: no listing of the whole index.
        assert_eq!(calls, ["changelog_last_serial"], "no_xmlrpc = {no_xmlrpc}");
        assert!(
            requests.iter().all(|r| r.path != "/simple/"),
            "root listing read: {requests:#?}"
        );
        let touched: BTreeSet<String> = requests
            .iter()
            .filter_map(|r| project_of(&r.path))
            .collect();
        assert_eq!(
            touched,
            ["demo", "not-on-upstream", "zope-interface"]
                .map(String::from)
                .into(),
            "{requests:#?}"
        );
        // Per listed project: the JSON API (and its redirect to the display name) and the
        // PEP 691 page; per mirrored file one download.
        let metadata = requests
            .iter()
            .filter(|r| r.path.starts_with("/pypi/") || r.path.starts_with("/simple/"))
            .count();
        assert!(
            metadata <= 3 * 3,
            "{metadata} metadata requests: {requests:#?}"
        );
        let mut want = demo_of(&["2.0"]);
        want.push("zope.interface-6.0.tar.gz");
        assert_eq!(downloads(&up), sorted(&want));
        assert_root(&mirror, &["demo", "zope-interface"]);
        assert_project(
            &mirror,
            &up,
            "demo",
            &demo_of(&["2.0"]),
            &demo_files(),
            Some(&["2.0"]),
        );

        // Later runs follow the feed, for the listed projects only.
        up.reset_requests();
        up.add_release(
            "demo",
            "2.2",
            &[("demo-2.2.tar.gz", content("demo-2.2.tar.gz", 150))],
        );
        up.add_release(
            "noise-3",
            "2.0",
            &[("noise_3-2.0.tar.gz", content("noise_3-2.0", 99))],
        );
        up.add_release(
            "brand-new",
            "1.0",
            &[("brand_new-1.0.tar.gz", content("b", 99))],
        );
        mirror.sync().assert_ok();
        let requests = up.requests();
        let calls: Vec<&str> = requests
            .iter()
            .filter_map(|r| r.xmlrpc_method.as_deref())
            .collect();
        if no_xmlrpc {
            assert_eq!(
                calls,
                ["changelog_since_serial"],
                "tried once, answered 405"
            );
        } else {
            assert!(
                calls.iter().all(|c| *c == "changelog_since_serial"),
                "{calls:?}"
            );
            assert!(
                requests.iter().all(|r| r.path != "/simple/"),
                "{requests:#?}"
            );
        }
        let touched: BTreeSet<String> = requests
            .iter()
            .filter_map(|r| project_of(&r.path))
            .collect();
        assert_eq!(touched, ["demo".to_owned()].into(), "{requests:#?}");
        assert_eq!(downloads(&up), ["demo-2.2.tar.gz"]);
        let mut want = demo_of(&["2.0"]);
        want.push("demo-2.2.tar.gz");
        assert_project(
            &mirror,
            &up,
            "demo",
            &want,
            &demo_files(),
            Some(&["2.0", "2.2"]),
        );
        assert_root(&mirror, &["demo", "zope-interface"]);
        assert_eq!(mirror.status_serial(), up.serial());

        up.reset_requests();
        mirror.sync().assert_ok();
        assert!(up.request_count() <= 2, "{:#?}", up.requests());
    }
}

const BEFORE_CHANGE: &str = r#"exclude_platforms = ["windows"]
exclude_prereleases = true
blocklist = ["other-pkg"]"#;

const AFTER_CHANGE: &str = r#"exclude_platforms = ["macos"]
blocklist = ["zope.interface", "demo<2"]"#;

fn before_change() -> Vec<&'static str> {
    demo_of(&["1.0", "1.5", "2.0"])
        .into_iter()
        .filter(|f| !f.contains("win"))
        .collect()
}

fn after_change() -> Vec<&'static str> {
    demo_of(&["2.0", "2.1rc1"])
        .into_iter()
        .filter(|f| !f.contains("macosx"))
        .collect()
}

fn with_json(filters: &str) -> String {
    format!("{TEST_SETTINGS}json = true\n[filters]\n{filters}\n")
}

#[test]
fn a_filter_change_adds_and_prunes_without_downloading_again() {
    let up = catalog();
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &with_json(BEFORE_CHANGE));
    mirror.sync().assert_ok();
    assert_project(
        &mirror,
        &up,
        "demo",
        &before_change(),
        &demo_files(),
        Some(&["1.0", "1.5", "2.0"]),
    );
    assert_root(
        &mirror,
        &["demo", "internal-lib", "internal-tool", "zope-interface"],
    );

    // Windows back, macOS out, demo 1.x out, pre-releases back; other-pkg back, zope out.
    up.reset_requests();
    mirror.configure(&up.url(), &with_json(AFTER_CHANGE));
    let run = mirror.sync();
    run.assert_ok();
    assert!(
        run.stderr.contains("filter configuration changed"),
        "{}",
        run.stderr
    );
    mirror.assert_consistent();
    assert_project(
        &mirror,
        &up,
        "demo",
        &after_change(),
        &demo_files(),
        Some(&["2.0", "2.1rc1"]),
    );
    assert_root(
        &mirror,
        &["demo", "internal-lib", "internal-tool", "other-pkg"],
    );
    let candidates = ["other_pkg-1.0.tar.gz", "zope.interface-6.0.tar.gz"];
    assert_project(
        &mirror,
        &up,
        "other-pkg",
        &["other_pkg-1.0.tar.gz"],
        &candidates,
        None,
    );
    let tool = ["internal_tool-1.0.tar.gz"];
    assert_project(&mirror, &up, "internal-tool", &tool, &tool, None);
    assert!(!mirror.web().join("pypi/zope-interface").exists());
    assert!(!mirror.web().join("json/zope-interface").exists());
    for doc in ["pypi/demo/json", "json/demo"] {
        let api = read_json(&mirror.web().join(doc));
        let releases = api["releases"].as_object().unwrap();
        assert_eq!(
            releases.keys().collect::<Vec<_>>(),
            ["2.0", "2.1rc1"],
            "{doc}"
        );
        let files: Vec<String> = releases
            .values()
            .flat_map(|r| r.as_array().unwrap())
            .map(|f| f["filename"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(sorted(&files), sorted(&after_change()), "{doc}");
    }

    // Only what is newly included was downloaded; what was held stayed in place.
    let mut added: Vec<&str> = after_change()
        .into_iter()
        .filter(|f| !before_change().contains(f))
        .collect();
    added.push("other_pkg-1.0.tar.gz");
    assert_eq!(downloads(&up), sorted(&added));
    let requests = up.requests();
    // The blocklisted project is removed without asking upstream about it, and the shorter
    // blocklist made the sync read the listing once to find other-pkg.
    assert!(
        requests
            .iter()
            .all(|r| project_of(&r.path).as_deref() != Some("zope-interface")),
        "{requests:#?}"
    );
    let listings = requests
        .iter()
        .filter(|r| r.xmlrpc_method.as_deref() == Some("list_packages_with_serial"))
        .count();
    assert_eq!(listings, 1);

    // The change is applied once: the next run is a no-op.
    up.reset_requests();
    mirror.sync().assert_ok();
    assert!(up.request_count() <= 2, "{:#?}", up.requests());
}

#[test]
fn a_filter_change_that_removes_too_much_is_refused_until_allowed() {
    let up = FakeUpstream::start();
    for i in 0..4 {
        let sdist = format!("p{i}-1.0.tar.gz");
        let wheel = format!("p{i}-1.0-py3-none-any.whl");
        up.add_release(
            &format!("p{i}"),
            "1.0",
            &[(&sdist, content(&sdist, 64)), (&wheel, content(&wheel, 64))],
        );
    }
    let sdist_only = "s0-1.0.tar.gz";
    up.add_release("s0", "1.0", &[(sdist_only, content(sdist_only, 64))]);
    let settings = format!("{TEST_SETTINGS}max_deletions = 1\n");
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &settings);
    mirror.sync().assert_ok();
    let before = mirror.published();

    // Three projects blocked: more than max_deletions.
    mirror.configure(
        &up.url(),
        &format!("{settings}[filters]\nblocklist_regex = [\"^p[0-2]$\"]\n"),
    );
    up.reset_requests();
    for _ in 0..2 {
        let run = mirror.sync();
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains("removes 3 mirrored projects")
                && run.stderr.contains("max_deletions = 1")
                && run.stderr.contains("--allow-mass-delete"),
            "{}",
            run.stderr
        );
        assert_eq!(mirror.published(), before, "something changed");
        assert_eq!(up.request_count(), 0, "stopped before asking upstream");
    }
    mirror.sync_with(&["--allow-mass-delete"]).assert_ok();
    assert_root(&mirror, &["p3", "s0"]);
    for i in 0..3 {
        for f in [
            format!("p{i}-1.0.tar.gz"),
            format!("p{i}-1.0-py3-none-any.whl"),
        ] {
            assert!(
                !mirror.web().join(up.file_info(&f).unwrap().path).exists(),
                "{f}"
            );
        }
    }
    assert!(
        up.requests()
            .iter()
            .all(|r| !matches!(project_of(&r.path).as_deref(), Some("p0" | "p1" | "p2"))),
        "{:#?}",
        up.requests()
    );

    // Emptying projects of every file counts too: sdists out leaves s0 with nothing.
    mirror.configure(
        &up.url(),
        &format!("{settings}[filters]\nblocklist_regex = [\"^p[0-2]$\"]\nexclude_packagetypes = [\"sdist\"]\nexclude_filenames = [\"^p3-\"]\n"),
    );
    let before = mirror.published();
    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("leaves 2 without any file"),
        "{}",
        run.stderr
    );
    assert_eq!(mirror.published(), before);
    mirror.sync_with(&["--allow-mass-delete"]).assert_ok();
    assert_root(&mirror, &["p3", "s0"]);
    assert!(mirror.links("s0").is_empty() && mirror.links("p3").is_empty());
    mirror.assert_consistent();
}

/// `download|delete <project> <file> <bytes>` lines of a dry run, as (action, file, bytes).
fn dry_run_lines(stdout: &str, action: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            (parts.len() == 4 && parts[0] == action)
                .then(|| (parts[2].to_owned(), parts[3].parse().unwrap()))
        })
        .collect()
}

fn size_of(up: &FakeUpstream, file: &str) -> u64 {
    up.file_info(file).unwrap().size
}

#[test]
fn dry_run_prints_what_a_sync_would_do_and_changes_nothing() {
    let up = catalog();
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &with_json(BEFORE_CHANGE));
    mirror.sync().assert_ok();
    up.add_release(
        "demo",
        "2.0.1",
        &[("demo-2.0.1.tar.gz", content("demo-2.0.1.tar.gz", 123))],
    );
    mirror.configure(&up.url(), &with_json(AFTER_CHANGE));
    let before = mirror.snapshot(&mirror.dir);
    up.reset_requests();

    let run = mirror.sync_with(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert_eq!(
        mirror.snapshot(&mirror.dir),
        before,
        "the dry run changed the mirror"
    );
    assert!(downloads(&up).is_empty(), "the dry run downloaded files");

    let mut added: Vec<&str> = after_change()
        .into_iter()
        .filter(|f| !before_change().contains(f))
        .collect();
    added.extend(["other_pkg-1.0.tar.gz", "demo-2.0.1.tar.gz"]);
    let download = dry_run_lines(out, "download");
    let want: Vec<(String, u64)> = sorted(&added)
        .into_iter()
        .map(|f| {
            let size = size_of(&up, &f);
            (f, size)
        })
        .collect();
    let mut got = download.clone();
    got.sort();
    assert_eq!(got, want, "{out}");
    let mut pruned: Vec<&str> = before_change()
        .into_iter()
        .filter(|f| !after_change().contains(f))
        .collect();
    pruned.push("zope.interface-6.0.tar.gz");
    let mut delete: Vec<String> = dry_run_lines(out, "delete")
        .into_iter()
        .map(|d| d.0)
        .collect();
    delete.sort();
    assert_eq!(delete, sorted(&pruned), "{out}");
    assert!(
        out.lines()
            .any(|l| l
                .starts_with("remove zope-interface 1 files 200 bytes (left out by the filters")),
        "{out}"
    );
    let bytes = |files: &[&str]| files.iter().map(|f| size_of(&up, f)).sum::<u64>();
    let held: Vec<&str> = before_change()
        .into_iter()
        .chain([
            "internal_tool-1.0.tar.gz",
            "internal_lib-0.3-py3-none-any.whl",
            "zope.interface-6.0.tar.gz",
        ])
        .collect();
    let kept: Vec<&str> = held
        .iter()
        .copied()
        .filter(|f| !pruned.contains(f))
        .collect();
    for line in [
        format!(
            "would download {} files, {} bytes",
            added.len(),
            bytes(&added)
        ),
        format!("would keep {} files, {} bytes", kept.len(), bytes(&kept)),
        format!(
            "would delete {} files, {} bytes",
            pruned.len(),
            bytes(&pruned)
        ),
    ] {
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
    }
    assert!(out.contains("and remove 1 projects"), "{out}");
    assert!(
        out.trim_end().ends_with("dry run: nothing was changed"),
        "{out}"
    );

    // The real sync does what the dry run said.
    up.reset_requests();
    mirror.sync().assert_ok();
    assert_eq!(downloads(&up), sorted(&added));
    for f in &pruned {
        assert!(
            !mirror.web().join(up.file_info(f).unwrap().path).exists(),
            "{f}"
        );
    }

    // On a mirror that never synced: everything would be downloaded, nothing is created.
    let fresh = mirror_with(&up, r#"allowlist = ["internal-tool"]"#);
    let run = fresh.sync_with(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        dry_run_lines(&run.stdout, "download"),
        [("internal_tool-1.0.tar.gz".to_owned(), 200)],
        "{}",
        run.stdout
    );
    assert!(
        !fresh.dir.exists(),
        "the dry run created the mirror directory"
    );

    // A refused filter change is reported, not applied.
    mirror.configure(
        &up.url(),
        &format!("{TEST_SETTINGS}max_deletions = 0\n[filters]\nblocklist = [\"demo\"]\n"),
    );
    let before = mirror.snapshot(&mirror.dir);
    let run = mirror.sync_with(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("note: a sync would stop before changing anything"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("remove demo "), "{}", run.stdout);
    assert_eq!(mirror.snapshot(&mirror.dir), before);
}

#[test]
fn config_mistakes_are_one_line_and_change_nothing() {
    let up = catalog();
    for (filters, needle) in [
        (
            r#"allowlist = ["django>=x"]"#,
            "[filters] allowlist entry \"django>=x\"",
        ),
        (
            r#"exclude_filenames = ["(unclosed"]"#,
            "exclude_filenames entry \"(unclosed\" is not a valid regular expression",
        ),
        (
            r#"exclude_platforms = ["plan9!"]"#,
            "exclude_platforms entry",
        ),
        (
            r#"requirements = ["nope.txt"]"#,
            "cannot read requirements file",
        ),
        (r#"latest = 3"#, "unknown key `latest` in [filters]"),
    ] {
        let mirror = mirror_with(&up, filters);
        let run = mirror.sync();
        assert_eq!(run.code, 2, "{filters}: {}", run.stderr);
        let line = run.stderr.trim();
        assert!(line.contains(needle), "{filters}: {line}");
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!mirror.dir.exists());
    }
}
