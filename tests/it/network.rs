//! A hostile network: random 5xx, 429 with `Retry-After`, cut and corrupted bodies and
//! latency, all at once; Range resume; politeness (User-Agent, per-host connections, metadata
//! rate); `download_mirror` with and without fallback; proxies.

use std::collections::BTreeMap;
use std::time::Duration;

use pymirror_testkit::mirror::{Mirror, TEST_SETTINGS};
use pymirror_testkit::upstream::{FakeUpstream, FaultRates, FileOpts};

use crate::PYMIRROR;

/// Distinct bytes, `n` long.
fn bytes(seed: &str, n: usize) -> Vec<u8> {
    let s = seed.bytes().map(usize::from).sum::<usize>();
    (0..n).map(|i| ((i * 131 + s * 7) % 251) as u8).collect()
}

/// 16 projects, 2 releases each, a wheel (with a PEP 658 sidecar) and an sdist per release,
/// sizes from a few bytes to ~300 KiB.
fn publish(up: &FakeUpstream) {
    for p in 0..16 {
        let name = format!("proj-{p}");
        for v in 0..2 {
            let version = format!("{p}.{v}");
            let wheel = format!("proj_{p}-{version}-py3-none-any.whl");
            let sdist = format!("proj_{p}-{version}.tar.gz");
            let opts = FileOpts {
                metadata: Some(
                    format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
                        .into_bytes(),
                ),
                ..FileOpts::default()
            };
            up.add_file(
                &name,
                &version,
                &wheel,
                bytes(&wheel, 1 + p * 20_000 + v * 7),
                opts,
            );
            up.add_file(
                &name,
                &version,
                &sdist,
                bytes(&sdist, 50 + p * 3_000),
                FileOpts::default(),
            );
        }
    }
}

