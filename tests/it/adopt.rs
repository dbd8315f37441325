//! `pymirror adopt` (issue 14): a tree bandersnatch 8.2.0 left (`bandersnatch::write`, with
//! its damage) taken over offline, then followed by `pymirror sync`, which downloads exactly
//! what is missing, damaged or changed upstream and rewrites every page in its own format.

use std::collections::{BTreeMap, BTreeSet};

use pymirror_testkit::bandersnatch::{self, Damage};
use pymirror_testkit::mirror::normalize;
use pymirror_testkit::mirror::{Mirror, Run};
use pymirror_testkit::upstream::{FakeUpstream, Personality};

use crate::PYMIRROR;
use crate::personalities::bytes;

/// The personalities' catalog, from the Warehouse-like upstream.
fn catalog() -> FakeUpstream {
    crate::personalities::catalog(Personality::warehouse())
}

/// A mirror of `up` whose directory holds what bandersnatch wrote with `opts`.
fn bandersnatch_mirror(up: &FakeUpstream, opts: &bandersnatch::Options) -> Mirror {
    let mirror = Mirror::new(PYMIRROR, &up.url());
    bandersnatch::write(up, &mirror.dir, opts);
    mirror
}

fn adopt(mirror: &Mirror, extra: &[&str]) -> Run {
    let mut args = vec!["adopt", "--config", mirror.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = mirror.run(&args);
    eprintln!("--- adopt ---\n{}\n{}", run.stdout, run.stderr);
    run
}

fn local_path(up: &FakeUpstream, filename: &str) -> String {
    let b = up.file_info(filename).expect("published file").blake2b;
    format!("packages/{}/{}/{}/{filename}", &b[..2], &b[2..4], &b[4..])
}

/// The files (not sidecars) the fake upstream served since the last reset, by file name.
fn file_requests(up: &FakeUpstream) -> BTreeSet<String> {
    up.requests()
        .iter()
        .filter(|r| r.path.starts_with("/packages/") && !r.path.ends_with(".metadata"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn sync_ok(mirror: &Mirror) {
    let run = mirror.sync();
    eprintln!("--- sync ---\n{}", run.stderr);
    run.assert_ok();
}

/// Every project's page links exactly upstream's files, each resolving to its bytes, and
/// `verify --hash` (pages as the database renders them, files, orphans) is clean.
#[track_caller]
fn assert_complete(mirror: &Mirror, up: &FakeUpstream) {
    mirror.assert_consistent();
    for (name, files) in up.live_files() {
        let listed: BTreeSet<String> = mirror.links(&name).into_iter().map(|l| l.text).collect();
        assert_eq!(listed, files, "{name}: files on its page");
    }
    let root: BTreeSet<String> = mirror
        .root_links()
        .iter()
        .map(|l| normalize(&l.text))
        .collect();
    assert_eq!(root, up.live_files().into_keys().collect(), "root index");
    let v = mirror.verify(&["--hash"]);
    assert_eq!(v.code, 0, "verify --hash:\n{}\n{}", v.stdout, v.stderr);
}

/// Every project page under `web/simple/<project>/`, by path.
fn pages(mirror: &Mirror) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    for dir in std::fs::read_dir(mirror.web().join("simple")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for page in std::fs::read_dir(&dir).unwrap() {
                let page = page.unwrap().path();
                let key = page
                    .strip_prefix(mirror.web())
                    .unwrap()
                    .display()
                    .to_string();
                found.insert(key, std::fs::read(&page).unwrap());
            }
        }
    }
    found
}

#[test]
fn a_clean_tree_is_adopted_and_the_next_sync_downloads_nothing() {
    let up = catalog();
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    let before = pages(&mirror);
    up.reset_requests();
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("adopt complete: 4 projects (4 by this run), 8 files"),
        "{}",
        run.stdout
    );
    assert!(up.requests().is_empty(), "adopt asked upstream");
    // Pages with nothing missing stay bandersnatch's (the next sync rewrites them); verify
    // does not call them damaged meanwhile.
    assert_eq!(
        pages(&mirror),
        before,
        "adopt rewrote a complete project's pages"
    );
    let v = mirror.verify(&["--hash"]);
    assert_eq!(v.code, 0, "verify --hash:\n{}\n{}", v.stdout, v.stderr);
    assert!(
        v.stderr
            .contains("the pages of 4 adopted projects are still the adopted tree's"),
        "{}",
        v.stderr
    );

    sync_ok(&mirror);
    assert_eq!(file_requests(&up), BTreeSet::new(), "the sync downloaded");
    // Rewritten in pymirror's format (verify compares every page byte for byte).
    assert_ne!(pages(&mirror), before);
    assert_complete(&mirror, &up);
    let v = mirror.verify(&[]);
    assert!(!v.stderr.contains("adopted tree's"), "{}", v.stderr);
    // `--hash` on an adopted mirror's adoption is refused: it is pymirror's now.
    let again = adopt(&mirror, &["--hash"]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already has a pymirror database"),
        "{}",
        again.stderr
    );
}

#[test]
fn adopt_with_hash_checks_every_digest() {
    let up = catalog();
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    // Same size, other bytes: only hashing sees it.
    let path = mirror.web().join(local_path(&up, "gamma-0.2.tar.gz"));
    let mut b = std::fs::read(&path).unwrap();
    b[0] ^= 1;
    std::fs::write(&path, b).unwrap();
    let run = adopt(&mirror, &["--hash"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains(&format!(
            "damaged {}: its sha256",
            local_path(&up, "gamma-0.2.tar.gz")
        )),
        "{}",
        run.stdout
    );
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(
        file_requests(&up),
        BTreeSet::from(["gamma-0.2.tar.gz".into()])
    );
    assert_complete(&mirror, &up);
}

#[test]
fn damage_is_reported_then_fixed_by_the_next_sync() {
    let up = catalog();
    let opts = bandersnatch::Options {
        damage: vec![
            Damage::MissingFile("beta_lib-2.0.tar.gz".into()),
            Damage::TruncatedFile("gamma-0.1.tar.gz".into()),
            Damage::StrayTemp("delta_tool-1.0.tar.gz".into()),
            Damage::DanglingLink {
                project: "Alpha".into(),
                filename: "alpha-0.9.tar.gz".into(),
            },
        ],
        ..bandersnatch::Options::default()
    };
    let mirror = bandersnatch_mirror(&up, &opts);
    up.reset_requests();
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains(&format!(
            "missing {}",
            local_path(&up, "beta_lib-2.0.tar.gz")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("damaged {}", local_path(&up, "gamma-0.1.tar.gz"))),
        "{out}"
    );
    assert!(out.contains("alpha-0.9.tar.gz (project alpha)"), "{out}");
    assert!(out.contains("temporary packages/"), "{out}");
    assert!(out.contains(".delta_tool-1.0.tar.gz."), "{out}");
    assert!(
        out.contains("adopt complete: 4 projects (4 by this run), 6 files")
            && out.contains("2 missing, 1 damaged"),
        "{out}"
    );
    assert!(up.requests().is_empty(), "adopt asked upstream");
    // Pages never list what the mirror does not hold.
    let listed = |name: &str| -> BTreeSet<String> {
        mirror.links(name).into_iter().map(|l| l.text).collect()
    };
    assert!(!listed("beta-lib").contains("beta_lib-2.0.tar.gz"));
    assert!(!listed("gamma").contains("gamma-0.1.tar.gz"));
    assert!(!listed("alpha").contains("alpha-0.9.tar.gz"));
    assert_eq!(listed("delta-tool").len(), 1);

    sync_ok(&mirror);
    assert_eq!(
        file_requests(&up),
        BTreeSet::from(["beta_lib-2.0.tar.gz".into(), "gamma-0.1.tar.gz".into()]),
        "the sync downloads exactly the missing and damaged files"
    );
    // The stray temporary file is an orphan until deleted.
    let v = mirror.verify(&["--delete-orphans"]);
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    assert_complete(&mirror, &up);
}

#[test]
fn upstream_changes_after_adoption_are_followed() {
    let up = catalog();
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    assert_eq!(adopt(&mirror, &[]).code, 0);
    up.add_release(
        "gamma",
        "0.3",
        &[("gamma-0.3.tar.gz", bytes("gamma-0.3.tar.gz"))],
    );
    up.remove_file("Beta.Lib", "beta_lib-1.0.tar.gz");
    up.yank("Beta.Lib", "2.0", Some("broken build"));
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(
        file_requests(&up),
        BTreeSet::from(["gamma-0.3.tar.gz".into()])
    );
    assert!(
        !mirror
            .web()
            .join(local_path(&up, "beta_lib-1.0.tar.gz"))
            .exists()
    );
    assert!(mirror.links("beta-lib").iter().all(|l| l.yanked.is_some()));
    assert_complete(&mirror, &up);
}

#[test]
fn a_plain_tree_without_status_is_adopted_and_the_next_sync_downloads_nothing() {
    let up = catalog();
    let opts = bandersnatch::Options {
        simple_format: bandersnatch::SimpleFormat::Html,
        ..bandersnatch::Options::default()
    };
    let mirror = bandersnatch_mirror(&up, &opts);
    for f in ["status", "generation"] {
        std::fs::remove_file(mirror.dir.join(f)).unwrap();
    }
    // No serials either: a plain PEP 503 tree.
    for name in up.live_files().into_keys() {
        for page in ["index.html", "index.v1_html"] {
            let path = mirror.web().join("simple").join(&name).join(page);
            let body = std::fs::read_to_string(&path).unwrap();
            let cut = body.rfind("<!--SERIAL").unwrap();
            std::fs::write(&path, &body[..cut]).unwrap();
        }
    }
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("no status file"), "{}", run.stdout);
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(file_requests(&up), BTreeSet::new(), "the sync downloaded");
    // One metadata pass over every project.
    for name in up.live_files().into_keys() {
        assert!(
            up.requests()
                .iter()
                .any(|r| r.path.contains(&format!("/{name}/"))),
            "{name} was not asked for"
        );
    }
    assert_complete(&mirror, &up);
}

#[test]
fn adopt_refuses_what_it_cannot_adopt() {
    // Not a mirror at all.
    let up = catalog();
    let empty = Mirror::new(PYMIRROR, &up.url());
    std::fs::create_dir_all(&empty.dir).unwrap();
    let run = adopt(&empty, &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no web/simple/"), "{}", run.stderr);
    assert!(!empty.dir.join("pymirror.db").exists());

    // A pymirror mirror.
    let ours = Mirror::new(PYMIRROR, &up.url());
    sync_ok(&ours);
    let run = adopt(&ours, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("already has a pymirror database"),
        "{}",
        run.stderr
    );

    // A page linking outside the tree.
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    let page = mirror.web().join("simple/gamma/index.v1_json");
    let body = std::fs::read_to_string(&page).unwrap();
    std::fs::write(
        &page,
        body.replacen("../../packages/", "../../../../etc/", 1),
    )
    .unwrap();
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("web/simple/gamma/index.v1_json links outside the tree"),
        "{}",
        run.stderr
    );
    // A sync will not start on the unfinished adoption; fixed, the adoption continues.
    let sync = mirror.sync();
    assert_eq!(sync.code, 2);
    assert!(sync.stderr.contains("adoption"), "{}", sync.stderr);
    std::fs::write(&page, body).unwrap();
    assert_eq!(adopt(&mirror, &[]).code, 0);
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(file_requests(&up), BTreeSet::new());
    assert_complete(&mirror, &up);
}

#[test]
fn a_killed_adoption_continues() {
    let up = catalog();
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    let run = adopt(&mirror, &["--test-exit-after", "2"]);
    assert_eq!(run.code, 137);
    let sync = mirror.sync();
    assert_eq!(sync.code, 2, "{}", sync.stderr);
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("adopt complete: 4 projects (2 by this run), 8 files"),
        "{}",
        run.stdout
    );
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(file_requests(&up), BTreeSet::new());
    assert_complete(&mirror, &up);
}

