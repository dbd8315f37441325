//! Hardening against an unreliable network and an untrusted upstream: answers that would
//! empty the mirror, absurd serials, endless change feeds, trickling answers, huge strings.

use std::time::{Duration, Instant};

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::{FakeUpstream, RawAnswer};

use crate::PYMIRROR;

/// Three projects of one file each, mirrored with `max_deletions = 1`.
fn three_mirrored(up: &FakeUpstream) -> Mirror {
    for i in 0..3u8 {
        up.add_release(
            &format!("p{i}"),
            "1.0",
            &[(&format!("p{i}-1.0.tar.gz"), vec![i; 8])],
        );
    }
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}max_deletions = 1\n"),
    );
    mirror.sync().assert_ok();
    mirror
}

/// Upstream still lists the three projects, each as `{"releases": {"1.0": []}}`: emptying
/// them is held back like removing them, they stay queued with why, until
/// `--allow-mass-delete`.
#[test]
fn emptying_many_projects_is_guarded_like_removing_them() {
    let up = FakeUpstream::start();
    let mirror = three_mirrored(&up);
    for i in 0..3 {
        up.remove_file(&format!("p{i}"), &format!("p{i}-1.0.tar.gz"));
    }
    let mut before = mirror.published();
    before.remove("status");
    for _ in 0..2 {
        let run = mirror.sync();
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("max_deletions = 1") && run.stderr.contains("--allow-mass-delete"),
            "{}",
            run.stderr
        );
        let mut after = mirror.published();
        after.remove("status");
        assert_eq!(after, before, "something was emptied");
        for i in 0..3 {
            assert_eq!(mirror.links(&format!("p{i}")).len(), 1);
        }
        let status = mirror.run(&["status", "--config", mirror.config.to_str().unwrap()]);
        assert!(
            status.stdout.contains("mass-delete guard"),
            "{}",
            status.stdout
        );
    }
    mirror.sync_with(&["--allow-mass-delete"]).assert_ok();
    for i in 0..3 {
        assert!(mirror.links(&format!("p{i}")).is_empty());
    }
    mirror.assert_consistent();
}

/// One project emptied (not more than `max_deletions`) goes through.
#[test]
fn emptying_few_projects_goes_through() {
    let up = FakeUpstream::start();
    let mirror = three_mirrored(&up);
    up.remove_file("p0", "p0-1.0.tar.gz");
    mirror.sync().assert_ok();
    assert!(mirror.links("p0").is_empty());
    assert_eq!(mirror.links("p1").len(), 1);
    mirror.assert_consistent();
}

/// The JSON API (the only source asked: `simple_json = false`) claims serial 2^64 - 1 for a
/// project: it is recorded at the feed's serial, so upstream's next release of it is still
/// mirrored.
#[test]
fn an_absurd_project_serial_does_not_freeze_the_project() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    up.claim_json_serial("demo", Some(u64::MAX));
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_json = false\n"),
    );
    mirror.sync().assert_ok();
    up.claim_json_serial("demo", None);
    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"two".to_vec())]);
    for _ in 0..2 {
        mirror.sync().assert_ok();
        assert_eq!(mirror.links("demo").len(), 2);
        assert_eq!(mirror.status_serial(), up.serial());
    }
}

/// A first allowlist-only run is told `changelog_last_serial` = i64::MAX; later runs against
/// a sane upstream warn that the recorded serial is beyond upstream's and start over.
#[test]
fn an_absurd_feed_serial_is_recovered_from() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    up.claim_last_serial(Some(i64::MAX));
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}[filters]\nallowlist = [\"demo\"]\n"),
    );
    mirror.sync().assert_ok();
    assert_eq!(mirror.links("demo").len(), 1);
    up.claim_last_serial(None);
    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"two".to_vec())]);
    let run = mirror.sync();
    run.assert_ok();
    assert!(
        run.stderr.contains("beyond upstream's current serial"),
        "{}",
        run.stderr
    );
    assert_eq!(mirror.links("demo").len(), 2);
    up.add_release("demo", "3.0", &[("demo-3.0.tar.gz", b"three".to_vec())]);
    let run = mirror.sync();
    run.assert_ok();
    assert!(!run.stderr.contains("beyond upstream"), "{}", run.stderr);
    assert_eq!(mirror.links("demo").len(), 3);
    assert_eq!(mirror.status_serial(), up.serial());
}

