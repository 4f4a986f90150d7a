//! Where the JWKS comes from: [`JwksSource`], and its HTTP implementation.
use std::time::Duration;

use async_trait::async_trait;
use capydb_egress::{url_target, EgressPolicy, GuardedGet};
use jsonwebtoken::jwk::{Jwk, JwkSet};

/// How long one JWKS fetch may take, connection included.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS body read (Clerk's is well under 2 KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches the current key set. The verifier decides when (see
/// [`ClerkVerifier`](crate::ClerkVerifier)); an error is a message for the
/// token's holder and the log.
#[async_trait]
pub trait JwksSource: Send + Sync {
    async fn fetch(&self) -> Result<JwkSet, String>;
}

/// GETs the JWKS over HTTPS (or HTTP) with `capydb_egress::GuardedGet`:
/// rustls on aws-lc-rs with the webpki roots, no proxy from the
/// environment, no redirects, names resolved through the egress policy so
/// only addresses it checked are connected to; and a deadline here
/// ([`JWKS_TIMEOUT`]). It runs on the hyper the AWS SDK links, not reqwest,
/// so the API functions stay within their size budget.
pub struct HttpJwksSource {
    client: GuardedGet,
    url: url::Url,
    timeout: Duration,
}

impl HttpJwksSource {
    pub fn new(url: &str, policy: EgressPolicy) -> Result<Self, String> {
        let url = url::Url::parse(url).map_err(|e| format!("the JWKS URL {url} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("the JWKS URL must be https (or http), not {}", url.scheme()));
        }
        url_target(&url).map_err(|e| format!("the JWKS URL cannot be used: {e}"))?;
        let client = GuardedGet::new(policy).map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(HttpJwksSource { client, url, timeout: JWKS_TIMEOUT })
    }

    /// Another deadline than [`JWKS_TIMEOUT`] (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn get(&self) -> Result<Vec<u8>, String> {
        let fetched = self.client.get(&self.url, "application/json", MAX_JWKS_BYTES).await.map_err(|e| {
            if e.starts_with("the answer is larger") {
                format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes")
            } else {
                e
            }
        })?;
        if !(200..300).contains(&fetched.status) {
            return Err(format!("the JWKS URL answered {}", fetched.status));
        }
        Ok(fetched.body)
    }
}

#[async_trait]
impl JwksSource for HttpJwksSource {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let body = match tokio::time::timeout(self.timeout, self.get()).await {
            Ok(body) => body?,
            Err(_) => return Err(format!("the JWKS URL did not answer within {:?}", self.timeout)),
        };
        parse_jwks(&body)
    }
}

/// A key set, skipping the keys this crate cannot read (another key type
/// or parameters it does not know) rather than refusing the whole set.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<JwkSet, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys =
        value.get("keys").and_then(|k| k.as_array()).ok_or_else(|| "the JWKS has no \"keys\" array".to_string())?;
    let keys = keys.iter().filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok()).collect();
    Ok(JwkSet { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_keys_are_skipped_not_fatal() {
        let set = parse_jwks(
            br#"{"keys":[{"kty":"RSA","kid":"a","use":"sig","alg":"RS256","n":"AQAB","e":"AQAB"},{"kty":"weird"}]}"#,
        )
        .unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(parse_jwks(b"[]").unwrap_err().contains("keys"));
        assert!(parse_jwks(b"<html>").unwrap_err().contains("not JSON"));
    }

    #[tokio::test]
    async fn private_jwks_urls_are_refused_under_the_deployed_policy() {
        let source = HttpJwksSource::new("http://127.0.0.1:9/jwks.json", EgressPolicy::DENY_PRIVATE).unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("public addresses"), "{err}");
        let source = HttpJwksSource::new("http://localhost:9/jwks.json", EgressPolicy::DENY_PRIVATE).unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("public addresses"), "{err}");
        assert!(HttpJwksSource::new("ftp://example.com/x", EgressPolicy::DENY_PRIVATE).is_err());
        assert!(HttpJwksSource::new("not a url", EgressPolicy::DENY_PRIVATE).is_err());
    }
}
