//! A real S3-compatible server for the tests: `s3s-fs` (the `s3s` project's filesystem
//! backend, a crate with a server binary that `scripts/test` installs), on 127.0.0.1.
//!
//! s3s-fs keeps bucket `b`'s object `k` as the file `<root>/b/k`, so what a sync put in the
//! bucket can be read back as a tree (the same checks as for `web/`), and a test can remove
//! or plant an object behind pymirror's back. Its path comes from `PYMIRROR_S3S_FS`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "pymirror-test";
pub const SECRET_KEY: &str = "pymirror-test-secret";

pub struct S3Server {
    child: Child,
    pub port: u16,
    /// The server's root directory: bucket `b` is `<root>/b`.
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// The s3s-fs binary: `PYMIRROR_S3S_FS`, which `scripts/test` exports after installing it.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("PYMIRROR_S3S_FS").map(PathBuf::from);
    match path.filter(|p| p.is_file()) {
        Some(p) => p,
        None => panic!(
            "the S3 tests need the s3s-fs server: set PYMIRROR_S3S_FS to its binary \
             (`scripts/test` installs it with `cargo install --locked s3s-fs@0.14.1 \
             --features binary` and exports it)"
        ),
    }
}

impl S3Server {
    /// A server that requires signed requests (ACCESS_KEY / SECRET_KEY), on a fresh root.
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        S3Server::spawn(&root, true, Some(dir))
    }

    /// A second server on the same root that answers anonymous requests: the bucket as the
    /// public reads it (what nginx proxies to).
    pub fn public_reader(&self) -> S3Server {
        S3Server::spawn(&self.root, false, None)
    }

    fn spawn(root: &Path, auth: bool, dir: Option<tempfile::TempDir>) -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(binary());
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if auth {
            cmd.args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]);
        }
        let child = cmd
            .arg(root)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = S3Server {
            child,
            port,
            root: root.to_owned(),
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "s3s-fs did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create bucket `name` (a directory of the root); its objects are files under it.
    pub fn bucket(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The `[storage]` table for `bucket` under `prefix` on this server.
    pub fn storage_table(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\n",
            self.endpoint()
        )
    }

    /// The environment pymirror takes its credentials from.
    pub fn credentials() -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
