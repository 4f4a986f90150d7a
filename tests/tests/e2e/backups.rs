//! Backups, restores (overwrite in place, into a preview) and imports: data
//! is never lost, and every failure leaves the project as it was.
use serde_json::json;

use crate::helpers::*;

async fn pg(uri: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(uri, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn rows(uri: &str, table: &str) -> Result<i64, String> {
    let c = pg(uri).await;
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.map(|r| r.get(0)).map_err(|e| e.to_string())
}

async fn completed(app: &TestApp, r: Resp) -> serde_json::Value {
    let b = r.expect(202).clone();
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    b
}

#[tokio::test]
async fn backup_drop_table_overwrite_restore_brings_it_back() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("precious").await;
    let uri = app.connection_uri(&project).await;
    pg(&uri)
        .await
        .batch_execute("CREATE TABLE orders (id serial PRIMARY KEY, total int); INSERT INTO orders (total) SELECT g FROM generate_series(1, 500) g;")
        .await
        .unwrap();

    let b =
        completed(&app, app.post(&format!("/v1/projects/{project}/backups"), json!({"name": "nightly"})).await).await;
    let backup_id = b["backup"]["id"].as_str().unwrap().to_string();
    let backup = app.get(&format!("/v1/backups/{backup_id}")).await;
    let backup = backup.expect(200)["backup"].clone();
    assert_eq!(
        (backup["state"].as_str(), backup["kind"].as_str(), backup["name"].as_str()),
        (Some("completed"), Some("manual"), Some("nightly"))
    );
    assert!(backup["size_bytes"].as_u64().unwrap() > 0, "{backup}");
    let sha = backup["sha256"].as_str().unwrap();
    let file = std::fs::read(app.dir.join("data/backups/artifacts").join(&backup_id))
        .expect("the artifact is under the data dir");
    assert_eq!(file.len() as u64, backup["size_bytes"].as_u64().unwrap());
    assert_eq!(&file[..5], b"PGDMP", "a pg_dump custom-format artifact");
    let _ = sha;

    // Disaster.
    pg(&uri).await.batch_execute("DROP TABLE orders;").await.unwrap();
    assert!(rows(&uri, "orders").await.is_err());

    // Overwrite-restore: same connection string, the table and rows are back.
    let r = app
        .post(&format!("/v1/projects/{project}/restores"), json!({"backup_id": backup_id, "mode": "overwrite"}))
        .await;
    let r = completed(&app, r).await;
    assert_eq!(r["restore"]["mode"], "overwrite");
    let safety = r["restore"]["safety_backup_id"].as_str().unwrap().to_string();
    assert_eq!(app.connection_uri(&project).await, uri, "the connection string is kept");
    assert_eq!(rows(&uri, "orders").await, Ok(500));
    let restore = app.get(&format!("/v1/restores/{}", r["restore"]["id"].as_str().unwrap())).await;
    assert_eq!(restore.expect(200)["restore"]["state"], "completed");

    // The safety backup (taken just before, without the table) is listed like any backup.
    let list = app.get(&format!("/v1/projects/{project}/backups")).await;
    let list = list.expect(200).as_array().unwrap().clone();
    let s = list.iter().find(|x| x["id"] == safety.as_str()).expect("the safety backup is listed");
    assert_eq!((s["kind"].as_str(), s["state"].as_str()), (Some("safety"), Some("completed")));
    assert_eq!(list.len(), 2);

    // Restore into a preview works too; the project is untouched by it.
    pg(&uri).await.execute("DELETE FROM orders WHERE id > 100", &[]).await.unwrap();
    let r = app
        .post(
            &format!("/v1/projects/{project}/restores"),
            json!({"backup_id": backup_id, "mode": "preview", "preview_name": "yesterday", "ttl_hours": 24}),
        )
        .await;
    let r = completed(&app, r).await;
    let preview = r["restore"]["preview_id"].as_str().unwrap().to_string();
    let pv = app.get(&format!("/v1/preview-databases/{preview}")).await;
    assert_eq!(pv.expect(200)["preview"]["name"], "yesterday");
    let pv_uri = app.get(&format!("/v1/preview-databases/{preview}/connections")).await.expect(200)[0]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rows(&pv_uri, "orders").await, Ok(500));
    assert_eq!(rows(&uri, "orders").await, Ok(100));

    // Deleting a backup removes its artifact.
    let d = app.delete(&format!("/v1/backups/{backup_id}")).await;
    assert_eq!(d.expect(200)["backup"]["state"], "deleted");
    assert!(!app.dir.join("data/backups/artifacts").join(&backup_id).exists());
    app.get(&format!("/v1/backups/{backup_id}")).await.expect_error(404, "not found");
    app.post(&format!("/v1/projects/{project}/restores"), json!({"backup_id": backup_id, "mode": "overwrite"}))
        .await
        .expect_error(404, "not found in project");
}

