//! A fake, test-only PyPI ("Warehouse-compatible") upstream.
//!
//! It emulates the parts of Warehouse a mirror talks to, on 127.0.0.1 only:
//!   * XML-RPC at `POST /pypi` (also `/RPC2`): `list_packages_with_serial`,
//!     `changelog_last_serial`, `changelog_since_serial(n)` (paged, 50,000 rows by default);
//!   * the JSON API `GET /pypi/{name}/json` (301 to the display name, `X-PyPI-Last-Serial`);
//!   * the Simple API `GET /simple/` and `GET /simple/{normalized}/`, PEP 503 HTML or
//!     PEP 691 v1.1 JSON depending on `Accept`;
//!   * file downloads `GET /packages/aa/bb/<60hex>/<filename>` (+ PEP 658 `.metadata`),
//!     with `Range: bytes=N-` support.
//!
//! Every change goes through a journal like Warehouse's: each row bumps the global serial and
//! the project's last serial. The server runs on its own thread with its own tokio runtime, so
//! plain `#[test]` functions can use it; dropping the `FakeUpstream` stops it.
//!
//! Fault knobs: `set_latency` (delay before every response), `corrupt_downloads` (one byte
//! flipped), `truncate_downloads` (half the body, then the connection drops), `fail_downloads`
//! (an HTTP status), `stale_metadata` (the JSON API serves the project's previous snapshot),
//! `set_xmlrpc_status` (XML-RPC disabled with 404/405...), `inject_file_json` (hostile file
//! entries in the JSON API), `serve_raw` / `serve_response` (arbitrary bytes, or any status,
//! headers and body, at an arbitrary path), `set_fault_rates` (seeded random 5xx, 429 with
//! `Retry-After`, truncation, corruption and latency, for mixtures).
//! Download faults are keyed by the URL's last segment (`<file>.metadata` for PEP 658 files),
//! apply to GET only (not HEAD), and are checked in the order fail, truncate, corrupt. The
//! "previous snapshot" of `stale_metadata` is the project as it was before the latest helper
//! call that changed it (a whole `add_release` counts as one change). Truncation is done at the
//! socket (see `CutIo`) and is HTTP/1.1-only.
//! Observation: `requests` (method, path, query, Accept, User-Agent, Range, whether it came
//! through a proxy, the XML-RPC method called, status, arrival time), `request_count`,
//! `reset_requests`, `bytes_served`, `max_in_flight`.
//!
//! Not real: md5 digests are a fake (the first 32 hex of the sha256), timestamps come from a
//! fake clock (one minute per serial), and version ordering is a simplified PEP 440.
//!
//! Helper misuse (e.g. yanking a release that does not exist) panics in the calling test;
//! odd HTTP input never panics the server.

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request as HttpRequest, State as AxState};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use blake2::Blake2b256;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One request seen by the server, recorded before latency is applied, with its final status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    pub range: Option<String>,
    /// The request line carried a whole URL (`GET http://host/...`): it came through a proxy.
    pub absolute_form: bool,
    pub status: u16,
    /// The XML-RPC method called (`list_packages_with_serial`, …), for POSTs.
    pub xmlrpc_method: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A canned answer for `serve_response`: any status, headers and body.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Facts about a published file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Relative path "packages/aa/bb/<60hex>/<filename>" (not percent-encoded).
    pub path: String,
    pub sha256: String,
    pub blake2b: String,
    pub size: u64,
    pub content: Vec<u8>,
}

/// Per-file options for `add_file`.
#[derive(Clone, Debug, Default)]
pub struct FileOpts {
    pub requires_python: Option<String>,
    /// Default: "bdist_wheel" for .whl, "sdist" otherwise.
    pub packagetype: Option<String>,
    /// Default: "py3" for wheels, "source" otherwise.
    pub python_version: Option<String>,
    /// ISO 8601 ("2024-01-02T03:04:05", optional ".ffffff", optional "Z"); default derived from the serial.
    pub upload_time: Option<String>,
    /// PEP 658 core metadata, served at `<file url>.metadata`.
    pub metadata: Option<Vec<u8>>,
    /// PEP 740 provenance URL for the project page (absolute, or a path on this server).
    pub provenance: Option<String>,
    /// Digests besides sha256 listed in the project page's `hashes` ({name: hex}).
    pub extra_hashes: Vec<(String, String)>,
}

/// Faults injected at random, each a probability per request (seeded, so runs repeat).
/// 5xx and 429 hit any request; truncation and corruption hit file downloads.
#[derive(Clone, Debug, Default)]
pub struct FaultRates {
    pub seed: u64,
    pub server_error: f64,
    pub too_many: f64,
    /// `Retry-After` seconds sent with injected 429 and 503 answers.
    pub retry_after: Option<u64>,
    pub truncate: f64,
    pub corrupt: f64,
    /// Extra latency, uniform in 0..=max_latency.
    pub max_latency: Duration,
}

/// How many random faults `FaultRates` injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub server_error: u32,
    pub too_many: u32,
    pub truncate: u32,
    pub corrupt: u32,
}

// ---------------------------------------------------------------------------------------------
// State

struct FileRec {
    filename: String,
    project_key: String,
    version: String,
    content: Bytes,
    sha256: String,
    blake2b: String,
    /// FAKE: no md5 crate is allowed, so this is sha256[..32], NOT a real md5.
    md5: String,
    path: String,
    packagetype: String,
    python_version: String,
    requires_python: Option<String>,
    upload_time: String,
    upload_time_iso: String,
    metadata: Option<Bytes>,
    metadata_sha256: Option<String>,
    provenance: Option<String>,
    extra_hashes: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Release {
    files: BTreeMap<String, Arc<FileRec>>,
    injected: Vec<Value>,
    yanked: bool,
    yanked_reason: Option<String>,
}

#[derive(Clone)]
struct Project {
    display: String,
    last_serial: u64,
    releases: BTreeMap<String, Release>,
    /// PEP 792 status and reason; `quarantined` hides the project like PyPI does.
    status: Option<(String, Option<String>)>,
}

impl Project {
    fn quarantined(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|(s, _)| s == "quarantined")
    }
}

