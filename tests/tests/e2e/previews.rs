//! Preview databases: clones that are really usable when their job says
//! `completed`, isolated from their project, reset, extended and deleted.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

async fn pg(uri: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(uri, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn count(uri: &str) -> i64 {
    pg(uri).await.query_one("SELECT count(*) FROM items", &[]).await.expect("count").get(0)
}

/// Creates a preview and waits for its job; returns (preview id, job).
async fn preview(app: &TestApp, project: &str, body: serde_json::Value) -> (String, serde_json::Value) {
    let r = app.post(&format!("/v1/projects/{project}/preview-databases"), body).await;
    let b = r.expect(202).clone();
    assert_eq!(b["job"]["kind"], "create_preview");
    assert_eq!(b["preview"]["state"], "creating");
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    (b["preview"]["id"].as_str().unwrap().to_string(), job)
}

async fn preview_uri(app: &TestApp, id: &str) -> String {
    app.get(&format!("/v1/preview-databases/{id}/connections")).await.expect(200)[0]["uri"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn quick_tour_clone_is_a_snapshot_isolated_from_its_project() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("shop").await;
    let project_uri = app.connection_uri(&project).await;
    {
        let c = pg(&project_uri).await;
        c.batch_execute("CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('a'), ('b'), ('c');")
            .await
            .unwrap();
    } // disconnected: nothing holds the project open, so the fast path may be taken

    // The seed's quick tour, as curl does it.
    let (id, job) = preview(&app, &project, json!({"name": "pr-42", "mode": "clone", "ttl_hours": 72})).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["resource"], json!({"type": "preview", "id": id}));
    let p = app.get(&format!("/v1/preview-databases/{id}")).await;
    let p = p.expect(200)["preview"].clone();
    assert_eq!(
        (p["state"].as_str(), p["name"].as_str(), p["ttl_hours"].as_u64()),
        (Some("ready"), Some("pr-42"), Some(72))
    );
    let expires: chrono::DateTime<chrono::Utc> = p["expires_at"].as_str().unwrap().parse().unwrap();
    let in_72h = chrono::Utc::now() + chrono::Duration::hours(72);
    assert!((expires - in_72h).num_seconds().abs() < 60, "expires_at = now + 72 h: {expires}");
    let uri = preview_uri(&app, &id).await;
    assert_ne!(uri, project_uri);
    pg_select1(&uri).await.expect("the preview is usable");

    // A snapshot: the rows from before, none written after.
    assert_eq!(count(&uri).await, 3);
    pg(&project_uri).await.execute("INSERT INTO items (name) VALUES ('after')", &[]).await.unwrap();
    assert_eq!(count(&uri).await, 3, "rows inserted after the clone must not appear in the preview");
    // The preview's role owns its copy: it can write and change the schema.
    let c = pg(&uri).await;
    c.batch_execute("INSERT INTO items (name) VALUES ('preview-only'); ALTER TABLE items ADD COLUMN note text;")
        .await
        .unwrap();
    assert_eq!(count(&uri).await, 4);
    assert_eq!(count(&project_uri).await, 4, "writes to the preview must not appear in the project");

    // Credentials are not shared: neither role opens the other's database.
    let (preview_base, preview_db) = uri.split('?').next().unwrap().rsplit_once('/').unwrap();
    let (project_base, project_db) = project_uri.split('?').next().unwrap().rsplit_once('/').unwrap();
    assert!(
        pg_select1(&format!("{preview_base}/{project_db}")).await.is_err(),
        "preview credentials opened the project"
    );
    assert!(
        pg_select1(&format!("{project_base}/{preview_db}")).await.is_err(),
        "project credentials opened the preview"
    );

    // Listed under the project; the job shows in the project's jobs.
    let list = app.get(&format!("/v1/projects/{project}/preview-databases")).await;
    assert_eq!(list.expect(200).as_array().unwrap().len(), 1);
    let kinds = app.get(&format!("/v1/projects/{project}/jobs")).await;
    assert_eq!(kinds.expect(200)[0]["kind"], "create_preview");
}

#[tokio::test]
async fn reset_extend_delete_and_name_reuse() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("app").await;
    let project_uri = app.connection_uri(&project).await;
    pg(&project_uri).await.batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1);").await.unwrap();
    let (id, job) = preview(&app, &project, json!({"name": "pr-7", "mode": "clone", "ttl_hours": 2})).await;
    assert_eq!(job["state"], "completed", "{job}");
    let uri = preview_uri(&app, &id).await;
    pg(&uri).await.execute("DELETE FROM items", &[]).await.unwrap();
    pg(&project_uri).await.execute("INSERT INTO items VALUES (2)", &[]).await.unwrap();

    // Same name while it lives: 409.
    app.post(&format!("/v1/projects/{project}/preview-databases"), json!({"name": "pr-7", "mode": "empty"}))
        .await
        .expect_error(409, "pr-7");

    // Extend: counted from now.
    let r = app.patch(&format!("/v1/preview-databases/{id}"), json!({"ttl_hours": 48})).await;
    let p = r.expect(200)["preview"].clone();
    assert_eq!(p["ttl_hours"], 48);
    let expires: chrono::DateTime<chrono::Utc> = p["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > chrono::Utc::now() + chrono::Duration::hours(47));
    app.patch(&format!("/v1/preview-databases/{id}"), json!({"ttl_hours": 0})).await.expect_error(400, "ttl_hours");

    // Reset: a fresh clone of the project now, same connection string.
    let r = app.post(&format!("/v1/preview-databases/{id}/reset"), json!({})).await;
    let b = r.expect(202).clone();
    assert_eq!((b["job"]["kind"].as_str(), b["preview"]["state"].as_str()), (Some("reset_preview"), Some("resetting")));
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(preview_uri(&app, &id).await, uri, "reset keeps the connection string");
    assert_eq!(count(&uri).await, 2, "reset brings the project's current rows");

    // An empty preview is empty.
    let (empty, job) = preview(&app, &project, json!({"name": "scratch", "mode": "empty", "ttl_hours": 1})).await;
    assert_eq!(job["state"], "completed", "{job}");
    let empty_uri = preview_uri(&app, &empty).await;
    let tables: i64 = pg(&empty_uri)
        .await
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);

    // Delete: gone, and the name is free again.
    let r = app.delete(&format!("/v1/preview-databases/{id}")).await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert!(pg_select1(&uri).await.is_err(), "the preview database is dropped");
    app.get(&format!("/v1/preview-databases/{id}")).await.expect_error(404, "not found");
    let (again, job) = preview(&app, &project, json!({"name": "pr-7", "mode": "empty"})).await;
    assert_eq!(job["state"], "completed", "{job}");

    // Deleting the project deletes its previews first.
    let r = app.delete(&format!("/v1/projects/{project}")).await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    for pv in [&again, &empty] {
        app.get(&format!("/v1/preview-databases/{pv}")).await.expect_error(404, "not found");
    }
    assert!(pg_select1(&empty_uri).await.is_err(), "previews are dropped with their project");
    let admin = shared_postgres_url();
    for pv in [&id, &empty, &again] {
        assert_eq!(admin_query_count(&admin, "SELECT count(*) FROM pg_database WHERE datname = $1", pv).await, 0);
        assert_eq!(
            admin_query_count(&admin, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%'", pv).await,
            0
        );
    }
}

#[tokio::test]
async fn preview_requests_are_validated() {
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let (project, _) = app.create_project("not-ready").await;
    let path = format!("/v1/projects/{project}/preview-databases");
    app.post(&path, json!({"name": "x", "mode": "clone"})).await.expect_error(409, "ready");
    app.post(&path, json!({"name": "x", "mode": "copy"})).await.expect_error(400, "unknown variant");
    app.post(&path, json!({"name": "x", "mode": "clone", "ttl_hours": 0})).await.expect_error(400, "ttl_hours");
    app.post(&path, json!({"name": "x", "mode": "clone", "ttl_hours": 721})).await.expect_error(400, "ttl_hours");
    app.post(&path, json!({"name": "pr 42", "mode": "clone"})).await.expect_error(400, "name");
    app.post(&path, json!({"mode": "clone"})).await.expect_error(400, "name");
    app.get("/v1/preview-databases/pvw_01jzzzzzzzzzzzzzzzzzzzzzzz").await.expect_error(404, "not found");
    let key = app.create_key(json!({"name": "r", "scopes": ["projects:read"]})).await;
    app.call("POST", &path, Some(&key), Some(json!({"name": "x", "mode": "clone"})))
        .await
        .expect_error(403, "projects:write");
}

#[tokio::test]
async fn project_scoped_key_cannot_touch_a_sibling_projects_previews() {
    let app = TestApp::spawn().await;
    let mine = app.completed_project("mine").await;
    let sibling = app.completed_project("sibling").await;
    let (theirs, _) = preview(&app, &sibling, json!({"name": "pr-1", "mode": "empty"})).await;
    let ci = app
        .create_key(json!({"name": "ci", "project_id": mine, "scopes": ["projects:read", "projects:write", "credentials:read", "jobs:read"]}))
        .await;
    let k = Some(ci.as_str());
    app.call("GET", &format!("/v1/preview-databases/{theirs}"), k, None).await.expect_error(403, "restricted");
    app.call("GET", &format!("/v1/preview-databases/{theirs}/connections"), k, None)
        .await
        .expect_error(403, "restricted");
    app.call("DELETE", &format!("/v1/preview-databases/{theirs}"), k, None).await.expect_error(403, "restricted");
    app.call(
        "POST",
        &format!("/v1/projects/{sibling}/preview-databases"),
        k,
        Some(json!({"name": "x", "mode": "empty"})),
    )
    .await
    .expect_error(403, "restricted");
    // Its own project: allowed.
    let r = app
        .call(
            "POST",
            &format!("/v1/projects/{mine}/preview-databases"),
            k,
            Some(json!({"name": "pr-2", "mode": "empty"})),
        )
        .await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed");
}

/// A clone never disturbs the project's clients: an open transaction and a
/// steady stream of queries run on the project throughout; none fails or stalls.
#[tokio::test]
async fn cloning_a_busy_project_does_not_disturb_its_clients() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("busy").await;
    let uri = app.connection_uri(&project).await;
    let setup = pg(&uri).await;
    setup
        .batch_execute("CREATE TABLE items (id serial PRIMARY KEY, payload text); INSERT INTO items (payload) SELECT repeat('x', 200) FROM generate_series(1, 20000);")
        .await
        .unwrap();

    // An open transaction holding a row lock for the whole clone.
    let tx_client = pg(&uri).await;
    tx_client.batch_execute("BEGIN; UPDATE items SET payload = 'locked' WHERE id = 1;").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let worst_ms = Arc::new(AtomicU64::new(0));
    let stream = {
        let (stop, done, worst_ms, uri) = (stop.clone(), done.clone(), worst_ms.clone(), uri.clone());
        tokio::spawn(async move {
            let c = pg(&uri).await;
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = c.execute("INSERT INTO items (payload) VALUES ('during')", &[]).await;
                let r2 = c.query_one("SELECT count(*) FROM items", &[]).await;
                worst_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if let Err(e) = r.map(drop).and(r2.map(drop)) {
                    errors.push(e.to_string());
                }
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (id, job) = preview(&app, &project, json!({"name": "pr-busy", "mode": "clone"})).await;
    stop.store(true, Ordering::Relaxed);
    let errors = stream.await.unwrap();
    assert_eq!(job["state"], "completed", "{job}");
    assert!(errors.is_empty(), "queries on the project failed during the clone: {errors:?}");
    assert!(done.load(Ordering::Relaxed) > 5, "the query stream kept running");
    let worst = worst_ms.load(Ordering::Relaxed);
    assert!(worst < 2000, "a project query stalled for {worst} ms during the clone");
    // The open transaction is still open and usable, and commits.
    tx_client
        .batch_execute("UPDATE items SET payload = 'still mine' WHERE id = 1; COMMIT;")
        .await
        .expect("the open transaction survived");
    // The clone holds the committed rows of the snapshot (not the uncommitted update).
    let preview_uri = preview_uri(&app, &id).await;
    let c = pg(&preview_uri).await;
    let n: i64 = c.query_one("SELECT count(*) FROM items WHERE id <= 20000", &[]).await.unwrap().get(0);
    assert_eq!(n, 20000);
    let first: String = c.query_one("SELECT payload FROM items WHERE id = 1", &[]).await.unwrap().get(0);
    assert_ne!(first, "locked", "an uncommitted change leaked into the clone");
    assert!(app.wait_for_log("DumpRestore").await, "a busy project is copied by dump and restore");
}

/// The seed's quick tour, run as written with curl and jq against capydb-local.
#[tokio::test]
async fn the_seed_quick_tour_runs_verbatim_with_curl() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("tour").await;
    let script = r#"
set -e
# Who am I?
curl -s -H "X-API-Key: $KEY" $BASE/v1/me
echo
# Create a clone preview and wait for it
JOB=$(curl -s -X POST -H "X-API-Key: $KEY" -H "Content-Type: application/json" \
-d '{"name":"pr-42","mode":"clone","ttl_hours":72}' \
$BASE/v1/projects/$PROJECT/preview-databases | jq -r '.job.id')
for i in $(seq 1 300); do
  STATE=$(curl -s -H "X-API-Key: $KEY" $BASE/v1/jobs/$JOB | jq '.job.state')
  [ "$STATE" = '"completed"' ] && break
  sleep 0.1
done
echo "STATE=$STATE"
PREVIEW=$(curl -s -H "X-API-Key: $KEY" $BASE/v1/projects/$PROJECT/preview-databases | jq -r '.[0].id')
# Fetch its connection strings once ready
curl -s -H "X-API-Key: $KEY" $BASE/v1/preview-databases/$PREVIEW/connections
"#;
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("KEY", &app.key)
        .env("BASE", format!("{}/api/capydb", app.base))
        .env("PROJECT", &project)
        .output()
        .await
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the tour failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = stdout.lines();
    let me: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(me["principal"]["kind"], "api_key");
    assert_eq!(lines.next(), Some("STATE=\"completed\""), "{stdout}");
    let conns: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    pg_select1(conns[0]["uri"].as_str().unwrap()).await.expect("the preview from the tour is usable");
}
