//! The verifier: header first, then the key, the signature and the claims.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use capydb_domain::error::{DomainError, DomainResult};
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{OrgRole, SessionClaims, SessionOrg, SessionVerifier};
use capydb_egress::EgressPolicy;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::ClerkConfig;
use crate::jwks::{HttpJwksSource, JwksSource};

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 5;

/// At most one JWKS fetch per this many seconds, whatever the tokens say.
pub const JWKS_REFRESH_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Longer tokens are refused unread (Clerk's fit in a cookie).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The [`SessionVerifier`] of Clerk session JWTs (see the crate's doc).
pub struct ClerkVerifier {
    keys: Keys,
    issuer: Option<String>,
    authorized_parties: Vec<String>,
    validation: Validation,
}

enum Keys {
    /// The configured PEM key: every token is checked against it.
    Pem(DecodingKey),
    Jwks(Jwks),
}

struct Jwks {
    source: Arc<dyn JwksSource>,
    /// The RS256 keys of the last set fetched, by `kid`.
    cached: RwLock<HashMap<String, DecodingKey>>,
    /// One fetch at a time; when the last one started, and how it failed.
    refresh: tokio::sync::Mutex<Refresh>,
}

#[derive(Default)]
struct Refresh {
    last_attempt: Option<Timestamp>,
    last_error: Option<String>,
}

fn unauthenticated(message: impl Into<String>) -> DomainError {
    DomainError::Unauthenticated(message.into())
}

/// A value from the token, quoted in a message: short and printable.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if value.chars().count() > 64 {
        out.push_str("...");
    }
    format!("{out:?}")
}

impl ClerkVerifier {
    /// The verifier of a configuration: the PEM key when set (no network),
    /// else the JWKS URL, fetched through `policy`. Fails on a key that is
    /// not an RSA public key in PEM, an unusable JWKS URL, or a
    /// configuration with neither.
    pub fn new(config: &ClerkConfig, policy: EgressPolicy) -> Result<Self, String> {
        match (&config.jwt_key_pem, &config.jwks_url) {
            (None, Some(url)) => Self::with_jwks_source(config, Arc::new(HttpJwksSource::new(url, policy)?)),
            _ => Self::build(config, None),
        }
    }

    /// As [`ClerkVerifier::new`], with the key set fetched from `source`
    /// (unless the configuration has a PEM key, which wins).
    pub fn with_jwks_source(config: &ClerkConfig, source: Arc<dyn JwksSource>) -> Result<Self, String> {
        Self::build(config, Some(source))
    }

    fn build(config: &ClerkConfig, source: Option<Arc<dyn JwksSource>>) -> Result<Self, String> {
        let keys = match (&config.jwt_key_pem, source) {
            (Some(pem), _) => Keys::Pem(pem_key(pem)?),
            (None, Some(source)) => Keys::Jwks(Jwks {
                source,
                cached: RwLock::new(HashMap::new()),
                refresh: tokio::sync::Mutex::new(Refresh::default()),
            }),
            (None, None) => {
                return Err("Clerk sessions need CAPYDB_CLERK_JWT_KEY or CAPYDB_CLERK_JWKS_URL".into());
            }
        };
        // The library checks the signature only; the claims are checked here
        // against the caller's `now`.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(ClerkVerifier {
            keys,
            issuer: config.issuer.clone(),
            authorized_parties: config.authorized_parties.clone(),
            validation,
        })
    }

    async fn key_for(&self, kid: Option<&str>, now: Timestamp) -> DomainResult<DecodingKey> {
        match &self.keys {
            Keys::Pem(key) => Ok(key.clone()),
            Keys::Jwks(jwks) => {
                let kid = kid.ok_or_else(|| unauthenticated("the session token has no key id (kid) in its header"))?;
                jwks.key(kid, now).await
            }
        }
    }
}

/// The configured key: an RSA public key in PEM (SPKI or PKCS#1). Read by
/// hand (base64 and a few DER headers) rather than with the library's PEM
/// support, which would bring an ASN.1 and a bignum crate into every API
/// function for this one read.
fn pem_key(pem: &str) -> Result<DecodingKey, String> {
    let pem = pem.trim();
    let (body, spki) = if let Some(rest) = pem.strip_prefix("-----BEGIN PUBLIC KEY-----") {
        (rest.strip_suffix("-----END PUBLIC KEY-----"), true)
    } else if let Some(rest) = pem.strip_prefix("-----BEGIN RSA PUBLIC KEY-----") {
        (rest.strip_suffix("-----END RSA PUBLIC KEY-----"), false)
    } else {
        return Err("CAPYDB_CLERK_JWT_KEY must be an RSA public key in PEM (-----BEGIN PUBLIC KEY-----)".into());
    };
    let unreadable = |why: &str| format!("CAPYDB_CLERK_JWT_KEY is not a readable RSA public key: {why}");
    let body: String = body.ok_or_else(|| unreadable("no END line"))?.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| unreadable("not base64"))?;
    let pkcs1 =
        if spki { spki_rsa_key(&der).ok_or_else(|| unreadable("not an RSA SubjectPublicKeyInfo"))? } else { &der };
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (tag, seq, rest) = der_item(pkcs1).ok_or_else(|| unreadable("not DER"))?;
    let (n_tag, n, after_n) = der_item(seq).ok_or_else(|| unreadable("no modulus"))?;
    let (e_tag, e, _) = der_item(after_n).ok_or_else(|| unreadable("no exponent"))?;
    // DER integers carry a 0x00 before a high bit; the key wants the bare magnitude.
    let strip = |v: &'_ [u8]| -> Vec<u8> { v.iter().skip_while(|b| **b == 0).copied().collect() };
    let (n, e) = (strip(n), strip(e));
    if tag != 0x30 || !rest.is_empty() || n_tag != 0x02 || e_tag != 0x02 || n.len() < 256 || e.is_empty() {
        return Err(unreadable("not a 2048-bit or larger RSA key"));
    }
    Ok(DecodingKey::from_rsa_raw_components(&n, &e))
}

