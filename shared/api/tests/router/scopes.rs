//! The access the OpenAPI document states (`x-capydb-access`, from
//! `capydb_api::openapi::ACCESS`) is the access the router enforces: for
//! every operation that needs a scope, a key holding every other scope is
//! refused with `403` naming that scope.
use capydb_api::openapi::{Access, ACCESS};
use capydb_domain::scopes::Scope;
use serde_json::{json, Value};

use crate::helpers::*;

/// A body the operation's extractor accepts, so the request reaches the
/// use case's scope check. Only loopback addresses appear in them.
fn body(operation: &str) -> Option<Value> {
    Some(match operation {
        "updateOrganization" | "updateProject" => json!({"name": "renamed"}),
        "createApiKey" => json!({"name": "k", "scopes": ["projects:read"]}),
        "createProject" => json!({"name": "p"}),
        "createPreview" => json!({"name": "pr-1", "mode": "empty"}),
        "updatePreview" => json!({"ttl_hours": 1}),
        "createBackup" => json!({}),
        "createRestore" => json!({"backup_id": "bkp_x", "mode": "preview"}),
        "createImport" => json!({"source_url": "postgres://u:p@127.0.0.1:9/db"}),
        "createWebhook" => json!({"url": "http://127.0.0.1:9/hook", "events": ["project.ready"]}),
        "updateWebhook" => json!({"enabled": true}),
        _ => return None,
    })
}

#[tokio::test]
async fn every_scoped_operation_refuses_a_key_without_its_scope() {
    let api = api("scopes-doc").await;
    let doc: Value = serde_json::from_str(&capydb_api::openapi::document_json()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            let Some((_, Access::Scope { scope, .. })) = ACCESS.iter().find(|(op_id, _)| *op_id == id) else {
                continue;
            };
            let others: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).filter(|s| s != scope).collect();
            let keys = format!("/v1/organizations/{}/api-keys", api.org_id);
            let minted = call("POST", &keys)
                .key(&api.key)
                .json(json!({"name": format!("all but {scope}"), "scopes": others}))
                .send(&api.router)
                .await
                .expect_status(201);
            let key = minted["plaintext"].as_str().unwrap().to_string();
            let uri = path
                .split('/')
                .map(|seg| {
                    if seg == "{org_id}" {
                        api.org_id.clone()
                    } else if seg.starts_with('{') {
                        "x_1".into()
                    } else {
                        seg.into()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let mut request = call(Box::leak(method.to_uppercase().into_boxed_str()), uri.clone()).key(&key);
            if let Some(b) = body(id) {
                request = request.json(b);
            }
            let message = request.send(&api.router).await.expect_error(403, "lacks the scope");
            assert!(message.contains(scope), "{method} {uri} ({id}): {message} should name {scope}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "every scoped operation was tried ({checked})");
}

#[test]
fn every_documented_operation_states_its_access() {
    let doc: Value = serde_json::from_str(&capydb_api::openapi::document_json()).unwrap();
    let mut ids = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(op["x-capydb-access"].is_object(), "{method} {path} ({id}) states no access");
            ids.push(id);
        }
    }
    for (id, _) in ACCESS {
        assert!(ids.iter().any(|i| i == id), "ACCESS names {id}, which the document does not have");
    }
}
