//! Symlinks and special files planted in the mirror directory (issue 16, the filesystem part):
//! `tmp/`, `.lock`, the served tree's pages, files and directories. Nothing is read, written or
//! deleted through them; each run ends in bounded time, and everything outside the mirror
//! directory keeps its bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pymirror_testkit::mirror::{Mirror, Run, TEST_SETTINGS, snapshot};
use pymirror_testkit::upstream::{FakeUpstream, RawAnswer};

use crate::PYMIRROR;

type Tree = std::collections::BTreeMap<PathBuf, (u64, String, std::time::SystemTime)>;

/// A directory beside the mirror (`sandbox/outside`) holding a few files, and its snapshot.
fn outside(mirror: &Mirror) -> (PathBuf, Tree) {
    let out = mirror.sandbox.path().join("outside");
    std::fs::create_dir_all(out.join("sub")).unwrap();
    std::fs::write(out.join("a"), b"x\n").unwrap();
    std::fs::write(out.join("sub/b"), b"y\n").unwrap();
    std::fs::write(out.join("config.txt"), b"operator's settings\n").unwrap();
    let before = snapshot(&out);
    (out, before)
}

#[track_caller]
fn untouched(out: &Path, before: &Tree) {
    assert_eq!(
        &snapshot(out),
        before,
        "something outside the mirror changed"
    );
}

fn symlink(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// `pymirror <args>`, killed (and the test failed) if it has not finished in 60 s: a read that
/// follows a symlink to /dev/zero never ends.
fn run_bounded(mirror: &Mirror, args: &[&str]) -> Run {
    let mut cmd = Command::new(&mirror.bin);
    cmd.args(args)
        .arg("--config")
        .arg(&mirror.config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_ascii_lowercase());
    }
    let mut child = cmd.env("NO_PROXY", "*").spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("pymirror {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

#[test]
fn a_symlinked_tmp_is_refused_and_its_target_kept() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"demo".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let (out, before) = outside(&mirror);
    std::fs::create_dir_all(&mirror.dir).unwrap();
    symlink(&out, &mirror.dir.join("tmp"));

    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let tmp = mirror.dir.join("tmp").display().to_string();
    assert!(
        run.stderr.contains(&tmp) && run.stderr.contains("is a symlink"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("replace it with a directory"),
        "{}",
        run.stderr
    );
    untouched(&out, &before);
    assert!(mirror.page("demo").is_none());
}

#[test]
fn a_symlinked_lock_is_refused_and_its_target_kept() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"demo".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let (out, before) = outside(&mirror);
    symlink(&out.join("config.txt"), &mirror.dir.join(".lock"));

    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(".lock is a symlink") && run.stderr.contains("remove it"),
        "{}",
        run.stderr
    );
    untouched(&out, &before);

    // Once removed, the next run takes the lock as usual.
    std::fs::remove_file(mirror.dir.join(".lock")).unwrap();
    mirror.sync().assert_ok();
    assert_eq!(mirror.links("demo").len(), 1);

    // verify, which only probes the lock, does not open it through a symlink either.
    std::fs::remove_file(mirror.dir.join(".lock")).unwrap();
    symlink(&out.join("config.txt"), &mirror.dir.join(".lock"));
    let run = run_bounded(&mirror, &["verify"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(".lock is a symlink"), "{}", run.stderr);
    untouched(&out, &before);
}

#[test]
fn json_api_documents_are_never_deleted_through_a_symlink() {
    let up = FakeUpstream::start();
    for name in ["one", "two", "three"] {
        up.add_release(
            name,
            "1.0",
            &[(&format!("{name}-1.0.tar.gz"), name.as_bytes().to_vec())],
        );
    }
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}json = true\n"),
    );
    mirror.sync().assert_ok();
    let (out, _) = outside(&mirror);
    let web = mirror.web();
    let gone = |name: &str| {
        up.serve_response(
            &format!("/pypi/{name}/json"),
            RawAnswer {
                status: 404,
                headers: Vec::new(),
                body: b"not found".to_vec(),
            },
        );
        up.touch(name);
    };

    // The JSON API stops answering for `one`; the PEP 691 page still does, so its documents
    // go. The whole json/ tree is a symlink to a copy outside.
    let json_copy = out.join("json");
    std::fs::create_dir(&json_copy).unwrap();
    for entry in std::fs::read_dir(web.join("json")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), json_copy.join(entry.file_name())).unwrap();
    }
    std::fs::remove_dir_all(web.join("json")).unwrap();
    symlink(&json_copy, &web.join("json"));
    let before = snapshot(&out);
    gone("one");
    let run = mirror.sync();
    assert!(run.stderr.contains("is a symlink"), "{}", run.stderr);
    untouched(&out, &before);
    assert!(is_symlink(&web.join("json")));
    std::fs::remove_file(web.join("json")).unwrap();
    std::fs::create_dir(web.join("json")).unwrap();

    // two: its pypi/two/ directory is a symlink to a copy outside; three: the document
    // itself is a symlink to a file outside.
    let pypi_copy = out.join("pypi-two");
    std::fs::create_dir(&pypi_copy).unwrap();
    std::fs::copy(web.join("pypi/two/json"), pypi_copy.join("json")).unwrap();
    std::fs::remove_dir_all(web.join("pypi/two")).unwrap();
    symlink(&pypi_copy, &web.join("pypi/two"));
    let three = web.join("pypi/three/json");
    std::fs::remove_file(&three).unwrap();
    symlink(&out.join("config.txt"), &three);
    let before = snapshot(&out);
    gone("two");
    gone("three");
    let run = mirror.sync();
    untouched(&out, &before);
    // A symlinked directory on the way is refused and reported; a symlink at the key itself
    // is removed as a link, never followed.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("pypi/two/json") && l.contains("is a symlink")),
        "{}",
        run.stderr
    );
    assert!(is_symlink(&web.join("pypi/two")));
    assert!(!is_symlink(&three) && !three.exists(), "{}", run.stderr);
    assert_eq!(mirror.links("three").len(), 1);
}

