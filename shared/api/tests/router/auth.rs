//! Authentication and authorization failures, as the API answers them today
//! (see `extract::credential`, `App::authenticate_api_key`, `Principal`).
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request};
use capydb_domain::model::ApiKey;
use capydb_domain::scopes::Scope;
use capydb_domain::{apikey, ids, RateLimitSettings, Settings};
use serde_json::json;
use tower::ServiceExt;

use crate::helpers::*;

#[tokio::test]
async fn missing_and_malformed_credentials_are_401() {
    let api = api("creds").await;
    let r = call("GET", "/v1/me").send(&api.router).await;
    r.expect_error(401, "missing credential");
    assert_eq!(r.headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    for value in
        ["Basic dXNlcjpwYXNz".to_string(), format!("Token {}", api.key), format!("Bearer{}", api.key), api.key.clone()]
    {
        let r = call("GET", "/v1/me").header("authorization", &value).send(&api.router).await;
        r.expect_error(401, "must be \"Bearer <API key>\"");
    }
    // A bearer token that is not a key of ours, or whose checksum is off.
    let mut typo = api.key.clone().into_bytes();
    let i = apikey::LIVE_PREFIX.len() + 2;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for token in ["garbage", "capy_live_", &api.key[..api.key.len() - 1], &typo, &api.key.replace("live", "test")] {
        let r = call("GET", "/v1/me").header("authorization", &format!("Bearer {token}")).send(&api.router).await;
        r.expect_error(401, "malformed API key");
    }
    // The key itself works, by either header and either spelling of Bearer.
    for (h, v) in [
        ("authorization", format!("Bearer {}", api.key)),
        ("authorization", format!("bearer {}", api.key)),
        ("x-api-key", api.key.clone()),
    ] {
        let r = call("GET", "/v1/me").header(h, &v).send(&api.router).await;
        assert_eq!(r.expect_status(200)["principal"]["organization"]["id"], api.org_id.as_str(), "{h}");
    }
}

#[tokio::test]
async fn unknown_revoked_and_expired_keys_are_401() {
    let api = api("keys").await;
    let unknown = apikey::generate(apikey::LIVE_PREFIX);
    call("GET", "/v1/me").key(&unknown).send(&api.router).await.expect_error(401, "unknown API key");

    // Revoked through the API: refused at once.
    let keys = format!("/v1/organizations/{}/api-keys", api.org_id);
    let minted = call("POST", &keys).key(&api.key).json(json!({"name": "soon revoked", "scopes": ["projects:read"]}));
    let minted = minted.send(&api.router).await.expect_status(201);
    let plaintext = minted["plaintext"].as_str().unwrap();
    call("GET", "/v1/projects").key(plaintext).send(&api.router).await.expect_status(200);
    let key_id = minted["api_key"]["id"].as_str().unwrap();
    call("DELETE", format!("{keys}/{key_id}")).key(&api.key).send(&api.router).await.expect_status(200);
    call("GET", "/v1/projects").key(plaintext).send(&api.router).await.expect_error(401, "revoked");

    // Expired: a key whose expiry has passed (the API mints future expiries only).
    let now = api.app.now();
    let expired = apikey::generate(apikey::LIVE_PREFIX);
    let row = ApiKey {
        id: ids::new_id(ids::API_KEY),
        organization_id: api.org_id.clone(),
        name: "expired".into(),
        prefix: apikey::LIVE_PREFIX.into(),
        last4: apikey::last4(&expired),
        scopes: Scope::ALL.to_vec(),
        project_id: None,
        expires_at: Some(now - chrono::Duration::seconds(1)),
        revoked_at: None,
        last_used_at: None,
        last_used_ip: None,
        created_at: now - chrono::Duration::days(1),
        created_by: None,
        hash: apikey::hash(&expired),
    };
    api.app.store.insert_api_key(&row, None).await.unwrap();
    call("GET", "/v1/me").key(&expired).send(&api.router).await.expect_error(401, "expired");
    // The same key a minute from expiry still works.
    let fresh = apikey::generate(apikey::LIVE_PREFIX);
    let row = ApiKey {
        id: ids::new_id(ids::API_KEY),
        expires_at: Some(now + chrono::Duration::seconds(60)),
        last4: apikey::last4(&fresh),
        created_by: None,
        hash: apikey::hash(&fresh),
        ..row
    };
    api.app.store.insert_api_key(&row, None).await.unwrap();
    call("GET", "/v1/me").key(&fresh).send(&api.router).await.expect_status(200);
}

#[tokio::test]
async fn a_missing_scope_is_403_naming_it() {
    let api = api("scopes").await;
    let keys = format!("/v1/organizations/{}/api-keys", api.org_id);
    let minted = call("POST", &keys).key(&api.key).json(json!({"name": "reader", "scopes": ["projects:read"]}));
    let reader = minted.send(&api.router).await.expect_status(201)["plaintext"].as_str().unwrap().to_string();
    call("GET", "/v1/projects").key(&reader).send(&api.router).await.expect_status(200);
    for (method, path, scope) in [
        ("POST", "/v1/projects".to_string(), "projects:write"),
        ("GET", "/v1/jobs/job_01jzzzzzzzzzzzzzzzzzzzzzzz".to_string(), "jobs:read"),
        ("GET", keys.clone(), "api_keys:read"),
        ("GET", "/v1/organizations".to_string(), "organizations:read"),
        ("GET", format!("/v1/organizations/{}/webhooks", api.org_id), "organizations:read"),
    ] {
        let mut c = call(method, &path).key(&reader);
        if method == "POST" {
            c = c.json(json!({"name": "x"}));
        }
        c.send(&api.router).await.expect_error(403, &format!("lacks the scope {scope}"));
    }
    // A key cannot grant a scope it does not hold.
    let r = call("POST", &keys)
        .key(&api.key)
        .json(json!({"name": "minter", "scopes": ["api_keys:write", "projects:read"]}));
    let minter = r.send(&api.router).await.expect_status(201)["plaintext"].as_str().unwrap().to_string();
    let r = call("POST", &keys).key(&minter).json(json!({"name": "x", "scopes": ["projects:read", "projects:write"]}));
    r.send(&api.router).await.expect_error(403, "cannot grant the scope projects:write");
    let r = call("POST", &keys).key(&minter).json(json!({"name": "x", "scopes": ["projects:read"]}));
    r.send(&api.router).await.expect_status(201);
}

#[tokio::test]
async fn a_project_scoped_key_gets_403_on_a_sibling_and_404_across_organizations() {
    let api = api("restricted").await;
    let project = |name: &'static str, key: String| {
        let r = call("POST", "/v1/projects").key(&key).json(json!({ "name": name }));
        let router = api.router.clone();
        async move { r.send(&router).await.expect_status(202)["project"]["id"].as_str().unwrap().to_string() }
    };
    let mine = project("mine", api.key.clone()).await;
    let sibling = project("sibling", api.key.clone()).await;
    let keys = format!("/v1/organizations/{}/api-keys", api.org_id);
    let r = call("POST", &keys)
        .key(&api.key)
        .json(json!({"name": "ci", "scopes": ["projects:read", "jobs:read"], "project_id": mine}));
    let ci = r.send(&api.router).await.expect_status(201)["plaintext"].as_str().unwrap().to_string();

    let got = call("GET", format!("/v1/projects/{mine}")).key(&ci).send(&api.router).await.expect_status(200);
    assert_eq!(got["project"]["id"], mine.as_str());
    let listed = call("GET", "/v1/projects").key(&ci).send(&api.router).await.expect_status(200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "a project-scoped key lists its one project: {listed}");
    // A sibling in the same organization: 403 naming the restriction (today's rule).
    let r = call("GET", format!("/v1/projects/{sibling}")).key(&ci).send(&api.router).await;
    r.expect_error(403, &format!("restricted to project {mine}"));
    let r = call("GET", format!("/v1/projects/{sibling}/jobs")).key(&ci).send(&api.router).await;
    r.expect_error(403, "restricted to project");
    // Organization-wide resources: 403 too.
    call("GET", &keys).key(&ci).send(&api.router).await.expect_error(403, "");

    // Another organization's project: 404, the answer for an id that exists
    // nowhere, for the restricted key and the admin key alike.
    let (_, other_key) =
        capydb_domain::organizations::create_organization(api.app.store.as_ref(), api.app.now(), "other", None)
            .await
            .unwrap();
    let theirs = project("theirs", other_key).await;
    for key in [&ci, &api.key] {
        let r = call("GET", format!("/v1/projects/{theirs}")).key(key).send(&api.router).await;
        let theirs_msg = r.expect_error(404, "not found");
        let r = call("GET", "/v1/projects/prj_01jzzzzzzzzzzzzzzzzzzzzzzz").key(key).send(&api.router).await;
        let nowhere_msg = r.expect_error(404, "not found");
        assert_eq!(
            theirs_msg.replace(&theirs, "ID"),
            nowhere_msg.replace("prj_01jzzzzzzzzzzzzzzzzzzzzzzz", "ID"),
            "another organization's project must read like a missing one"
        );
    }
}

