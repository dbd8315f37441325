//! The tree bandersnatch 8.2.0 leaves on disk after mirroring a [`FakeUpstream`], written
//! without running bandersnatch, for tests of mirrors that follow or adopt such a tree.
//!
//! `write(&up, home, &Options)` acts like one `bandersnatch mirror` run (filesystem storage,
//! `hash-index = false`, `digest_name = sha256`, `compare-method = hash`, no filters,
//! `keep-index-versions = 0`) against `up` as it is now, on whatever `home` already holds:
//!
//! * `status` missing (or no `generation`): every project of the PEP 691 root listing is
//!   synced; otherwise only those whose last serial is above `status` (bandersnatch 8.2.0 reads
//!   its changes from the PEP 691 root, not XML-RPC); a left `todo` is resumed instead.
//! * Per project, from its JSON API document (`FakeUpstream::json_api_document`):
//!   `web/json/<normalized>` (`json.dump(indent=4, sort_keys=True)`, Python's escaping, the
//!   upstream's absolute file URLs untouched) and a copy (not a symlink) at
//!   `web/pypi/<normalized>/json`, when `json`; releases without files dropped; each file at
//!   `web/packages/aa/bb/<60 hex>/<file>` (the URL's path), and its PEP 658 core metadata
//!   beside it as `<file>.metadata` when the document gives a digest (`core-metadata`
//!   option, on by default), both with their mtime set to the upload time; pages
//!   `web/simple/<normalized>/index.html` and an identical `index.v1_html` (PEP 503, title
//!   the display name, links sorted by filename, `href="../../packages/…#sha256=…"`,
//!   attributes `data-requires-python`, `data-core-metadata` + `data-dist-info-metadata`,
//!   `data-yanked` in that order, HTML-escaped like Python's `html.escape`, no newline after
//!   the closing `<!--SERIAL n-->`), and `index.v1_json` (api-version 1.1, `_last-serial` a
//!   **string**, `yanked` a bool, `versions` sorted as strings, `requires-python` null when
//!   upstream says null), per `simple_format`.
//! * Then the root `web/simple/index.html` + `index.v1_html` (every directory under
//!   `web/simple/`, so a project removed upstream stays listed, as it does in bandersnatch)
//!   and `index.v1_json`, whose `_last-serial` is a **number** and is the serial the mirror
//!   had *before* this run (0 on the first), as bandersnatch writes it; `status` (the target
//!   serial, no newline), `generation` (`5`), `web/last-modified` (`%Y%m%dT%H:%M:%S\n`),
//!   `todo` removed, `.lock` left, `web/local-stats/days/` created.
//! * Files upstream removed stay on disk, unlinked (bandersnatch deletes nothing by default).
//!
//! Every file is written as bandersnatch's `rewrite` does: a temporary `.<name>.<8 chars>` in
//! the same directory, mode 0644, renamed into place. `Options::interrupted` stops the run
//! before the listed projects as a killed bandersnatch would: their pages and files not
//! written, `todo` holding the target serial and `<name> <serial>` for each, `status`, the root
//! pages and `last-modified` left as they were. `Damage` then breaks the result.
//!
//! Compared with real bandersnatch 8.2.0 (pip-installed into a Python 3.12 venv, its
//! `simple.py`, `package.py`, `mirror.py` and filesystem storage plugin read): a throwaway
//! program started one `FakeUpstream::start()` (Alpha: a wheel with core metadata and
//! `requires_python = ">=3.8"`, and an sdist; Beta.Lib 1.0 yanked with the reason
//! `bad <build> & "so"`, 2.0 with two files; gamma 0.1 yanked without a reason, 0.2;
//! delta_tool). bandersnatch (`simple-format = ALL`, `json = true`, `release-files = true`,
//! `allow-non-https = true`, `workers = 2`) mirrored it into one directory and this module
//! (`json: true`) into another; then the upstream changed (gamma 0.3 and Epsilon added,
//! Beta.Lib's 1.0 file and gamma 0.1 removed, Beta.Lib 2.0 yanked, delta_tool removed) and both
//! ran again. After each run `diff -r` found the trees identical (every page, JSON document,
//! file, `.metadata`, `status`, `generation`, `todo` absent, hidden files included), and
//! `find -printf '%p %m %s'` the same names, modes and sizes; the files' mtimes agreed to the
//! microsecond (bandersnatch goes through a float). Left different: the time in
//! `web/last-modified` (the wall clock), and the mtimes of pages and directories.
//! Not compared: `interrupted` (from `record_finished_package`'s code) and the damage.
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blake2::Blake2b256;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::mirror::normalize;
use crate::upstream::FakeUpstream;

