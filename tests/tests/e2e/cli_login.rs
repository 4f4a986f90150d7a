//! The CLI login (RFC 8628 device flow) over HTTP: the whole flow on
//! capydb-local's own app served in this process with an injected clock
//! (slow_down, expiry and a CLI session's 30 days without waiting), a
//! shorter run against the real binary, and the CLI login endpoints' own
//! rate limit under load.
use std::sync::Arc;
use std::time::Duration;

use capydb_clerk::testkit::TestKey;
use capydb_clerk::{ClerkConfig, ClerkVerifier};
use capydb_domain::fakes::ManualClock;
use capydb_domain::ports::{Clock, SessionVerifier};
use capydb_domain::Settings;
use capydb_egress::EgressPolicy;
use capydb_embedded::FileArtifactStore;
use serde_json::{json, Value};

use crate::helpers::{temp_dir, Options, Resp, TestApp};
use crate::sweeper::{in_process_app_with, serve_in_process};

const CLERK_ORG: &str = "org_clerk_cli";

/// A Clerk session of `user` with `role` (`org:admin`, `org:member`) in
/// the test's Clerk organization, valid for an hour from `now`.
fn session(key: &TestKey, now: i64, user: &str, role: &str) -> String {
    key.sign(
        None,
        &json!({"sub": user, "sid": "sess_cli", "iat": now - 5, "nbf": now - 5, "exp": now + 3600,
                "org_id": CLERK_ORG, "org_role": role, "org_slug": "cli-org"}),
    )
}

async fn post(app: &TestApp, path: &str, credential: Option<&str>, body: Value) -> Resp {
    app.call("POST", path, credential, Some(body)).await
}

