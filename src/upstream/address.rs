//! Which hosts pymirror may talk to. Upstream is untrusted: a crafted file URL must not make
//! the mirror reach into the operator's own network (loopback, private, link-local and other
//! non-public ranges) unless the master itself lives there. Checked twice: on IP literals in
//! URLs before any request, and on every DNS answer, so a public-looking name that resolves
//! to a private address is refused too.
//!
//! The hosts the operator configured (`master`, `download_mirror`, `file_hosts`, `proxy`) are
//! trusted: reached whatever they resolve to. A master that resolves to an internal address
//! (split-horizon DNS, a transparent proxy, a mirror inside the network) is an internal master,
//! exactly like `127.0.0.1`: see [`Trust::of`]. `[mirror] internal_hosts` names further
//! internal hosts or networks that upstream may send us to.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Addresses on the public internet; everything else is "internal". An IPv6 address that
/// embeds an IPv4 one (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) is judged by the IPv4 address it reaches.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 address stands for, when it embeds one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d).
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        // NAT64, well-known prefix (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48.
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside some sites)
        || first == 0x64 && second == 0xff9b // NAT64: well-known prefix beyond ::/96, local-use
        || first == 0x0100 && ip.segments()[1..4] == [0, 0, 0] // discard-only
        || first == 0x2001 && second == 0 // Teredo: an obfuscated IPv4 address inside
        || first == 0x2001 && second == 0x0db8 // documentation
        || first == 0x3fff && second < 0x1000) // documentation (RFC 9637)
}