/// bandersnatch's `simple-format`: which page formats it writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimpleFormat {
    /// `index.html`, `index.v1_html` and `index.v1_json` (bandersnatch's default).
    #[default]
    All,
    Html,
    Json,
}

/// Harm done to the tree after writing it, as a crash, a full disk or a careless operator
/// leaves a bandersnatch mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// This file (by filename) is linked by its project's pages but absent from `packages/`.
    MissingFile(String),
    /// This file holds only the first half of its bytes; its mtime still says upload time.
    TruncatedFile(String),
    /// Beside this file, an interrupted write: `.<filename>.<8 chars>` (Python's
    /// `NamedTemporaryFile(prefix=".<filename>.")`, what bandersnatch's `rewrite` leaves)
    /// holding the first half of its bytes.
    StrayTemp(String),
    /// The project's pages (HTML and JSON; project by any spelling) link this file, which is
    /// nowhere: not upstream, not on disk. Its path is made from made-up bytes.
    DanglingLink { project: String, filename: String },
}

/// What the run looks like: bandersnatch's options and the damage afterwards.
#[derive(Clone, Debug)]
pub struct Options {
    /// `simple-format` (default `All`).
    pub simple_format: SimpleFormat,
    /// `json = true`: `web/json/<name>` and `web/pypi/<name>/json` (default false, as
    /// bandersnatch's).
    pub json: bool,
    /// `core-metadata = true`: PEP 658 `.metadata` files and their attributes (default true).
    pub core_metadata: bool,
    /// Leave the `generation` file (default true; false removes it, as in a tree from before
    /// bandersnatch 1.0.2, which makes the next run start over).
    pub generation: bool,
    /// Stop before these projects (display names or normalized) as a killed run does: a `todo`
    /// naming them, no `status`, root or `last-modified` update. `Some(vec![])` is a run
    /// killed after its last project, before finishing.
    pub interrupted: Option<Vec<String>>,
    pub damage: Vec<Damage>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            simple_format: SimpleFormat::All,
            json: false,
            core_metadata: true,
            generation: true,
            interrupted: None,
            damage: Vec::new(),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// The serial in `status` afterwards (unchanged when interrupted).
    pub serial: u64,
    /// The projects whose pages were written, normalized.
    pub projects: Vec<String>,
    /// The files (and `.metadata` files) written, relative to `web/`.
    pub downloaded: Vec<String>,
}

const GENERATION: &str = "5";
const API_VERSION: &str = "1.1";
const REPOSITORY_VERSION: &str = "1.0";

