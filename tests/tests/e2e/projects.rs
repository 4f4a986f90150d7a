//! The project lifecycle on a real PostgreSQL server.
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn project_lifecycle_provision_connect_rotate_delete() {
    let app = TestApp::spawn().await;
    let (id, job_id) = app.create_project("shop").await;
    let job = app.wait_job(&job_id).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["kind"], "provision");
    assert_eq!(job["resource"], json!({"type": "project", "id": id}));
    assert!(job["started_at"].is_string() && job["finished_at"].is_string() && job["error"].is_null(), "{job}");
    let project = app.get(&format!("/v1/projects/{id}")).await;
    assert_eq!(project.expect(200)["project"]["state"], "ready");
    assert!(project.body["project"]["password_sealed"].is_null(), "sealed password must not be serialized");

    // Usable: a real connection with the returned credentials.
    let conns = app.get(&format!("/v1/projects/{id}/connections")).await;
    let c = conns.expect(200)[0].clone();
    for field in ["role", "host", "port", "database", "user", "password", "sslmode", "uri"] {
        assert!(!c[field].is_null(), "connection lacks {field}: {c}");
    }
    let old_uri = c["uri"].as_str().unwrap().to_string();
    pg_select1(&old_uri).await.expect("the issued credentials connect");

    // The password is stored sealed: it appears nowhere in the data dir's files or logs.
    let password = c["password"].as_str().unwrap();
    let sqlite = std::fs::read(app.dir.join("data/capydb.sqlite3")).unwrap();
    assert!(!sqlite.windows(password.len()).any(|w| w == password.as_bytes()), "password stored in plaintext");
    assert!(!app.logs().contains(password), "password in logs");

    // Rename.
    let r = app.patch(&format!("/v1/projects/{id}"), json!({"name": "shop-v2"})).await;
    assert_eq!(r.expect(200)["project"]["name"], "shop-v2");

    // Rotate: the old password is refused by the server, the new one works.
    let r = app.post(&format!("/v1/projects/{id}/credentials/rotate"), json!({})).await;
    let rot = r.expect(202)["job"]["id"].as_str().unwrap().to_string();
    let job = app.wait_job(&rot).await;
    assert_eq!(job["state"], "completed", "{job}");
    let err = pg_select1(&old_uri).await.expect_err("the old password must be refused after rotation");
    assert!(err.contains("password") || err.contains("authentication"), "{err}");
    let new_uri = app.connection_uri(&id).await;
    assert_ne!(new_uri, old_uri);
    pg_select1(&new_uri).await.expect("the new password works");

    // Jobs of the project, newest first.
    let jobs = app.get(&format!("/v1/projects/{id}/jobs")).await;
    let kinds: Vec<_> =
        jobs.expect(200).as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, vec!["rotate_credentials", "provision"]);

    // Delete: the database and role are dropped, the project disappears.
    let r = app.delete(&format!("/v1/projects/{id}")).await;
    let del = r.expect(202).clone();
    assert_eq!(del["project"]["state"], "deleting");
    let job = app.wait_job(del["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert!(pg_select1(&new_uri).await.is_err(), "the database must be gone");
    let db = new_uri.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let admin = shared_postgres_url();
    assert_eq!(admin_query_count(&admin, "SELECT count(*) FROM pg_database WHERE datname = $1", &db).await, 0);
    assert_eq!(admin_query_count(&admin, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%'", &id).await, 0);
    app.get(&format!("/v1/projects/{id}")).await.expect_error(404, "not found");
    assert_eq!(app.get("/v1/projects").await.expect(200), &json!([]));
    // The job history stays readable.
    app.get(&format!("/v1/jobs/{}", del["job"]["id"].as_str().unwrap())).await.expect(200);
}

#[tokio::test]
async fn one_lifecycle_job_per_project_and_connections_wait_for_ready() {
    // No workers: the provision job stays queued, deterministically.
    let app = TestApp::spawn_with(Options::args(&["--workers", "0"])).await;
    let (id, job) = app.create_project("busy").await;
    let r = app.get(&format!("/v1/projects/{id}")).await;
    assert_eq!(r.expect(200)["project"]["state"], "provisioning");
    app.get(&format!("/v1/projects/{id}/connections")).await.expect_error(409, "provisioning");
    app.post(&format!("/v1/projects/{id}/credentials/rotate"), json!({})).await.expect_error(409, "provisioning");
    app.delete(&format!("/v1/projects/{id}")).await.expect_error(409, &job);
    let j = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(j.expect(200)["job"]["state"], "queued");
}

#[tokio::test]
async fn projects_of_two_projects_cannot_open_each_other() {
    let app = TestApp::spawn().await;
    let a = app.completed_project("a").await;
    let b = app.completed_project("b").await;
    let a_uri = app.connection_uri(&a).await;
    let b_uri = app.connection_uri(&b).await;
    // a's role and password against b's database.
    let b_db = b_uri.rsplit('/').next().unwrap().to_string();
    let (a_prefix, _) = a_uri.rsplit_once('/').unwrap();
    let cross = format!("{a_prefix}/{b_db}");
    assert!(pg_select1(&cross).await.is_err(), "project a's credentials must not open project b's database");
}
