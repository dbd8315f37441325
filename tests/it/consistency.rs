//! Consistency: deletions, yanks, the mass-delete guard, kills at any instant, signals, a full
//! disk, and `pymirror status`.

use std::time::{Duration, Instant};

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::FakeUpstream;

use crate::PYMIRROR;

fn texts(mirror: &Mirror, name: &str) -> Vec<String> {
    mirror.links(name).into_iter().map(|l| l.text).collect()
}

#[test]
fn removals_and_yanks_reach_pages_root_and_files_in_the_same_sync() {
    removals_and_yanks(false);
}

/// The same through the PEP 691 root listing: a removed project is simply absent from it.
#[test]
fn removals_and_yanks_through_the_pep691_feed() {
    removals_and_yanks(true);
}

fn removals_and_yanks(no_xmlrpc: bool) {
    let up = FakeUpstream::start();
    if no_xmlrpc {
        up.set_xmlrpc_status(Some(405));
    }
    up.add_release("gone", "1.0", &[("gone-1.0.tar.gz", b"gone".to_vec())]);
    up.add_release(
        "keep",
        "1.0",
        &[
            ("keep-1.0.tar.gz", b"k1".to_vec()),
            ("keep-1.0-py3-none-any.whl", b"k1w".to_vec()),
        ],
    );
    up.add_release("keep", "2.0", &[("keep-2.0.tar.gz", b"k2".to_vec())]);
    up.add_release("keep", "3.0", &[("keep-3.0.tar.gz", b"k3".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let path = |f: &str| mirror.web().join(up.file_info(f).unwrap().path);
    assert!(path("gone-1.0.tar.gz").exists());

    up.remove_project("gone");
    up.remove_release("keep", "2.0");
    up.remove_file("keep", "keep-1.0-py3-none-any.whl");
    up.yank("keep", "3.0", Some("bad build"));
    mirror.sync().assert_ok();
    mirror.assert_consistent();

    assert!(mirror.page("gone").is_none(), "page of a removed project");
    assert!(!mirror.web().join("simple/gone").exists());
    assert!(
        !mirror.root_links().iter().any(|l| l.href == "gone/"),
        "root still lists it"
    );
    assert!(
        !path("gone-1.0.tar.gz").exists(),
        "file of a removed project"
    );
    assert!(
        !path("keep-2.0.tar.gz").exists(),
        "file of a removed release"
    );
    assert!(!path("keep-1.0-py3-none-any.whl").exists(), "removed file");
    assert_eq!(
        texts(&mirror, "keep"),
        vec!["keep-1.0.tar.gz", "keep-3.0.tar.gz"]
    );
    let yanked: Vec<_> = mirror.links("keep").into_iter().map(|l| l.yanked).collect();
    assert_eq!(yanked, vec![None, Some("bad build".to_owned())]);

    up.unyank("keep", "3.0");
    mirror.sync().assert_ok();
    assert!(mirror.links("keep").iter().all(|l| l.yanked.is_none()));
    assert_eq!(mirror.status_serial(), up.serial());
}

/// Four projects mirrored with `max_deletions = 2`, then three removed upstream.
fn three_of_four_removed(up: &FakeUpstream) -> Mirror {
    for i in 0..4 {
        up.add_release(
            &format!("p{i}"),
            "1.0",
            &[(&format!("p{i}-1.0.tar.gz"), vec![i; 8])],
        );
    }
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}max_deletions = 2\n"),
    );
    mirror.sync().assert_ok();
    for i in 0..3 {
        up.remove_project(&format!("p{i}"));
    }
    mirror
}

#[test]
fn mass_deletion_is_refused_until_allowed() {
    let up = FakeUpstream::start();
    let mirror = three_of_four_removed(&up);
    let before = mirror.published();
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--allow-mass-delete"), "{}", run.stderr);
    let mut after = mirror.published();
    after.remove("status");
    let mut before_no_status = before.clone();
    before_no_status.remove("status");
    assert_eq!(after, before_no_status, "something was deleted");

    let run = mirror.run(&[
        "sync",
        "--config",
        mirror.config.to_str().unwrap(),
        "--allow-mass-delete",
    ]);
    run.assert_ok();
    for i in 0..3 {
        assert!(mirror.page(&format!("p{i}")).is_none());
    }
    assert_eq!(texts(&mirror, "p3"), vec!["p3-1.0.tar.gz"]);
    assert_eq!(mirror.status_serial(), up.serial());
}

#[test]
fn a_root_listing_missing_many_projects_changes_nothing() {
    let up = FakeUpstream::start();
    up.set_xmlrpc_status(Some(404));
    let mirror = three_of_four_removed(&up);
    up.reset_requests();
    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("lacks 3 projects"), "{}", run.stderr);
    assert!(
        up.requests().iter().all(|r| !r.path.ends_with("/json")),
        "fetched metadata anyway"
    );
    assert!(mirror.page("p0").is_some());
}