#[test]
fn a_sync_under_a_mixture_of_faults_ends_identical_to_a_fault_free_one() {
    let up = FakeUpstream::start();
    publish(&up);
    let clean = Mirror::new(PYMIRROR, &up.url());
    clean.sync().assert_ok();
    let want = clean.published();

    up.set_fault_rates(FaultRates {
        seed: 0x5eed,
        server_error: 0.10,
        too_many: 0.02,
        retry_after: Some(1),
        truncate: 0.05,
        corrupt: 0.05,
        max_latency: Duration::from_millis(20),
    });
    up.reset_requests();
    let faulty = Mirror::new(PYMIRROR, &up.url());
    let first = faulty.sync();
    let mut runs = vec![up.requests()];
    // Retries absorb most faults; what is left is retried first by the next run.
    if first.code != 0 {
        assert_eq!(first.code, 1, "{}", first.stderr);
        up.reset_requests();
        let second = faulty.sync();
        assert_eq!(
            second.code, 0,
            "first run:\n{}\nsecond run:\n{}",
            first.stderr, second.stderr
        );
        runs.push(up.requests());
    }
    let injected = up.faults_injected();
    assert!(
        injected.server_error > 0
            && injected.too_many > 0
            && injected.truncate > 0
            && injected.corrupt > 0,
        "the mixture did not inject every fault: {injected:?}"
    );
    let got = faulty.published();
    let differ: Vec<_> = want
        .iter()
        .filter(|(path, sha)| got.get(*path) != Some(*sha))
        .map(|(path, _)| path)
        .chain(got.keys().filter(|path| !want.contains_key(*path)))
        .collect();
    assert!(
        differ.is_empty(),
        "mirror differs after {} run(s): {differ:#?}\n{}",
        runs.len(),
        first.stderr
    );
    faulty.assert_consistent();

    // Every injected 429/503 said "Retry-After: 1": within a run, the same request did not
    // come back sooner.
    let mut checked = 0;
    for requests in &runs {
        for (i, r) in requests.iter().enumerate() {
            if r.status != 429 && r.status != 503 {
                continue;
            }
            let again = requests[i + 1..]
                .iter()
                .find(|n| n.method == r.method && n.path == r.path && n.query == r.query);
            if let Some(next) = again {
                let waited = next.at.duration_since(r.at);
                assert!(
                    waited >= Duration::from_millis(950),
                    "{} {} retried after {waited:?}, before its Retry-After",
                    r.method,
                    r.path
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no retried 429/503 to check");
}

#[test]
fn a_cut_download_resumes_with_a_range_request_and_is_verified_whole() {
    let up = FakeUpstream::start();
    let big = bytes("big", 3 << 20);
    up.add_release("big", "1.0", &[("big-1.0.tar.gz", big.clone())]);
    up.truncate_downloads("big-1.0.tar.gz", 1);
    let mirror = Mirror::new(PYMIRROR, &up.url());
    mirror.sync().assert_ok();

    let info = up.file_info("big-1.0.tar.gz").unwrap();
    assert_eq!(std::fs::read(mirror.web().join(&info.path)).unwrap(), big);
    let gets: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/big-1.0.tar.gz"))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!((gets[0].status, gets[0].range.as_deref()), (200, None));
    let from: u64 = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("second request is not a resume: {:?}", gets[1]));
    assert!(from > 0 && from < big.len() as u64, "resumed from {from}");
    assert_eq!(gets[1].status, 206);
    // Only the missing part crossed the network again.
    assert!(up.bytes_served() < big.len() as u64 * 3 / 2);
}

#[test]
fn requests_are_polite_user_agent_per_host_connections_and_metadata_rate() {
    let up = FakeUpstream::start();
    publish(&up);
    up.set_latency(Duration::from_millis(20));
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        "workers = 8\nmetadata_workers = 8\nretry_delay = 0.01\nfsync = false\n\
         max_connections_per_host = 2\nmetadata_rate = 40\n",
    );
    mirror.sync().assert_ok();

    let requests = up.requests();
    let agent = format!(
        "pymirror/{} (+{})",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_REPOSITORY")
    );
    for r in &requests {
        assert_eq!(r.user_agent.as_deref(), Some(agent.as_str()), "{r:?}");
    }
    assert!(
        up.max_in_flight() <= 2,
        "{} requests at once to one host, max_connections_per_host = 2",
        up.max_in_flight()
    );
    // Metadata requests (XML-RPC, JSON API, project pages) are spread at 40 per second.
    let metadata: Vec<_> = requests
        .iter()
        .filter(|r| !r.path.starts_with("/packages/"))
        .collect();
    assert!(metadata.len() >= 16, "{}", metadata.len());
    let span = metadata.last().unwrap().at.duration_since(metadata[0].at);
    let floor = Duration::from_secs_f64((metadata.len() - 1) as f64 / 40.0);
    assert!(
        span + Duration::from_millis(50) >= floor,
        "{} metadata requests in {span:?}, faster than 40/s",
        metadata.len()
    );
}

#[test]
fn a_rate_limited_upstream_is_paced_below_its_limit_and_the_sync_completes() {
    let up = FakeUpstream::start();
    publish(&up);
    let clean = Mirror::new(PYMIRROR, &up.url());
    clean.sync().assert_ok();
    let want = clean.published();
    // 20 requests a second, 429 with Retry-After beyond; pymirror at its default ceilings
    // (64 downloads, 32 metadata requests) must find that pace by itself.
    up.rate_limit(Some(20.0));
    up.reset_requests();
    let limited = Mirror::with_settings(PYMIRROR, &up.url(), "fsync = false\n");
    limited.sync().assert_ok();
    up.rate_limit(None);
    assert_eq!(
        limited.published(),
        want,
        "the rate-limited sync is incomplete"
    );
    limited.assert_consistent();
    let requests = up.requests();
    let start = requests[0].at;
    let late: Vec<_> = requests
        .iter()
        .filter(|r| r.at.duration_since(start) >= Duration::from_secs(2))
        .collect();
    let late_429 = late.iter().filter(|r| r.status == 429).count();
    assert!(
        late.len() >= 20,
        "only {} requests after the first 2 s: the limit was not reached",
        late.len()
    );
    // Unpaced, nearly every request after the first burst would be a 429.
    assert!(
        late_429 * 10 <= late.len(),
        "{late_429} of {} requests after the first 2 s got 429",
        late.len()
    );
}

#[test]
fn download_mirror_serves_first_and_upstream_fills_in_unless_told_not_to() {
    let up = FakeUpstream::start();
    let alt = FakeUpstream::start();
    // The alternative host has project a's files only (same bytes, so the same paths).
    let a = bytes("a", 5000);
    let b = bytes("b", 6000);
    up.add_release("a", "1.0", &[("a-1.0.tar.gz", a.clone())]);
    up.add_release("b", "1.0", &[("b-1.0.tar.gz", b.clone())]);
    alt.add_release("a", "1.0", &[("a-1.0.tar.gz", a.clone())]);
    let a_path = up.file_info("a-1.0.tar.gz").unwrap().path;
    let b_path = up.file_info("b-1.0.tar.gz").unwrap().path;
    let settings = format!("{TEST_SETTINGS}download_mirror = \"{}\"\n", alt.url());

    let mirror = Mirror::with_settings(PYMIRROR, &up.url(), &settings);
    mirror.sync().assert_ok();
    assert_eq!(std::fs::read(mirror.web().join(&a_path)).unwrap(), a);
    assert_eq!(std::fs::read(mirror.web().join(&b_path)).unwrap(), b);
    let served = |u: &FakeUpstream| -> BTreeMap<String, u16> {
        u.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/packages/"))
            .map(|r| (r.path.rsplit('/').next().unwrap().to_owned(), r.status))
            .collect()
    };
    assert_eq!(
        served(&alt),
        BTreeMap::from([("a-1.0.tar.gz".into(), 200), ("b-1.0.tar.gz".into(), 404)])
    );
    assert_eq!(
        served(&up),
        BTreeMap::from([("b-1.0.tar.gz".into(), 200)]),
        "upstream served a file the download mirror had"
    );

    // Without fallback, what the download mirror lacks fails and stays pending.
    up.reset_requests();
    let strict = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{settings}download_mirror_no_fallback = true\n"),
    );
    let run = strict.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("b-1.0.tar.gz"), "{}", run.stderr);
    assert!(strict.web().join(&a_path).exists());
    assert!(!strict.web().join(&b_path).exists());
    assert!(strict.page("b").is_none());
    assert!(served(&up).is_empty(), "no_fallback still asked upstream");
}

