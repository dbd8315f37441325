//! `mirror.toml`: read, validate, and turn into a [`Config`] the rest of the program trusts.
//!
//! Parsing is done by hand over a `toml::Table` rather than with `serde(deny_unknown_fields)`
//! so that every mistake gets one line naming the file, the key and the fix.

#[cfg(test)]
mod filter_tests;
pub mod filters;
mod keys;
pub mod storage;

pub use keys::Keys;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use toml::{Table, Value};

/// How the sync learns what changed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeFeed {
    /// XML-RPC, falling back to the PEP 691 root index when XML-RPC answers 404 or 405.
    Auto,
    /// `list_packages_with_serial` and `changelog_since_serial` only.
    XmlRpc,
    /// The PEP 691 JSON root index with per-project `_last-serial` only.
    Simple,
}

/// Which simple index formats to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimpleFormat {
    All,
    Html,
    Json,
}

impl SimpleFormat {
    pub fn html(self) -> bool {
        self != SimpleFormat::Json
    }

    pub fn json(self) -> bool {
        self != SimpleFormat::Html
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Mirror root: `web/`, `tmp/`, the state database, `status` and the lock live here.
    pub directory: PathBuf,
    /// Upstream index root, without a trailing slash.
    pub master: Url,
    pub workers: usize,
    pub metadata_workers: usize,
    pub change_feed: ChangeFeed,
    pub timeout: Duration,
    pub retries: u32,
    pub stale_retries: u32,
    pub retry_delay: Duration,
    pub fsync: bool,
    pub max_metadata_bytes: u64,
    /// What all metadata bodies in flight, with what is parsed from them, may hold together.
    pub max_metadata_memory: u64,
    /// One metadata request, all its attempts and its whole body, must be done within this.
    pub metadata_deadline: Duration,
    pub max_deletions: usize,
    /// The share (0.0 to 1.0) of the held files a run looks at that it may delete when it
    /// deletes more than `max_deletions` files (`sync::guard`).
    pub max_deletion_share: f64,
    /// Change-feed (XML-RPC changelog) rows one run reads at most (0: no cap).
    pub max_feed_rows: u64,
    pub simple_format: SimpleFormat,
    /// Absolute base URL for file links, without a trailing slash (default: relative links).
    pub root_uri: Option<String>,
    /// Also write the JSON API mirror (`web/json/<name>`, `web/pypi/<name>/json`).
    pub json: bool,
    /// Also fetch each changed project's PEP 691 page (provenance, status, extra hashes).
    pub simple_json: bool,
    /// HTTP(S) proxy for every request (else HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply).
    pub proxy: Option<Url>,
    /// When not empty, file URLs must be on one of these hosts.
    pub file_hosts: Vec<String>,
    /// Internal hosts and networks upstream may send us to although the master is public.
    pub internal_hosts: crate::upstream::address::InternalHosts,
    /// Fetch files from this host first (same `packages/...` paths), then from upstream.
    pub download_mirror: Option<Url>,
    pub download_mirror_no_fallback: bool,
    /// Metadata and XML-RPC requests per second (0: no cap).
    pub metadata_rate: f64,
    /// Concurrent requests to any one host (0: no cap beyond `workers`).
    pub max_connections_per_host: usize,
    /// A download slower than this (bytes per second, after the first `timeout`) is cut.
    pub min_download_rate: u64,
    /// Files larger than this are refused (0: no cap).
    pub max_file_bytes: u64,
    /// A project listing more files / releases than this is refused whole (0: no cap).
    pub max_project_files: usize,
    pub max_project_releases: usize,
    /// What the mirror holds of upstream (`[filters]`; empty: everything).
    pub filters: crate::filter::Filters,
    /// Where the served tree lives (`[storage]`; default: `<directory>/web`).
    pub storage: storage::Backend,
}

/// One line: where, which key, what is wrong, what to do.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

const MIRROR_KEYS: &[&str] = &[
    "directory",
    "master",
    "workers",
    "metadata_workers",
    "change_feed",
    "allow_http",
    "timeout",
    "retries",
    "stale_retries",
    "retry_delay",
    "fsync",
    "max_metadata_bytes",
    "max_metadata_memory",
    "metadata_deadline",
    "max_deletions",
    "max_deletion_share",
    "max_feed_rows",
    "simple_format",
    "root_uri",
    "json",
    "simple_json",
    "proxy",
    "file_hosts",
    "internal_hosts",
    "download_mirror",
    "download_mirror_no_fallback",
    "metadata_rate",
    "max_connections_per_host",
    "min_download_rate",
    "max_file_bytes",
    "max_project_files",
    "max_project_releases",
];

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let fail = |message: String| ConfigError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!(
                "cannot read the configuration ({e}); pass an existing file with --config (see mirror.toml.example)"
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(fail)
    }

