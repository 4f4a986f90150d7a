//! The conventions every endpoint shares.
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn both_prefixes_and_request_ids() {
    let app = TestApp::spawn().await;
    let a = app.get("/v1/me").await;
    let b = app.get("/api/capydb/v1/me").await;
    assert_eq!(a.expect(200), b.expect(200));
    let generated = a.header("x-request-id").expect("a generated request id");
    assert!(generated.starts_with("req_"), "{generated}");
    assert_ne!(Some(generated), b.header("x-request-id"), "each request gets its own id");

    let auth = format!("Bearer {}", app.key);
    let r = app
        .try_request("GET", "/v1/me", None, &[("authorization", &auth), ("x-request-id", "ci-run-42.7")])
        .await
        .unwrap();
    assert_eq!(r.header("x-request-id").as_deref(), Some("ci-run-42.7"), "a sane caller id is echoed");
    let r = app
        .try_request("GET", "/v1/me", None, &[("authorization", &auth), ("x-request-id", "bad id with spaces")])
        .await
        .unwrap();
    assert!(r.header("x-request-id").unwrap().starts_with("req_"), "an insane caller id is replaced");
    // Errors carry it too.
    let r = app.call("GET", "/v1/me", None, None).await;
    assert!(r.header("x-request-id").is_some());
    // The request id is on the request's log line.
    assert!(app.wait_for_log("ci-run-42.7").await, "request id missing from logs");
}

#[tokio::test]
async fn bad_bodies_get_json_errors() {
    let app = TestApp::spawn().await;
    app.post("/v1/projects", json!({"name": "x", "colour": "blue"})).await.expect_error(400, "unknown field");
    let auth = format!("Bearer {}", app.key);
    let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let r = app.try_request("POST", "/v1/projects", Some(b"{\"name\": ".to_vec()), &h).await.unwrap();
    r.expect_error(400, "malformed JSON");
    let r = app.try_request("POST", "/v1/projects", Some(b"[1,2]".to_vec()), &h).await.unwrap();
    r.expect_error(400, "JSON object");
    let r = app.try_request("POST", "/v1/projects", None, &h).await.unwrap();
    r.expect_error(400, "body is required");
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = app.try_request("POST", "/v1/projects", Some(big.into_bytes()), &h).await.unwrap();
    r.expect_error(413, "larger than");
    app.post("/v1/projects", json!({"name": "   "})).await.expect_error(400, "name");
    app.post("/v1/projects", json!({"name": "x", "pg_version": "9"})).await.expect_error(400, "pg_version");
    app.post("/v1/projects", json!({"name": "x", "region": "mars-1"})).await.expect_error(400, "region");
    app.post("/v1/projects", json!({"name": 42})).await.expect_error(400, "invalid");
}