/// A port nothing listens on: the master is unreachable except through the proxy.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn every_request_goes_through_the_configured_or_environment_proxy() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", bytes("d", 999))]);
    // The fake upstream answers proxy-style requests (`GET http://host/...`) by path, so it is
    // its own proxy; the master's port is closed, so only proxied requests can succeed.
    let master = format!("http://127.0.0.1:{}", dead_port());

    let configured = Mirror::with_settings(
        PYMIRROR,
        &master,
        &format!("{TEST_SETTINGS}proxy = \"{}\"\n", up.url()),
    );
    configured.sync().assert_ok();
    assert_eq!(configured.links("demo").len(), 1);
    let requests = up.requests();
    assert!(requests.len() >= 3, "{requests:#?}");
    assert!(requests.iter().all(|r| r.absolute_form), "{requests:#?}");

    up.reset_requests();
    let from_env = Mirror::new(PYMIRROR, &master);
    let args = ["sync", "--config", from_env.config.to_str().unwrap()];
    from_env
        .run_env(&args, &[("HTTP_PROXY", &up.url())])
        .assert_ok();
    assert_eq!(from_env.links("demo").len(), 1);
    assert!(up.requests().iter().all(|r| r.absolute_form));

    // NO_PROXY exempts the master: it is asked directly, and is not there.
    up.reset_requests();
    let exempt = Mirror::new(PYMIRROR, &master);
    let args = ["sync", "--config", exempt.config.to_str().unwrap()];
    let run = exempt.run_env(
        &args,
        &[("HTTP_PROXY", &up.url()), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(up.request_count(), 0);
}

#[test]
fn a_stalled_upstream_times_out_and_is_retried_instead_of_hanging() {
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", bytes("d", 999))]);
    up.set_latency(Duration::from_secs(5));
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &up.url(),
        &format!("{TEST_SETTINGS}timeout = 0.3\nretries = 2\n"),
    );
    let run = mirror.sync();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    // The first attempt and both retries, each cut at the read timeout.
    assert_eq!(up.request_count(), 3, "{:#?}", up.requests());
}

/// The machine's host name, which must resolve to loopback only (the test VM's /etc/hosts maps
/// it to 127.0.0.1): a name that is not an IP literal nor `localhost`, but lands inside.
fn loopback_host_name() -> String {
    let name = std::process::Command::new("hostname")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|n| n.trim().to_owned())
        })
        .expect("cannot read this machine's host name (`hostname`)");
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = (name.as_str(), 0)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
        "this test needs the host name {name:?} to resolve to loopback only (map it to 127.0.0.1 \
         in /etc/hosts); it resolves to {addrs:?}"
    );
    assert!(
        name.parse::<std::net::IpAddr>().is_err() && !name.eq_ignore_ascii_case("localhost"),
        "the host name {name:?} is an IP literal or localhost; this test needs another name"
    );
    name
}

