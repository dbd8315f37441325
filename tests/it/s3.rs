//! The served tree in a bucket (`[storage] backend = "s3"`), against a real S3-compatible
//! server (s3s-fs, see `pymirror_testkit::s3`): a sync fills it (multipart for a large file),
//! follows upstream's changes and removals, survives a kill; verify reads the bucket's
//! listing, finds a missing object and an orphan, `--repair` and `--delete-orphans` fix them;
//! nginx serves the bucket to uv and pip with `pymirror nginx-config`'s site.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pymirror_testkit::dist;
use pymirror_testkit::mirror::{Mirror, snapshot};
use pymirror_testkit::s3::S3Server;
use pymirror_testkit::serve::{Nginx, Tools, install_with_pip_and_uv, ok, run};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts};

use crate::PYMIRROR;

/// The tree as {relative path: sha256}, objects only (a bucket has no empty directories).
fn tree(root: &Path) -> BTreeMap<String, String> {
    snapshot(root)
        .into_iter()
        .map(|(p, (_, sha, _))| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, sha)
        })
        .collect()
}

/// The same upstream mirrored on the filesystem, the reference a bucket must equal.
fn reference(up: &FakeUpstream) -> BTreeMap<String, String> {
    let fs = Mirror::new(PYMIRROR, &up.url());
    fs.sync().assert_ok();
    tree(&fs.web())
}

fn publish(up: &FakeUpstream) {
    let alpha = dist::wheel("alpha", "1.0", &["beta"]);
    up.add_file(
        "alpha",
        "1.0",
        &alpha.filename,
        alpha.bytes.clone(),
        FileOpts {
            metadata: Some(alpha.metadata.clone()),
            ..FileOpts::default()
        },
    );
    up.add_release(
        "alpha",
        "1.0",
        &[("alpha-1.0.tar.gz", b"alpha sdist".to_vec())],
    );
    let beta = dist::wheel("beta", "1.0", &[]);
    up.add_file(
        "beta",
        "1.0",
        &beta.filename,
        beta.bytes.clone(),
        FileOpts::default(),
    );
    up.add_release("gone", "1.0", &[("gone-1.0.tar.gz", b"gone".to_vec())]);
}

#[test]
fn a_sync_fills_the_bucket_and_follows_changes_and_removals() {
    let s3 = S3Server::start();
    let up = FakeUpstream::start();
    publish(&up);
    // Larger than a part: uploaded in parts, completed only when all are in.
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i * 7 / 3) as u8).collect();
    up.add_release("big", "1.0", &[("big-1.0.tar.gz", big.clone())]);
    let mirror = Mirror::in_bucket(PYMIRROR, &up.url(), &s3, "pypi", "mirror/");
    mirror.sync().assert_ok();

    assert!(
        !mirror.dir.join("web").exists(),
        "nothing is written to a local web/"
    );
    assert!(mirror.dir.join("pymirror.db").is_file() && mirror.dir.join("status").is_file());
    mirror.assert_consistent();
    let got = tree(&mirror.web());
    assert_eq!(
        got,
        reference(&up),
        "the bucket is the mirror the filesystem gets"
    );
    let big_path = up.file_info("big-1.0.tar.gz").unwrap().path;
    assert_eq!(std::fs::read(mirror.web().join(&big_path)).unwrap(), big);
    assert_eq!(mirror.status_serial(), up.serial());

    // Changes and removals, applied in the next sync.
    up.add_release("beta", "2.0", &[("beta-2.0.tar.gz", b"beta two".to_vec())]);
    up.remove_project("gone");
    up.remove_file("alpha", "alpha-1.0.tar.gz");
    up.remove_project("big");
    up.yank("beta", "1.0", Some("old"));
    let gone = up.file_info("gone-1.0.tar.gz").unwrap().path;
    let sdist = up.file_info("alpha-1.0.tar.gz").unwrap().path;
    mirror.sync_with(&["--allow-mass-delete"]).assert_ok();
    mirror.assert_consistent();
    for (what, key) in [
        ("removed project's file", gone.as_str()),
        ("removed file", &sdist),
        ("removed large file", &big_path),
        ("removed project's page", "simple/gone/index.html"),
        ("removed project's JSON page", "simple/gone/index.v1_json"),
    ] {
        assert!(
            !mirror.web().join(key).exists(),
            "{what} still in the bucket: {key}"
        );
    }
    assert!(!mirror.root_links().iter().any(|l| l.href == "gone/"));
    assert_eq!(tree(&mirror.web()), reference(&up));
    assert!(!mirror.dir.join("web").exists());
}

