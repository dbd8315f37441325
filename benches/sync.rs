//! Sync benchmark: a generated upstream (the tests' fake index on loopback, with optional
//! injected latency) synced by the real `pymirror` binary, next to a baseline client that
//! works the way bandersnatch does: N workers, each taking one project at a time, fetching its
//! metadata and then its files one after another.
//!
//! `cargo bench --bench sync -- [--projects N] [--files N] [--latency-ms A,B] [--workers N]
//!  [--baseline-workers N] [--no-baseline] [--fsync] [--dir DIR] [--vs-bandersnatch PATH]
//!  [--repeat N] [--max-kib N] [--hold]` (`--hold`: only serve the upstream, at the first latency, to profile
//!  by hand)
//! Prints wall time and CPU time (wait4's rusage) and peak RSS (sampled VmHWM) of pymirror,
//! and the requests and bytes the upstream served.
//!
//! `--bombs` (the benchmark of record for memory under hostile metadata): 16 projects whose
//! JSON API document and PEP 691 page are gzip bombs, each decompressing to just under
//! `max_metadata_bytes` (`--bomb-bytes`, default 256 MiB - 4 KiB), synced by pymirror at its
//! defaults; prints its peak RSS.
//!
//! `--rate-limit N` (the benchmark of record for a rate-limited upstream): the upstream
//! answers 429 (`Retry-After: 1`) beyond N requests a second; pymirror at its defaults syncs
//! it at the first `--latency-ms`; prints the share of 429 answers overall and after the first
//! `SETTLE` seconds, and the rate achieved against N.
//!
//! `--vs-bandersnatch PATH` (the `bandersnatch` executable; `scripts/bench --vs-bandersnatch`
//! installs 8.2.0 and passes it) is the benchmark of record: at each latency, bandersnatch
//! and pymirror, both at their defaults (bandersnatch with `workers = 10`, its maximum),
//! mirror the same upstream in the same run, and the ratios are printed. Before each tool's
//! run the bench waits until file creation costs what it does on a quiet filesystem
//! (`measure::quiet_filesystem`; the "create µs" column, 6 minutes at most), so neither tool
//! pays for the inodes a previous run freed. `--repeat N` runs the pair N times at each
//! latency, alternating, and takes the ratios from each tool's medians: the kernel's share of
//! a run varies by a third from one run to the next, so one pair alone can mislead.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pymirror_testkit::measure;
use pymirror_testkit::upstream::FakeUpstream;
use sha2::Digest;

/// The binary under test, built by Cargo for this package's benches.
const PYMIRROR: &str = env!("CARGO_BIN_EXE_pymirror");

