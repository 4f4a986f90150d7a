//! Browser sessions against a running `capydb-local` configured with a
//! Clerk public key (`CAPYDB_CLERK_JWT_KEY`) made in the test: which tokens
//! are accepted, the organization a session acts in, and the admin role on
//! the gated actions.
use std::sync::OnceLock;

use capydb_clerk::testkit::{sign_with, unsigned, Algorithm, EncodingKey, TestKey};
use serde_json::{json, Value};

use crate::helpers::{Options, TestApp};

const ISSUER: &str = "https://clerk.capydb.test";
const APP: &str = "https://app.capydb.test";

fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| (TestKey::generate(), TestKey::generate()))
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![
            ("CAPYDB_CLERK_JWT_KEY".into(), keys().0.public_pem.clone()),
            ("CAPYDB_CLERK_ISSUER".into(), ISSUER.into()),
            ("CAPYDB_CLERK_AUTHORIZED_PARTIES".into(), APP.into()),
        ],
        ..Default::default()
    })
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// v1 claims of `user` in Clerk organization `org` with `role`, valid for a minute.
fn v1(user: &str, org: &str, role: &str) -> Value {
    json!({"sub": user, "sid": "sess_1", "iss": ISSUER, "azp": APP, "iat": now() - 5, "nbf": now() - 5,
           "exp": now() + 60, "org_id": org, "org_role": role, "org_slug": "acme"})
}

fn sign(claims: &Value) -> String {
    keys().0.sign(None, claims)
}

