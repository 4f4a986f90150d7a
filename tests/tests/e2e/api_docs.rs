//! Every `curl` example of `docs/api/` runs, as written, against a real
//! capydb-local, with the ids its page names (`$PROJECT_ID`, ...) set to
//! resources made first, and answers the status its page documents. Reads
//! run first, then writes, then deletions; a `202` is waited for before the
//! next example, as a reader would.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use capydb_clerk::testkit::TestKey;
use serde_json::{json, Value};

use crate::helpers::*;

struct Example {
    operation: String,
    method: String,
    path: String,
    script: String,
    status: u16,
}

fn examples() -> Vec<Example> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("docs/api").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".md") || name == "README.md" {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for section in text.split("\n## `").skip(1) {
            let (heading, rest) = section.split_once("`\n").expect("a heading");
            let (method, path) = heading.split_once(' ').expect("METHOD path");
            let operation = rest.trim_start().trim_start_matches('`').split('`').next().unwrap().to_string();
            let after = rest.split_once("**Example** (answers ").expect("an example").1;
            let status: u16 = after[..3].parse().expect("a status");
            let script = after.split_once("```sh\n").unwrap().1.split_once("\n```").unwrap().0.to_string();
            out.push(Example { operation, method: method.into(), path: path.into(), script, status });
        }
    }
    out
}

/// When an example runs: reads, then the CLI login, writes, deletions.
fn phase(e: &Example) -> u8 {
    match (e.method.as_str(), e.operation.as_str()) {
        (_, "deleteProject") => 9,
        (_, "revokeCliSession") => 8,
        ("DELETE", _) => 7,
        (_, "startCliLogin" | "approveCliLogin" | "exchangeCliToken" | "listCliSessions") => 3,
        ("GET", _) => 1,
        _ => 5,
    }
}

/// Runs an example's `curl` with `vars` in its environment: its status and body.
fn run(script: &str, vars: &BTreeMap<&str, String>, dir: &Path) -> (u16, String) {
    let body = dir.join("body");
    let command = format!("{script} -o '{}' -w '%{{http_code}}'", body.display());
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    (status, std::fs::read_to_string(&body).unwrap_or_default())
}