/// Run "bandersnatch" against `up` into the mirror directory `home` (bandersnatch's
/// `directory`; the served tree is `home/web`).
pub fn write(up: &FakeUpstream, home: &Path, opts: &Options) -> Synced {
    let web = home.join("web");
    let mut dirs = vec![
        home.to_path_buf(),
        web.join("simple"),
        web.join("packages"),
        web.join("local-stats/days"),
    ];
    if opts.json {
        dirs.extend([web.join("json"), web.join("pypi")]);
    }
    for d in dirs {
        fs::create_dir_all(&d).unwrap();
    }
    // filelock creates the lock file and leaves it.
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join(".lock"))
        .unwrap();

    // _load: without a readable generation, status and todo are dropped.
    let generation = home.join("generation");
    if fs::read_to_string(&generation)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(GENERATION)
    {
        let _ = fs::remove_file(home.join("status"));
        let _ = fs::remove_file(home.join("todo"));
    }
    update_safe(&generation, GENERATION.as_bytes());
    let synced: u64 = fs::read_to_string(home.join("status"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);

    // determine_packages_to_sync
    let todo_path = home.join("todo");
    let (mut to_sync, target, need_index_sync): (Vec<(String, u64)>, u64, bool) =
        if let Ok(todo) = fs::read_to_string(&todo_path) {
            let mut lines = todo.lines();
            let target = lines.next().unwrap().trim().parse().unwrap();
            let names = lines
                .filter_map(|l| l.trim().split_once(' '))
                .map(|(n, s)| (n.to_string(), s.parse().unwrap()))
                .collect();
            (names, target, true)
        } else {
            let listing = up.listing();
            let changed: Vec<(String, u64)> = if synced == 0 {
                listing
            } else {
                listing.into_iter().filter(|(_, s)| *s > synced).collect()
            };
            let target = changed.iter().map(|(_, s)| *s).fold(synced, u64::max);
            let need = synced == 0 || !changed.is_empty();
            (changed, target, need)
        };
    let stop: Option<BTreeSet<String>> = opts
        .interrupted
        .as_ref()
        .map(|names| names.iter().map(|n| normalize(n)).collect());
    let left: Vec<(String, u64)> = match &stop {
        Some(stop) => {
            let left = to_sync
                .iter()
                .filter(|(n, _)| stop.contains(&normalize(n)))
                .cloned()
                .collect();
            to_sync.retain(|(n, _)| !stop.contains(&normalize(n)));
            left
        }
        None => Vec::new(),
    };

    let mut out = Synced {
        serial: synced,
        ..Synced::default()
    };
    for (raw_name, _) in &to_sync {
        sync_project(up, &web, raw_name, opts, &mut out);
    }

    if stop.is_some() {
        // record_finished_package: the target serial, then what is still to do.
        let lines: Vec<String> = left.iter().map(|(n, s)| format!("{n} {s}")).collect();
        update_safe(
            &todo_path,
            format!("{target}\n{}", lines.join("\n")).as_bytes(),
        );
    } else {
        if need_index_sync {
            write_root(&web, synced, opts.simple_format);
        }
        let _ = fs::remove_file(&todo_path);
        update_safe(&web.join("last-modified"), last_modified().as_bytes());
        update_safe(&home.join("status"), target.to_string().as_bytes());
        out.serial = target;
    }
    if !opts.generation {
        fs::remove_file(&generation).unwrap();
    }
    for d in &opts.damage {
        damage(up, &web, d);
    }
    out
}

/// One project as `BandersnatchMirror.process_package` handles it.
fn sync_project(up: &FakeUpstream, web: &Path, raw_name: &str, opts: &Options, out: &mut Synced) {
    // PackageNotFound: nothing is written.
    let Some(doc) = up.json_api_document(raw_name) else {
        return;
    };
    let name = normalize(raw_name);
    if opts.json {
        let json_file = web.join("json").join(&name);
        rewrite(&json_file, py_dumps_sorted(&doc).as_bytes());
        let dir = web.join("pypi").join(&name);
        fs::create_dir_all(&dir).unwrap();
        let _ = fs::remove_file(dir.join("json"));
        fs::copy(&json_file, dir.join("json")).unwrap();
    }
    // filter_all_releases_files drops releases left without files.
    let mut versions: Vec<String> = Vec::new();
    let mut files: Vec<Value> = Vec::new();
    for (version, rel) in doc["releases"].as_object().expect("releases") {
        let rel = rel.as_array().expect("release files");
        if !rel.is_empty() {
            versions.push(version.clone());
            files.extend(rel.iter().cloned());
        }
    }
    versions.sort();
    for f in &files {
        write_file(up, web, f, opts.core_metadata, out);
    }
    for d in &opts.damage {
        if let Damage::DanglingLink { project, filename } = d
            && normalize(project) == name
        {
            files.push(phantom(filename));
        }
    }
    files.sort_by(|a, b| a["filename"].as_str().cmp(&b["filename"].as_str()));

    let dir = web.join("simple").join(&name);
    fs::create_dir_all(&dir).unwrap();
    let serial = doc["last_serial"].as_u64().expect("last_serial");
    if opts.simple_format != SimpleFormat::Json {
        let html = project_html(raw_name, serial, &files, opts.core_metadata);
        rewrite(&dir.join("index.html"), html.as_bytes());
        rewrite(&dir.join("index.v1_html"), html.as_bytes());
    }
    if opts.simple_format != SimpleFormat::Html {
        let json = project_json(&name, serial, &versions, &files, opts.core_metadata);
        rewrite(&dir.join("index.v1_json"), json.as_bytes());
    }
    out.projects.push(name);
}