#[test]
fn a_master_named_by_a_host_name_that_resolves_to_loopback_is_trusted_and_internal() {
    let host = loopback_host_name();
    let up = FakeUpstream::start();
    publish(&up);
    // The fake upstream's file URLs are on 127.0.0.1: allowed because the master, through its
    // name, is internal, exactly as a master given as 127.0.0.1.
    let master = up.url().replace("127.0.0.1", &host);
    let mirror = Mirror::with_settings(
        PYMIRROR,
        &master,
        &format!("{TEST_SETTINGS}allow_http = true\n"),
    );
    mirror.sync().assert_ok();
    let reference = Mirror::new(PYMIRROR, &up.url());
    reference.sync().assert_ok();
    assert_eq!(mirror.published(), reference.published());
    assert_eq!(mirror.links("proj-3").len(), 4);
    mirror.assert_consistent();
    // A second run has nothing to do.
    up.reset_requests();
    mirror.sync().assert_ok();
    assert!(
        up.requests()
            .iter()
            .all(|r| !r.path.starts_with("/packages/")),
        "{:#?}",
        up.requests()
    );
}

/// Through a proxy, a master that does not resolve here is public: its file URLs must not lead
/// to internal addresses. (On a loopback-only machine a public master can only be simulated
/// this way: the proxy, the fake upstream, answers for it.)
#[test]
fn a_public_master_is_refused_internal_file_urls_unless_internal_hosts_lists_them() {
    let host = loopback_host_name();
    let up = FakeUpstream::start();
    up.add_release("demo", "1.0", &[("demo-1.0.tar.gz", bytes("d", 999))]);
    let master = format!("http://upstream.invalid:{}", dead_port());
    // The proxy is named by a host name that resolves inside: configured, so trusted.
    let proxy = up.url().replace("127.0.0.1", &host);
    let settings = format!("{TEST_SETTINGS}allow_http = true\nproxy = \"{proxy}\"\n");

    let refused = Mirror::with_settings(PYMIRROR, &master, &settings);
    let run = refused.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("points at an internal address; refused: add its host to [mirror] internal_hosts if it is yours"),
        "{}",
        run.stderr
    );
    assert!(refused.links("demo").is_empty());
    assert!(
        up.requests()
            .iter()
            .all(|r| !r.path.starts_with("/packages/")),
        "an internal file URL was requested: {:#?}",
        up.requests()
    );

    for listed in ["127.0.0.0/8", "127.0.0.1"] {
        let allowed = Mirror::with_settings(
            PYMIRROR,
            &master,
            &format!("{settings}internal_hosts = [\"{listed}\"]\n"),
        );
        allowed.sync().assert_ok();
        assert_eq!(allowed.links("demo").len(), 1, "{listed}");
    }
}

/// A file host named by a host name that resolves only inside is refused by the resolver,
/// with the option named, unless `internal_hosts` (or `file_hosts`) names it.
#[test]
fn a_file_host_that_resolves_inside_is_refused_unless_named() {
    let host = loopback_host_name();
    let up = FakeUpstream::start();
    // The bytes live on the fake upstream (under a project the allowlist leaves out); project
    // "other" lists them on the host name.
    up.add_release("source", "1.0", &[("other-1.0.tar.gz", bytes("o", 777))]);
    let target = up.file_info("other-1.0.tar.gz").unwrap();
    let port = up.url().rsplit(':').next().unwrap().to_owned();
    up.inject_file_json(
        "other",
        "1.0",
        serde_json::json!({
            "filename": "other-1.0.tar.gz",
            "url": format!("http://{host}:{port}/{}", target.path),
            "size": target.size,
            "packagetype": "sdist",
            "python_version": "source",
            "digests": {"sha256": target.sha256, "blake2b_256": target.blake2b},
            "requires_python": null,
            "yanked": false,
        }),
    );
    let master = format!("http://upstream.invalid:{}", dead_port());
    // Metadata through the proxy (so the master is public); files on the host name directly.
    let env = [("HTTP_PROXY", up.url()), ("NO_PROXY", host.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let settings = format!(
        "{TEST_SETTINGS}allow_http = true\nsimple_json = false\n[filters]\nallowlist = [\"other\"]\n"
    );

    let refused = Mirror::with_settings(PYMIRROR, &master, &settings);
    let run = refused.run_env(
        &["sync", "--config", refused.config.to_str().unwrap()],
        &env,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let want = format!(
        "{host} resolves only to internal addresses (127.0.0.1); refused: add it to [mirror] internal_hosts if it is yours"
    );
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert!(
        refused.page("other").is_none(),
        "published without its file"
    );

    for setting in ["internal_hosts", "file_hosts"] {
        let allowed = Mirror::with_settings(
            PYMIRROR,
            &master,
            &settings.replace(
                "[filters]",
                &format!("{setting} = [\"{}\"]\n[filters]", host.to_uppercase()),
            ),
        );
        allowed
            .run_env(
                &["sync", "--config", allowed.config.to_str().unwrap()],
                &env,
            )
            .assert_ok();
        assert_eq!(allowed.links("other").len(), 1, "{setting}");
    }
}
