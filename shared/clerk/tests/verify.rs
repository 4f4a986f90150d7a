//! The verifier against tokens signed in the test with RSA keys the
//! `openssl` CLI generates (once per test binary), and against a JWKS served
//! by a local server on 127.0.0.1.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use capydb_clerk::testkit::{sign_with, Algorithm, EncodingKey, TestKey};
use capydb_clerk::{ClerkConfig, ClerkVerifier, HttpJwksSource, JwksSource, JWKS_TIMEOUT};
use capydb_domain::error::DomainError;
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{OrgRole, SessionClaims, SessionOrg, SessionVerifier};
use capydb_egress::EgressPolicy;
use serde_json::{json, Value};

type Key = TestKey;

/// Two RSA keys and an EC public key (PEM), made once.
fn keys() -> &'static (Key, Key, String) {
    static KEYS: OnceLock<(Key, Key, String)> = OnceLock::new();
    KEYS.get_or_init(|| (TestKey::generate(), TestKey::generate(), capydb_clerk::testkit::ec_public_pem()))
}

fn key_a() -> &'static Key {
    &keys().0
}

fn key_b() -> &'static Key {
    &keys().1
}

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://clerk.capydb.test";
const APP: &str = "https://app.capydb.test";

fn now() -> Timestamp {
    at(0)
}

/// `NOW` plus some seconds.
fn at(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(NOW + secs, 0).unwrap()
}

