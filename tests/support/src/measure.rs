//! Run a program (the real `pymirror` binary, or bandersnatch beside it) and measure it: wall
//! time, CPU time (wait4's rusage, children included), peak RSS (the child's own VmHWM), and
//! what it printed on stdout, and each line it printed on stderr with when and the peak RSS
//! by then (so a phase's log line tells its time and memory). Shared by the benchmarks.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Measured {
    pub wall: Duration,
    pub user: Duration,
    pub sys: Duration,
    pub max_rss_kib: i64,
    pub code: i32,
    pub stdout: String,
    pub stderr: Vec<Line>,
}

/// A line the program printed on stderr.
pub struct Line {
    /// Since the program started.
    pub at: Duration,
    /// Its peak RSS when the line came (within one 5 ms sample).
    pub peak_kib: i64,
    pub text: String,
}

impl Measured {
    /// The first stderr line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&Line> {
        self.stderr.iter().find(|l| l.text.contains(needle))
    }
}

/// Run `bin` (the bench passes `env!("CARGO_BIN_EXE_pymirror")`) with `args`.
pub fn run_pymirror(bin: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Measured {
    run(bin, args)
}

/// Run any program with `args`, no proxy.
pub fn run(bin: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Measured {
    run_env(bin, args, &[])
}

/// [`run`] with these environment variables too (a bucket's credentials).
// The child is reaped by wait4 (which also yields its rusage), not by Child::wait.
#[allow(clippy::zombie_processes)]
pub fn run_env(
    bin: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(String, String)],
) -> Measured {
    let start = Instant::now();
    let mut child = std::process::Command::new(bin)
        .args(args)
        .env("NO_PROXY", "*")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = pipe.read_to_string(&mut out);
        out
    });
    let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let errors = {
        let (pipe, peak) = (child.stderr.take().unwrap(), peak.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(pipe)
                .lines()
                .map_while(Result::ok)
                .map(|text| Line {
                    at: start.elapsed(),
                    peak_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
                    text,
                })
                .collect::<Vec<_>>()
        })
    };
    // ru_maxrss survives execve (it would report this big parent's memory), so sample the
    // child's own high-water mark, VmHWM, until it exits; it only grows, so the last sample
    // is within one interval of the true peak.
    let sampler = {
        let (peak, pid) = (peak.clone(), child.id());
        std::thread::spawn(move || {
            while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let hwm = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
                match hwm {
                    Some(kib) => peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed),
                    None => break, // a zombie has no memory left to report
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    sampler.join().unwrap();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Measured {
        wall: start.elapsed(),
        user: tv(usage.ru_utime),
        sys: tv(usage.ru_stime),
        max_rss_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
        code: libc::WEXITSTATUS(status),
        stdout: reader.join().unwrap(),
        stderr: errors.join().unwrap(),
    }
}

/// `<sandbox>/mirror.toml`: a mirror in `<sandbox>/mirror` of `master`, every other key at its
/// default (benchmarks compare defaults).
pub fn default_config(sandbox: &std::path::Path, master: &str) -> std::path::PathBuf {
    let config = sandbox.join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "[mirror]\ndirectory = \"{}\"\nmaster = \"{master}\"\n",
            sandbox.join("mirror").display(),
        ),
    )
    .unwrap();
    config
}

/// What a file create costs in a directory of `dir` right now, in µs of CPU (this thread's).
fn create_cost(dir: &std::path::Path, round: u32) -> f64 {
    const FILES: u32 = 2000;
    let probe = dir.join(format!(".probe-{}-{round}", std::process::id()));
    std::fs::create_dir_all(&probe).unwrap();
    let cpu = || {
        // SAFETY: getrusage fills the struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    // Written back first, so inodes freed a while ago count as old (5 s, not 300 s).
    let dir_handle = std::fs::File::open(dir).unwrap();
    // SAFETY: syncfs only reads the descriptor, which `dir_handle` keeps open.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir_handle)) };
    let before = cpu();
    for i in 0..FILES {
        std::fs::write(probe.join(i.to_string()), b"probe").unwrap();
    }
    (cpu() - before) / FILES as f64
}

/// Wait until creating files in `dir` costs what it costs on a quiet filesystem; the cost per
/// create (µs of CPU) it measured last.
///
/// Why: on ext4 without a journal, the kernel will not reuse an inode freed in the last 5 s
/// (300 s while its inode table block is dirty, so the probe writes back first), and each
/// create scans past every such inode. Right after a run's trees were deleted, a create costs
/// 10 to 30 times more, and a benchmark would measure that scan rather than the tool (it hits
/// both tools, unevenly). The probe's files are left in `dir`, deleted with it: deleting them
/// now would be the very thing this waits out.
///
/// A filesystem still slow after [`QUIET_WAIT`] is taken to be slow by nature (a network
/// filesystem, a slow disk): this process then measures without waiting again.
pub fn quiet_filesystem(dir: &std::path::Path) -> f64 {
    // A quiet filesystem on the test machine: 20 to 35 µs. Right after a bandersnatch run
    // (which deletes temporary files) the probe read 60, and pymirror, run next, paid for it.
    const QUIET_US: f64 = 40.0;
    static SLOW_BY_NATURE: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + QUIET_WAIT;
    let mut round = 0;
    loop {
        let cost = create_cost(dir, round);
        if cost < QUIET_US || SLOW_BY_NATURE.load(std::sync::atomic::Ordering::Relaxed) {
            return cost;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "filesystem still slow after {} s ({cost:.0} µs per create); measuring \
                 without waiting from now on",
                QUIET_WAIT.as_secs()
            );
            SLOW_BY_NATURE.store(true, std::sync::atomic::Ordering::Relaxed);
            return cost;
        }
        eprintln!(
            "filesystem busy reusing freed inodes ({cost:.0} µs per create, quiet is under \
             {QUIET_US:.0}); waiting 10 s"
        );
        std::thread::sleep(Duration::from_secs(10));
        round += 1;
    }
}

/// How long [`quiet_filesystem`] waits at most: the kernel's 300 s window, and a margin.
const QUIET_WAIT: Duration = Duration::from_secs(360);