/// An RFC 8628 refusal: `400`, the code in `error`, a description.
#[track_caller]
fn refused(r: &Resp, code: &str) {
    assert_eq!(r.status, 400, "expected 400 {code}, got {}: {}", r.status, r.text);
    assert_eq!(r.body["error"], code, "{}", r.text);
    assert!(r.body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
}

struct InProcess {
    app: TestApp,
    clock: Arc<ManualClock>,
    key: TestKey,
}

impl InProcess {
    async fn start() -> InProcess {
        let dir = temp_dir("cli-login");
        let artifacts = Arc::new(FileArtifactStore::open(&dir.join("backups")).unwrap());
        let key = TestKey::generate();
        let config = ClerkConfig {
            jwt_key_pem: Some(key.public_pem.clone()),
            jwks_url: None,
            issuer: None,
            authorized_parties: Vec::new(),
        };
        let verifier = ClerkVerifier::new(&config, EgressPolicy::ALLOW_PRIVATE).unwrap();
        let mut settings = Settings::default();
        // The flow's own polls are the subject here; the bucket has its own test.
        settings.cli_login.rate_limit.limit = 0;
        let (domain, clock, _) =
            in_process_app_with(&dir, artifacts, settings, Some(Arc::new(verifier) as Arc<dyn SessionVerifier>)).await;
        let (org, api_key) =
            capydb_domain::organizations::create_organization(domain.store.as_ref(), domain.now(), "keys", None)
                .await
                .unwrap();
        let base = serve_in_process(domain).await;
        InProcess { app: TestApp::attach(base, api_key, org.id), clock, key }
    }

    fn session(&self, user: &str, role: &str) -> String {
        session(&self.key, self.clock.now().timestamp(), user, role)
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    async fn start_login(&self) -> Value {
        let r = self.app.call("POST", "/v1/cli/login", None, None).await;
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        r.expect(200).clone()
    }

    async fn poll(&self, device_code: &Value) -> Resp {
        post(&self.app, "/v1/cli/login/token", None, json!({"device_code": device_code})).await
    }
}

#[tokio::test]
async fn the_device_flow_from_code_to_revoked_token() {
    let t = InProcess::start().await;
    let app = &t.app;

    // Start: the codes, the page, the timings.
    let login = t.start_login().await;
    let user_code = login["user_code"].as_str().unwrap().to_string();
    assert_eq!(user_code.len(), 9, "{login}");
    assert!(
        user_code.chars().enumerate().all(|(i, c)| if i == 4 { c == '-' } else { "BCDFGHJKLMNPQRSTVWXZ".contains(c) }),
        "user code {user_code} is XXXX-XXXX from the alphabet"
    );
    assert!(login["device_code"].as_str().unwrap().starts_with("capy_device_"));
    assert_eq!((login["interval"].as_u64(), login["expires_in"].as_u64()), (Some(5), Some(600)));
    let approve_url = format!("{}/v1/cli/login/approve", app.base);
    assert_eq!(login["verification_uri"], approve_url.as_str());
    assert_eq!(login["verification_uri_complete"], format!("{approve_url}?user_code={user_code}").as_str());
    // Under the prefix, the page is named under the prefix too.
    let prefixed = app.call("POST", "/api/capydb/v1/cli/login", None, None).await;
    assert_eq!(
        prefixed.expect(200)["verification_uri"],
        format!("{}/api/capydb/v1/cli/login/approve", app.base).as_str()
    );

    // Pending; too fast is slow_down, and the interval grows by 5 s each time.
    let device = &login["device_code"];
    refused(&t.poll(device).await, "authorization_pending");
    let fast = t.poll(device).await;
    refused(&fast, "slow_down");
    assert_eq!(fast.body["interval"], 10, "{}", fast.text);
    t.advance(6);
    let still_fast = t.poll(device).await;
    refused(&still_fast, "slow_down");
    assert_eq!(still_fast.body["interval"], 15, "6 s is too fast for a 10 s interval: {}", still_fast.text);
    t.advance(15);
    refused(&t.poll(device).await, "authorization_pending");

    // Who may approve: a person's browser session in an organization.
    let member = t.session("user_mia", "org:member");
    post(app, "/v1/cli/login/approve", Some(&app.key), json!({"user_code": user_code}))
        .await
        .expect_error(403, "not an API key");
    post(app, "/v1/cli/login/approve", Some(&member), json!({"user_code": "nope"}))
        .await
        .expect_error(400, "user_code must be");
    post(app, "/v1/cli/login/approve", Some(&member), json!({"user_code": "BBBB-BBBB"}))
        .await
        .expect_error(404, "no CLI login is waiting");
    post(app, "/v1/cli/login/approve", Some(&member), json!({"user_code": 5})).await.expect_error(400, "user_code");
    // A member approves, the code typed loosely.
    let typed = user_code.replace('-', " ").to_lowercase();
    let approved = post(app, "/v1/cli/login/approve", Some(&member), json!({"user_code": typed})).await;
    let approved = approved.expect(200);
    assert_eq!((approved["status"].as_str(), approved["role"].as_str()), (Some("approved"), Some("member")));
    post(app, "/v1/cli/login/approve", Some(&member), json!({"user_code": user_code}))
        .await
        .expect_error(409, "already approved");

    // The exchange: once.
    t.advance(15);
    let exchanged = t.poll(device).await;
    assert_eq!(exchanged.header("cache-control").as_deref(), Some("no-store"));
    let token_body = exchanged.expect(200).clone();
    let token = token_body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("capy_cli_"), "{token_body}");
    assert_eq!(token_body["cli_session"]["role"], "member");
    assert_eq!(token_body["organization"]["name"], "cli-org");
    let expires_at = chrono::DateTime::parse_from_rfc3339(token_body["expires_at"].as_str().unwrap()).unwrap();
    let lasts = expires_at.with_timezone(&chrono::Utc) - t.clock.now();
    assert!((lasts - chrono::Duration::days(30)).num_seconds().abs() <= 1, "a CLI session lasts 30 days: {lasts}");
    assert!(!token_body["cli_session"].to_string().contains("hash"), "no hash shown");
    refused(&t.poll(device).await, "invalid_grant");
    refused(&t.poll(&json!("capy_device_garbage")).await, "invalid_grant");

    // The token is the member's session: reads work, admin actions do not.
    let me = app.call("GET", "/v1/me", Some(&token), None).await;
    let me = me.expect(200)["principal"].clone();
    assert_eq!(
        (me["kind"].as_str(), me["user_id"].as_str(), me["role"].as_str()),
        (Some("cli_session"), Some("user_mia"), Some("member"))
    );
    let org_id = me["organization"]["id"].as_str().unwrap().to_string();
    app.call("GET", "/v1/projects", Some(&token), None).await.expect(200);
    post(app, "/v1/projects", Some(&token), json!({"name": "nope"})).await.expect_error(403, "org:admin");
    post(
        app,
        &format!("/v1/organizations/{org_id}/api-keys"),
        Some(&token),
        json!({"name": "k", "scopes": ["projects:read"]}),
    )
    .await
    .expect_error(403, "org:admin");
    // A CLI token cannot approve another login (a leaked one would renew itself).
    let other = t.start_login().await;
    post(app, "/v1/cli/login/approve", Some(&token), json!({"user_code": other["user_code"]}))
        .await
        .expect_error(403, "CLI token cannot approve");

    // Listing: the person's sessions, no secrets; not for API keys.
    let listed = app.call("GET", "/v1/cli/sessions", Some(&member), None).await;
    let listed = listed.expect(200).as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], token_body["cli_session"]["id"]);
    assert!(listed[0].get("hash").is_none() && !listed[0].to_string().contains(&token[10..]), "no secret listed");
    assert_eq!(listed[0]["last_used_ip"], "127.0.0.1", "the token's use was recorded");
    app.call("GET", "/v1/cli/sessions", Some(&app.key), None).await.expect_error(403, "not an API key");
    let via_token = app.call("GET", "/v1/cli/sessions", Some(&token), None).await;
    assert_eq!(via_token.expect(200).as_array().unwrap().len(), 1);

    // Declined: access_denied.
    let declined = t.start_login().await;
    let admin = t.session("user_ada", "org:admin");
    let d =
        post(app, "/v1/cli/login/approve", Some(&admin), json!({"user_code": declined["user_code"], "approve": false}))
            .await;
    assert_eq!(d.expect(200)["status"], "denied");
    refused(&t.poll(&declined["device_code"]).await, "access_denied");

    // An admin's token carries the admin role.
    let admins = t.start_login().await;
    post(app, "/v1/cli/login/approve", Some(&admin), json!({"user_code": admins["user_code"]})).await.expect(200);
    let admin_token = t.poll(&admins["device_code"]).await.expect(200)["token"].as_str().unwrap().to_string();
    let created = post(
        app,
        &format!("/v1/organizations/{org_id}/api-keys"),
        Some(&admin_token),
        json!({"name": "from the CLI", "scopes": ["projects:read"]}),
    )
    .await;
    assert_eq!(created.expect(201)["api_key"]["created_by"], "user_ada", "the key records its creator");

    // Expiry: ten minutes, then expired_token, and the code can no longer be approved.
    let late = t.start_login().await;
    t.advance(601);
    refused(&t.poll(&late["device_code"]).await, "expired_token");
    let fresh_member = t.session("user_mia", "org:member");
    post(app, "/v1/cli/login/approve", Some(&fresh_member), json!({"user_code": late["user_code"]}))
        .await
        .expect_error(400, "expired");

    // Revocation: by its owner only, 401 at once.
    let id = token_body["cli_session"]["id"].as_str().unwrap();
    let fresh_admin = t.session("user_ada", "org:admin");
    app.call("DELETE", &format!("/v1/cli/sessions/{id}"), Some(&fresh_admin), None)
        .await
        .expect_error(404, "not found");
    let revoked = app.call("DELETE", &format!("/v1/cli/sessions/{id}"), Some(&fresh_member), None).await;
    assert!(revoked.expect(200)["cli_session"]["revoked_at"].is_string());
    app.call("GET", "/v1/me", Some(&token), None).await.expect_error(401, "revoked");
    app.call("GET", "/v1/me", Some(&admin_token), None).await.expect(200);

    // Thirty days later the admin's token has expired too.
    t.advance(30 * 24 * 3600);
    app.call("GET", "/v1/me", Some(&admin_token), None).await.expect_error(401, "expired");
    app.call("GET", "/v1/me", Some("capy_cli_notachecksummedtoken"), None)
        .await
        .expect_error(401, "malformed CLI token");
}

