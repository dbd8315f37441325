//! A hostile upstream: malformed, huge and deeply nested answers, redirects elsewhere and in
//! loops, bodies longer than promised, invalid project names, hosts outside `file_hosts`, and
//! symlinks planted in the mirror tree. Each is refused with a clear line, the rest of the
//! mirror goes on, and nothing is written outside the mirror directory. (Crafted file URLs and
//! file names: `tests/sync.rs`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS, snapshot};
use pymirror_testkit::upstream::{FakeUpstream, RawAnswer};

use crate::PYMIRROR;

type Tree = BTreeMap<PathBuf, (u64, String, std::time::SystemTime)>;

fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> RawAnswer {
    RawAnswer {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.into(),
    }
}

/// Everything in the sandbox except the mirror directory: a run must leave it as it was.
fn around(mirror: &Mirror) -> Tree {
    snapshot(mirror.sandbox.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&mirror.dir))
        .collect()
}

fn good_release(up: &FakeUpstream) {
    up.add_release(
        "good",
        "1.0",
        &[("good-1.0.tar.gz", b"good bytes".to_vec())],
    );
}

/// `good` is mirrored; `bad` is not, and the run says why in one line naming it.
#[track_caller]
fn only_good_survives(mirror: &Mirror, bad: &str, why: &str) {
    let before = around(mirror);
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains(&format!("{bad}:")) && l.contains(why))
        .unwrap_or_else(|| panic!("no line about {bad} saying {why:?}:\n{}", run.stderr));
    assert!(line.contains("WARN"), "{line}");
    assert_eq!(mirror.links("good").len(), 1);
    assert!(mirror.page(bad).is_none(), "{bad} published");
    assert_eq!(
        around(mirror),
        before,
        "something written outside the mirror"
    );
}

#[test]
fn malformed_huge_and_deeply_nested_json_fails_only_its_project() {
    for (bad, body, why) in [
        (
            "truncated",
            b"{\"info\": {\"name\": \"trunc".to_vec(),
            "invalid JSON",
        ),
        ("notjson", b"<html>oops</html>".to_vec(), "invalid JSON"),
        (
            "deep",
            // Nested inside a key only the JSON API mirror reads (`json = true`).
            [
                b"{\"info\": {\"name\": \"deep\"}, \"last_serial\": 99, \"junk\": ".to_vec(),
                vec![b'['; 20_000],
                vec![b']'; 20_000],
                b"}".to_vec(),
            ]
            .concat(),
            "recursion limit",
        ),
        (
            "huge",
            vec![b' '; 200_000],
            "larger than the 65536-byte limit",
        ),
    ] {
        let up = FakeUpstream::start();
        good_release(&up);
        up.add_release(bad, "1.0", &[(&format!("{bad}-1.0.tar.gz"), b"x".to_vec())]);
        let headers = [("content-type", "application/json")];
        up.serve_response(&format!("/pypi/{bad}/json"), answer(200, &headers, body));
        let mirror = Mirror::with_settings(
            PYMIRROR,
            &up.url(),
            &format!("{TEST_SETTINGS}max_metadata_bytes = 65536\njson = true\n"),
        );
        only_good_survives(&mirror, bad, why);
    }
}

#[test]
fn malformed_oversized_or_nested_xmlrpc_changes_nothing() {
    let deep = format!(
        "<?xml version=\"1.0\"?><methodResponse><params><param>{}{}</param></params></methodResponse>",
        "<value><array><data>".repeat(1000),
        "</data></array></value>".repeat(1000)
    );
    for (body, why) in [
        (
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member>"
                .to_owned(),
            "malformed XML-RPC reply",
        ),
        ("not xml at all".to_owned(), "malformed XML-RPC reply"),
        (deep, "malformed XML-RPC reply"),
        (
            format!(
                "<?xml version=\"1.0\"?><methodResponse><params><param><value><string>{}</string></value></param></params></methodResponse>",
                "a".repeat(100_000)
            ),
            "larger than the 65536-byte limit",
        ),
    ] {
        let up = FakeUpstream::start();
        good_release(&up);
        up.serve_response("/pypi", answer(200, &[("content-type", "text/xml")], body));
        let mirror = Mirror::with_settings(
            PYMIRROR,
            &up.url(),
            &format!("{TEST_SETTINGS}max_metadata_bytes = 65536\nchange_feed = \"xmlrpc\"\n"),
        );
        let run = mirror.sync();
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(why), "{why}: {}", run.stderr);
        assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
        assert!(
            snapshot(&mirror.web()).is_empty(),
            "a page or file written after a bad feed"
        );
        assert!(!mirror.dir.join("status").exists());
    }
}

#[test]
fn redirects_to_another_host_or_in_a_loop_are_refused() {
    let up = FakeUpstream::start();
    let elsewhere = FakeUpstream::start();
    good_release(&up);
    for name in ["away", "loop"] {
        up.add_release(
            name,
            "1.0",
            &[(&format!("{name}-1.0.tar.gz"), b"x".to_vec())],
        );
        elsewhere.add_release(
            name,
            "1.0",
            &[(&format!("{name}-1.0.tar.gz"), b"x".to_vec())],
        );
    }
    // Same address, another port: another server.
    let target = format!("{}/pypi/away/json", elsewhere.url());
    up.serve_response(
        "/pypi/away/json",
        answer(302, &[("location", target.as_str())], ""),
    );
    up.serve_response(
        "/pypi/loop/json",
        answer(301, &[("location", "/pypi/loop/again/json")], ""),
    );
    up.serve_response(
        "/pypi/loop/again/json",
        answer(301, &[("location", "/pypi/loop/json")], ""),
    );
    // The redirects are on the JSON API: read it alone.
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_json = false\n"),
    );
    only_good_survives(&mirror, "away", "redirect to another host refused");
    let run = mirror.sync();
    assert!(run.stderr.contains("redirect loop"), "{}", run.stderr);
    assert_eq!(elsewhere.request_count(), 0, "{:#?}", elsewhere.requests());
}

