//! What the extractors refuse, and how: media type (415), malformed or
//! non-object bodies and wrong field types (400, naming the field),
//! oversized bodies (413), and path segments that are not ids.
use serde_json::json;

use crate::helpers::*;

/// The organization's name as stored: a refused body must change nothing.
async fn org_name(api: &Api) -> String {
    let v = call("GET", format!("/v1/organizations/{}", api.org_id)).key(&api.key).send(&api.router).await;
    v.expect_status(200)["organization"]["name"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_body_that_is_not_sent_as_json_is_415() {
    let api = api("media").await;
    let path = format!("/v1/organizations/{}", api.org_id);
    let body = br#"{"name":"renamed"}"#.to_vec();
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/jsonx", "json"] {
        let r = call("PATCH", &path).key(&api.key).raw(ct, body.clone()).send(&api.router).await;
        r.expect_error(415, "Content-Type: application/json");
    }
    // No Content-Type at all.
    let mut c = call("PATCH", &path).key(&api.key);
    c.body = Some(body.clone());
    c.send(&api.router).await.expect_error(415, "application/json");
    assert_eq!(org_name(&api).await, "router", "a refused body renamed the organization");

    // Parameters and case do not matter.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = call("PATCH", &path).key(&api.key).raw(ct, body.clone()).send(&api.router).await;
        assert_eq!(r.expect_status(200)["organization"]["name"], "renamed", "{ct}");
    }
}

#[tokio::test]
async fn malformed_and_non_object_bodies_are_400() {
    let api = api("malformed").await;
    let path = format!("/v1/organizations/{}", api.org_id);
    let send = |body: &'static [u8]| {
        let c = call("PATCH", &path).key(&api.key).raw("application/json", body.to_vec());
        c.send(&api.router)
    };
    send(b"{\"name\": ").await.expect_error(400, "malformed JSON");
    send(b"{\"name\": \"x\",}").await.expect_error(400, "malformed JSON");
    send(b"{\"name\": \"x\"} {}").await.expect_error(400, "trailing characters");
    send(b"").await.expect_error(400, "a JSON request body is required");
    // serde's derive would fill the struct's first field from an array.
    for body in [&b"[\"x\"]"[..], b"[null]", b"\"x\"", b"5", b"null", b"  [ ]"] {
        send(body).await.expect_error(400, "must be a JSON object");
    }
    send(b"{\"name\": \"x\", \"colour\": \"blue\"}").await.expect_error(400, "unknown field `colour`");
    assert_eq!(org_name(&api).await, "router", "a refused body renamed the organization");
}

#[tokio::test]
async fn a_wrong_field_type_is_400_naming_the_field() {
    let api = api("types").await;
    let org = format!("/v1/organizations/{}", api.org_id);
    let msg = call("PATCH", &org).key(&api.key).json(json!({"name": 42})).send(&api.router).await.expect_error(400, "");
    assert!(msg.starts_with("invalid request body: name"), "{msg}");
    assert!(msg.contains("invalid type: integer `42`"), "{msg}");
    // serde's position ("at line 1 column 11") is not part of the message.
    assert!(!msg.contains(" at line "), "{msg}");

    let keys = format!("/v1/organizations/{}/api-keys", api.org_id);
    let r = call("POST", &keys).key(&api.key).json(json!({"name": "k", "scopes": "projects:read"}));
    let msg = r.send(&api.router).await.expect_error(400, "");
    assert!(msg.starts_with("invalid request body: scopes"), "{msg}");
    // A nested field is named by its path.
    let r = call("POST", &keys).key(&api.key).json(json!({"name": "k", "scopes": ["projects:read", 7]}));
    let msg = r.send(&api.router).await.expect_error(400, "");
    assert!(msg.starts_with("invalid request body: scopes[1]"), "{msg}");
    // A field's own check ("must ...") reads as a sentence about the field.
    let r = call("POST", &keys).key(&api.key).json(json!({"name": "k", "scopes": []}));
    let msg = r.send(&api.router).await.expect_error(400, "");
    assert!(msg.starts_with("invalid request body: scopes must"), "{msg}");
    assert_eq!(org_name(&api).await, "router");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_one_at_it_is_read() {
    let api = api("size").await;
    let max = capydb_api::extract::MAX_BODY_BYTES;
    let path = format!("/v1/organizations/{}", api.org_id);
    // `{"name":"xxx..."}` of exactly `len` bytes.
    let body = |len: usize| format!("{{\"name\":\"{}\"}}", "x".repeat(len - 11)).into_bytes();
    assert_eq!(body(max).len(), max);
    let r = call("PATCH", &path).key(&api.key).raw("application/json", body(max + 1)).send(&api.router).await;
    r.expect_error(413, &format!("larger than {max} bytes"));
    // At the limit the body is read and parsed: the name is too long (400), not the body.
    let r = call("PATCH", &path).key(&api.key).raw("application/json", body(max)).send(&api.router).await;
    r.expect_error(400, "name");
}

#[tokio::test]
async fn path_ids_that_are_not_ids_are_json_errors() {
    let api = api("ids").await;
    // Not UTF-8 once percent-decoded.
    for path in ["/v1/projects/%FF", "/v1/jobs/%C3%28", "/api/capydb/v1/preview-databases/%FE%FF"] {
        call("GET", path).key(&api.key).send(&api.router).await.expect_error(400, "valid UTF-8");
    }
    // Well-formed strings that name nothing: 404, the id echoed back.
    for (path, what) in [
        ("/v1/projects/not-an-id", "project not-an-id not found"),
        ("/v1/projects/%27%20OR%201%3D1%20--", "project ' OR 1=1 -- not found"),
        ("/v1/jobs/prj_01jzzzzzzzzzzzzzzzzzzzzzzz", "not found"),
        ("/v1/backups/..", "not found"),
    ] {
        call("GET", path).key(&api.key).send(&api.router).await.expect_error(404, what);
    }
    // Another kind's id where a key id belongs.
    let path = format!("/v1/organizations/{0}/api-keys/{0}", api.org_id);
    call("GET", &path).key(&api.key).send(&api.router).await.expect_error(404, "not found");
}