#[tokio::test]
async fn imports_copy_a_reachable_database_and_never_echo_its_password() {
    let app = TestApp::spawn().await;
    let source = app.completed_project("source").await;
    let target = app.completed_project("target").await;
    let source_uri = app.connection_uri(&source).await;
    pg(&source_uri)
        .await
        .batch_execute("CREATE TABLE legacy (id int); INSERT INTO legacy SELECT generate_series(1, 42);")
        .await
        .unwrap();
    let target_uri = app.connection_uri(&target).await;
    pg(&target_uri).await.batch_execute("CREATE TABLE mine (id int); INSERT INTO mine VALUES (1);").await.unwrap();
    let password = url::Url::parse(&source_uri).unwrap().password().unwrap().to_string();

    let r = app.post(&format!("/v1/projects/{target}/imports"), json!({"source_url": source_uri})).await;
    assert!(!r.text.contains(&password), "the import answer must not echo the source password");
    let b = completed(&app, r).await;
    assert!(b["import"]["source"].as_str().unwrap().starts_with("postgres://"));
    assert_eq!(rows(&target_uri, "legacy").await, Ok(42), "imported, under the same connection string");
    let i = app.get(&format!("/v1/imports/{}", b["import"]["id"].as_str().unwrap())).await;
    assert!(!i.text.contains(&password));
    assert_eq!(i.expect(200)["import"]["state"], "completed");
    let job = app.get(&format!("/v1/jobs/{}", b["job"]["id"].as_str().unwrap())).await;
    assert!(!job.text.contains(&password), "nor the job");
    assert!(app.wait_for_log("import").await);
    assert!(!app.logs().contains(&password), "nor the logs");

    // A wrong password: the job fails clearly, the project is untouched.
    let wrong = source_uri.replace(&password, "not-the-password");
    let r = app.post(&format!("/v1/projects/{target}/imports"), json!({"source_url": wrong})).await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    let refused_login = job["error"].as_str().unwrap().to_string();
    assert!(refused_login.contains("could not connect to the import source or log in"), "{job}");
    assert!(!refused_login.contains("not-the-password"));
    assert_eq!(rows(&target_uri, "legacy").await, Ok(42), "a failed import leaves the data as it was");
    // Unreachable: fails, untouched.
    let r = app
        .post(&format!("/v1/projects/{target}/imports"), json!({"source_url": "postgres://u:p@127.0.0.1:1/nowhere"}))
        .await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(rows(&target_uri, "legacy").await, Ok(42));
    assert_eq!(app.get(&format!("/v1/projects/{target}")).await.expect(200)["project"]["state"], "ready");
    // A closed port, a port where something that is not PostgreSQL accepts
    // and hangs up, and a refused login read the same: an import is no port
    // scanner (and names neither the address nor pg_dump's words).
    let closed = job["error"].as_str().unwrap().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    std::thread::spawn(move || listener.incoming().for_each(drop));
    let r = app
        .post(
            &format!("/v1/projects/{target}/imports"),
            json!({"source_url": format!("postgres://u:p@127.0.0.1:{open}/x")}),
        )
        .await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"].as_str().unwrap(), closed, "an open port reads unlike a closed one");
    assert_eq!(refused_login, closed, "a refused login reads unlike a closed port");
    assert!(!closed.contains("127.0.0.1") && !closed.contains("pg_dump"), "{closed}");
    // Not a postgres URL: 400 at once.
    app.post(&format!("/v1/projects/{target}/imports"), json!({"source_url": "mysql://u:p@h/d"}))
        .await
        .expect_error(400, "source_url");
}

/// With --deny-private-egress an import from this machine is refused when it
/// is created: 400, and nothing connects. Loopback only.
#[tokio::test]
async fn deny_private_egress_refuses_loopback_import_sources_at_creation() {
    let app = TestApp::spawn_with(Options::args(&["--deny-private-egress"])).await;
    let project = app.completed_project("guarded").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for host in ["127.0.0.1", "localhost", "2130706433", "[::ffff:127.0.0.1]", "0x7f.1", "[::1]"] {
        let url = format!("postgres://u:p@{host}:{port}/x");
        let r = app.post(&format!("/v1/projects/{project}/imports"), json!({"source_url": url})).await;
        r.expect_error(400, "public addresses");
        assert!(!r.text.contains("u:p@"), "the answer echoes the URL: {}", r.text);
    }
    assert!(listener.accept().is_err(), "a refused import source was connected to");
    let jobs = app.get(&format!("/v1/projects/{project}/jobs")).await;
    assert_eq!(jobs.expect(200).as_array().unwrap().len(), 1, "only the provisioning job: {}", jobs.text);
}