/// Whether `url`'s host is an internal address (IP literal or `localhost`).
pub fn is_internal_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost")
        }
        None => true,
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`); a bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `addr/prefix` or a bare address; host bits after the prefix are ignored.
    pub fn parse(raw: &str) -> Option<Network> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr)
            .parse()
            .ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: no sign, no spaces.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|&n| n <= max)?
            }
            Some(_) => return None,
        };
        Some(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            match prefix {
                0 => 0,
                p => bits >> (width - p),
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// A DNS host name: dot-separated labels of letters, digits, `-` (not first or last) and `_`,
/// the last label not all digits (that would be read as an IPv4 address).
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    !name.is_empty()
        && name.len() <= 253
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Internal hosts and networks pymirror may reach although they are not public: those the
/// operator listed in `[mirror] internal_hosts`, plus the hosts named elsewhere in the
/// configuration (see [`Trust::of`]). Names are lowercase, without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InternalHosts {
    names: Vec<String>,
    networks: Vec<Network>,
}

impl InternalHosts {
    /// The `[mirror] internal_hosts` list: host names, IP addresses or CIDR networks.
    pub fn parse(entries: &[String]) -> Result<InternalHosts, String> {
        let mut hosts = InternalHosts::default();
        for raw in entries {
            if !hosts.add(raw) {
                return Err(format!(
                    "[mirror] internal_hosts: {raw:?} is not a host name, an IP address or a CIDR network; \
                     write e.g. \"files.corp.example\", \"10.1.2.3\", \"10.0.0.0/8\" or \"fd00::/8\""
                ));
            }
        }
        Ok(hosts)
    }

    /// Add one entry; false when it is neither a host name nor an address or network.
    fn add(&mut self, raw: &str) -> bool {
        if let Some(net) = Network::parse(raw) {
            self.networks.push(net);
        } else if is_host_name(raw) {
            let name = raw.trim_end_matches('.').to_ascii_lowercase();
            self.names.push(name);
        } else {
            return false;
        }
        true
    }

    /// Whether `name` (a host name, any case, or an IP literal) is listed by name or address.
    pub fn has_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || name.parse().is_ok_and(|ip| self.allows_ip(ip))
    }

    /// Whether `ip` is in a listed network. An IPv6 address that embeds an IPv4 one is
    /// allowed by its IPv4 network too, as [`is_public`] judges it by that address.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.networks
            .iter()
            .any(|n| n.contains(ip) || v4.is_some_and(|v4| n.contains(v4)))
    }

    /// Whether a URL's host is allowed although internal.
    pub fn allows_host(&self, host: Option<url::Host<&str>>) -> bool {
        match host {
            Some(url::Host::Ipv4(ip)) => self.allows_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.allows_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => self.has_name(d),
            None => false,
        }
    }
}

/// What the configuration trusts. Built by [`Trust::of`], the one place both the HTTP client
/// (`Upstream::new`) and the file URL policy (`UrlPolicy::new`) take it from.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The master is internal (an internal IP literal, `localhost`, or a name that resolves to
    /// an internal address): upstream may send us anywhere, as any host inside the network
    /// may; no filtering resolver.
    pub master_internal: bool,
    /// `internal_hosts`, plus the names of `master`, `download_mirror` and the proxy
    /// (configured, or from the environment), and the `file_hosts` (names or addresses): these
    /// names are resolved unfiltered, these addresses allowed in file URLs.
    pub hosts: InternalHosts,
}

impl Trust {
    pub fn of(cfg: &crate::config::Config) -> Trust {
        let mut hosts = cfg.internal_hosts.clone();
        // Their names only: an IP literal is never resolved, and these hosts are not where
        // file URLs point (an internal master's IP literal makes `master_internal` anyway).
        let mut named = |url: Option<&Url>| {
            if let Some(url::Host::Domain(name)) = url.and_then(Url::host) {
                hosts.add(name);
            }
        };
        named(Some(&cfg.master));
        named(cfg.download_mirror.as_ref());
        named(cfg.proxy.as_ref());
        let from_env: Vec<Url> = ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"]
            .iter()
            .flat_map(|v| [v.to_string(), v.to_ascii_lowercase()])
            .filter_map(|v| std::env::var(v).ok())
            .filter_map(|v| match v.contains("://") {
                true => Url::parse(&v).ok(),
                false => Url::parse(&format!("http://{v}")).ok(),
            })
            .collect();
        from_env.iter().for_each(|u| named(Some(u)));
        for host in &cfg.file_hosts {
            hosts.add(host);
        }
        Trust {
            master_internal: master_is_internal(&cfg.master),
            hosts,
        }
    }

    /// The resolver for a client: `None` (the system resolver, unfiltered) for an internal
    /// master; otherwise one that lets the trusted names through and keeps the rest public.
    pub fn resolver(&self) -> Option<Guarded> {
        (!self.master_internal).then(|| Guarded {
            allowed: self.hosts.clone(),
        })
    }
}

/// Whether the master is internal: its host is an internal IP literal or `localhost`, or any
/// address its name resolves to is internal (pymirror may then connect to it there). Resolved
/// once per process and remembered, so every caller gets the same answer; a name that does not
/// resolve (yet) is not internal, and the protection stays.
pub fn master_is_internal(master: &Url) -> bool {
    if is_internal_host(master) {
        return true;
    }
    let Some(url::Host::Domain(name)) = master.host() else {
        return false;
    };
    static SEEN: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let key = name.to_ascii_lowercase();
    if let Some(&internal) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return internal;
    }
    let port = master.port_or_known_default().unwrap_or(443);
    let internal = blocking(|| {
        (key.as_str(), port)
            .to_socket_addrs()
            .is_ok_and(|mut addrs| addrs.any(|a| !is_public(a.ip())))
    });
    *seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(internal)
}

/// Run a blocking call (a DNS lookup) without stalling other tasks of a multi-thread runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The system resolver, keeping only public addresses, addresses in `internal_hosts`
/// networks, and every address of a trusted name.
#[derive(Debug, Clone)]
pub struct Guarded {
    allowed: InternalHosts,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let trusted = self.allowed.has_name(&host);
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if trusted {
                return Ok(Box::new(all.into_iter()) as Addrs);
            }
            let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = all
                .into_iter()
                .partition(|a| is_public(a.ip()) || allowed.allows_ip(a.ip()));
            if kept.is_empty() && !refused.is_empty() {
                let list: Vec<String> =
                    refused.iter().take(4).map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves only to internal addresses ({}); refused: add it to [mirror] internal_hosts if it is yours",
                    list.join(", ")
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> InternalHosts {
        InternalHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn guarded(entries: &[&str]) -> Guarded {
        Guarded {
            allowed: hosts(entries),
        }
    }

    async fn resolve(resolver: &Guarded, name: &str) -> Result<Vec<IpAddr>, String> {
        match resolver.resolve(name.parse().unwrap()).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_only_inside_and_names_the_option() {
        let err = resolve(&guarded(&[]), "localhost").await.unwrap_err();
        assert!(
            err.contains("localhost resolves only to internal addresses (127.0.0.1")
                && err.ends_with("refused: add it to [mirror] internal_hosts if it is yours"),
            "{err}"
        );
        // Another name is not trusted by a listed one.
        let err = resolve(&guarded(&["vm", "files.corp.example"]), "localhost")
            .await
            .unwrap_err();
        assert!(err.contains("internal_hosts"), "{err}");
    }

    #[tokio::test]
    async fn the_resolver_lets_a_trusted_name_or_network_through() {
        // /etc/hosts maps both to 127.0.0.1 on the test machine.
        for name in ["localhost", "vm"] {
            let got = resolve(&guarded(&[name]), name).await.unwrap();
            assert!(
                got.contains(&"127.0.0.1".parse().unwrap()),
                "{name}: {got:?}"
            );
            let upper = name.to_ascii_uppercase();
            let got = resolve(&guarded(&[name]), &upper).await.unwrap();
            assert!(!got.is_empty(), "{upper}");
        }
        let got = resolve(&guarded(&["127.0.0.0/8"]), "localhost")
            .await
            .unwrap();
        assert!(got.contains(&"127.0.0.1".parse().unwrap()), "{got:?}");
        assert!(
            got.iter().all(|ip| ip.is_ipv4()),
            "::1 is not in 127/8: {got:?}"
        );
        let err = resolve(&guarded(&["10.0.0.0/8"]), "localhost")
            .await
            .unwrap_err();
        assert!(err.contains("internal_hosts"), "{err}");
    }

    #[test]
    fn networks_parse_and_match_v4_and_v6() {
        let net = |s: &str| Network::parse(s).unwrap_or_else(|| panic!("{s} refused"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(net("192.168.4.0/22").contains(ip("192.168.7.255")));
        assert!(!net("192.168.4.0/22").contains(ip("192.168.8.0")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("fd00::/8").contains(ip("fd12:3456::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        assert!(net("::1").contains(ip("::1")));
        assert!(net("[fd00::1]").contains(ip("fd00::1")));
        assert!(net("::/0").contains(ip("2606:4700::1111")));
        assert!(!net("::/0").contains(ip("127.0.0.1")));
        assert!(net("2001:db8::/127").contains(ip("2001:db8::1")));
        assert!(!net("2001:db8::/127").contains(ip("2001:db8::2")));
        for bad in [
            "x/99",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0/8",
            "/8",
            "10.0.0.0/8/8",
            "files.example",
        ] {
            assert_eq!(Network::parse(bad), None, "{bad}");
        }

        // An address that embeds an IPv4 one is allowed by that address's network.
        let listed = hosts(&["10.0.0.0/8", "fd00::/8"]);
        for allowed in ["10.9.8.7", "::ffff:10.0.0.1", "64:ff9b::a00:1", "fd00::5"] {
            assert!(listed.allows_ip(ip(allowed)), "{allowed}");
        }
        for refused in ["172.16.0.1", "::ffff:172.16.0.1", "fe80::1", "127.0.0.1"] {
            assert!(!listed.allows_ip(ip(refused)), "{refused}");
        }
    }

    #[test]
    fn internal_hosts_entries_are_names_addresses_or_networks() {
        let listed = hosts(&["Files.Corp.Example.", "10.0.0.0/8", "vm", "fd00::1"]);
        for url in [
            "http://files.corp.example/x",
            "http://FILES.corp.example./x",
            "http://vm:8080/x",
            "http://10.1.2.3/x",
            "http://[fd00::1]/x",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(listed.allows_host(url.host()), "{url}");
        }
        for url in [
            "http://localhost/x",
            "http://corp.example/x",
            "http://other.files.corp.example/x",
            "http://127.0.0.1/x",
            "http://[fd00::2]/x",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(!listed.allows_host(url.host()), "{url}");
        }
        for bad in [
            "x/99",
            "",
            "files corp",
            "http://files.example",
            "a..b",
            "10.0.0.0/33",
            "1.2.3",
            "files.example:8080",
            "-",
        ] {
            let err = InternalHosts::parse(&[bad.to_string()]).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "[mirror] internal_hosts: {bad:?} is not a host name, an IP address or a CIDR network; "
                )),
                "{err}"
            );
        }
        assert_eq!(InternalHosts::parse(&[]).unwrap(), InternalHosts::default());
    }

    #[test]
    fn a_master_whose_name_resolves_inside_is_internal() {
        for master in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://vm:8080",
            "https://VM/simple",
        ] {
            assert!(master_is_internal(&Url::parse(master).unwrap()), "{master}");
        }
        for master in ["https://93.184.216.34", "https://upstream.invalid"] {
            assert!(
                !master_is_internal(&Url::parse(master).unwrap()),
                "{master}"
            );
        }
    }

    #[test]
    fn classifies_internal_ranges() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::",
            // IPv4-compatible 127.0.0.1
            "::7f00:1",
            "::127.0.0.1",
            // NAT64 of 169.254.169.254, and its local-use prefix
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            // 6to4 of 169.254.169.254 and of 10.0.0.1
            "2002:a9fe:a9fe::1",
            "2002:a00:1::1",
            // site-local
            "fec0::1",
            "feff::1",
            // IETF protocol assignments
            "192.0.0.8",
            "192.0.0.170",
            // Teredo, discard-only, documentation
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "3fff::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "192.0.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(is_internal_host(
            &Url::parse("http://localhost:8080/x").unwrap()
        ));
        assert!(is_internal_host(&Url::parse("http://[::1]/x").unwrap()));
        for url in [
            "http://[::7f00:1]/x",
            "http://[64:ff9b::a9fe:a9fe]/x",
            "http://[2002:a9fe:a9fe::1]/x",
            "http://[fec0::1]/x",
            "http://192.0.0.8/x",
        ] {
            assert!(is_internal_host(&Url::parse(url).unwrap()), "{url}");
        }
        assert!(!is_internal_host(
            &Url::parse("https://files.example/x").unwrap()
        ));
    }
}
