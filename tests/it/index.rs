//! The complete simple index: every field in both formats, PEP 658 sidecars, project status,
//! the JSON API mirror, `root_uri`, format selection and byte-for-byte determinism.

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts};
use serde_json::Value;
use sha2::Digest;

use crate::PYMIRROR;

fn read(mirror: &Mirror, rel: &str) -> Vec<u8> {
    std::fs::read(mirror.web().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(mirror: &Mirror, rel: &str) -> Value {
    serde_json::from_slice(&read(mirror, rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

const METADATA: &[u8] = b"Metadata-Version: 2.1\nName: Alpha_Pkg\nVersion: 1.0\n";

/// Alpha_Pkg: a wheel with a sidecar, provenance and an extra digest; an sdist without; a
/// yanked release with a reason, one without, and a release without files. Beta: archived.
/// Gamma: synced, then quarantined.
fn publish(up: &FakeUpstream) {
    let wheel = FileOpts {
        requires_python: Some(">=3.8".into()),
        metadata: Some(METADATA.to_vec()),
        provenance: Some(
            "/integrity/Alpha_Pkg/1.0/alpha_pkg-1.0-py3-none-any.whl/provenance".into(),
        ),
        extra_hashes: vec![("sha512".into(), "AB".repeat(64))],
        upload_time: Some("2024-01-02T03:04:05.123456Z".into()),
        ..FileOpts::default()
    };
    up.add_file(
        "Alpha_Pkg",
        "1.0",
        "alpha_pkg-1.0-py3-none-any.whl",
        b"wheel bytes".to_vec(),
        wheel,
    );
    up.add_file(
        "Alpha_Pkg",
        "1.0",
        "alpha_pkg-1.0.tar.gz",
        b"sdist bytes".to_vec(),
        FileOpts::default(),
    );
    up.add_release(
        "Alpha_Pkg",
        "2.0",
        &[("alpha_pkg-2.0.tar.gz", b"two".to_vec())],
    );
    up.add_release(
        "Alpha_Pkg",
        "3.0",
        &[("alpha_pkg-3.0.tar.gz", b"three".to_vec())],
    );
    up.add_release("Alpha_Pkg", "0.1", &[]);
    up.yank("Alpha_Pkg", "2.0", Some("broken <build>"));
    up.yank("Alpha_Pkg", "3.0", None);
    up.add_release("Beta", "1.0", &[("beta-1.0.tar.gz", b"beta".to_vec())]);
    up.set_project_status("Beta", Some(("archived", Some("no longer maintained"))));
    up.add_release("Gamma", "1.0", &[("gamma-1.0.tar.gz", b"gamma".to_vec())]);
}

#[test]
fn pages_carry_every_field_in_both_formats() {
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let gamma_file = mirror
        .web()
        .join(up.file_info("gamma-1.0.tar.gz").unwrap().path);
    assert!(gamma_file.exists());
    up.set_project_status("Gamma", Some(("quarantined", Some("malware"))));
    mirror.sync().assert_ok();
    mirror.assert_consistent();

    // HTML: both names, same bytes; the attributes of PEP 503/592/658/714/740/792.
    let html = read(&mirror, "simple/alpha-pkg/index.html");
    assert_eq!(html, read(&mirror, "simple/alpha-pkg/index.v1_html"));
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("<meta name=\"pypi:repository-version\" content=\"1.4\">"),
        "{html}"
    );
    let wheel = up.file_info("alpha_pkg-1.0-py3-none-any.whl").unwrap();
    let meta_sha = sha256(METADATA);
    let provenance = format!(
        "{}/integrity/Alpha_Pkg/1.0/alpha_pkg-1.0-py3-none-any.whl/provenance",
        up.url()
    );
    assert!(html.contains(&format!(
        "<a href=\"../../{}#sha256={}\" data-requires-python=\"&gt;=3.8\" data-dist-info-metadata=\"sha256={meta_sha}\" data-core-metadata=\"sha256={meta_sha}\" data-provenance=\"{provenance}\">alpha_pkg-1.0-py3-none-any.whl</a>",
        wheel.path, wheel.sha256
    )), "{html}");
    assert!(
        html.contains("data-yanked=\"broken &lt;build&gt;\">alpha_pkg-2.0.tar.gz</a>"),
        "{html}"
    );
    assert!(
        html.contains("data-yanked=\"\">alpha_pkg-3.0.tar.gz</a>"),
        "{html}"
    );
    assert_eq!(
        html.matches("data-core-metadata").count(),
        1,
        "advertised a sidecar it does not hold"
    );

    // The sidecar is held beside its file, with the advertised hash.
    let sidecar = read(&mirror, &format!("{}.metadata", wheel.path));
    assert_eq!(sha256(&sidecar), meta_sha);

    // JSON: every key of api-version 1.4.
    let page = json(&mirror, "simple/alpha-pkg/index.v1_json");
    assert_eq!(page["meta"]["api-version"], "1.4");
    assert_eq!(page["name"], "alpha-pkg");
    let mut versions: Vec<&str> = page["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["0.1", "1.0", "2.0", "3.0"]);
    let files = page["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    let file = |name: &str| {
        files
            .iter()
            .find(|f| f["filename"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let w = file("alpha_pkg-1.0-py3-none-any.whl");
    assert_eq!(w["url"], format!("../../{}", wheel.path));
    assert_eq!(w["hashes"]["sha256"], wheel.sha256);
    assert_eq!(w["hashes"]["sha512"], "ab".repeat(64));
    assert_eq!(w["requires-python"], ">=3.8");
    assert_eq!(w["size"], wheel.size);
    assert_eq!(w["upload-time"], "2024-01-02T03:04:05.123456Z");
    assert_eq!(w["yanked"], false);
    assert_eq!(w["core-metadata"]["sha256"], meta_sha);
    assert_eq!(w["data-dist-info-metadata"]["sha256"], meta_sha);
    assert_eq!(w["provenance"], provenance);
    let s = file("alpha_pkg-1.0.tar.gz");
    assert_eq!(s["core-metadata"], false);
    assert_eq!(s["requires-python"], Value::Null);
    assert_eq!(s["provenance"], Value::Null);
    assert_eq!(file("alpha_pkg-2.0.tar.gz")["yanked"], "broken <build>");
    assert_eq!(file("alpha_pkg-3.0.tar.gz")["yanked"], true);

    // PEP 792: archived keeps its files; quarantined offers none (and they are deleted).
    let beta = json(&mirror, "simple/beta/index.v1_json");
    assert_eq!(beta["project-status"]["status"], "archived");
    assert_eq!(beta["project-status"]["reason"], "no longer maintained");
    assert_eq!(beta["files"].as_array().unwrap().len(), 1);
    let beta_html = String::from_utf8(read(&mirror, "simple/beta/index.html")).unwrap();
    assert!(
        beta_html.contains("<meta name=\"pypi:project-status\" content=\"archived\">"),
        "{beta_html}"
    );
    assert!(
        beta_html.contains(
            "<meta name=\"pypi:project-status-reason\" content=\"no longer maintained\">"
        )
    );
    let gamma = json(&mirror, "simple/gamma/index.v1_json");
    assert_eq!(gamma["project-status"]["status"], "quarantined");
    assert!(gamma["files"].as_array().unwrap().is_empty());
    assert!(
        !mirror
            .links("gamma")
            .iter()
            .any(|l| l.text.contains("gamma"))
    );
    assert!(
        !gamma_file.exists(),
        "a quarantined project's file is still stored"
    );

    // Root: both formats, every project with its serial, the mirror's serial in meta.
    let root = json(&mirror, "simple/index.v1_json");
    assert_eq!(root["meta"]["api-version"], "1.4");
    assert_eq!(root["meta"]["_last-serial"], mirror.status_serial());
    let names: Vec<&str> = root["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alpha_Pkg", "Beta", "Gamma"]);
    for p in root["projects"].as_array().unwrap() {
        let norm = pymirror_testkit::mirror::normalize(p["name"].as_str().unwrap());
        let page = json(&mirror, &format!("simple/{norm}/index.v1_json"));
        assert_eq!(p["_last-serial"], page["meta"]["_last-serial"]);
    }
    assert_eq!(
        read(&mirror, "simple/index.html"),
        read(&mirror, "simple/index.v1_html")
    );
}

#[test]
fn a_sidecar_upstream_does_not_serve_or_corrupts_is_not_advertised() {
    let up = FakeUpstream::start();
    let opts = || FileOpts {
        metadata: Some(METADATA.to_vec()),
        ..FileOpts::default()
    };
    up.add_file(
        "missing",
        "1.0",
        "missing-1.0-py3-none-any.whl",
        b"m".to_vec(),
        opts(),
    );
    up.add_file(
        "corrupt",
        "1.0",
        "corrupt-1.0-py3-none-any.whl",
        b"c".to_vec(),
        opts(),
    );
    up.fail_downloads("missing-1.0-py3-none-any.whl.metadata", 404, 1000);
    up.corrupt_downloads("corrupt-1.0-py3-none-any.whl.metadata", 1000);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let missing = json(&mirror, "simple/missing/index.v1_json");
    assert_eq!(missing["files"][0]["core-metadata"], false);
    assert!(
        !String::from_utf8(read(&mirror, "simple/missing/index.html"))
            .unwrap()
            .contains("core-metadata")
    );
    // A sidecar that never verifies does not hold its project back: the file is published,
    // the sidecar neither stored nor advertised, and the run reports the refusal.
    assert!(run.stderr.contains("sha256 mismatch"), "{}", run.stderr);
    let corrupt = json(&mirror, "simple/corrupt/index.v1_json");
    assert_eq!(corrupt["files"][0]["core-metadata"], false);
    assert_eq!(mirror.links("corrupt").len(), 1);
    let info = up.file_info("corrupt-1.0-py3-none-any.whl").unwrap();
    assert!(
        !mirror
            .web()
            .join(format!("{}.metadata", info.path))
            .exists()
    );

    // Fetched again when upstream next changes the project.
    up.corrupt_downloads("corrupt-1.0-py3-none-any.whl.metadata", 0);
    up.touch("corrupt");
    mirror.sync().assert_ok();
    assert_eq!(
        json(&mirror, "simple/corrupt/index.v1_json")["files"][0]["core-metadata"]["sha256"],
        sha256(METADATA)
    );
}

#[test]
fn a_sidecar_that_fails_for_now_keeps_its_project_queued_until_it_is_mirrored() {
    let up = FakeUpstream::start();
    up.add_file(
        "flaky",
        "1.0",
        "flaky-1.0-py3-none-any.whl",
        b"f".to_vec(),
        FileOpts {
            metadata: Some(METADATA.to_vec()),
            ..FileOpts::default()
        },
    );
    // More 503s than one run retries (TEST_SETTINGS keeps the default 3 retries).
    up.fail_downloads("flaky-1.0-py3-none-any.whl.metadata", 503, 4);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        mirror.page("flaky").is_none(),
        "published without its sidecar"
    );

    // No upstream change: the next run still finishes it, sidecar advertised.
    mirror.sync().assert_ok();
    assert_eq!(
        json(&mirror, "simple/flaky/index.v1_json")["files"][0]["core-metadata"]["sha256"],
        sha256(METADATA)
    );
}

#[test]
fn formats_json_api_mirror_root_uri_and_determinism() {
    let up = FakeUpstream::start();
    publish(&up);

    let html_only = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_format = \"html\"\n"),
    );
    html_only.sync().assert_ok();
    assert!(html_only.web().join("simple/beta/index.html").exists());
    assert!(!html_only.web().join("simple/beta/index.v1_json").exists());
    assert!(!html_only.web().join("simple/index.v1_json").exists());

    let json_only = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_format = \"json\"\n"),
    );
    json_only.sync().assert_ok();
    assert!(json_only.web().join("simple/beta/index.v1_json").exists());
    assert!(!json_only.web().join("simple/beta/index.html").exists());
    assert!(!json_only.web().join("simple/index.html").exists());

    up.inject_file_json("Beta", "1.0", serde_json::json!({"filename": "../evil.tar.gz", "url": "/etc/passwd", "size": 1, "digests": {"sha256": "0".repeat(64)}}));
    let settings =
        format!("{TEST_SETTINGS}json = true\nroot_uri = \"https://mirror.example.org/py/\"\n");
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &settings);
    assert_eq!(mirror.sync().code, 1, "the injected entry is refused");
    let beta = up.file_info("beta-1.0.tar.gz").unwrap();
    let absolute = format!("https://mirror.example.org/py/{}", beta.path);
    assert_eq!(
        json(&mirror, "simple/beta/index.v1_json")["files"][0]["url"],
        absolute
    );
    assert!(
        String::from_utf8(read(&mirror, "simple/beta/index.html"))
            .unwrap()
            .contains(&format!("href=\"{absolute}#sha256="))
    );
    for rel in ["json/beta", "pypi/beta/json"] {
        let doc = json(&mirror, rel);
        let files = doc["releases"]["1.0"].as_array().unwrap();
        assert_eq!(
            files.len(),
            1,
            "{rel}: lists a file the mirror does not hold"
        );
        assert_eq!(files[0]["url"], absolute, "{rel}");
        assert_eq!(doc["info"]["name"], "Beta");
    }

    let relative = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}json = true\n"),
    );
    relative.sync();
    assert_eq!(
        json(&relative, "json/beta")["releases"]["1.0"][0]["url"],
        format!("../{}", beta.path)
    );
    assert_eq!(
        json(&relative, "pypi/beta/json")["urls"][0]["url"],
        format!("../../{}", beta.path)
    );
    up.remove_project("Beta");
    relative.sync();
    for gone in ["json/beta", "pypi/beta", "simple/beta"] {
        assert!(
            !relative.web().join(gone).exists(),
            "{gone} left after the project was removed"
        );
    }

    // Same upstream state, two fresh mirrors: byte-identical trees.
    let a = Mirror::new(PYMIRROR, &up.url());
    let b = Mirror::new(PYMIRROR, &up.url());
    a.sync();
    b.sync();
    let strip = |m: &Mirror| {
        let mut p = m.published();
        p.retain(|k, _| k.starts_with("web/"));
        p
    };
    assert_eq!(strip(&a), strip(&b));
}

