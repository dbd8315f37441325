//! `pymirror verify`: a synced mirror damaged in every way (a file deleted, truncated, a byte
//! flipped, a sidecar deleted, junk added, a page removed or edited, a stray project directory,
//! a leftover temp file) is reported exactly, in text and JSON; `--repair` and
//! `--delete-orphans` fix each and a second verify is clean; `--dry-run` changes nothing; the
//! exit codes; `--resume` after a kill; `--upstream` drift; the lock; the database is never
//! deleted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pymirror_testkit::mirror::{Mirror, Run, TEST_SETTINGS};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts};
use serde_json::Value;

use crate::PYMIRROR;

const METADATA: &[u8] = b"Metadata-Version: 2.1\nName: Alpha\nVersion: 1.0\n";

/// Alpha: a wheel with a PEP 658 sidecar and an sdist. Beta: two files. Gamma: one file.
/// Delta: quarantined (its pages list no files).
fn publish(up: &FakeUpstream) {
    up.add_file(
        "Alpha",
        "1.0",
        "alpha-1.0-py3-none-any.whl",
        b"alpha wheel bytes".to_vec(),
        FileOpts {
            metadata: Some(METADATA.to_vec()),
            ..FileOpts::default()
        },
    );
    up.add_release(
        "Alpha",
        "1.0",
        &[("alpha-1.0.tar.gz", b"alpha sdist".to_vec())],
    );
    up.add_release(
        "Beta",
        "1.0",
        &[
            ("beta-1.0.tar.gz", b"beta sdist bytes".to_vec()),
            ("beta-1.0-py3-none-any.whl", b"beta wheel!".to_vec()),
        ],
    );
    up.add_release("Gamma", "1.0", &[("gamma-1.0.tar.gz", vec![7u8; 4096])]);
    up.add_release("Delta", "1.0", &[("delta-1.0.tar.gz", b"delta".to_vec())]);
    up.set_project_status("Delta", Some(("quarantined", None)));
}

fn synced(settings: &str) -> (FakeUpstream, Mirror) {
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), settings);
    mirror.sync().assert_ok();
    (up, mirror)
}

/// `web/<path>` of a published file.
fn file_path(up: &FakeUpstream, filename: &str) -> String {
    format!("web/{}", up.file_info(filename).unwrap().path)
}

fn json_report(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr))
}

/// (kind, path) of every problem in a JSON report.
fn problems(report: &Value) -> Vec<(String, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn counts(report: &Value) -> [u64; 6] {
    [
        "missing", "bad_size", "bad_hash", "bad_page", "orphans", "drift",
    ]
    .map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    })
}

#[track_caller]
fn assert_clean(mirror: &Mirror, extra: &[&str]) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = mirror.verify(&args);
    let report = json_report(&run);
    assert_eq!(run.code, 0, "{report:#}\n{}", run.stderr);
    assert_eq!(counts(&report), [0; 6]);
    assert!(problems(&report).is_empty());
    assert_eq!(report["complete"], true);
}

/// Every file under the mirror directory except the database, with its content.
fn tree(mirror: &Mirror) -> BTreeMap<PathBuf, Vec<u8>> {
    mirror
        .snapshot(&mirror.dir)
        .into_keys()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with("pymirror.db") && !name.starts_with("verify.db") && name != ".lock"
        })
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A 60-hex directory no file lives in.
const NOBODY: &str = "000000000000000000000000000000000000000000000000000000000000";

