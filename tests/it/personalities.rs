//! Upstreams that are not Warehouse (issue 11), played by the fake upstream's personalities:
//! another mirror (no XML-RPC, an HTML-only root, string serials, api-version 1.1 pages,
//! relative file URLs under `/packages/packages/`, `ETag` and `Last-Modified`), devpi
//! (`/root/pypi/+simple/`, `+f/` file URLs, api-version 1.0, no JSON API, no serials),
//! Artifactory (a path prefix, HTML only, no JSON API, no serials, `Last-Modified`), and the
//! mirror-like one reached by the machine's own host name, which resolves to loopback.
//!
//! Each personality gets: a full sync (every file byte-identical at
//! `packages/aa/bb/<rest>/<filename>` from its BLAKE2b-256, pages listing exactly the upstream
//! files), `verify --hash`, and a second sync with no upstream change that downloads nothing
//! (where the upstream answers conditional requests, every page request is a 304); an
//! incremental sync after an added project and release, a removed file and release, and a
//! yank; an allowlist-only sync that neither fetches nor publishes anything else. Then one
//! personality end to end through nginx with pip and uv, and pymirror following another
//! pymirror served by nginx (with and without `json = true`), and a bandersnatch mirror's tree
//! served by nginx.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS, normalize, parse_links, percent_decode};
use pymirror_testkit::serve::{Nginx, Tools, install_with_pip_and_uv};
use pymirror_testkit::upstream::{
    Conditional, FakeUpstream, FileOpts, Personality, Request, RootIndex, Serials,
};
use pymirror_testkit::{bandersnatch, dist};

use crate::PYMIRROR;

// ---------------------------------------------------------------------------------------------
// The upstream's content and what a complete mirror of it looks like

fn publish(up: &FakeUpstream, project: &str, version: &str, d: &dist::Dist) {
    let opts = FileOpts {
        metadata: Some(d.metadata.clone()),
        ..FileOpts::default()
    };
    up.add_file(project, version, &d.filename, d.bytes.clone(), opts);
}

pub(crate) fn bytes(name: &str) -> Vec<u8> {
    format!("contents of {name}\n").repeat(20).into_bytes()
}

/// Four projects: Alpha (a real wheel with PEP 658 metadata, and an sdist), Beta.Lib (two
/// releases), gamma (two releases), delta_tool (one).
pub(crate) fn catalog(personality: Personality) -> FakeUpstream {
    let up = FakeUpstream::start_as(personality);
    publish(&up, "Alpha", "1.0", &dist::wheel("alpha", "1.0", &[]));
    let sdist = dist::sdist("alpha", "1.0");
    up.add_file(
        "Alpha",
        "1.0",
        &sdist.filename,
        sdist.bytes,
        FileOpts::default(),
    );
    for (project, version, files) in [
        ("Beta.Lib", "1.0", &["beta_lib-1.0.tar.gz"][..]),
        (
            "Beta.Lib",
            "2.0",
            &["beta_lib-2.0.tar.gz", "beta_lib-2.0-py3-none-any.whl"][..],
        ),
        ("gamma", "0.1", &["gamma-0.1.tar.gz"][..]),
        ("gamma", "0.2", &["gamma-0.2.tar.gz"][..]),
        ("delta_tool", "1.0", &["delta_tool-1.0.tar.gz"][..]),
    ] {
        let files: Vec<(&str, Vec<u8>)> = files.iter().map(|f| (*f, bytes(f))).collect();
        up.add_release(project, version, &files);
    }
    up
}

/// Where a file must be in the mirror: PyPI's layout from its real BLAKE2b-256.
fn local_path(up: &FakeUpstream, filename: &str) -> String {
    let b = up.file_info(filename).expect("published file").blake2b;
    format!("packages/{}/{}/{}/{filename}", &b[..2], &b[2..4], &b[4..])
}