#[tokio::test]
async fn session_tokens_are_checked_and_refused_with_reasons() {
    let app = spawn().await;
    let me = |token: String| {
        let app = &app;
        async move { app.call("GET", "/v1/me", Some(&token), None).await }
    };
    let good = v1("user_a", "org_clerk_acme", "org:admin");
    let body = me(sign(&good)).await.expect(200).clone();
    assert_eq!(body["principal"]["kind"], "session");
    assert_eq!(body["principal"]["user_id"], "user_a");
    assert_eq!(body["principal"]["role"], "admin");
    assert_eq!(body["principal"]["organization"]["name"], "acme");

    let with = |changes: Value| {
        let mut c = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    me(keys().1.sign(None, &good)).await.expect_error(401, "signature");
    me(sign(&with(json!({"exp": now() - 30})))).await.expect_error(401, "expired");
    me(sign(&with(json!({"nbf": now() + 60, "iat": now() - 5})))).await.expect_error(401, "not valid before");
    me(sign(&with(json!({"azp": "https://evil.example"})))).await.expect_error(401, "azp");
    me(sign(&with(json!({"iss": "https://other.clerk"})))).await.expect_error(401, "iss");
    me(unsigned(&good)).await.expect_error(401, "\"none\"");
    let hmac = EncodingKey::from_secret(keys().0.public_pem.as_bytes());
    me(sign_with(Algorithm::HS256, &hmac, None, &good)).await.expect_error(401, "HS256");
    // An API key is still an API key.
    assert_eq!(app.get("/v1/me").await.expect(200)["principal"]["kind"], "api_key");
}

#[tokio::test]
async fn v1_and_v2_claims_land_in_one_organization_per_clerk_organization() {
    let app = spawn().await;
    let v2 = |user: &str, role: &str| {
        json!({"sub": user, "iss": ISSUER, "iat": now() - 5, "exp": now() + 60, "v": 2,
               "o": {"id": "org_clerk_v", "rol": role, "slg": "vee"}})
    };
    let v1_admin = app.call("GET", "/v1/me", Some(&sign(&v1("user_a", "org_clerk_v", "org:admin"))), None).await;
    let v2_member = app.call("GET", "/v1/me", Some(&sign(&v2("user_b", "member"))), None).await;
    let v2_admin = app.call("GET", "/v1/me", Some(&sign(&v2("user_c", "admin"))), None).await;
    let org = |r: &crate::helpers::Resp| r.expect(200)["principal"]["organization"]["id"].as_str().unwrap().to_string();
    assert_eq!(org(&v1_admin), org(&v2_member));
    assert_eq!(org(&v2_member), org(&v2_admin));
    assert_ne!(org(&v1_admin), app.org_id, "not the bootstrap organization");
    assert_eq!(v2_member.body["principal"]["role"], "member");
    assert_eq!(v2_admin.body["principal"]["role"], "admin");
    // Concurrent first sessions of another Clerk organization: one organization.
    let token = sign(&v1("user_d", "org_clerk_race", "org:member"));
    let answers = futures_join(&app, &token, 8).await;
    let ids: std::collections::BTreeSet<String> = answers.iter().map(org).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

async fn futures_join(app: &TestApp, token: &str, n: usize) -> Vec<crate::helpers::Resp> {
    let calls = (0..n).map(|_| app.call("GET", "/v1/me", Some(token), None));
    let mut out = Vec::new();
    for r in capydb_domain::contract::futures_join_all(calls).await {
        out.push(r);
    }
    out
}

#[tokio::test]
async fn members_are_refused_the_admin_actions_and_admins_are_not() {
    let app = spawn().await;
    let admin = sign(&v1("user_admin", "org_clerk_gate", "org:admin"));
    let member = sign(&v1("user_member", "org_clerk_gate", "org:member"));
    let call = |method: &'static str, path: String, token: String, body: Option<Value>| {
        let app = &app;
        async move { app.call(method, &path, Some(&token), body).await }
    };
    // Project create: member refused, naming the role; admin allowed.
    call("POST", "/v1/projects".into(), member.clone(), Some(json!({"name": "m"})))
        .await
        .expect_error(403, "organization admin");
    let created = call("POST", "/v1/projects".into(), admin.clone(), Some(json!({"name": "a"}))).await;
    let project = created.expect(202)["project"]["id"].as_str().unwrap().to_string();
    // Members hold every scope otherwise: reading works.
    call("GET", format!("/v1/projects/{project}"), member.clone(), None).await.expect(200);
    // API keys: create and revoke are admin-only.
    let org = call("GET", "/v1/me".into(), admin.clone(), None).await.expect(200)["principal"]["organization"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let keys_path = format!("/v1/organizations/{org}/api-keys");
    call("POST", keys_path.clone(), member.clone(), Some(json!({"name": "k", "scopes": ["projects:read"]})))
        .await
        .expect_error(403, "organization admin");
    let key =
        call("POST", keys_path.clone(), admin.clone(), Some(json!({"name": "k", "scopes": ["projects:read"]}))).await;
    let key_id = key.expect(201)["api_key"]["id"].as_str().unwrap().to_string();
    assert_eq!(key.body["api_key"]["created_by"], "user_admin", "a key records the session that made it");
    call("DELETE", format!("{keys_path}/{key_id}"), member.clone(), None).await.expect_error(403, "organization admin");
    // Overwrite restore: admin-only. It needs a completed backup, which a
    // member may take.
    wait_for(&app, &admin, &created.body["job"]["id"]).await;
    let backup = call("POST", format!("/v1/projects/{project}/backups"), member.clone(), Some(json!({}))).await;
    let backup_body = backup.expect(202).clone();
    wait_for(&app, &member, &backup_body["job"]["id"]).await;
    let restore = json!({"backup_id": backup_body["backup"]["id"], "mode": "overwrite"});
    call("POST", format!("/v1/projects/{project}/restores"), member.clone(), Some(restore))
        .await
        .expect_error(403, "organization admin");
    // Project delete: member refused.
    call("DELETE", format!("/v1/projects/{project}"), member.clone(), None)
        .await
        .expect_error(403, "organization admin");
    // The session's organization is its own: the bootstrap organization's project list is not it.
    let mine = call("GET", "/v1/projects".into(), member, None).await;
    assert_eq!(mine.expect(200).as_array().map(Vec::len), Some(1));
    call("DELETE", format!("{keys_path}/{key_id}"), admin, None).await.expect(200);
}

/// Polls a job with a session token until it completes.
async fn wait_for(app: &TestApp, token: &str, job_id: &Value) {
    let path = format!("/v1/jobs/{}", job_id.as_str().expect("a job id"));
    for _ in 0..600 {
        let job = app.call("GET", &path, Some(token), None).await.expect(200)["job"].clone();
        match job["state"].as_str() {
            Some("completed") => return,
            Some("failed") => panic!("job failed: {job}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("job {path} did not finish in 60 s");
}

#[tokio::test]
async fn a_session_without_an_active_organization_only_sees_itself() {
    let app = spawn().await;
    let token = sign(&json!({"sub": "user_lonely", "iss": ISSUER, "iat": now() - 5, "exp": now() + 60}));
    let me = app.call("GET", "/v1/me", Some(&token), None).await;
    let p = &me.expect(200)["principal"];
    assert_eq!((p["kind"].as_str(), p["user_id"].as_str()), (Some("session"), Some("user_lonely")));
    assert!(p["organization"].is_null() && p["role"].is_null());
    app.call("GET", "/v1/projects", Some(&token), None).await.expect_error(403, "no active organization");
    app.call("POST", "/v1/projects", Some(&token), Some(json!({"name": "x"})))
        .await
        .expect_error(403, "no active organization");
}

#[tokio::test]
async fn without_clerk_configuration_a_session_token_is_401_saying_so() {
    let app = TestApp::spawn().await;
    let token = sign(&v1("user_a", "org_clerk_acme", "org:admin"));
    app.call("GET", "/v1/me", Some(&token), None).await.expect_error(401, "no Clerk configuration");
}

/// `capydb-local sessions create` on the data dir.
fn dev_token(app: &TestApp, role: &str) -> String {
    let out = std::process::Command::new(crate::helpers::BIN)
        .args(["sessions", "create", "--org", "org_devco", "--user", "user_dev", "--role", role, "--data-dir"])
        .arg(app.dir.join("data"))
        .output()
        .expect("sessions create");
    assert!(out.status.success(), "sessions create failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEVELOPMENT"), "the command says what the token is for");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn development_sessions_work_only_on_a_server_started_for_them() {
    let app = TestApp::spawn_with(Options { args: vec!["--dev-sessions".into()], ..Default::default() }).await;
    let member = dev_token(&app, "member");
    let me = app.call("GET", "/v1/me", Some(&member), None).await;
    let p = &me.expect(200)["principal"];
    assert_eq!(
        (p["kind"].as_str(), p["role"].as_str(), p["user_id"].as_str()),
        (Some("session"), Some("member"), Some("user_dev"))
    );
    app.call("POST", "/v1/projects", Some(&member), Some(json!({"name": "m"})))
        .await
        .expect_error(403, "organization admin");
    let admin = dev_token(&app, "admin");
    app.call("POST", "/v1/projects", Some(&admin), Some(json!({"name": "a"}))).await.expect(202);
    assert!(app.logs().contains("FOR DEVELOPMENT ONLY"), "the server says it accepts development tokens");

    // A server not started for them refuses the same kind of token.
    let plain = TestApp::spawn().await;
    let token = dev_token(&plain, "admin");
    plain.call("GET", "/v1/me", Some(&token), None).await.expect_error(401, "no Clerk configuration");
}
