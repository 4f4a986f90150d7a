//! Development sessions, for trying sessions (and, later, the CLI and the
//! dashboard) without a Clerk account. FOR DEVELOPMENT ONLY.
//!
//! `capydb-local sessions create --role admin|member` signs a session token
//! in Clerk's v2 shape with an RSA key kept in the data dir
//! (`dev-session-key.der`, 0600, made on first use). A server accepts those
//! tokens only when started with `--dev-sessions` (`CAPYDB_DEV_SESSIONS=1`):
//! it then verifies session tokens with that key's public half, through the
//! same verifier as Clerk's tokens, and logs a warning that it does. A
//! server started without it answers such a token `401`, and one with a
//! real Clerk configuration refuses to start with `--dev-sessions`.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// The `iss` of development tokens; the server started with
/// `--dev-sessions` accepts no other.
pub const ISSUER: &str = "capydb-local-dev";
const KEY_FILE: &str = "dev-session-key.der";

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The data dir's development key, made (0600) when there is none yet.
pub fn key(data_dir: &Path) -> Result<KeyPair, String> {
    let path = key_path(data_dir);
    match std::fs::read(&path) {
        Ok(der) => KeyPair::from_pkcs8(&der).map_err(|e| format!("{} is not a key: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
            let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "cannot generate an RSA key".to_string())?;
            let der = AsDer::<Pkcs8V1Der>::as_der(&pair).map_err(|_| "cannot encode the key".to_string())?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(der.as_ref()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(pair)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The key's public half as PEM (`PUBLIC KEY`), what the verifier takes.
pub fn public_pem(pair: &KeyPair) -> Result<String, String> {
    let der = pair.public_key().as_der().map_err(|_| "cannot encode the public key".to_string())?;
    let b64 = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    Ok(format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n")))
}

/// A development session token: `user` in organization `org` (a Clerk-style
/// id; its CapyDB organization is made on first use) with `role`, valid for
/// `ttl_minutes`.
pub fn mint(pair: &KeyPair, user: &str, org: &str, role: &str, ttl_minutes: u32) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "capydb-local-dev"});
    let claims = serde_json::json!({
        "sub": user,
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + i64::from(ttl_minutes) * 60,
        "v": 2,
        "o": {"id": org, "rol": role, "slg": org},
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0u8; pair.public_modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| "cannot sign the token".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The verifier configuration of a server started with `--dev-sessions`.
pub fn server_config(data_dir: &Path) -> Result<capydb_clerk::ClerkConfig, String> {
    let pair = key(data_dir)?;
    Ok(capydb_clerk::ClerkConfig {
        jwt_key_pem: Some(public_pem(&pair)?),
        jwks_url: None,
        issuer: Some(ISSUER.into()),
        authorized_parties: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capydb_domain::ports::{OrgRole, SessionVerifier};

    #[tokio::test]
    async fn minted_tokens_verify_with_the_server_configuration_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("capydb-devsess-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pair = key(&dir).unwrap();
        let mode = std::fs::metadata(key_path(&dir)).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.unwrap() & 0o777, 0o600);
        let token = mint(&pair, "user_dev", "org_dev", "member", 5).unwrap();
        let verifier =
            capydb_clerk::ClerkVerifier::new(&server_config(&dir).unwrap(), capydb_egress::EgressPolicy::DENY_PRIVATE)
                .unwrap();
        let claims = verifier.verify(&token, chrono::Utc::now()).await.unwrap();
        assert_eq!(claims.user_id, "user_dev");
        assert_eq!(claims.org.as_ref().map(|o| (o.clerk_org_id.as_str(), o.role)), Some(("org_dev", OrgRole::Member)));
        // The same key is read back; another data dir's key does not verify it.
        assert_eq!(public_pem(&key(&dir).unwrap()).unwrap(), public_pem(&pair).unwrap());
        let other = dir.join("other");
        let stranger = capydb_clerk::ClerkVerifier::new(
            &server_config(&other).unwrap(),
            capydb_egress::EgressPolicy::DENY_PRIVATE,
        )
        .unwrap();
        assert!(stranger.verify(&token, chrono::Utc::now()).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