/// Projects big enough that a sync makes a few dozen requests and writes a few hundred KiB.
fn publish_many(up: &FakeUpstream, tag: u8) {
    for p in 0..8u8 {
        for v in 0..2u8 {
            let name = format!("proj{p}");
            let files: Vec<(String, Vec<u8>)> = (0..2u8)
                .map(|f| {
                    let filename = format!("proj{p}-{tag}.{v}.{f}.tar.gz");
                    (
                        filename,
                        vec![p ^ v ^ f ^ tag; 4096 + usize::from(p) * 1000],
                    )
                })
                .collect();
            let refs: Vec<(&str, Vec<u8>)> =
                files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
            up.add_release(&name, &format!("{tag}.{v}"), &refs);
        }
    }
}

/// Kill a real sync with SIGKILL at many moments (after N upstream requests, and at random
/// times), check the invariants right after each kill, let the next sync resume, and compare
/// the result file by file with a mirror that was never interrupted.
#[test]
fn killed_at_any_moment_the_next_sync_finishes_identically() {
    let up = FakeUpstream::start();
    up.set_latency(Duration::from_millis(2));
    publish_many(&up, 1);
    let reference = Mirror::new(PYMIRROR, &up.url());
    reference.sync().assert_ok();
    // A second generation of changes (removals, yanks, new files) for the incremental kills.
    let incremental = |up: &FakeUpstream| {
        publish_many(up, 2);
        up.remove_release("proj1", "1.0");
        up.remove_project("proj2");
        up.yank("proj3", "1.1", Some("why"));
    };

    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut random = move |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max
    };
    let mut kills = 0;
    for scenario in 0..16 {
        let up = FakeUpstream::start();
        up.set_latency(Duration::from_millis(2));
        publish_many(&up, 1);
        let mirror = Mirror::new(PYMIRROR, &up.url());
        let incremental_case = scenario % 2 == 1;
        if incremental_case {
            mirror.sync().assert_ok();
            incremental(&up);
        }
        up.reset_requests();
        let mut child = mirror.spawn_sync(&[]);
        let started = Instant::now();
        if scenario < 10 {
            // After N requests: spread over the run (a full sync makes ~50).
            let n = 1 + scenario * 5;
            while up.request_count() < n as usize && started.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            std::thread::sleep(Duration::from_millis(random(150)));
        }
        let finished_already = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        if !finished_already {
            kills += 1;
        }
        mirror.assert_consistent();
        mirror.sync().assert_ok();
        mirror.assert_consistent();
        assert_eq!(
            std::fs::read_dir(mirror.dir.join("tmp")).unwrap().count(),
            0,
            "temp files left"
        );

        // The uninterrupted mirror of the same upstream state.
        let fresh = Mirror::new(PYMIRROR, &up.url());
        fresh.sync().assert_ok();
        let (got, want) = (mirror.published(), fresh.published());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "scenario {scenario}"
        );
        assert_eq!(got, want, "scenario {scenario}");
        if !incremental_case {
            assert_eq!(got, reference.published(), "scenario {scenario}");
        }
    }
    assert!(kills >= 12, "only {kills} kills landed mid-run");
}

#[test]
fn sigterm_stops_cleanly_and_the_next_run_resumes() {
    let up = FakeUpstream::start();
    up.set_latency(Duration::from_millis(20));
    // Many more projects than the 8 the test settings keep in flight.
    for p in 0..60u8 {
        up.add_release(
            &format!("many{p}"),
            "1.0",
            &[(&format!("many{p}-1.0.tar.gz"), vec![p; 100])],
        );
    }
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let child = mirror.spawn_sync(&[]);
    while up.request_count() < 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("signal received") && stderr.contains("sync interrupted"),
        "{stderr}"
    );
    mirror.assert_consistent();
    assert!(mirror.status_serial() < up.serial());
    mirror.sync().assert_ok();
    mirror.assert_consistent();
    assert_eq!(mirror.status_serial(), up.serial());
}

#[test]
fn leftover_temporary_files_are_cleaned() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"x".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    std::fs::write(mirror.dir.join("tmp/12345-7.part"), b"debris").unwrap();
    mirror.sync().assert_ok();
    assert_eq!(
        std::fs::read_dir(mirror.dir.join("tmp")).unwrap().count(),
        0
    );
}

