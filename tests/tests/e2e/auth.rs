//! Every authentication and authorization rule of the API contract.
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn whoami_works_with_bearer_and_x_api_key() {
    let app = TestApp::spawn().await;
    let bearer = app.get("/v1/me").await;
    let p = &bearer.expect(200)["principal"];
    assert_eq!(p["kind"], "api_key");
    assert_eq!(p["organization"]["id"], app.org_id.as_str());
    assert_eq!(p["scopes"].as_array().map(Vec::len), Some(10), "the bootstrap key holds every scope: {p}");
    assert!(p["key"]["hash"].is_null(), "the key hash must never be serialized");
    let x = app.try_request("GET", "/v1/me", None, &[("x-api-key", &app.key)]).await.unwrap();
    assert_eq!(x.expect(200)["principal"], bearer.body["principal"]);
    assert!(app.stdout.contains(&format!("CAPYDB_API_KEY={}", app.key)), "bootstrap lines: {}", app.stdout);
}

#[tokio::test]
async fn missing_malformed_and_unknown_credentials_are_401() {
    let app = TestApp::spawn().await;
    let r = app.call("GET", "/v1/me", None, None).await;
    r.expect_error(401, "missing credential");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));

    // A checksum mismatch is refused without a store read.
    let mut bad = app.key.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'a' { 'b' } else { 'a' });
    app.call("GET", "/v1/me", Some(&bad), None).await.expect_error(401, "malformed");

    // Well-formed but unknown.
    let unknown = capydb_domain::apikey::generate(capydb_domain::apikey::LIVE_PREFIX);
    app.call("GET", "/v1/me", Some(&unknown), None).await.expect_error(401, "unknown");
    let r = app.try_request("GET", "/v1/me", None, &[("authorization", "Basic Zm9vOmJhcg==")]).await.unwrap();
    r.expect_error(401, "Bearer");
}

#[tokio::test]
async fn revoked_key_is_refused_on_the_next_request() {
    let app = TestApp::spawn().await;
    let r = app
        .post(&format!("/v1/organizations/{}/api-keys", app.org_id), json!({"name": "ci", "scopes": ["projects:read"]}))
        .await;
    let b = r.expect(201).clone();
    let key = b["plaintext"].as_str().unwrap().to_string();
    let id = b["api_key"]["id"].as_str().unwrap().to_string();
    assert!(b["api_key"]["hash"].is_null());
    assert_eq!(b["api_key"]["last4"].as_str(), Some(&key[key.len() - 4..]));
    app.call("GET", "/v1/projects", Some(&key), None).await.expect(200);
    let revoked = app.delete(&format!("/v1/organizations/{}/api-keys/{id}", app.org_id)).await;
    assert!(revoked.expect(200)["api_key"]["revoked_at"].is_string());
    app.call("GET", "/v1/projects", Some(&key), None).await.expect_error(401, "revoked");
    // The key list shows it revoked, with no secret.
    let list = app.get(&format!("/v1/organizations/{}/api-keys", app.org_id)).await;
    let listed = list.expect(200).as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).cloned().unwrap();
    assert!(listed["revoked_at"].is_string());
    assert!(!list.text.contains(&key), "the plaintext must never be listed");
}

#[tokio::test]
async fn expired_key_is_401() {
    let app = TestApp::spawn().await;
    let expires = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let key = app.create_key(json!({"name": "short", "scopes": ["projects:read"], "expires_at": expires})).await;
    app.call("GET", "/v1/projects", Some(&key), None).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    app.call("GET", "/v1/projects", Some(&key), None).await.expect_error(401, "expired");
    // Past expiry and both forms at once are refused at creation.
    let path = format!("/v1/organizations/{}/api-keys", app.org_id);
    app.post(&path, json!({"name": "x", "scopes": ["projects:read"], "expires_at": "2001-01-01T00:00:00Z"}))
        .await
        .expect_error(400, "future");
    app.post(&path, json!({"name": "x", "scopes": ["projects:read"], "expires_in_days": 1, "expires_at": expires}))
        .await
        .expect_error(400, "not both");
    app.post(&path, json!({"name": "x", "scopes": ["projects:read"], "expires_in_days": 0}))
        .await
        .expect_error(400, "expires_in_days");
}

