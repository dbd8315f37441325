//! The fake index's model: projects, releases and files, and the journal every change goes
//! through (each row bumps the global serial and the project's last serial), with the fake
//! clock and the simplified version ordering. Fault knobs and observations live here too, as
//! plain fields; `faults`, `server` and the `FakeUpstream` methods read and set them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use blake2::Blake2b256;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::faults::{Bucket, FaultCounts, FaultRates};
use super::personality::{Personality, unix_now};
use super::{FileOpts, RawAnswer, Request};

pub(super) struct FileRec {
    pub(super) filename: String,
    pub(super) project_key: String,
    pub(super) version: String,
    pub(super) content: Bytes,
    pub(super) sha256: String,
    pub(super) blake2b: String,
    /// FAKE: no md5 crate is allowed, so this is sha256[..32], NOT a real md5.
    pub(super) md5: String,
    pub(super) path: String,
    pub(super) packagetype: String,
    pub(super) python_version: String,
    pub(super) requires_python: Option<String>,
    pub(super) upload_time: String,
    pub(super) upload_time_iso: String,
    pub(super) metadata: Option<Bytes>,
    pub(super) metadata_sha256: Option<String>,
    pub(super) provenance: Option<String>,
    pub(super) extra_hashes: Vec<(String, String)>,
}

#[derive(Clone, Default)]
pub(super) struct Release {
    pub(super) files: BTreeMap<String, Arc<FileRec>>,
    pub(super) injected: Vec<Value>,
    pub(super) yanked: bool,
    pub(super) yanked_reason: Option<String>,
}

#[derive(Clone)]
pub(super) struct Project {
    pub(super) display: String,
    pub(super) last_serial: u64,
    pub(super) releases: BTreeMap<String, Release>,
    /// PEP 792 status and reason; `quarantined` hides the project like PyPI does.
    pub(super) status: Option<(String, Option<String>)>,
    /// When it last changed, real seconds since the epoch (`Last-Modified`); a change after
    /// this time was served moves it on by at least a second, so a client's
    /// `If-Modified-Since` never hides a change made within the same second.
    pub(super) modified: u64,
    pub(super) modified_served: bool,
}

impl Project {
    pub(super) fn quarantined(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|(s, _)| s == "quarantined")
    }
}

pub(super) struct JournalRow {
    pub(super) name: String,
    pub(super) version: Option<String>,
    pub(super) timestamp: i64,
    pub(super) action: String,
    pub(super) serial: u64,
}

pub(super) struct State {
    /// `http://<host>:<port>`, the origin of absolute URLs.
    pub(super) base_url: String,
    pub(super) personality: Personality,
    pub(super) serial: u64,
    pub(super) journal: Vec<JournalRow>,
    /// Live projects by PEP 503 normalized name.
    pub(super) projects: BTreeMap<String, Project>,
    /// Each project's state before its latest change (None: it did not exist).
    pub(super) previous: HashMap<String, Option<Project>>,
    /// Every file ever published, by filename (for `file_info`).
    pub(super) files: BTreeMap<String, Arc<FileRec>>,
    /// Every file ever published, by relative path.
    pub(super) by_path: HashMap<String, Arc<FileRec>>,
    pub(super) changelog_page: usize,
    // Fault knobs (see `faults`).
    pub(super) latency: Duration,
    pub(super) corrupt: HashMap<String, u32>,
    pub(super) truncate: HashMap<String, u32>,
    pub(super) fail: HashMap<String, (u16, u32)>,
    pub(super) stale: HashMap<String, u32>,
    pub(super) xmlrpc_status: Option<u16>,
    pub(super) raw: HashMap<String, RawAnswer>,
    /// `X-PyPI-Last-Serial` (and `last_serial`) the JSON API claims, by normalized name.
    pub(super) json_serial: HashMap<String, u64>,
    /// What `changelog_last_serial` claims instead of the journal's serial.
    pub(super) last_serial: Option<i64>,
    /// `changelog_since_serial(n)` answers a full page of new names, all at serial n + 1.
    pub(super) endless_changelog: bool,
    /// Answers to these paths are sent one byte every so often.
    pub(super) trickle: HashMap<String, Duration>,
    pub(super) rate_limit: Option<Bucket>,
    /// Generated projects not yet made real (the scale benchmark's).
    pub(super) catalog: Option<super::catalog::Catalog>,
    // Random faults: the rates, what fired so far, the generator's state.
    pub(super) faults: FaultRates,
    pub(super) injected: FaultCounts,
    pub(super) rng: u64,
    // Observation.
    pub(super) requests: Vec<Request>,
    pub(super) bytes_served: u64,
    pub(super) in_flight: usize,
    pub(super) max_in_flight: usize,
}