/// The limiter counts per client address: `ClientIp` (set by the Lambda
/// entry point) or the TCP peer (`capydb-local`'s server runs each
/// connection as `serve::with_peer`; axum's own server sets `ConnectInfo`). A request with neither is not counted and carries no
/// `RateLimit-*` headers: today's behaviour, which `oneshot` without an
/// address relies on.
#[tokio::test]
async fn the_rate_limit_counts_per_address_and_skips_requests_without_one() {
    let settings = Settings {
        rate_limit: RateLimitSettings { limit: 2, window: std::time::Duration::from_secs(3600) },
        ..Settings::default()
    };
    let api = api_with("ratelimit", settings).await;
    for remaining in ["1", "0"] {
        let r = call("GET", "/v1/health").client_ip("127.0.0.1").send(&api.router).await;
        assert_eq!(r.headers.get("ratelimit-limit").unwrap(), "2");
        assert_eq!(r.headers.get("ratelimit-remaining").unwrap(), remaining);
    }
    let r = call("GET", "/v1/me").key(&api.key).client_ip("127.0.0.1").send(&api.router).await;
    r.expect_error(429, "rate limit exceeded: at most 2 requests per 3600 s");
    let retry: u64 = r.headers.get(header::RETRY_AFTER).unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers.get("ratelimit-reset").unwrap().to_str().unwrap(), retry.to_string());
    // The TCP peer counts the same way, per address: as `capydb-local`'s
    // server reports it (`serve::with_peer`) or as a `ConnectInfo<SocketAddr>`.
    for (peer, as_peer, expect_limited) in [
        ("127.0.0.1:40000", true, true),
        ("127.0.0.1:40001", false, true),
        ("127.0.0.2:40000", true, false),
        ("127.0.0.3:40000", false, false),
    ] {
        let mut req =
            Request::get("/v1/me").header("authorization", format!("Bearer {}", api.key)).body(Body::empty()).unwrap();
        let addr = peer.parse::<SocketAddr>().unwrap();
        let res = if as_peer {
            capydb_api::serve::with_peer(addr, api.router.clone().oneshot(req)).await.unwrap()
        } else {
            req.extensions_mut().insert(ConnectInfo(addr));
            api.router.clone().oneshot(req).await.unwrap()
        };
        assert_eq!(res.status() == 429, expect_limited, "{peer}: {}", res.status());
        assert_eq!(res.headers().get("ratelimit-limit").unwrap(), "2", "{peer}: counted");
    }
    // No address: not counted, no headers, never limited.
    for _ in 0..3 {
        let r = call("GET", "/v1/me").key(&api.key).send(&api.router).await;
        r.expect_status(200);
        assert!(r.headers.get("ratelimit-limit").is_none());
    }
}
