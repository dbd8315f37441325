//! End-to-end tests of `pymirror sync` against the fake Warehouse upstream.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;

use pymirror_testkit::mirror::{Mirror, normalize, snapshot};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts, generated_name};
use serde_json::json;

use crate::PYMIRROR;

/// Names chosen to exercise PEP 503 normalization.
const NAMES: &[&str] = &[
    "Django_Like",
    "zope.Interface",
    "A--b__C",
    "simple",
    "UPPER",
    "py.test.Plugin",
    "x",
    "Foo-Bar",
    "foo_bar.baz",
    "numpy_like",
    "Requests",
    "six",
    "attrs",
    "typing.extensions",
    "jinja2",
    "Mark_Up_Safe",
    "a1",
    "b2.c3",
    "Long-Name-With-Many-Parts",
    "q",
    "z_z",
    "lib.core",
    "MyPkg",
    "another_one",
    "t.t.t",
    "p-q-r",
    "K",
    "w_1",
    "e.2",
    "last",
];

fn wheel(name: &str, version: &str) -> String {
    format!(
        "{}-{version}-py3-none-any.whl",
        name.replace(['-', '.'], "_")
    )
}

fn sdist(name: &str, version: &str) -> String {
    format!("{}-{version}.tar.gz", name.replace(['-', '.'], "_"))
}

/// Every file `name`'s page links to is served with upstream's bytes.
fn assert_serves_upstream_bytes(up: &FakeUpstream, mirror: &Mirror, name: &str) {
    for link in mirror.links(name) {
        assert_eq!(
            mirror.follow(name, &link),
            up.file_info(&link.text).unwrap().content,
            "{}",
            link.text
        );
    }
}

fn content(filename: &str) -> Vec<u8> {
    // Distinct, non-trivial bytes per file (sizes vary from a few bytes to ~40 KiB).
    let n = filename.len() * 1000 + filename.bytes().map(usize::from).sum::<usize>();
    (0..n)
        .map(|i| (i * 31 + filename.len()) as u8)
        .chain(filename.bytes())
        .collect()
}

fn publish_all(up: &FakeUpstream) {
    for (i, name) in NAMES.iter().enumerate() {
        for v in 0..=(i % 3) {
            let version = format!("1.{v}");
            let files = [wheel(name, &version), sdist(name, &version)];
            for f in &files {
                let opts = FileOpts {
                    requires_python: (i % 4 == 0).then(|| ">=3.8,<4".to_owned()),
                    ..FileOpts::default()
                };
                up.add_file(name, &version, f, content(f), opts);
            }
        }
    }
    up.yank("Django_Like", "1.0", Some("broken <build> & more"));
    up.yank("zope.Interface", "1.0", None);
}

/// Every project page lists exactly upstream's files, every link resolves to bytes with the
/// advertised and upstream's hashes, and attributes survive escaping.
fn assert_mirror_matches(up: &FakeUpstream, mirror: &Mirror) {
    let root: BTreeSet<String> = mirror.root_links().into_iter().map(|l| l.href).collect();
    let want_root: BTreeSet<String> = NAMES.iter().map(|n| format!("{}/", normalize(n))).collect();
    assert_eq!(root, want_root);
    for (i, name) in NAMES.iter().enumerate() {
        let norm = normalize(name);
        let links = mirror.links(&norm);
        let mut want: BTreeSet<String> = BTreeSet::new();
        for v in 0..=(i % 3) {
            want.insert(wheel(name, &format!("1.{v}")));
            want.insert(sdist(name, &format!("1.{v}")));
        }
        let got: BTreeSet<String> = links.iter().map(|l| l.text.clone()).collect();
        assert_eq!(got, want, "{name}");
        for link in &links {
            let bytes = mirror.follow(&norm, link);
            let info = up.file_info(&link.text).unwrap();
            assert_eq!(bytes, info.content, "{}", link.text);
            let expected_path = format!("../../{}#sha256={}", info.path, info.sha256);
            assert_eq!(link.href, expected_path);
            assert_eq!(
                link.requires_python.as_deref(),
                (i % 4 == 0).then_some(">=3.8,<4"),
                "{}",
                link.text
            );
            let yanked = match (*name, link.text.contains("-1.0")) {
                ("Django_Like", true) => Some("broken <build> & more"),
                ("zope.Interface", true) => Some(""),
                _ => None,
            };
            assert_eq!(link.yanked.as_deref(), yanked, "{}", link.text);
        }
    }
}

