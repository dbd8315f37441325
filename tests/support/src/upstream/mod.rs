//! A fake, test-only PyPI ("Warehouse-compatible") upstream.
//!
//! It emulates the parts of Warehouse a mirror talks to, on 127.0.0.1 only:
//!   * XML-RPC at `POST /pypi` (also `/RPC2`): `list_packages_with_serial`,
//!     `changelog_last_serial`, `changelog_since_serial(n)` (paged, 50,000 rows by default);
//!   * the JSON API `GET /pypi/{name}/json` (301 to the display name, `X-PyPI-Last-Serial`);
//!   * the Simple API `GET /simple/` and `GET /simple/{normalized}/`, PEP 503 HTML or
//!     PEP 691 (api-version 1.4) JSON depending on `Accept`;
//!   * file downloads `GET /packages/aa/bb/<60hex>/<filename>` (+ PEP 658 `.metadata`),
//!     with `Range: bytes=N-` support.
//!
//! Personalities (`FakeUpstream::start_as(Personality)`; `start()` is
//! `Personality::warehouse()`, all of the above) make the same index look like other upstreams:
//!   * `prefix` (everything, XML-RPC and files included, served under e.g. `/root/pypi`) and
//!     `simple_dir` (`simple`, or devpi's `+simple`); `host` (the name in absolute URLs and
//!     `master_url`, which must resolve to 127.0.0.1);
//!   * `xmlrpc = false` (every POST: 405, `Allow: GET,HEAD`, empty body); `json_api = false`
//!     (404);
//!   * `root`: `Negotiated`, `HtmlOnly` (whatever `Accept` says), `JsonWithoutSerials`;
//!     `pages`: `Negotiated` or `HtmlOnly`;
//!   * `api_version` of JSON pages, `V1_0` (no `size`, `upload-time`, `versions`; only
//!     `data-dist-info-metadata`, also in HTML, whose `pypi:repository-version` is then 1.0)
//!     to `V1_4` (1.1 adds those, 1.3 `provenance`, 1.4 `project-status`);
//!   * `serials`: `Numbers`, `Strings` (`"_last-serial": "123"`, `"last_serial": "123"`) or
//!     `Absent` (also no `<!--SERIAL n-->`); `serial_headers = false`: no `X-PyPI-Last-Serial`;
//!   * `file_urls`: `Absolute` or `Relative` to the listing document (root links too);
//!     `file_layout`: `Warehouse { extra }` (`<prefix><extra>/packages/aa/bb/<60hex>/<f>`, e.g.
//!     extra `/packages` for `/packages/packages/...`) or `Devpi`
//!     (`<prefix>/+f/<sha256[0:3]>/<sha256[3:16]>/<f>`); files are served only there (Range and
//!     `.metadata` as above); `json_api_blake2b = false` drops `blake2b_256` from `digests`;
//!   * `conditional` on project pages (HTML and JSON) and the JSON API: `None`, `ETag` (strong,
//!     a digest of the body; `If-None-Match` → 304), `LastModified` (the real time the project
//!     last changed; `If-Modified-Since` → 304; a change in the second a page was served moves
//!     it on a second), `Both`;
//!   * `master`: `IndexRoot` or `SimpleRoot`, what `master_url()` gives.
//!
//! Ready-made: `warehouse()`, `mirror_like()`, `devpi_like()`, `artifactory_like()`, and
//! `.with_host(name)` on any of them.
//!
//! Every change goes through a journal like Warehouse's: each row bumps the global serial and
//! the project's last serial. The server runs on its own thread with its own tokio runtime, so
//! plain `#[test]` functions can use it; dropping the `FakeUpstream` stops it.
//!
//! Fault knobs: `set_latency` (delay before every response), `corrupt_downloads` (one byte
//! flipped), `truncate_downloads` (half the body, then the connection drops), `fail_downloads`
//! (an HTTP status), `stale_metadata` (the JSON API and the project page serve the project's previous snapshot),
//! `set_xmlrpc_status` (XML-RPC disabled with 404/405...), `inject_file_json` (hostile file
//! entries in the JSON API), `serve_raw` / `serve_response` (arbitrary bytes, or any status,
//! headers and body, at an arbitrary path; `RawAnswer::gzip_bomb` makes a decompression bomb),
//! `endless_changelog` (a change feed that never ends),
//! `trickle` (an answer sent a byte at a time),
//! `claim_json_serial` / `claim_last_serial` (absurd serials
//! from the JSON API or `changelog_last_serial`), `set_fault_rates` (seeded random 5xx, 429 with
//! `Retry-After`, truncation, corruption and latency, for mixtures).
//! Download faults are keyed by the URL's last segment (`<file>.metadata` for PEP 658 files),
//! apply to GET only (not HEAD), and are checked in the order fail, truncate, corrupt. The
//! "previous snapshot" of `stale_metadata` is the project as it was before the latest helper
//! call that changed it (a whole `add_release` counts as one change). Truncation is done at the
//! socket (see `CutIo`) and is HTTP/1.1-only.
//! Observation: `requests` (method, path, query, Accept, User-Agent, Range, If-None-Match,
//! If-Modified-Since, whether it came
//! through a proxy, the XML-RPC method called, status, arrival time), `request_count`,
//! `reset_requests`, `bytes_served`, `max_in_flight`.
//! Content, read without a request: `listing` (the PEP 691 root's projects and serials),
//! `json_api_document`, `file_info`, `core_metadata`, `live_files`.
//!
//! Not real: md5 digests are a fake (the first 32 hex of the sha256), timestamps come from a
//! fake clock (one minute per serial), and version ordering is a simplified PEP 440.
//!
//! Helper misuse (e.g. yanking a release that does not exist) panics in the calling test;
//! odd HTTP input never panics the server.
//!
//! The modules split it by concern: `state` (the index and its journal), `server` (HTTP
//! plumbing and routing), `personality` (the knobs above and the helpers that honour them:
//! file URLs, serial forms, validators and 304s), `json_api`, `simple` (PEP 503/691 pages),
//! `files` (downloads), `xmlrpc`, and `faults` (fault injection, including the connection
//! layer that truncates).

