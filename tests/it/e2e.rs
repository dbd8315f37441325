//! End to end with the real programs: sync from the fake upstream, serve the mirror with real
//! nginx and the shipped configuration, install from it with real pip and uv, and negotiate
//! formats with curl. Needs nginx, curl, pip and uv (`scripts/test` installs them).

use pymirror_testkit::dist;
use pymirror_testkit::mirror::Mirror;
use pymirror_testkit::serve::{Nginx, Tools, ok, run};
use pymirror_testkit::upstream::{FakeUpstream, FileOpts};

use crate::PYMIRROR;

fn publish_wheel(up: &FakeUpstream, d: &dist::Dist, project: &str, version: &str) {
    let opts = FileOpts {
        metadata: Some(d.metadata.clone()),
        ..FileOpts::default()
    };
    up.add_file(project, version, &d.filename, d.bytes.clone(), opts);
}

#[test]
fn pip_and_uv_install_from_the_mirror_served_by_nginx() {
    let Some(tools) = Tools::find() else { return };
    // RECORD hashes must be right for the wheels to be valid (Python's own answer).
    assert_eq!(
        dist::record_hash(b"abc"),
        "sha256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
    );

    // alpha depends on beta; beta 2.0 is yanked, so a bare requirement must get beta 1.0.
    let up = FakeUpstream::start();
    let alpha = dist::wheel("alpha", "1.0", &["beta"]);
    let beta1 = dist::wheel("beta", "1.0", &[]);
    let beta2 = dist::wheel("beta", "2.0", &[]);
    publish_wheel(&up, &alpha, "alpha", "1.0");
    let alpha_sdist = dist::sdist("alpha", "1.0");
    up.add_file(
        "alpha",
        "1.0",
        &alpha_sdist.filename,
        alpha_sdist.bytes.clone(),
        FileOpts::default(),
    );
    publish_wheel(&up, &beta1, "beta", "1.0");
    publish_wheel(&up, &beta2, "beta", "2.0");
    up.yank("beta", "2.0", Some("broken build"));
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();
    let nginx = Nginx::start(&tools, &mirror);
    let index = format!("{}/simple/", nginx.url());
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let installed = |dir: &str| pymirror_testkit::serve::installed(std::path::Path::new(dir));

    // pip: the package and its dependency, the yanked release passed over.
    let py = &tools.python;
    ok(&run(
        py,
        &[
            "-m",
            "pip",
            "install",
            "--index-url",
            &index,
            "--target",
            &path("pip"),
            "alpha",
        ],
    ));
    assert_eq!(
        installed(&path("pip")),
        ["alpha-1.0.dist-info", "beta-1.0.dist-info"]
    );
    ok(&run(
        py,
        &[
            "-m",
            "pip",
            "install",
            "--index-url",
            &index,
            "--target",
            &path("bare"),
            "beta",
        ],
    ));
    assert_eq!(
        installed(&path("bare")),
        ["beta-1.0.dist-info"],
        "pip chose the yanked release"
    );

    // pip download --require-hashes with the hashes the mirror advertises.
    let page: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mirror.web().join("simple/alpha/index.v1_json")).unwrap(),
    )
    .unwrap();
    let beta_page: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mirror.web().join("simple/beta/index.v1_json")).unwrap(),
    )
    .unwrap();
    let hash_of = |page: &serde_json::Value, filename: &str| {
        page["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["filename"] == filename)
            .unwrap()["hashes"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let requirements = format!(
        "alpha==1.0 --hash=sha256:{}\nbeta==1.0 --hash=sha256:{}\n",
        hash_of(&page, &alpha.filename),
        hash_of(&beta_page, &beta1.filename)
    );
    std::fs::write(path("requirements.txt"), requirements).unwrap();
    ok(&run(
        py,
        &[
            "-m",
            "pip",
            "download",
            "--require-hashes",
            "-r",
            &path("requirements.txt"),
            "--index-url",
            &index,
            "-d",
            &path("downloads"),
        ],
    ));
    let mut downloaded: Vec<String> = std::fs::read_dir(path("downloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    downloaded.sort();
    assert_eq!(downloaded, [alpha.filename.clone(), beta1.filename.clone()]);
    std::fs::write(
        path("bad.txt"),
        format!("alpha==1.0 --hash=sha256:{}\n", "0".repeat(64)),
    )
    .unwrap();
    let bad = run(
        py,
        &[
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "-r",
            &path("bad.txt"),
            "--index-url",
            &index,
            "-d",
            &path("bad"),
        ],
    );
    assert!(!bad.status.success(), "pip accepted a wrong hash");

    // uv: same install, and it reads the PEP 658 sidecars (seen in nginx's access log).
    ok(&run(
        &tools.uv,
        &[
            "pip",
            "install",
            "--python",
            py.to_str().unwrap(),
            "--index-url",
            &index,
            "--target",
            &path("uv"),
            "alpha",
        ],
    ));
    assert_eq!(
        installed(&path("uv")),
        ["alpha-1.0.dist-info", "beta-1.0.dist-info"]
    );
    let log = nginx.access_log();
    let uv_metadata: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(".whl.metadata HTTP") && l.contains("uv/"))
        .collect();
    assert!(
        uv_metadata
            .iter()
            .any(|l| l.contains(&format!("{}.metadata", alpha.filename)) && l.contains("\" 200 ")),
        "uv did not fetch alpha's .metadata:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("/simple/alpha/ HTTP") && l.contains("\" 200 ")),
        "{log}"
    );

    // curl: content negotiation, content types, Vary.
    let curl = |accept: &str, url: &str| {
        ok(&run(
            &tools.curl,
            &["-sS", "-D", "-", "-H", &format!("Accept: {accept}"), url],
        ))
    };
    let json = curl(
        "application/vnd.pypi.simple.v1+json",
        &format!("{index}alpha/"),
    );
    assert!(
        json.to_ascii_lowercase()
            .contains("content-type: application/vnd.pypi.simple.v1+json"),
        "{json}"
    );
    assert!(json.contains("\"api-version\":\"1.4\""), "{json}");
    assert!(json.contains("Vary: Accept"), "{json}");
    let html = curl("text/html", &format!("{index}alpha/"));
    assert!(
        html.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{html}"
    );
    assert!(html.contains("<a href=\"../../packages/"), "{html}");
    assert!(html.contains("Vary: Accept"), "{html}");
    let v1html = curl(
        "application/vnd.pypi.simple.v1+html",
        &format!("{index}alpha/"),
    );
    assert!(
        v1html
            .to_ascii_lowercase()
            .contains("content-type: application/vnd.pypi.simple.v1+html"),
        "{v1html}"
    );
    let root = curl("application/vnd.pypi.simple.v1+json", &index);
    assert!(root.contains("\"projects\":[{\"_last-serial\""), "{root}");
    let sidecar = curl(
        "*/*",
        &format!(
            "{}/{}.metadata",
            nginx.url(),
            up.file_info(&alpha.filename).unwrap().path
        ),
    );
    assert!(
        sidecar
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{sidecar}"
    );
    assert!(sidecar.contains("immutable"), "{sidecar}");
    let db = ok(&run(
        &tools.curl,
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/pymirror.db", nginx.url()),
        ],
    ));
    assert_eq!(db.trim(), "404", "the state database is served");
}