#[test]
fn initial_sync_builds_an_exact_mirror_and_a_second_run_is_a_no_op() {
    let up = FakeUpstream::start();
    publish_all(&up);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let run = mirror.sync();
    run.assert_ok();
    assert!(run.stderr.contains("sync complete"), "{}", run.stderr);
    assert_mirror_matches(&up, &mirror);
    assert_eq!(mirror.status_serial(), up.serial());
    assert_eq!(
        std::fs::read_dir(mirror.dir.join("tmp")).unwrap().count(),
        0,
        "temp files left"
    );
    let page = mirror.page("django-like").unwrap();
    assert!(
        page.contains("data-requires-python=\"&gt;=3.8,&lt;4\""),
        "{page}"
    );

    // No upstream change: the changelog, and once upstream's serial to check ours against;
    // not a single file touched.
    let web_before = snapshot(&mirror.web());
    let status_before = snapshot(&mirror.dir.join("status"));
    up.reset_requests();
    mirror.sync().assert_ok();
    let requests = up.requests();
    assert!(requests.len() <= 2, "{requests:#?}");
    assert_eq!(snapshot(&mirror.web()), web_before);
    assert_eq!(snapshot(&mirror.dir.join("status")), status_before);
    // The serial confirmed, a no-op is one request.
    up.reset_requests();
    mirror.sync().assert_ok();
    let methods: Vec<Option<String>> = up.requests().into_iter().map(|r| r.xmlrpc_method).collect();
    assert_eq!(
        methods,
        [Some("changelog_since_serial".to_owned())],
        "a no-op sync"
    );
    assert_eq!(snapshot(&mirror.web()), web_before);
}

#[test]
fn incremental_sync_fetches_only_the_changed_project_and_new_files() {
    let up = FakeUpstream::start();
    publish_all(&up);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();

    up.add_release(
        "Requests",
        "2.0",
        &[("requests-2.0-py3-none-any.whl", b"new wheel".to_vec())],
    );
    up.reset_requests();
    mirror.sync().assert_ok();
    let paths: Vec<String> = up
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let info = up.file_info("requests-2.0-py3-none-any.whl").unwrap();
    // One metadata document per changed project: its page, which says all the index needs.
    let metadata: Vec<&String> = paths
        .iter()
        .filter(|p| p.contains("/json") || p.contains("/simple/"))
        .collect();
    assert_eq!(metadata, vec!["GET /simple/requests/"], "{paths:#?}");
    let downloads: Vec<&String> = paths.iter().filter(|p| p.contains("/packages/")).collect();
    assert_eq!(
        downloads,
        vec![&format!("GET /{}", info.path)],
        "{paths:#?}"
    );
    assert!(
        mirror
            .links("requests")
            .iter()
            .any(|l| l.text == "requests-2.0-py3-none-any.whl")
    );
    assert_eq!(mirror.status_serial(), up.serial());
}

