//! Bucket benchmark: the same generated upstream synced by the real `pymirror` binary into a
//! local `web/` and into a bucket on a real S3-compatible server (s3s-fs on loopback, the
//! tests' server), each at its defaults: objects and bytes written per second.
//!
//! `cargo bench --bench s3 -- [--projects N] [--files N] [--size BYTES] [--big N]`
//! (`scripts/bench-s3` installs s3s-fs and passes it in `PYMIRROR_S3S_FS`.) `--big N` adds N
//! files of 40 MiB each, uploaded in parts. Objects count every file, sidecar and page
//! written; s3s-fs runs on the same machine and its CPU is not in pymirror's figures.

use std::path::Path;
use std::time::Instant;

use pymirror_testkit::measure;
use pymirror_testkit::s3::S3Server;
use pymirror_testkit::upstream::FakeUpstream;

/// The binary under test, built by Cargo for this package's benches.
const PYMIRROR: &str = env!("CARGO_BIN_EXE_pymirror");

struct Args {
    projects: usize,
    files: usize,
    size: usize,
    big: usize,
}

fn args() -> Args {
    let mut a = Args {
        projects: 200,
        files: 5,
        size: 64 << 10,
        big: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--projects" => a.projects = value().parse().unwrap(),
            "--files" => a.files = value().parse().unwrap(),
            "--size" => a.size = value().parse().unwrap(),
            "--big" => a.big = value().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Objects and bytes under `root` (files only: a bucket has no directories).
fn count(root: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return (0, 0);
    };
    entries.flatten().fold((0, 0), |(n, b), e| {
        let (dn, db) = match e.file_type() {
            Ok(t) if t.is_dir() => count(&e.path()),
            Ok(t) if t.is_file() => (1, e.metadata().map_or(0, |m| m.len())),
            _ => (0, 0),
        };
        (n + dn, b + db)
    })
}

fn main() {
    let a = args();
    let up = FakeUpstream::start();
    for p in 0..a.projects {
        let files: Vec<(String, Vec<u8>)> = (0..a.files)
            .map(|f| {
                let mut bytes = vec![(p * 31 + f) as u8; a.size];
                bytes[..16].copy_from_slice(&((p * a.files + f) as u128).to_le_bytes());
                (format!("bench{p}-{f}.0.tar.gz"), bytes)
            })
            .collect();
        for (name, bytes) in &files {
            let version = name
                .trim_start_matches(&format!("bench{p}-"))
                .trim_end_matches(".tar.gz");
            up.add_release(
                &format!("bench{p}"),
                version,
                &[(name.as_str(), bytes.clone())],
            );
        }
    }
    for b in 0..a.big {
        let bytes: Vec<u8> = (0..40u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 ^ b as u8)
            .collect();
        up.add_release(
            "bench-big",
            &format!("{b}.0"),
            &[(&format!("bench_big-{b}.0.tar.gz"), bytes)],
        );
    }
    let s3 = S3Server::start();
    let bucket = s3.bucket("bench");
    println!(
        "{:<22} {:>8} {:>8} {:>10} {:>9} {:>10} {:>10} {:>9}",
        "run", "wall s", "cpu s", "peak RSS", "objects", "MiB", "objects/s", "MiB/s"
    );
    let sandbox = tempfile::tempdir().unwrap();
    for (label, storage, tree) in [
        (
            "filesystem (web/)",
            String::new(),
            sandbox.path().join("fs/web"),
        ),
        (
            "bucket (s3s-fs)",
            s3.storage_table("bench", ""),
            bucket.clone(),
        ),
    ] {
        let name = if storage.is_empty() { "fs" } else { "s3" };
        let dir = sandbox.path().join(name);
        let config = sandbox.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[mirror]\ndirectory = \"{}\"\nmaster = \"{}\"\n{storage}",
                dir.display(),
                up.url()
            ),
        )
        .unwrap();
        let started = Instant::now();
        let m = measure::run_env(
            PYMIRROR,
            &["sync", "--config", config.to_str().unwrap()],
            &S3Server::credentials(),
        );
        assert_eq!(m.code, 0, "{label}: pymirror failed");
        let wall = started.elapsed().as_secs_f64();
        let (objects, bytes) = count(&tree);
        let mib = bytes as f64 / 1048576.0;
        println!(
            "{:<22} {:>8.2} {:>8.2} {:>6} MiB {:>9} {:>10.1} {:>10.0} {:>9.1}",
            label,
            wall,
            (m.user + m.sys).as_secs_f64(),
            m.max_rss_kib / 1024,
            objects,
            mib,
            objects as f64 / wall,
            mib / wall
        );
    }
}
