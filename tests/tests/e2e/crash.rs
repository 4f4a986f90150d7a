//! Restarts: state survives, and a job interrupted by SIGKILL finishes after
//! the restart with no duplicate database and no orphan.
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn sigkill_between_job_steps_then_restart_finishes_the_job() {
    // Every provider operation waits 1.5 s: create_role ends at ~1.5 s,
    // create_database at ~3 s. Kill at ~2.2 s: role made, database not yet.
    let mut app = TestApp::spawn_with(Options {
        args: vec!["--debug-provider-delay-ms".into(), "1500".into()],
        ..Default::default()
    })
    .await;
    let (id, job) = app.create_project("crashy").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let admin = shared_postgres_url();
    let roles = admin_query_count(&admin, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%'", &id).await;
    let dbs = admin_query_count(&admin, "SELECT count(*) FROM pg_database WHERE datname LIKE $1 || '%'", &id).await;
    assert_eq!((roles, dbs), (1, 0), "the kill should land between create_role and create_database");
    app.kill9();

    app.options.args.clear();
    app.start().await;
    let done = app.wait_job(&job).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(done["attempt"].as_u64().unwrap() >= 2, "the job ran again after the restart: {done}");
    pg_select1(&app.connection_uri(&id).await).await.expect("usable after the resumed job");
    let roles = admin_query_count(&admin, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%'", &id).await;
    let dbs = admin_query_count(&admin, "SELECT count(*) FROM pg_database WHERE datname LIKE $1 || '%'", &id).await;
    assert_eq!((roles, dbs), (1, 1), "exactly one role and one database for the project");
    let jobs = app.get(&format!("/v1/projects/{id}/jobs")).await;
    assert_eq!(jobs.expect(200).as_array().unwrap().len(), 1, "no duplicate job");
}

#[tokio::test]
async fn a_queued_job_survives_sigkill() {
    let mut app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let (id, job) = app.create_project("queued").await;
    app.kill9();
    app.options.args.clear();
    app.start().await;
    assert_eq!(app.wait_job(&job).await["state"], "completed");
    pg_select1(&app.connection_uri(&id).await).await.expect("usable");
}

/// The README's default: a private cluster under the data dir.
#[tokio::test]
async fn private_cluster_survives_sigkill_of_capydb_local_and_of_postgres() {
    let mut app = TestApp::spawn_with(Options { pg: Pg::Private, ..Default::default() }).await;
    assert!(app.stdout.contains("CAPYDB_BASE=http://127.0.0.1:"), "bootstrap lines: {}", app.stdout);
    let id = app.completed_project("durable").await;
    let uri = app.connection_uri(&id).await;
    pg_select1(&uri).await.expect("usable");
    let key = app.create_key(json!({"name": "kept", "scopes": ["projects:read"]})).await;

    // 1. capydb-local dies alone; its cluster keeps running and is reused.
    app.kill9();
    app.start().await;
    assert!(
        app.stdout.lines().filter(|l| l.starts_with("CAPYDB_API_KEY=")).count() == 1,
        "bootstrap lines are printed once per data dir"
    );
    app.call("GET", &format!("/v1/projects/{id}"), Some(&key), None).await.expect(200);
    pg_select1(&app.connection_uri(&id).await).await.expect("usable after restart");

    // 2. Both die: the cluster comes back with the data.
    let pid_file = find_postmaster_pid(&app.dir.join("data")).expect("postmaster.pid of the private cluster");
    let pg_pid: i32 = read_file(&pid_file).lines().next().unwrap().trim().parse().unwrap();
    app.kill9();
    // SAFETY: killing the test's own PostgreSQL server.
    unsafe { libc::kill(pg_pid, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.start().await;
    app.call("GET", &format!("/v1/projects/{id}"), Some(&key), None).await.expect(200);
    pg_select1(&app.connection_uri(&id).await).await.expect("usable after both died");

    // 3. A clean stop (SIGTERM) exits 0 and stops the cluster too.
    let status = app.terminate();
    assert!(status.success(), "SIGTERM should exit cleanly: {status}");
    assert!(pg_select1(&uri).await.is_err(), "the private cluster stops with capydb-local");
    app.start().await;
    pg_select1(&app.connection_uri(&id).await).await.expect("usable after a clean restart");
}

pub fn find_postmaster_pid(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let cluster_json = read_file(&dir.join("postgres/cluster.json"));
    let mut candidates = vec![dir.join("postgres/data/postmaster.pid")];
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&cluster_json) {
        for key in ["home"] {
            if let Some(p) = v[key].as_str() {
                candidates.push(std::path::Path::new(p).join("postmaster.pid"));
                candidates.push(std::path::Path::new(p).join("data/postmaster.pid"));
            }
        }
    }
    candidates.into_iter().find(|p| p.exists())
}

#[tokio::test]
async fn logs_never_contain_keys_or_passwords() {
    let app =
        TestApp::spawn_with(Options { env: vec![("CAPYDB_LOG_FORMAT".into(), "json".into())], ..Default::default() })
            .await;
    let minted = app.create_key(json!({"name": "k", "scopes": ["projects:read"]})).await;
    let id = app.completed_project("secretive").await;
    let c = app.get(&format!("/v1/projects/{id}/connections")).await.body[0].clone();
    let rot = app.post(&format!("/v1/projects/{id}/credentials/rotate"), json!({})).await;
    app.wait_job(rot.body["job"]["id"].as_str().unwrap()).await;
    let new = app.get(&format!("/v1/projects/{id}/connections")).await.body[0].clone();
    let last = app.get("/v1/me").await;
    let last_id = last.header("x-request-id").unwrap();
    assert!(app.wait_for_log(&last_id).await, "the last request's line reaches the log");
    let logs = app.logs();
    assert!(logs.contains("request finished"), "request lines are logged");
    assert!(logs.contains("job_"), "job lines carry the job id");
    for secret in
        [app.key.as_str(), minted.as_str(), c["password"].as_str().unwrap(), new["password"].as_str().unwrap()]
    {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    assert!(!logs.contains(&shared_postgres_url()), "the admin URL leaked into the logs");

    // CAPYDB_LOG_FORMAT=json: every line is a JSON object; request lines carry
    // the request id and job lines the job id.
    let mut request_lines = 0;
    let mut job_lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "request finished" {
            request_lines += 1;
            assert!(
                v["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()),
                "request line without request id: {line}"
            );
        }
        if v["message"] == "step done" || v["message"] == "job completed" || v["message"] == "job running" {
            job_lines += 1;
            assert!(
                v["span"]["job_id"].as_str().is_some_and(|id| id.starts_with("job_")),
                "job line without job id: {line}"
            );
        }
    }
    assert!(request_lines > 3 && job_lines > 3, "expected request and job lines, got {request_lines} and {job_lines}");
}
