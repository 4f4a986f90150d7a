//! Where the verifier's settings come from.

/// The Clerk settings of a deployment. Sessions are on when a key or a JWKS
/// URL is set ([`ClerkConfig::is_enabled`]); with both, the PEM key is used
/// and the JWKS URL is never fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClerkConfig {
    /// The instance's RSA public key, PEM text (`-----BEGIN PUBLIC KEY-----`).
    pub jwt_key_pem: Option<String>,
    /// Where the instance's JWKS is served (`https://<frontend-api>/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// The exact `iss` tokens must carry; unchecked when `None`.
    pub issuer: Option<String>,
    /// The origins a token's `azp` may name.
    pub authorized_parties: Vec<String>,
}

pub const ENV_JWT_KEY: &str = "CAPYDB_CLERK_JWT_KEY";
pub const ENV_JWKS_URL: &str = "CAPYDB_CLERK_JWKS_URL";
pub const ENV_ISSUER: &str = "CAPYDB_CLERK_ISSUER";
pub const ENV_AUTHORIZED_PARTIES: &str = "CAPYDB_CLERK_AUTHORIZED_PARTIES";

impl ClerkConfig {
    /// Reads `CAPYDB_CLERK_JWT_KEY` (PEM text, or the path of a PEM file
    /// when it does not start with `-----BEGIN`), `CAPYDB_CLERK_JWKS_URL`,
    /// `CAPYDB_CLERK_ISSUER` and `CAPYDB_CLERK_AUTHORIZED_PARTIES`
    /// (comma-separated). Empty values count as unset. Fails only when the
    /// key names a file that cannot be read.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ClerkConfig::from_env`] over any source of variables.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let jwt_key_pem = match get(ENV_JWT_KEY) {
            None => None,
            Some(pem) if pem.starts_with("-----BEGIN") => Some(pem),
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("{ENV_JWT_KEY}: cannot read the PEM file {path}: {e}"))?,
            ),
        };
        let authorized_parties = get(ENV_AUTHORIZED_PARTIES)
            .map(|list| list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        Ok(ClerkConfig { jwt_key_pem, jwks_url: get(ENV_JWKS_URL), issuer: get(ENV_ISSUER), authorized_parties })
    }

    /// False when neither a key nor a JWKS URL is set: sessions are off.
    pub fn is_enabled(&self) -> bool {
        self.jwt_key_pem.is_some() || self.jwks_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn nothing_set_is_off() {
        let config = ClerkConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config, ClerkConfig::default());
        assert!(!config.is_enabled());
        let blank = ClerkConfig::from_lookup(lookup(&[(ENV_JWT_KEY, " "), (ENV_JWKS_URL, "")])).unwrap();
        assert!(!blank.is_enabled());
    }

    #[test]
    fn reads_every_setting() {
        let pem = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----";
        let config = ClerkConfig::from_lookup(lookup(&[
            (ENV_JWT_KEY, pem),
            (ENV_JWKS_URL, "https://clerk.example.com/.well-known/jwks.json"),
            (ENV_ISSUER, "https://clerk.example.com"),
            (ENV_AUTHORIZED_PARTIES, "https://app.example.com, http://localhost:3000,,"),
        ]))
        .unwrap();
        assert!(config.is_enabled());
        assert_eq!(config.jwt_key_pem.as_deref(), Some(pem));
        assert_eq!(config.jwks_url.as_deref(), Some("https://clerk.example.com/.well-known/jwks.json"));
        assert_eq!(config.issuer.as_deref(), Some("https://clerk.example.com"));
        assert_eq!(config.authorized_parties, vec!["https://app.example.com", "http://localhost:3000"]);
    }

    #[test]
    fn the_key_may_be_a_file() {
        let dir = std::env::temp_dir().join(format!("capydb-clerk-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\nxyz\n-----END PUBLIC KEY-----\n").unwrap();
        let config = ClerkConfig::from_lookup(lookup(&[(ENV_JWT_KEY, path.to_str().unwrap())])).unwrap();
        assert!(config.jwt_key_pem.unwrap().contains("xyz"));
        let missing = dir.join("missing.pem");
        let err = ClerkConfig::from_lookup(lookup(&[(ENV_JWT_KEY, missing.to_str().unwrap())])).unwrap_err();
        assert!(err.contains("cannot read the PEM file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