/// `download_file` and `download_metadata_file`: fetched unless a file with the right
/// SHA-256 is already there.
fn write_file(up: &FakeUpstream, web: &Path, f: &Value, core_metadata: bool, out: &mut Synced) {
    let filename = f["filename"].as_str().expect("filename");
    let rel = local_path(f["url"].as_str().expect("url"));
    let path = web.join(&rel);
    let mtime = upload_time(f["upload_time_iso_8601"].as_str().expect("upload time"));
    let sha256 = f["digests"]["sha256"].as_str().expect("sha256");
    if !is_current(&path, sha256) {
        let info = up.file_info(filename).expect("a published file");
        rewrite(&path, &info.content);
        set_mtime(&path, mtime);
        out.downloaded.push(rel.clone());
    }
    let Some((_, digest)) = core_metadata_digest(f).filter(|_| core_metadata) else {
        return;
    };
    let meta = path.with_file_name(format!("{filename}.metadata"));
    if !is_current(&meta, &digest) {
        let bytes = up.core_metadata(filename).expect("published core metadata");
        rewrite(&meta, &bytes);
        set_mtime(&meta, mtime);
        out.downloaded.push(format!("{rel}.metadata"));
    }
}

fn is_current(path: &Path, sha256: &str) -> bool {
    fs::read(path).is_ok_and(|b| hex::encode(Sha256::digest(&b)) == sha256)
}

/// `_file_url_to_local_path`: the URL's path, percent-decoded, which must be under
/// `/packages`; relative to `web/`.
fn local_path(url: &str) -> String {
    let path = url_path(url);
    let decoded = crate::mirror::percent_decode(path);
    let rel = decoded
        .strip_prefix("/packages")
        .unwrap_or_else(|| panic!("bandersnatch refuses the download URL {url}"));
    format!("packages{rel}")
}

/// `urlparse(url).path`.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = if url.contains("://") {
        rest.find('/').map_or("", |i| &rest[i..])
    } else {
        rest
    };
    path.split(['?', '#']).next().unwrap_or_default()
}

/// `find_core_metadata_digest`: the upstream's `core-metadata` digest, sha256 preferred.
fn core_metadata_digest(f: &Value) -> Option<(String, String)> {
    const HASHLIB: &[&str] = &[
        "blake2b",
        "blake2s",
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha3_224",
        "sha3_256",
        "sha3_384",
        "sha3_512",
        "sha512",
        "sha512_224",
        "sha512_256",
        "shake_128",
        "shake_256",
    ];
    let m = f.get("core-metadata")?.as_object()?;
    let usable = |(k, v): (&String, &Value)| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(|s| (k.clone(), s.to_string()))
    };
    m.get_key_value("sha256").and_then(usable).or_else(|| {
        m.iter()
            .filter(|(k, _)| HASHLIB.contains(&k.as_str()))
            .find_map(usable)
    })
}

/// `SimpleAPI.generate_html_simple_page`.
fn project_html(raw_name: &str, serial: u64, files: &[Value], core_metadata: bool) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" \
         content=\"{REPOSITORY_VERSION}\">\n    <title>Links for {raw_name}</title>\n  </head>\n  \
         <body>\n    <h1>Links for {raw_name}</h1>\n"
    );
    let links: Vec<String> = files
        .iter()
        .map(|r| {
            let mut tags = String::new();
            if let Some(rp) = r.get("requires_python").and_then(Value::as_str) {
                tags += &format!(" data-requires-python=\"{}\"", html_escape(rp));
            }
            if core_metadata && let Some((name, digest)) = core_metadata_digest(r) {
                tags += &format!(
                    " data-core-metadata=\"{name}={digest}\" data-dist-info-metadata=\"{name}={digest}\""
                );
            }
            if truthy(r.get("yanked")) {
                match r.get("yanked_reason") {
                    Some(Value::String(s)) if !s.is_empty() => {
                        tags += &format!(" data-yanked=\"{}\"", html_escape(s));
                    }
                    _ => tags += " data-yanked=\"\"",
                }
            }
            format!(
                "    <a href=\"../..{}#sha256={}\"{tags}>{}</a><br/>",
                url_path(r["url"].as_str().expect("url")),
                r["digests"]["sha256"].as_str().expect("sha256"),
                r["filename"].as_str().expect("filename"),
            )
        })
        .collect();
    page += &links.join("\n");
    page += &format!("\n  </body>\n</html>\n<!--SERIAL {serial}-->");
    page
}

