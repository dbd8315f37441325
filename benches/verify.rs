//! Verify benchmark: a synthetic mirror (files, database rows and pages written through the
//! library, exactly what a sync leaves), then the real `pymirror verify`, default and
//! `--hash`, next to the raw throughput of `cat`, `sha256sum` and `b2sum` over the same files.
//!
//! `cargo bench --bench verify -- [--files N] [--per-project N] [--kib N] [--dir DIR]
//!  [--jobs N] [--cold] [--no-raw] [--no-hash] [--keep] [--repeat N]`
//!
//! `--files` (default 100,000) of about `--kib` KiB each (default 32, sizes spread from half
//! to one and a half times that), `--per-project` files per project (default 10). `--cold`
//! drops the page cache before each run (needs root); otherwise the files are as cached as
//! the machine's memory allows right after writing them. `--repeat N` runs each measurement
//! N times and shows the best (for a shared, noisy machine).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pymirror::config::SimpleFormat;
use pymirror::index::{IndexWriter, ProjectView};
use pymirror::state::State;
use pymirror::storage::Layout;
use pymirror::types::hashing::FileHasher;
use pymirror::types::keys::RootChange;
use pymirror::types::{FileRecord, ProjectSnapshot, RemoteFile};
use pymirror::types::{Filename, PackagePath, ProjectName, Serial};
use pymirror_testkit::measure;

/// The binary under test, built by Cargo for this package's benches.
const PYMIRROR: &str = env!("CARGO_BIN_EXE_pymirror");