mod catalog;
mod faults;
mod files;
mod json_api;
mod personality;
mod server;
mod simple;
mod state;
mod xmlrpc;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use state::{Project, Shared, State, lock, normalize};

pub use catalog::name as generated_name;
pub use faults::{FaultCounts, FaultRates};
pub use personality::{
    ApiVersion, Conditional, FileLayout, MasterForm, Pages, Personality, RootIndex, Serials,
    UrlStyle,
};

/// One request seen by the server, recorded before latency is applied, with its final status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    pub range: Option<String>,
    /// `If-None-Match` as sent (a conditional request by `ETag`).
    pub if_none_match: Option<String>,
    /// `If-Modified-Since` as sent (a conditional request by `Last-Modified`).
    pub if_modified_since: Option<String>,
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

impl RawAnswer {
    /// A 200 with `Content-Encoding: gzip` whose body decompresses to `document` followed by
    /// spaces up to `total` bytes (still valid JSON or HTML): a decompression bomb a few
    /// hundred KiB on the wire. Compressed as it is generated, so `total` costs no memory.
    pub fn gzip_bomb(content_type: &str, document: &[u8], total: usize) -> RawAnswer {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(document).unwrap();
        let spaces = vec![b' '; 1 << 20];
        let mut left = total.saturating_sub(document.len());
        while left > 0 {
            let n = left.min(spaces.len());
            gz.write_all(&spaces[..n]).unwrap();
            left -= n;
        }
        RawAnswer {
            status: 200,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("content-encoding".into(), "gzip".into()),
            ],
            body: gz.finish().unwrap(),
        }
    }
}

/// Facts about a published file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Relative path `"packages/aa/bb/<60hex>/<filename>"` (not percent-encoded).
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