#[test]
fn changelog_is_paged_until_empty() {
    let up = FakeUpstream::start();
    up.add_release("first", "1.0", &[("first-1.0.tar.gz", b"one".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    up.set_changelog_page(3);
    for i in 0..8 {
        up.add_release(
            &format!("later{i}"),
            "1.0",
            &[(&format!("later{i}-1.0.tar.gz"), vec![i as u8; 10])],
        );
    }
    mirror.sync().assert_ok();
    for i in 0..8 {
        assert_eq!(mirror.links(&format!("later{i}")).len(), 1);
    }
    assert_eq!(mirror.status_serial(), up.serial());
}

/// The scale benchmark's generated catalog is the same index as one built by hand: a first
/// sync (its changelog paged), a change to one generated project, a removal, and both feeds.
#[test]
fn a_generated_catalog_mirrors_like_a_published_index() {
    let up = FakeUpstream::start();
    up.generate(40);
    up.set_changelog_page(15);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let root: BTreeSet<String> = mirror.root_links().into_iter().map(|l| l.href).collect();
    let want: BTreeSet<String> = (0..40).map(|i| format!("{}/", generated_name(i))).collect();
    assert_eq!(root, want);
    for i in 0..40 {
        let links = mirror.links(&generated_name(i));
        assert_eq!(
            links.len(),
            usize::from(i % 2 == 0),
            "{}",
            generated_name(i)
        );
        assert_serves_upstream_bytes(&up, &mirror, &generated_name(i));
    }
    assert_eq!(mirror.status_serial(), 40);

    let changed = generated_name(7);
    up.add_release(
        &changed,
        "2.0",
        &[("scale_0000007-2.0.tar.gz", b"new".to_vec())],
    );
    up.remove_project(&generated_name(8));
    up.reset_requests();
    mirror.sync().assert_ok();
    assert_eq!(mirror.links(&changed).len(), 1);
    assert!(mirror.page(&generated_name(8)).is_none());
    assert_eq!(mirror.root_links().len(), 39);
    let pages: BTreeSet<String> = up
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/simple/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        pages,
        BTreeSet::from([
            format!("/simple/{changed}/"),
            format!("/simple/{}/", generated_name(8))
        ])
    );
    mirror.assert_consistent();
}

#[test]
fn corrupted_and_truncated_downloads_are_refused_and_retried() {
    let up = FakeUpstream::start();
    up.add_release(
        "demo",
        "1.0",
        &[
            ("demo-1.0.tar.gz", content("demo-1.0.tar.gz")),
            ("demo-1.0-py3-none-any.whl", content("w")),
        ],
    );
    up.corrupt_downloads("demo-1.0.tar.gz", 2);
    up.truncate_downloads("demo-1.0-py3-none-any.whl", 1);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    assert_serves_upstream_bytes(&up, &mirror, "demo");
    let info = up.file_info("demo-1.0.tar.gz").unwrap();
    let gets = up
        .requests()
        .iter()
        .filter(|r| r.path == format!("/{}", info.path))
        .count();
    assert_eq!(gets, 3, "two corrupt answers, then the good one");
}

#[test]
fn a_file_that_stays_corrupt_fails_the_project_without_publishing_it() {
    let up = FakeUpstream::start();
    up.add_release("good", "1.0", &[("good-1.0.tar.gz", b"fine".to_vec())]);
    up.add_release(
        "bad",
        "1.0",
        &[("bad-1.0.tar.gz", content("bad-1.0.tar.gz"))],
    );
    up.corrupt_downloads("bad-1.0.tar.gz", 1000);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("sha256 mismatch"), "{}", run.stderr);
    assert!(run.stderr.contains("sync partial"), "{}", run.stderr);
    assert!(
        mirror.page("bad").is_none(),
        "page written for a project whose file failed"
    );
    let info = up.file_info("bad-1.0.tar.gz").unwrap();
    assert!(
        !mirror.web().join(&info.path).exists(),
        "corrupt bytes at the final path"
    );
    assert_eq!(mirror.links("good").len(), 1);
    assert!(
        mirror.status_serial() < up.serial(),
        "serial recorded past a failed project"
    );

    // Upstream heals: the next run finishes the job.
    up.corrupt_downloads("bad-1.0.tar.gz", 0);
    mirror.sync().assert_ok();
    assert_eq!(mirror.follow("bad", &mirror.links("bad")[0]), info.content);
    assert_eq!(mirror.status_serial(), up.serial());
}

#[test]
fn stale_metadata_is_retried_with_cache_busting_and_never_recorded() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"v1".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();

    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"v2".to_vec())]);
    up.stale_metadata("demo", 1000);
    up.reset_requests();
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("stale"), "{}", run.stderr);
    let texts: Vec<String> = mirror.links("demo").into_iter().map(|l| l.text).collect();
    assert_eq!(
        texts,
        vec!["demo-1.0.tar.gz"],
        "stale state must not replace the page"
    );
    assert!(mirror.status_serial() < up.serial());
    let busted = up
        .requests()
        .iter()
        .filter(|r| r.path == "/simple/demo/" && r.query.is_some())
        .count();
    assert!(
        busted >= 1,
        "retries must bust the cache: {:#?}",
        up.requests()
    );

    // The CDN catches up: the queued project is fetched and recorded.
    up.stale_metadata("demo", 0);
    mirror.sync().assert_ok();
    let texts: Vec<String> = mirror.links("demo").into_iter().map(|l| l.text).collect();
    assert_eq!(texts, vec!["demo-1.0.tar.gz", "demo-2.0.tar.gz"]);
    assert_eq!(mirror.status_serial(), up.serial());
}