/// One DER item: its tag, its contents and what follows it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo whose algorithm is
/// rsaEncryption (1.2.840.113549.1.1.1); `None` for any other key.
fn spki_rsa_key(der: &[u8]) -> Option<&[u8]> {
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, spki, b"") = der_item(der)? else { return None };
    let (0x30, algorithm, rest) = der_item(spki)? else { return None };
    let (0x06, oid, _) = der_item(algorithm)? else { return None };
    let (0x03, bits, b"") = der_item(rest)? else { return None };
    let (0, key) = bits.split_first().map(|(unused, key)| (*unused, key))? else { return None };
    (oid == RSA_ENCRYPTION).then_some(key)
}

impl Jwks {
    async fn key(&self, kid: &str, now: Timestamp) -> DomainResult<DecodingKey> {
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let mut refresh = self.refresh.lock().await;
        // Another request may have fetched the set while this one waited.
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let due = match refresh.last_attempt {
            None => true,
            // A clock that went back must not stop refreshes for good.
            Some(last) => now - last >= JWKS_REFRESH_INTERVAL || now < last,
        };
        if due {
            refresh.last_attempt = Some(now);
            match self.source.fetch().await {
                Ok(set) => {
                    let keys = rs256_keys(&set);
                    tracing::info!(keys = keys.len(), "fetched the Clerk JWKS");
                    refresh.last_error = None;
                    *self.cached.write().unwrap_or_else(|e| e.into_inner()) = keys;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot fetch the Clerk JWKS");
                    refresh.last_error = Some(e);
                }
            }
            if let Some(key) = self.cached_key(kid) {
                return Ok(key);
            }
        }
        Err(match &refresh.last_error {
            Some(e) => unauthenticated(format!(
                "cannot check the session token: the signing keys could not be fetched ({e}); retried at most once a minute"
            )),
            None => unauthenticated(format!("the session token's key id {} is not a signing key of this instance", shown(kid))),
        })
    }

    fn cached_key(&self, kid: &str) -> Option<DecodingKey> {
        self.cached.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }
}

/// The keys of a set that may verify RS256 signatures.
fn rs256_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
        .filter(|jwk| matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)))
        .filter(|jwk| matches!(jwk.common.public_key_use, None | Some(PublicKeyUse::Signature)))
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
        .collect()
}

/// What the header says, read before anything else is: the algorithm must
/// be RS256 whatever the library would accept.
fn check_header(token: &str) -> DomainResult<Option<String>> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(unauthenticated(format!("malformed session token: longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(unauthenticated(format!(
            "malformed session token: a signed JWT has 3 dot-separated parts, this one has {}",
            parts.len()
        )));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| unauthenticated("malformed session token: the header is not base64url"))?;
    let header: Map<String, Value> = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(unauthenticated("malformed session token: the header is not a JSON object")),
        Err(_) => return Err(unauthenticated("malformed session token: the header is not JSON")),
    };
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "RS256" => {}
        Some(Value::String(alg)) => {
            return Err(unauthenticated(format!(
                "session token algorithm {} is not accepted; only RS256 is",
                shown(alg)
            )))
        }
        Some(_) => return Err(unauthenticated("malformed session token: the header's alg is not a string")),
        None => return Err(unauthenticated("malformed session token: the header has no alg")),
    }
    if header.contains_key("crit") {
        return Err(unauthenticated("session token header has critical extensions (crit), which are not supported"));
    }
    for (part, name) in [(parts[1], "claims"), (parts[2], "signature")] {
        if URL_SAFE_NO_PAD.decode(part).is_err() {
            return Err(unauthenticated(format!("malformed session token: the {name} part is not base64url")));
        }
    }
    match header.get("kid") {
        None => Ok(None),
        Some(Value::String(kid)) => Ok(Some(kid.clone())),
        Some(_) => Err(unauthenticated("malformed session token: the header's kid is not a string")),
    }
}