/// The mirror holds exactly what upstream publishes (of the projects in `only`, if given):
/// the root lists those projects, each page links exactly its files, each file is
/// byte-identical at its BLAKE2b path, nothing else is under packages/, and every link
/// resolves with the advertised hash.
#[track_caller]
fn assert_complete(mirror: &Mirror, up: &FakeUpstream, only: Option<&[&str]>) {
    let expected: BTreeMap<String, BTreeSet<String>> = up
        .live_files()
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|o| o.contains(&name.as_str())))
        .collect();
    let root: BTreeSet<String> = mirror
        .root_links()
        .iter()
        .map(|l| normalize(&l.text))
        .collect();
    assert_eq!(
        root,
        expected.keys().cloned().collect(),
        "root index projects"
    );
    let mut all_files = BTreeSet::new();
    for (name, files) in &expected {
        let links = mirror.links(name);
        let listed: BTreeSet<String> = links.iter().map(|l| l.text.clone()).collect();
        assert_eq!(&listed, files, "{name}: files listed on its page");
        for link in &links {
            let path = local_path(up, &link.text);
            let href = percent_decode(link.href.split('#').next().unwrap());
            assert_eq!(
                href,
                format!("../../{path}"),
                "{name}: link to {}",
                link.text
            );
            let want = up.file_info(&link.text).unwrap().content;
            assert!(
                mirror.follow(name, link) == want,
                "{name}: {path} is not byte-identical to upstream's file"
            );
            all_files.insert(path);
        }
    }
    for name in up.live_files().keys() {
        if !expected.contains_key(name) {
            assert!(mirror.page(name).is_none(), "{name} is mirrored");
        }
    }
    let held: BTreeSet<String> = mirror
        .snapshot(&mirror.web().join("packages"))
        .into_keys()
        .map(|p| {
            p.strip_prefix(mirror.web())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| !p.ends_with(".metadata"))
        .collect();
    assert_eq!(held, all_files, "files under web/packages/");
    mirror.assert_consistent();
}

/// A sync that must succeed; its log is printed, so a later failing assertion shows it.
#[track_caller]
fn sync_ok(mirror: &Mirror) {
    let run = mirror.sync();
    eprintln!("--- sync log ---\n{}", run.stderr);
    run.assert_ok();
}

#[track_caller]
fn assert_verify_clean(mirror: &Mirror) {
    let v = mirror.verify(&["--hash"]);
    assert_eq!(v.code, 0, "verify --hash:\n{}\n{}", v.stdout, v.stderr);
}

/// The served tree (pages, files, documents) by content, without `status`.
fn web_tree(mirror: &Mirror) -> BTreeMap<String, String> {
    let mut t = mirror.published();
    t.remove("status");
    t
}

// ---------------------------------------------------------------------------------------------
// What a request was, for a personality

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Root,
    /// A project page or JSON API document, by normalized project name.
    Project(String),
    Xmlrpc,
    /// Anything else: a file, a PEP 658 sidecar, or a stray.
    File(String),
}

fn kind(p: &Personality, r: &Request) -> Kind {
    let path = percent_decode(&r.path);
    let simple = format!("{}/{}/", p.prefix, p.simple_dir);
    if r.method == "POST" {
        return Kind::Xmlrpc;
    }
    if path == simple || path == simple[..simple.len() - 1] {
        return Kind::Root;
    }
    if let Some(rest) = path.strip_prefix(&simple) {
        return Kind::Project(normalize(rest.trim_end_matches('/')));
    }
    if let Some(name) = path
        .strip_prefix(&format!("{}/pypi/", p.prefix))
        .and_then(|r| r.strip_suffix("/json"))
    {
        return Kind::Project(normalize(name));
    }
    Kind::File(path.rsplit('/').next().unwrap_or_default().to_string())
}

// ---------------------------------------------------------------------------------------------
// The three scenarios, run for each personality

/// Full sync, `verify --hash`, then a second sync with nothing changed upstream: no file is
/// fetched, the tree is unchanged, and where upstream answers conditional requests no project
/// page or JSON API document is fetched again (each is a 304, or not asked at all).
fn full_then_noop(personality: Personality) {
    let up = catalog(personality.clone());
    if personality.conditional == Conditional::LastModified {
        // pymirror keeps a Last-Modified only once it is 2 s old (a change within the same
        // second keeps the same date, and would be missed); before that it compares digests.
        std::thread::sleep(std::time::Duration::from_millis(2100));
    }
    let mirror = Mirror::new(PYMIRROR, &up.master_url());
    sync_ok(&mirror);
    assert_complete(&mirror, &up, None);
    assert_verify_clean(&mirror);

    let before = web_tree(&mirror);
    let served = up.bytes_served();
    up.reset_requests();
    sync_ok(&mirror);
    let requests = up.requests();
    let files: Vec<&Request> = requests
        .iter()
        .filter(|r| r.method == "GET" && matches!(kind(&personality, r), Kind::File(_)))
        .collect();
    assert!(
        files.is_empty(),
        "a sync without upstream change fetched files: {files:#?}"
    );
    assert_eq!(up.bytes_served(), served);
    assert_eq!(web_tree(&mirror), before, "the tree changed");
    if personality.conditional != Conditional::None {
        let pages: Vec<&Request> = requests
            .iter()
            .filter(|r| matches!(kind(&personality, r), Kind::Project(_)))
            .collect();
        // A redirect (the JSON API's to the display name) is no fetch; a 200 is.
        let refetched: Vec<&&Request> = pages.iter().filter(|r| r.status == 200).collect();
        assert!(
            refetched.is_empty(),
            "upstream answers conditional requests ({:?}), yet unchanged pages were fetched \
             again: {refetched:#?}",
            personality.conditional
        );
    }
    assert_verify_clean(&mirror);
}