#[tokio::test]
async fn every_example_of_the_api_reference_answers_its_documented_status() {
    let clerk = TestKey::generate();
    let app = TestApp::spawn_with(Options {
        env: vec![("CAPYDB_CLERK_JWT_KEY".into(), clerk.public_pem.clone())],
        ..Default::default()
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let session = clerk.sign(
        None,
        &json!({"sub": "user_docs", "iat": now - 5, "nbf": now - 5, "exp": now + 3600,
                "org_id": "org_clerk_docs", "org_role": "org:admin"}),
    );

    // What the examples name.
    let (project, provision) = app.create_project("docs").await;
    assert_eq!(app.wait_job(&provision).await["state"], "completed");
    let preview = app
        .post(&format!("/v1/projects/{project}/preview-databases"), json!({"name": "docs-preview", "mode": "clone"}))
        .await
        .expect(202)
        .clone();
    assert_eq!(app.wait_job(preview["job"]["id"].as_str().unwrap()).await["state"], "completed");
    let preview_id = preview["preview"]["id"].as_str().unwrap().to_string();
    let source_url = app.get(&format!("/v1/preview-databases/{preview_id}/connections")).await.expect(200)[0]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let backup = app.post(&format!("/v1/projects/{project}/backups"), json!({})).await.expect(202).clone();
    assert_eq!(app.wait_job(backup["job"]["id"].as_str().unwrap()).await["state"], "completed");
    let backup_id = backup["backup"]["id"].as_str().unwrap().to_string();
    let restore = app
        .post(&format!("/v1/projects/{project}/restores"), json!({"backup_id": backup_id, "mode": "preview"}))
        .await
        .expect(202)
        .clone();
    assert_eq!(app.wait_job(restore["job"]["id"].as_str().unwrap()).await["state"], "completed");
    let import = app
        .post(&format!("/v1/projects/{project}/imports"), json!({"source_url": source_url}))
        .await
        .expect(202)
        .clone();
    assert_eq!(app.wait_job(import["job"]["id"].as_str().unwrap()).await["state"], "completed");
    let spare = app
        .post(&format!("/v1/organizations/{}/api-keys", app.org_id), json!({"name": "spare", "scopes": ["jobs:read"]}))
        .await
        .expect(201)["api_key"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A receiver that answers, so the ping is delivered and can be redelivered.
    let receiver = Receiver::start().await;
    let webhook = app
        .post(
            &format!("/v1/organizations/{}/webhooks", app.org_id),
            json!({"url": receiver.url("docs"), "events": ["project.ready"]}),
        )
        .await
        .expect(201)["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(&format!("/v1/organizations/{}/webhooks/{webhook}/ping", app.org_id), json!({})).await.expect(202);
    receiver.wait("docs", "ping", |got| !got.is_empty()).await;
    let deliveries = format!("/v1/organizations/{}/webhooks/{webhook}/deliveries", app.org_id);
    let mut delivery = Value::Null;
    for _ in 0..100 {
        delivery = app.get(&deliveries).await.expect(200)[0].clone();
        if delivery["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivery["state"], "succeeded", "{delivery}");
    let delivery = delivery["id"].as_str().unwrap().to_string();
    // A CLI session of the session's person, for the CLI session examples.
    let login = app.call("POST", "/v1/cli/login", None, None).await.expect(200).clone();
    app.call("POST", "/v1/cli/login/approve", Some(&session), Some(json!({"user_code": login["user_code"]})))
        .await
        .expect(200);
    let token = app
        .call("POST", "/v1/cli/login/token", None, Some(json!({"device_code": login["device_code"]})))
        .await
        .expect(200)
        .clone();
    let cli_session = token["cli_session"]["id"].as_str().unwrap().to_string();

    let mut vars: BTreeMap<&str, String> = BTreeMap::from([
        ("CAPYDB_BASE", format!("{}/api/capydb", app.base)),
        ("CAPYDB_API_KEY", app.key.clone()),
        ("CAPYDB_ORG_ID", app.org_id.clone()),
        ("PROJECT_ID", project.clone()),
        ("PREVIEW_ID", preview_id),
        ("BACKUP_ID", backup_id),
        ("RESTORE_ID", restore["restore"]["id"].as_str().unwrap().into()),
        ("IMPORT_ID", import["import"]["id"].as_str().unwrap().into()),
        ("JOB_ID", provision),
        ("KEY_ID", spare),
        ("WEBHOOK_ID", webhook),
        ("DELIVERY_ID", delivery),
        ("CLI_SESSION_ID", cli_session),
        ("SOURCE_URL", source_url),
    ]);

    let mut all = examples();
    assert!(all.len() >= 45, "every operation's example: {}", all.len());
    all.sort_by_key(phase);
    let dir = temp_dir("api-docs");
    let mut failures = Vec::new();
    for e in &all {
        // The examples of a person's endpoints run with the person's session.
        let mut env = vars.clone();
        if matches!(e.operation.as_str(), "approveCliLogin" | "listCliSessions" | "revokeCliSession") {
            env.insert("CAPYDB_API_KEY", session.clone());
        }
        if matches!(e.operation.as_str(), "approveCliLogin" | "exchangeCliToken") {
            let codes = match vars.get("DEVICE_CODE") {
                Some(_) => None,
                None => Some(app.call("POST", "/v1/cli/login", None, None).await.expect(200).clone()),
            };
            if let Some(c) = codes {
                vars.insert("DEVICE_CODE", c["device_code"].as_str().unwrap().into());
                vars.insert("USER_CODE", c["user_code"].as_str().unwrap().into());
            }
            env.insert("DEVICE_CODE", vars["DEVICE_CODE"].clone());
            env.insert("USER_CODE", vars["USER_CODE"].clone());
        }
        let (status, body) = run(&e.script, &env, &dir);
        if status != e.status {
            failures.push(format!(
                "{} {} ({}): answered {status}, documented {}: {body}",
                e.method, e.path, e.operation, e.status
            ));
            continue;
        }
        // A reader waits for a started job before the next step.
        if status == 202 {
            if let Some(job) =
                serde_json::from_str::<Value>(&body).ok().and_then(|b| b["job"]["id"].as_str().map(str::to_string))
            {
                let ended = app.wait_job(&job).await;
                assert_eq!(ended["state"], "completed", "{}: {ended}", e.operation);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failures.is_empty(), "examples that did not answer their documented status:\n{}", failures.join("\n"));
}