/// The same flow against the real binary, configured from its
/// environment: start, approve, wait the interval, exchange, use, revoke.
#[tokio::test]
async fn capydb_local_runs_the_device_flow() {
    let key = TestKey::generate();
    let app = TestApp::spawn_with(Options {
        env: vec![("CAPYDB_CLERK_JWT_KEY".into(), key.public_pem.clone())],
        ..Default::default()
    })
    .await;
    let login = app.call("POST", "/v1/cli/login", None, None).await.expect(200).clone();
    let device = json!({"device_code": login["device_code"]});
    refused(&post(&app, "/v1/cli/login/token", None, device.clone()).await, "authorization_pending");
    let admin = session(&key, chrono::Utc::now().timestamp(), "user_bo", "org:admin");
    post(&app, "/v1/cli/login/approve", Some(&admin), json!({"user_code": login["user_code"]})).await.expect(200);
    tokio::time::sleep(Duration::from_secs(login["interval"].as_u64().unwrap())).await;
    let token = post(&app, "/v1/cli/login/token", None, device.clone()).await.expect(200)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app.call("GET", "/v1/me", Some(&token), None).await.expect(200)["principal"].clone();
    assert_eq!((me["kind"].as_str(), me["role"].as_str()), (Some("cli_session"), Some("admin")));
    let listed = app.call("GET", "/v1/cli/sessions", Some(&token), None).await.expect(200).clone();
    let id = listed[0]["id"].as_str().unwrap();
    app.call("DELETE", &format!("/v1/cli/sessions/{id}"), Some(&token), None).await.expect(200);
    app.call("GET", "/v1/me", Some(&token), None).await.expect_error(401, "revoked");
}