/// An added project, an added release, a removed file, a removed release and a yank all show
/// in the next sync: new files present, removed ones gone from disk and pages, the yanked
/// release's links marked `data-yanked`.
fn incremental(personality: Personality) {
    let up = catalog(personality);
    let mirror = Mirror::new(PYMIRROR, &up.master_url());
    sync_ok(&mirror);
    assert_complete(&mirror, &up, None);
    let removed = ["beta_lib-1.0.tar.gz", "gamma-0.1.tar.gz"].map(|f| local_path(&up, f));

    up.add_release(
        "gamma",
        "0.3",
        &[("gamma-0.3.tar.gz", bytes("gamma-0.3.tar.gz"))],
    );
    up.add_release(
        "Epsilon",
        "1.0",
        &[("epsilon-1.0.tar.gz", bytes("epsilon-1.0.tar.gz"))],
    );
    up.remove_file("Beta.Lib", "beta_lib-1.0.tar.gz");
    up.remove_release("gamma", "0.1");
    up.yank("Beta.Lib", "2.0", Some("broken build"));
    sync_ok(&mirror);

    assert_complete(&mirror, &up, None);
    for path in &removed {
        assert!(!mirror.web().join(path).exists(), "{path} still on disk");
    }
    assert!(
        mirror
            .web()
            .join(local_path(&up, "gamma-0.3.tar.gz"))
            .is_file()
    );
    for link in mirror.links("beta-lib") {
        let want = link
            .text
            .starts_with("beta_lib-2.0")
            .then(|| "broken build".to_string());
        assert_eq!(link.yanked, want, "data-yanked of {}", link.text);
    }
    assert!(mirror.links("alpha").iter().all(|l| l.yanked.is_none()));
    assert_verify_clean(&mirror);
}

/// `[filters] allowlist` of two projects of four: only those are asked about, fetched and
/// published.
fn allowlist_only(personality: Personality) {
    let up = catalog(personality.clone());
    let settings = format!("{TEST_SETTINGS}[filters]\nallowlist = [\"Alpha\", \"gamma\"]\n");
    let mirror = Mirror::with_settings(PYMIRROR, &up.master_url(), &settings);
    sync_ok(&mirror);
    assert_complete(&mirror, &up, Some(&["alpha", "gamma"]));
    let live = up.live_files();
    let allowed: BTreeSet<String> = ["alpha", "gamma"]
        .iter()
        .flat_map(|p| live[*p].iter())
        .flat_map(|f| [f.clone(), format!("{f}.metadata")])
        .collect();
    for r in up.requests() {
        match kind(&personality, &r) {
            Kind::Project(name) => assert!(
                name == "alpha" || name == "gamma",
                "asked about {name}: {r:?}"
            ),
            Kind::File(name) => assert!(allowed.contains(&name), "fetched {name}: {r:?}"),
            Kind::Root | Kind::Xmlrpc => {}
        }
    }
    assert_verify_clean(&mirror);
}

/// The machine's own host name, checked to resolve to 127.0.0.1 (and to loopback only).
fn machine_host() -> String {
    let out = std::process::Command::new("hostname").output();
    let name = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    assert!(
        !name.is_empty(),
        "no host name: neither `hostname` nor /proc tells it"
    );
    let addrs: Vec<IpAddr> = (name.as_str(), 0)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("host name {name:?} does not resolve: {e}"))
        .map(|a| a.ip())
        .collect();
    assert!(
        addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)) && addrs.iter().all(IpAddr::is_loopback),
        "these tests need the machine's host name {name:?} to resolve to 127.0.0.1 (it resolves \
         to {addrs:?}); add `127.0.0.1 {name}` to /etc/hosts"
    );
    name
}

