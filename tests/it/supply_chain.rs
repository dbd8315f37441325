//! Supply-chain safety (`[filters]`): the cooldown, with the real clock in seconds (files
//! held back from downloads, pages, the root, the JSON API mirror and `versions`; exempt
//! projects; release on maturity with no upstream change; a cooldown change), and lock files
//! (uv.lock and pylock.toml pins, their hashes held against a tampered upstream, a missing
//! lock, an edited lock).

use std::time::{Duration, Instant};

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts, Pages, Personality};
use serde_json::Value;
use sha2::Digest;

use crate::PYMIRROR;
use crate::filters::{assert_project, assert_root, content, read_json, sorted};

/// The cooldown of the first part: long enough to sync and look before it ends.
const COOLDOWN: u64 = 4;

fn mirror(up: &FakeUpstream, filters: &str) -> Mirror {
    Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}json = true\n[filters]\n{filters}\n"),
    )
}

fn status(mirror: &Mirror) -> Value {
    let run = mirror.run(&[
        "status",
        "--config",
        mirror.config.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// The files the JSON API mirror lists for a project, and its releases.
fn json_api(mirror: &Mirror, project: &str) -> (Vec<String>, Vec<String>) {
    let api = read_json(&mirror.web().join(format!("json/{project}")));
    let releases = api["releases"].as_object().unwrap();
    let files: Vec<String> = releases
        .values()
        .flat_map(|r| r.as_array().unwrap())
        .map(|f| f["filename"].as_str().unwrap().to_owned())
        .collect();
    (sorted(&files), releases.keys().cloned().collect())
}

const OLD: &[&str] = &["fresh-1.0.tar.gz", "steady-1.0.tar.gz"];
const YOUNG: &[&str] = &[
    "fresh-2.0.tar.gz",
    "fresh-2.0-py3-none-any.whl",
    "brandnew-0.1.tar.gz",
];

const ALL_FRESH: [&str; 3] = ["fresh-1.0.tar.gz", YOUNG[0], YOUNG[1]];

/// Every file of `fresh` and `brandnew` mirrored and listed, every release offered.
#[track_caller]
fn assert_complete(m: &Mirror, up: &FakeUpstream) {
    assert_project(
        m,
        up,
        "fresh",
        &ALL_FRESH,
        &ALL_FRESH,
        Some(&["1.0", "2.0"]),
    );
    assert_project(m, up, "brandnew", &[YOUNG[2]], &[YOUNG[2]], Some(&["0.1"]));
}

fn add(up: &FakeUpstream, project: &str, version: &str, file: &str, opts: FileOpts) {
    up.add_file(project, version, file, content(file, 200), opts);
}

#[test]
fn the_cooldown_holds_back_fresh_uploads_until_they_come_of_age() {
    let up = FakeUpstream::start();
    // Uploaded long ago (the fake clock's default), and with no upload time at all.
    up.add_release(
        "steady",
        "1.0",
        &[("steady-1.0.tar.gz", content("steady-1.0.tar.gz", 200))],
    );
    up.add_release(
        "fresh",
        "1.0",
        &[("fresh-1.0.tar.gz", content("fresh-1.0.tar.gz", 200))],
    );
    // Uploaded just now.
    for file in ["fresh-2.0.tar.gz", "fresh-2.0-py3-none-any.whl"] {
        add(&up, "fresh", "2.0", file, FileOpts::uploaded_secs_ago(0));
    }
    add(
        &up,
        "brandnew",
        "0.1",
        "brandnew-0.1.tar.gz",
        FileOpts::uploaded_secs_ago(0),
    );
    add(
        &up,
        "certifi",
        "2026.1",
        "certifi-2026.1.tar.gz",
        FileOpts::uploaded_secs_ago(0),
    );
    let started = Instant::now();
    let m = mirror(
        &up,
        &format!("cooldown = \"{COOLDOWN}s\"\ncooldown_exempt = [\"Certifi\"]"),
    );

    let dry = m.sync_with(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let held: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("hold "))
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    assert_eq!(sorted(&held), sorted(YOUNG), "{}", dry.stdout);
    assert!(
        !dry.stdout.contains("download fresh fresh-2.0"),
        "{}",
        dry.stdout
    );

    let run = m.sync();
    run.assert_ok();
    assert!(
        run.stderr
            .contains("the cooldown holds back 3 files of 2 projects; the first comes of age at"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(COOLDOWN),
        "the test machine is too slow"
    );
    assert_project(
        &m,
        &up,
        "fresh",
        &["fresh-1.0.tar.gz"],
        &["fresh-1.0.tar.gz", YOUNG[0], YOUNG[1]],
        Some(&["1.0"]),
    );
    assert_project(
        &m,
        &up,
        "steady",
        &["steady-1.0.tar.gz"],
        &[],
        Some(&["1.0"]),
    );
    // Exempt: mirrored at once.
    assert_project(
        &m,
        &up,
        "certifi",
        &["certifi-2026.1.tar.gz"],
        &["certifi-2026.1.tar.gz"],
        Some(&["2026.1"]),
    );
    // Nothing but young files: not listed at all yet.
    assert_root(&m, &["certifi", "fresh", "steady"]);
    assert!(!m.web().join(up.file_info(YOUNG[2]).unwrap().path).exists());
    assert!(!m.web().join("json/brandnew").exists());
    assert_eq!(
        json_api(&m, "fresh"),
        (vec!["fresh-1.0.tar.gz".to_owned()], vec!["1.0".to_owned()])
    );
    m.assert_consistent();
    let s = status(&m);
    assert_eq!(s["held_back"]["files"], 3, "{s}");
    assert_eq!(s["held_back"]["projects"], 2, "{s}");
    assert_eq!(s["held_back"]["cooldown"], COOLDOWN, "{s}");
    let next = s["held_back"]["next_release"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(next > now && next <= now + COOLDOWN as i64 + 1, "{s}");
    let text = m.run(&["status", "--config", m.config.to_str().unwrap()]);
    assert!(
        text.stdout.contains("cooldown:  4s, 3 files"),
        "{}",
        text.stdout
    );

    // Nothing changes upstream; once the files are old enough, the next sync adds them.
    let serial = up.serial();
    std::thread::sleep(Duration::from_secs(COOLDOWN + 1).saturating_sub(started.elapsed()));
    let requests = up.requests().len();
    let dry = m.sync_with(&["--dry-run"]);
    let downloads: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("download "))
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    assert_eq!(sorted(&downloads), sorted(YOUNG), "{}", dry.stdout);
    assert!(!dry.stdout.contains("hold "), "{}", dry.stdout);
    m.sync().assert_ok();
    assert_eq!(up.serial(), serial);
    assert!(up.requests().len() > requests);
    assert_complete(&m, &up);
    assert_root(&m, &["brandnew", "certifi", "fresh", "steady"]);
    assert_eq!(json_api(&m, "fresh").1, ["1.0", "2.0"]);
    m.assert_consistent();
    let s = status(&m);
    assert_eq!(s["held_back"]["files"], 0, "{s}");
    assert_eq!(s["held_back"]["next_release"], Value::Null, "{s}");

    // A longer cooldown is a filter change: what it holds back is pruned...
    let settings = format!("{TEST_SETTINGS}json = true\n[filters]\n");
    m.configure(
        &up.url(),
        &format!("{settings}cooldown = \"1h\"\ncooldown_exempt = [\"certifi\"]\n"),
    );
    m.sync().assert_ok();
    assert_project(
        &m,
        &up,
        "fresh",
        &["fresh-1.0.tar.gz"],
        &ALL_FRESH,
        Some(&["1.0"]),
    );
    assert_project(&m, &up, "brandnew", &[], &[YOUNG[2]], None);
    assert_project(&m, &up, "certifi", &["certifi-2026.1.tar.gz"], &[], None);
    assert_eq!(status(&m)["held_back"]["files"], 3);
    m.assert_consistent();
    // ... and no cooldown brings it all back at once, without waiting.
    m.configure(&up.url(), &format!("{settings}cooldown = 0\n"));
    m.sync().assert_ok();
    assert_complete(&m, &up);
    assert_eq!(status(&m)["held_back"]["files"], 0);
    for file in OLD {
        assert!(m.web().join(up.file_info(file).unwrap().path).exists());
    }
    m.assert_consistent();
}

#[test]
fn cooldown_mistakes_stop_the_sync_in_one_line() {
    let up = FakeUpstream::start();
    for bad in [
        "cooldown = \"7 days\"",
        "cooldown = 7",
        "cooldown_exempt = [\"no good\"]",
    ] {
        let m = mirror(&up, bad);
        let run = m.sync();
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        let key = bad.split(' ').next().unwrap();
        assert!(
            run.stderr.contains(&format!("[filters] {key}")),
            "{bad}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert!(!m.dir.join("pymirror.db").exists());
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A uv.lock pinning `alpha` (its sdist and wheel by hash), with the project itself
/// (editable) and a git dependency that are skipped.
fn uv_lock(alpha: &str) -> String {
    let file = |name: &str| {
        format!(
            "{{ url = \"https://files.example/packages/ab/cd/{name}\", hash = \"sha256:{}\", size = 200, upload-time = \"2024-01-01T00:00:00Z\" }}",
            sha256(&content(name, 200))
        )
    };
    format!(
        r#"version = 1
revision = 2
requires-python = ">=3.9"

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}
dependencies = [{{ name = "alpha" }}, {{ name = "vendored" }}]

[[package]]
name = "alpha"
version = "{alpha}"
source = {{ registry = "https://index.example/simple" }}
sdist = {sdist}
wheels = [
    {wheel},
]

[[package]]
name = "vendored"
version = "0.3"
source = {{ git = "https://git.example/vendored?rev=v0.3#0123abcd" }}
"#,
        sdist = file(&format!("alpha-{alpha}.tar.gz")),
        wheel = file(&format!("alpha-{alpha}-py3-none-any.whl")),
    )
}

/// A pylock.toml pinning `beta` 0.6, whose sdist's hash is that of the genuine file.
fn pylock() -> String {
    format!(
        r#"lock-version = "1.0"
environments = ["sys_platform == 'linux'"]
requires-python = ">=3.9"
created-by = "uv"

[[packages]]
name = "Beta"
version = "0.6"
index = "https://index.example/simple"
sdist = {{ name = "beta-0.6.tar.gz", url = "https://files.example/b/beta-0.6.tar.gz", upload-time = 2024-01-01T00:00:00Z, size = 200, hashes = {{ sha256 = "{}" }} }}
wheels = [
    {{ url = "https://files.example/b/beta-0.6-py3-none-any.whl", size = 200, hashes = {{ sha256 = "{}" }} }},
    {{ url = "https://files.example/b/beta-0.6-cp312-cp312-win_amd64.whl", size = 200, hashes = {{ sha256 = "{}" }} }},
]

[[packages]]
name = "tools"
[packages.directory]
path = "tools"
editable = true
"#,
        sha256(&content("beta-0.6.tar.gz", 200)),
        sha256(&content("beta-0.6-py3-none-any.whl", 200)),
        "cd".repeat(32),
    )
}

#[test]
fn lock_files_pin_the_mirror_and_catch_a_tampered_upstream() {
    let up = FakeUpstream::start();
    for (project, version) in [
        ("alpha", "1.0"),
        ("alpha", "2.0"),
        ("beta", "0.5"),
        ("beta", "0.6"),
        ("gamma", "1.0"),
    ] {
        for file in [
            format!("{project}-{version}.tar.gz"),
            format!("{project}-{version}-py3-none-any.whl"),
        ] {
            // beta 0.6's sdist is not what its maintainers uploaded (nor what the lock names).
            let bytes = match file.as_str() {
                "beta-0.6.tar.gz" => content("tampered beta-0.6.tar.gz", 200),
                _ => content(&file, 200),
            };
            up.add_file(project, version, &file, bytes, FileOpts::default());
        }
    }
    let m = mirror(&up, "lockfiles = [\"locks/uv.lock\", \"pylock.toml\"]");
    let sandbox = m.sandbox.path();
    std::fs::create_dir(sandbox.join("locks")).unwrap();
    std::fs::write(sandbox.join("locks/uv.lock"), uv_lock("1.0")).unwrap();

    // A lock file that is missing stops the sync in one line, changing nothing.
    let before = m.snapshot(sandbox);
    let run = m.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("[filters] lockfiles: cannot read lock file"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("pylock.toml"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert_eq!(m.snapshot(sandbox), before);
    // So does one that is not a lock file.
    std::fs::write(sandbox.join("pylock.toml"), "[[packages]\nname = ").unwrap();
    let run = m.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("pylock.toml is not a lock file pymirror reads: not valid TOML at line 1"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);

    // The tampered file is refused and reported (exit 1); the rest of what the locks pin is
    // mirrored, and nothing they do not pin.
    std::fs::write(sandbox.join("pylock.toml"), pylock()).unwrap();
    let run = m.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let tampered = sha256(&content("tampered beta-0.6.tar.gz", 200));
    assert!(
        run.stderr.lines().any(|l| l.contains("beta-0.6.tar.gz")
            && l.contains(&tampered)
            && l.contains("lock file")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "beta: a lock file names beta-0.6-cp312-cp312-win_amd64.whl, which upstream does not list"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("vendored 0.3: its source is git"),
        "{}",
        run.stderr
    );
    let alpha1 = ["alpha-1.0.tar.gz", "alpha-1.0-py3-none-any.whl"];
    let alpha2 = ["alpha-2.0.tar.gz", "alpha-2.0-py3-none-any.whl"];
    let all_alpha = [alpha1, alpha2].concat();
    assert_project(&m, &up, "alpha", &alpha1, &all_alpha, Some(&["1.0"]));
    assert_project(
        &m,
        &up,
        "beta",
        &["beta-0.6-py3-none-any.whl"],
        &["beta-0.5.tar.gz", "beta-0.6.tar.gz"],
        Some(&["0.6"]),
    );
    assert_root(&m, &["alpha", "beta"]);
    m.assert_consistent();

    // Editing a lock is a filter change: the new pin is added, the old one pruned.
    std::fs::write(sandbox.join("locks/uv.lock"), uv_lock("2.0")).unwrap();
    let dry = m.sync_with(&["--dry-run"]);
    assert!(
        dry.stdout.contains("download alpha alpha-2.0.tar.gz"),
        "{}{}",
        dry.stdout,
        dry.stderr
    );
    assert!(
        dry.stdout.contains("delete alpha alpha-1.0.tar.gz"),
        "{}",
        dry.stdout
    );
    m.sync();
    assert_project(&m, &up, "alpha", &alpha2, &all_alpha, Some(&["2.0"]));
    m.assert_consistent();
}

/// Another mirror as upstream: HTML pages (no upload times: the JSON API gives them), a root
/// without serials (projects asked conditionally). Held back, then released with no change.
#[test]
fn the_cooldown_reads_upload_times_an_html_upstream_does_not_give() {
    let up = FakeUpstream::start_as(Personality {
        pages: Pages::HtmlOnly,
        ..Personality::mirror_like()
    });
    up.add_release(
        "steady",
        "1.0",
        &[("steady-1.0.tar.gz", content("steady-1.0.tar.gz", 200))],
    );
    add(
        &up,
        "fresh",
        "2.0",
        YOUNG[0],
        FileOpts::uploaded_secs_ago(0),
    );
    up.add_release(
        "fresh",
        "1.0",
        &[("fresh-1.0.tar.gz", content("fresh-1.0.tar.gz", 200))],
    );
    let started = Instant::now();
    let m = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}[filters]\ncooldown = \"3s\"\n"),
    );
    m.sync().assert_ok();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the test machine is too slow"
    );
    let candidates = ["fresh-1.0.tar.gz", YOUNG[0]];
    assert_project(&m, &up, "fresh", &["fresh-1.0.tar.gz"], &candidates, None);
    assert_eq!(status(&m)["held_back"]["files"], 1);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    m.sync().assert_ok();
    assert_project(&m, &up, "fresh", &candidates, &candidates, None);
    assert_eq!(status(&m)["held_back"]["files"], 0);
    m.assert_consistent();
}
