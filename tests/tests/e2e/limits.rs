//! Per-organization limits, and the one rule between a project's deletion
//! and the jobs inside it (a backup, a preview's job): the deletion is
//! refused (`409`, naming the job) while one runs, and none starts once the
//! deletion has.
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_project_cannot_be_deleted_under_a_running_backup() {
    // Every provider step waits 1.5 s, so the backup is still running when
    // the deletion arrives.
    let app = TestApp::spawn_with(Options::args(&["--debug-provider-delay-ms", "1500"])).await;
    let project = app.completed_project("shop").await;
    let r = app.post(&format!("/v1/projects/{project}/backups"), json!({})).await;
    let backup_job = r.expect(202)["job"]["id"].as_str().unwrap().to_string();
    let r = app.delete(&format!("/v1/projects/{project}")).await;
    r.expect_error(409, &backup_job);
    assert_eq!(app.get(&format!("/v1/projects/{project}")).await.expect(200)["project"]["state"], "ready");
    let job = app.wait_job(&backup_job).await;
    assert_eq!(job["state"], "completed", "the backup is not lost: {job}");

    // Once the backup is done the deletion goes ahead; while it runs the
    // project refuses renames, and nothing new starts inside it.
    let r = app.delete(&format!("/v1/projects/{project}")).await;
    let delete_job = r.expect(202)["job"]["id"].as_str().unwrap().to_string();
    app.patch(&format!("/v1/projects/{project}"), json!({"name": "renamed"})).await.expect_error(409, "being deleted");
    app.post(&format!("/v1/projects/{project}/backups"), json!({})).await.expect_error(409, "deleting");
    let body = json!({"name": "pr-1", "mode": "empty"});
    app.post(&format!("/v1/projects/{project}/preview-databases"), body).await.expect_error(409, "deleting");
    assert_eq!(app.wait_job(&delete_job).await["state"], "completed");
}

#[tokio::test]
async fn racing_creates_never_overshoot_the_project_limit() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0", "--max-projects", "3"])).await;
    let creates = (0..12).map(|i| app.post("/v1/projects", json!({ "name": format!("p{i}") })));
    let answers: Vec<Resp> = futures_join(creates).await;
    let accepted = answers.iter().filter(|r| r.status == 202).count();
    assert_eq!(accepted, 3, "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status != 202) {
        r.expect_error(403, "at most 3 projects (3 in use)");
    }
    let org = app.get(&format!("/v1/organizations/{}", app.org_id)).await;
    let org = &org.expect(200)["organization"];
    assert_eq!((org["limits"]["projects"].clone(), org["usage"]["projects"].clone()), (json!(3), json!(3)), "{org}");
    assert_eq!(org["limits"]["previews_per_project"], 50, "defaults a small team never meets: {org}");
}

#[tokio::test]
async fn previews_backups_and_webhooks_have_limits_too() {
    let app = TestApp::spawn_with(Options::args(&[
        "--max-previews-per-project",
        "1",
        "--max-backups-per-project",
        "1",
        "--max-webhooks",
        "1",
    ]))
    .await;
    let project = app.completed_project("shop").await;
    let previews = format!("/v1/projects/{project}/preview-databases");
    let r = app.post(&previews, json!({"name": "pr-1", "mode": "empty"})).await;
    let first = r.expect(202)["preview"]["id"].as_str().unwrap().to_string();
    app.wait_job(r.body["job"]["id"].as_str().unwrap()).await;
    app.post(&previews, json!({"name": "pr-2", "mode": "empty"}))
        .await
        .expect_error(403, "at most 1 previews per project (1 in use)");
    // A deleted preview frees its place.
    let del = app.delete(&format!("/v1/preview-databases/{first}")).await;
    app.wait_job(del.expect(202)["job"]["id"].as_str().unwrap()).await;
    app.post(&previews, json!({"name": "pr-2", "mode": "empty"})).await.expect(202);

    let backups = format!("/v1/projects/{project}/backups");
    let r = app.post(&backups, json!({})).await;
    let backup = r.expect(202)["backup"]["id"].as_str().unwrap().to_string();
    app.wait_job(r.body["job"]["id"].as_str().unwrap()).await;
    app.post(&backups, json!({})).await.expect_error(403, "at most 1 backups per project (1 in use)");
    app.delete(&format!("/v1/backups/{backup}")).await.expect(200);
    app.post(&backups, json!({})).await.expect(202);

    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]});
    app.post(&hooks, body.clone()).await.expect(201);
    app.post(&hooks, body).await.expect_error(403, "at most 1 webhook endpoints (1 in use)");
}