/// A sync that only changes projects' serials rewrites the PEP 691 JSON root alone (the HTML
/// root lists no serial; a full mirror's is tens of MB under each of its two names); one that
/// adds a project rewrites every root page.
#[test]
fn the_html_root_is_rewritten_only_when_the_list_of_projects_changes() {
    use std::os::unix::fs::MetadataExt;
    let up = FakeUpstream::start();
    up.add_release("Alpha", "1.0", &[("alpha-1.0.tar.gz", b"one".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let inode = |rel: &str| std::fs::metadata(mirror.web().join(rel)).unwrap().ino();
    let html_roots = || ["simple/index.html", "simple/index.v1_html"].map(inode);
    let listed_serial = |name: &str| {
        let root = json(&mirror, "simple/index.v1_json");
        let entry = root["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned();
        entry.map(|p| p["_last-serial"].as_u64().unwrap())
    };
    let (html, json_root) = (html_roots(), inode("simple/index.v1_json"));

    up.add_release("Alpha", "2.0", &[("alpha-2.0.tar.gz", b"two".to_vec())]);
    mirror.sync().assert_ok();
    assert_eq!(html_roots(), html, "a new release rewrote the HTML root");
    assert_ne!(inode("simple/index.v1_json"), json_root);
    let alpha = mirror.page_serial("alpha");
    assert_eq!(
        listed_serial("Alpha"),
        Some(alpha),
        "the JSON root's serial"
    );

    up.add_release("Beta", "1.0", &[("beta-1.0.tar.gz", b"beta".to_vec())]);
    mirror.sync().assert_ok();
    let now = html_roots();
    assert!(
        now[0] != html[0] && now[1] != html[1],
        "a new project is listed"
    );
    let root: Vec<String> = mirror.root_links().into_iter().map(|l| l.href).collect();
    assert_eq!(root, ["alpha/", "beta/"]);
    assert_eq!(
        std::fs::read(mirror.web().join("simple/index.v1_html")).unwrap(),
        std::fs::read(mirror.web().join("simple/index.html")).unwrap()
    );
    assert_eq!(listed_serial("Beta"), Some(mirror.page_serial("beta")));
    mirror.verify(&[]).assert_ok();
}
