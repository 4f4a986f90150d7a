//! Which addresses a webhook may be sent to: public unicast only.
//!
//! Every form that carries an IPv4 address inside an IPv6 one (IPv4-mapped,
//! IPv4-compatible, NAT64, 6to4) is judged by the IPv4 address it carries.
//! IPv4 spellings such as `2130706433`, `0177.0.0.1` or `0x7f.1` never reach
//! this code as text: URL parsing turns them into the address they denote
//! (the WHATWG host parser, as browsers do), and that address is checked.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public unicast address, or `None` when it is.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "a \"this network\" address (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "a private address (10.0.0.0/8)"),
        ([100, 64, 0, 0], 10, "a carrier-grade NAT address (100.64.0.0/10)"),
        ([127, 0, 0, 0], 8, "a loopback address (127.0.0.0/8)"),
        ([169, 254, 169, 254], 32, "the cloud metadata address (169.254.169.254)"),
        ([169, 254, 0, 0], 16, "a link-local address (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "a private address (172.16.0.0/12)"),
        ([192, 0, 0, 0], 24, "an IETF protocol address (192.0.0.0/24)"),
        ([192, 0, 2, 0], 24, "a documentation address (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "a 6to4 relay address (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "a private address (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "a benchmarking address (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "a documentation address (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "a documentation address (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "a multicast address (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "a reserved address (240.0.0.0/4)"),
    ];
    RANGES.iter().find(|(net, prefix, _)| in_v4(ip, *net, *prefix)).map(|(_, _, why)| *why)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// The IPv4 address carried in the low 32 bits.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address (::1)");
    }
    // Forms carrying an IPv4 address: judged by that address.
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)      // IPv4-mapped ::ffff:a.b.c.d
        || in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)       // IPv4-compatible ::a.b.c.d
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    // NAT64 64:ff9b::a.b.c.d
    {
        return v4_reason(low_v4(ip));
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4: 2002:AABB:CCDD::/48 carries a.b.c.d in bits 16..48.
        let v4 = Ipv4Addr::from(((u128::from(ip) >> 80) & 0xffff_ffff) as u32);
        return v4_reason(v4);
    }
    const RANGES: &[([u16; 8], u32, &str)] = &[
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "a local-use NAT64 address (64:ff9b:1::/48)"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "a discard-only address (100::/64)"),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "a Teredo address (2001::/32)"),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "an IETF protocol address (2001::/23)"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "a documentation address (2001:db8::/32)"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "a unique local address (fc00::/7)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "a link-local address (fe80::/10)"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "a site-local address (fec0::/10)"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "a multicast address (ff00::/8)"),
    ];
    RANGES.iter().find(|(net, prefix, _)| in_v6(ip, *net, *prefix)).map(|(_, _, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        non_public_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn ipv4_non_public_ranges_are_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        assert_eq!(
            non_public_reason("169.254.169.254".parse().unwrap()),
            Some("the cloud metadata address (169.254.169.254)")
        );
    }

    #[test]
    fn public_ipv4_is_allowed_including_range_neighbours() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn ipv6_non_public_ranges_are_refused() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fdff:ffff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "64:ff9b:1::1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_by_the_ipv4_address() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn public_ipv6_is_allowed() {
        for ip in ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "2400:cb00::1"] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    /// Decimal, octal, hex and shortened IPv4 spellings in a URL become the
    /// address they denote before anything is checked.
    #[test]
    fn alternative_ipv4_spellings_in_urls_denote_the_address_checked() {
        for (url, ip) in [
            ("http://2130706433/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://0x7f.0.0.1/", "127.0.0.1"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://0251.0376.0251.0376/", "169.254.169.254"),
            ("http://0xa9fea9fe/", "169.254.169.254"),
            ("http://2852039166/", "169.254.169.254"),
            ("http://012.1/", "10.0.0.1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ] {
            let parsed = url::Url::parse(url).unwrap();
            let host: IpAddr = match parsed.host().unwrap() {
                url::Host::Ipv4(v4) => v4.into(),
                url::Host::Ipv6(v6) => v6.into(),
                url::Host::Domain(d) => panic!("{url} parsed as the domain {d}"),
            };
            assert_eq!(host, ip.parse::<IpAddr>().unwrap(), "{url}");
            assert!(non_public_reason(host).is_some(), "{url} must be refused");
        }
    }
}
