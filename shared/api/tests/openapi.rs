//! The committed `openapi.json` is generated: this test fails when it drifts.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test -p capydb-api --test openapi`.
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json")
}

#[test]
fn committed_openapi_json_matches_the_generated_document() {
    let generated = capydb_api::openapi::document_json();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json is out of date with the code; run `UPDATE_OPENAPI=1 cargo test -p capydb-api --test openapi` and commit it"
    );
}

#[test]
fn every_route_is_documented_with_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&capydb_api::openapi::document_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"), "{method} {path} does not declare 500");
            // The rate limit applies to every route, the public one included.
            let limited = &responses["429"]["headers"];
            assert!(limited["Retry-After"].is_object(), "{method} {path} does not declare 429 with Retry-After");
            assert!(limited["RateLimit-Reset"].is_object(), "{method} {path}: 429 without RateLimit-Reset");
            // The document and the health check need no credential.
            if !path.ends_with("openapi.json") && !path.ends_with("/health") {
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{method} {path} does not declare {code}");
                }
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "413", "415"] {
                    assert!(responses.contains_key(code), "{method} {path} does not declare {code}");
                }
            }
        }
    }
    for p in [
        "/v1/me",
        "/v1/projects",
        "/v1/projects/{project_id}",
        "/v1/jobs/{job_id}",
        "/v1/organizations/{org_id}/api-keys/{key_id}",
        "/v1/projects/{project_id}/credentials/rotate",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the document");
    }
}