struct Args {
    files: usize,
    per_project: usize,
    kib: usize,
    dir: Option<PathBuf>,
    jobs: Option<usize>,
    cold: bool,
    raw: bool,
    hash: bool,
    /// Leave the mirror in place (its path is printed) instead of deleting it.
    keep: bool,
    /// Runs of each measurement; the best is shown.
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args {
        files: 100_000,
        per_project: 10,
        kib: 32,
        dir: None,
        jobs: None,
        cold: false,
        raw: true,
        hash: true,
        keep: false,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--files" => a.files = value().parse().unwrap(),
            "--per-project" => a.per_project = value().parse().unwrap(),
            "--kib" => a.kib = value().parse().unwrap(),
            "--dir" => a.dir = Some(value().into()),
            "--jobs" => a.jobs = Some(value().parse().unwrap()),
            "--cold" => a.cold = true,
            "--no-raw" => a.raw = false,
            "--no-hash" => a.hash = false,
            "--keep" => a.keep = true,
            "--repeat" => a.repeat = value().parse::<usize>().unwrap().max(1),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Deterministic bytes, different for every file.
fn content(i: usize, kib: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let size = kib * 512 + (next() % (kib as u64 * 1024 + 1)) as usize;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Write the mirror; returns (files, bytes).
fn build(root: &Path, a: &Args) -> (u64, u64) {
    let layout = Layout::new(root);
    layout.create(&Default::default()).unwrap();
    let mut state = State::open(&layout.db).unwrap();
    let storage = pymirror::storage::Storage::new(
        &layout.web,
        &layout.tmp,
        pymirror::storage::Durability::None,
    );
    let index = IndexWriter::new(&storage, SimpleFormat::All, None);
    let projects = a.files.div_ceil(a.per_project);
    let (mut files, mut bytes) = (0u64, 0u64);
    for p in 0..projects {
        let display = format!("bench-project-{p}");
        let name = ProjectName::new(&display).unwrap();
        let mut remote = Vec::new();
        for f in 0..a.per_project {
            let i = p * a.per_project + f;
            if i >= a.files {
                break;
            }
            let data = content(i, a.kib);
            let mut hasher = FileHasher::default();
            hasher.update(&data);
            let h = hasher.finish();
            let filename = format!("bench_project_{p}-1.{f}.tar.gz");
            let hex = h.blake2b.to_hex();
            let url_path = format!(
                "/packages/{}/{}/{}/{filename}",
                &hex[..2],
                &hex[2..4],
                &hex[4..]
            );
            let filename = Filename::new(&filename).unwrap();
            let path = PackagePath::from_url_path(&url_path, &filename).unwrap();
            let mut staged = storage.stage();
            staged.write_all(&data).unwrap();
            storage.commit(staged, &path.relative()).unwrap();
            files += 1;
            bytes += data.len() as u64;
            remote.push(RemoteFile {
                record: FileRecord {
                    version: format!("1.{f}"),
                    filename,
                    path,
                    size: data.len() as u64,
                    sha256: h.sha256,
                    upload_time: None,
                    requires_python: None,
                    yanked: false,
                    yanked_reason: None,
                    packagetype: Some("sdist".into()),
                    python_version: Some("source".into()),
                    core_metadata: None,
                    provenance: None,
                    extra_hashes: Default::default(),
                },
                url: format!("https://files.invalid{url_path}").parse().unwrap(),
                unknown: Default::default(),
            });
        }
        let mut versions: Vec<String> = remote.iter().map(|r| r.record.version.clone()).collect();
        versions.sort();
        let snap = ProjectSnapshot {
            name: name.clone(),
            display_name: display.clone(),
            serial: Serial(p as u64 + 1),
            versions,
            files: remote,
            status: None,
            refused: Vec::new(),
            validators: None,
            held_back: Vec::new(),
        };
        state.record_project(&snap).unwrap();
        let records: Vec<&FileRecord> = snap.files.iter().map(|f| &f.record).collect();
        index
            .write_project(&ProjectView::new(
                &name,
                &display,
                snap.serial,
                None,
                &snap.versions,
                records,
            ))
            .unwrap();
    }
    let rows: pymirror::index::Rows<'_> =
        &|each| state.for_each_project(each).map_err(std::io::Error::other);
    index
        .write_root(rows, Serial(projects as u64), RootChange::Names)
        .unwrap();
    state.root_written().unwrap();
    (files, bytes)
}

/// Both digests over bytes already in memory, on one core, in MiB/s (the best of five
/// passes: the machine may be shared).
fn hash_in_memory() -> f64 {
    let buf = content(0, 64 * 1024);
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            let mut h = FileHasher::default();
            h.update(&buf);
            std::hint::black_box(h.finish());
            started.elapsed()
        })
        .min()
        .unwrap();
    buf.len() as f64 / 1048576.0 / best.as_secs_f64()
}

fn drop_caches() {
    Command::new("sync").status().unwrap();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .expect("--cold needs root (writing /proc/sys/vm/drop_caches)");
}

/// Every file under `packages/`, NUL-separated, for xargs.
fn file_list(web: &Path, out: &Path) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let mut stack = vec![web.join("packages")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                w.write_all(entry.path().as_os_str().as_encoded_bytes())
                    .unwrap();
                w.write_all(b"\0").unwrap();
            }
        }
    }
}

/// Wall time of `xargs -0 -a LIST -P JOBS -n 256 TOOL...` with its output discarded.
fn xargs(list: &Path, jobs: usize, tool: &[&str]) -> Duration {
    let started = Instant::now();
    let status = Command::new("xargs")
        .arg("-0")
        .arg("-a")
        .arg(list)
        .args(["-P", &jobs.to_string(), "-n", "256"])
        .args(tool)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{tool:?} failed");
    started.elapsed()
}

