//! Which hosts pymirror may talk to. Upstream is untrusted: a crafted file URL must not make
//! the mirror reach into the operator's own network (loopback, private, link-local and other
//! non-public ranges) unless the master itself lives there. Checked twice: on IP literals in
//! URLs before any request, and on every DNS answer, so a public-looking name that resolves
//! to a private address is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// The system resolver, keeping only public addresses.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() && !all.is_empty() {
                return Err(format!("{host} resolves only to internal addresses; refused").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_only_inside() {
        let name: Name = "localhost".parse().unwrap();
        let err = PublicOnly
            .resolve(name)
            .await
            .err()
            .expect("localhost refused");
        assert!(err.to_string().contains("internal addresses"), "{err}");
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