    /// Parse configuration text; relative paths are resolved against `base` (the config file's
    /// directory), so a cron job's working directory does not matter.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .map_or(String::new(), |l| format!("line {l}: "));
            format!(
                "{line}not valid TOML: {}; fix the syntax",
                e.message().trim()
            )
        })?;
        for key in table.keys() {
            if key != "mirror" && key != "filters" && key != "storage" {
                return Err(format!(
                    "unknown table or key `{key}`; the tables are [mirror], [filters] and [storage] (see mirror.toml.example)"
                ));
            }
        }
        let Some(Value::Table(mirror)) = table.get("mirror") else {
            return Err(
                "no [mirror] table; add one with at least `directory` and `master` (see mirror.toml.example)"
                    .into(),
            );
        };
        let known: BTreeSet<&str> = MIRROR_KEYS.iter().copied().collect();
        for key in mirror.keys() {
            if !known.contains(key.as_str()) {
                return Err(format!(
                    "unknown key `{key}` in [mirror]; remove it or use one of: {}",
                    MIRROR_KEYS.join(", ")
                ));
            }
        }
        let keys = Keys("mirror", mirror);

        let directory = keys.string("directory")?.ok_or(
            "[mirror] directory is missing; set it to the mirror's root directory, e.g. directory = \"/srv/pypi\"",
        )?;
        if directory.is_empty() {
            return Err(
                "[mirror] directory is empty; set it to the mirror's root directory".into(),
            );
        }
        let directory = base.join(directory);

        let allow_http = keys.boolean("allow_http")?.unwrap_or(false);
        let master = keys.string("master")?.ok_or(
            "[mirror] master is missing; set it to the upstream index URL you mirror (the https root of the package index, or of another mirror)",
        )?;
        let master = parse_master(&master, allow_http)?;
        let max_metadata_bytes = keys
            .integer("max_metadata_bytes", 1024, 1 << 40)?
            .unwrap_or(256 << 20) as u64;
        // Four bodies at the cap at once (one at the cap, the rest small, is the usual worst
        // case): at the defaults 1 GiB, far above what a sane upstream's answers take.
        let max_metadata_memory = match keys.integer("max_metadata_memory", 1024, 1 << 44)? {
            None => max_metadata_bytes * 4,
            Some(n) if (n as u64) < max_metadata_bytes => {
                return Err(format!(
                    "[mirror] max_metadata_memory = {n} is less than max_metadata_bytes = \
                     {max_metadata_bytes}; raise max_metadata_memory (one answer may take \
                     max_metadata_bytes) or lower max_metadata_bytes"
                ));
            }
            Some(n) => n as u64,
        };

        Ok(Config {
            directory,
            master,
            workers: keys.integer("workers", 1, 1024)?.unwrap_or(64) as usize,
            metadata_workers: keys.integer("metadata_workers", 1, 256)?.unwrap_or(32) as usize,
            change_feed: match keys.string("change_feed")?.as_deref() {
                None | Some("auto") => ChangeFeed::Auto,
                Some("xmlrpc") => ChangeFeed::XmlRpc,
                Some("simple") => ChangeFeed::Simple,
                Some(other) => {
                    return Err(format!(
                        "[mirror] change_feed = {other:?} is not one of \"auto\", \"xmlrpc\", \"simple\"; pick one"
                    ));
                }
            },
            timeout: keys.seconds("timeout")?.unwrap_or(Duration::from_secs(30)),
            retries: keys.integer("retries", 0, 100)?.unwrap_or(3) as u32,
            stale_retries: keys.integer("stale_retries", 0, 100)?.unwrap_or(3) as u32,
            retry_delay: keys
                .seconds("retry_delay")?
                .unwrap_or(Duration::from_secs(1)),
            fsync: keys.boolean("fsync")?.unwrap_or(true),
            max_metadata_bytes,
            max_metadata_memory,
            metadata_deadline: keys
                .seconds("metadata_deadline")?
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(600)),
            max_deletions: keys.integer("max_deletions", 0, i64::MAX)?.unwrap_or(1000) as usize,
            max_deletion_share: keys.number("max_deletion_share", 0.0, 1.0)?.unwrap_or(0.5),
            max_feed_rows: keys
                .integer("max_feed_rows", 0, i64::MAX)?
                .unwrap_or(1_000_000) as u64,
            simple_format: match keys.string("simple_format")?.as_deref() {
                None | Some("all") => SimpleFormat::All,
                Some("html") => SimpleFormat::Html,
                Some("json") => SimpleFormat::Json,
                Some(other) => {
                    return Err(format!(
                        "[mirror] simple_format = {other:?} is not one of \"all\", \"html\", \"json\"; pick one"
                    ));
                }
            },
            root_uri: keys
                .string("root_uri")?
                .map(|u| parse_root_uri(&u))
                .transpose()?,
            json: keys.boolean("json")?.unwrap_or(false),
            simple_json: keys.boolean("simple_json")?.unwrap_or(true),
            proxy: keys
                .string("proxy")?
                .map(|p| parse_http_url("proxy", &p))
                .transpose()?,
            file_hosts: keys.strings("file_hosts")?.unwrap_or_default(),
            internal_hosts: crate::upstream::address::InternalHosts::parse(
                &keys
                    .string_list("internal_hosts", "[\"files.corp.example\", \"10.0.0.0/8\"]")?
                    .unwrap_or_default(),
            )?,
            download_mirror: keys
                .string("download_mirror")?
                .map(|m| parse_http_url("download_mirror", &m))
                .transpose()?,
            download_mirror_no_fallback: keys
                .boolean("download_mirror_no_fallback")?
                .unwrap_or(false),
            metadata_rate: keys.number("metadata_rate", 0.0, 10_000.0)?.unwrap_or(0.0),
            max_connections_per_host: keys
                .integer("max_connections_per_host", 0, 4096)?
                .unwrap_or(50) as usize,
            min_download_rate: keys
                .integer("min_download_rate", 1, 1 << 40)?
                .unwrap_or(16 * 1024) as u64,
            max_file_bytes: keys.integer("max_file_bytes", 0, i64::MAX)?.unwrap_or(0) as u64,
            max_project_files: keys
                .integer("max_project_files", 0, i64::MAX)?
                .unwrap_or(200_000) as usize,
            max_project_releases: keys
                .integer("max_project_releases", 0, i64::MAX)?
                .unwrap_or(100_000) as usize,
            filters: filters::parse(table.get("filters"), base)?,
            storage: storage::parse(table.get("storage"))?,
        })
    }
}

