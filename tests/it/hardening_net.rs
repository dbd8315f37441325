//! Hardening against an unreliable network and an untrusted upstream: answers that would
//! empty the mirror, absurd serials, endless change feeds, trickling answers, huge strings.

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::FakeUpstream;

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