#[test]
fn upstream_without_xmlrpc_is_followed_through_the_pep691_root() {
    for status in [404, 405] {
        let up = FakeUpstream::start();
        up.set_xmlrpc_status(Some(status));
        up.add_release(
            "Alpha.Pkg",
            "1.0",
            &[("alpha_pkg-1.0.tar.gz", b"a".to_vec())],
        );
        up.add_release("beta", "1.0", &[("beta-1.0.tar.gz", b"b".to_vec())]);
        let mirror = Mirror::new(PYMIRROR, &up.url());
        mirror.sync().assert_ok();
        assert_eq!(mirror.links("alpha-pkg").len(), 1);

        up.add_release("beta", "2.0", &[("beta-2.0.tar.gz", b"b2".to_vec())]);
        up.reset_requests();
        mirror.sync().assert_ok();
        let pages: Vec<String> = up
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/json") || r.path.starts_with("/simple/"))
            .map(|r| r.path)
            .collect();
        assert_eq!(pages, vec!["/simple/", "/simple/beta/"]);
        assert_eq!(mirror.links("beta").len(), 2);

        up.reset_requests();
        mirror.sync().assert_ok();
        assert!(up.request_count() <= 2, "{:#?}", up.requests());
    }
}

#[test]
fn simple_feed_can_be_chosen_in_the_config() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"a".to_vec())]);
    let settings = format!(
        "{}change_feed = \"simple\"\n",
        pymirror_testkit::mirror::TEST_SETTINGS
    );
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &settings);
    mirror.sync().assert_ok();
    assert!(
        up.requests().iter().all(|r| r.path != "/pypi"),
        "XML-RPC used: {:#?}",
        up.requests()
    );
    assert_eq!(mirror.links("demo").len(), 1);
}

