//! Every error leaves as `{"error": "..."}` JSON with its status: unknown
//! routes (404) and wrong methods (405) under both prefixes, the use cases'
//! errors, and plain-text answers caught by the JSON net.
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn unknown_routes_are_404_under_both_prefixes() {
    let api = api("routes").await;
    for path in [
        "/",
        "/v1",
        "/v1/nope",
        "/v2/projects",
        "/v1/projects/prj_1/nope",
        "/api/capydb",
        "/api/capydb/v1/nope",
        "/api/capydb/v1/projects/prj_1/backups/x/y",
        "/api/v1/projects",
    ] {
        // With a credential and without: the route is checked first.
        for key in [Some(api.key.as_str()), None] {
            let mut c = call("GET", path);
            if let Some(k) = key {
                c = c.key(k);
            }
            let r = c.send(&api.router).await;
            r.expect_error(404, "no such route");
            assert!(r.headers.contains_key("x-request-id"), "{path}: no request id on a 404");
        }
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_under_both_prefixes() {
    let api = api("methods").await;
    for (method, path) in [
        ("PUT", "/v1/projects"),
        ("DELETE", "/v1/me"),
        ("POST", "/v1/jobs/job_1"),
        ("PATCH", "/v1/health"),
        ("POST", "/v1/openapi.json"),
        ("GET", "/v1/projects/prj_1/credentials/rotate"),
        ("PUT", "/api/capydb/v1/projects"),
        ("DELETE", "/api/capydb/v1/organizations"),
        ("POST", "/api/capydb/v1/restores/rst_1"),
    ] {
        let r = call(method, path).key(&api.key).send(&api.router).await;
        r.expect_error(405, "method not allowed on this route");
    }
    // The right method on the same paths is served (not a 404/405).
    let r = call("GET", "/api/capydb/v1/projects").key(&api.key).send(&api.router).await;
    r.expect_status(200);
}

#[tokio::test]
async fn the_use_cases_errors_are_json_with_their_status() {
    let api = api("domain").await;
    // 401, with the challenge.
    let r = call("GET", "/v1/me").send(&api.router).await;
    r.expect_error(401, "missing credential");
    assert_eq!(r.headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    // 400 from a use case's own check (not the extractor).
    let keys = format!("/v1/organizations/{}/api-keys", api.org_id);
    let both =
        json!({"name": "k", "scopes": ["projects:read"], "expires_in_days": 1, "expires_at": "2100-01-01T00:00:00Z"});
    call("POST", &keys).key(&api.key).json(both).send(&api.router).await.expect_error(400, "not both");
    // 404.
    call("GET", "/v1/jobs/job_01jzzzzzzzzzzzzzzzzzzzzzzz")
        .key(&api.key)
        .send(&api.router)
        .await
        .expect_error(404, "not found");
    // 409: a project whose provision job holds its lock cannot be deleted yet
    // (no worker runs here, so the job stays queued).
    let created = call("POST", "/v1/projects").key(&api.key).json(json!({"name": "busy"})).send(&api.router).await;
    let created = created.expect_status(202);
    assert_eq!(created["project"]["state"], "provisioning");
    let id = created["project"]["id"].as_str().unwrap();
    let r = call("DELETE", format!("/v1/projects/{id}")).key(&api.key).send(&api.router).await;
    r.expect_error(409, "");
    // 403.
    let minted = call("POST", &keys).key(&api.key).json(json!({"name": "ro", "scopes": ["projects:read"]}));
    let ro = minted.send(&api.router).await.expect_status(201)["plaintext"].as_str().unwrap().to_string();
    call("DELETE", format!("/v1/projects/{id}")).key(&ro).send(&api.router).await.expect_error(403, "projects:write");
}

/// What a layer or axum itself answers in plain text is rewritten to the
/// API's shape, keeping status and headers; JSON and successes pass.
#[test]
fn plain_text_errors_become_json() {
    let plain = (StatusCode::PAYLOAD_TOO_LARGE, [("x-kept", "1")], "length limit exceeded").into_response();
    let res = capydb_api::middleware::json_errors(plain);
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let types: Vec<_> = res.headers().get_all(header::CONTENT_TYPE).iter().collect();
    assert!(types.iter().any(|t| *t == "application/json"), "{types:?}");
    assert_eq!(res.headers().get("x-kept").unwrap(), "1");
    assert!(res.headers().get(header::CONTENT_LENGTH).is_none_or(|l| l != "21"), "a stale content-length was kept");
    let body = futures_body(res);
    assert_eq!(body, json!({"error": "payload too large; see /v1/openapi.json"}));

    let ok = capydb_api::middleware::json_errors((StatusCode::OK, "fine").into_response());
    assert_eq!(ok.headers().get(header::CONTENT_TYPE).unwrap(), "text/plain; charset=utf-8");
}

fn futures_body(res: axum::response::Response) -> serde_json::Value {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let bytes = rt.block_on(res.into_body().collect()).unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// The rewritten answer carries one Content-Type, JSON's (`HeaderMap::extend`
/// with `(HeaderName, _)` pairs would append it after the plain-text one).
#[test]
fn plain_text_errors_have_one_json_content_type() {
    let plain = (StatusCode::BAD_REQUEST, "bad").into_response();
    let res = capydb_api::middleware::json_errors(plain);
    let types: Vec<_> = res.headers().get_all(header::CONTENT_TYPE).iter().collect();
    assert_eq!(types, ["application/json"]);
}