#[tokio::test]
async fn wrong_scope_is_403_naming_the_scope() {
    let app = TestApp::spawn().await;
    let key = app.create_key(json!({"name": "reader", "scopes": ["projects:read"]})).await;
    app.call("POST", "/v1/projects", Some(&key), Some(json!({"name": "x"}))).await.expect_error(403, "projects:write");
    app.call("GET", "/v1/jobs/job_01jzzzzzzzzzzzzzzzzzzzzzzz", Some(&key), None).await.expect_error(403, "jobs:read");
    app.call("GET", &format!("/v1/organizations/{}/api-keys", app.org_id), Some(&key), None)
        .await
        .expect_error(403, "api_keys:read");
    app.call("GET", "/v1/organizations", Some(&key), None).await.expect_error(403, "organizations:read");
}

#[tokio::test]
async fn no_privilege_escalation_when_minting_keys() {
    let app = TestApp::spawn().await;
    let minter = app.create_key(json!({"name": "minter", "scopes": ["api_keys:write", "projects:read"]})).await;
    let path = format!("/v1/organizations/{}/api-keys", app.org_id);
    let r = app.call("POST", &path, Some(&minter), Some(json!({"name": "more", "scopes": ["projects:write"]}))).await;
    r.expect_error(403, "projects:write");
    let r = app.call("POST", &path, Some(&minter), Some(json!({"name": "same", "scopes": ["projects:read"]}))).await;
    r.expect(201);
    app.post(&path, json!({"name": "x", "scopes": []})).await.expect_error(400, "scopes must list at least one");
    app.post(&path, json!({"name": "x", "scopes": ["root"]})).await.expect_error(400, "unknown variant");
}

#[tokio::test]
async fn project_scoped_key_acts_on_its_project_only() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let (mine, mine_job) = app.create_project("mine").await;
    let (sibling, sibling_job) = app.create_project("sibling").await;
    let path = format!("/v1/organizations/{}/api-keys", app.org_id);

    // Org-management scopes are refused on a project-scoped key.
    for scope in ["organizations:write", "api_keys:read", "api_keys:write"] {
        app.post(&path, json!({"name": "ci", "scopes": [scope], "project_id": mine})).await.expect_error(400, scope);
    }
    app.post(&path, json!({"name": "ci", "scopes": ["projects:read"], "project_id": "prj_01jzzzzzzzzzzzzzzzzzzzzzzz"}))
        .await
        .expect_error(404, "not found in this organization");

    let ci = app
        .create_key(json!({"name": "ci", "project_id": mine,
            "scopes": ["projects:read", "projects:write", "jobs:read", "credentials:read", "organizations:read"]}))
        .await;
    let me = app.call("GET", "/v1/me", Some(&ci), None).await;
    assert_eq!(me.expect(200)["principal"]["project_id"], mine.as_str());

    app.call("GET", &format!("/v1/projects/{mine}"), Some(&ci), None).await.expect(200);
    app.call("GET", &format!("/v1/jobs/{mine_job}"), Some(&ci), None).await.expect(200);
    app.call("GET", &format!("/v1/projects/{mine}/jobs"), Some(&ci), None).await.expect(200);
    let list = app.call("GET", "/v1/projects", Some(&ci), None).await;
    let ids: Vec<_> =
        list.expect(200).as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec![mine.clone()], "a project-scoped key lists its one project");

    app.call("GET", &format!("/v1/projects/{sibling}"), Some(&ci), None).await.expect_error(403, "restricted");
    app.call("PATCH", &format!("/v1/projects/{sibling}"), Some(&ci), Some(json!({"name": "pwned"})))
        .await
        .expect_error(403, "restricted");
    app.call("DELETE", &format!("/v1/projects/{sibling}"), Some(&ci), None).await.expect_error(403, "restricted");
    app.call("GET", &format!("/v1/jobs/{sibling_job}"), Some(&ci), None).await.expect_error(403, "restricted");
    app.call("GET", &format!("/v1/projects/{sibling}/jobs"), Some(&ci), None).await.expect_error(403, "restricted");
    app.call("GET", &format!("/v1/projects/{sibling}/connections"), Some(&ci), None)
        .await
        .expect_error(403, "restricted");
    app.call("POST", "/v1/projects", Some(&ci), Some(json!({"name": "new"})))
        .await
        .expect_error(403, "cannot create projects");
    app.call("PATCH", &format!("/v1/organizations/{}", app.org_id), Some(&ci), Some(json!({"name": "x"})))
        .await
        .expect_error(403, "organizations:write");
    // The sibling was untouched.
    let s = app.get(&format!("/v1/projects/{sibling}")).await;
    assert_eq!(s.expect(200)["project"]["name"], "sibling");
}