struct JournalRow {
    name: String,
    version: Option<String>,
    timestamp: i64,
    action: String,
    serial: u64,
}

struct State {
    base_url: String,
    serial: u64,
    journal: Vec<JournalRow>,
    /// Live projects by PEP 503 normalized name.
    projects: BTreeMap<String, Project>,
    /// Each project's state before its latest change (None: it did not exist).
    previous: HashMap<String, Option<Project>>,
    /// Every file ever published, by filename (for `file_info`).
    files: BTreeMap<String, Arc<FileRec>>,
    /// Every file ever published, by relative path.
    by_path: HashMap<String, Arc<FileRec>>,
    changelog_page: usize,
    latency: Duration,
    corrupt: HashMap<String, u32>,
    truncate: HashMap<String, u32>,
    fail: HashMap<String, (u16, u32)>,
    stale: HashMap<String, u32>,
    xmlrpc_status: Option<u16>,
    raw: HashMap<String, RawAnswer>,
    requests: Vec<Request>,
    bytes_served: u64,
    faults: FaultRates,
    injected: FaultCounts,
    rng: u64,
    in_flight: usize,
    max_in_flight: usize,
}

impl State {
    /// splitmix64: uniform in [0, 1), consecutive rolls independent.
    fn roll(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrement a fault counter; true if the fault fires now.
fn take(map: &mut HashMap<String, u32>, key: &str) -> bool {
    match map.get_mut(key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

impl State {
    fn project(&self, display: &str) -> &Project {
        self.projects
            .get(&normalize(display))
            .unwrap_or_else(|| panic!("fake upstream: no project {display:?}"))
    }

    fn snapshot(&mut self, key: &str) {
        let prev = self.projects.get(key).cloned();
        self.previous.insert(key.to_string(), prev);
    }

    fn journal(&mut self, key: &str, version: Option<&str>, action: String) -> u64 {
        self.serial += 1;
        let serial = self.serial;
        let name = match self.projects.get_mut(key) {
            Some(p) => {
                p.last_serial = serial;
                p.display.clone()
            }
            None => key.to_string(),
        };
        self.journal.push(JournalRow {
            name,
            version: version.map(str::to_string),
            timestamp: fake_epoch(serial),
            action,
            serial,
        });
        serial
    }

    fn ensure_project(&mut self, display: &str) -> String {
        let key = normalize(display);
        if !self.projects.contains_key(&key) {
            let p = Project {
                display: display.to_string(),
                last_serial: 0,
                releases: BTreeMap::new(),
                status: None,
            };
            self.projects.insert(key.clone(), p);
            self.journal(&key, None, "create".into());
        }
        key
    }

    fn ensure_release(&mut self, key: &str, version: &str) {
        let p = self.projects.get_mut(key).expect("project exists");
        if !p.releases.contains_key(version) {
            p.releases.insert(version.to_string(), Release::default());
            self.journal(key, Some(version), "new release".into());
        }
    }

    fn add_file(
        &mut self,
        key: &str,
        version: &str,
        filename: &str,
        content: Vec<u8>,
        opts: FileOpts,
    ) -> u64 {
        let sha256 = hex::encode(Sha256::digest(&content));
        let blake2b = hex::encode(Blake2b256::digest(&content));
        let path = format!(
            "packages/{}/{}/{}/{}",
            &blake2b[..2],
            &blake2b[2..4],
            &blake2b[4..],
            filename
        );
        let is_wheel = filename.ends_with(".whl");
        let packagetype = opts
            .packagetype
            .unwrap_or_else(|| if is_wheel { "bdist_wheel" } else { "sdist" }.into());
        let python_version = opts
            .python_version
            .unwrap_or_else(|| if is_wheel { "py3" } else { "source" }.into());
        let (upload_time, upload_time_iso) = match opts.upload_time {
            Some(t) => normalize_time(&t),
            None => fake_time(self.serial + 1),
        };
        let metadata_sha256 = opts
            .metadata
            .as_ref()
            .map(|m| hex::encode(Sha256::digest(m)));
        let rec = Arc::new(FileRec {
            filename: filename.to_string(),
            project_key: key.to_string(),
            version: version.to_string(),
            md5: sha256[..32].to_string(),
            content: Bytes::from(content),
            sha256,
            blake2b,
            path: path.clone(),
            packagetype,
            python_version: python_version.clone(),
            requires_python: opts.requires_python,
            upload_time,
            upload_time_iso,
            metadata: opts.metadata.map(Bytes::from),
            metadata_sha256,
            provenance: opts.provenance,
            extra_hashes: opts.extra_hashes,
        });
        let p = self.projects.get_mut(key).expect("project exists");
        let rel = p.releases.get_mut(version).expect("release exists");
        rel.files.insert(filename.to_string(), rec.clone());
        self.files.insert(filename.to_string(), rec.clone());
        self.by_path.insert(path, rec);
        self.journal(
            key,
            Some(version),
            format!("add {python_version} file {filename}"),
        )
    }

    /// The file at this relative path if it is still published.
    fn live_file(&self, rel_path: &str) -> Option<Arc<FileRec>> {
        let rec = self.by_path.get(rel_path)?;
        let live = self
            .projects
            .get(&rec.project_key)?
            .releases
            .get(&rec.version)?
            .files
            .get(&rec.filename)?;
        Arc::ptr_eq(rec, live).then(|| rec.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Public handle

/// The fake upstream server. Dropping it shuts the server down.
pub struct FakeUpstream {
    state: Shared,
    port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0 and serves on its own thread with its own 2-worker tokio runtime.
    pub fn start() -> FakeUpstream {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake upstream: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fake upstream: set_nonblocking");
        let port = listener
            .local_addr()
            .expect("fake upstream: local_addr")
            .port();
        let state: Shared = Arc::new(Mutex::new(State {
            base_url: format!("http://127.0.0.1:{port}"),
            serial: 0,
            journal: Vec::new(),
            projects: BTreeMap::new(),
            previous: HashMap::new(),
            files: BTreeMap::new(),
            by_path: HashMap::new(),
            changelog_page: 50_000,
            latency: Duration::ZERO,
            faults: FaultRates::default(),
            injected: FaultCounts::default(),
            rng: 0x9E37_79B9_7F4A_7C15,
            in_flight: 0,
            max_in_flight: 0,
            corrupt: HashMap::new(),
            truncate: HashMap::new(),
            fail: HashMap::new(),
            stale: HashMap::new(),
            xmlrpc_status: None,
            raw: HashMap::new(),
            requests: Vec::new(),
            bytes_served: 0,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-upstream-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fake upstream: tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("fake upstream: listener");
                    let app = Router::new().fallback(handle).with_state(shared);
                    let app = app.into_make_service_with_connect_info::<ConnCut>();
                    tokio::select! {
                        r = axum::serve(CutListener(listener), app).into_future() => {
                            if let Err(e) = r {
                                eprintln!("fake upstream: server error: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("fake upstream: spawn thread");
        FakeUpstream {
            state,
            port,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// "http://127.0.0.1:PORT" (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Publish a release with files (sdist/wheel by extension). Returns the new global serial.
    pub fn add_release(&self, display_name: &str, version: &str, files: &[(&str, Vec<u8>)]) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.snapshot(&key);
        st.ensure_project(display_name);
        st.ensure_release(&key, version);
        for (filename, content) in files {
            st.add_file(
                &key,
                version,
                filename,
                content.clone(),
                FileOpts::default(),
            );
        }
        st.serial
    }

    /// Publish one file (creating the project / release if new). Returns the new global serial.
    pub fn add_file(
        &self,
        display_name: &str,
        version: &str,
        filename: &str,
        content: Vec<u8>,
        opts: FileOpts,
    ) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.snapshot(&key);
        st.ensure_project(display_name);
        st.ensure_release(&key, version);
        st.add_file(&key, version, filename, content, opts)
    }

    fn release_op(
        &self,
        display_name: &str,
        version: &str,
        action: &str,
        f: impl FnOnce(&mut Project),
    ) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        if !st.project(display_name).releases.contains_key(version) {
            panic!("fake upstream: no release {display_name} {version}");
        }
        st.snapshot(&key);
        let serial = st.journal(&key, Some(version), action.to_string());
        f(st.projects.get_mut(&key).expect("checked"));
        serial
    }

    pub fn yank(&self, display_name: &str, version: &str, reason: Option<&str>) -> u64 {
        self.release_op(display_name, version, "yank release", |p| {
            let r = p.releases.get_mut(version).expect("checked");
            r.yanked = true;
            r.yanked_reason = reason.map(str::to_string);
        })
    }

    pub fn unyank(&self, display_name: &str, version: &str) -> u64 {
        self.release_op(display_name, version, "unyank release", |p| {
            let r = p.releases.get_mut(version).expect("checked");
            r.yanked = false;
            r.yanked_reason = None;
        })
    }

    pub fn remove_release(&self, display_name: &str, version: &str) -> u64 {
        self.release_op(display_name, version, "remove release", |p| {
            p.releases.remove(version);
        })
    }

    pub fn remove_file(&self, display_name: &str, filename: &str) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        let version = st
            .project(display_name)
            .releases
            .iter()
            .find(|(_, r)| r.files.contains_key(filename))
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| panic!("fake upstream: no file {filename:?} in {display_name:?}"));
        st.snapshot(&key);
        let p = st.projects.get_mut(&key).expect("checked");
        p.releases
            .get_mut(&version)
            .expect("checked")
            .files
            .remove(filename);
        st.journal(&key, Some(&version), format!("remove file {filename}"))
    }

    pub fn remove_project(&self, display_name: &str) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.project(display_name);
        st.snapshot(&key);
        let serial = st.journal(&key, None, "remove project".into());
        st.projects.remove(&key);
        serial
    }

    /// A change that touches no file (journal "add Owner someone"): serial bump only.
    pub fn touch(&self, display_name: &str) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.project(display_name);
        st.snapshot(&key);
        st.journal(&key, None, "add Owner someone".into())
    }

    /// PEP 792: set the project's status (journal `project quarantined` / `project status`);
    /// `None` clears it (`project quarantine cleared`).
    pub fn set_project_status(
        &self,
        display_name: &str,
        status: Option<(&str, Option<&str>)>,
    ) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.project(display_name);
        st.snapshot(&key);
        let action = match status {
            Some(("quarantined", _)) => "project quarantined".to_string(),
            Some((s, _)) => format!("project status {s}"),
            None => "project quarantine cleared".to_string(),
        };
        let serial = st.journal(&key, None, action);
        st.projects.get_mut(&key).expect("checked").status =
            status.map(|(s, r)| (s.to_string(), r.map(str::to_string)));
        serial
    }

    pub fn serial(&self) -> u64 {
        self.st().serial
    }

    /// Info of any file ever published under this filename (also after its removal).
    pub fn file_info(&self, filename: &str) -> Option<FileInfo> {
        self.st().files.get(filename).map(|f| FileInfo {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
            blake2b: f.blake2b.clone(),
            size: f.content.len() as u64,
            content: f.content.to_vec(),
        })
    }

    /// Maximum rows per `changelog_since_serial` answer (default 50,000).
    pub fn set_changelog_page(&self, n: usize) {
        self.st().changelog_page = n.max(1);
    }

    // ---- fault injection ----

    /// Inject faults at random from now on (see [`FaultRates`]); `FaultRates::default()` stops.
    pub fn set_fault_rates(&self, rates: FaultRates) {
        let mut st = self.st();
        st.rng = rates.seed;
        st.faults = rates;
    }

    /// The random faults injected so far.
    pub fn faults_injected(&self) -> FaultCounts {
        self.st().injected
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.st().max_in_flight
    }

    /// Start measuring `max_in_flight` afresh.
    pub fn reset_max_in_flight(&self) {
        let mut st = self.st();
        st.max_in_flight = st.in_flight;
    }

    pub fn set_latency(&self, d: Duration) {
        self.st().latency = d;
    }

    /// `filename` is the last path segment; use "<file>.metadata" to target PEP 658 metadata.
    pub fn corrupt_downloads(&self, filename: &str, times: u32) {
        self.st().corrupt.insert(filename.to_string(), times);
    }

    pub fn truncate_downloads(&self, filename: &str, times: u32) {
        self.st().truncate.insert(filename.to_string(), times);
    }

    pub fn fail_downloads(&self, filename: &str, status: u16, times: u32) {
        self.st().fail.insert(filename.to_string(), (status, times));
    }

    pub fn stale_metadata(&self, display_name: &str, times: u32) {
        self.st().stale.insert(normalize(display_name), times);
    }

    pub fn set_xmlrpc_status(&self, status: Option<u16>) {
        self.st().xmlrpc_status = status;
    }

    /// Append a raw file object to the JSON API `releases[version]` (creating project/release if
    /// needed). Journal row "add {python_version or py3} file {filename or <injected>}".
    pub fn inject_file_json(&self, display_name: &str, version: &str, file: Value) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.snapshot(&key);
        st.ensure_project(display_name);
        st.ensure_release(&key, version);
        let filename = file
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or("<injected>")
            .to_string();
        let pyver = file
            .get("python_version")
            .and_then(Value::as_str)
            .unwrap_or("py3")
            .to_string();
        let p = st.projects.get_mut(&key).expect("ensured");
        p.releases
            .get_mut(version)
            .expect("ensured")
            .injected
            .push(file);
        st.journal(&key, Some(version), format!("add {pyver} file {filename}"))
    }

    /// Serve `content` with status 200 for any request to exactly `path` (raw or
    /// percent-decoded), overriding all routes (`/pypi` overrides XML-RPC).
    pub fn serve_raw(&self, path: &str, content: Vec<u8>) {
        self.serve_response(
            path,
            RawAnswer {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
                body: content,
            },
        );
    }

    /// Answer every request to exactly `path` with `answer`, overriding all routes (redirects,
    /// odd statuses, malformed bodies).
    pub fn serve_response(&self, path: &str, answer: RawAnswer) {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        self.st().raw.insert(path, answer);
    }

    // ---- observation ----

    pub fn requests(&self) -> Vec<Request> {
        self.st().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.st().requests.len()
    }

    pub fn reset_requests(&self) {
        self.st().requests.clear();
    }

    /// Body bytes sent for distribution-file GETs (not `.metadata`, not `serve_raw`).
    pub fn bytes_served(&self) -> u64 {
        self.st().bytes_served
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn handle(
    AxState(shared): AxState<Shared>,
    ConnectInfo(cut): ConnectInfo<ConnCut>,
    req: HttpRequest,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = req.headers();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let absolute_form = req.uri().authority().is_some();
    let at = std::time::Instant::now();
    let body = if method == Method::POST {
        axum::body::to_bytes(req.into_body(), 64 << 20).await.ok()
    } else {
        Some(Bytes::new())
    };
    let xmlrpc_method = body.as_ref().and_then(|b| {
        let text = String::from_utf8_lossy(b);
        between(&text, "<methodName>", "</methodName>").map(|m| m.trim().to_string())
    });
    let (resp, latency) = {
        let mut st = lock(&shared);
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        let faults = st.faults.clone();
        let (fault, extra_latency) = {
            let r = st.roll();
            let fault = if r < faults.server_error {
                st.injected.server_error += 1;
                Some(StatusCode::SERVICE_UNAVAILABLE)
            } else if r < faults.server_error + faults.too_many {
                st.injected.too_many += 1;
                Some(StatusCode::TOO_MANY_REQUESTS)
            } else {
                None
            };
            (fault, faults.max_latency.mul_f64(st.roll()))
        };
        if fault.is_none() && method == Method::GET && path.starts_with("/packages/") {
            let name = percent_decode(path.rsplit('/').next().unwrap_or_default());
            let r = st.roll();
            if r < faults.truncate {
                st.injected.truncate += 1;
                *st.truncate.entry(name).or_insert(0) += 1;
            } else if r < faults.truncate + faults.corrupt {
                st.injected.corrupt += 1;
                *st.corrupt.entry(name).or_insert(0) += 1;
            }
        }
        let resp = match (fault, body) {
            (Some(status), _) => {
                let r = text(status, "injected fault");
                match faults.retry_after {
                    Some(secs) => with_header(r, header::RETRY_AFTER, &secs.to_string()),
                    None => r,
                }
            }
            (None, Some(body)) => {
                let req = Req {
                    method: &method,
                    path: &path,
                    query: query.as_deref(),
                    accept: accept.as_deref(),
                    range: range.as_deref(),
                    body: &body,
                    cut: &cut,
                };
                route(&mut st, &req)
            }
            (None, None) => text(StatusCode::BAD_REQUEST, "bad request body"),
        };
        st.requests.push(Request {
            method: method.to_string(),
            path,
            query,
            accept,
            user_agent,
            range,
            absolute_form,
            status: resp.status().as_u16(),
            xmlrpc_method,
            at,
        });
        (resp, st.latency + extra_latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    lock(&shared).in_flight -= 1;
    resp
}

/// What routing needs from a request.
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    accept: Option<&'a str>,
    range: Option<&'a str>,
    body: &'a [u8],
    cut: &'a ConnCut,
}

fn route(st: &mut State, req: &Req<'_>) -> Response {
    let Req {
        method,
        path,
        query,
        accept,
        body,
        ..
    } = *req;
    let is_get = method == Method::GET || method == Method::HEAD;
    let decoded = percent_decode(path);
    if let Some(a) = st.raw.get(path).or_else(|| st.raw.get(&decoded)) {
        let mut r = Response::new(Body::from(a.body.clone()));
        *r.status_mut() = status_code(a.status);
        for (name, value) in &a.headers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                header::HeaderValue::from_str(value),
            ) {
                r.headers_mut().append(n, v);
            }
        }
        return r;
    }
    if method == Method::POST && matches!(path, "/pypi" | "/pypi/" | "/RPC2") {
        return xmlrpc(st, body);
    }
    if !is_get {
        return not_found();
    }
    let q = query.map(|q| format!("?{q}")).unwrap_or_default();
    if decoded == "/simple" {
        return redirect(&format!("/simple/{q}"));
    }
    if decoded == "/simple/" {
        return simple_index(st, accept);
    }
    if let Some(rest) = decoded.strip_prefix("/simple/") {
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() || name.contains('/') {
            return not_found();
        }
        let norm = normalize(name);
        if name != norm || !rest.ends_with('/') {
            return redirect(&format!("/simple/{}/{q}", encode_path(&norm)));
        }
        return simple_project(st, &norm, accept);
    }
    if let Some(name) = decoded
        .strip_prefix("/pypi/")
        .and_then(|r| r.strip_suffix("/json"))
    {
        if name.is_empty() || name.contains('/') {
            return not_found();
        }
        return json_api(st, name, &q);
    }
    if decoded.starts_with("/packages/") {
        return download(st, req, &decoded[1..]);
    }
    not_found()
}

fn text(status: StatusCode, msg: &str) -> Response {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(msg.to_string()),
    )
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 Not Found")
}

fn bytes_response(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn with_header(mut r: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

fn redirect(location: &str) -> Response {
    with_header(
        text(StatusCode::MOVED_PERMANENTLY, "moved"),
        header::LOCATION,
        location,
    )
}

fn json_response(v: &Value, content_type: &str, serial: u64) -> Response {
    let r = bytes_response(StatusCode::OK, content_type, Bytes::from(v.to_string()));
    with_header(
        r,
        header::HeaderName::from_static("x-pypi-last-serial"),
        &serial.to_string(),
    )
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

// ---- JSON API ----

fn json_api(st: &mut State, name: &str, q: &str) -> Response {
    let key = normalize(name);
    let current = st
        .projects
        .get(&key)
        .or_else(|| st.previous.get(&key).and_then(Option::as_ref));
    if let Some(p) = current
        && p.display != name
    {
        return redirect(&format!("/pypi/{}/json{q}", encode_path(&p.display)));
    }
    let project = if take(&mut st.stale, &key) {
        st.previous.get(&key).cloned().flatten()
    } else {
        st.projects.get(&key).cloned()
    };
    let Some(p) = project.filter(|p| !p.releases.is_empty() && !p.quarantined()) else {
        return bytes_response(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from(r#"{"message": "Not Found"}"#),
        );
    };
    let base = &st.base_url;
    let latest = latest_version(&p).unwrap_or_default();
    let mut releases = serde_json::Map::new();
    for (v, rel) in &p.releases {
        let mut files: Vec<Value> = rel
            .files
            .values()
            .map(|f| file_json(base, f, rel))
            .collect();
        files.extend(rel.injected.iter().cloned());
        releases.insert(v.clone(), Value::Array(files));
    }
    let urls = releases.get(&latest).cloned().unwrap_or_else(|| json!([]));
    let requires_python = p
        .releases
        .get(&latest)
        .and_then(|r| r.files.values().find_map(|f| f.requires_python.clone()));
    let body = json!({
        "info": {"name": p.display, "version": latest, "requires_python": requires_python, "summary": ""},
        "last_serial": p.last_serial,
        "releases": releases,
        "urls": urls,
        "vulnerabilities": [],
    });
    json_response(&body, "application/json", p.last_serial)
}

fn metadata_json(f: &FileRec) -> Value {
    match &f.metadata_sha256 {
        Some(h) => json!({ "sha256": h }),
        None => json!(false),
    }
}

fn file_url(base: &str, f: &FileRec) -> String {
    format!("{base}/{}", encode_path(&f.path))
}

fn file_json(base: &str, f: &FileRec, rel: &Release) -> Value {
    let meta = metadata_json(f);
    json!({
        "filename": f.filename,
        "url": file_url(base, f),
        "size": f.content.len(),
        "packagetype": f.packagetype,
        "python_version": f.python_version,
        "digests": {"md5": f.md5, "sha256": f.sha256, "blake2b_256": f.blake2b},
        "md5_digest": f.md5,
        "requires_python": f.requires_python,
        "upload_time": f.upload_time,
        "upload_time_iso_8601": f.upload_time_iso,
        "yanked": rel.yanked,
        "yanked_reason": rel.yanked_reason,
        "core-metadata": meta,
        "data_dist_info_metadata": meta,
        "comment_text": "",
        "has_sig": false,
        "downloads": -1,
    })
}

// ---- Simple API ----

fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.contains("application/vnd.pypi.simple.v1+json")
            || a.contains("application/vnd.pypi.simple.latest+json")
    })
}

fn html_type(accept: Option<&str>) -> &'static str {
    if accept.is_some_and(|a| a.contains("application/vnd.pypi.simple.v1+html")) {
        "application/vnd.pypi.simple.v1+html"
    } else {
        "text/html; charset=utf-8"
    }
}

const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

fn simple_index(st: &State, accept: Option<&str>) -> Response {
    if wants_json(accept) {
        let projects: Vec<Value> = st
            .projects
            .values()
            .filter(|p| !p.quarantined())
            .map(|p| json!({"name": p.display, "_last-serial": p.last_serial}))
            .collect();
        let body = json!({"meta": {"api-version": "1.4", "_last-serial": st.serial}, "projects": projects});
        return json_response(&body, SIMPLE_JSON, st.serial);
    }
    let mut html = String::from(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n    <title>Simple index</title>\n  </head>\n  <body>\n",
    );
    for (key, p) in &st.projects {
        html.push_str(&format!(
            "    <a href=\"/simple/{}/\">{}</a>\n",
            html_escape(&encode_path(key)),
            html_escape(&p.display)
        ));
    }
    html.push_str("  </body>\n</html>\n");
    let r = bytes_response(StatusCode::OK, html_type(accept), Bytes::from(html));
    with_header(
        r,
        header::HeaderName::from_static("x-pypi-last-serial"),
        &st.serial.to_string(),
    )
}

fn simple_project(st: &State, key: &str, accept: Option<&str>) -> Response {
    let Some(p) = st.projects.get(key) else {
        return not_found();
    };
    let mut versions: Vec<&String> = p.releases.keys().collect();
    versions.sort_by_key(|v| version_key(v));
    let files: Vec<(&Arc<FileRec>, &Release)> = versions
        .iter()
        .flat_map(|v| {
            let rel = &p.releases[*v];
            rel.files.values().map(move |f| (f, rel))
        })
        .filter(|_| !p.quarantined())
        .collect();
    let yanked = |rel: &Release| -> Value {
        match (&rel.yanked, &rel.yanked_reason) {
            (true, Some(r)) if !r.is_empty() => json!(r),
            (y, _) => json!(y),
        }
    };
    if wants_json(accept) {
        let files: Vec<Value> = files
            .iter()
            .map(|(f, rel)| {
                let meta = metadata_json(f);
                let mut hashes = json!({"sha256": f.sha256});
                for (name, hex) in &f.extra_hashes {
                    hashes[name] = json!(hex);
                }
                let provenance = f.provenance.as_ref().map(|p| {
                    if p.starts_with('/') {
                        format!("{}{p}", st.base_url)
                    } else {
                        p.clone()
                    }
                });
                json!({
                    "filename": f.filename,
                    "url": file_url(&st.base_url, f),
                    "hashes": hashes,
                    "provenance": provenance,
                    "requires-python": f.requires_python,
                    "yanked": yanked(rel),
                    "size": f.content.len(),
                    "upload-time": f.upload_time_iso,
                    "core-metadata": meta,
                    "data-dist-info-metadata": meta,
                })
            })
            .collect();
        let mut body = json!({
            "meta": {"api-version": "1.4", "_last-serial": p.last_serial},
            "name": key,
            "files": files,
            "versions": versions,
        });
        if let Some((status, reason)) = &p.status {
            body["project-status"] = json!({"status": status, "reason": reason});
        }
        return json_response(&body, SIMPLE_JSON, p.last_serial);
    }
    let title = html_escape(&p.display);
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n    <title>Links for {title}</title>\n  </head>\n  <body>\n    <h1>Links for {title}</h1>\n"
    );
    for (f, rel) in &files {
        let mut attrs = String::new();
        if let Some(rp) = &f.requires_python {
            attrs.push_str(&format!(" data-requires-python=\"{}\"", html_escape(rp)));
        }
        if rel.yanked {
            attrs.push_str(&format!(
                " data-yanked=\"{}\"",
                html_escape(rel.yanked_reason.as_deref().unwrap_or(""))
            ));
        }
        if let Some(h) = &f.metadata_sha256 {
            attrs.push_str(&format!(
                " data-dist-info-metadata=\"sha256={h}\" data-core-metadata=\"sha256={h}\""
            ));
        }
        let href = html_escape(&format!(
            "{}#sha256={}",
            file_url(&st.base_url, f),
            f.sha256
        ));
        html.push_str(&format!(
            "    <a href=\"{href}\"{attrs}>{}</a><br />\n",
            html_escape(&f.filename)
        ));
    }
    html.push_str(&format!(
        "  </body>\n</html>\n<!--SERIAL {}-->",
        p.last_serial
    ));
    let r = bytes_response(StatusCode::OK, html_type(accept), Bytes::from(html));
    with_header(
        r,
        header::HeaderName::from_static("x-pypi-last-serial"),
        &p.last_serial.to_string(),
    )
}

// ---- downloads ----

fn download(st: &mut State, req: &Req<'_>, rel_path: &str) -> Response {
    let Req {
        method, range, cut, ..
    } = *req;
    let (content, is_metadata) = match st.live_file(rel_path) {
        Some(f) => (f.content.clone(), false),
        None => match rel_path
            .strip_suffix(".metadata")
            .and_then(|p| st.live_file(p))
        {
            Some(f) => match &f.metadata {
                Some(m) => (m.clone(), true),
                None => return not_found(),
            },
            None => return not_found(),
        },
    };
    let name = rel_path.rsplit('/').next().unwrap_or_default().to_string();
    let is_get = method == Method::GET;
    if is_get
        && let Some((status, n)) = st.fail.get_mut(&name)
        && *n > 0
    {
        *n -= 1;
        return text(status_code(*status), "injected failure");
    }
    let truncate = is_get && take(&mut st.truncate, &name);
    let mut content = content;
    if is_get && !content.is_empty() && take(&mut st.corrupt, &name) {
        let mut v = content.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        content = Bytes::from(v);
    }
    let total = content.len() as u64;
    let (status, body, content_range) = match range.and_then(|r| parse_range(r, total)) {
        Some(Ok((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            content.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{total}")),
        ),
        Some(Err(())) => {
            let r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            return with_header(r, header::CONTENT_RANGE, &format!("bytes */{total}"));
        }
        None => (StatusCode::OK, content, None),
    };
    if truncate && !body.is_empty() {
        // The response itself is complete; the connection stops after half the body.
        cut.arm(body.len() / 2);
    }
    if is_get && !is_metadata {
        st.bytes_served += if truncate { body.len() / 2 } else { body.len() } as u64;
    }
    let mut r = bytes_response(StatusCode::OK, "application/octet-stream", body);
    *r.status_mut() = status;
    r = with_header(r, header::ACCEPT_RANGES, "bytes");
    if let Some(cr) = content_range {
        r = with_header(r, header::CONTENT_RANGE, &cr);
    }
    r
}

/// `bytes=N-` or `bytes=N-M`. None: ignore the header; Err: unsatisfiable.
fn parse_range(h: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => total.saturating_sub(1),
        e => e.parse::<u64>().ok()?.min(total.saturating_sub(1)),
    };
    if start >= total || end < start {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

// ---- connection layer: truncated downloads ----
//
// hyper drops whatever it still buffers when a body ends short of its Content-Length, so a
// truncated download cannot be made from a short body. Instead every connection's socket is
// wrapped: the handler arms it with how many body bytes may pass, the wrapper lets the response
// head and that many body bytes through, then fails the write, and hyper closes the connection.
// (HTTP/1.1 only, like every client of this server.)

#[derive(Clone, Copy, Debug)]
enum Cut {
    Off,
    /// Still in the response head; `matched` bytes of "\r\n\r\n" seen so far.
    Head {
        matched: u8,
        allowed: usize,
    },
    Body {
        left: usize,
    },
    Dead,
}

/// Per-connection truncation switch, handed to the handler as `ConnectInfo`.
#[derive(Clone, Debug)]
struct ConnCut(Arc<Mutex<Cut>>);

impl ConnCut {
    fn get(&self) -> Cut {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, c: Cut) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    fn arm(&self, allowed: usize) {
        self.set(Cut::Head {
            matched: 0,
            allowed,
        });
    }
}

struct CutListener(tokio::net::TcpListener);

impl axum::serve::Listener for CutListener {
    type Io = CutIo;
    type Addr = ConnCut;

    async fn accept(&mut self) -> (CutIo, ConnCut) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let cut = ConnCut(Arc::new(Mutex::new(Cut::Off)));
                    return (
                        CutIo {
                            stream,
                            cut: cut.clone(),
                        },
                        cut,
                    );
                }
                // e.g. too many open files: back off, like axum's own listener.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnCut> {
        Ok(ConnCut(Arc::new(Mutex::new(Cut::Off))))
    }
}

impl Connected<axum::serve::IncomingStream<'_, CutListener>> for ConnCut {
    fn connect_info(stream: axum::serve::IncomingStream<'_, CutListener>) -> Self {
        stream.remote_addr().clone()
    }
}

struct CutIo {
    stream: tokio::net::TcpStream,
    cut: ConnCut,
}

/// Scan for the end of an HTTP head: (index just past "\r\n\r\n" if found, matcher state).
fn head_end(mut matched: u8, buf: &[u8]) -> (Option<usize>, u8) {
    const PAT: &[u8; 4] = b"\r\n\r\n";
    for (i, &b) in buf.iter().enumerate() {
        if b == PAT[matched as usize] {
            matched += 1;
            if matched == 4 {
                return (Some(i + 1), 4);
            }
        } else {
            matched = u8::from(b == b'\r');
        }
    }
    (None, matched)
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let state = self.cut.get();
        let limit = match state {
            Cut::Off => buf.len(),
            Cut::Head { matched, allowed } => match head_end(matched, buf).0 {
                Some(i) => (i + allowed).min(buf.len()),
                None => buf.len(),
            },
            Cut::Body { left } => left.min(buf.len()),
            Cut::Dead => 0,
        };
        if limit == 0 && !buf.is_empty() {
            self.cut.set(Cut::Dead);
            let e = io::Error::new(io::ErrorKind::ConnectionAborted, "fake upstream: truncated");
            return Poll::Ready(Err(e));
        }
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..limit]))?;
        let next = match state {
            Cut::Head { matched, allowed } => match head_end(matched, &buf[..n]) {
                (Some(i), _) => Cut::Body {
                    left: allowed - (n - i),
                },
                (None, m) => Cut::Head {
                    matched: m,
                    allowed,
                },
            },
            Cut::Body { left } => Cut::Body { left: left - n },
            other => other,
        };
        self.cut.set(match next {
            Cut::Body { left: 0 } => Cut::Dead,
            other => other,
        });
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

// ---- XML-RPC ----

enum Xv {
    Int(i64),
    Str(String),
    Nil,
    Array(Vec<Xv>),
    Struct(Vec<(String, Xv)>),
}

/// Marshal like Python's xmlrpc.client.Marshaller.
fn xml_dump(v: &Xv, out: &mut String) {
    match v {
        Xv::Int(i) => out.push_str(&format!("<value><int>{i}</int></value>\n")),
        Xv::Str(s) => out.push_str(&format!(
            "<value><string>{}</string></value>\n",
            xml_escape(s)
        )),
        Xv::Nil => out.push_str("<value><nil/></value>"),
        Xv::Array(items) => {
            out.push_str("<value><array><data>\n");
            items.iter().for_each(|i| xml_dump(i, out));
            out.push_str("</data></array></value>\n");
        }
        Xv::Struct(members) => {
            out.push_str("<value><struct>\n");
            for (k, v) in members {
                out.push_str(&format!("<member>\n<name>{}</name>\n", xml_escape(k)));
                xml_dump(v, out);
                out.push_str("</member>\n");
            }
            out.push_str("</struct></value>\n");
        }
    }
}

fn xml_response(inner: String) -> Response {
    let body = format!("<?xml version='1.0'?>\n<methodResponse>\n{inner}</methodResponse>\n");
    bytes_response(StatusCode::OK, "text/xml", Bytes::from(body))
}

fn xml_ok(v: Xv) -> Response {
    let mut s = String::from("<params>\n<param>\n");
    xml_dump(&v, &mut s);
    s.push_str("</param>\n</params>\n");
    xml_response(s)
}

fn xml_fault(code: i64, msg: &str) -> Response {
    let mut s = String::from("<fault>\n");
    let v = Xv::Struct(vec![
        ("faultCode".into(), Xv::Int(code)),
        ("faultString".into(), Xv::Str(msg.into())),
    ]);
    xml_dump(&v, &mut s);
    s.push_str("</fault>\n");
    xml_response(s)
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

fn xmlrpc(st: &mut State, body: &[u8]) -> Response {
    if let Some(code) = st.xmlrpc_status {
        return text(status_code(code), "XML-RPC disabled");
    }
    let text = String::from_utf8_lossy(body);
    let Some(method) = between(&text, "<methodName>", "</methodName>").map(str::trim) else {
        return xml_fault(-32700, "parse error. not well formed");
    };
    let params = between(&text, "<params>", "</params>").unwrap_or("");
    let param = ["int", "i4", "i8"]
        .iter()
        .find_map(|t| between(params, &format!("<{t}>"), &format!("</{t}>")))
        .map(|s| s.trim().parse::<i64>());
    let result = match method {
        "list_packages_with_serial" => Xv::Struct(
            st.projects
                .values()
                .map(|p| (p.display.clone(), Xv::Int(p.last_serial as i64)))
                .collect(),
        ),
        "changelog_last_serial" => Xv::Int(st.serial as i64),
        "changelog_since_serial" => {
            let since = match param {
                Some(Ok(n)) => n,
                _ => return xml_fault(-32602, "server error; invalid method params"),
            };
            let rows = st
                .journal
                .iter()
                .filter(|r| r.serial as i64 > since)
                .take(st.changelog_page)
                .map(|r| {
                    Xv::Array(vec![
                        Xv::Str(r.name.clone()),
                        r.version.clone().map(Xv::Str).unwrap_or(Xv::Nil),
                        Xv::Int(r.timestamp),
                        Xv::Str(r.action.clone()),
                        Xv::Int(r.serial as i64),
                    ])
                })
                .collect();
            Xv::Array(rows)
        }
        other => {
            return xml_fault(
                -32601,
                &format!("server error; requested method not found: {other}"),
            );
        }
    };
    xml_ok(result)
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// PEP 503: lowercase, runs of `-`, `_`, `.` become one `-`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// Percent-encode a URL path, keeping `/`, unreserved chars and path-safe sub-delims.
fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn html_escape(s: &str) -> String {
    xml_escape(s).replace('"', "&quot;")
}

/// Simplified PEP 440 ordering: dot-separated parts compared by leading number, then a part
/// without suffix sorts after one with a suffix ("1.0" > "1.0rc1"), then the suffix text.
fn version_key(v: &str) -> Vec<(u64, bool, String)> {
    v.split('.')
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let num = if digits.is_empty() {
                0
            } else {
                digits.parse().unwrap_or(u64::MAX)
            };
            let suffix = part[digits.len()..].to_string();
            (num, suffix.is_empty(), suffix)
        })
        .collect()
}

/// Highest version, preferring releases that are not yanked.
fn latest_version(p: &Project) -> Option<String> {
    let best = |yanked_ok: bool| {
        p.releases
            .iter()
            .filter(|(_, r)| yanked_ok || !r.yanked)
            .map(|(v, _)| v)
            .max_by_key(|v| version_key(v))
            .cloned()
    };
    best(false).or_else(|| best(true))
}

/// Deterministic fake clock: 2020-09-13T12:26:40Z plus one minute per serial.
fn fake_epoch(serial: u64) -> i64 {
    1_600_000_000 + serial as i64 * 60
}

/// ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.ffffffZ") for the fake clock at `serial`.
fn fake_time(serial: u64) -> (String, String) {
    let secs = fake_epoch(serial);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let micros = serial.wrapping_mul(7919) % 1_000_000;
    (base.clone(), format!("{base}.{micros:06}Z"))
}

/// Howard Hinnant's days-since-1970 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A caller-given ISO 8601 time as (seconds form, microseconds form with "Z").
fn normalize_time(t: &str) -> (String, String) {
    let t = t.trim();
    if t.len() < 19 || !t.is_char_boundary(19) {
        return (t.to_string(), t.to_string());
    }
    let base = t[..19].to_string();
    let frac: String = t[19..]
        .strip_prefix('.')
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    (base.clone(), format!("{base}.{frac:0<6}Z"))
}
