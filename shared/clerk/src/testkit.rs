//! Session tokens for tests (feature `testkit`): RSA keys made with the
//! `openssl` CLI (`.ci/run` installs it) and tokens signed with them, as
//! Clerk would sign them. Never for production: the keys are throwaway.
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
pub use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// An RSA key pair.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
    /// The modulus, base64url, for a JWK.
    pub n: String,
}

fn openssl(args: &[&str]) -> String {
    let out =
        Command::new("openssl").args(args).output().expect("the openssl CLI runs (install it: apt install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("openssl prints text")
}

impl TestKey {
    /// A fresh 2048-bit key.
    pub fn generate() -> TestKey {
        let dir = std::env::temp_dir().join(format!("capydb-testkey-{}-{:x}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let private = dir.join("key.pem");
        let private = private.to_str().expect("utf-8 path");
        openssl(&["genrsa", "-traditional", "-out", private, "2048"]);
        let public_pem = openssl(&["rsa", "-in", private, "-pubout"]);
        let modulus = openssl(&["rsa", "-in", private, "-noout", "-modulus"]);
        let modulus = hex::decode(modulus.trim().trim_start_matches("Modulus=")).expect("hex modulus");
        let key = TestKey {
            private_pem: std::fs::read_to_string(private).expect("read the key"),
            public_pem,
            n: URL_SAFE_NO_PAD.encode(modulus),
        };
        let _ = std::fs::remove_dir_all(&dir);
        key
    }

    /// `claims` signed RS256 with this key.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).expect("an RSA private key");
        sign_with(Algorithm::RS256, &key, kid, claims)
    }

    /// The public key as a JWK of a key set.
    pub fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": self.n, "e": "AQAB"})
    }
}

/// A P-256 public key in PEM (a key of a type the verifier refuses).
pub fn ec_public_pem() -> String {
    let dir = std::env::temp_dir().join(format!("capydb-testkey-ec-{}-{:x}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ec = dir.join("ec.pem");
    let ec = ec.to_str().expect("utf-8 path");
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ec]);
    let public = openssl(&["ec", "-in", ec, "-pubout"]);
    let _ = std::fs::remove_dir_all(&dir);
    public
}

/// `claims` signed with any algorithm and key (for the refused ones).
pub fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).expect("sign the token")
}

/// `claims` with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
    );
    h.finish()
}