#[test]
fn unsafe_urls_filenames_and_digests_are_refused_and_nothing_escapes() {
    let up = FakeUpstream::start();
    up.add_release("victim", "1.0", &[("victim-1.0.tar.gz", b"legit".to_vec())]);
    let good = up.file_info("victim-1.0.tar.gz").unwrap();
    let base = up.url();
    let e60 = "e".repeat(60);
    let sha = good.sha256.clone();
    let mut cases = vec![
        (
            "escape.tar.gz",
            format!("{base}/packages/../../../escape.tar.gz"),
            sha.clone(),
        ),
        (
            "escape2.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/..%2F..%2Fescape2.tar.gz"),
            sha.clone(),
        ),
        (
            "escape3.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/..%5Cescape3.tar.gz"),
            sha.clone(),
        ),
        (
            "escape4.tar.gz",
            format!("{base}/packages/ab/cd/%2e%2e/{e60}/escape4.tar.gz"),
            sha.clone(),
        ),
        // Any path prefix is fine (the local path comes from the bytes), but a URL must end
        // in the file's name, as installers name files.
        ("passwd.tar.gz", "/etc/passwd".to_owned(), sha.clone()),
        (
            "elsewhere.tar.gz",
            format!("{base}/files/ab/cd/{e60}/other.tar.gz"),
            sha.clone(),
        ),
        (
            "../up.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/../up.tar.gz"),
            sha.clone(),
        ),
        (
            "a/b.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/a/b.tar.gz"),
            sha.clone(),
        ),
        (
            "a\\b.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/a%5Cb.tar.gz"),
            sha.clone(),
        ),
        (
            "ctl\u{1}.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/ctl%01.tar.gz"),
            sha.clone(),
        ),
        (
            ".hidden.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/.hidden.tar.gz"),
            sha.clone(),
        ),
        (
            "shortsha.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/shortsha.tar.gz"),
            "abc".to_owned(),
        ),
        (
            "nothex.tar.gz",
            format!("{base}/packages/ab/cd/{e60}/nothex.tar.gz"),
            "z".repeat(64),
        ),
    ];
    // Serve bytes at every place a naive client would fetch from.
    for (_, url, _) in &cases {
        if let Some(path) = url.strip_prefix(&base) {
            up.serve_raw(path, b"attacker bytes".to_vec());
        }
    }
    cases.push((
        "wrongb2.tar.gz",
        format!("{base}/packages/ab/cd/{e60}/wrongb2.tar.gz"),
        sha.clone(),
    ));
    for (filename, url, sha256) in &cases {
        let mut digests = json!({"sha256": sha256, "md5": "0".repeat(32)});
        if *filename == "wrongb2.tar.gz" {
            digests["blake2b_256"] = json!("f".repeat(64));
        }
        up.inject_file_json(
            "victim",
            "1.0",
            json!({"filename": filename, "url": url, "size": 14, "digests": digests,
                   "packagetype": "sdist", "python_version": "source", "requires_python": null,
                   "upload_time_iso_8601": "2024-01-01T00:00:00.000000Z", "yanked": false, "yanked_reason": null}),
        );
    }
    // The entries are injected into the JSON API: read it alone.
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!(
            "{}simple_json = false\n",
            pymirror_testkit::mirror::TEST_SETTINGS
        ),
    );
    let sandbox_before: Vec<_> = std::fs::read_dir(mirror.sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let run = mirror.sync();
    assert_eq!(
        run.code, 1,
        "refusals must make the run non-zero:\n{}",
        run.stderr
    );
    let refusals = run
        .stderr
        .lines()
        .filter(|l| l.contains("refused file"))
        .count();
    assert_eq!(refusals, cases.len(), "{}", run.stderr);

    // The legitimate file is mirrored, nothing else is linked or stored.
    let links = mirror.links("victim");
    assert_eq!(
        links.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        vec!["victim-1.0.tar.gz"]
    );
    let stored: Vec<_> = snapshot(&mirror.web().join("packages"))
        .into_keys()
        .collect();
    assert_eq!(stored, vec![mirror.web().join(&good.path)]);
    let mut sandbox_after: Vec<_> = std::fs::read_dir(mirror.sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    sandbox_after.retain(|n| n != "mirror");
    assert_eq!(
        sandbox_after,
        sandbox_before
            .into_iter()
            .filter(|n| n != "mirror")
            .collect::<Vec<_>>()
    );
    // No attacker-named file anywhere in the sandbox, in the temp directory or at the root.
    let sandbox_files = snapshot(mirror.sandbox.path());
    for (filename, ..) in &cases {
        let base = filename.rsplit(['/', '\\']).next().unwrap();
        assert!(
            !sandbox_files
                .keys()
                .any(|p| p.file_name().is_some_and(|n| n == base)),
            "{base} written"
        );
        for dir in [std::env::temp_dir(), "/".into()] {
            assert!(
                !dir.join(base).exists(),
                "{base} written to {}",
                dir.display()
            );
        }
    }
    for f in snapshot(&mirror.dir).keys() {
        let rel = f
            .strip_prefix(&mirror.dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.starts_with("web/packages/")
                || rel.starts_with("web/simple/")
                || rel.starts_with("pymirror.db")
                || rel == "status"
                || rel == ".lock",
            "unexpected file {rel}"
        );
    }
}

#[test]
fn a_second_writer_is_refused_naming_the_lock_holder() {
    let up = FakeUpstream::start();
    let mirror = Mirror::new(PYMIRROR, &up.url());
    std::fs::create_dir_all(&mirror.dir).unwrap();
    // The lock is held by another process, not this one: a test in another thread that forks
    // while this process held it would hold it too, until its exec, after it was released.
    let lock = mirror.dir.join(".lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo 4242 > \"$0\"; exec sleep 60"])
        .arg(&lock)
        .process_group(0)
        .spawn()
        .expect("flock (util-linux) runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&lock).unwrap_or_default() != "4242\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "flock did not take the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let run = mirror.sync();
    // flock and the command it runs (which inherited the lock) go together.
    // SAFETY: signalling the process group this test started.
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    holder.wait().unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("pid 4242"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    mirror.sync().assert_ok();
}

#[test]
fn configuration_mistakes_get_one_line_and_exit_2() {
    let up = FakeUpstream::start();
    let mirror = Mirror::new(PYMIRROR, &up.url());
    for (body, needle) in [
        ("[mirror]\ndirectory = \"/tmp/x\"\n", "master is missing"),
        (
            "[mirror]\ndirectory = \"/tmp/x\"\nmaster = \"http://upstream.example\"\n",
            "allow_http",
        ),
        (
            "[mirror]\ndirectory = \"/tmp/x\"\nmaster = \"https://u.example\"\nworker = 3\n",
            "unknown key `worker`",
        ),
        (
            "[mirror]\ndirectory = \"/tmp/x\"\nmaster = \"https://u.example\"\nworkers = -1\n",
            "workers",
        ),
    ] {
        std::fs::write(&mirror.config, body).unwrap();
        let run = mirror.sync();
        assert_eq!(run.code, 2, "{body}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{body}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
    assert!(!std::path::Path::new("/tmp/x").exists());
}

/// A wheel's PEP 658 sidecar is its `*.dist-info/METADATA`: read from the wheel just
/// downloaded, with no request, when it hashes to what upstream promised; downloaded when it
/// does not (upstream's sidecar differs from the wheel's, so the promise is upstream's).
#[test]
fn a_wheels_core_metadata_is_read_from_the_wheel_when_it_matches() {
    let up = FakeUpstream::start();
    let same = pymirror_testkit::dist::wheel("same", "1.0", &[]);
    let other = pymirror_testkit::dist::wheel("other", "1.0", &[]);
    up.add_file(
        "same",
        "1.0",
        &same.filename,
        same.bytes.clone(),
        FileOpts {
            metadata: Some(same.metadata.clone()),
            ..FileOpts::default()
        },
    );
    let served = b"Metadata-Version: 2.1\nName: other\nVersion: 1.0\nSummary: as served\n".to_vec();
    up.add_file(
        "other",
        "1.0",
        &other.filename,
        other.bytes.clone(),
        FileOpts {
            metadata: Some(served.clone()),
            ..FileOpts::default()
        },
    );
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let asked: Vec<String> = up
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(".metadata"))
        .map(|r| r.path)
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].ends_with(&format!("{}.metadata", other.filename)));
    let sidecar = |filename: &str| {
        let info = up.file_info(filename).unwrap();
        std::fs::read(mirror.web().join(format!("{}.metadata", info.path))).unwrap()
    };
    assert_eq!(sidecar(&same.filename), same.metadata);
    assert_eq!(sidecar(&other.filename), served);
    assert_eq!(mirror.verify(&["--hash"]).code, 0);
}

/// Three projects of four files each (one release of four files: p0-1.0-k.tar.gz, k = 0..4),
/// mirrored with `max_deletions = 2` and `settings`.
fn three_projects_of_four_files(up: &FakeUpstream, settings: &str) -> Mirror {
    for p in 0..3u8 {
        let files: Vec<(String, Vec<u8>)> = (0..4u8)
            .map(|k| (format!("p{p}-1.0-{k}.tar.gz"), vec![p * 4 + k; 16]))
            .collect();
        let files: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        up.add_release(&format!("p{p}"), "1.0", &files);
    }
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!(
            "{}max_deletions = 2\n{settings}",
            pymirror_testkit::mirror::TEST_SETTINGS
        ),
    );
    mirror.sync().assert_ok();
    for p in 0..3 {
        assert_eq!(mirror.links(&format!("p{p}")).len(), 4);
    }
    mirror
}

