//! Drive the real `pymirror` binary against a mirror directory in a private sandbox, and read
//! back what it produced: pages parsed as HTML, links followed, files hashed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

pub struct Mirror {
    /// The `pymirror` binary under test.
    pub bin: PathBuf,
    /// Everything the test may touch lives here; the mirror is `sandbox/mirror`.
    pub sandbox: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Where the served tree is read back from: `dir/web`, or a bucket's directory on the
    /// test S3 server.
    pub tree: PathBuf,
    /// Tables every configuration gets after `[mirror]` (a `[storage]` table).
    pub tables: String,
    /// Environment every run gets (credentials for a bucket).
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(self.code, 0, "sync failed:\n{}", self.stderr);
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub href: String,
    pub text: String,
    pub requires_python: Option<String>,
    pub yanked: Option<String>,
    /// `data-core-metadata`, e.g. `sha256=…`.
    pub core_metadata: Option<String>,
}

/// Settings that keep tests fast: short backoff, few workers.
pub const TEST_SETTINGS: &str =
    "workers = 4\nmetadata_workers = 4\nretry_delay = 0.01\nfsync = false\n";

impl Mirror {
    /// A mirror of `master` in a fresh sandbox, run by `bin` (the test passes
    /// `env!("CARGO_BIN_EXE_pymirror")`, which only the pymirror package's tests can name).
    pub fn new(bin: impl Into<PathBuf>, master: &str) -> Mirror {
        Mirror::with_settings(bin, master, TEST_SETTINGS)
    }

    pub fn with_settings(bin: impl Into<PathBuf>, master: &str, settings: &str) -> Mirror {
        let sandbox = tempfile::tempdir().unwrap();
        let dir = sandbox.path().join("mirror");
        let config = sandbox.path().join("mirror.toml");
        let mirror = Mirror {
            bin: bin.into(),
            sandbox,
            tree: dir.join("web"),
            dir,
            config,
            tables: String::new(),
            env: Vec::new(),
        };
        mirror.configure(master, settings);
        mirror
    }

    /// A mirror of `master` whose tree is in `bucket` under `prefix` on `s3` (created here).
    pub fn in_bucket(
        bin: impl Into<PathBuf>,
        master: &str,
        s3: &crate::s3::S3Server,
        bucket: &str,
        prefix: &str,
    ) -> Mirror {
        let mut mirror = Mirror::with_settings(bin, master, TEST_SETTINGS);
        mirror.tree = s3.bucket(bucket).join(prefix);
        mirror.tables = s3.storage_table(bucket, prefix);
        mirror.env = crate::s3::S3Server::credentials();
        mirror.configure(master, TEST_SETTINGS);
        mirror
    }

    /// Rewrite the configuration: `[mirror]` with this directory and `master`, then
    /// `settings` (more `[mirror]` keys, and further tables such as `[filters]`).
    pub fn configure(&self, master: &str, settings: &str) {
        std::fs::write(
            &self.config,
            format!(
                "[mirror]\ndirectory = \"{}\"\nmaster = \"{master}\"\n{settings}\n{}",
                self.dir.display(),
                self.tables
            ),
        )
        .unwrap();
    }

    pub fn sync(&self) -> Run {
        self.sync_with(&[])
    }

    /// `pymirror sync` with more flags (`--allow-mass-delete`, `--dry-run`).
    pub fn sync_with(&self, flags: &[&str]) -> Run {
        let mut args = vec!["sync", "--config", self.config.to_str().unwrap()];
        args.extend(flags);
        self.run(&args)
    }

