//! Where a `postgres://` URL makes libpq connect, read the way libpq reads
//! it, and refused whenever that is not one plain host and port.
//!
//! libpq takes more from a URL than the WHATWG parser shows: a host part may
//! list several hosts (`a,b`), an empty host or one starting with `/` is a
//! Unix socket on the connecting machine, the host is percent-decoded, and
//! query parameters such as `host`, `hostaddr`, `port` or `service` replace
//! or add targets. The URL parser treats the host of a non-special scheme as
//! opaque text (no IPv4 parsing, no lowercasing), so it is decoded and judged
//! here, and the address spellings are left to [`crate::EgressPolicy`].
use url::{Host, Url};

/// Query parameters an import URL may carry: none of them changes where
/// libpq connects. Any other (`host`, `hostaddr`, `port`, `service`,
/// `options`, ...) is refused rather than ignored.
pub const ALLOWED_PARAMS: [&str; 4] = ["sslmode", "channel_binding", "connect_timeout", "application_name"];

/// The one host and port a `postgres://` URL connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Decoded; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

/// The host and port of a `postgres://` or `postgresql://` URL, or why the
/// URL cannot be trusted to mean only them. Messages quote neither the
/// password nor the host part as given (it may be a mistyped password).
pub fn target(url: &Url) -> Result<Target, String> {
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err("the URL must be postgres://".into());
    }
    let host = match url.host() {
        Some(Host::Ipv6(ip)) => ip.to_string(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Domain(raw)) => {
            let host = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| "the URL's host is not UTF-8".to_string())?
                .into_owned();
            if host.is_empty() || host.starts_with('/') {
                return Err("the URL must name a host (an empty host or a path is a Unix socket)".into());
            }
            if host.contains(',') {
                return Err("the URL must name a single host".into());
            }
            // Host names only: anything else (a `:` smuggled in encoded, a
            // space, a `=`) is not something libpq would look up as a name.
            let plain = !host.starts_with(['.', '-'])
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !plain {
                return Err("the URL's host must be a host name or an IP address".into());
            }
            host
        }
        None => return Err("the URL must name a host (an empty host is a Unix socket)".into()),
    };
    let port = url.port().unwrap_or(5432);
    if port == 0 {
        return Err("the URL's port must be 1-65535".into());
    }
    if let Some((key, _)) = url.query_pairs().find(|(key, _)| !ALLOWED_PARAMS.contains(&key.as_ref())) {
        return Err(format!("the URL's parameter {key:?} is not accepted (only {} are)", ALLOWED_PARAMS.join(", ")));
    }
    Ok(Target { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, String> {
        Url::parse(url).map_err(|e| e.to_string()).and_then(|u| target(&u))
    }

    #[test]
    fn one_host_and_port_as_libpq_reads_them() {
        assert_eq!(parse("postgres://u:p@db.example.com/x"), Ok(Target { host: "db.example.com".into(), port: 5432 }));
        assert_eq!(parse("postgresql://u:p@[::1]:6543/x"), Ok(Target { host: "::1".into(), port: 6543 }));
        // The URL parser leaves a postgres:// host opaque: decoded here, as libpq does.
        assert_eq!(parse("postgres://u:p@%6c%6Fcalhost/x"), Ok(Target { host: "localhost".into(), port: 5432 }));
        assert_eq!(parse("postgres://u:p@2130706433/x").unwrap().host, "2130706433");
        assert_eq!(parse("postgres://u:p@LocalHost/x").unwrap().host, "LocalHost");
        let params = "postgres://u:p@h/x?sslmode=require&channel_binding=require&connect_timeout=5&application_name=a";
        assert_eq!(parse(params), Ok(Target { host: "h".into(), port: 5432 }));
    }

    #[test]
    fn urls_that_could_connect_elsewhere_are_refused() {
        for url in [
            "postgres://u:p@a,b/x",
            "postgres://u:p@a%2Cb/x",
            "postgres://u:p@/x",
            "postgres://u:p@%2Fvar%2Frun%2Fpostgresql/x",
            "postgres://u:p@h%3A1/x",
            "postgres://u:p@h:0/x",
            "postgres://u:p@h/x?host=/tmp",
            "postgres://u:p@h/x?hostaddr=127.0.0.1",
            "postgres://u:p@h/x?port=1",
            "postgres://u:p@h/x?service=internal",
            "postgres://u:p@h/x?sslmode=require&options=-c%20x",
            "mysql://u:p@h/x",
        ] {
            assert!(parse(url).is_err(), "{url} must be refused");
        }
    }
}