/// Without XML-RPC, the root index once claims serial 2^62 for everything; later runs against
/// a sane root warn that the recorded serial is far beyond upstream's and start over, instead
/// of taking every later root for a stale copy.
#[test]
fn an_absurd_root_index_serial_is_recovered_from() {
    let up = FakeUpstream::start();
    up.set_xmlrpc_status(Some(404));
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let absurd = 1u64 << 62;
    up.serve_response(
        "/simple/",
        RawAnswer {
            status: 200,
            headers: vec![(
                "content-type".into(),
                "application/vnd.pypi.simple.v1+json".into(),
            )],
            body: serde_json::json!({
                "meta": {"api-version": "1.1", "_last-serial": absurd},
                "projects": [{"name": "demo", "_last-serial": absurd}],
            })
            .to_string()
            .into_bytes(),
        },
    );
    mirror.sync();
    up.clear_response("/simple/");
    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"two".to_vec())]);
    let run = mirror.sync();
    run.assert_ok();
    assert!(run.stderr.contains("far beyond"), "{}", run.stderr);
    assert_eq!(mirror.links("demo").len(), 2);
    up.add_release("demo", "3.0", &[("demo-3.0.tar.gz", b"three".to_vec())]);
    let run = mirror.sync();
    run.assert_ok();
    assert!(!run.stderr.contains("far beyond"), "{}", run.stderr);
    assert_eq!(mirror.links("demo").len(), 3);
    assert_eq!(mirror.status_serial(), up.serial());
}

/// A change feed that never ends: page after page of new names, each at serial n + 1.
fn endless_feed(settings: &str) -> (FakeUpstream, Mirror) {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &format!("{TEST_SETTINGS}{settings}"));
    mirror.sync().assert_ok();
    up.set_changelog_page(10);
    up.endless_changelog(true);
    (up, mirror)
}

/// One run reads at most `max_feed_rows` rows, queues what it read (the next run reads on
/// from there) and ends with an error.
#[test]
fn an_endless_change_feed_is_read_only_so_far() {
    let (up, mirror) = endless_feed("max_feed_rows = 30\n");
    let started = Instant::now();
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(run.stderr.contains("max_feed_rows = 30"), "{}", run.stderr);
    let pages = |up: &FakeUpstream| {
        up.requests()
            .iter()
            .filter(|r| r.xmlrpc_method.as_deref() == Some("changelog_since_serial"))
            .count()
    };
    assert_eq!(pages(&up), 3);
    // What was read is kept: the feed serial advanced past it, the mirror is intact.
    assert!(mirror.status_serial() >= 1);
    assert_eq!(mirror.links("demo").len(), 1);
    mirror.assert_consistent();
}

/// SIGTERM while an endless feed is read: no further page, the run ends.
#[test]
fn sigterm_stops_reading_an_endless_change_feed() {
    let (up, mirror) = endless_feed("");
    let mut child = mirror.spawn_sync(&[]);
    let started = Instant::now();
    while up.request_count() < 20 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sync ignored SIGTERM while reading the change feed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(status.code(), Some(0));
}

/// SIGKILL while an endless feed is read: the pages read before are queued already (the feed
/// is committed page by page), so the next run does not read them again.
#[test]
fn a_kill_while_reading_the_feed_keeps_the_pages_read() {
    let (up, mirror) = endless_feed("");
    let serial_before = mirror.status_serial();
    let mut child = mirror.spawn_sync(&[]);
    let started = Instant::now();
    while up.request_count() < 20 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let status = mirror.run(&[
        "status",
        "--json",
        "--config",
        mirror.config.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect(&status.stderr);
    let feed = report["feed_serial"].as_u64().unwrap_or(0);
    assert!(
        feed > serial_before,
        "the feed serial did not advance: {}",
        status.stdout
    );
    assert!(
        report["pending_count"].as_u64().unwrap_or(0) > 0,
        "{}",
        status.stdout
    );
}

/// A JSON API answer trickling one byte every 300 ms (well under the read timeout) is cut at
/// `metadata_deadline`; the project stays queued with why, the run ends.
#[test]
fn a_trickling_metadata_answer_is_cut_at_the_deadline() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    up.add_release("slow", "1.0", &[("slow-1.0.tar.gz", b"slow".to_vec())]);
    up.trickle("/pypi/slow/json", Duration::from_millis(300));
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}metadata_deadline = 2\nsimple_json = false\n"),
    );
    let started = Instant::now();
    let run = mirror.sync();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("metadata_deadline = 2"),
        "{}",
        run.stderr
    );
    assert_eq!(mirror.links("demo").len(), 1);
    assert!(mirror.page("slow").is_none());
}

