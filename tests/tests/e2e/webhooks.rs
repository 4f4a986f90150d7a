//! Webhooks end to end: a real receiver on 127.0.0.1, signatures checked by
//! the `standardwebhooks` package from PyPI (not by our signing code),
//! retries, 410, the egress guard, and deliveries surviving SIGKILL.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

async fn wait_completed(app: &TestApp, r: Resp) -> Value {
    let job = r.expect(202)["job"]["id"].as_str().expect("job id").to_string();
    let job = app.wait_job(&job).await;
    assert_eq!(job["state"], "completed", "{job}");
    job
}

#[tokio::test]
async fn every_lifecycle_event_arrives_signed_and_verifies_independently() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    let created = app.post(&hooks, json!({"url": receiver.url("all"), "events": ["*"], "description": "ci"})).await;
    let body = created.expect(201).clone();
    let secret = body["secret"].as_str().expect("secret").to_string();
    let webhook_id = body["webhook"]["id"].as_str().expect("id").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(!created.text.contains("sealed"), "{}", created.text);
    let fetched = app.get(&format!("{hooks}/{webhook_id}")).await;
    assert!(!fetched.text.contains(&secret[6..]), "the secret is shown at creation only");
    assert_eq!(fetched.expect(200)["webhook"]["events"], json!(["*"]));

    // Provision, preview, backup, preview deletion, project deletion.
    let project = app.completed_project("hooked").await;
    let uri = app.connection_uri(&project).await;
    let password = url::Url::parse(&uri).unwrap().password().unwrap().to_string();
    let preview = app
        .post(
            &format!("/v1/projects/{project}/preview-databases"),
            json!({"name": "pr-7", "mode": "empty", "ttl_hours": 2}),
        )
        .await;
    let preview_id = preview.body["preview"]["id"].as_str().expect("preview id").to_string();
    wait_completed(&app, preview).await;
    wait_completed(&app, app.post(&format!("/v1/projects/{project}/backups"), json!({"name": "b1"})).await).await;
    wait_completed(&app, app.delete(&format!("/v1/preview-databases/{preview_id}")).await).await;
    wait_completed(&app, app.delete(&format!("/v1/projects/{project}")).await).await;

    let expected = ["project.ready", "preview.ready", "backup.completed", "preview.deleted", "project.deleted"];
    let got = receiver.wait("all", "every lifecycle event", |got| got.len() >= 10).await;
    let mut types: Vec<String> = got.iter().map(event_type).collect();
    types.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.extend(std::iter::repeat_n("job.completed".to_string(), 5));
    want.sort();
    assert_eq!(types, want);

    for r in &got {
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "payload is exactly type, timestamp, data: {}", r.body);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["data"]["job"]["state"], "completed", "{}", r.body);
        assert!(r.headers["webhook-id"].starts_with("evt_"));
        assert!(r.headers["webhook-signature"].starts_with("v1,"));
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(!r.body.contains(&password), "a payload carries the database password");
        assert!(!r.body.contains("sealed"), "{}", r.body);
    }
    let ready = got.iter().find(|r| event_type(r) == "project.ready").unwrap();
    let v: Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(v["data"]["project"]["id"], project.as_str());

    // Every delivery verifies with the secret; a tampered body and a wrong secret do not.
    let mut tampered = got[0].clone();
    tampered.body = tampered.body.replacen("completed", "failed", 1);
    let wrong_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut cases: Vec<(&str, &Received, bool)> = got.iter().map(|r| (secret.as_str(), r, true)).collect();
    cases.push((secret.as_str(), &tampered, false));
    cases.push((wrong_secret, &got[1], false));
    assert_eq!(verify_independently(&cases), 10);

    // Every attempt is recorded.
    let deliveries = app.get(&format!("{hooks}/{webhook_id}/deliveries")).await;
    let deliveries = deliveries.expect(200).as_array().unwrap().clone();
    assert_eq!(deliveries.len(), 10);
    for d in &deliveries {
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(d["attempt_count"], 1);
        assert_eq!(d["attempts"][0]["status_code"], 200);
        assert_eq!(d["attempts"][0]["response_body"], "thanks");
    }

    // Rotation: the ping carries both signatures; each secret verifies it.
    let rotated = app.post(&format!("{hooks}/{webhook_id}/rotate-secret"), json!({})).await;
    let new_secret = rotated.expect(200)["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    app.post(&format!("{hooks}/{webhook_id}/ping"), json!({})).await.expect(202);
    let got = receiver.wait("all", "the ping", |got| got.iter().any(|r| event_type(r) == "webhook.ping")).await;
    let ping = got.iter().find(|r| event_type(r) == "webhook.ping").unwrap();
    assert_eq!(ping.headers["webhook-signature"].split(' ').count(), 2, "{:?}", ping.headers);
    assert_eq!(verify_independently(&[(&new_secret, ping, true), (&secret, ping, true)]), 2);
}

