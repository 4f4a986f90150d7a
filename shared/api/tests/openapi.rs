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
            // The document, the health check and the CLI login's start
            // and poll need no credential; every other operation does.
            let anonymous = path.ends_with("openapi.json")
                || path.ends_with("/health")
                || path.ends_with("/cli/login")
                || path.ends_with("/cli/login/token");
            assert_eq!(op.get("security").is_none(), anonymous, "{method} {path}: security schemes");
            if !anonymous {
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
}

#[path = "router/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every (method, path) the document describes.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(&capydb_api::openapi::document_json()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// Every (method, path) the route groups' sources declare: each
/// `.route("<path>", get(..).post(..)...)` call in `src/*.rs`. Every
/// `.route(` must parse, and no group may add routes another way
/// (`route_service`, `nest`, `merge`) outside `lib.rs`, so a route cannot
/// hide from this walk.
fn declared() -> BTreeSet<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name != "lib.rs" {
            for other in [".route_service(", ".nest(", ".nest_service(", ".merge(", ".fallback("] {
                assert!(!text.contains(other), "{name} adds routes with {other}: teach this walk to read it");
            }
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let call = &rest[..matching_paren(rest).unwrap_or_else(|| panic!("{name}: unbalanced .route("))];
            let call: String = call.split_whitespace().collect();
            let (route, handlers) = call
                .strip_prefix('"')
                .and_then(|c| c.split_once("\","))
                .unwrap_or_else(|| panic!("{name}: a .route( whose path is not a string literal: {call}"));
            let mut methods = 0;
            for h in handlers.trim_end_matches(',').split(").") {
                let method = h.split('(').next().unwrap();
                assert!(METHODS.contains(&method), "{name}: {route}: unknown method router {method:?} in {handlers}");
                out.insert((method.to_string(), route.to_string()));
                methods += 1;
            }
            assert!(methods > 0, "{name}: {route} with no method");
        }
    }
    assert!(files > 5, "no sources found under {}", src.display());
    out
}

/// The length of the argument list `s` starts inside of (up to its `)`).
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str && depth == 0 => return Some(i),
            ')' if !in_str => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Both ways: every route the groups declare is documented with its
/// method, and every documented operation is served by the real router
/// (under both prefixes) rather than falling to the 404 or 405 fallback.
/// Methods a documented path does not list answer 405.
#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let documented = documented();
    let declared = declared();
    assert!(declared.len() > 30, "the walk found only {} routes", declared.len());
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes served but not in the OpenAPI document: {undocumented:?}");
    let undeclared: Vec<_> = documented.difference(&declared).collect();
    assert!(undeclared.is_empty(), "documented but declared by no route group: {undeclared:?}");

    let api = helpers::api("openapi").await;
    let concrete = |path: &str| {
        path.split('/')
            .map(|seg| if seg.starts_with('{') && seg.ends_with('}') { "x_1" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    };
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS {
            let is_documented = documented.contains(&(method.to_string(), path.clone()));
            for prefix in ["", "/api/capydb"] {
                let uri = format!("{prefix}{}", concrete(path));
                let m = method.to_ascii_uppercase();
                let m: &'static str = Box::leak(m.into_boxed_str());
                let r = helpers::call(m, &uri).send(&api.router).await;
                let body = String::from_utf8_lossy(&r.body).to_string();
                if is_documented {
                    assert!(
                        r.status != 405 && !body.contains("no such route"),
                        "{m} {uri} is documented but not served: {} {body}",
                        r.status
                    );
                } else {
                    r.expect_error(405, "method not allowed on this route");
                }
            }
        }
    }
}