/// `SimpleAPI.generate_json_simple_page` (`json.dumps`, keys in bandersnatch's order).
fn project_json(
    name: &str,
    serial: u64,
    versions: &[String],
    files: &[Value],
    core_metadata: bool,
) -> String {
    let get = |r: &Value, k: &str, default: Value| r.get(k).cloned().unwrap_or(default);
    let files: Vec<String> = files
        .iter()
        .map(|r| {
            let mut entry = vec![
                ("filename", get(r, "filename", Value::Null)),
                ("hashes", json!({"sha256": r["digests"]["sha256"]})),
                ("requires-python", get(r, "requires_python", json!(""))),
                ("size", get(r, "size", Value::Null)),
                ("upload-time", get(r, "upload_time_iso_8601", json!(""))),
                (
                    "url",
                    json!(format!(
                        "../..{}",
                        url_path(r["url"].as_str().expect("url"))
                    )),
                ),
                ("yanked", get(r, "yanked", json!(false))),
            ];
            if core_metadata {
                if let Some((k, v)) = core_metadata_digest(r) {
                    entry.push(("core-metadata", json!({ k: v })));
                } else if r.get("core-metadata") == Some(&json!(false)) {
                    entry.push(("core-metadata", json!(false)));
                }
            }
            py_object(entry.iter().map(|(k, v)| (*k, py_dumps(v))))
        })
        .collect();
    let meta = py_object([
        ("api-version", py_str(API_VERSION)),
        ("_last-serial", py_str(&serial.to_string())),
    ]);
    let versions: Vec<String> = versions.iter().map(|v| py_str(v)).collect();
    py_object([
        ("files", format!("[{}]", files.join(", "))),
        ("meta", meta),
        ("name", py_str(name)),
        ("versions", format!("[{}]", versions.join(", "))),
    ])
}

/// `SimpleAPI.sync_index_page`: every directory under `web/simple/`, sorted.
fn write_root(web: &Path, serial: u64, format: SimpleFormat) {
    let simple = web.join("simple");
    let mut names: Vec<String> = fs::read_dir(&simple)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" \
         content=\"{REPOSITORY_VERSION}\">\n    <title>Simple Index</title>\n  </head>\n  <body>\n"
    );
    for n in &names {
        html += &format!("    <a href=\"{n}/\">{n}</a><br/>\n");
    }
    html += "  </body>\n</html>";
    let root = simple.join("index.html");
    rewrite(&root, html.as_bytes());
    if format == SimpleFormat::Json {
        fs::remove_file(&root).unwrap();
    } else {
        fs::copy(&root, simple.join("index.v1_html")).unwrap();
    }
    if format != SimpleFormat::Html {
        let projects: Vec<String> = names
            .iter()
            .map(|n| py_object([("name", py_str(n))]))
            .collect();
        let json = py_object([
            (
                "meta",
                py_object([
                    ("_last-serial", serial.to_string()),
                    ("api-version", py_str(API_VERSION)),
                ]),
            ),
            ("projects", format!("[{}]", projects.join(", "))),
        ]);
        rewrite(&simple.join("index.v1_json"), json.as_bytes());
    }
}

fn damage(up: &FakeUpstream, web: &Path, d: &Damage) {
    let file = |name: &str| {
        let info = up
            .file_info(name)
            .unwrap_or_else(|| panic!("damage: {name} was never published"));
        (web.join(&info.path), info.content)
    };
    match d {
        Damage::MissingFile(name) => fs::remove_file(file(name).0).unwrap(),
        Damage::TruncatedFile(name) => {
            let (path, content) = file(name);
            let mtime = fs::metadata(&path).unwrap().modified().unwrap();
            fs::write(&path, &content[..content.len() / 2]).unwrap();
            set_mtime(&path, mtime);
        }
        Damage::StrayTemp(name) => {
            let (path, content) = file(name);
            let stray = path.with_file_name(format!(".{name}.{}", temp_suffix(name)));
            fs::write(stray, &content[..content.len() / 2]).unwrap();
        }
        Damage::DanglingLink { .. } => {}
    }
}

/// A release file entry for a file that exists nowhere (`Damage::DanglingLink`).
fn phantom(filename: &str) -> Value {
    let bytes = format!("never written: {filename}\n");
    let b = hex::encode(Blake2b256::digest(bytes.as_bytes()));
    json!({
        "filename": filename,
        "url": format!("/packages/{}/{}/{}/{filename}", &b[..2], &b[2..4], &b[4..]),
        "digests": {"sha256": hex::encode(Sha256::digest(bytes.as_bytes()))},
        "size": bytes.len(),
        "requires_python": null,
        "upload_time_iso_8601": "2020-01-01T00:00:00.000000Z",
        "yanked": false,
        "yanked_reason": null,
        "core-metadata": false,
    })
}