pub(super) type Shared = Arc<Mutex<State>>;

pub(super) fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// An empty index served at `base_url` as `personality`, with no faults armed.
    pub(super) fn new(base_url: String, personality: Personality) -> State {
        State {
            base_url,
            personality,
            serial: 0,
            journal: Vec::new(),
            projects: BTreeMap::new(),
            previous: HashMap::new(),
            files: BTreeMap::new(),
            by_path: HashMap::new(),
            changelog_page: 50_000,
            latency: Duration::ZERO,
            corrupt: HashMap::new(),
            truncate: HashMap::new(),
            fail: HashMap::new(),
            stale: HashMap::new(),
            xmlrpc_status: None,
            raw: HashMap::new(),
            json_serial: HashMap::new(),
            last_serial: None,
            endless_changelog: false,
            trickle: HashMap::new(),
            rate_limit: None,
            catalog: None,
            faults: FaultRates::default(),
            injected: FaultCounts::default(),
            rng: 0x9E37_79B9_7F4A_7C15,
            requests: Vec::new(),
            bytes_served: 0,
            in_flight: 0,
            max_in_flight: 0,
        }
    }

    pub(super) fn project(&mut self, display: &str) -> &Project {
        self.materialize(&normalize(display));
        self.projects
            .get(&normalize(display))
            .unwrap_or_else(|| panic!("fake upstream: no project {display:?}"))
    }

    pub(super) fn snapshot(&mut self, key: &str) {
        let prev = self.projects.get(key).cloned();
        self.previous.insert(key.to_string(), prev);
    }

    pub(super) fn journal(&mut self, key: &str, version: Option<&str>, action: String) -> u64 {
        self.serial += 1;
        let serial = self.serial;
        let name = match self.projects.get_mut(key) {
            Some(p) => {
                p.last_serial = serial;
                let now = unix_now();
                p.modified = if p.modified_served {
                    now.max(p.modified + 1)
                } else {
                    now.max(p.modified)
                };
                p.modified_served = false;
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

    pub(super) fn ensure_project(&mut self, display: &str) -> String {
        let key = normalize(display);
        self.materialize(&key);
        if !self.projects.contains_key(&key) {
            let p = Project {
                display: display.to_string(),
                last_serial: 0,
                releases: BTreeMap::new(),
                status: None,
                modified: 0,
                modified_served: false,
            };
            self.projects.insert(key.clone(), p);
            self.journal(&key, None, "create".into());
        }
        key
    }

    pub(super) fn ensure_release(&mut self, key: &str, version: &str) {
        let p = self.projects.get_mut(key).expect("project exists");
        if !p.releases.contains_key(version) {
            p.releases.insert(version.to_string(), Release::default());
            self.journal(key, Some(version), "new release".into());
        }
    }

    pub(super) fn add_file(
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
    pub(super) fn live_file(&self, rel_path: &str) -> Option<Arc<FileRec>> {
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

/// PEP 503: lowercase, runs of `-`, `_`, `.` become one `-`.
pub(super) fn normalize(name: &str) -> String {
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

/// Simplified PEP 440 ordering: dot-separated parts compared by leading number, then a part
/// without suffix sorts after one with a suffix ("1.0" > "1.0rc1"), then the suffix text.
pub(super) fn version_key(v: &str) -> Vec<(u64, bool, String)> {
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
pub(super) fn latest_version(p: &Project) -> Option<String> {
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
pub(super) fn fake_epoch(serial: u64) -> i64 {
    1_600_000_000 + serial as i64 * 60
}

/// ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.ffffffZ") for the fake clock at `serial`.
fn fake_time(serial: u64) -> (String, String) {
    let base = iso_time(fake_epoch(serial) as u64);
    let micros = serial.wrapping_mul(7919) % 1_000_000;
    (base.clone(), format!("{base}.{micros:06}Z"))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS` (UTC).
pub(super) fn iso_time(secs: u64) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-since-1970 to (year, month, day).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
