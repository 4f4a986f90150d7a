//! `Idempotency-Key` on POST: replays byte for byte, one resource per key,
//! 422 for another request under a used key, 409 while the first runs, 400
//! for a bad key, and other methods and unauthenticated calls untouched.
use capydb_domain::ports::IdempotencyClaim;
use serde_json::json;

use crate::helpers::{api, call};

#[tokio::test]
async fn a_retried_create_replays_the_first_answer_and_creates_one_project() {
    let api = api("idem-replay").await;
    let create = || {
        call("POST", "/v1/projects").key(&api.key).header("Idempotency-Key", "ci-4412").json(json!({"name": "pr-1"}))
    };
    let first = create().send(&api.router).await;
    assert_eq!(first.status.as_u16(), 202, "{:?}", String::from_utf8_lossy(&first.body));
    assert!(first.headers.get("idempotent-replayed").is_none(), "the first answer is no replay");
    for _ in 0..3 {
        let again = create().send(&api.router).await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, first.body, "the replay is the first answer, byte for byte");
        assert_eq!(again.headers.get("location"), first.headers.get("location"));
        assert_eq!(again.headers.get("content-type"), first.headers.get("content-type"));
        assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
        assert!(again.headers.get("x-request-id").is_some(), "a replay has its own request id");
    }
    let list = call("GET", "/v1/projects").key(&api.key).send(&api.router).await.expect_status(200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "one project for one key: {list}");

    // Without the header, or with another key, the same body is a new request.
    let other =
        call("POST", "/v1/projects").key(&api.key).header("Idempotency-Key", "ci-4413").json(json!({"name": "pr-2"}));
    assert_eq!(other.send(&api.router).await.status.as_u16(), 202);
    let list = call("GET", "/v1/projects").key(&api.key).send(&api.router).await.expect_status(200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_same_key_for_another_request_is_422() {
    let api = api("idem-mismatch").await;
    let post = |body| call("POST", "/v1/projects").key(&api.key).header("Idempotency-Key", "k-1").json(body);
    assert_eq!(post(json!({"name": "a"})).send(&api.router).await.status.as_u16(), 202);
    post(json!({"name": "b"})).send(&api.router).await.expect_error(422, "different request");
    // Another path under the same key too.
    let path = format!("/v1/organizations/{}/api-keys", api.org_id);
    call("POST", &path)
        .key(&api.key)
        .header("Idempotency-Key", "k-1")
        .json(json!({"name": "a"}))
        .send(&api.router)
        .await
        .expect_error(422, "different request");
}

#[tokio::test]
async fn a_key_still_in_flight_is_409() {
    let api = api("idem-inflight").await;
    // A request holding the key right now, as the store records it.
    let credential = api.app.authenticate_api_key(&api.key, None).await.unwrap().credential_id();
    let body = json!({"name": "a"}).to_string();
    let now = api.app.now();
    let claim = IdempotencyClaim {
        key: capydb_domain::idempotency::record_key(&credential, "busy"),
        fingerprint: capydb_domain::idempotency::fingerprint("POST", "/v1/projects", body.as_bytes()),
        now,
        lease_until: now + chrono::Duration::seconds(30),
        expires_at: now + chrono::Duration::hours(24),
    };
    api.app.store.begin_idempotent(&claim).await.unwrap();
    call("POST", "/v1/projects")
        .key(&api.key)
        .header("Idempotency-Key", "busy")
        .raw("application/json", body.into_bytes())
        .send(&api.router)
        .await
        .expect_error(409, "still in progress");
}

#[tokio::test]
async fn bad_keys_are_400_and_other_methods_and_bad_credentials_ignore_the_header() {
    let api = api("idem-bad").await;
    let post =
        |k: &str| call("POST", "/v1/projects").key(&api.key).header("Idempotency-Key", k).json(json!({"name": "a"}));
    post("").send(&api.router).await.expect_error(400, "empty");
    post(&"k".repeat(256)).send(&api.router).await.expect_error(400, "at most 255");
    post("has space").send(&api.router).await.expect_error(400, "visible ASCII");
    // GET ignores it.
    let get = call("GET", "/v1/projects").key(&api.key).header("Idempotency-Key", "");
    assert_eq!(get.send(&api.router).await.status.as_u16(), 200);
    // An unknown key is answered 401 by the handler, as without the header, and keeps no record.
    let bad =
        call("POST", "/v1/projects").key("capy_live_nope").header("Idempotency-Key", "x").json(json!({"name": "a"}));
    bad.send(&api.router).await.expect_error(401, "");
    // A 4xx of the handler is an answer too, replayed.
    let invalid =
        || call("POST", "/v1/projects").key(&api.key).header("Idempotency-Key", "v").json(json!({"name": ""}));
    let first = invalid().send(&api.router).await;
    assert_eq!(first.status.as_u16(), 400, "{:?}", String::from_utf8_lossy(&first.body));
    let again = invalid().send(&api.router).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert!(again.headers.get("idempotent-replayed").is_some());
}

#[tokio::test]
async fn answers_holding_a_secret_are_replayed_but_kept_sealed() {
    use capydb_domain::idempotency::{fingerprint, record_key};
    use capydb_domain::ports::IdempotencyBegin;
    let api = api("idem-sealed").await;
    let path = format!("/v1/organizations/{}/api-keys", api.org_id);
    let body = json!({"name": "ci", "scopes": ["projects:read"]});
    let mint = || call("POST", &path).key(&api.key).header("Idempotency-Key", "mint-1").json(body.clone());
    let first = mint().send(&api.router).await;
    let plaintext = first.expect_status(201)["plaintext"].as_str().unwrap().to_string();
    let again = mint().send(&api.router).await;
    assert_eq!(again.body, first.body, "the retry gets its key");
    // At rest the answer is sealed: the store's record does not hold the key.
    let credential = api.app.authenticate_api_key(&api.key, None).await.unwrap().credential_id();
    let now = api.app.now();
    let claim = IdempotencyClaim {
        key: record_key(&credential, "mint-1"),
        fingerprint: fingerprint("POST", &path, body.to_string().as_bytes()),
        now,
        lease_until: now + chrono::Duration::seconds(30),
        expires_at: now + chrono::Duration::hours(24),
    };
    match api.app.store.begin_idempotent(&claim).await.unwrap() {
        IdempotencyBegin::Replay(stored) => {
            let at_rest = String::from_utf8_lossy(&stored.body);
            assert!(!at_rest.contains(&plaintext) && !at_rest.contains("plaintext"), "stored in the clear: {at_rest}");
        }
        other => panic!("expected the stored answer, got {other:?}"),
    }
}