fn parse_master(raw: &str, allow_http: bool) -> Result<Url, String> {
    let bad = |why: &str| format!("[mirror] master = {raw:?} {why}");
    let mut url = Url::parse(raw).map_err(|e| {
        bad(&format!(
            "is not a URL ({e}); write it as https://host[/path]"
        ))
    })?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad(
            "has a query, fragment or user name; give only scheme, host and path",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http || host_is_loopback(&url) => {}
        "http" => {
            return Err(bad(
                "uses plain http to a non-loopback host; use https, or set allow_http = true if you really mean it",
            ));
        }
        _ => return Err(bad("must be an https URL")),
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn parse_http_url(key: &str, raw: &str) -> Result<Url, String> {
    match Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err(format!(
            "[mirror] {key} = {raw:?} is not an http(s) URL; fix the value"
        )),
    }
}

fn parse_root_uri(raw: &str) -> Result<String, String> {
    match Url::parse(raw) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            Ok(raw.trim_end_matches('/').to_owned())
        }
        _ => Err(format!(
            "[mirror] root_uri = {raw:?} is not an http(s) URL; write the URL this mirror's web/ is served at, e.g. \"https://mirror.example.org\""
        )),
    }
}

pub fn host_is_loopback(url: &Url) -> bool {
    match url.host() {
        // A name that resolves to loopback addresses only (`/etc/hosts`, a local DNS): the
        // traffic never leaves the machine either.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || std::net::ToSocketAddrs::to_socket_addrs(&(d, 80)).is_ok_and(|addrs| {
                    let addrs: Vec<_> = addrs.collect();
                    !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
                })
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Config, String> {
        Config::parse(body, Path::new("/etc/pymirror"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse("[mirror]\ndirectory = \"data\"\nmaster = \"https://upstream.example\"\n")
            .unwrap();
        assert_eq!(c.directory, Path::new("/etc/pymirror/data"));
        assert_eq!(c.master.as_str(), "https://upstream.example/");
        assert_eq!(c.workers, 64);
        assert_eq!(c.max_connections_per_host, 50);
        assert_eq!(c.change_feed, ChangeFeed::Auto);
        assert!(c.fsync);
    }

    #[test]
    fn the_example_parses_and_documents_every_key() {
        let example = include_str!("../../mirror.toml.example");
        parse(example).unwrap();
        for key in MIRROR_KEYS.iter().chain(storage::KEYS) {
            assert!(
                example.contains(&format!("\n{key} = "))
                    || example.contains(&format!("\n# {key} = ")),
                "mirror.toml.example does not document {key}"
            );
        }
    }

    #[test]
    fn missing_master_says_what_to_set() {
        let e = parse("[mirror]\ndirectory = \"/srv\"\n").unwrap_err();
        assert!(e.contains("master is missing"), "{e}");
    }

    #[test]
    fn plain_http_only_for_loopback_or_when_allowed() {
        let e = parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"http://upstream.example\"\n")
            .unwrap_err();
        assert!(e.contains("allow_http"), "{e}");
        assert!(
            parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"http://127.0.0.1:8080\"\n").is_ok()
        );
        assert!(parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"http://[::1]:8080\"\n").is_ok());
        assert!(parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"http://upstream.example\"\nallow_http = true\n").is_ok());
        assert!(
            parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"ftp://upstream.example\"\n").is_err()
        );
    }

    #[test]
    fn internal_hosts_are_names_addresses_or_networks_and_default_to_none() {
        let base = "[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\n";
        let c = parse(base).unwrap();
        assert_eq!(
            c.internal_hosts,
            crate::upstream::address::InternalHosts::default()
        );
        let c = parse(&format!(
            "{base}internal_hosts = [\"Files.Corp.Example\", \"10.0.0.0/8\", \"fd00::/8\", \"192.168.1.5\"]\n"
        ))
        .unwrap();
        for (host, allowed) in [
            ("files.corp.example", true),
            ("10.200.0.1", true),
            ("[fd12::1]", true),
            ("192.168.1.5", true),
            ("192.168.1.6", false),
            ("other.corp.example", false),
        ] {
            let url = Url::parse(&format!("http://{host}/")).unwrap();
            assert_eq!(c.internal_hosts.allows_host(url.host()), allowed, "{host}");
        }
        let e = parse(&format!("{base}internal_hosts = [\"x/99\"]\n")).unwrap_err();
        assert!(
            e.starts_with(
                "[mirror] internal_hosts: \"x/99\" is not a host name, an IP address or a CIDR network; "
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "multi-line error: {e}");
        let e = parse(&format!("{base}internal_hosts = \"10.0.0.0/8\"\n")).unwrap_err();
        assert!(
            e.contains("internal_hosts") && e.contains("list of strings"),
            "{e}"
        );
    }

    #[test]
    fn the_metadata_memory_budget_holds_at_least_one_whole_answer() {
        let base = "[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\n";
        let cfg = parse(base).unwrap();
        assert_eq!(cfg.max_metadata_memory, 1 << 30);
        let cfg = parse(&format!("{base}max_metadata_bytes = 1048576\n")).unwrap();
        assert_eq!(cfg.max_metadata_memory, 4 << 20);
        let cfg = parse(&format!(
            "{base}max_metadata_bytes = 1048576\nmax_metadata_memory = 1048576\n"
        ))
        .unwrap();
        assert_eq!(cfg.max_metadata_memory, 1 << 20);
        let e = parse(&format!(
            "{base}max_metadata_bytes = 2097152\nmax_metadata_memory = 1048576\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with(
                "[mirror] max_metadata_memory = 1048576 is less than max_metadata_bytes = 2097152;"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "multi-line error: {e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e =
            parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\nwrokers = 3\n")
                .unwrap_err();
        assert!(e.contains("unknown key `wrokers`"), "{e}");
        let e = parse(
            "[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\nworkers = \"many\"\n",
        )
        .unwrap_err();
        assert!(e.contains("workers") && e.contains("whole number"), "{e}");
        let e =
            parse("[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\nworkers = 0\n")
                .unwrap_err();
        assert!(e.contains("workers"), "{e}");
        for bad in ["1.5", "-0.1", "\"half\""] {
            let e = parse(&format!(
                "[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\nmax_deletion_share = {bad}\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("max_deletion_share") && e.contains("from 0 to 1"),
                "{e}"
            );
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
        let ok = |v: &str| {
            parse(&format!(
                "[mirror]\ndirectory = \"/srv\"\nmaster = \"https://u.example\"\n{v}"
            ))
            .unwrap()
            .max_deletion_share
        };
        assert_eq!(ok(""), 0.5);
        assert_eq!(ok("max_deletion_share = 0.25\n"), 0.25);
        assert_eq!(ok("max_deletion_share = 1\n"), 1.0);
        let e = parse("[mirror\n").unwrap_err();
        assert!(e.starts_with("line 1: not valid TOML"), "{e}");
        assert!(!e.contains('\n'), "multi-line error: {e}");
    }
}