/// A full disk (a tiny tmpfs): a clear error naming the path, exit non-zero, a consistent
/// mirror, and a next run that resumes once there is room. Needs root to mount (CI is root).
#[test]
fn a_full_disk_stops_the_run_and_loses_nothing() {
    let up = FakeUpstream::start();
    for p in 0..6u8 {
        up.add_release(
            &format!("big{p}"),
            "1.0",
            &[(&format!("big{p}-1.0.tar.gz"), vec![p; 150 * 1024])],
        );
    }
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let tmpfs = Tmpfs::mount(&mirror.dir, "size=512k");
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(mirror.dir.to_str().unwrap()),
        "error must name the path: {}",
        run.stderr
    );
    mirror.assert_consistent();
    // `status` may not exist yet (nothing was ever fully synced); if it does, it is behind.
    let status = std::fs::read_to_string(mirror.dir.join("status")).ok();
    assert!(
        status
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            < up.serial()
    );

    tmpfs.remount("size=8m");
    mirror.sync().assert_ok();
    mirror.assert_consistent();
    for p in 0..6 {
        assert_eq!(texts(&mirror, &format!("big{p}")).len(), 1);
    }
}

/// A read-only filesystem: a one-line error naming the path, non-zero, nothing changed; the
/// next run after it is writable again resumes.
#[test]
fn a_read_only_mirror_is_refused_with_the_path_and_resumes_later() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"one".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let tmpfs = Tmpfs::mount(&mirror.dir, "size=4m");
    mirror.sync().assert_ok();
    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"two".to_vec())]);
    tmpfs.remount("ro");
    let before = mirror.published();
    let run = mirror.sync();
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Read-only file system"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(mirror.dir.to_str().unwrap()),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert_eq!(mirror.published(), before);

    tmpfs.remount("rw");
    mirror.sync().assert_ok();
    assert_eq!(
        texts(&mirror, "demo"),
        vec!["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    );
}

/// A small tmpfs mounted on the mirror directory, unmounted on drop. Mounting needs root,
/// which CI has; elsewhere the test fails saying so rather than passing silently.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, options: &str) -> Tmpfs {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test mounts a small tmpfs and needs root (CI runs as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let tmpfs = Tmpfs(dir.to_owned());
        tmpfs.mount_with(options);
        tmpfs
    }

    fn remount(&self, options: &str) {
        self.mount_with(&format!("remount,{options}"));
    }

    fn mount_with(&self, options: &str) {
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                options,
                "tmpfs",
                self.0.to_str().unwrap(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -o {options} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn status_reports_serials_lag_pending_projects_and_the_last_run() {
    let up = FakeUpstream::start();
    up.add_release("fine", "1.0", &[("fine-1.0.tar.gz", b"f".to_vec())]);
    up.add_release("stuck", "1.0", &[("stuck-1.0.tar.gz", b"s".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    up.add_release("stuck", "2.0", &[("stuck-2.0.tar.gz", b"s2".to_vec())]);
    up.stale_metadata("stuck", 1000);
    assert_eq!(mirror.sync().code, 1);

    let cfg = mirror.config.to_str().unwrap();
    let out = std::process::Command::new(PYMIRROR)
        .args(["status", "--config", cfg, "--json"])
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["upstream_serial"], up.serial());
    assert_eq!(report["pending_count"], 1);
    assert_eq!(report["pending"][0]["name"], "stuck");
    assert!(
        report["pending"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("stale"),
        "{report}"
    );
    let serial = report["serial"].as_u64().unwrap();
    assert!(serial < up.serial());
    assert_eq!(report["lag"], up.serial() - serial);
    assert_eq!(report["projects"], 2);
    assert_eq!(report["files"], 2);
    assert_eq!(report["bytes"], 2);
    assert_eq!(report["last_run"]["outcome"], "partial");
    assert_eq!(
        std::fs::read_to_string(mirror.dir.join("status"))
            .unwrap()
            .trim(),
        serial.to_string()
    );

    let text = std::process::Command::new(PYMIRROR)
        .args(["status", "-c", cfg])
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("pending:   1 projects") && text.contains("stuck (serial"),
        "{text}"
    );
    assert!(
        text.contains(&format!("upstream:  {} (lag", up.serial())),
        "{text}"
    );
}

/// A file placed for a project whose other file failed is on disk but recorded nowhere; when
/// upstream then removes the project, that file must still be deleted (no leak).
#[test]
fn files_placed_for_a_project_that_then_disappears_are_not_leaked() {
    let up = FakeUpstream::start();
    up.add_release(
        "half",
        "1.0",
        &[
            ("half-1.0.tar.gz", b"fine".to_vec()),
            ("half-1.0.zip", b"bad".to_vec()),
        ],
    );
    up.corrupt_downloads("half-1.0.zip", 1000);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    assert_eq!(mirror.sync().code, 1);
    let placed = mirror
        .web()
        .join(up.file_info("half-1.0.tar.gz").unwrap().path);
    assert!(placed.exists(), "the good file should have been placed");
    assert!(mirror.page("half").is_none());

    up.remove_project("half");
    mirror.sync().assert_ok();
    assert!(!placed.exists(), "a placed, never recorded file leaked");
    assert!(pymirror_testkit::mirror::snapshot(&mirror.web().join("packages")).is_empty());
}

/// The fully synced serial stays below a failing project's oldest pending change, however
/// many newer changes pile up on it.
#[test]
fn the_fully_synced_serial_stays_below_the_oldest_pending_change() {
    let up = FakeUpstream::start();
    up.add_release("stuck", "1.0", &[("stuck-1.0.tar.gz", b"1".to_vec())]);
    up.add_release("other", "1.0", &[("other-1.0.tar.gz", b"o".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let first_change = up.add_release("stuck", "2.0", &[("stuck-2.0.tar.gz", b"2".to_vec())]);
    up.stale_metadata("stuck", 1000);
    assert_eq!(mirror.sync().code, 1);
    up.add_release("stuck", "3.0", &[("stuck-3.0.tar.gz", b"3".to_vec())]);
    up.add_release("other", "2.0", &[("other-2.0.tar.gz", b"o2".to_vec())]);
    assert_eq!(mirror.sync().code, 1);
    assert_eq!(
        texts(&mirror, "other").len(),
        2,
        "the other project is held back"
    );
    // The first change to "stuck" was its release's first journal row.
    assert!(
        mirror.status_serial() < first_change - 1,
        "{} vs {first_change}",
        mirror.status_serial()
    );
    up.stale_metadata("stuck", 0);
    mirror.sync().assert_ok();
    assert_eq!(mirror.status_serial(), up.serial());
}

/// Every file of the mirror directory (not `web/`) with its bytes and mtime.
fn state_files(mirror: &Mirror) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(&mirror.dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn status_and_a_checking_verify_leave_the_database_untouched() {
    let up = FakeUpstream::start();
    up.add_release("fine", "1.0", &[("fine-1.0.tar.gz", b"f".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let cfg = mirror.config.to_str().unwrap();
    let before = state_files(&mirror);
    assert!(before.iter().any(|(n, ..)| n == "pymirror.db"));
    std::thread::sleep(Duration::from_millis(20));
    for args in [
        &["status", "--config", cfg][..],
        &["status", "--config", cfg, "--json"],
    ] {
        mirror.run(args).assert_ok();
    }
    assert_eq!(
        state_files(&mirror),
        before,
        "status changed the mirror directory"
    );
    // A verify that only checks keeps its log in verify.db, never in pymirror.db.
    for flags in [&[][..], &["--hash"], &["--repair", "--dry-run"]] {
        assert_eq!(mirror.verify(flags).code, 0);
    }
    let db = |files: &[(String, Vec<u8>, std::time::SystemTime)]| {
        files
            .iter()
            .find(|(n, ..)| n == "pymirror.db")
            .cloned()
            .unwrap()
    };
    let after = state_files(&mirror);
    assert_eq!(
        db(&after),
        db(&before),
        "a checking verify wrote pymirror.db"
    );
    assert!(after.iter().any(|(n, ..)| n == "verify.db"));
}

#[test]
fn a_schema_from_a_newer_pymirror_is_refused_in_one_line_and_left_alone() {
    let up = FakeUpstream::start();
    up.add_release("fine", "1.0", &[("fine-1.0.tar.gz", b"f".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let db_path = mirror.dir.join("pymirror.db");
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let before = std::fs::read(&db_path).unwrap();
    let cfg = mirror.config.to_str().unwrap();
    // This pymirror's schema: one migration file a version.
    let known = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count();
    let refused = format!("was written by a newer pymirror (schema 99 > {known})");
    for args in [
        &["status", "--config", cfg][..],
        &["verify", "--config", cfg],
        &["sync", "--config", cfg],
    ] {
        let run = mirror.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].contains(&refused), "{args:?}: {}", run.stderr);
    }
    assert_eq!(std::fs::read(&db_path).unwrap(), before);
}