/// An array is not a body (serde would fill a struct from it); the media
/// type is checked; every 4xx, also those axum and hyper produce, is JSON.
#[tokio::test]
async fn bodies_must_be_json_objects_sent_as_json() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let (project, _) = app.create_project("shop").await;
    let auth = format!("Bearer {}", app.key);
    let json_h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let path = format!("/v1/projects/{project}");
    let r = app.try_request("PATCH", &path, Some(br#"["x"]"#.to_vec()), &json_h).await.unwrap();
    r.expect_error(400, "JSON object");
    let org = format!("/v1/organizations/{}", app.org_id);
    let r = app.try_request("PATCH", &org, Some(b"[null]".to_vec()), &json_h).await.unwrap();
    r.expect_error(400, "JSON object");
    assert_eq!(app.get(&path).await.expect(200)["project"]["name"], "shop", "an array renamed nothing");
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
        let h = [("authorization", auth.as_str()), ("content-type", ct)];
        let r = app.try_request("PATCH", &path, Some(br#"{"name":"x"}"#.to_vec()), &h).await.unwrap();
        r.expect_error(415, "application/json");
    }
    let r = app.try_request("PATCH", &path, Some(br#"{"name":"x"}"#.to_vec()), &[("authorization", &auth)]).await;
    r.unwrap().expect_error(415, "application/json");
    let h = [("authorization", auth.as_str()), ("content-type", "application/json; charset=utf-8")];
    let r = app.try_request("PATCH", &path, Some(br#"{"name":"renamed"}"#.to_vec()), &h).await.unwrap();
    assert_eq!(r.expect(200)["project"]["name"], "renamed", "a charset parameter is fine");
}

/// What hyper answers on its own (before any router) is JSON too.
#[tokio::test]
async fn malformed_http_gets_json_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let raw = |request: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        s.write_all(&request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let long = format!("GET /v1/{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(100 * 1024)).into_bytes();
    let control = b"GET /v1/me HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n".to_vec();
    for (request, status) in [(long, "414"), (control, "400")] {
        let answer = raw(request).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    }
    // A path segment that is not UTF-8 once decoded.
    let r = app.get("/v1/projects/%FF").await;
    r.expect_error(400, "UTF-8");
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
}

/// Timestamps are range-checked at the edge, never first by a store.
#[tokio::test]
async fn far_future_expiry_is_a_400_naming_the_range() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let path = format!("/v1/organizations/{}/api-keys", app.org_id);
    let body = json!({"name": "ci", "scopes": ["projects:read"], "expires_at": "2300-01-01T00:00:00Z"});
    app.post(&path, body).await.expect_error(400, "between 1970-01-01T00:00:00Z and 2199-12-31T23:59:59Z");
    let body = json!({"name": "ci", "scopes": ["projects:read"], "expires_at": "2199-12-31T23:59:59Z"});
    assert_eq!(app.post(&path, body).await.expect(201)["api_key"]["expires_at"], "2199-12-31T23:59:59.000000Z");
    let body = json!({"name": "ci", "scopes": ["projects:read"], "expires_in_days": 3651});
    app.post(&path, body).await.expect_error(400, "expires_in_days must be between 1 and 3650");
    let body = json!({"name": "ci", "scopes": []});
    app.post(&path, body).await.expect_error(400, "scopes must list at least one item");
}

/// Every bound the server enforces is in the served document.
#[tokio::test]
async fn the_document_states_the_bounds_the_server_enforces() {
    let app = TestApp::spawn().await;
    let doc = app.try_request("GET", "/v1/openapi.json", None, &[]).await.unwrap().expect(200).clone();
    let schemas = &doc["components"]["schemas"];
    let prop = |schema: &str, field: &str| {
        let p = &schemas[schema]["properties"][field];
        // Optional fields are `oneOf: [null, T]`.
        p["oneOf"].as_array().and_then(|a| a.iter().find(|s| s["type"] != "null").cloned()).unwrap_or(p.clone())
    };
    assert_eq!(
        (prop("CreatePreview", "ttl_hours")["minimum"].clone(), prop("CreatePreview", "ttl_hours")["maximum"].clone()),
        (json!(1), json!(720))
    );
    assert_eq!(prop("CreateApiKey", "expires_in_days")["maximum"], json!(3650));
    assert_eq!(prop("CreateApiKey", "scopes")["minItems"], json!(1));
    assert_eq!(prop("CreateWebhook", "events")["minItems"], json!(1));
    assert_eq!(
        (prop("CreateProject", "name")["minLength"].clone(), prop("CreateProject", "name")["maxLength"].clone()),
        (json!(1), json!(64))
    );
    assert!(prop("CreateProject", "name")["pattern"].is_string());
    // Rules between fields: not both expiries; preview-only fields of a restore.
    assert_eq!(schemas["CreateApiKey"]["not"]["required"], json!(["expires_at", "expires_in_days"]));
    assert_eq!(schemas["CreateRestore"]["allOf"][0]["if"]["properties"]["mode"]["const"], "overwrite");
    assert_eq!(schemas["CreateRestore"]["allOf"][0]["then"]["properties"]["preview_name"]["type"], "null");
    let limit = doc["paths"]["/v1/projects"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!((limit["minimum"].clone(), limit["maximum"].clone()), (json!(1), json!(100)));
    // And the server holds to them.
    app.get("/v1/projects?limit=100").await.expect(200);
    app.get("/v1/projects?limit=101").await.expect_error(400, "limit");
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_are_json() {
    let app = TestApp::spawn().await;
    app.get("/v1/nope").await.expect_error(404, "no such route");
    app.call("PUT", "/v1/projects", Some(&app.key.clone()), None).await.expect_error(405, "method not allowed");
    app.get("/v1/projects/prj_doesnotexist").await.expect_error(404, "not found");
    app.get("/v1/jobs/job_01jzzzzzzzzzzzzzzzzzzzzzzz").await.expect_error(404, "not found");
    app.get("/v1/projects?limit=0").await.expect_error(400, "limit");
    app.get("/v1/projects?limit=101").await.expect_error(400, "limit");
    app.get("/v1/projects?cursor=%%%").await.expect_error(400, "cursor");
    app.get("/v1/projects?sort=asc").await.expect_error(400, "unknown query parameter");
}

#[tokio::test]
async fn lists_are_bare_arrays_paginated_with_link() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    assert_eq!(app.get("/v1/projects").await.expect(200), &json!([]), "an empty list is [], never null");
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_project(&format!("p{i}")).await.0);
    }
    created.reverse(); // newest first
    let mut seen = Vec::new();
    let mut path = "/v1/projects?limit=2".to_string();
    loop {
        let r = app.get(&path).await;
        let page = r.expect(200).as_array().expect("a bare array").clone();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match r.header("link") {
            Some(link) => {
                assert!(link.ends_with("rel=\"next\""), "{link}");
                let start = link.find('<').unwrap() + 1;
                let end = link.find('>').unwrap();
                path = link[start..end].to_string();
                assert!(path.starts_with("/v1/projects?"), "{path}");
            }
            None => break,
        }
    }
    assert_eq!(seen, created, "pages walk every project once, newest first");
    // The prefixed path links to the prefixed path.
    let r = app.get("/api/capydb/v1/projects?limit=1").await;
    assert!(r.header("link").unwrap().starts_with("</api/capydb/v1/projects?limit=1&cursor="));
}

#[tokio::test]
async fn openapi_document_is_served_without_auth_and_matches_the_committed_copy() {
    let app = TestApp::spawn().await;
    let r = app.try_request("GET", "/api/capydb/v1/openapi.json", None, &[]).await.unwrap();
    let doc = r.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json"))
            .expect("openapi.json at the repo root"),
    )
    .unwrap();
    assert_eq!(
        doc, &committed,
        "the served document differs from openapi.json; run `UPDATE_OPENAPI=1 cargo test -p capydb-api`"
    );
}

#[tokio::test]
async fn requests_beyond_the_rate_limit_get_429_and_every_response_says_where_it_stands() {
    let app = TestApp::spawn_with(Options::args(&["--rate-limit-per-minute", "10"])).await;
    let mut limited = None;
    let mut remaining_seen = Vec::new();
    // 10 a minute: a 429 comes within 21 requests even if a window ends meanwhile.
    for _ in 0..21 {
        let r = app.get("/v1/me").await;
        for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            assert!(r.header(h).is_some(), "{h} on every response (status {})", r.status);
        }
        assert_eq!(r.header("ratelimit-limit").as_deref(), Some("10"));
        let reset: u64 = r.header("ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "RateLimit-Reset is seconds until the window ends: {reset}");
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(200);
        remaining_seen.push(r.header("ratelimit-remaining").unwrap().parse::<u64>().unwrap());
    }
    let r = limited.expect("the 11th request of a window is refused");
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
    let retry: u64 = r.header("retry-after").expect("Retry-After on a 429").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.body["error"].as_str().unwrap().contains("rate limit"), "{}", r.text);
    assert!(remaining_seen.windows(2).any(|w| w[1] < w[0]), "Remaining counts down: {remaining_seen:?}");
    // Refused requests and errors carry the headers too.
    let nf = app.get("/v1/no-such-route").await;
    assert!(nf.header("ratelimit-limit").is_some() && nf.header("x-request-id").is_some());
}

#[tokio::test]
async fn health_needs_no_credential_and_reports_each_dependency() {
    let app = TestApp::spawn().await;
    let r = app.try_request("GET", "/api/capydb/v1/health", None, &[]).await.unwrap();
    assert_eq!(
        r.expect(200),
        &json!({"status": "ok", "store": "ok", "queue": "ok", "database": "ok"}),
        "a healthy server says ok for each dependency and nothing more"
    );
    assert!(r.header("ratelimit-limit").is_some(), "health counts in the general rate-limit bucket");
}

#[tokio::test]
async fn health_answers_503_naming_the_dependency_that_is_down() {
    let app = TestApp::spawn_with(Options { pg: Pg::Private, ..Default::default() }).await;
    let r = app.try_request("GET", "/v1/health", None, &[]).await.unwrap();
    assert_eq!(r.expect(200)["database"], "ok");
    let pid_file = crate::crash::find_postmaster_pid(&app.dir.join("data")).expect("the private cluster's pid file");
    let pg_pid: i32 = read_file(&pid_file).lines().next().unwrap().trim().parse().unwrap();
    // SAFETY: killing the test's own PostgreSQL server.
    unsafe { libc::kill(pg_pid, libc::SIGKILL) };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = app.try_request("GET", "/v1/health", None, &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body, json!({"status": "unavailable", "store": "ok", "queue": "ok", "database": "unavailable"}));
}