struct Args {
    projects: usize,
    files: usize,
    /// Files are between 1 KiB and this many KiB (`--max-kib`, default 24).
    max_kib: usize,
    latencies: Vec<u64>,
    workers: usize,
    baseline_workers: usize,
    baseline: bool,
    fsync: bool,
    /// Where mirrors are made (filesystem matters: file creation is most of the CPU).
    dir: Option<std::path::PathBuf>,
    /// The bandersnatch executable to run side by side with pymirror at its defaults.
    bandersnatch: Option<std::path::PathBuf>,
    /// Decompressed size of each bomb (`--bombs`), if that mode is asked.
    bombs: Option<usize>,
    /// Requests per second the upstream allows (`--rate-limit`), if that mode is asked.
    rate_limit: Option<f64>,
    /// Only serve the generated upstream at the first latency, for profiling by hand.
    hold: bool,
    /// Side-by-side runs per tool and latency (`--vs-bandersnatch`).
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args {
        projects: 2000,
        files: 10,
        max_kib: 24,
        latencies: vec![0, 50],
        workers: 64,
        baseline_workers: 10,
        baseline: true,
        fsync: false,
        dir: None,
        bandersnatch: None,
        bombs: None,
        rate_limit: None,
        hold: false,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--projects" => a.projects = value().parse().unwrap(),
            "--files" => a.files = value().parse().unwrap(),
            "--max-kib" => a.max_kib = value().parse::<usize>().unwrap().max(2),
            "--latency-ms" => {
                a.latencies = value().split(',').map(|s| s.parse().unwrap()).collect()
            }
            "--workers" => a.workers = value().parse().unwrap(),
            "--baseline-workers" => a.baseline_workers = value().parse().unwrap(),
            "--no-baseline" => a.baseline = false,
            "--fsync" => a.fsync = true,
            "--dir" => a.dir = Some(value().into()),
            "--vs-bandersnatch" => a.bandersnatch = Some(value().into()),
            "--bombs" => a.bombs = a.bombs.or(Some((256 << 20) - 4096)),
            "--bomb-bytes" => a.bombs = Some(value().parse().unwrap()),
            "--rate-limit" => a.rate_limit = Some(value().parse().unwrap()),
            "--hold" => a.hold = true,
            "--repeat" => a.repeat = value().parse::<usize>().unwrap().max(1),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Deterministic file sizes between 1 KiB and `max_kib` KiB (at the default 24, median
/// ~10 KiB).
fn file_bytes(project: usize, file: usize, max_kib: usize) -> Vec<u8> {
    let seed = (project * 7919 + file * 104_729) as u64;
    let spread = ((max_kib - 1) * 1024) as u64;
    let size = 1024 + (seed.wrapping_mul(2_654_435_761) % spread) as usize;
    (0..size).map(|i| (seed as usize + i * 131) as u8).collect()
}

fn publish(up: &FakeUpstream, projects: usize, files: usize, max_kib: usize) -> u64 {
    let mut total = 0;
    for p in 0..projects {
        let name = format!("bench-project-{p}");
        for f in 0..files {
            let version = format!("1.{}", f / 2);
            let filename = if f % 2 == 0 {
                format!("bench_project_{p}-{version}-py3-none-any.whl")
            } else {
                format!("bench_project_{p}-{version}.tar.gz")
            };
            let bytes = file_bytes(p, f, max_kib);
            total += bytes.len() as u64;
            up.add_release(&name, &version, &[(&filename, bytes)]);
        }
    }
    total
}

/// One project at a time per worker, files one after another: the shape of bandersnatch's
/// sync loop. Verifies sha256 and writes each file into the mirror layout, like a real client
/// (it records no state and writes no index pages, so it does less work than pymirror).
async fn baseline(master: &str, projects: usize, workers: usize, dir: &Path) -> Duration {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let start = Instant::now();
    let dir = Arc::new(dir.to_owned());
    futures::stream::iter(0..projects)
        .map(|p| {
            let (client, dir) = (client.clone(), dir.clone());
            let url = format!("{master}/pypi/bench-project-{p}/json");
            async move {
                let body = client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for files in json["releases"].as_object().unwrap().values() {
                    for f in files.as_array().unwrap() {
                        let body = client
                            .get(f["url"].as_str().unwrap())
                            .send()
                            .await
                            .unwrap()
                            .bytes()
                            .await
                            .unwrap();
                        assert_eq!(
                            hex::encode(sha2::Sha256::digest(&body)),
                            f["digests"]["sha256"].as_str().unwrap()
                        );
                        // Same tree as a mirror: web/packages/aa/bb/<hash>/<file>.
                        let url = f["url"].as_str().unwrap();
                        let rel = &url[url.find("/packages/").unwrap() + 1..];
                        let dest = dir.join(rel);
                        tokio::fs::create_dir_all(dest.parent().unwrap())
                            .await
                            .unwrap();
                        tokio::fs::write(dest, &body).await.unwrap();
                    }
                }
            }
        })
        .buffer_unordered(workers)
        .collect::<Vec<()>>()
        .await;
    start.elapsed()
}

/// bandersnatch's workers: its maximum (its default is 3).
const BANDERSNATCH_WORKERS: usize = 10;

/// One measured run, for the side-by-side table.
struct Row {
    wall: f64,
    cpu: f64,
    /// The kernel's share of `cpu` (file creation, mostly: the same for both tools).
    sys: f64,
    rss_mib: i64,
    requests: u64,
    /// What a file create cost just before the run (µs of CPU): see `measure::quiet_filesystem`.
    create_us: f64,
}

impl Row {
    fn print(&self, label: &str, latency: u64) {
        println!(
            "{:<34} {:>6}ms {:>9.2} {:>9.2} {:>9.2} {:>9} MiB {:>9} {:>9.0}",
            label,
            latency,
            self.wall,
            self.cpu,
            self.sys,
            self.rss_mib,
            self.requests,
            self.create_us
        );
    }
}

fn measured(m: &measure::Measured, up: &FakeUpstream, create_us: f64) -> Row {
    Row {
        wall: m.wall.as_secs_f64(),
        cpu: (m.user + m.sys).as_secs_f64(),
        sys: m.sys.as_secs_f64(),
        rss_mib: m.max_rss_kib / 1024,
        requests: up.request_count() as u64,
        create_us,
    }
}

/// Distribution files under a `packages/` tree (PEP 658 sidecars not counted).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() && !e.file_name().to_string_lossy().ends_with(".metadata") => 1,
            _ => 0,
        })
        .sum()
}