// ---------------------------------------------------------------------------------------------
// The storage plugin's writes

/// 8 characters from Python's `tempfile` alphabet.
fn temp_suffix(seed: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = Sha256::digest(format!("{seed}/{n}/{:?}", std::thread::current().id()).as_bytes());
    h.iter()
        .take(8)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `FilesystemStorage.rewrite`: `.<name>.<8 chars>` beside the target, 0644, renamed.
fn rewrite(path: &Path, bytes: &[u8]) {
    let dir = path.parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}", temp_suffix(&name)));
    let mut f = fs::File::create(&tmp).unwrap();
    f.write_all(bytes).unwrap();
    drop(f);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// `FilesystemStorage.update_safe`: `<name>.<8 chars>` (mode 0600, `NamedTemporaryFile`'s,
/// or the replaced file's), renamed into place only when different.
fn update_safe(path: &Path, bytes: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    let mode = fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.{}", temp_suffix(&name)));
    fs::write(&tmp, bytes).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// `2020-09-13T12:29:40.023757Z` (fraction and `Z` optional) as a time.
fn upload_time(iso: &str) -> SystemTime {
    let s = iso.trim_end_matches('Z');
    let (date, time) = s.split_once('T').expect("ISO 8601 date and time");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let micros: u32 = format!("{frac:0<6}")[..6].parse().unwrap();
    let secs = days_from_civil(d[0], d[1], d[2]) as u64 * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    UNIX_EPOCH + Duration::new(secs, micros * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `now.strftime("%Y%m%dT%H:%M:%S\n")` in UTC.
fn last_modified() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}:{:02}:{:02}\n",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Python's text forms

/// `html.escape(s)` (quote=True).
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A JSON string as `json.dumps` writes it (`ensure_ascii=True`).
fn py_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// `{"k": v, ...}` from already-dumped values, in the order given.
fn py_object<'a>(entries: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{}: {v}", py_str(k)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// `json.dumps(v)`: separators `", "` and `": "`, keys in the value's order.
fn py_dumps(v: &Value) -> String {
    let mut out = String::new();
    py_dump(v, None, 0, &mut out);
    out
}

/// `json.dumps(v, indent=4, sort_keys=True)`.
fn py_dumps_sorted(v: &Value) -> String {
    let mut out = String::new();
    py_dump(v, Some(4), 0, &mut out);
    out
}

fn py_dump(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let (open, sep, close) = match indent {
        None => (String::new(), ", ".to_string(), String::new()),
        Some(n) => (
            format!("\n{}", " ".repeat(n * (level + 1))),
            format!(",\n{}", " ".repeat(n * (level + 1))),
            format!("\n{}", " ".repeat(n * level)),
        ),
    };
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&v.to_string()),
        Value::String(s) => out.push_str(&py_str(s)),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push('[');
            out.push_str(&open);
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                py_dump(x, indent, level + 1, out);
            }
            out.push_str(&close);
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            if indent.is_some() {
                keys.sort();
            }
            out.push('{');
            out.push_str(&open);
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                out.push_str(&py_str(k));
                out.push_str(": ");
                py_dump(&o[k], indent, level + 1, out);
            }
            out.push_str(&close);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(name: &str) -> Vec<u8> {
        format!("bytes of {name}\n").repeat(10).into_bytes()
    }

    fn upstream() -> FakeUpstream {
        let up = FakeUpstream::start();
        let files = ["demo_pkg-1.0.tar.gz", "demo_pkg-1.0-py3-none-any.whl"];
        let files: Vec<(&str, Vec<u8>)> = files.iter().map(|f| (*f, content(f))).collect();
        up.add_release("Demo.Pkg", "1.0", &files);
        up.add_release("other", "2.0", &[("other-2.0.tar.gz", content("other"))]);
        up
    }

    /// Every file under `dir` whose name starts with a dot, relative to it.
    fn hidden(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.extend(hidden(&e.path()).into_iter().map(|h| format!("{name}/{h}")));
            } else if name.starts_with('.') {
                out.push(name);
            }
        }
        out
    }

    #[test]
    fn damage_does_what_it_says() {
        let up = upstream();
        let home = tempfile::tempdir().unwrap();
        let web = home.path().join("web");
        let path = |f: &str| web.join(up.file_info(f).unwrap().path);
        let opts = Options {
            damage: vec![
                Damage::MissingFile("demo_pkg-1.0.tar.gz".into()),
                Damage::TruncatedFile("demo_pkg-1.0-py3-none-any.whl".into()),
                Damage::StrayTemp("other-2.0.tar.gz".into()),
                Damage::DanglingLink {
                    project: "Demo.Pkg".into(),
                    filename: "demo_pkg-0.9.tar.gz".into(),
                },
            ],
            ..Options::default()
        };
        let done = write(&up, home.path(), &opts);
        assert_eq!(done.serial, up.serial());
        assert!(!path("demo_pkg-1.0.tar.gz").exists());
        let whl = "demo_pkg-1.0-py3-none-any.whl";
        assert_eq!(
            fs::read(path(whl)).unwrap(),
            content(whl)[..content(whl).len() / 2]
        );
        assert_eq!(
            fs::read(path("other-2.0.tar.gz")).unwrap(),
            content("other")
        );
        let mut stray = hidden(home.path());
        stray.retain(|h| h != ".lock");
        assert_eq!(stray.len(), 1, "{stray:?}");
        let (dir, name) = stray[0].rsplit_once('/').unwrap();
        let suffix = name.strip_prefix(".other-2.0.tar.gz.").unwrap();
        assert!(
            suffix.len() == 8
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        assert!(path("other-2.0.tar.gz").starts_with(home.path().join(dir)));
        let html = fs::read_to_string(web.join("simple/demo-pkg/index.html")).unwrap();
        let json = fs::read_to_string(web.join("simple/demo-pkg/index.v1_json")).unwrap();
        let href = html
            .split("href=\"../../")
            .filter_map(|s| s.split_once('#'))
            .map(|(p, _)| p)
            .find(|p| p.ends_with("/demo_pkg-0.9.tar.gz"))
            .expect("the dangling link");
        assert!(json.contains(&format!("\"../../{href}\"")));
        assert!(!web.join(href).exists());
        assert!(
            !fs::read_to_string(web.join("simple/other/index.html"))
                .unwrap()
                .contains("0.9")
        );
    }

    #[test]
    fn an_interrupted_run_leaves_a_todo_the_next_run_resumes() {
        let up = upstream();
        let home = tempfile::tempdir().unwrap();
        let web = home.path().join("web");
        let opts = Options {
            interrupted: Some(vec!["OTHER".into()]),
            ..Options::default()
        };
        let done = write(&up, home.path(), &opts);
        assert_eq!(done.projects, ["demo-pkg"]);
        assert_eq!(done.serial, 0);
        assert!(!home.path().join("status").exists());
        assert!(!web.join("simple/index.html").exists());
        assert!(!web.join("simple/other").exists());
        let todo = fs::read_to_string(home.path().join("todo")).unwrap();
        assert_eq!(todo, format!("{}\nother {}", up.serial(), up.serial()));

        let done = write(&up, home.path(), &Options::default());
        assert_eq!(done.projects, ["other"]);
        assert_eq!(done.serial, up.serial());
        assert!(!home.path().join("todo").exists());
        assert_eq!(
            fs::read_to_string(home.path().join("status")).unwrap(),
            up.serial().to_string()
        );
        let root = fs::read_to_string(web.join("simple/index.html")).unwrap();
        assert!(root.contains("<a href=\"demo-pkg/\">demo-pkg</a><br/>"));
        assert!(root.contains("<a href=\"other/\">other</a><br/>"));
        assert_eq!(hidden(home.path()), [".lock"]);

        // Nothing changed: nothing written but the time.
        let again = write(&up, home.path(), &Options::default());
        assert_eq!((again.projects.len(), again.downloaded.len()), (0, 0));
    }

    #[test]
    fn python_json_forms() {
        assert_eq!(
            py_dumps_sorted(&json!({"b": [], "a": {"x": 1}})),
            "{\n    \"a\": {\n        \"x\": 1\n    },\n    \"b\": []\n}"
        );
        assert_eq!(
            py_str("é\u{1F600}\n\"\u{7f}/"),
            r#""\u00e9\ud83d\ude00\n\"\u007f/""#
        );
    }
}