fn claims() -> Value {
    json!({
        "sub": "user_2abc",
        "sid": "sess_2xyz",
        "iss": ISSUER,
        "azp": APP,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 60,
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn sign(key: &Key, kid: Option<&str>, claims: &Value) -> String {
    key.sign(kid, claims)
}

fn config() -> ClerkConfig {
    ClerkConfig {
        jwt_key_pem: Some(key_a().public_pem.clone()),
        jwks_url: None,
        issuer: Some(ISSUER.into()),
        authorized_parties: vec!["http://localhost:3000".into(), APP.into()],
    }
}

fn pem_verifier() -> ClerkVerifier {
    ClerkVerifier::new(&config(), EgressPolicy::DENY_PRIVATE).unwrap()
}

async fn verify(verifier: &ClerkVerifier, token: &str, now: Timestamp) -> Result<SessionClaims, String> {
    match verifier.verify(token, now).await {
        Ok(claims) => Ok(claims),
        Err(DomainError::Unauthenticated(why)) => Err(why),
        Err(other) => panic!("not an Unauthenticated: {other:?}"),
    }
}

async fn refused(verifier: &ClerkVerifier, token: &str, now: Timestamp, expected: &str) {
    match verify(verifier, token, now).await {
        Err(why) => assert!(why.contains(expected), "expected {expected:?} in {why:?}"),
        Ok(claims) => panic!("accepted {claims:?}; expected a refusal with {expected:?}"),
    }
}

#[tokio::test]
async fn the_right_key_is_accepted() {
    let v = pem_verifier();
    let session = verify(&v, &sign(key_a(), Some("ins_1"), &claims()), now()).await.unwrap();
    assert_eq!(
        session,
        SessionClaims {
            user_id: "user_2abc".into(),
            session_id: Some("sess_2xyz".into()),
            org: None,
            expires_at: at(60),
        }
    );
    // No sid, no azp, no nbf/iat: still a session.
    let bare = with(claims(), json!({"sid": null, "azp": null, "nbf": null, "iat": null}));
    let session = verify(&v, &sign(key_a(), None, &bare), now()).await.unwrap();
    assert_eq!(session.session_id, None);
}

#[tokio::test]
async fn another_key_is_a_bad_signature() {
    refused(&pem_verifier(), &sign(key_b(), None, &claims()), now(), "signature does not verify").await;
    // A signature moved from one token onto another's claims.
    let good = sign(key_a(), None, &claims());
    let other = sign(key_a(), None, &with(claims(), json!({"sub": "user_admin"})));
    let forged = format!("{}.{}", other.rsplit_once('.').unwrap().0, good.rsplit_once('.').unwrap().1);
    refused(&pem_verifier(), &forged, now(), "signature does not verify").await;
}

#[tokio::test]
async fn expiry_has_five_seconds_of_skew() {
    let v = pem_verifier();
    let token = sign(key_a(), None, &claims());
    assert!(verify(&v, &token, at(60)).await.is_ok());
    assert!(verify(&v, &token, at(64)).await.is_ok(), "4 s past exp");
    assert!(verify(&v, &token, at(65)).await.is_ok(), "5 s past exp");
    refused(&v, &token, at(66), "expired").await;
    refused(&v, &token, at(3600), "expired at 2027-01-15T08:01:00+00:00").await;
    refused(&v, &sign(key_a(), None, &with(claims(), json!({"exp": null}))), now(), "no expiry").await;
    refused(&v, &sign(key_a(), None, &with(claims(), json!({"exp": "soon"}))), now(), "exp is not a number").await;
}

#[tokio::test]
async fn not_yet_valid_has_five_seconds_of_skew() {
    let v = pem_verifier();
    let early = sign(key_a(), None, &with(claims(), json!({"nbf": NOW + 30, "iat": NOW + 30})));
    refused(&v, &early, now(), "not valid before").await;
    refused(&v, &early, at(24), "not valid before").await;
    assert!(verify(&v, &early, at(26)).await.is_ok(), "4 s before nbf");
    assert!(verify(&v, &early, at(25)).await.is_ok(), "5 s before nbf");
    let future_iat = sign(key_a(), None, &with(claims(), json!({"nbf": null, "iat": NOW + 30})));
    refused(&v, &future_iat, now(), "issued in the future").await;
}

#[tokio::test]
async fn azp_must_be_an_authorized_party() {
    let v = pem_verifier();
    let foreign = sign(key_a(), None, &with(claims(), json!({"azp": "https://evil.example"})));
    refused(&v, &foreign, now(), "authorized party (azp) \"https://evil.example\" is not one").await;
    let local = sign(key_a(), None, &with(claims(), json!({"azp": "http://localhost:3000"})));
    assert!(verify(&v, &local, now()).await.is_ok());
    let none = sign(key_a(), None, &with(claims(), json!({"azp": null})));
    assert!(verify(&v, &none, now()).await.is_ok());
    // With no authorized parties configured, a token naming one is refused
    // (and the message says what to configure); one without azp is not.
    let open = ClerkVerifier::new(&ClerkConfig { authorized_parties: vec![], ..config() }, EgressPolicy::DENY_PRIVATE)
        .unwrap();
    refused(&open, &sign(key_a(), None, &claims()), now(), "CAPYDB_CLERK_AUTHORIZED_PARTIES").await;
    assert!(verify(&open, &none, now()).await.is_ok());
}

#[tokio::test]
async fn iss_must_match_when_configured() {
    let v = pem_verifier();
    let wrong = sign(key_a(), None, &with(claims(), json!({"iss": "https://clerk.other.test"})));
    refused(&v, &wrong, now(), "issuer \"https://clerk.other.test\" is not \"https://clerk.capydb.test\"").await;
    let prefix = sign(key_a(), None, &with(claims(), json!({"iss": "https://clerk.capydb.test.evil"})));
    refused(&v, &prefix, now(), "issuer").await;
    let missing = sign(key_a(), None, &with(claims(), json!({"iss": null})));
    refused(&v, &missing, now(), "no issuer").await;
    let unchecked = ClerkVerifier::new(&ClerkConfig { issuer: None, ..config() }, EgressPolicy::DENY_PRIVATE).unwrap();
    assert!(verify(&unchecked, &wrong, now()).await.is_ok());
}

#[tokio::test]
async fn sub_is_required() {
    let v = pem_verifier();
    refused(&v, &sign(key_a(), None, &with(claims(), json!({"sub": null}))), now(), "no subject").await;
    refused(&v, &sign(key_a(), None, &with(claims(), json!({"sub": ""}))), now(), "no subject").await;
    refused(&v, &sign(key_a(), None, &with(claims(), json!({"sub": 42}))), now(), "sub is not a string").await;
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn alg_none_is_refused_by_name() {
    let v = pem_verifier();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        let token = format!("{}.{}.", b64(&header), b64(&claims()));
        refused(&v, &token, now(), &format!("algorithm \"{alg}\" is not accepted")).await;
        // With the RS256 signature of the same claims attached.
        let signature = sign(key_a(), None, &claims()).rsplit_once('.').unwrap().1.to_string();
        refused(&v, &format!("{}.{}.{signature}", b64(&header), b64(&claims())), now(), "not accepted").await;
    }
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() {
    let v = pem_verifier();
    let key = &key_a().public_pem;
    for secret in [key.as_str(), key.trim(), key.trim_end()] {
        let token = sign_with(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), None, &claims());
        refused(&v, &token, now(), "algorithm \"HS256\" is not accepted; only RS256 is").await;
    }
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign_with(alg, &EncodingKey::from_secret(key.as_bytes()), None, &claims());
        refused(&v, &token, now(), "is not accepted").await;
    }
}

#[tokio::test]
async fn other_rsa_and_ec_algorithms_are_refused_by_name() {
    let v = pem_verifier();
    let rsa = EncodingKey::from_rsa_pem(key_a().private_pem.as_bytes()).unwrap();
    for (alg, name) in [
        (Algorithm::RS384, "RS384"),
        (Algorithm::RS512, "RS512"),
        (Algorithm::PS256, "PS256"),
        (Algorithm::PS512, "PS512"),
    ] {
        refused(&v, &sign_with(alg, &rsa, None, &claims()), now(), &format!("algorithm \"{name}\" is not accepted"))
            .await;
    }
    for alg in ["ES256", "ES384", "EdDSA", "RSA-OAEP", "", "rs256"] {
        let token = format!("{}.{}.c2ln", b64(&json!({"alg": alg})), b64(&claims()));
        refused(&v, &token, now(), &format!("algorithm \"{alg}\" is not accepted")).await;
    }
}

fn org(id: &str, role: OrgRole, slug: Option<&str>) -> Option<SessionOrg> {
    Some(SessionOrg { clerk_org_id: id.into(), role, slug: slug.map(String::from) })
}

async fn org_of(changes: Value) -> Result<Option<SessionOrg>, String> {
    verify(&pem_verifier(), &sign(key_a(), None, &with(claims(), changes)), now()).await.map(|c| c.org)
}

#[tokio::test]
async fn v1_organization_claims() {
    let admin = org_of(json!({"org_id": "org_1", "org_role": "org:admin", "org_slug": "acme"})).await;
    assert_eq!(admin.unwrap(), org("org_1", OrgRole::Admin, Some("acme")));
    let member = org_of(json!({"org_id": "org_1", "org_role": "org:member"})).await;
    assert_eq!(member.unwrap(), org("org_1", OrgRole::Member, None));
    for role in [json!("org:billing"), json!("admin"), json!("ORG:ADMIN"), Value::Null] {
        let other = org_of(json!({"org_id": "org_1", "org_role": role})).await;
        assert_eq!(other.unwrap(), org("org_1", OrgRole::Member, None), "{role}");
    }
    assert_eq!(org_of(json!({})).await.unwrap(), None);
    assert_eq!(org_of(json!({"v": 1})).await.unwrap(), None);
    assert!(org_of(json!({"org_id": 7})).await.unwrap_err().contains("org_id is not a string"));
}

#[tokio::test]
async fn v2_organization_claims() {
    let admin = org_of(json!({"v": 2, "o": {"id": "org_2", "rol": "admin", "slg": "acme"}, "fva": [1, -1]})).await;
    assert_eq!(admin.unwrap(), org("org_2", OrgRole::Admin, Some("acme")));
    let member = org_of(json!({"v": 2, "o": {"id": "org_2", "rol": "member", "per": "read"}})).await;
    assert_eq!(member.unwrap(), org("org_2", OrgRole::Member, None));
    // v1's spelling is not v2's admin.
    let v1_spelling = org_of(json!({"v": 2, "o": {"id": "org_2", "rol": "org:admin"}})).await;
    assert_eq!(v1_spelling.unwrap(), org("org_2", OrgRole::Member, None));
    // v2 reads `o` only: stray v1 claims do not make an organization.
    assert_eq!(org_of(json!({"v": 2, "org_id": "org_1", "org_role": "org:admin"})).await.unwrap(), None);
    assert_eq!(org_of(json!({"v": 2})).await.unwrap(), None);
    assert!(org_of(json!({"v": 2, "o": {"rol": "admin"}})).await.unwrap_err().contains("o.id"));
    assert!(org_of(json!({"v": 2, "o": "org_2"})).await.unwrap_err().contains("o is not an object"));
    assert!(org_of(json!({"v": 3})).await.unwrap_err().contains("version 3 is not supported"));
}

#[tokio::test]
async fn garbage_is_refused_without_a_panic() {
    let v = pem_verifier();
    let signature = sign(key_a(), None, &claims()).rsplit_once('.').unwrap().1.to_string();
    let payload = b64(&claims());
    let huge = "A".repeat(2 * 1024 * 1024);
    let huge_token = format!("{huge}.{huge}.{huge}");
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "3 dot-separated parts, this one has 1"),
        (" ".into(), "malformed"),
        ("a.b.c".into(), "header is not base64url"),
        ("eyJh.b.c".into(), "header is not JSON"),
        ("a.b".into(), "this one has 2"),
        ("....".into(), "this one has 5"),
        ("a.b.c.d.e".into(), "this one has 5"),
        ("!!!.@@@.###".into(), "not base64url"),
        ("é.é.é".into(), "not base64url"),
        ("\0.\0.\0".into(), "not base64url"),
        (huge_token, "longer than"),
        (huge.clone(), "longer than"),
        (format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("[1,2]")), "header is not a JSON object"),
        (format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("\"RS256\"")), "not a JSON object"),
        (format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("null")), "not a JSON object"),
        (format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("{")), "header is not JSON"),
        (format!("{}.{payload}.{signature}", b64(&json!({}))), "no alg"),
        (format!("{}.{payload}.{signature}", b64(&json!({"alg": 256}))), "alg is not a string"),
        (format!("{}.{payload}.{signature}", b64(&json!({"alg": "RS256", "kid": []}))), "kid is not a string"),
        (format!("{}.{payload}.{signature}", b64(&json!({"alg": "RS256", "crit": ["exp"]}))), "critical extensions"),
        (format!("{}.{payload}.", b64(&json!({"alg": "RS256"}))), "signature does not verify"),
        (format!("{}.{payload}.!!!", b64(&json!({"alg": "RS256"}))), "the signature part is not base64url"),
        (format!("{}.!!!.{signature}", b64(&json!({"alg": "RS256"}))), "the claims part is not base64url"),
        (format!("{}.{payload}.{signature}", b64(&json!({"alg": "RS256", "typ": "JWT"}))), "signature does not verify"),
        (format!("{}.{payload}.{}", b64(&json!({"alg": "RS256"})), "A".repeat(4000)), "signature does not verify"),
    ];
    for (token, expected) in &cases {
        let shown: String = token.chars().take(60).collect();
        match verify(&v, token, now()).await {
            Err(why) => assert!(why.contains(expected), "{shown:?}: expected {expected:?} in {why:?}"),
            Ok(claims) => panic!("{shown:?} accepted: {claims:?}"),
        }
    }
    // Correctly signed, but the claims are not an object.
    let rsa = EncodingKey::from_rsa_pem(key_a().private_pem.as_bytes()).unwrap();
    let array = sign_with(Algorithm::RS256, &rsa, None, &json!([1, 2]));
    refused(&v, &array, now(), "malformed").await;
    let string = sign_with(Algorithm::RS256, &rsa, None, &json!("user"));
    refused(&v, &string, now(), "malformed").await;
    // The header passes the algorithm check but is not a JWT header.
    let odd = format!("{}.{payload}.{signature}", b64(&json!({"alg": "RS256", "typ": 5})));
    refused(&v, &odd, now(), "not the JSON of a JWT").await;
    // Times far out of range.
    for exp in [json!(1e300), json!(-1e300), json!(i64::MAX), json!(u64::MAX), json!(i64::MIN)] {
        let token = sign(key_a(), None, &with(claims(), json!({"exp": exp})));
        assert!(verify(&v, &token, now()).await.is_err(), "exp {exp}");
    }
}