    /// Start a sync without waiting for it (for kill and signal tests).
    pub fn spawn_sync(&self, extra: &[&str]) -> std::process::Child {
        Command::new(&self.bin)
            .args(["sync", "--config", self.config.to_str().unwrap()])
            .args(extra)
            .env_remove("RUST_LOG")
            .env("NO_PROXY", "*")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The invariants that must hold at every instant, even right after a SIGKILL: every link
    /// of every page resolves to a file with the advertised hash, and every file under
    /// packages/ holds exactly the bytes its path names (BLAKE2b-256), or is a sidecar beside one.
    pub fn assert_consistent(&self) {
        let simple = self.web().join("simple");
        if let Ok(dirs) = std::fs::read_dir(&simple) {
            for d in dirs {
                let d = d.unwrap();
                if d.file_type().unwrap().is_dir() {
                    let name = d.file_name().into_string().unwrap();
                    if self.page(&name).is_some() {
                        for link in self.links(&name) {
                            self.follow(&name, &link);
                        }
                    }
                }
            }
        }
        for path in snapshot(&self.web().join("packages")).into_keys() {
            let rel = path
                .strip_prefix(self.web().join("packages"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            assert_eq!(parts.len(), 4, "unexpected file {rel}");
            if let Some(file) = rel.strip_suffix(".metadata") {
                // A PEP 658 sidecar (its hash is the page's to check) lives beside its file.
                assert!(
                    self.web().join("packages").join(file).exists(),
                    "sidecar without its file: {rel}"
                );
                continue;
            }
            let want = format!("{}{}{}", parts[0], parts[1], parts[2]);
            let bytes = std::fs::read(&path).unwrap();
            let got = hex::encode(blake2::Blake2b::<blake2::digest::consts::U32>::digest(
                &bytes,
            ));
            assert_eq!(got, want, "partial or wrong file at {rel}");
        }
    }

    /// The served tree and status, as {relative path: content hash}, for comparing mirrors.
    pub fn published(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = snapshot(&self.web())
            .into_iter()
            .map(|(p, (_, sha, _))| {
                (
                    p.strip_prefix(&self.dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    sha,
                )
            })
            .collect();
        out.insert(
            "status".into(),
            std::fs::read_to_string(self.dir.join("status")).unwrap_or_default(),
        );
        out
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[("NO_PROXY", "*")])
    }

    /// Run with these environment variables (and no proxy or log settings from the caller's).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env_remove("RUST_LOG");
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
            cmd.env_remove(var).env_remove(var.to_ascii_lowercase());
        }
        let out = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `pymirror verify --config … <extra>`.
    pub fn verify(&self, extra: &[&str]) -> Run {
        let mut args = vec!["verify", "--config", self.config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn web(&self) -> PathBuf {
        self.tree.clone()
    }

    /// The state database lost (with its WAL), the served tree kept.
    pub fn lose_database(&self) {
        for name in ["pymirror.db", "pymirror.db-wal", "pymirror.db-shm"] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    pub fn status_serial(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("status"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The serial the mirror's PEP 691 page states for a project.
    pub fn page_serial(&self, normalized: &str) -> u64 {
        let page: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                self.web()
                    .join(format!("simple/{normalized}/index.v1_json")),
            )
            .unwrap(),
        )
        .unwrap();
        page["meta"]["_last-serial"].as_u64().unwrap()
    }

    pub fn page(&self, normalized: &str) -> Option<String> {
        std::fs::read_to_string(
            self.web()
                .join("simple")
                .join(normalized)
                .join("index.html"),
        )
        .ok()
    }

    pub fn links(&self, normalized: &str) -> Vec<Link> {
        parse_links(
            &self
                .page(normalized)
                .unwrap_or_else(|| panic!("no page for {normalized}")),
        )
    }

    pub fn root_links(&self) -> Vec<Link> {
        parse_links(&std::fs::read_to_string(self.web().join("simple/index.html")).unwrap())
    }

    /// Follow a project page link to the file it names, check the fragment's sha256 against
    /// the bytes, and return the bytes.
    pub fn follow(&self, normalized: &str, link: &Link) -> Vec<u8> {
        let (path, fragment) = link.href.split_once('#').expect("link has a hash fragment");
        let sha = fragment.strip_prefix("sha256=").expect("sha256 fragment");
        let rel = path
            .strip_prefix("../../")
            .expect("relative link to the file tree");
        let decoded = percent_decode(rel);
        let file = self.web().join(&decoded);
        assert!(
            file.starts_with(self.web().join("packages")),
            "{normalized}: link {path} leaves packages/"
        );
        let bytes = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{normalized}: {} missing: {e}", file.display()));
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            sha,
            "{normalized}: hash of {rel}"
        );
        if let Some(meta) = &link.core_metadata {
            let want = meta.strip_prefix("sha256=").expect("sha256 core metadata");
            let sidecar =
                std::fs::read(format!("{}.metadata", file.display())).unwrap_or_else(|e| {
                    panic!("{normalized}: advertised sidecar of {rel} missing: {e}")
                });
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&sidecar)),
                want,
                "{normalized}: sidecar of {rel}"
            );
        }
        bytes
    }

    /// Every file under the sandbox with its length and content hash (for "nothing changed"
    /// and "nothing written outside" checks).
    pub fn snapshot(&self, root: &Path) -> BTreeMap<PathBuf, (u64, String, std::time::SystemTime)> {
        snapshot(root)
    }
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, String, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                out.insert(
                    entry.path(),
                    (
                        meta.len(),
                        hex::encode(sha2::Sha256::digest(&bytes)),
                        meta.modified().unwrap(),
                    ),
                );
            }
        }
    }
    out
}

pub fn parse_links(html: &str) -> Vec<Link> {
    let dom = tl::parse(html, tl::ParserOptions::default()).expect("page parses as HTML");
    let parser = dom.parser();
    let attr = |tag: &tl::HTMLTag, name: &str| {
        tag.attributes()
            .get(name)
            .map(|v| unescape(&v.map(|b| b.as_utf8_str().into_owned()).unwrap_or_default()))
    };
    dom.query_selector("a")
        .expect("valid selector")
        .filter_map(|h| h.get(parser).and_then(|n| n.as_tag()))
        .map(|tag| Link {
            href: attr(tag, "href").expect("link without href"),
            text: unescape(&tag.inner_text(parser)),
            requires_python: attr(tag, "data-requires-python"),
            yanked: attr(tag, "data-yanked"),
            core_metadata: attr(tag, "data-core-metadata"),
        })
        .collect()
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// PEP 503 normalization, written independently of the crate's.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}