#[tokio::test]
async fn backup_rules_and_scopes() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("rules").await;
    let reader = app.create_key(json!({"name": "r", "scopes": ["backups:read", "projects:read"]})).await;
    app.call("POST", &format!("/v1/projects/{project}/backups"), Some(&reader), Some(json!({})))
        .await
        .expect_error(403, "backups:write");
    app.call("GET", &format!("/v1/projects/{project}/backups"), Some(&reader), None).await.expect(200);
    let path = format!("/v1/projects/{project}/restores");
    app.post(&path, json!({"backup_id": "bkp_01jzzzzzzzzzzzzzzzzzzzzzzz", "mode": "overwrite"}))
        .await
        .expect_error(404, "not found in project");
    app.post(&path, json!({"backup_id": "x", "mode": "sideways"})).await.expect_error(400, "unknown variant");
    app.post(&format!("/v1/projects/{project}/backups"), json!({"nam": "x"})).await.expect_error(400, "unknown field");
}

/// A corrupt artifact: the overwrite fails after its safety backup, and the
/// project's previous data is intact.
#[tokio::test]
async fn a_failed_overwrite_restore_leaves_the_project_intact() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("careful").await;
    let uri = app.connection_uri(&project).await;
    pg(&uri)
        .await
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);")
        .await
        .unwrap();
    let b = completed(&app, app.post(&format!("/v1/projects/{project}/backups"), json!({})).await).await;
    let backup_id = b["backup"]["id"].as_str().unwrap().to_string();
    pg(&uri).await.execute("INSERT INTO t VALUES (11)", &[]).await.unwrap();
    // The artifact rots on disk.
    std::fs::write(app.dir.join("data/backups/artifacts").join(&backup_id), b"PGDMP not really").unwrap();

    let r = app
        .post(&format!("/v1/projects/{project}/restores"), json!({"backup_id": backup_id, "mode": "overwrite"}))
        .await;
    let b = r.expect(202).clone();
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().starts_with("copy_data:"), "{job}");
    assert_eq!(rows(&uri, "t").await, Ok(11), "the project's data is intact");
    assert_eq!(app.get(&format!("/v1/projects/{project}")).await.expect(200)["project"]["state"], "ready");
    let restore = app.get(&format!("/v1/restores/{}", b["restore"]["id"].as_str().unwrap())).await;
    assert_eq!(restore.expect(200)["restore"]["state"], "failed");
    // The safety backup was completed before anything was touched.
    let safety = b["restore"]["safety_backup_id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/backups/{safety}")).await.expect(200)["backup"]["state"], "completed");
    // No scratch database is left behind.
    let admin = shared_postgres_url();
    assert_eq!(
        admin_query_count(&admin, "SELECT count(*) FROM pg_database WHERE datname LIKE $1 || '_%'", &project).await,
        0
    );
}

/// SIGKILL while a backup's dump runs: after the restart the job finishes,
/// with one complete artifact.
#[tokio::test]
async fn a_backup_interrupted_by_sigkill_finishes_after_restart() {
    let mut app = TestApp::spawn().await;
    let project = app.completed_project("interrupted").await;
    pg(&app.connection_uri(&project).await)
        .await
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    app.kill9();
    app.options.args = vec!["--debug-provider-delay-ms".into(), "1500".into()];
    app.start().await;
    let r = app.post(&format!("/v1/projects/{project}/backups"), json!({})).await;
    let b = r.expect(202).clone();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    app.kill9();
    app.options.args.clear();
    app.start().await;
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    let id = b["backup"]["id"].as_str().unwrap();
    let backup = app.get(&format!("/v1/backups/{id}")).await.expect(200)["backup"].clone();
    let file = std::fs::read(app.dir.join("data/backups/artifacts").join(id)).unwrap();
    assert_eq!(file.len() as u64, backup["size_bytes"].as_u64().unwrap());
    let staging = std::fs::read_dir(app.dir.join("data/backups/staging")).unwrap().count();
    assert!(staging <= 1, "at most the interrupted attempt's staging file is left");
}
