//! The egress policy: where a connection that a caller aimed (a webhook URL,
//! an import source, later a JWKS URL) may go. One check serves both moments
//! it is needed: when the target is saved (`check_url`, a 400 when refused)
//! and when the connection is made (`resolve`, whose checked addresses are
//! the only ones connected to, so a DNS answer that changed in between is
//! judged again and no second lookup can answer differently).
//!
//! The deployed shape always denies private targets; capydb-local allows them
//! unless started with `--deny-private-egress`, so a developer can point a
//! webhook or an import at their own machine.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use async_trait::async_trait;

use crate::guard::non_public_reason;
use crate::pg;

/// Whether outbound connections may reach loopback, private, link-local and
/// metadata addresses (and the names that always mean them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow_private: bool,
}

/// Why no connection is made to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressError {
    /// The policy refuses the target (or the URL cannot say where it goes):
    /// nothing was or will be sent. The message says why.
    Refused(String),
    /// The name did not resolve to any address.
    Unresolved(String),
}

impl std::fmt::Display for EgressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressError::Refused(m) | EgressError::Unresolved(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EgressError {}

const PUBLIC_ONLY: &str = "CapyDB only connects to public addresses";

impl EgressPolicy {
    /// The deployed shape's policy.
    pub const DENY_PRIVATE: EgressPolicy = EgressPolicy { allow_private: false };
    pub const ALLOW_PRIVATE: EgressPolicy = EgressPolicy { allow_private: true };

    /// Checks a host without any lookup. A name that always means this
    /// machine or the metadata service is refused by name; an address, in
    /// any spelling the connecting client would read as one, is answered
    /// (and refused when the guard refuses it). `None`: a name to resolve.
    pub fn check_host(&self, host: &str) -> Result<Option<IpAddr>, EgressError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip = bare.parse::<IpAddr>().ok().or_else(|| parse_inet_aton(bare).map(IpAddr::V4));
        if self.allow_private {
            return Ok(ip);
        }
        match ip {
            Some(ip) => match non_public_reason(ip) {
                Some(why) if ip.to_string() == bare => {
                    Err(EgressError::Refused(format!("{ip} is {why}; {PUBLIC_ONLY}")))
                }
                Some(why) => Err(EgressError::Refused(format!("{host} is {ip}, {why}; {PUBLIC_ONLY}"))),
                None => Ok(Some(ip)),
            },
            None => match local_name_reason(bare) {
                Some(why) => Err(EgressError::Refused(format!("{host} is {why}; {PUBLIC_ONLY}"))),
                None => Ok(None),
            },
        }
    }

    /// The addresses to connect to for `host`: resolved once, and every one
    /// checked. A name with any refused address is refused as a whole rather
    /// than trusted for its public half.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        if let Some(ip) = self.check_host(host)? {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| EgressError::Unresolved(format!("cannot resolve {host}: {e}")))?
            .collect();
        // getaddrinfo answers one entry per socket type on some systems.
        let mut seen = Vec::new();
        addrs.retain(|a| {
            !seen.contains(a) && {
                seen.push(*a);
                true
            }
        });
        if addrs.is_empty() {
            return Err(EgressError::Unresolved(format!("{host} resolves to no address")));
        }
        if !self.allow_private {
            if let Some((ip, why)) = addrs.iter().find_map(|a| non_public_reason(a.ip()).map(|w| (a.ip(), w))) {
                // Which address and which range stay in the log: naming them
                // would let a caller map internal names through this error.
                tracing::info!(host, address = %ip, reason = why, "refused an outbound target");
                return Err(EgressError::Refused(format!("{host} resolves to a non-public address; {PUBLIC_ONLY}")));
            }
        }
        Ok(addrs)
    }

    /// Checks a target before it is saved: the URL must say unambiguously
    /// where its client connects (see `url_target`), and when private
    /// targets are denied its host must not be, or resolve to, one. A name
    /// that does not resolve (yet) is accepted: the connection checks again.
    pub async fn check_url(&self, url: &url::Url) -> Result<(), EgressError> {
        let (host, port) = url_target(url)?;
        if self.allow_private {
            return Ok(());
        }
        match self.resolve(&host, port).await {
            Err(EgressError::Refused(why)) => Err(EgressError::Refused(why)),
            Ok(_) | Err(EgressError::Unresolved(_)) => Ok(()),
        }
    }
}

/// The port of the domain layer: it asks whether it may connect somewhere
/// without knowing how that is decided.
#[async_trait]
impl capydb_domain::ports::Egress for EgressPolicy {
    async fn check_url(&self, url: &url::Url) -> Result<(), String> {
        EgressPolicy::check_url(self, url).await.map_err(|e| e.to_string())
    }
}

/// Host and port a URL makes its client connect to: the HTTP client's for
/// `http`/`https`, libpq's for `postgres`/`postgresql` (see [`pg::target`]).
pub fn url_target(url: &url::Url) -> Result<(String, u16), EgressError> {
    match url.scheme() {
        "http" | "https" => {
            let host = match url.host() {
                Some(url::Host::Domain(d)) => d.to_string(),
                Some(url::Host::Ipv4(ip)) => ip.to_string(),
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                None => return Err(EgressError::Refused("the URL names no host".into())),
            };
            Ok((host, url.port_or_known_default().unwrap_or(80)))
        }
        "postgres" | "postgresql" => pg::target(url).map(|t| (t.host, t.port)).map_err(EgressError::Refused),
        other => Err(EgressError::Refused(format!("CapyDB does not connect to {other}:// URLs"))),
    }
}