/// Another pymirror follows this one through nginx with nothing but the PEP 691 index (no
/// XML-RPC, no JSON API): the root's `_last-serial`s pick the changed projects and the project
/// pages give the files. The follower ends byte-identical to the mirror it follows.
#[test]
fn a_pymirror_follows_another_through_the_pep691_index_alone() {
    let Some(tools) = Tools::find() else { return };
    let up = FakeUpstream::start();
    let alpha = dist::wheel("alpha", "1.0", &["beta"]);
    publish_wheel(&up, &alpha, "alpha", "1.0");
    up.add_release(
        "Beta.Lib",
        "1.0",
        &[("beta_lib-1.0.tar.gz", b"beta".to_vec())],
    );
    up.add_release(
        "Beta.Lib",
        "2.0",
        &[("beta_lib-2.0.tar.gz", b"beta2".to_vec())],
    );
    up.yank("Beta.Lib", "2.0", Some("oops"));
    let first = Mirror::new(PYMIRROR, &up.url());
    first.sync().assert_ok();
    let nginx = Nginx::start(&tools, &first);
    let follower = Mirror::new(PYMIRROR, &nginx.url());
    let run = follower.sync();
    run.assert_ok();
    assert!(
        run.stderr.contains("using the PEP 691 root index"),
        "{}",
        run.stderr
    );
    let tree = |m: &Mirror| {
        let mut t = m.published();
        t.retain(|k, _| {
            k.starts_with("web/simple/") || k.starts_with("web/packages/") || k == "status"
        });
        t
    };
    assert_eq!(tree(&follower), tree(&first));

    // An upstream change reaches the follower through the first mirror, and only it is fetched.
    up.add_release(
        "Beta.Lib",
        "3.0",
        &[("beta_lib-3.0.tar.gz", b"beta3".to_vec())],
    );
    first.sync().assert_ok();
    let before = nginx.access_log().lines().count();
    follower.sync().assert_ok();
    assert_eq!(tree(&follower), tree(&first));
    let log = nginx.access_log();
    let fetched: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("GET /simple/") && !l.contains("GET /simple/ "))
        .collect();
    assert!(
        fetched.iter().all(|l| l.contains("/simple/beta-lib/")),
        "{fetched:#?}"
    );
    assert!(!fetched.is_empty());
}