/// Upstream drops the first three files of every project: 9 of the 12 files held.
fn drop_three_of_four(up: &FakeUpstream) {
    for p in 0..3 {
        for k in 0..3 {
            up.remove_file(&format!("p{p}"), &format!("p{p}-1.0-{k}.tar.gz"));
        }
    }
}

/// Files under `web/packages/`.
fn package_files(mirror: &Mirror) -> usize {
    snapshot(&mirror.web().join("packages")).len()
}

/// 9 of the 12 files a run looks at, more than `max_deletions = 2` and more than the default
/// share (half): nothing is deleted, the projects stay queued with why, the run exits 1
/// naming both keys, until `--allow-mass-delete`.
#[test]
fn deleting_most_files_a_run_looks_at_is_guarded() {
    let up = FakeUpstream::start();
    let mirror = three_projects_of_four_files(&up, "");
    drop_three_of_four(&up);
    let mut before = mirror.published();
    before.remove("status");
    for _ in 0..2 {
        let run = mirror.sync();
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("would delete 9 of the 12 files")
                && run.stderr.contains("max_deletions = 2")
                && run.stderr.contains("max_deletion_share = 0.5")
                && run.stderr.contains("--allow-mass-delete"),
            "{}",
            run.stderr
        );
        let mut after = mirror.published();
        after.remove("status");
        assert_eq!(after, before, "something was deleted or changed");
        assert_eq!(package_files(&mirror), 12);
        for p in 0..3 {
            let name = format!("p{p}");
            let links = mirror.links(&name);
            assert_eq!(links.len(), 4);
            for link in &links {
                mirror.follow(&name, link);
            }
        }
        let status = mirror.run(&["status", "--config", mirror.config.to_str().unwrap()]);
        assert!(
            status
                .stdout
                .contains("held back by the mass-delete guard: it would delete 3 of its 4 files"),
            "{}",
            status.stdout
        );
    }
    mirror.sync_with(&["--allow-mass-delete"]).assert_ok();
    for p in 0..3 {
        let texts: Vec<String> = mirror
            .links(&format!("p{p}"))
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts, [format!("p{p}-1.0-3.tar.gz")]);
    }
    assert_eq!(package_files(&mirror), 3);
    assert_eq!(mirror.status_serial(), up.serial());
    mirror.assert_consistent();
    mirror.sync().assert_ok();
}

