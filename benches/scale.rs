//! Scale benchmark: a PyPI-sized upstream (the tests' fake index generating ~740,000 projects
//! lazily, half of them with one tiny sdist, the rest with none), mirrored by the real
//! `pymirror` binary at its defaults. Prints:
//! - the first sync, and within it the planning (the listing and the queue: time and peak RSS
//!   when its log line came) and the root index (its log line's time);
//! - a no-op sync: wall time and requests;
//! - an incremental sync of `--changes` changed projects (a new file each) against the mirror
//!   that holds them all: wall, CPU, requests, and its root index.
//!
//! `cargo bench --bench scale -- [--projects N] [--changes N] [--rounds N] [--dir DIR] [--log]
//! [--hold]` (`--rounds N`: N incremental syncs, each after its own changes)
//! (`scripts/bench --scale` runs it at PyPI's size).

use std::time::Instant;

use pymirror_testkit::measure::{self, Measured};
use pymirror_testkit::upstream::{FakeUpstream, generated_name};

/// The binary under test, built by Cargo for this package's benches.
const PYMIRROR: &str = env!("CARGO_BIN_EXE_pymirror");

struct Args {
    projects: u64,
    changes: u64,
    /// Incremental syncs to run, each after its own `--changes` (`--rounds`, default 1).
    rounds: u64,
    dir: Option<std::path::PathBuf>,
    /// Print every run's log lines with their times (set `RUST_LOG` for more of them).
    log: bool,
    /// Afterwards, keep the upstream serving and the mirror in place (for a profiler) until
    /// killed.
    hold: bool,
}

fn args() -> Args {
    let mut a = Args {
        projects: 740_000,
        changes: 1000,
        rounds: 1,
        dir: None,
        log: false,
        hold: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--projects" => a.projects = value().parse().unwrap(),
            "--changes" => a.changes = value().parse().unwrap(),
            "--rounds" => a.rounds = value().parse::<u64>().unwrap().max(1),
            "--dir" => a.dir = Some(value().into()),
            "--log" => a.log = true,
            "--hold" => a.hold = true,
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// The seconds a log line reports as "<needle> … in X s" / "(planned in X s)".
fn seconds_in(line: &str) -> Option<f64> {
    let before = line.rsplit_once(" s")?.0;
    before.rsplit(' ').next()?.parse().ok()
}

fn print_run(label: &str, m: &Measured, requests: usize) {
    println!(
        "{:<44} {:>9.2} {:>9.2} {:>9} MiB {:>9}",
        label,
        m.wall.as_secs_f64(),
        (m.user + m.sys).as_secs_f64(),
        m.max_rss_kib / 1024,
        requests
    );
}

fn print_phase(label: &str, m: &Measured, needle: &str) {
    match m.line(needle) {
        Some(line) => println!(
            "{:<44} {:>9} {:>9} {:>9} MiB   (log: {})",
            label,
            seconds_in(&line.text).map_or("?".into(), |s| format!("{s:.2}")),
            "",
            line.peak_kib / 1024,
            line.text.trim()
        ),
        None => println!("{label:<44} no log line with {needle:?}"),
    }
}

fn sync(config: &std::path::Path, log: bool) -> Measured {
    let m = measure::run_pymirror(PYMIRROR, &["sync", "--config", config.to_str().unwrap()]);
    if log {
        for line in &m.stderr {
            eprintln!("{:>8.3}s {}", line.at.as_secs_f64(), line.text);
        }
    }
    if m.code != 0 {
        for line in &m.stderr {
            eprintln!("{}", line.text);
        }
        panic!("pymirror sync exited {}", m.code);
    }
    m
}

fn main() {
    let a = args();
    let up = FakeUpstream::start();
    up.generate(a.projects);
    let sandbox = match &a.dir {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let config = measure::default_config(sandbox.path(), &up.url());
    println!(
        "{} generated projects ({} with one file); pymirror at its defaults",
        a.projects,
        a.projects.div_ceil(2)
    );
    println!(
        "{:<44} {:>9} {:>9} {:>13} {:>9}",
        "run", "wall s", "cpu s", "peak RSS", "requests"
    );

    let first = sync(&config, a.log);
    print_run("first sync", &first, up.request_count());
    print_phase("  planning (listing + queue)", &first, "planned in");
    print_phase("  root index", &first, "root index:");

    up.reset_requests();
    let noop = sync(&config, a.log);
    print_run("no-op sync", &noop, up.request_count());

    for round in 0..a.rounds {
        let t = Instant::now();
        for i in 0..a.changes {
            let project = generated_name(i * (a.projects / a.changes.max(1)).max(1) % a.projects);
            let version = format!("{}.0", round + 2);
            let file = format!("{}-{version}.tar.gz", project.replace('-', "_"));
            up.add_release(&project, &version, &[(&file, file.clone().into_bytes())]);
        }
        eprintln!(
            "{} changes made upstream in {:.1} s",
            a.changes,
            t.elapsed().as_secs_f64()
        );
        up.reset_requests();
        let incremental = sync(&config, a.log);
        print_run(
            &format!("incremental sync, {} changes", a.changes),
            &incremental,
            up.request_count(),
        );
        print_phase("  planning", &incremental, "planned in");
        print_phase("  root index", &incremental, "root index:");
    }
    if a.hold {
        println!(
            "holding: upstream {}, mirror config {}; kill this process to end",
            up.url(),
            config.display()
        );
        loop {
            std::thread::park();
        }
    }
}