/// bandersnatch 8.2.0 and pymirror, both at their defaults, on the same upstream in one run,
/// `a.repeat` times each at each latency; the ratios are the medians'.
fn versus(
    a: &Args,
    bandersnatch: &Path,
    up: &FakeUpstream,
    tempdir: &dyn Fn() -> tempfile::TempDir,
) {
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>13} {:>9} {:>9}",
        "run", "latency", "wall s", "cpu s", "of it sys", "peak RSS", "requests", "create µs"
    );
    let want = a.projects * a.files;
    // Kept until the end: deleting the trees would make the next run's file creation dearer.
    let mut keep = Vec::new();
    for &latency in &a.latencies {
        up.set_latency(Duration::from_millis(latency));
        let (mut theirs, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..a.repeat {
            let sandbox = tempdir();
            let conf = sandbox.path().join("bandersnatch.conf");
            std::fs::write(
                &conf,
                format!(
                    "[mirror]\ndirectory = {}\nmaster = {}\njson = false\ntimeout = 30\n\
                     global-timeout = 18000\nworkers = {BANDERSNATCH_WORKERS}\nhash-index = false\n\
                     simple-format = ALL\nstop-on-error = false\nstorage-backend = filesystem\n\
                     verifiers = 3\ncompare-method = hash\nallow-non-https = true\n",
                    sandbox.path().join("bandersnatch").display(),
                    up.url()
                ),
            )
            .unwrap();
            let create_us = measure::quiet_filesystem(sandbox.path());
            up.reset_requests();
            let m = measure::run(bandersnatch, &["-c", conf.to_str().unwrap(), "mirror"]);
            assert_eq!(m.code, 0, "bandersnatch failed");
            let row = measured(&m, up, create_us);
            let held = count_files(&sandbox.path().join("bandersnatch/web/packages"));
            assert_eq!(held, want, "bandersnatch mirrored {held} of {want} files");
            row.print(
                &format!("bandersnatch 8.2.0 (workers={BANDERSNATCH_WORKERS})"),
                latency,
            );
            theirs.push(row);
            let config = measure::default_config(sandbox.path(), &up.url());
            let create_us = measure::quiet_filesystem(sandbox.path());
            up.reset_requests();
            let m =
                measure::run_pymirror(PYMIRROR, &["sync", "--config", config.to_str().unwrap()]);
            assert_eq!(m.code, 0, "pymirror failed");
            let row = measured(&m, up, create_us);
            let held = count_files(&sandbox.path().join("mirror/web/packages"));
            assert_eq!(held, want, "pymirror mirrored {held} of {want} files");
            row.print("pymirror (defaults)", latency);
            ours.push(row);
            keep.push(sandbox);
        }
        let (theirs, ours) = (Median::of(&theirs), Median::of(&ours));
        let files = want.max(1) as f64;
        println!(
            "{:<34} {:>6}ms wall {:.1}x faster, CPU {:.1}x less ({:.0} vs {:.0} µs per file), \
             peak RSS {:.1}x less, requests {} vs {}{}",
            "ratio (bandersnatch / pymirror)",
            latency,
            theirs.wall / ours.wall,
            theirs.cpu / ours.cpu,
            theirs.cpu * 1e6 / files,
            ours.cpu * 1e6 / files,
            theirs.rss_mib / ours.rss_mib.max(1.0),
            theirs.requests,
            ours.requests,
            match a.repeat {
                1 => String::new(),
                n => format!(" (medians of {n} runs each)"),
            }
        );
    }
}

/// Each column's median over a tool's runs at one latency.
struct Median {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    requests: u64,
}