impl FileOpts {
    /// A file uploaded `secs` seconds before now, by the real clock (what a cooldown measures).
    pub fn uploaded_secs_ago(secs: u64) -> FileOpts {
        FileOpts {
            upload_time: Some(state::iso_time(
                personality::unix_now().saturating_sub(secs),
            )),
            ..FileOpts::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public handle: start, publish, observe (the fault knobs are in `faults`)

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
    /// Binds 127.0.0.1:0 and serves on its own thread with its own 2-worker tokio runtime,
    /// as Warehouse does (`Personality::warehouse()`).
    pub fn start() -> FakeUpstream {
        FakeUpstream::start_as(Personality::warehouse())
    }

    /// Like `start`, presenting itself as `personality`.
    pub fn start_as(personality: Personality) -> FakeUpstream {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake upstream: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fake upstream: set_nonblocking");
        let port = listener
            .local_addr()
            .expect("fake upstream: local_addr")
            .port();
        let base_url = format!("http://{}:{port}", personality.host);
        let state: Shared = Arc::new(Mutex::new(State::new(base_url, personality)));
        let (tx, thread) = server::spawn(listener, port, state.clone());
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

    /// "http://127.0.0.1:PORT" (no trailing slash), whatever the personality.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What an operator puts in `master` for this upstream: the index root
    /// `http://<host>:PORT<prefix>`, or the simple root itself (devpi:
    /// `http://<host>:PORT/root/pypi/+simple/`), as the personality's `master` says.
    pub fn master_url(&self) -> String {
        let st = self.st();
        let p = &st.personality;
        match p.master {
            MasterForm::IndexRoot => format!("{}{}", st.base_url, p.prefix),
            MasterForm::SimpleRoot => format!("{}{}", st.base_url, p.simple_root()),
        }
    }

    /// The personality it was started as.
    pub fn personality(&self) -> Personality {
        self.st().personality.clone()
    }

    /// The absolute path at which this file is served now (not percent-encoded): where the
    /// personality's file URLs point, e.g. `/root/pypi/+f/abc/…/<filename>` for devpi.
    pub fn served_path(&self, filename: &str) -> Option<String> {
        let st = self.st();
        st.files
            .get(filename)
            .map(|f| personality::file_path(&st, f))
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

    /// Add `count` generated projects (`catalog::name(i)`, serials 1..=count, half of them
    /// with one tiny sdist), made real only when asked for: PyPI's size without its memory.
    /// Only on an empty index.
    pub fn generate(&self, count: u64) {
        let mut st = self.st();
        assert!(
            st.serial == 0 && st.catalog.is_none(),
            "fake upstream: generate() on an index that has projects"
        );
        st.catalog = Some(catalog::Catalog::new(count));
        st.serial = count;
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

    /// What is published now: each visible project (by normalized name, quarantined ones
    /// left out) with the names of its files.
    pub fn live_files(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.st()
            .projects
            .iter()
            .filter(|(_, p)| !p.quarantined())
            .map(|(key, p)| {
                let files = p.releases.values().flat_map(|r| r.files.keys().cloned());
                (key.clone(), files.collect())
            })
            .collect()
    }

    /// The projects the PEP 691 root lists, in its order: display name and last serial of
    /// each visible (not quarantined) project.
    pub fn listing(&self) -> Vec<(String, u64)> {
        self.st()
            .projects
            .values()
            .filter(|p| !p.quarantined())
            .map(|p| (p.display.clone(), p.last_serial))
            .collect()
    }

    /// The JSON API document `GET <prefix>/pypi/<name>/json` answers now (file URLs and
    /// serial in this personality's form, even where `json_api = false`), without serving or
    /// recording a request; None where it answers 404 (no such project, no release, or
    /// quarantined).
    pub fn json_api_document(&self, name: &str) -> Option<serde_json::Value> {
        let st = self.st();
        let p = st
            .projects
            .get(&normalize(name))
            .filter(|p| !p.releases.is_empty() && !p.quarantined())?;
        Some(json_api::document(&st, p).0)
    }

    /// The PEP 658 core metadata published with a file (served at `<file url>.metadata`).
    pub fn core_metadata(&self, filename: &str) -> Option<Vec<u8>> {
        let st = self.st();
        st.files
            .get(filename)?
            .metadata
            .as_ref()
            .map(|m| m.to_vec())
    }

    /// Maximum rows per `changelog_since_serial` answer (default 50,000).
    pub fn set_changelog_page(&self, n: usize) {
        self.st().changelog_page = n.max(1);
    }

    // ---- observation ----

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.st().max_in_flight
    }

    /// Start measuring `max_in_flight` afresh.
    pub fn reset_max_in_flight(&self) {
        let mut st = self.st();
        st.max_in_flight = st.in_flight;
    }

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