#[test]
fn a_fresh_sync_verifies_clean_with_and_without_hashing() {
    let (_up, mirror) = synced(TEST_SETTINGS);
    let run = mirror.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with("verify complete: 6 files"),
        "5 files and a sidecar (the quarantined project holds none): {}",
        run.stdout
    );
    let report = json_report(&mirror.verify(&["--hash", "--json"]));
    assert_eq!(report["files_checked"], 6);
    // 4 projects × 3 pages, and 3 root pages.
    assert_eq!(report["pages_checked"], 15);
    let bytes: u64 = [
        "alpha wheel bytes",
        "alpha sdist",
        "beta sdist bytes",
        "beta wheel!",
    ]
    .iter()
    .map(|s| s.len() as u64)
    .sum::<u64>()
        + 4096
        + METADATA.len() as u64;
    assert_eq!(report["bytes_checked"], bytes);
    assert_eq!(report["exit_code"], 0);

    // A quarantined project's pages list no files: one that does is wrong.
    let page = mirror.web().join("simple/delta/index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<a "), "{html}");
    let link = "    <a href=\"../../packages/x/delta-1.0.tar.gz\">delta-1.0.tar.gz</a><br />\n";
    std::fs::write(
        &page,
        html.replace("  </body>", &format!("{link}  </body>")),
    )
    .unwrap();
    let report = json_report(&mirror.verify(&["--json"]));
    assert_eq!(
        problems(&report),
        [(
            "bad_page".to_owned(),
            "web/simple/delta/index.html".to_owned()
        )]
    );
}

