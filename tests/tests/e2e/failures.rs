//! Every lifecycle job's failure path: the database server goes away while
//! capydb-local keeps running. Jobs retry with backoff, then fail with a
//! clear error; nothing is left half-done, and everything recovers once the
//! server is back.
use std::time::Duration;

use serde_json::json;

use crate::crash::find_postmaster_pid;
use crate::helpers::*;

fn kill_private_postmaster(app: &TestApp) {
    let pid_file = find_postmaster_pid(&app.dir.join("data")).expect("postmaster.pid");
    let pid: i32 = read_file(&pid_file).lines().next().unwrap().trim().parse().unwrap();
    // SAFETY: killing the test's own PostgreSQL server.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test]
async fn jobs_fail_cleanly_when_the_database_server_is_gone_and_recover_after() {
    let mut app = TestApp::spawn_with(Options {
        pg: Pg::Private,
        ..Options::args(&["--max-attempts", "3", "--retry-base-ms", "100"])
    })
    .await;
    let ready = app.completed_project("ready").await;
    let old_uri = app.connection_uri(&ready).await;
    kill_private_postmaster(&app);

    // Provision: retried, then failed; the project is `failed`, not `ready`.
    let (doomed, job) = app.create_project("doomed").await;
    let job = app.wait_job(&job).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 3, "three attempts before failing: {job}");
    let err = job["error"].as_str().unwrap();
    assert!(err.starts_with("create_role:"), "the error names the step: {err}");
    let p = app.get(&format!("/v1/projects/{doomed}")).await;
    assert_eq!(p.expect(200)["project"]["state"], "failed");
    app.get(&format!("/v1/projects/{doomed}/connections")).await.expect_error(409, "failed");

    // Rotation: fails, and the project keeps its (still valid) credentials.
    let r = app.post(&format!("/v1/projects/{ready}/credentials/rotate"), json!({})).await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    let p = app.get(&format!("/v1/projects/{ready}")).await;
    assert_eq!(p.expect(200)["project"]["state"], "ready", "a failed rotation leaves the project ready");

    // Delete: fails; the project is `failed` and can be deleted again later.
    let r = app.delete(&format!("/v1/projects/{ready}")).await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");

    // The failure events are in the outbox (checked through the jobs' own
    // records here; webhooks will deliver them).
    let jobs = app.get(&format!("/v1/projects/{ready}/jobs")).await;
    let states: Vec<_> =
        jobs.expect(200).as_array().unwrap().iter().map(|j| j["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, vec!["failed", "failed", "completed"]);

    // Restart brings the cluster back: the old credentials still work (the
    // rotation never happened), and both projects can be deleted for real.
    app.kill9();
    app.start().await;
    pg_select1(&old_uri).await.expect("the pre-rotation password still works");
    for id in [&ready, &doomed] {
        let r = app.delete(&format!("/v1/projects/{id}")).await;
        let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "completed", "{job}");
    }
    assert!(pg_select1(&old_uri).await.is_err(), "deleted for real");
    assert_eq!(app.get("/v1/projects").await.expect(200), &json!([]));
}

/// The project's database vanished behind our back: clone, backup and
/// overwrite-restore fail with a clear error, and the failed preview can be
/// deleted.
#[tokio::test]
async fn data_jobs_fail_cleanly_when_the_source_database_vanished() {
    let app = TestApp::spawn().await;
    let project = app.completed_project("vanishing").await;
    let backup = app.post(&format!("/v1/projects/{project}/backups"), json!({})).await;
    let backup_job = app.wait_job(backup.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(backup_job["state"], "completed");
    let backup_id = backup.body["backup"]["id"].as_str().unwrap().to_string();

    let admin = shared_postgres_url();
    let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP DATABASE \"{project}\" WITH (FORCE)")).await.unwrap();

    let r =
        app.post(&format!("/v1/projects/{project}/preview-databases"), json!({"name": "pr-1", "mode": "clone"})).await;
    let b = r.expect(202).clone();
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("copy_data"), "{job}");
    let pv = b["preview"]["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/preview-databases/{pv}")).await.expect(200)["preview"]["state"], "failed");
    app.get(&format!("/v1/preview-databases/{pv}/connections")).await.expect_error(409, "failed");
    let del = app.delete(&format!("/v1/preview-databases/{pv}")).await;
    assert_eq!(app.wait_job(del.expect(202)["job"]["id"].as_str().unwrap()).await["state"], "completed");

    let r = app.post(&format!("/v1/projects/{project}/backups"), json!({})).await;
    let b = r.expect(202).clone();
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    let failed = app.get(&format!("/v1/backups/{}", b["backup"]["id"].as_str().unwrap())).await;
    assert_eq!(failed.expect(200)["backup"]["state"], "failed");

    // The safety backup cannot be taken: the overwrite stops before touching anything.
    let r = app
        .post(&format!("/v1/projects/{project}/restores"), json!({"backup_id": backup_id, "mode": "overwrite"}))
        .await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().starts_with("prepare:"), "{job}");
}

/// A preview job whose provider calls fail (server down) retries, then fails;
/// the preview is `failed` and nothing is left half-made once it is deleted.
#[tokio::test]
async fn preview_jobs_fail_cleanly_when_the_database_server_is_gone() {
    let mut app = TestApp::spawn_with(Options {
        pg: Pg::Private,
        ..Options::args(&["--max-attempts", "2", "--retry-base-ms", "100"])
    })
    .await;
    let project = app.completed_project("p").await;
    kill_private_postmaster(&app);
    let r =
        app.post(&format!("/v1/projects/{project}/preview-databases"), json!({"name": "pr-9", "mode": "empty"})).await;
    let b = r.expect(202).clone();
    let job = app.wait_job(b["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 2);
    let pv = b["preview"]["id"].as_str().unwrap().to_string();
    app.kill9();
    app.start().await;
    let del = app.delete(&format!("/v1/preview-databases/{pv}")).await;
    assert_eq!(app.wait_job(del.expect(202)["job"]["id"].as_str().unwrap()).await["state"], "completed");
    app.get(&format!("/v1/preview-databases/{pv}")).await.expect_error(404, "not found");
}