#[test]
fn bad_configuration_is_an_error_not_a_panic() {
    let bad = |pem: &str| {
        ClerkVerifier::new(&ClerkConfig { jwt_key_pem: Some(pem.into()), ..config() }, EgressPolicy::DENY_PRIVATE)
            .err()
            .unwrap_or_else(|| panic!("accepted {pem:?}"))
    };
    assert!(bad("not a pem").contains("RSA public key in PEM"));
    assert!(bad("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n").contains("not a readable"));
    assert!(bad("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").contains("not a readable"));
    assert!(bad(&key_a().private_pem).contains("RSA public key in PEM"));
    assert!(bad(&keys().2).contains("not a readable"), "an EC public key");
    let off = ClerkVerifier::new(&ClerkConfig::default(), EgressPolicy::DENY_PRIVATE).err().unwrap();
    assert!(off.contains("CAPYDB_CLERK_JWT_KEY"), "{off}");
    let url = ClerkConfig { jwt_key_pem: None, jwks_url: Some("file:///etc/passwd".into()), ..config() };
    assert!(ClerkVerifier::new(&url, EgressPolicy::DENY_PRIVATE).is_err());
}

// ---- JWKS -----------------------------------------------------------------

fn jwk(key: &Key, kid: &str) -> Value {
    key.jwk(kid)
}