#[test]
fn a_project_without_a_readable_page_or_a_normalized_directory_is_fetched_by_the_next_sync() {
    let up = catalog();
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    let dir = mirror.web().join("simple/delta-tool");
    for page in ["index.html", "index.v1_html", "index.v1_json"] {
        std::fs::remove_file(dir.join(page)).unwrap();
    }
    // An older layout's directory named as displayed.
    let simple = mirror.web().join("simple");
    std::fs::rename(simple.join("gamma"), simple.join("Gamma")).unwrap();
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("not adopted: web/simple/Gamma/ is not a normalized project name (gamma)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2 projects queued for the next sync"),
        "{}",
        run.stdout
    );
    std::fs::remove_dir_all(simple.join("Gamma")).unwrap();
    assert!(
        run.stdout
            .contains("not adopted: web/simple/delta-tool/ has no index.v1_json or index.html"),
        "{}",
        run.stdout
    );
    up.reset_requests();
    sync_ok(&mirror);
    for name in ["delta", "gamma"] {
        assert!(
            up.requests().iter().any(|r| r.path.contains(name)),
            "{name} was not fetched"
        );
    }
    assert_complete(&mirror, &up);
}

#[test]
fn a_tree_of_json_pages_only_is_adopted() {
    let up = catalog();
    let opts = bandersnatch::Options {
        simple_format: bandersnatch::SimpleFormat::Json,
        ..bandersnatch::Options::default()
    };
    let mirror = bandersnatch_mirror(&up, &opts);
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("adopt complete: 4 projects (4 by this run), 8 files"),
        "{}",
        run.stdout
    );
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(file_requests(&up), BTreeSet::new(), "the sync downloaded");
    assert_complete(&mirror, &up);
}

