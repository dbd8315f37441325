//! `pymirror verify`: a synced mirror damaged in every way (a file deleted, truncated, a byte
//! flipped, a sidecar deleted, junk added, a page removed or edited, a stray project directory,
//! a leftover temp file) is reported exactly, in text and JSON; `--repair` and
//! `--delete-orphans` fix each and a second verify is clean; `--dry-run` changes nothing; the
//! exit codes; `--resume` after a kill; `--upstream` drift; the lock; the database is never
//! deleted.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use support::mirror::{Mirror, Run, TEST_SETTINGS};
use support::upstream::{FakeUpstream, FileOpts};

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
    let mirror = Mirror::with_settings(&up.url(), settings);
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
            !name.starts_with("pymirror.db") && name != ".lock"
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