fn mirror_via_host_name() -> Personality {
    Personality::mirror_like().with_host(&machine_host())
}

macro_rules! personality_tests {
    ($($module:ident => $personality:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn full_sync_verify_then_a_second_sync_fetches_no_file() {
                full_then_noop($personality);
            }

            #[test]
            fn incremental_sync_follows_additions_removals_and_yanks() {
                incremental($personality);
            }

            #[test]
            fn allowlist_only_sync_touches_just_those_projects() {
                allowlist_only($personality);
            }
        }
    )*};
}

personality_tests! {
    // The baseline: the same scenarios against Warehouse itself.
    warehouse => Personality::warehouse();
    mirror_like => Personality::mirror_like();
    devpi_like => Personality::devpi_like();
    artifactory_like => Personality::artifactory_like();
    host_name_on_loopback => mirror_via_host_name();
}

// ---------------------------------------------------------------------------------------------
// End to end, and chaining

/// A devpi-like upstream mirrored, served by real nginx: pip and uv install a package and its
/// dependency from it, passing over the yanked release.
#[test]
fn devpi_like_mirror_served_by_nginx_installs_with_pip_and_uv() {
    let Some(tools) = Tools::find() else { return };
    let up = FakeUpstream::start_as(Personality::devpi_like());
    publish(&up, "alpha", "1.0", &dist::wheel("alpha", "1.0", &["beta"]));
    publish(&up, "beta", "1.0", &dist::wheel("beta", "1.0", &[]));
    publish(&up, "beta", "2.0", &dist::wheel("beta", "2.0", &[]));
    up.yank("beta", "2.0", Some("broken build"));
    let mirror = Mirror::new(PYMIRROR, &up.master_url());
    sync_ok(&mirror);
    assert_complete(&mirror, &up, None);
    let nginx = Nginx::start(&tools, &mirror);
    let index = format!("{}/simple/", nginx.url());
    let work = tempfile::tempdir().unwrap();
    let want = ["alpha-1.0.dist-info", "beta-1.0.dist-info"];

    let [by_pip, by_uv] = install_with_pip_and_uv(&tools, &index, work.path(), "alpha");
    assert_eq!(by_pip, want);
    assert_eq!(by_uv, want);
    let log = nginx.access_log();
    assert!(
        log.lines()
            .any(|l| l.contains("/packages/") && l.contains("uv/") && l.contains("\" 200 ")),
        "uv fetched no file from the mirror:\n{log}"
    );
}

/// pymirror mirrors a pymirror served by nginx: complete against the original upstream,
/// consistent, `verify --hash` clean, the same files as the first mirror; an upstream change
/// (addition, removal, yank) reaches the second mirror through the first.
fn chain(first_settings: &str) {
    let Some(tools) = Tools::find() else { return };
    let up = catalog(Personality::warehouse());
    let first = Mirror::with_settings(PYMIRROR, &up.master_url(), first_settings);
    sync_ok(&first);
    assert_complete(&first, &up, None);
    let nginx = Nginx::start(&tools, &first);
    let second = Mirror::new(PYMIRROR, &nginx.url());
    sync_ok(&second);
    assert_complete(&second, &up, None);
    assert_verify_clean(&second);
    let packages = |m: &Mirror| {
        let mut t = m.published();
        t.retain(|k, _| k.starts_with("web/packages/"));
        t
    };
    assert_eq!(packages(&second), packages(&first));

    up.add_release(
        "gamma",
        "0.3",
        &[("gamma-0.3.tar.gz", bytes("gamma-0.3.tar.gz"))],
    );
    up.remove_file("Beta.Lib", "beta_lib-1.0.tar.gz");
    up.yank("Beta.Lib", "2.0", Some("broken build"));
    sync_ok(&first);
    assert_complete(&first, &up, None);
    sync_ok(&second);
    assert_complete(&second, &up, None);
    for link in second.links("beta-lib") {
        assert_eq!(
            link.yanked.as_deref(),
            Some("broken build"),
            "{}",
            link.text
        );
    }
    assert_eq!(packages(&second), packages(&first));
    assert_verify_clean(&second);
}

#[test]
fn chaining_follows_a_pymirror_served_by_nginx() {
    chain(TEST_SETTINGS);
}