impl Median {
    fn of(rows: &[Row]) -> Median {
        let median = |f: &dyn Fn(&Row) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            match v.len() % 2 {
                1 => v[v.len() / 2],
                _ => (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0,
            }
        };
        Median {
            wall: median(&|r| r.wall),
            cpu: median(&|r| r.cpu),
            rss_mib: median(&|r| r.rss_mib as f64),
            requests: median(&|r| r.requests as f64).round() as u64,
        }
    }
}

/// 16 projects whose JSON API document and PEP 691 page are gzip bombs of `bytes` each
/// (valid documents padded with spaces), synced at defaults, all at once: peak RSS.
fn bombs(bytes: usize, tempdir: &dyn Fn() -> tempfile::TempDir) {
    use pymirror_testkit::upstream::RawAnswer;
    let up = FakeUpstream::start();
    let t = Instant::now();
    let names: Vec<String> = (0..16).map(|i| format!("bomb-{i}")).collect();
    for name in &names {
        up.add_release(name, "1.0", &[(&format!("{name}-1.0.tar.gz"), vec![1; 64])]);
    }
    let serial = up.serial();
    for name in &names {
        let doc =
            format!(r#"{{"info":{{"name":"{name}"}},"last_serial":{serial},"releases":{{}}}}"#);
        up.serve_response(
            &format!("/pypi/{name}/json"),
            RawAnswer::gzip_bomb("application/json", doc.as_bytes(), bytes),
        );
        let page = format!(
            r#"{{"meta":{{"api-version":"1.1","_last-serial":{serial}}},"name":"{name}","files":[]}}"#
        );
        up.serve_response(
            &format!("/simple/{name}/"),
            RawAnswer::gzip_bomb(
                "application/vnd.pypi.simple.v1+json",
                page.as_bytes(),
                bytes,
            ),
        );
    }
    eprintln!(
        "generated 16 projects with 32 bombs of {:.0} MiB each in {:.1}s",
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let sandbox = tempdir();
    let config = measure::default_config(sandbox.path(), &up.url());
    let m = measure::run_pymirror(PYMIRROR, &["sync", "--config", config.to_str().unwrap()]);
    println!(
        "{:<34} {:>9} {:>9} {:>13} {:>9} {:>5}",
        "run", "wall s", "cpu s", "peak RSS", "requests", "exit"
    );
    println!(
        "{:<34} {:>9.2} {:>9.2} {:>9} MiB {:>9} {:>5}",
        "pymirror (defaults), 32 bombs",
        m.wall.as_secs_f64(),
        (m.user + m.sys).as_secs_f64(),
        m.max_rss_kib / 1024,
        up.request_count(),
        m.code
    );
}

/// After this long, the rate should be learned: 429s from then on count against the target.
const SETTLE: Duration = Duration::from_secs(5);

/// pymirror at its defaults against an upstream that allows `per_second` requests a second.
fn rate_limited(
    a: &Args,
    per_second: f64,
    up: &FakeUpstream,
    tempdir: &dyn Fn() -> tempfile::TempDir,
) {
    let latency = a.latencies.first().copied().unwrap_or(0);
    up.set_latency(Duration::from_millis(latency));
    let sandbox = tempdir();
    let config = measure::default_config(sandbox.path(), &up.url());
    up.reset_requests();
    up.rate_limit(Some(per_second));
    let m = measure::run_pymirror(PYMIRROR, &["sync", "--config", config.to_str().unwrap()]);
    up.rate_limit(None);
    assert_eq!(m.code, 0, "pymirror failed against the rate limit");
    let want = a.projects * a.files;
    let held = count_files(&sandbox.path().join("mirror/web/packages"));
    assert_eq!(held, want, "pymirror mirrored {held} of {want} files");
    let requests = up.requests();
    let start = requests.iter().map(|r| r.at).min().expect("requests");
    let share = |from: Duration| {
        let late: Vec<_> = requests
            .iter()
            .filter(|r| r.at.duration_since(start) >= from)
            .collect();
        let limited = late.iter().filter(|r| r.status == 429).count();
        (limited, late.len())
    };
    let (all_429, all) = share(Duration::ZERO);
    let (late_429, late) = share(SETTLE);
    let accepted = all - all_429;
    println!(
        "rate limit {per_second} req/s, latency {latency} ms: {want} files mirrored in {:.2} s \
         ({:.2} s CPU), {all} requests, {accepted} accepted ({:.1} req/s, {:.0}% of the limit)",
        m.wall.as_secs_f64(),
        (m.user + m.sys).as_secs_f64(),
        accepted as f64 / m.wall.as_secs_f64(),
        100.0 * accepted as f64 / m.wall.as_secs_f64() / per_second
    );
    println!(
        "429 answers: {all_429} of {all} ({:.1}%) overall; after the first {} s: {late_429} of \
         {late} ({:.1}%)",
        100.0 * all_429 as f64 / all.max(1) as f64,
        SETTLE.as_secs(),
        100.0 * late_429 as f64 / late.max(1) as f64
    );
}

fn main() {
    let a = args();
    if let Some(bytes) = a.bombs {
        let tempdir = || match &a.dir {
            Some(d) => tempfile::tempdir_in(d).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        bombs(bytes, &tempdir);
        return;
    }
    let up = FakeUpstream::start();
    let t = Instant::now();
    let bytes = publish(&up, a.projects, a.files, a.max_kib);
    eprintln!(
        "generated {} projects, {} files, {:.1} MiB in {:.1}s",
        a.projects,
        a.projects * a.files,
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let tempdir = || match &a.dir {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    if a.hold {
        up.set_latency(Duration::from_millis(a.latencies[0]));
        println!("holding: upstream {}; kill this process to end", up.url());
        loop {
            std::thread::park();
        }
    }
    if let Some(per_second) = a.rate_limit {
        rate_limited(&a, per_second, &up, &tempdir);
        return;
    }
    if let Some(bandersnatch) = &a.bandersnatch {
        versus(&a, bandersnatch, &up, &tempdir);
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{:<28} {:>8} {:>9} {:>14} {:>16} {:>10} {:>9} {:>12}",
        "run",
        "latency",
        "wall s",
        "cpu s usr+sys",
        "cpu/file usr+sys",
        "peak RSS",
        "requests",
        "MiB served"
    );
    // Kept until the end: deleting 20,000 files makes the next run's inode allocation slower
    // on ext4, which would skew whatever runs after.
    let mut keep = Vec::new();
    for &latency in &a.latencies {
        up.set_latency(Duration::from_millis(latency));
        let sandbox = tempdir();
        let config = sandbox.path().join("mirror.toml");
        std::fs::write(
            &config,
            format!(
                "[mirror]\ndirectory = \"{}\"\nmaster = \"{}\"\nworkers = {}\nmetadata_workers = 32\nfsync = {}\n",
                sandbox.path().join("mirror").display(),
                up.url(),
                a.workers,
                a.fsync
            ),
        )
        .unwrap();
        for label in ["pymirror first sync", "pymirror no-op sync"] {
            measure::quiet_filesystem(sandbox.path());
            up.reset_requests();
            let served_before = up.bytes_served();
            let m =
                measure::run_pymirror(PYMIRROR, &["sync", "--config", config.to_str().unwrap()]);
            assert_eq!(m.code, 0, "pymirror failed");
            let files = (a.projects * a.files).max(1) as f64;
            let first = label.contains("first");
            let per_file = |d: Duration| {
                if first {
                    d.as_secs_f64() * 1e6 / files
                } else {
                    0.0
                }
            };
            println!(
                "{:<28} {:>6}ms {:>9.2} {:>14} {:>16} {:>6} MiB {:>9} {:>12.1}",
                format!("{label} (w={})", a.workers),
                latency,
                m.wall.as_secs_f64(),
                format!("{:.2}+{:.2}", m.user.as_secs_f64(), m.sys.as_secs_f64()),
                format!("{:.0}+{:.0}µs", per_file(m.user), per_file(m.sys)),
                m.max_rss_kib / 1024,
                up.request_count(),
                (up.bytes_served() - served_before) as f64 / 1048576.0
            );
        }
        if a.baseline {
            let dir = tempdir();
            up.reset_requests();
            let wall = rt.block_on(baseline(
                &up.url(),
                a.projects,
                a.baseline_workers,
                dir.path(),
            ));
            println!(
                "{:<28} {:>6}ms {:>9.2} {:>14} {:>16} {:>10} {:>9} {:>12}",
                format!("baseline (w={})", a.baseline_workers),
                latency,
                wall.as_secs_f64(),
                "-",
                "-",
                "-",
                up.request_count(),
                "-"
            );
            keep.push(dir);
        }
        keep.push(sandbox);
    }
}