#[tokio::test]
async fn another_organizations_resources_are_404_for_every_credential() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let (project, job) = app.create_project("ours").await;
    let ours_key_id = app.get(&format!("/v1/organizations/{}/api-keys", app.org_id)).await.body[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let out = std::process::Command::new(BIN)
        .args(["orgs", "create", "--name", "Other Co", "--data-dir"])
        .arg(app.dir.join("data"))
        .output()
        .expect("orgs create");
    assert!(out.status.success(), "orgs create failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let other_key = stdout.lines().find_map(|l| l.strip_prefix("CAPYDB_API_KEY=")).expect("key line").to_string();
    let other_org = stdout.lines().find_map(|l| l.strip_prefix("CAPYDB_ORG_ID=")).expect("org line").to_string();

    let k = Some(other_key.as_str());
    app.call("GET", &format!("/v1/projects/{project}"), k, None).await.expect_error(404, "not found");
    app.call("DELETE", &format!("/v1/projects/{project}"), k, None).await.expect_error(404, "not found");
    app.call("GET", &format!("/v1/jobs/{job}"), k, None).await.expect_error(404, "not found");
    app.call("GET", &format!("/v1/organizations/{}", app.org_id), k, None).await.expect_error(404, "not found");
    app.call("GET", &format!("/v1/organizations/{}/api-keys", app.org_id), k, None)
        .await
        .expect_error(404, "not found");
    app.call("DELETE", &format!("/v1/organizations/{}/api-keys/{ours_key_id}", app.org_id), k, None)
        .await
        .expect_error(404, "not found");
    // And its own key id under its own org is 404 for ours too.
    app.get(&format!("/v1/organizations/{other_org}")).await.expect_error(404, "not found");
    let list = app.call("GET", "/v1/projects", k, None).await;
    assert_eq!(list.expect(200), &json!([]), "the other org has no projects");

    // A key minted from the command line for a project works the same way.
    let out = std::process::Command::new(BIN)
        .args(["keys", "create", "--scopes", "projects:read", "--project", &project, "--data-dir"])
        .arg(app.dir.join("data"))
        .output()
        .expect("keys create");
    assert!(out.status.success(), "keys create failed: {}", String::from_utf8_lossy(&out.stderr));
    let cli_key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("CAPYDB_API_KEY="))
        .unwrap()
        .to_string();
    app.call("GET", &format!("/v1/projects/{project}"), Some(&cli_key), None).await.expect(200);
}

#[tokio::test]
async fn last_used_is_recorded() {
    let app = TestApp::spawn().await;
    let r = app
        .post(&format!("/v1/organizations/{}/api-keys", app.org_id), json!({"name": "u", "scopes": ["projects:read"]}))
        .await;
    let b = r.expect(201).clone();
    assert!(b["api_key"]["last_used_at"].is_null());
    app.call("GET", "/v1/projects", b["plaintext"].as_str(), None).await.expect(200);
    let k =
        app.get(&format!("/v1/organizations/{}/api-keys/{}", app.org_id, b["api_key"]["id"].as_str().unwrap())).await;
    let k = &k.expect(200)["api_key"];
    assert!(k["last_used_at"].is_string(), "{k}");
    assert_eq!(k["last_used_ip"], "127.0.0.1");
}