fn main() {
    let a = args();
    let sandbox = match &a.dir {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let root = sandbox.path().join("mirror");
    let t = Instant::now();
    let (files, bytes) = build(&root, &a);
    let mib = bytes as f64 / 1048576.0;
    eprintln!(
        "built {files} files ({mib:.0} MiB) in {} projects in {:.1}s",
        files.div_ceil(a.per_project as u64),
        t.elapsed().as_secs_f64()
    );
    let config = sandbox.path().join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "[mirror]\ndirectory = \"{}\"\nmaster = \"http://127.0.0.1:9\"\n",
            root.display()
        ),
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{files} files, {mib:.0} MiB, {cores} cores, {} page cache",
        if a.cold { "cold" } else { "warm" }
    );
    println!(
        "{:<34} {:>8} {:>14} {:>9} {:>11} {:>9}",
        "run", "wall s", "cpu s usr+sys", "peak RSS", "files/s", "MiB/s"
    );
    let row = |label: &str, wall: Duration, cpu: Option<(Duration, Duration)>, rss: Option<i64>| {
        let secs = wall.as_secs_f64();
        println!(
            "{label:<34} {secs:>8.2} {:>14} {:>9} {:>11.0} {:>9.0}",
            cpu.map_or("-".into(), |(u, s)| format!(
                "{:.2}+{:.2}",
                u.as_secs_f64(),
                s.as_secs_f64()
            )),
            rss.map_or("-".into(), |kib| format!("{} MiB", kib / 1024)),
            files as f64 / secs,
            mib / secs
        );
    };
    let jobs = a.jobs.map(|j| j.to_string());
    let mut default_wall = None;
    let mut hash_wall = None;
    let runs: &[(&str, &[&str])] = if a.hash {
        &[
            ("pymirror verify", &[]),
            ("pymirror verify --hash", &["--hash"]),
        ]
    } else {
        &[("pymirror verify", &[])]
    };
    for (label, extra) in runs {
        let mut args = vec!["verify", "--config", config.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        if let Some(j) = &jobs {
            args.extend(["--jobs", j]);
        }
        let m = (0..a.repeat)
            .map(|_| {
                if a.cold {
                    drop_caches();
                }
                let m = measure::run_pymirror(PYMIRROR, &args);
                let report: serde_json::Value =
                    serde_json::from_str(&m.stdout).expect("a JSON report");
                assert_eq!(m.code, 0, "verify found problems: {report:#}");
                assert_eq!(report["files_checked"], files);
                m
            })
            .min_by_key(|m| m.wall)
            .unwrap();
        row(label, m.wall, Some((m.user, m.sys)), Some(m.max_rss_kib));
        match extra.is_empty() {
            true => default_wall = Some(m.wall),
            false => hash_wall = Some(m.wall),
        }
    }
    if a.raw {
        let list = sandbox.path().join("files.list");
        file_list(&root.join("web"), &list);
        let mut cat_one = None;
        for (label, jobs, tool) in [
            ("cat (1 process)", 1, &["cat"][..]),
            ("cat (1 per core)", cores, &["cat"][..]),
            ("sha256sum (1 process)", 1, &["sha256sum"][..]),
            ("sha256sum (1 per core)", cores, &["sha256sum"][..]),
            ("b2sum -l 256 (1 process)", 1, &["b2sum", "-l", "256"][..]),
            (
                "b2sum -l 256 (1 per core)",
                cores,
                &["b2sum", "-l", "256"][..],
            ),
        ] {
            let wall = (0..a.repeat)
                .map(|_| {
                    if a.cold {
                        drop_caches();
                    }
                    xargs(&list, jobs, tool)
                })
                .min()
                .unwrap();
            if label == "cat (1 process)" {
                cat_one = Some(wall);
            }
            row(label, wall, None, None);
        }
        // What the cores allow for --hash: each byte is read (cat's cost per core) and hashed
        // twice (SHA-256 and BLAKE2b-256, measured in memory), on every core.
        let hashing = hash_in_memory();
        let reading = mib / cat_one.expect("cat ran").as_secs_f64();
        let bound = cores as f64 / (1.0 / hashing + 1.0 / reading);
        println!(
            "SHA-256 + BLAKE2b-256 in memory, 1 core: {hashing:.0} MiB/s; reading (cat), 1 core: \
             {reading:.0} MiB/s; so {cores} cores allow --hash {bound:.0} MiB/s"
        );
        if let Some(wall) = hash_wall {
            let got = mib / wall.as_secs_f64();
            println!(
                "pymirror verify --hash: {got:.0} MiB/s, {:.0}% of that",
                100.0 * got / bound
            );
        }
    }
    if let Some(wall) = default_wall {
        println!(
            "default verify, 1,000,000 files at this rate: {:.1}s",
            wall.as_secs_f64() * 1e6 / files as f64
        );
    }
    if a.keep {
        println!("mirror kept: {}", config.display());
        let _ = sandbox.keep();
    }
}