#[test]
fn the_first_sync_rewrites_the_adopted_pages_before_asking_upstream() {
    let up = catalog();
    // Upstream unreachable: the sync fails at its plan, after the pages.
    let mirror = Mirror::new(PYMIRROR, "http://127.0.0.1:1/");
    bandersnatch::write(&up, &mirror.dir, &bandersnatch::Options::default());
    let before = pages(&mirror);
    assert_eq!(adopt(&mirror, &[]).code, 0);
    let sync = mirror.sync();
    assert_ne!(sync.code, 0, "{}", sync.stderr);
    assert!(
        sync.stderr
            .contains("rewriting the pages of 4 adopted projects in pymirror's format"),
        "{}",
        sync.stderr
    );
    assert_ne!(pages(&mirror), before);
    let v = mirror.verify(&["--hash"]);
    assert_eq!(v.code, 0, "verify --hash:\n{}\n{}", v.stdout, v.stderr);
    assert!(!v.stderr.contains("adopted tree's"), "{}", v.stderr);
    // Done once: the next sync has nothing of the adoption's left to rewrite.
    let again = mirror.sync();
    assert!(
        !again.stderr.contains("adopted projects"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_running_bandersnatch_keeps_adopt_out_and_is_named_by_its_pid() {
    let up = catalog();
    let mirror = bandersnatch_mirror(&up, &bandersnatch::Options::default());
    // bandersnatch holds a flock on `.lock` and writes nothing into it.
    let lock = std::fs::File::create(mirror.dir.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(&format!(
            "another pymirror or bandersnatch (pid {}) is working on",
            std::process::id()
        )),
        "{}",
        run.stderr
    );
    assert!(!mirror.dir.join("pymirror.db").exists());
    drop(lock);
    assert_eq!(adopt(&mirror, &[]).code, 0);
    // Once adopted, a checking verify beside a bandersnatch still run by cron names it too.
    let lock = std::fs::File::create(mirror.dir.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let v = mirror.verify(&[]);
    assert!(
        v.stderr
            .contains(&format!("a sync (pid {}) is running", std::process::id())),
        "{}",
        v.stderr
    );
}

#[test]
fn the_json_api_documents_are_adopted_by_the_first_sync() {
    let up = catalog();
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{}json = true\n", pymirror_testkit::mirror::TEST_SETTINGS),
    );
    let opts = bandersnatch::Options {
        json: true,
        ..bandersnatch::Options::default()
    };
    bandersnatch::write(&up, &mirror.dir, &opts);
    let web = mirror.web();
    let adopted = std::fs::read(web.join("json/alpha")).unwrap();
    // One project without its documents: the first sync fetches it.
    std::fs::remove_file(web.join("json/gamma")).unwrap();
    std::fs::remove_file(web.join("pypi/gamma/json")).unwrap();
    assert_eq!(adopt(&mirror, &[]).code, 0);
    let v = mirror.verify(&[]);
    assert_eq!(v.code, 0, "verify:\n{}\n{}", v.stdout, v.stderr);

    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(file_requests(&up), BTreeSet::new(), "the sync downloaded");
    let asked = |name: &str| {
        up.requests()
            .iter()
            .any(|r| r.path.to_lowercase().contains(name))
    };
    assert!(asked("gamma"), "gamma's documents were not fetched");
    assert!(!asked("alpha"), "alpha was fetched: {:?}", up.requests());
    // pymirror's documents, linking the files held here, not upstream's URLs.
    let doc = std::fs::read(web.join("json/alpha")).unwrap();
    assert_ne!(doc, adopted);
    assert_ne!(std::fs::read(web.join("pypi/alpha/json")).unwrap(), adopted);
    assert!(web.join("json/gamma").is_file());
    assert_complete(&mirror, &up);
}

#[test]
fn a_damaged_file_found_before_a_kill_is_no_orphan_after_it() {
    let up = catalog();
    let opts = bandersnatch::Options {
        damage: vec![Damage::TruncatedFile("gamma-0.1.tar.gz".into())],
        ..bandersnatch::Options::default()
    };
    let mirror = bandersnatch_mirror(&up, &opts);
    // Killed once every project is recorded (gamma is the last), before the orphan walk.
    let run = adopt(&mirror, &["--test-exit-after", "4"]);
    assert_eq!(run.code, 137);
    assert!(run.stdout.contains("damaged "), "{}", run.stdout);
    let run = adopt(&mirror, &[]);
    assert_eq!(run.code, 1, "gamma stays queued");
    assert!(!run.stdout.contains("orphan packages/"), "{}", run.stdout);
    assert!(run.stdout.contains("0 orphans"), "{}", run.stdout);
    up.reset_requests();
    sync_ok(&mirror);
    assert_eq!(
        file_requests(&up),
        BTreeSet::from(["gamma-0.1.tar.gz".into()])
    );
    assert_complete(&mirror, &up);
}