/// A bucket kept with its database lost: the next sync finds the bucket is not empty, so it
/// looks for each file at its key and keeps it rather than fetching it again.
#[test]
fn a_bucket_kept_without_its_database_is_reused_not_fetched_again() {
    let s3 = S3Server::start();
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::in_bucket(PYMIRROR, &up.url(), &s3, "kept", "mirror/");
    mirror.sync().assert_ok();
    mirror.lose_database();
    up.reset_requests();

    mirror.sync().assert_ok();
    let fetched: Vec<String> = (up.requests().iter())
        .filter(|r| r.path.contains("/packages/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(fetched, Vec::<String>::new(), "files fetched again");
    assert_eq!(tree(&mirror.web()), reference(&up));
}

#[test]
fn verify_finds_a_missing_object_and_an_orphan_in_the_bucket_and_fixes_them() {
    let s3 = S3Server::start();
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::in_bucket(PYMIRROR, &up.url(), &s3, "pypi", "");
    mirror.sync().assert_ok();
    let clean = mirror.verify(&["--hash"]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);

    let wheel = up.file_info("beta-1.0-py3-none-any.whl").unwrap();
    let sdist = up.file_info("alpha-1.0.tar.gz").unwrap();
    let orphan = format!("packages/00/00/{}/junk.bin", "0".repeat(60));
    std::fs::remove_file(mirror.web().join(&wheel.path)).unwrap();
    std::fs::remove_file(mirror.web().join("simple/beta/index.v1_json")).unwrap();
    std::fs::create_dir_all(mirror.web().join(&orphan).parent().unwrap()).unwrap();
    std::fs::write(mirror.web().join(&orphan), b"junk").unwrap();
    // Same size, other bytes: only --hash, which streams the object, can tell.
    std::fs::write(
        mirror.web().join(&sdist.path),
        vec![b'x'; sdist.size as usize],
    )
    .unwrap();

    let line = |kind: &str, path: &str, detail: &str| format!("{kind:<9} web/{path}: {detail}");
    let run = mirror.verify(&[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&line("missing", &wheel.path, "not on disk")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&line("orphan", &orphan, "not referenced by the database")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&line("bad_page", "simple/beta/index.v1_json", "missing")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("bad_hash"), "{}", run.stdout);
    let hashed = mirror.verify(&["--hash"]);
    assert_eq!(hashed.code, 1);
    assert!(
        hashed
            .stdout
            .contains(&format!("bad_hash  web/{}", sdist.path)),
        "{}",
        hashed.stdout
    );

    let repaired = mirror.verify(&["--hash", "--repair", "--delete-orphans"]);
    assert_eq!(repaired.code, 1, "it reports what it found and fixed");
    assert_eq!(
        std::fs::read(mirror.web().join(&wheel.path)).unwrap(),
        wheel.content,
        "--repair uploads the missing object again"
    );
    assert_eq!(
        std::fs::read(mirror.web().join(&sdist.path)).unwrap(),
        sdist.content
    );
    assert!(
        !mirror.web().join(&orphan).exists(),
        "--delete-orphans deletes the orphan"
    );
    assert!(mirror.web().join("simple/beta/index.v1_json").is_file());
    let again = mirror.verify(&["--hash"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    mirror.assert_consistent();
}

/// A sync killed at several moments (uploads in flight): what is in the bucket is consistent
/// at every instant, and the next sync finishes the same bucket an uninterrupted one has.
#[test]
fn a_sync_killed_while_uploading_is_finished_by_the_next() {
    let s3 = S3Server::start();
    let mut kills = 0;
    for scenario in 0..4usize {
        let up = FakeUpstream::start();
        up.set_latency(Duration::from_millis(2));
        for p in 0..12u8 {
            up.add_release(
                &format!("p{p}"),
                "1.0",
                &[
                    (&format!("p{p}-1.0.tar.gz"), vec![p; 300 << 10]),
                    (&format!("p{p}-1.0-py3-none-any.whl"), vec![p ^ 0xff; 50]),
                ],
            );
        }
        let mirror = Mirror::in_bucket(PYMIRROR, &up.url(), &s3, &format!("kill{scenario}"), "");
        if scenario % 2 == 1 {
            mirror.sync().assert_ok();
            up.remove_project("p0");
            for p in 1..12u8 {
                let file = format!("p{p}-2.0.tar.gz");
                up.add_release(&format!("p{p}"), "2.0", &[(&file, vec![p; 200 << 10])]);
            }
        }
        up.reset_requests();
        let mut child = mirror.spawn_sync(&[]);
        let started = Instant::now();
        // Spread over the run: a first sync makes ~40 requests, the incremental one ~25.
        let n = [4, 6, 16, 14][scenario];
        while up.request_count() < n && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_micros(200));
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        kills += usize::from(!finished);
        mirror.assert_consistent();
        mirror.sync().assert_ok();
        mirror.assert_consistent();
        assert_eq!(
            std::fs::read_dir(mirror.dir.join("tmp")).unwrap().count(),
            0,
            "temporary files left"
        );
        assert_eq!(tree(&mirror.web()), reference(&up), "scenario {scenario}");
        let verified = mirror.verify(&[]);
        assert_eq!(verified.code, 0, "{}", verified.stdout);
    }
    assert!(kills >= 3, "only {kills} kills landed mid-run");
}

#[test]
fn a_missing_bucket_stops_the_sync_before_any_work_in_one_line() {
    let s3 = S3Server::start();
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::in_bucket(PYMIRROR, &up.url(), &s3, "pypi", "");
    std::fs::remove_dir(s3.root.join("pypi")).unwrap();
    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("check that bucket \"pypi\" exists at http://127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert_eq!(up.request_count(), 0, "upstream was asked");
}

#[test]
fn a_storage_mistake_is_one_line_naming_the_key() {
    let up = FakeUpstream::start();
    let mirror = Mirror::new(PYMIRROR, &up.url());
    std::fs::write(
        &mirror.config,
        format!(
            "[mirror]\ndirectory = \"{}\"\nmaster = \"{}\"\n[storage]\nbackend = \"s3\"\n",
            mirror.dir.display(),
            up.url()
        ),
    )
    .unwrap();
    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("[storage] backend = \"s3\" needs a bucket; add bucket ="),
        "{}",
        run.stderr
    );
    assert!(!mirror.dir.exists(), "nothing created");
}

/// nginx with `pymirror nginx-config`'s site for the bucket proxies to it (anonymous reads),
/// negotiates the page format, and uv and pip install through it.
#[test]
fn uv_and_pip_install_from_the_bucket_through_nginx() {
    let Some(tools) = Tools::find() else { return };
    let s3 = S3Server::start();
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::in_bucket(PYMIRROR, &up.url(), &s3, "pypi", "mirror/");
    mirror.sync().assert_ok();
    // nginx reads what the public may: the same bucket through an anonymous endpoint.
    let public = s3.public_reader();
    // nginx with the site printed for the bucket on the anonymous endpoint, `settings` more
    // [mirror] keys.
    let serve = |settings: &str| {
        let site = mirror.sandbox.path().join("public.toml");
        let config = format!(
            "[mirror]\ndirectory = \"{}\"\nmaster = \"{}\"\n{settings}{}",
            mirror.dir.display(),
            up.url(),
            public.storage_table("pypi", "mirror/")
        );
        std::fs::write(&site, config).unwrap();
        Nginx::serve_config(&tools, &mirror.bin, &site)
    };
    let nginx = serve("");
    let index = format!("{}/simple/", nginx.url());
    let curl_at = |nginx: &Nginx, accept: &str, path: &str| {
        let (accept, url) = (
            format!("Accept: {accept}"),
            format!("{}{path}", nginx.url()),
        );
        let args = ["-sS", "-D", "-", "-o", "/dev/null", "-H", &accept, &url];
        ok(&run(&tools.curl, &args)).to_ascii_lowercase()
    };
    let curl = |accept: &str, path: &str| curl_at(&nginx, accept, path);
    for (accept, want) in [
        (
            "application/vnd.pypi.simple.v1+json",
            "application/vnd.pypi.simple.v1+json",
        ),
        (
            "application/vnd.pypi.simple.v1+html",
            "application/vnd.pypi.simple.v1+html",
        ),
        ("text/html", "text/html"),
    ] {
        for path in ["/simple/", "/simple/alpha/"] {
            let head = curl(accept, path);
            assert!(
                head.starts_with("http/1.1 200"),
                "{path} {accept}: {head}{}{}",
                nginx.access_log(),
                nginx.error_log()
            );
            assert!(
                head.contains(&format!("content-type: {want}")),
                "{path} {accept}: {head}"
            );
            assert!(head.contains("vary: accept"), "{head}");
        }
    }
    assert!(curl("*/*", "/simple/alpha").starts_with("http/1.1 301"));
    assert!(curl("*/*", "/simple/nothing/").starts_with("http/1.1 404"));
    assert!(curl("*/*", "/pymirror.db").starts_with("http/1.1 404"));

    let work = tempfile::tempdir().unwrap();
    let want = ["alpha-1.0.dist-info", "beta-1.0.dist-info"];
    let [by_pip, by_uv] = install_with_pip_and_uv(&tools, &index, work.path(), "alpha");
    assert_eq!(by_pip, want);
    assert_eq!(by_uv, want);
    let log = nginx.access_log();
    assert!(
        log.contains("/packages/"),
        "files came through nginx: {log}"
    );

    // A mirror that writes one format: that page whatever is asked for.
    let json_only = serve("simple_format = \"json\"\n");
    let head = curl_at(&json_only, "text/html", "/simple/alpha/");
    assert!(
        head.starts_with("http/1.1 200")
            && head.contains("content-type: application/vnd.pypi.simple.v1+json"),
        "{head}"
    );
}