#[test]
fn a_body_longer_than_promised_or_a_file_over_the_cap_is_refused() {
    let up = FakeUpstream::start();
    good_release(&up);
    // Upstream promises 5 bytes at a well-formed path and sends far more.
    up.add_release("liar", "1.0", &[("liar-1.0.tar.gz", b"12345".to_vec())]);
    let info = up.file_info("liar-1.0.tar.gz").unwrap();
    up.serve_raw(&info.path, vec![b'A'; 1 << 20]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    only_good_survives(&mirror, "liar", "expected 5");
    assert!(!mirror.web().join(&info.path).exists());
    assert!(
        std::fs::read_dir(mirror.dir.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "temporary file left behind"
    );

    // A file over max_file_bytes is refused from its metadata: it is never requested.
    let capped = FakeUpstream::start();
    good_release(&capped);
    capped.add_release("big", "1.0", &[("big-1.0.tar.gz", vec![0; 5000])]);
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &capped.url(),
        &format!("{TEST_SETTINGS}max_file_bytes = 4096\n"),
    );
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("more than max_file_bytes"),
        "{}",
        run.stderr
    );
    assert!(
        !capped
            .requests()
            .iter()
            .any(|r| r.path.ends_with("big-1.0.tar.gz"))
    );
}

#[test]
fn invalid_project_names_in_the_feed_never_become_paths() {
    let up = FakeUpstream::start();
    good_release(&up);
    for name in ["../escape", "bad name", ".hidden", "a/b"] {
        up.add_release(name, "1.0", &[("evil-1.0.tar.gz", b"evil".to_vec())]);
    }
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let before = around(&mirror);
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let skipped = run
        .stderr
        .lines()
        .filter(|l| l.contains("not a valid project name; skipped"))
        .count();
    assert_eq!(skipped, 4, "{}", run.stderr);
    assert_eq!(around(&mirror), before);
    let dirs: Vec<_> = std::fs::read_dir(mirror.web().join("simple"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("index."))
        .collect();
    assert_eq!(dirs, vec!["good"]);
}

#[test]
fn file_hosts_allowlist_refuses_every_other_host_without_asking_it() {
    let up = FakeUpstream::start();
    good_release(&up);
    // The same bytes, listed on another host name for the same server.
    let good = up.file_info("good-1.0.tar.gz").unwrap();
    let port = up.url().rsplit(':').next().unwrap().to_owned();
    up.inject_file_json(
        "other",
        "1.0",
        serde_json::json!({"filename": "other-1.0.tar.gz",
            "url": format!("http://localhost:{port}/elsewhere/other-1.0.tar.gz"),
            "size": good.size, "digests": {"sha256": good.sha256}}),
    );
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_json = false\nfile_hosts = [\"files.example.org\"]\n"),
    );
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("host \"localhost\" is neither the master's nor in file_hosts"),
        "{}",
        run.stderr
    );
    assert!(
        up.requests()
            .iter()
            .all(|r| !r.path.starts_with("/elsewhere/")),
        "the refused host was asked"
    );
    // The master's own host serves files whatever file_hosts says.
    assert_eq!(mirror.links("good").len(), 1);
    assert!(mirror.links("other").is_empty());

    let allowed = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_json = false\nfile_hosts = [\"localhost\"]\n"),
    );
    let run = allowed.sync();
    assert!(!run.stderr.contains("file_hosts"), "{}", run.stderr);
    assert_eq!(allowed.links("good").len(), 1);
}

fn symlink_dir(link: &Path, target: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn symlinks_in_the_tree_are_never_written_or_deleted_through() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"demo one".to_vec())]);
    let info = up.file_info("demo-1.0.tar.gz").unwrap();
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let outside = mirror.sandbox.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    // Writing: the file's first directory level is a symlink planted out of the tree.
    let first = info.path.split('/').take(2).collect::<Vec<_>>().join("/");
    symlink_dir(&mirror.web().join(&first), &outside);
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is a symlink"), "{}", run.stderr);
    assert!(snapshot(&outside).is_empty(), "written through a symlink");
    assert!(mirror.page("demo").is_none());

    // Once the operator removes it, the next run mirrors the file.
    std::fs::remove_file(mirror.web().join(&first)).unwrap();
    mirror.sync().assert_ok();
    assert!(mirror.web().join(&info.path).exists());

    // Deleting: the file's directory is swapped for a symlink to a copy outside; when upstream
    // removes the file, the copy outside survives.
    let dir = Path::new(&info.path).parent().unwrap();
    let copy = outside.join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(mirror.web().join(&info.path), copy.join("demo-1.0.tar.gz")).unwrap();
    std::fs::remove_dir_all(mirror.web().join(dir)).unwrap();
    symlink_dir(&mirror.web().join(dir), &copy);
    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"demo two".to_vec())]);
    up.remove_release("demo", "1.0");
    let run = mirror.sync();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("is a symlink"), "{}", run.stderr);
    assert!(
        copy.join("demo-1.0.tar.gz").exists(),
        "deleted through a symlink"
    );
    assert_eq!(
        mirror
            .links("demo")
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>(),
        vec!["demo-2.0.tar.gz"]
    );
}