/// A normal change (one file of the 12 removed) goes through; so do 9 of 12 when
/// `max_deletion_share` allows three quarters and more.
#[test]
fn deleting_a_few_files_or_an_allowed_share_goes_through() {
    let up = FakeUpstream::start();
    let mirror = three_projects_of_four_files(&up, "max_deletion_share = 0.5\n");
    up.remove_file("p1", "p1-1.0-2.tar.gz");
    mirror.sync().assert_ok();
    assert_eq!(mirror.links("p1").len(), 3);
    assert_eq!(mirror.links("p0").len(), 4);
    assert_eq!(package_files(&mirror), 11);
    mirror.assert_consistent();

    let up = FakeUpstream::start();
    let mirror = three_projects_of_four_files(&up, "max_deletion_share = 0.8\n");
    drop_three_of_four(&up);
    mirror.sync().assert_ok();
    for p in 0..3 {
        assert_eq!(mirror.links(&format!("p{p}")).len(), 1);
    }
    assert_eq!(package_files(&mirror), 3);
    mirror.assert_consistent();
}

/// `sync --dry-run` says a sync would hold the deletions back, and changes nothing.
#[test]
fn dry_run_reports_the_file_share_guard() {
    let up = FakeUpstream::start();
    let mirror = three_projects_of_four_files(&up, "");
    drop_three_of_four(&up);
    let before = mirror.snapshot(&mirror.dir);
    let run = mirror.sync_with(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert_eq!(
        out.lines().filter(|l| l.starts_with("delete ")).count(),
        9,
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("note: ")
            && l.contains("would delete 9 of the 12 files")
            && l.contains("max_deletion_share = 0.5")
            && l.contains("a sync would hold these deletions back")),
        "{out}"
    );
    assert_eq!(mirror.snapshot(&mirror.dir), before);
    // Allowed, no note.
    let run = mirror.sync_with(&["--dry-run", "--allow-mass-delete"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("note: "), "{}", run.stdout);
}

/// A database lost with the tree kept: each file already at its final path is hashed and
/// kept, not fetched again, and an unchanged page is left alone (unlike a first sync into an
/// empty tree, which looks for neither).
#[test]
fn a_tree_kept_without_its_database_is_reused_not_fetched_again() {
    let up = FakeUpstream::start();
    up.add_release(
        "demo",
        "1.0",
        &[
            ("demo-1.0.tar.gz", content("demo-1.0.tar.gz")),
            ("demo-1.0-py3-none-any.whl", content("w")),
        ],
    );
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    mirror.lose_database();
    let sdist = up.file_info("demo-1.0.tar.gz").unwrap();
    std::fs::write(mirror.web().join(&sdist.path), b"torn").unwrap();
    let page = mirror.web().join("simple/demo/index.html");
    let page_inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&page).unwrap());
    let before = page_inode();
    up.reset_requests();

    mirror.sync().assert_ok();
    assert_eq!(page_inode(), before, "an unchanged page was written again");
    let fetched: Vec<String> = up
        .requests()
        .iter()
        .filter(|r| r.path.contains("/packages/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        fetched,
        [format!("/{}", sdist.path)],
        "only the file whose bytes were wrong is fetched again"
    );
    assert_serves_upstream_bytes(&up, &mirror, "demo");
    mirror.assert_consistent();
}