/// A JWKS endpoint on 127.0.0.1 that counts its requests.
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    keys: Arc<Mutex<Value>>,
}

impl JwksServer {
    async fn start(keys: Value) -> JwksServer {
        use axum::routing::get;
        let fetches = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Mutex::new(keys));
        let (count, body) = (fetches.clone(), served.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (count, body) = (count.clone(), body.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    let keys = body.lock().unwrap().clone();
                    axum::Json(json!({"keys": keys}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { url: format!("http://{addr}/.well-known/jwks.json"), fetches, keys: served }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, keys: Value) {
        *self.keys.lock().unwrap() = keys;
    }

    fn verifier(&self) -> ClerkVerifier {
        let config = ClerkConfig { jwt_key_pem: None, jwks_url: Some(self.url.clone()), ..config() };
        ClerkVerifier::new(&config, EgressPolicy::ALLOW_PRIVATE).unwrap()
    }
}

#[tokio::test]
async fn jwks_keys_are_cached_and_a_rotation_refreshes_once() {
    let server = JwksServer::start(json!([jwk(key_a(), "ins_a")])).await;
    let v = server.verifier();
    assert_eq!(server.fetches(), 0, "nothing is fetched before a token needs it");
    let a = sign(key_a(), Some("ins_a"), &claims());
    assert_eq!(verify(&v, &a, now()).await.unwrap().user_id, "user_2abc");
    assert!(verify(&v, &a, at(1)).await.is_ok());
    assert!(verify(&v, &a, at(50)).await.is_ok());
    assert_eq!(server.fetches(), 1, "cached by kid");
    // A token signed with a known kid but another key.
    refused(&v, &sign(key_b(), Some("ins_a"), &claims()), at(2), "signature does not verify").await;
    assert_eq!(server.fetches(), 1);

    // The instance rotates to key b.
    server.serve(json!([jwk(key_a(), "ins_a"), jwk(key_b(), "ins_b")]));
    let b = sign(key_b(), Some("ins_b"), &with(claims(), json!({"exp": NOW + 600})));
    for t in [120, 121, 130, 400] {
        assert!(verify(&v, &b, at(t)).await.is_ok(), "at +{t}");
    }
    assert!(verify(&v, &sign(key_a(), Some("ins_a"), &with(claims(), json!({"exp": NOW + 600}))), at(131))
        .await
        .is_ok());
    assert_eq!(server.fetches(), 2, "exactly one refresh for the new kid");

    // A token without a kid cannot pick a key from a set.
    refused(&v, &sign(key_a(), None, &claims()), now(), "no key id (kid)").await;
}

#[tokio::test]
async fn unknown_kids_fetch_at_most_once_a_minute() {
    let server = JwksServer::start(json!([jwk(key_a(), "ins_a")])).await;
    let v = server.verifier();
    let bogus = sign(key_a(), Some("bogus"), &with(claims(), json!({"exp": NOW + 3600})));
    refused(&v, &bogus, now(), "key id \"bogus\" is not a signing key").await;
    assert_eq!(server.fetches(), 1);
    refused(&v, &bogus, at(1), "is not a signing key").await;
    refused(&v, &bogus, at(30), "is not a signing key").await;
    refused(&v, &bogus, at(59), "is not a signing key").await;
    assert_eq!(server.fetches(), 1, "twice within a minute: one fetch");
    refused(&v, &bogus, at(60), "is not a signing key").await;
    assert_eq!(server.fetches(), 2, "a minute later: one more");
    refused(&v, &bogus, at(61), "is not a signing key").await;
    refused(&v, &bogus, at(119), "is not a signing key").await;
    assert_eq!(server.fetches(), 2);

    // Many at once: still one fetch.
    let v = Arc::new(v);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (v, bogus) = (v.clone(), bogus.clone());
            tokio::spawn(async move { v.verify(&bogus, at(200 + i % 3)).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(DomainError::Unauthenticated(_))));
    }
    assert_eq!(server.fetches(), 3);

    // The known kid keeps working from the cache all along.
    let good = sign(key_a(), Some("ins_a"), &with(claims(), json!({"exp": NOW + 3600})));
    assert!(verify(&v, &good, at(201)).await.is_ok());
    assert_eq!(server.fetches(), 3);

    // A clock that went back does not stop refreshes for good.
    refused(&v, &bogus, at(-600), "is not a signing key").await;
    assert_eq!(server.fetches(), 4);
}

#[tokio::test]
async fn a_pem_key_wins_over_the_jwks_url() {
    let server = JwksServer::start(json!([jwk(key_b(), "ins_b")])).await;
    let config = ClerkConfig { jwks_url: Some(server.url.clone()), ..config() };
    let v = ClerkVerifier::new(&config, EgressPolicy::ALLOW_PRIVATE).unwrap();
    assert!(verify(&v, &sign(key_a(), Some("ins_b"), &claims()), now()).await.is_ok());
    refused(&v, &sign(key_b(), Some("ins_b"), &claims()), now(), "signature").await;
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn jwks_keys_for_other_algorithms_or_uses_are_not_used() {
    let mut enc = jwk(key_a(), "enc");
    enc["use"] = json!("enc");
    let mut rs512 = jwk(key_a(), "rs512");
    rs512["alg"] = json!("RS512");
    let mut no_alg = jwk(key_a(), "plain");
    no_alg.as_object_mut().unwrap().remove("alg");
    let server = JwksServer::start(json!([enc, rs512, no_alg, {"kty": "EC", "kid": "ec"}])).await;
    let v = server.verifier();
    assert!(verify(&v, &sign(key_a(), Some("plain"), &claims()), now()).await.is_ok());
    refused(&v, &sign(key_a(), Some("enc"), &claims()), now(), "not a signing key").await;
    refused(&v, &sign(key_a(), Some("rs512"), &claims()), now(), "not a signing key").await;
    refused(&v, &sign(key_a(), Some("ec"), &claims()), now(), "not a signing key").await;
    assert_eq!(server.fetches(), 1);
}

/// A listener that accepts connections and never answers.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{addr}/.well-known/jwks.json"), task)
}

#[tokio::test]
async fn a_jwks_server_that_is_down_is_a_clear_401_not_a_hang() {
    assert_eq!(JWKS_TIMEOUT, Duration::from_secs(5));
    let token = sign(key_a(), Some("ins_a"), &claims());
    let config = |url: &str| ClerkConfig { jwt_key_pem: None, jwks_url: Some(url.into()), ..config() };

    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/.well-known/jwks.json");
    let v = ClerkVerifier::new(&config(&url), EgressPolicy::ALLOW_PRIVATE).unwrap();
    refused(&v, &token, now(), "the signing keys could not be fetched").await;

    // Something listens and never answers: the deadline ends the wait.
    let (url, _server) = silent_server().await;
    let source =
        HttpJwksSource::new(&url, EgressPolicy::ALLOW_PRIVATE).unwrap().with_timeout(Duration::from_millis(300));
    let v = ClerkVerifier::with_jwks_source(&config(&url), Arc::new(source)).unwrap();
    let started = Instant::now();
    refused(&v, &token, now(), "did not answer within 300ms").await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // Within the minute the failure is answered at once, without a fetch.
    let started = Instant::now();
    refused(&v, &token, at(10), "the signing keys could not be fetched").await;
    assert!(started.elapsed() < Duration::from_millis(100));

    // The default deadline applies to the real source too.
    let v = ClerkVerifier::new(&config(&url), EgressPolicy::ALLOW_PRIVATE).unwrap();
    let started = Instant::now();
    refused(&v, &token, now(), "did not answer within 5s").await;
    assert!(started.elapsed() < Duration::from_secs(7), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_jwks_error_answer_is_reported_and_recovers_a_minute_later() {
    use axum::routing::get;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let n = key_a().n.clone();
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            let (flag, n) = (flag.clone(), n.clone());
            async move {
                if flag.load(Ordering::SeqCst) {
                    (
                        axum::http::StatusCode::OK,
                        json!({"keys": [{"kty": "RSA", "kid": "k", "n": n, "e": "AQAB"}]}).to_string(),
                    )
                } else {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops".to_string())
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = ClerkConfig { jwt_key_pem: None, jwks_url: Some(format!("http://{addr}/jwks")), ..config() };
    let v = ClerkVerifier::new(&config, EgressPolicy::ALLOW_PRIVATE).unwrap();
    let token = sign(key_a(), Some("k"), &with(claims(), json!({"exp": NOW + 600})));
    refused(&v, &token, now(), "answered 500").await;
    healthy.store(true, Ordering::SeqCst);
    refused(&v, &token, at(30), "answered 500").await;
    assert!(verify(&v, &token, at(60)).await.is_ok());
}

/// A source that counts, for a verifier built without HTTP.
struct Fixed(Value, AtomicUsize);

#[async_trait::async_trait]
impl JwksSource for Fixed {
    async fn fetch(&self) -> Result<capydb_clerk::JwkSet, String> {
        self.1.fetch_add(1, Ordering::SeqCst);
        serde_json::from_value(self.0.clone()).map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn any_jwks_source_can_be_plugged_in() {
    let source = Arc::new(Fixed(json!({"keys": [jwk(key_a(), "k")]}), AtomicUsize::new(0)));
    let config = ClerkConfig { jwt_key_pem: None, ..config() };
    let v = ClerkVerifier::with_jwks_source(&config, source.clone()).unwrap();
    assert!(verify(&v, &sign(key_a(), Some("k"), &claims()), now()).await.is_ok());
    assert!(verify(&v, &sign(key_a(), Some("k"), &claims()), at(1)).await.is_ok());
    assert_eq!(source.1.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_headers_never_reach_the_jwks() {
    let server = JwksServer::start(json!([jwk(key_a(), "ins_a")])).await;
    let v = server.verifier();
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "kid": "bogus"})), b64(&claims()));
    refused(&v, &none, now(), "not accepted").await;
    let hs =
        sign_with(Algorithm::HS256, &EncodingKey::from_secret(key_a().public_pem.as_bytes()), Some("bogus"), &claims());
    refused(&v, &hs, now(), "not accepted").await;
    refused(&v, "a.b.c", now(), "malformed").await;
    assert_eq!(server.fetches(), 0);
}