/// Upstream text reaches the log, `last_error` and `status` cut and escaped: a 5 MB `size`
/// string, a `faultString` with newlines that would forge log lines.
#[test]
fn upstream_text_is_cut_and_escaped() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    up.inject_file_json(
        "huge",
        "1.0",
        serde_json::json!({"filename": "huge-1.0.tar.gz", "size": "A".repeat(5 << 20)}),
    );
    // The JSON API is where the entry is injected: read it alone.
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}simple_json = false\n"),
    );
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let longest = run.stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a {longest}-byte log line");
    assert!(run.stderr.contains("more bytes"), "{}", run.stderr);
    let status = mirror.run(&["status", "--config", mirror.config.to_str().unwrap()]);
    assert!(
        status.stdout.len() < 8192,
        "{} bytes of status",
        status.stdout.len()
    );

    let forged = "<?xml version=\"1.0\"?><methodResponse><fault><value><struct>\
        <member><name>faultCode</name><value><int>1</int></value></member>\
        <member><name>faultString</name><value><string>boom\n2026-01-01T00:00:00Z ERROR forged line</string></value></member>\
        </struct></value></fault></methodResponse>";
    up.serve_response(
        "/pypi",
        pymirror_testkit::upstream::RawAnswer {
            status: 200,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: forged.as_bytes().to_vec(),
        },
    );
    let run = mirror.sync();
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("boom\\n2026"), "{}", run.stderr);
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("2026-01-01")),
        "{}",
        run.stderr
    );
}

/// A project listing more files than `max_project_files` is refused whole with a line naming
/// the key; the others go on.
#[test]
fn a_project_with_too_many_files_is_refused() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    up.add_release(
        "many",
        "1.0",
        &[
            ("many-1.0.tar.gz", b"a".to_vec()),
            ("many-1.0.zip", b"b".to_vec()),
            ("many-1.0-py3-none-any.whl", b"c".to_vec()),
        ],
    );
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}max_project_files = 2\n"),
    );
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("upstream lists at least 3 files, more than max_project_files = 2"),
        "{}",
        run.stderr
    );
    assert_eq!(mirror.links("demo").len(), 1);
    assert!(mirror.page("many").is_none());
}

/// Eight projects whose JSON API document and PEP 691 page are each 16 MiB (valid, padded
/// with spaces), all asked at once: with `max_metadata_memory` = 20 MiB the bodies wait for
/// each other instead of adding up (16 × 16 MiB, twice that in buffers, without the budget),
/// and the run is as it would be without it.
#[test]
fn concurrent_metadata_stays_within_max_metadata_memory() {
    use pymirror_testkit::upstream::RawAnswer;
    const BODY: usize = 16 << 20;
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    let names: Vec<String> = (0..8).map(|i| format!("big{i}")).collect();
    for name in &names {
        up.add_release(name, "1.0", &[]);
    }
    let serial = up.serial();
    let padded = |content_type: &str, doc: String| {
        let mut body = doc.into_bytes();
        body.resize(BODY, b' ');
        RawAnswer {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    };
    for name in &names {
        up.serve_response(
            &format!("/pypi/{name}/json"),
            padded(
                "application/json",
                format!(
                    r#"{{"info": {{"name": "{name}"}}, "last_serial": {serial}, "releases": {{"1.0": []}}}}"#
                ),
            ),
        );
        up.serve_response(
            &format!("/simple/{name}/"),
            padded(
                "application/vnd.pypi.simple.v1+json",
                format!(
                    r#"{{"meta": {{"api-version": "1.1", "_last-serial": {serial}}}, "name": "{name}", "files": [], "versions": ["1.0"]}}"#
                ),
            ),
        );
    }
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        "workers = 4\nmetadata_workers = 8\nretry_delay = 0.01\nfsync = false\n\
         simple_json = true\nmax_metadata_bytes = 17825792\nmax_metadata_memory = 20971520\n\
         metadata_deadline = 60\n",
    );
    let run = pymirror_testkit::measure::run_pymirror(
        PYMIRROR,
        &["sync", "--config", mirror.config.to_str().unwrap()],
    );
    assert_eq!(run.code, 0);
    let peak_mib = run.max_rss_kib / 1024;
    eprintln!("peak RSS {peak_mib} MiB");
    assert!(peak_mib < 120, "peak RSS {peak_mib} MiB");
    assert_eq!(mirror.links("demo").len(), 1);
    for name in &names {
        assert!(mirror.page(name).is_some(), "{name} not published");
        assert!(mirror.links(name).is_empty());
    }
    mirror.assert_consistent();
}