#[tokio::test]
async fn retries_honour_the_schedule_410_disables_and_redeliver_resends() {
    let app = TestApp::spawn_with(Options::args(&["--debug-webhook-retry-ms", "200,200,200,200,200,200,200"])).await;
    let receiver = Receiver::start().await;
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    receiver.script("flaky", &[500, 500]);
    let created = app.post(&hooks, json!({"url": receiver.url("flaky"), "events": ["job.failed"]})).await;
    let webhook_id = created.expect(201)["webhook"]["id"].as_str().unwrap().to_string();

    app.post(&format!("{hooks}/{webhook_id}/ping"), json!({})).await.expect(202);
    let got = receiver.wait("flaky", "three attempts", |got| got.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_after = receiver.got("flaky");
    assert_eq!(got_after.len(), 3, "exactly three attempts: 500, 500, 200");
    assert!(got.iter().all(|r| r.headers["webhook-id"] == got[0].headers["webhook-id"]), "one webhook-id");
    assert!(got.iter().all(|r| r.body == got[0].body), "the same body on every attempt");

    let deliveries = app.get(&format!("{hooks}/{webhook_id}/deliveries")).await.expect(200).clone();
    let d = &deliveries[0];
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["attempt_count"], 3);
    let statuses: Vec<Value> = d["attempts"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(statuses, [json!(500), json!(500), json!(200)]);
    assert_eq!(d["event_id"].as_str(), Some(got[0].headers["webhook-id"].as_str()));

    // Redeliver: the same message again, same webhook-id.
    let delivery_id = d["id"].as_str().unwrap();
    app.post(&format!("{hooks}/{webhook_id}/deliveries/{delivery_id}/redeliver"), json!({})).await.expect(202);
    let got = receiver.wait("flaky", "the redelivery", |got| got.len() >= 4).await;
    assert_eq!(got[3].headers["webhook-id"], got[0].headers["webhook-id"]);
    app.post(&format!("{hooks}/{webhook_id}/deliveries/dlv_nope/redeliver"), json!({}))
        .await
        .expect_error(404, "no delivery");

    // A receiver that stays down: every scheduled attempt, then `failed`.
    receiver.script("dead", &[500; 20]);
    let dead = app.post(&hooks, json!({"url": receiver.url("dead"), "events": ["*"]})).await;
    let dead_id = dead.expect(201)["webhook"]["id"].as_str().unwrap().to_string();
    app.post(&format!("{hooks}/{dead_id}/ping"), json!({})).await.expect(202);
    receiver.wait("dead", "eight attempts", |got| got.len() >= 8).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(receiver.got("dead").len(), 8, "the first attempt and seven retries, no more");
    let d = app.get(&format!("{hooks}/{dead_id}/deliveries")).await.expect(200)[0].clone();
    assert_eq!(d["state"], "failed", "{d}");
    let w = app.get(&format!("{hooks}/{dead_id}")).await.expect(200)["webhook"].clone();
    assert!(w["failing_since"].is_string(), "{w}");
    assert_eq!(w["enabled"], true, "five days of failures disable an endpoint, not eight attempts");

    // 410 Gone: one attempt, the endpoint is disabled, and says why.
    receiver.script("gone", &[410]);
    let gone = app.post(&hooks, json!({"url": receiver.url("gone"), "events": ["*"]})).await;
    let gone_id = gone.expect(201)["webhook"]["id"].as_str().unwrap().to_string();
    app.post(&format!("{hooks}/{gone_id}/ping"), json!({})).await.expect(202);
    receiver.wait("gone", "the 410 attempt", |got| !got.is_empty()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let w = loop {
        let w = app.get(&format!("{hooks}/{gone_id}")).await.expect(200)["webhook"].clone();
        if w["enabled"] == false || Instant::now() > deadline {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(w["enabled"], false, "{w}");
    assert!(w["disabled_reason"].as_str().unwrap().contains("410"), "{w}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.got("gone").len(), 1, "no retry after 410");
    app.post(&format!("{hooks}/{gone_id}/ping"), json!({})).await.expect_error(409, "disabled");
    let enabled = app.patch(&format!("{hooks}/{gone_id}"), json!({"enabled": true})).await;
    assert_eq!(enabled.expect(200)["webhook"]["disabled_reason"], Value::Null);
    app.post(&format!("{hooks}/{gone_id}/ping"), json!({})).await.expect(202);
    receiver.wait("gone", "a ping after re-enabling", |got| got.len() >= 2).await;
}

#[tokio::test]
async fn endpoint_management_validates_input_and_scopes() {
    let app = TestApp::spawn().await;
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    for (body, status, needle) in [
        (json!({"url": "ftp://example.com/", "events": ["*"]}), 400, "http"),
        (json!({"url": "not a url", "events": ["*"]}), 400, "http:// or https://"),
        (json!({"url": "https://exa mple.com/", "events": ["*"]}), 400, "valid URL"),
        (json!({"url": "https://u:p@example.com/", "events": ["*"]}), 400, "credentials"),
        (json!({"url": "https://example.com/", "events": []}), 400, "at least one"),
        (json!({"url": "https://example.com/", "events": ["nope.nope"]}), 400, "unknown event type"),
        (json!({"url": "https://example.com/", "events": ["*", "job.failed"]}), 400, "alone"),
        (json!({"url": "https://example.com/", "events": ["*"], "project_id": "prj_nope"}), 404, "no project"),
        (json!({"url": "https://example.com/", "events": ["*"], "secret": "mine"}), 400, "unknown field"),
        (json!({"url": "https://example.com/"}), 400, "events"),
    ] {
        app.post(&hooks, body.clone()).await.expect_error(status, needle);
    }
    let created = app.post(&hooks, json!({"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]})).await;
    let id = created.expect(201)["webhook"]["id"].as_str().unwrap().to_string();
    let project = app.completed_project("filtered").await;
    let patched = app
        .patch(
            &format!("{hooks}/{id}"),
            json!({"events": ["project.ready"], "project_id": project, "description": "x"}),
        )
        .await;
    let w = patched.expect(200)["webhook"].clone();
    assert_eq!((w["events"].clone(), w["project_id"].clone()), (json!(["project.ready"]), json!(project)));
    let cleared = app.patch(&format!("{hooks}/{id}"), json!({"project_id": null, "description": null})).await;
    assert_eq!(cleared.expect(200)["webhook"]["project_id"], Value::Null);
    assert_eq!(app.get(&hooks).await.expect(200).as_array().unwrap().len(), 1);

    // A project-scoped key, or one without organizations scopes, cannot manage them.
    let scoped = app
        .create_key(json!({"name": "ci", "scopes": ["organizations:read", "projects:read"], "project_id": project}))
        .await;
    let r = app.call("GET", &hooks, Some(&scoped), None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let reader = app.create_key(json!({"name": "ro", "scopes": ["organizations:read"]})).await;
    assert_eq!(app.call("GET", &hooks, Some(&reader), None).await.status, 200);
    let r =
        app.call("POST", &hooks, Some(&reader), Some(json!({"url": "https://example.com/", "events": ["*"]}))).await;
    r.expect_error(403, "organizations:write");
    app.get("/v1/organizations/org_00000000000000000000000000/webhooks").await.expect_error(404, "");

    assert_eq!(app.delete(&format!("{hooks}/{id}")).await.status, 204);
    app.get(&format!("{hooks}/{id}")).await.expect_error(404, "no webhook");
    app.delete(&format!("{hooks}/{id}")).await.expect_error(404, "no webhook");
}

#[tokio::test]
async fn deny_private_webhooks_refuses_private_targets_at_creation() {
    let app = TestApp::spawn_with(Options::args(&["--deny-private-webhooks"])).await;
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/hook",
        "http://localhost:9/hook",
    ] {
        let r = app.post(&hooks, json!({"url": url, "events": ["*"]})).await;
        r.expect_error(400, "public addresses");
    }
    // Without the flag the same target is accepted (a developer's own machine).
    let open = TestApp::spawn().await;
    let hooks = format!("/v1/organizations/{}/webhooks", open.org_id);
    open.post(&hooks, json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})).await.expect(201);
}

#[tokio::test]
async fn pending_deliveries_survive_sigkill() {
    let args = ["--debug-webhook-retry-ms", "1000,1000,1000,1000,1000,1000,1000"];
    let mut app = TestApp::spawn_with(Options::args(&args)).await;
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    let created = app.post(&hooks, json!({"url": receiver.url("later"), "events": ["*"]})).await;
    let webhook_id = created.expect(201)["webhook"]["id"].as_str().unwrap().to_string();
    app.completed_project("survivor").await;
    receiver.wait("later", "the first failed attempts", |got| got.len() >= 2).await;

    app.kill9();
    receiver.set_down(false);
    app.start().await;
    let got = receiver
        .wait("later", "both events delivered after the restart", |got| {
            let ok: Vec<String> = got.iter().map(event_type).collect();
            ok.iter().filter(|t| *t == "project.ready").count() >= 2
                && ok.iter().filter(|t| *t == "job.completed").count() >= 2
        })
        .await;
    assert!(!got.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = app.get(&format!("{hooks}/{webhook_id}/deliveries")).await.expect(200).clone();
        let states: Vec<Value> = deliveries.as_array().unwrap().iter().map(|d| d["state"].clone()).collect();
        if states.len() == 2 && states.iter().all(|s| s == "succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries not all succeeded: {deliveries}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Handles webhook-queue messages until none is left, as the delivery loop would.
async fn deliver_all(app: &capydb_domain::App) {
    crate::sweeper::drain_queue(app.webhook_queue.as_ref(), "webhook", |body| async move {
        app.handle_webhook_message(&body).await
    })
    .await
}

/// With an injected clock: failures spread over five days disable the
/// endpoint, and its pending delivery fails instead of being retried.
#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    use capydb_domain::webhooks::{CreateWebhook, WebhookSettings};
    use capydb_domain::Settings;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = temp_dir("five-days");
    let artifacts = Arc::new(capydb_embedded::FileArtifactStore::open(&dir.join("backups")).unwrap());
    let settings = Settings {
        webhooks: WebhookSettings { retry_schedule: vec![Duration::ZERO; 3], jitter: 0.0, ..Default::default() },
        ..Default::default()
    };
    let (app, clock, _) = crate::sweeper::in_process_app_with(&dir, artifacts, settings, None).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (org, key) =
        capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "hooks", None).await.unwrap();
    let p = app.authenticate_api_key(&key, None).await.unwrap();
    let create: CreateWebhook = serde_json::from_value(serde_json::json!({"url": url, "events": ["*"]})).unwrap();
    let w = app.create_webhook(&p, &org.id, create).await.unwrap().webhook;

    // Day 0: four attempts, all failing; the endpoint stays enabled.
    let first = app.ping_webhook(&p, &org.id, &w.id).await.unwrap();
    deliver_all(&app).await;
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let after = app.get_webhook(&p, &org.id, &w.id).await.unwrap();
    assert!(after.enabled);
    let since = after.failing_since.expect("failing_since is set");
    let d = app.store.get_delivery(&first.id).await.unwrap().unwrap();
    assert_eq!((d.state.as_str(), d.attempt_count), ("failed", 4));

    // Five days later, still failing: disabled after this attempt, no retry.
    clock.advance(chrono::Duration::days(5) + chrono::Duration::seconds(1));
    let second = app.ping_webhook(&p, &org.id, &w.id).await.unwrap();
    deliver_all(&app).await;
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    let after = app.get_webhook(&p, &org.id, &w.id).await.unwrap();
    assert!(!after.enabled, "{after:?}");
    assert_eq!(after.failing_since, Some(since));
    assert!(after.disabled_reason.as_deref().unwrap_or_default().contains("5 days"), "{after:?}");
    let d = app.store.get_delivery(&second.id).await.unwrap().unwrap();
    assert_eq!((d.state.as_str(), d.attempt_count), ("failed", 1));
}