#[test]
fn chaining_follows_a_pymirror_with_json_served_by_nginx() {
    chain(&format!("{TEST_SETTINGS}json = true\n"));
}

/// The `GET`s nginx logged for distribution files (`/packages/…`), in order.
fn file_gets(nginx: &Nginx) -> Vec<String> {
    nginx
        .access_log()
        .lines()
        .filter_map(|l| l.split('"').nth(1))
        .filter(|r| r.starts_with("GET /packages/"))
        .map(str::to_string)
        .collect()
}

/// pymirror follows a bandersnatch 8.2.0 mirror (the tree `bandersnatch::write` leaves:
/// HTML and PEP 691 pages whose per-project `_last-serial` is a string and whose `yanked` is a
/// bool, a root `index.v1_json` naming projects without serials, and with `json` the JSON API
/// documents bandersnatch copies verbatim, naming the original upstream's file URLs) served by
/// nginx: complete and byte-identical, every file fetched from nginx and nothing from the
/// original upstream, `verify --hash` clean; an upstream change (a release added, a file
/// removed, a release yanked) written by bandersnatch reaches it (the removed file, still on
/// bandersnatch's disk but unlinked, leaves pymirror's); a sync with nothing changed fetches
/// no file.
fn follow_bandersnatch(json: bool) {
    let Some(tools) = Tools::find() else { return };
    let up = catalog(Personality::warehouse());
    let home = tempfile::tempdir().unwrap();
    let opts = bandersnatch::Options {
        json,
        ..bandersnatch::Options::default()
    };
    let written = bandersnatch::write(&up, home.path(), &opts);
    assert_eq!(written.serial, up.serial());
    let nginx = Nginx::serve_dir(&tools, std::path::Path::new(PYMIRROR), home.path());
    let mirror = Mirror::new(PYMIRROR, &nginx.url());
    let bs_web = home.path().join("web");
    // Every file pymirror holds is the one bandersnatch holds at the same path.
    let same_as_bandersnatch = |m: &Mirror| {
        for (path, _) in m.snapshot(&m.web().join("packages")) {
            let rel = path.strip_prefix(m.web()).unwrap();
            assert!(
                std::fs::read(&path).unwrap() == std::fs::read(bs_web.join(rel)).unwrap(),
                "{} differs from bandersnatch's",
                rel.display()
            );
        }
    };

    up.reset_requests();
    sync_ok(&mirror);
    assert_complete(&mirror, &up, None);
    same_as_bandersnatch(&mirror);
    assert_verify_clean(&mirror);
    let fetched = file_gets(&nginx);
    let linked: usize = up.live_files().values().map(BTreeSet::len).sum();
    assert!(
        fetched.len() >= linked,
        "{} files linked, {} fetched from nginx:\n{}",
        linked,
        fetched.len(),
        nginx.access_log()
    );
    assert_eq!(
        up.requests(),
        vec![],
        "pymirror asked the original upstream, not the bandersnatch mirror"
    );

    up.add_release(
        "gamma",
        "0.3",
        &[("gamma-0.3.tar.gz", bytes("gamma-0.3.tar.gz"))],
    );
    up.remove_file("Beta.Lib", "beta_lib-1.0.tar.gz");
    up.yank("Beta.Lib", "2.0", Some("broken build"));
    let removed = local_path(&up, "beta_lib-1.0.tar.gz");
    let written = bandersnatch::write(&up, home.path(), &opts);
    assert_eq!(written.serial, up.serial());
    assert_eq!(written.projects, ["beta-lib", "gamma"]);
    assert!(
        bs_web.join(&removed).is_file(),
        "bandersnatch keeps a removed file"
    );
    sync_ok(&mirror);
    assert_complete(&mirror, &up, None);
    same_as_bandersnatch(&mirror);
    assert!(
        !mirror.web().join(&removed).exists(),
        "{removed} still held"
    );
    // bandersnatch's PEP 691 pages say only `"yanked": true`; the reason is in its HTML pages
    // and, with `json`, in the JSON API documents.
    for link in mirror.links("beta-lib") {
        assert!(link.yanked.is_some(), "{} is not yanked", link.text);
        if json {
            assert_eq!(
                link.yanked.as_deref(),
                Some("broken build"),
                "{}",
                link.text
            );
        }
    }
    assert!(mirror.links("gamma").iter().all(|l| l.yanked.is_none()));
    assert_verify_clean(&mirror);
    assert_eq!(
        up.requests(),
        vec![],
        "pymirror asked the original upstream"
    );

    let before = web_tree(&mirror);
    let gets = file_gets(&nginx).len();
    sync_ok(&mirror);
    assert_eq!(
        file_gets(&nginx)[gets..],
        [] as [String; 0],
        "a sync with nothing changed fetched files"
    );
    assert_eq!(web_tree(&mirror), before, "the tree changed");
}