/// Names that mean this machine or the cloud metadata service wherever they
/// are resolved, refused before any lookup: `localhost` and every name under
/// it (RFC 6761), and the metadata service's own name. A trailing dot (the
/// absolute form) and letter case change nothing.
fn local_name_reason(host: &str) -> Option<&'static str> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        Some("a name of this machine (localhost)")
    } else if name == "metadata.google.internal" {
        Some("the cloud metadata service's name")
    } else {
        None
    }
}

/// An IPv4 address in any spelling `inet_aton` accepts, which is what
/// getaddrinfo, and so libpq, reads a host as before asking DNS: one to four
/// parts, each decimal, octal (leading `0`) or hex (`0x`), the last part
/// filling the bytes left (`127.1`, `0x7f.1`, `2130706433`). A trailing dot
/// is accepted too, as URL parsers do: refusing more is the safe side.
fn parse_inet_aton(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in parts {
        let (digits, radix) = match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
            None => (part, 10),
        };
        // from_str_radix takes a sign, which inet_aton does not.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        numbers.push(u32::from_str_radix(digits, radix).ok()?);
    }
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 255) {
        return None;
    }
    let free_bits = 32 - 8 * leading.len() as u32;
    if free_bits < 32 && *last >> free_bits != 0 {
        return None;
    }
    let high = leading.iter().enumerate().fold(0u32, |acc, (i, n)| acc | n << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(high | last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: EgressPolicy = EgressPolicy::DENY_PRIVATE;

    #[test]
    fn inet_aton_spellings_denote_the_address_libpq_would_use() {
        for (spelling, ip) in [
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0X7F.0.0.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0.0.0.0", "0.0.0.0"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("012.1", "10.0.0.1"),
            ("10.0.0.1.", "10.0.0.1"),
            ("8.8.8.8", "8.8.8.8"),
        ] {
            assert_eq!(parse_inet_aton(spelling), Some(ip.parse().unwrap()), "{spelling}");
        }
        for name in ["example.com", "1.2.3.4.5", "256.1.1.1", "1.2.65536", "+1.2.3.4", "0x", "", "09.1.1.1", "1..2"] {
            assert_eq!(parse_inet_aton(name), None, "{name} is not an address");
        }
    }

    #[test]
    fn local_and_metadata_names_are_refused_before_any_lookup() {
        for name in [
            "localhost",
            "localhost.",
            "LocalHost",
            "foo.localhost",
            "a.b.LOCALHOST.",
            "metadata.google.internal",
            "metadata.google.internal.",
            "Metadata.Google.Internal",
        ] {
            match DENY.check_host(name) {
                Err(EgressError::Refused(why)) => assert!(why.contains("public addresses"), "{name}: {why}"),
                other => panic!("{name} must be refused by name, got {other:?}"),
            }
        }
        for name in ["localhost.example.com", "notlocalhost", "metadata.google.internal.example.com", "example.com"] {
            assert_eq!(DENY.check_host(name), Ok(None), "{name} is a name to resolve");
        }
    }

    #[test]
    fn addresses_in_any_spelling_are_checked_without_a_lookup() {
        for host in [
            "127.0.0.1",
            "::1",
            "[::1]",
            "2130706433",
            "0x7f.1",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "10.0.0.1",
            "fe80::1",
            "192.168.1.1",
            "100.64.0.1",
        ] {
            assert!(matches!(DENY.check_host(host), Err(EgressError::Refused(_))), "{host} must be refused");
        }
        assert_eq!(DENY.check_host("8.8.8.8"), Ok(Some("8.8.8.8".parse().unwrap())));
        assert_eq!(DENY.check_host("2606:4700:4700::1111"), Ok(Some("2606:4700:4700::1111".parse().unwrap())));
    }

    #[test]
    fn allowing_private_targets_refuses_nothing() {
        let allow = EgressPolicy::ALLOW_PRIVATE;
        assert_eq!(allow.check_host("localhost"), Ok(None));
        assert_eq!(allow.check_host("2130706433"), Ok(Some("127.0.0.1".parse().unwrap())));
    }

    /// What the probe found accepted: every one of these import URLs is
    /// refused by the policy that denies private targets, and none needs a
    /// lookup or a connection to be refused (`check_host` makes neither).
    #[test]
    fn private_import_urls_are_refused_without_connecting() {
        for host in [
            "127.0.0.1",
            "[::1]",
            "localhost",
            "2130706433",
            "[::ffff:127.0.0.1]",
            "0x7f.1",
            "foo.localhost",
            "metadata.google.internal",
            "169.254.169.254",
            "10.0.0.1",
            "[fe80::1]",
        ] {
            let url = url::Url::parse(&format!("postgres://u:p@{host}:5432/x")).unwrap();
            let (target, port) = url_target(&url).unwrap();
            assert_eq!(port, 5432);
            match DENY.check_host(&target) {
                Err(EgressError::Refused(why)) => assert!(why.contains("public addresses"), "{host}: {why}"),
                other => panic!("{host}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn check_url_refuses_private_literals_and_local_names() {
        for url in ["postgres://u:p@127.0.0.1:1/x", "postgres://u:p@localhost/x", "http://0x7f.1/", "https://[::1]/"] {
            let url = url::Url::parse(url).unwrap();
            assert!(matches!(DENY.check_url(&url).await, Err(EgressError::Refused(_))), "{url}");
            assert_eq!(EgressPolicy::ALLOW_PRIVATE.check_url(&url).await, Ok(()), "{url}");
        }
        // Structure is checked whatever the policy: a URL that does not say
        // where it connects is never accepted.
        let listed = url::Url::parse("postgres://u:p@a,b/x").unwrap();
        assert!(EgressPolicy::ALLOW_PRIVATE.check_url(&listed).await.is_err());
    }
}