#[test]
fn every_kind_of_damage_is_reported_exactly_and_repaired() {
    let (up, mirror) = synced(TEST_SETTINGS);
    let at = |rel: &str| mirror.dir.join(rel);
    let deleted = file_path(&up, "beta-1.0.tar.gz");
    let truncated = file_path(&up, "beta-1.0-py3-none-any.whl");
    let flipped = file_path(&up, "gamma-1.0.tar.gz");
    let sidecar = format!("{}.metadata", file_path(&up, "alpha-1.0-py3-none-any.whl"));
    let sdist = file_path(&up, "alpha-1.0.tar.gz");
    let junk_beside = format!("{}/junk.txt", &sdist[..sdist.rfind('/').unwrap()]);
    let junk_alone = format!("web/packages/00/00/{NOBODY}/junk.bin");

    std::fs::remove_file(at(&deleted)).unwrap();
    std::fs::write(at(&truncated), b"beta").unwrap();
    let mut bytes = std::fs::read(at(&flipped)).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(at(&flipped), bytes).unwrap();
    std::fs::remove_file(at(&sidecar)).unwrap();
    std::fs::write(at(&junk_beside), b"junk").unwrap();
    std::fs::create_dir_all(at(&format!("web/packages/00/00/{NOBODY}"))).unwrap();
    std::fs::write(at(&junk_alone), b"junk").unwrap();
    std::fs::remove_file(at("web/simple/beta/index.v1_json")).unwrap();
    let page = std::fs::read_to_string(at("web/simple/alpha/index.html")).unwrap();
    std::fs::write(
        at("web/simple/alpha/index.html"),
        page.replace("alpha-1.0.tar.gz</a>", "evil.tar.gz</a>"),
    )
    .unwrap();
    std::fs::create_dir_all(at("web/simple/stray")).unwrap();
    std::fs::write(at("web/simple/stray/index.html"), b"<html>stray</html>").unwrap();
    std::fs::write(at("tmp/999-1.part"), b"half a download").unwrap();

    let line = |kind: &str, path: &str, detail: &str| format!("{kind:<9} {path}: {detail}");
    let mut missing = vec![
        line("missing", &deleted, "not on disk"),
        line("missing", &sidecar, "not on disk"),
    ];
    missing.sort();
    let mut orphans = vec![
        line("orphan", "tmp/999-1.part", "leftover temporary file"),
        line("orphan", &junk_beside, "not referenced by the database"),
        line("orphan", &junk_alone, "not referenced by the database"),
        line(
            "orphan",
            "web/simple/stray/",
            "a page of a project the mirror does not hold",
        ),
    ];
    orphans.sort();
    let mut expected: Vec<String> = missing;
    expected.push(line("bad_size", &truncated, "4 bytes, expected 11"));
    let bad_hash = line(
        "bad_hash",
        &flipped,
        &format!(
            "sha256 is {}, expected {}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                std::fs::read(at(&flipped)).unwrap()
            )),
            up.file_info("gamma-1.0.tar.gz").unwrap().sha256
        ),
    );
    let pages = [
        line(
            "bad_page",
            "web/simple/alpha/index.html",
            "differs from what the database generates",
        ),
        line("bad_page", "web/simple/beta/index.v1_json", "missing"),
    ];

    // Default: no hashing, so the flipped byte goes unseen; everything else is exact.
    let run = mirror.verify(&[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let mut want = expected.clone();
    want.extend(pages.clone());
    want.extend(orphans.clone());
    let got: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(&got[..got.len() - 1], want, "{}", run.stdout);
    assert!(
        got.last()
            .unwrap()
            .contains("2 missing, 1 bad size, 0 bad hash, 2 bad pages, 4 orphans, 0 drift"),
        "{}",
        run.stdout
    );

    // --hash sees it too; the JSON report says the same.
    let run = mirror.verify(&["--hash"]);
    assert_eq!(run.code, 1);
    let mut want = expected.clone();
    want.push(bad_hash);
    want.extend(pages.clone());
    want.extend(orphans.clone());
    let got: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(&got[..got.len() - 1], want, "{}", run.stdout);
    let report = json_report(&mirror.verify(&["--hash", "--json"]));
    assert_eq!(counts(&report), [2, 1, 1, 2, 4, 0]);
    assert_eq!(report["exit_code"], 1);
    let listed: Vec<String> = problems(&report)
        .into_iter()
        .map(|(kind, path)| format!("{kind} {path}"))
        .collect();
    let from_text: Vec<String> = want
        .iter()
        .map(|l| {
            let (kind, rest) = l.split_once(' ').unwrap();
            format!("{kind} {}", rest.trim_start().split(": ").next().unwrap())
        })
        .collect();
    assert_eq!(listed, from_text);

    // A dry run says what it would do and changes nothing.
    let before = tree(&mirror);
    let run = mirror.verify(&["--hash", "--repair", "--delete-orphans", "--dry-run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("{deleted}: not on disk [would re-download]")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("differs from what the database generates [would rewrite]")
    );
    assert!(
        run.stdout
            .contains("leftover temporary file [would delete]")
    );
    assert_eq!(tree(&mirror), before, "a dry run changed the mirror");

    // --repair: files fetched again, pages rewritten, the stray page removed; orphan files stay.
    let run = mirror.verify(&["--hash", "--repair", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = json_report(&run);
    assert_eq!(report["repaired"], 7, "{report:#}");
    assert_eq!(report["not_repaired"], 0, "{report:#}");
    for (filename, rel) in [
        ("beta-1.0.tar.gz", &deleted),
        ("beta-1.0-py3-none-any.whl", &truncated),
        ("gamma-1.0.tar.gz", &flipped),
    ] {
        assert_eq!(
            std::fs::read(at(rel)).unwrap(),
            up.file_info(filename).unwrap().content
        );
    }
    assert_eq!(std::fs::read(at(&sidecar)).unwrap(), METADATA);
    assert!(!at("web/simple/stray").exists());
    assert!(at(&junk_beside).exists() && at("tmp/999-1.part").exists());
    let report = json_report(&mirror.verify(&["--hash", "--json"]));
    assert_eq!(counts(&report), [0, 0, 0, 0, 3, 0], "{report:#}");

    // --delete-orphans: the rest, and the directory it leaves empty.
    let run = mirror.verify(&["--delete-orphans"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("[deleted]"), "{}", run.stdout);
    assert!(!at(&junk_beside).exists());
    assert!(!at(&format!("web/packages/00/00/{NOBODY}")).exists());
    assert!(!at("tmp/999-1.part").exists());
    assert!(at(&sdist).exists());

    assert_clean(&mirror, &["--hash"]);
    mirror.assert_consistent();
}

#[test]
fn json_api_documents_and_root_pages_are_checked_and_rewritten() {
    let (_up, mirror) = synced(&format!("{TEST_SETTINGS}json = true\n"));
    assert_clean(&mirror, &["--hash"]);
    let at = |rel: &str| mirror.dir.join(rel);
    let alpha = std::fs::read(at("web/json/alpha")).unwrap();
    let beta = std::fs::read(at("web/pypi/beta/json")).unwrap();
    let root = std::fs::read(at("web/simple/index.html")).unwrap();

    std::fs::write(at("web/json/alpha"), b"{}\n").unwrap();
    std::fs::remove_file(at("web/pypi/beta/json")).unwrap();
    std::fs::write(
        at("web/simple/index.html"),
        [&root[..], b"<!-- -->"].concat(),
    )
    .unwrap();
    std::fs::write(at("web/json/stray"), b"{}\n").unwrap();
    // Upstream has no JSON API document for the quarantined project: none may be served.
    std::fs::write(at("web/json/delta"), b"{}\n").unwrap();

    let run = mirror.verify(&["--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = json_report(&run);
    assert_eq!(counts(&report), [0, 0, 0, 4, 1, 0], "{report:#}");
    let want = [
        ("bad_page", "web/json/alpha"),
        ("bad_page", "web/json/delta"),
        ("bad_page", "web/pypi/beta/json"),
        ("bad_page", "web/simple/index.html"),
        ("orphan", "web/json/stray"),
    ]
    .map(|(k, p)| (k.to_owned(), p.to_owned()));
    assert_eq!(problems(&report), want);

    let run = mirror.verify(&["--repair"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read(at("web/json/alpha")).unwrap(), alpha);
    assert_eq!(std::fs::read(at("web/pypi/beta/json")).unwrap(), beta);
    assert_eq!(std::fs::read(at("web/simple/index.html")).unwrap(), root);
    assert!(!at("web/json/delta").exists() && !at("web/json/stray").exists());
    assert_clean(&mirror, &[]);

    // Without a recorded digest (an older pymirror wrote them) a document must still list
    // only files the mirror holds, linked where they are.
    {
        let mut state = pymirror::state::State::open(&at("pymirror.db")).unwrap();
        let name = pymirror::types::ProjectName::new("alpha").unwrap();
        state.set_json_api_digest(&name, None).unwrap();
    }
    assert_clean(&mirror, &[]);
    let mut doc: Value = serde_json::from_slice(&alpha).unwrap();
    let mut extra = doc["urls"][0].clone();
    extra["filename"] = "alpha-9.9.tar.gz".into();
    doc["urls"].as_array_mut().unwrap().push(extra);
    std::fs::write(at("web/json/alpha"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let report = json_report(&mirror.verify(&["--json"]));
    assert_eq!(
        problems(&report),
        [("bad_page".to_owned(), "web/json/alpha".to_owned())]
    );
    assert_eq!(
        report["problems"][0]["detail"],
        "lists files the mirror does not hold, or links them elsewhere"
    );
    assert_eq!(mirror.verify(&["--repair"]).code, 1);
    assert_eq!(std::fs::read(at("web/json/alpha")).unwrap(), alpha);
    assert_clean(&mirror, &[]);
}

#[test]
fn formats_and_root_uri_are_respected() {
    let (_up, mirror) = synced(&format!(
        "{TEST_SETTINGS}simple_format = \"html\"\nroot_uri = \"https://mirror.example.org/pypi\"\n"
    ));
    assert_clean(&mirror, &["--hash"]);
    // Pages the configured format does not have are not the index's.
    std::fs::write(mirror.web().join("simple/alpha/index.v1_json"), b"{}").unwrap();
    std::fs::write(mirror.web().join("simple/index.v1_json"), b"{}").unwrap();
    let report = json_report(&mirror.verify(&["--json"]));
    assert_eq!(
        problems(&report),
        [
            (
                "orphan".to_owned(),
                "web/simple/alpha/index.v1_json".to_owned()
            ),
            ("orphan".to_owned(), "web/simple/index.v1_json".to_owned()),
        ]
    );
    assert_eq!(mirror.verify(&["--repair"]).code, 1);
    assert_clean(&mirror, &[]);
}

#[test]
fn exit_codes_and_one_line_errors() {
    let up = FakeUpstream::start();
    publish(&up);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let run = mirror.verify(&[]);
    assert_eq!(run.code, 2, "no database yet: {}", run.stderr);
    assert!(
        run.stderr.contains("run `pymirror sync` first"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);

    let run = mirror.verify(&["--dry-run"]);
    assert_eq!(run.code, 2, "--dry-run alone: {}", run.stderr);
    assert!(run.stderr.contains("--repair"), "{}", run.stderr);

    mirror.sync().assert_ok();
    assert_eq!(mirror.verify(&[]).code, 0);
    std::fs::remove_file(mirror.web().join("simple/gamma/index.html")).unwrap();
    assert_eq!(mirror.verify(&[]).code, 1);
    assert_eq!(mirror.verify(&["--dry-run", "--repair"]).code, 1);
    assert_eq!(mirror.verify(&["--repair"]).code, 1);
    assert_eq!(mirror.verify(&[]).code, 0);

    std::fs::write(
        &mirror.config,
        "[mirror]\nmaster = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let run = mirror.verify(&[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("directory"), "{}", run.stderr);
}

/// `pymirror verify` with a test hook set.
/// A verify with a test hook (a hidden flag of builds with the `test-hooks` feature).
fn verify_with_hook(mirror: &Mirror, args: &[&str], hook: &str, value: &str) -> Run {
    let mut all = vec!["verify", "--config", mirror.config.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&[hook, value]);
    mirror.run_env(&all, &[("NO_PROXY", "*")])
}

#[test]
fn an_interrupted_verify_resumes_where_it_stopped() {
    let up = FakeUpstream::start();
    for i in 0..40 {
        let content = format!("content of file {i}\n").repeat(50).into_bytes();
        up.add_release(
            &format!("p{i}"),
            "1.0",
            &[(&format!("p{i}-1.0.tar.gz"), content)],
        );
    }
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    std::fs::remove_file(mirror.dir.join(file_path(&up, "p3-1.0.tar.gz"))).unwrap();
    std::fs::write(mirror.dir.join(file_path(&up, "p30-1.0.tar.gz")), b"short").unwrap();
    let full = json_report(&mirror.verify(&["--hash", "--json"]));
    assert_eq!(full["files_checked"], 40);

    // Killed half-way through the package tree: after the temp-file and top-level checks and
    // 2,048 of the 4,096 units of 16 shards.
    let run = verify_with_hook(&mirror, &["--hash", "--json"], "--test-exit-after", "2050");
    assert_eq!(run.code, 137, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "killed before any report");

    let run = mirror.verify(&["--resume"]);
    assert_eq!(run.code, 2, "other checks cannot resume it: {}", run.stderr);
    assert!(run.stderr.contains("same flags"), "{}", run.stderr);

    let resumed = json_report(&mirror.verify(&["--hash", "--resume", "--json"]));
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["complete"], true);
    for key in [
        "files_checked",
        "bytes_checked",
        "pages_checked",
        "missing",
        "bad_size",
    ] {
        assert_eq!(resumed[key], full[key], "{key}");
    }
    assert_eq!(problems(&resumed), problems(&full));
    let this_run = resumed["this_run"]["files_checked"].as_u64().unwrap();
    assert!(
        this_run > 0 && this_run < 40,
        "the resumed run checked {this_run} of 40 files"
    );
    let hashed = resumed["this_run"]["bytes_checked"].as_u64().unwrap();
    assert!(hashed < full["bytes_checked"].as_u64().unwrap());

    // Nothing left to resume: a fresh verify.
    let again = json_report(&mirror.verify(&["--hash", "--resume", "--json"]));
    assert_eq!(again["resumed"], false);
    assert_eq!(again["this_run"]["files_checked"], 40);
}

#[test]
fn upstream_drift_is_reported_and_repair_queues_it_for_the_next_sync() {
    let (up, mirror) =
        synced("workers = 4\nmetadata_workers = 2\nretry_delay = 0.01\nfsync = false\n");
    assert_clean(&mirror, &["--upstream"]);
    let beta_serial = up.add_release("Beta", "2.0", &[("beta-2.0.tar.gz", b"beta two".to_vec())]);
    let new_serial = up.add_release(
        "Newcomer",
        "1.0",
        &[("newcomer-1.0.tar.gz", b"new".to_vec())],
    );
    up.remove_project("Gamma");
    up.set_latency(std::time::Duration::from_millis(20));
    up.reset_max_in_flight();

    let run = mirror.verify(&["--upstream", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = json_report(&run);
    assert_eq!(counts(&report), [0, 0, 0, 0, 0, 3], "{report:#}");
    let details: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let beta_now = mirror.page_serial("beta");
    assert_eq!(
        details,
        [
            (
                "web/simple/beta/".to_owned(),
                format!("the mirror has serial {beta_now}, upstream {beta_serial}")
            ),
            (
                "web/simple/gamma/".to_owned(),
                "upstream no longer has this project".to_owned()
            ),
            (
                "web/simple/newcomer/".to_owned(),
                format!("upstream has this project (serial {new_serial}); the mirror does not")
            ),
        ]
    );
    assert_eq!(report["projects_compared"], 4);
    // Two projects at a time, each asked for its JSON API answer and PEP 691 page together
    // (as a sync asks).
    assert!(
        up.max_in_flight() <= 4,
        "{} requests at once, metadata_workers = 2",
        up.max_in_flight()
    );
    // The local checks know nothing of upstream.
    assert_clean(&mirror, &[]);

    let run = mirror.verify(&["--upstream", "--repair"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("[queued for the next sync]").count(),
        3,
        "{}",
        run.stdout
    );
    let status = mirror.run(&[
        "status",
        "--json",
        "--config",
        mirror.config.to_str().unwrap(),
    ]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["pending_count"], 3, "{status:#}");

    up.set_latency(std::time::Duration::ZERO);
    mirror.sync().assert_ok();
    assert_clean(&mirror, &["--upstream", "--hash"]);
}

#[test]
fn a_repair_beside_a_running_sync_is_refused_naming_its_pid() {
    let up = FakeUpstream::start();
    publish(&up);
    up.set_latency(std::time::Duration::from_millis(500));
    let mirror = Mirror::new(PYMIRROR, &up.url());
    let mut sync = mirror.spawn_sync(&[]);
    let pid = sync.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(mirror.dir.join(".lock"))
        .unwrap_or_default()
        .trim()
        != pid
        || !mirror.dir.join("pymirror.db").exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for flag in ["--repair", "--delete-orphans"] {
        let started = std::time::Instant::now();
        let run = mirror.verify(&[flag]);
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("pid {pid}")), "{}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "not at once"
        );
    }
    // A read-only verify runs beside it, and says so.
    let run = mirror.verify(&[]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("a sync (pid {pid}) is running")),
        "{}",
        run.stderr
    );
    sync.kill().unwrap();
    sync.wait().unwrap();
}

#[test]
fn orphan_deletion_never_deletes_the_database() {
    let (_up, mirror) = synced(TEST_SETTINGS);
    let db = mirror.dir.join("pymirror.db");
    let copy = mirror.dir.join("tmp/copy-of-db.part");
    std::fs::hard_link(&db, &copy).unwrap();
    let dir = mirror.web().join(format!("packages/00/00/{NOBODY}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&db, dir.join("evil")).unwrap();

    let run = mirror.verify(&["--delete-orphans"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "tmp/copy-of-db.part: leftover temporary file [not deleted: refused: it is {}",
            db.display()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "{NOBODY}/evil: not referenced by the database [deleted]"
        )),
        "{}",
        run.stdout
    );
    assert!(copy.exists(), "the hard link to the database was deleted");
    assert!(
        !dir.join("evil").exists(),
        "the symlink itself is an orphan"
    );
    assert!(db.exists());
    std::fs::remove_file(&copy).unwrap();
    assert_clean(&mirror, &["--hash"]);
}

#[test]
fn a_stopped_verify_reports_what_it_found_and_resume_finishes_it() {
    let (up, mirror) = synced(TEST_SETTINGS);
    std::fs::remove_file(mirror.dir.join(file_path(&up, "gamma-1.0.tar.gz"))).unwrap();
    // Stopped (as by SIGINT) half-way through the package tree.
    let run = verify_with_hook(&mirror, &["--json"], "--test-stop-after", "2050");
    let report = json_report(&run);
    assert_eq!(report["complete"], false, "{report:#}");
    assert!(
        run.stderr.contains("verify --resume"),
        "the log says how to continue: {}",
        run.stderr
    );
    // 2,048 units of 16 shards: everything under packages/00/ to packages/7f/ was checked.
    let path = up.file_info("gamma-1.0.tar.gz").unwrap().path;
    let checked = u8::from_str_radix(&path["packages/".len()..][..2], 16).unwrap() < 0x80;
    assert_eq!(report["missing"], u64::from(checked), "{report:#}");
    // Problems found: 1; nothing found yet, but not everything checked: 2.
    assert_eq!(run.code, if checked { 1 } else { 2 }, "{report:#}");

    let run = mirror.verify(&["--resume", "--json"]);
    let report = json_report(&run);
    assert_eq!(run.code, 1);
    assert_eq!(
        (report["complete"].clone(), report["resumed"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(counts(&report), [1, 0, 0, 0, 0, 0]);
    assert_eq!(report["files_checked"], 6);
}

#[test]
fn an_unreachable_upstream_leaves_the_comparison_to_resume() {
    let (up, mirror) = synced(TEST_SETTINGS);
    up.set_xmlrpc_status(Some(500));
    let run = mirror.verify(&["--upstream"]);
    assert_eq!(
        run.code, 2,
        "nothing found, not everything checked: {}",
        run.stderr
    );
    assert!(run.stdout.contains("verify interrupted"), "{}", run.stdout);
    assert!(run.stderr.contains("--upstream --resume"), "{}", run.stderr);
    up.set_xmlrpc_status(None);
    let report = json_report(&mirror.verify(&["--upstream", "--resume", "--json"]));
    assert_eq!(report["resumed"], true);
    assert_eq!(report["complete"], true);
    assert_eq!(report["exit_code"], 0, "{report:#}");
    assert_eq!(
        report["this_run"]["files_checked"], 0,
        "the local checks were done"
    );
    assert_eq!(report["projects_compared"], 4);
}

#[test]
fn what_the_filters_leave_out_is_neither_missing_nor_drift() {
    let settings = format!(
        "{TEST_SETTINGS}\n[filters]\nblocklist = [\"gamma\"]\nexclude_versions = [\"^2\\\\.\"]\n"
    );
    let up = FakeUpstream::start();
    publish(&up);
    up.add_release("Beta", "2.0", &[("beta-2.0.tar.gz", b"beta two".to_vec())]);
    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &settings);
    mirror.sync().assert_ok();
    assert!(!mirror.web().join("simple/gamma").exists());
    assert!(!mirror.dir.join(file_path(&up, "beta-2.0.tar.gz")).exists());
    assert_clean(&mirror, &["--hash", "--upstream"]);

    // A filter the mirror has not been synced with yet: the project it now leaves out drifts.
    std::fs::write(
        &mirror.config,
        std::fs::read_to_string(&mirror.config).unwrap().replace(
            "blocklist = [\"gamma\"]",
            "blocklist = [\"gamma\", \"alpha\"]",
        ),
    )
    .unwrap();
    let report = json_report(&mirror.verify(&["--upstream", "--json"]));
    assert_eq!(
        problems(&report),
        [("drift".to_owned(), "web/simple/alpha/".to_owned())]
    );
    assert_eq!(
        report["problems"][0]["detail"],
        "the filters leave this project out: it is in the blocklist"
    );
}