#[test]
fn chaining_follows_a_bandersnatch_tree_served_by_nginx() {
    follow_bandersnatch(false);
}

#[test]
fn chaining_follows_a_bandersnatch_tree_with_json_served_by_nginx() {
    follow_bandersnatch(true);
}

// ---------------------------------------------------------------------------------------------
// The personalities themselves (these pass against any pymirror: they check the fake)

struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request to the fake, by path, with extra header lines.
fn http(up: &FakeUpstream, method: &str, path: &str, headers: &[String]) -> Answer {
    use std::io::{Read, Write};
    let port = up.url().rsplit(':').next().unwrap().to_string();
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(&format!("{h}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    Answer {
        status: head[9..12].parse().unwrap(),
        headers: head,
        body: raw[split + 4..].to_vec(),
    }
}

/// `href` (absolute, path-absolute or relative, with a fragment or not) as a path on the
/// fake, read from the document at `doc`.
fn resolve(doc: &str, href: &str) -> String {
    let href = href.split('#').next().unwrap();
    let path = if let Some(rest) = href.strip_prefix("http://") {
        rest[rest.find('/').unwrap()..].to_string()
    } else if href.starts_with('/') {
        href.to_string()
    } else {
        format!("{}{href}", &doc[..=doc.rfind('/').unwrap()])
    };
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg {
            ".." => {
                out.pop();
            }
            "." => {}
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Each ready-made personality serves every file at the URL its pages and JSON API list, with
/// Range and PEP 658 sidecars, has the APIs and forms it claims, and answers validators with
/// 304 until the project changes.
#[test]
fn the_fake_upstreams_personalities_serve_what_they_list() {
    for p in [
        Personality::warehouse(),
        Personality::mirror_like(),
        Personality::devpi_like(),
        Personality::artifactory_like(),
    ] {
        let up = catalog(p.clone());
        let simple = format!("{}/{}/", p.prefix, p.simple_dir);
        let master = up.master_url();
        assert!(
            master.ends_with(&p.prefix) || master.ends_with(&simple),
            "{master}"
        );
        let json = "Accept: application/vnd.pypi.simple.v1+json".to_string();
        let root = http(&up, "GET", &simple, std::slice::from_ref(&json));
        assert_eq!(root.status, 200, "{p:?}");
        let root_is_json =
            root.header("content-type") == Some("application/vnd.pypi.simple.v1+json");
        assert_eq!(root_is_json, p.root != RootIndex::HtmlOnly);
        assert_eq!(
            root.header("x-pypi-last-serial").is_some(),
            p.serial_headers
        );
        let post = http(&up, "POST", &format!("{}/pypi", p.prefix), &[]);
        if !p.xmlrpc {
            assert_eq!(post.status, 405);
            assert_eq!(post.header("allow"), Some("GET,HEAD"));
            assert!(post.body.is_empty());
        }
        let api = http(&up, "GET", &format!("{}/pypi/Alpha/json", p.prefix), &[]);
        assert_eq!(api.status, if p.json_api { 200 } else { 404 }, "{p:?}");
        let mut docs = vec![
            (format!("{simple}alpha/"), vec![]),
            (format!("{simple}beta-lib/"), vec![]),
        ];
        docs.push((format!("{simple}alpha/"), vec![json.clone()]));
        if p.json_api {
            docs.push((format!("{}/pypi/Alpha/json", p.prefix), vec![]));
        }
        for (doc, headers) in docs {
            let page = http(&up, "GET", &doc, &headers);
            assert_eq!(page.status, 200, "{doc}");
            let text = String::from_utf8(page.body).unwrap();
            let hrefs: Vec<String> = if text.starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let files = v.get("files").or_else(|| v.get("urls")).unwrap();
                let serial = v
                    .pointer("/meta/_last-serial")
                    .or_else(|| v.get("last_serial"));
                match p.serials {
                    Serials::Numbers => {
                        assert!(serial.unwrap().is_u64())
                    }
                    Serials::Strings => {
                        assert!(serial.unwrap().is_string())
                    }
                    Serials::Absent => assert!(serial.is_none()),
                }
                files
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["url"].as_str().unwrap().to_string())
                    .collect()
            } else {
                parse_links(&text).into_iter().map(|l| l.href).collect()
            };
            assert!(!hrefs.is_empty(), "{doc}");
            for href in hrefs {
                let path = resolve(&doc, &href);
                let name = percent_decode(path.rsplit('/').next().unwrap());
                assert_eq!(
                    percent_decode(&path),
                    up.served_path(&name).unwrap(),
                    "{href} in {doc}"
                );
                let want = up.file_info(&name).unwrap().content;
                let got = http(&up, "GET", &path, &[]);
                assert_eq!(
                    (got.status, got.body),
                    (200, want.clone()),
                    "{href} in {doc}"
                );
                let tail = http(&up, "GET", &path, &["Range: bytes=5-".into()]);
                assert_eq!((tail.status, tail.body), (206, want[5..].to_vec()));
                if name.starts_with("alpha-") && name.ends_with(".whl") {
                    let meta = http(&up, "GET", &format!("{path}.metadata"), &[]);
                    assert_eq!(meta.status, 200, "{path}.metadata");
                }
            }
            // Validators: the same document again is a 304, until the project changes.
            let first = http(&up, "GET", &doc, &headers);
            let validators: Vec<String> = [
                ("etag", "If-None-Match"),
                ("last-modified", "If-Modified-Since"),
            ]
            .iter()
            .filter_map(|(h, send)| Some(format!("{send}: {}", first.header(h)?)))
            .collect();
            assert_eq!(
                validators.len(),
                match p.conditional {
                    Conditional::None => 0,
                    Conditional::ETag | Conditional::LastModified => 1,
                    Conditional::Both => 2,
                },
                "{doc}"
            );
            for v in &validators {
                let again = http(
                    &up,
                    "GET",
                    &doc,
                    &[headers.clone(), vec![v.clone()]].concat(),
                );
                assert_eq!((again.status, again.body.len()), (304, 0), "{doc} with {v}");
            }
        }
        up.yank("Alpha", "1.0", None);
        let page = format!("{simple}alpha/");
        let first = http(&up, "GET", &page, &[]);
        up.unyank("Alpha", "1.0");
        for (h, send) in [
            ("etag", "If-None-Match"),
            ("last-modified", "If-Modified-Since"),
        ] {
            let Some(v) = first.header(h) else { continue };
            let send = format!("{send}: {v}");
            assert_eq!(
                http(&up, "GET", &page, std::slice::from_ref(&send)).status,
                200,
                "{send} after a change"
            );
        }
    }
}

/// An HTML-only upstream that offers no PEP 658 metadata for a wheel: the mirror derives it
/// from the wheel it verified, serves it as the sidecar and advertises its digest; a second
/// sync keeps it without asking again.
#[test]
fn core_metadata_is_derived_from_wheels_where_upstream_pages_say_nothing() {
    let up = FakeUpstream::start_as(Personality::artifactory_like());
    let wheel = dist::wheel("plain", "1.0", &[]);
    up.add_file(
        "plain",
        "1.0",
        &wheel.filename,
        wheel.bytes.clone(),
        FileOpts::default(),
    );
    let mirror = Mirror::new(PYMIRROR, &up.master_url());
    sync_ok(&mirror);
    let path = local_path(&up, &wheel.filename);
    let sidecar = std::fs::read(mirror.web().join(format!("{path}.metadata"))).unwrap();
    assert_eq!(sidecar, wheel.metadata);
    let links = mirror.links("plain");
    assert_eq!(links.len(), 1);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&wheel.metadata))
    };
    assert_eq!(
        links[0].core_metadata.as_deref(),
        Some(format!("sha256={digest}").as_str())
    );
    assert!(
        up.requests().iter().all(|r| !r.path.ends_with(".metadata")),
        "upstream offers no sidecar, none may be asked for"
    );
    assert_verify_clean(&mirror);
    sync_ok(&mirror);
    assert_eq!(
        std::fs::read(mirror.web().join(format!("{path}.metadata"))).unwrap(),
        wheel.metadata
    );
    assert_eq!(
        mirror.links("plain")[0].core_metadata,
        links[0].core_metadata
    );
}