/// A NumericDate claim, in whole seconds.
fn seconds(claims: &Map<String, Value>, name: &str) -> DomainResult<Option<i64>> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)) {
            Some(s) => Ok(Some(s)),
            None => Err(unauthenticated(format!("malformed session token: {name} is not a time"))),
        },
        Some(_) => Err(unauthenticated(format!("malformed session token: {name} is not a number"))),
    }
}

fn string<'a>(claims: &'a Map<String, Value>, name: &str) -> DomainResult<Option<&'a str>> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(unauthenticated(format!("malformed session token: {name} is not a string"))),
    }
}

fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339()).unwrap_or_else(|| secs.to_string())
}

impl ClerkVerifier {
    fn check_claims(&self, claims: &Map<String, Value>, now: Timestamp) -> DomainResult<SessionClaims> {
        let now_secs = now.timestamp();
        let exp = seconds(claims, "exp")?.ok_or_else(|| unauthenticated("the session token has no expiry (exp)"))?;
        if now_secs > exp.saturating_add(LEEWAY_SECS) {
            return Err(unauthenticated(format!("the session token expired at {}", time(exp))));
        }
        if let Some(nbf) = seconds(claims, "nbf")? {
            if nbf > now_secs.saturating_add(LEEWAY_SECS) {
                return Err(unauthenticated(format!("the session token is not valid before {}", time(nbf))));
            }
        }
        if let Some(iat) = seconds(claims, "iat")? {
            if iat > now_secs.saturating_add(LEEWAY_SECS) {
                return Err(unauthenticated(format!("the session token is issued in the future ({})", time(iat))));
            }
        }
        if let Some(expected) = &self.issuer {
            match string(claims, "iss")? {
                Some(iss) if iss == expected => {}
                Some(iss) => {
                    return Err(unauthenticated(format!(
                        "the session token's issuer {} is not {}",
                        shown(iss),
                        shown(expected)
                    )))
                }
                None => {
                    return Err(unauthenticated(format!(
                        "the session token has no issuer; expected {}",
                        shown(expected)
                    )))
                }
            }
        }
        if let Some(azp) = string(claims, "azp")? {
            if !self.authorized_parties.iter().any(|p| p == azp) {
                return Err(unauthenticated(if self.authorized_parties.is_empty() {
                    format!(
                        "the session token's authorized party (azp) {} is not allowed: no authorized parties are configured (CAPYDB_CLERK_AUTHORIZED_PARTIES)",
                        shown(azp)
                    )
                } else {
                    format!("the session token's authorized party (azp) {} is not one of this deployment's", shown(azp))
                }));
            }
        }
        let user_id = match string(claims, "sub")? {
            Some(sub) if !sub.is_empty() => sub.to_string(),
            _ => return Err(unauthenticated("the session token has no subject (sub, the user id)")),
        };
        let session_id = string(claims, "sid")?.map(String::from);
        let expires_at = chrono::DateTime::from_timestamp(exp, 0)
            .ok_or_else(|| unauthenticated("malformed session token: exp is out of range"))?;
        Ok(SessionClaims { user_id, session_id, org: organization(claims)?, expires_at })
    }
}

/// The active organization: v2 claims (`v: 2`, `o`) or v1 claims (`org_*`).
fn organization(claims: &Map<String, Value>) -> DomainResult<Option<SessionOrg>> {
    let version = match claims.get("v") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(v @ (1 | 2)) => v,
            _ => {
                return Err(unauthenticated(format!(
                    "the session token's claims version {v} is not supported (1 or 2)"
                )))
            }
        },
    };
    if version == 2 {
        let o = match claims.get("o") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(unauthenticated("malformed session token: o is not an object")),
        };
        let id = match string(o, "id")? {
            Some(id) if !id.is_empty() => id,
            _ => return Err(unauthenticated("malformed session token: o has no organization id (o.id)")),
        };
        let role = if string(o, "rol")? == Some("admin") { OrgRole::Admin } else { OrgRole::Member };
        return Ok(Some(SessionOrg { clerk_org_id: id.to_string(), role, slug: string(o, "slg")?.map(String::from) }));
    }
    match string(claims, "org_id")? {
        None | Some("") => Ok(None),
        Some(id) => {
            let role = if string(claims, "org_role")? == Some("org:admin") { OrgRole::Admin } else { OrgRole::Member };
            Ok(Some(SessionOrg {
                clerk_org_id: id.to_string(),
                role,
                slug: string(claims, "org_slug")?.map(String::from),
            }))
        }
    }
}

#[async_trait]
impl SessionVerifier for ClerkVerifier {
    async fn verify(&self, token: &str, now: Timestamp) -> DomainResult<SessionClaims> {
        let token = token.trim();
        let kid = check_header(token)?;
        let key = self.key_for(kid.as_deref(), now).await?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => unauthenticated("the session token's signature does not verify"),
                ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
                    unauthenticated("the session token's signing key cannot be used")
                }
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    unauthenticated("malformed session token: its header or claims are not the JSON of a JWT")
                }
                _ => unauthenticated(format!("malformed session token: {e}")),
            }
        })?;
        self.check_claims(&data.claims, now)
    }
}