#[test]
fn files_and_pages_symlinked_to_dev_zero_are_never_read() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"demo one".to_vec())]);
    up.add_release("copy", "1.0", &[("copy-1.0.tar.gz", b"copy one".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let (out, _) = outside(&mirror);
    let web = mirror.web();
    // Before the first sync: a file's key is a symlink to /dev/zero, another's to a file
    // outside with exactly the right bytes (adopting it would serve whatever it later holds).
    let demo = up.file_info("demo-1.0.tar.gz").unwrap();
    let copy = up.file_info("copy-1.0.tar.gz").unwrap();
    std::fs::write(out.join("copy-1.0.tar.gz"), &copy.content).unwrap();
    let before = snapshot(&out);
    symlink(Path::new("/dev/zero"), &web.join(&demo.path));
    symlink(&out.join("copy-1.0.tar.gz"), &web.join(&copy.path));
    let run = run_bounded(&mirror, &["sync"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(is_regular(&web.join(&demo.path)));
    assert!(is_regular(&web.join(&copy.path)));
    assert_eq!(std::fs::read(web.join(&demo.path)).unwrap(), demo.content);

    // A page symlinked to /dev/zero: the next sync replaces it without reading it.
    let page = web.join("simple/demo/index.html");
    std::fs::remove_file(&page).unwrap();
    symlink(Path::new("/dev/zero"), &page);
    up.add_release("demo", "2.0", &[("demo-2.0.tar.gz", b"demo two".to_vec())]);
    let run = run_bounded(&mirror, &["sync"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(is_regular(&page));
    assert_eq!(mirror.links("demo").len(), 2);

    // verify (and verify --hash) report such symlinks, in bounded time.
    std::fs::remove_file(&page).unwrap();
    symlink(Path::new("/dev/zero"), &page);
    std::fs::remove_file(web.join(&demo.path)).unwrap();
    symlink(Path::new("/dev/zero"), &web.join(&demo.path));
    for args in [&["verify"][..], &["verify", "--hash"][..]] {
        let run = run_bounded(&mirror, args);
        assert_eq!(run.code, 1, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("simple/demo/index.html"),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains(&demo.path), "{}", run.stdout);
    }
    untouched(&out, &before);
}

#[test]
fn a_symlink_in_packages_fails_only_its_project() {
    let up = FakeUpstream::start();
    up.add_release("aaa-bad", "1.0", &[("aaa_bad-1.0.tar.gz", b"bad".to_vec())]);
    let others: Vec<String> = (1..=6).map(|i| format!("p{i:02}")).collect();
    for name in &others {
        up.add_release(
            name,
            "1.0",
            &[(&format!("{name}-1.0.tar.gz"), name.as_bytes().to_vec())],
        );
    }
    // One at a time, the bad project first: a run that stops at it mirrors nothing else.
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        "workers = 1\nmetadata_workers = 1\nretry_delay = 0.01\nfsync = false\n",
    );
    let (out, before) = outside(&mirror);
    let bad = up.file_info("aaa_bad-1.0.tar.gz").unwrap();
    let shard: String = bad.path.split('/').take(3).collect::<Vec<_>>().join("/");
    symlink(&out.join("sub"), &mirror.web().join(&shard));

    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("disk error"), "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("aaa-bad:") && l.contains("is a symlink"))
        .unwrap_or_else(|| panic!("no line about aaa-bad's symlink:\n{}", run.stderr));
    assert!(
        line.contains("WARN") && line.contains("left queued"),
        "{line}"
    );
    for name in &others {
        assert_eq!(mirror.links(name).len(), 1, "{name}: {}", run.stderr);
    }
    assert!(mirror.page("aaa-bad").is_none());
    untouched(&out, &before);

    // Also at the file's own hash directory: refused the same way.
    std::fs::remove_file(mirror.web().join(&shard)).unwrap();
    let hash_dir = Path::new(&bad.path).parent().unwrap();
    symlink(&out.join("sub"), &mirror.web().join(hash_dir));
    let run = mirror.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("disk error"), "{}", run.stderr);
    assert!(run.stderr.contains("is a symlink"), "{}", run.stderr);
    untouched(&out, &before);

    // Removed, the project is mirrored on the next run.
    std::fs::remove_file(mirror.web().join(hash_dir)).unwrap();
    mirror.sync().assert_ok();
    assert_eq!(mirror.links("aaa-bad").len(), 1);
}

#[test]
fn a_status_file_symlinked_out_is_replaced_never_read_or_written_through() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", b"demo".to_vec())]);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let (out, before) = outside(&mirror);
    let status = mirror.dir.join("status");
    for target in [Path::new("/dev/zero"), &out.join("config.txt")] {
        let _ = std::fs::remove_file(&status);
        symlink(target, &status);
        up.touch("demo");
        let run = run_bounded(&mirror, &["sync"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(is_regular(&status));
        assert_eq!(mirror.status_serial(), up.serial());
    }
    untouched(&out, &before);
}