/// The CLI login endpoints' bucket under load from one address: every
/// answer is served or a well-formed 429; the general API from that address
/// and the CLI endpoints from another address are unaffected.
#[tokio::test]
async fn the_cli_login_bucket_limits_one_address_and_nothing_else() {
    let app = TestApp::spawn_with(Options {
        env: vec![("CAPYDB_CLI_LOGIN_RATE_LIMIT_PER_MINUTE".into(), "10".into())],
        ..Default::default()
    })
    .await;
    // Fixed one-minute windows: stay clear of a boundary, so the burst
    // falls in one window and the count is exact.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 45 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    let answers: Vec<Resp> = capydb_domain::contract::futures_join_all((0..60).map(|i| {
        let app = &app;
        async move {
            let path = if i % 3 == 0 { "/v1/cli/login/token" } else { "/v1/cli/login" };
            let body = (i % 3 == 0).then(|| br#"{"device_code":"capy_device_x"}"#.to_vec());
            app.try_request("POST", path, body, &[("content-type", "application/json")]).await.expect("answered")
        }
    }))
    .await;
    let mut served = 0;
    for r in &answers {
        match r.status {
            200 | 400 => served += 1,
            429 => {
                let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                assert_eq!(r.header("ratelimit-limit").as_deref(), Some("10"));
                assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
                assert!(r.header("ratelimit-reset").is_some());
                assert!(
                    r.body["error"].as_str().is_some_and(|e| e.contains("CLI login endpoints")),
                    "a JSON error naming the bucket: {}",
                    r.text
                );
            }
            other => panic!("answer {other}: {}", r.text),
        }
    }
    assert_eq!(served, 10, "exactly the limit is served in one window");
    // The general API from the same address: its own bucket, untouched.
    let me = app.get("/v1/me").await;
    me.expect(200);
    assert_eq!(me.header("ratelimit-limit").as_deref(), Some("6000"));
    // The CLI endpoints from another address.
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let r = app.try_request_from(other, "POST", "/v1/cli/login", None, &[]).await.expect("answered");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("9"));
}
