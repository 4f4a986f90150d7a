//! `Idempotency-Key` against a running `capydb-local`: fifty parallel
//! retries of one preview create make one job, one preview and one
//! `preview.ready` webhook, and every answer is the first one replayed or a
//! `409` while it ran.
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn fifty_parallel_creates_with_one_key_make_one_preview_and_one_webhook() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    app.post(&hooks, json!({"url": receiver.url("idem"), "events": ["preview.ready"]})).await.expect(201);
    let project = app.completed_project("idem").await;

    let path = format!("/v1/projects/{project}/preview-databases");
    let body = serde_json::to_vec(&json!({"name": "pr-50", "mode": "empty", "ttl_hours": 2})).unwrap();
    let auth = format!("Bearer {}", app.key);
    let headers =
        [("content-type", "application/json"), ("authorization", auth.as_str()), ("idempotency-key", "ci-run-50")];
    let answers = futures_join((0..50).map(|_| app.try_request("POST", &path, Some(body.clone()), &headers))).await;
    let answers: Vec<Resp> = answers.into_iter().map(|r| r.expect("every request is answered")).collect();

    let firsts: Vec<&Resp> =
        answers.iter().filter(|r| r.status == 202 && r.header("idempotent-replayed").is_none()).collect();
    assert_eq!(firsts.len(), 1, "one request ran: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    let first = firsts[0];
    let (mut replays, mut conflicts) = (0, 0);
    for r in &answers {
        match r.status {
            202 => {
                assert_eq!(r.text, first.text, "a replay is the first answer, byte for byte");
                replays += 1;
            }
            409 => {
                r.expect_error(409, "still in progress");
                conflicts += 1;
            }
            other => panic!("unexpected HTTP {other}: {}", r.text),
        }
    }
    assert_eq!(replays + conflicts, 50);

    let previews = app.get(&path).await;
    assert_eq!(previews.expect(200).as_array().map(Vec::len), Some(1), "one preview: {}", previews.text);
    let job = app.wait_job(first.body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    let got = receiver.wait("idem", "preview.ready", |got| !got.is_empty()).await;
    // Anything a second job would have sent has had time to arrive.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let ready = receiver.got("idem").iter().filter(|r| event_type(r) == "preview.ready").count();
    assert_eq!((got.len(), ready), (1, 1), "one preview.ready webhook");

    // After it finished, a retry is the first answer still; another body under the key is 422.
    let again = app.try_request("POST", &path, Some(body.clone()), &headers).await.unwrap();
    assert_eq!((again.status, again.text.as_str()), (202, first.text.as_str()));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    let other = serde_json::to_vec(&json!({"name": "pr-51", "mode": "empty"})).unwrap();
    app.try_request("POST", &path, Some(other), &headers).await.unwrap().expect_error(422, "different request");
}

/// A crash between the write and the answer: the first attempt of a
/// preview create starts its job and dies before its answer is stored (the
/// same domain calls the HTTP layer makes, stopped there). The retry, once
/// the dead attempt's 30 s lease has run out (an injected clock), gets the
/// `202` of that job and preview, replayed, and nothing runs twice: one
/// job, one preview, one `preview.created`-kind event each.
#[tokio::test]
async fn a_retry_after_a_crash_between_the_write_and_the_answer_answers_from_the_job() {
    use std::sync::Arc;

    use capydb_domain::idempotency;
    use capydb_domain::ports::Page;
    use capydb_embedded::FileArtifactStore;

    let dir = temp_dir("idem-crash");
    let artifacts = Arc::new(FileArtifactStore::open(&dir.join("backups")).unwrap());
    let (domain, clock, _) =
        crate::sweeper::in_process_app_with(&dir, artifacts, capydb_domain::Settings::default(), None).await;
    let (org, key) =
        capydb_domain::organizations::create_organization(domain.store.as_ref(), domain.now(), "crash", None)
            .await
            .unwrap();
    let p = domain.authenticate_api_key(&key, None).await.unwrap();
    let project = domain
        .create_project(
            &p,
            capydb_domain::projects::CreateProject {
                name: capydb_domain::fields::Name::parse("name", "crash").unwrap(),
                region: None,
                pg_version: None,
            },
        )
        .await
        .unwrap()
        .project;
    crate::sweeper::drain(&domain).await;

    let path = format!("/v1/projects/{}/preview-databases", project.id);
    let body = serde_json::to_vec(&json!({"name": "pr-crash", "mode": "empty"})).unwrap();
    // The first attempt, as the HTTP layer runs it, up to the crash.
    let fingerprint = idempotency::fingerprint("POST", &path, &body);
    let held = match domain.begin_idempotent_request(&p.credential_id(), "ci-crash", fingerprint).await.unwrap() {
        idempotency::Begun::Run(held) => held,
        _ => panic!("a fresh key is run"),
    };
    let request: capydb_domain::previews::CreatePreview = serde_json::from_slice(&body).unwrap();
    let started = idempotency::holding(held, domain.create_preview(&p, &project.id, request)).await.unwrap();
    // ... and no answer is ever stored: the process died here.

    let base = crate::sweeper::serve_in_process(domain.clone()).await;
    let app = TestApp::attach(base, key.clone(), org.id.clone());
    let auth = format!("Bearer {key}");
    let headers =
        [("content-type", "application/json"), ("authorization", auth.as_str()), ("idempotency-key", "ci-crash")];
    let early = app.try_request("POST", &path, Some(body.clone()), &headers).await.unwrap();
    early.expect_error(409, "still in progress");
    clock.advance(chrono::Duration::seconds(31));
    let retry = app.try_request("POST", &path, Some(body.clone()), &headers).await.unwrap();
    assert_eq!(retry.status, 202, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(retry.body["job"]["id"], started.job.id.as_str(), "the dead attempt's job: {}", retry.text);
    assert_eq!(retry.body["preview"]["id"], started.preview.id.as_str(), "and its preview");
    assert_eq!(retry.body["preview"]["name"], "pr-crash");
    // Stored now: later retries replay it byte for byte.
    let again = app.try_request("POST", &path, Some(body), &headers).await.unwrap();
    assert_eq!((again.status, again.text.as_str()), (202, retry.text.as_str()));

    let previews = domain.store.list_previews(&project.id, &Page::first(10)).await.unwrap();
    assert_eq!(previews.len(), 1, "one preview: {previews:?}");
    let jobs = domain.store.list_project_jobs(&project.id, &Page::first(10)).await.unwrap();
    let preview_jobs: Vec<_> = jobs.iter().filter(|j| j.resource.id == started.preview.id).collect();
    assert_eq!(preview_jobs.len(), 1, "one job for the preview: {jobs:?}");
    crate::sweeper::drain(&domain).await;
    let events = domain.store.list_events(&org.id, &Page::first(100)).await.unwrap();
    let ready = events.iter().filter(|e| e.kind.as_str() == "preview.ready").count();
    assert_eq!(ready, 1, "one preview.ready event");

    // The same crash around an API key and a webhook endpoint.
    let crash = |path: String, body: Vec<u8>, key: &'static str| {
        let (domain, p) = (domain.clone(), p.clone());
        async move {
            let fingerprint = idempotency::fingerprint("POST", &path, &body);
            match domain.begin_idempotent_request(&p.credential_id(), key, fingerprint).await.unwrap() {
                idempotency::Begun::Run(held) => held,
                _ => panic!("a fresh key is run"),
            }
        }
    };
    let retry = |path: String, body: Vec<u8>, key: &'static str| {
        let (app, auth) = (&app, auth.clone());
        async move {
            let headers =
                [("content-type", "application/json"), ("authorization", auth.as_str()), ("idempotency-key", key)];
            app.try_request("POST", &path, Some(body), &headers).await.unwrap()
        }
    };
    let keys_path = format!("/v1/organizations/{}/api-keys", org.id);
    let key_body = serde_json::to_vec(&json!({"name": "ci-crash", "scopes": ["projects:read"]})).unwrap();
    let held = crash(keys_path.clone(), key_body.clone(), "crash-key").await;
    let request = serde_json::from_slice(&key_body).unwrap();
    let made = idempotency::holding(held, domain.create_api_key(&p, &org.id, request)).await.unwrap();
    clock.advance(chrono::Duration::seconds(31));
    // Its plaintext was in the lost answer only: the retry names the key to revoke.
    let r = retry(keys_path.clone(), key_body.clone(), "crash-key").await;
    r.expect_error(409, &format!("revoke {}", made.api_key.id));
    assert_eq!(retry(keys_path, key_body, "crash-key").await.text, r.text, "and says so again");
    let keys = domain.store.list_api_keys(&org.id, &Page::first(100)).await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.name == "ci-crash").count(), 1, "one key");

    let hooks_path = format!("/v1/organizations/{}/webhooks", org.id);
    let hook_body =
        serde_json::to_vec(&json!({"url": "http://127.0.0.1:9/crash", "events": ["preview.ready"]})).unwrap();
    let held = crash(hooks_path.clone(), hook_body.clone(), "crash-hook").await;
    let request = serde_json::from_slice(&hook_body).unwrap();
    let made = idempotency::holding(held, domain.create_webhook(&p, &org.id, request)).await.unwrap();
    clock.advance(chrono::Duration::seconds(31));
    let r = retry(hooks_path, hook_body, "crash-hook").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(r.body["webhook"]["id"], made.webhook.id.as_str(), "the endpoint the first attempt made");
    assert_eq!(r.body["secret"], made.secret.as_str(), "with its signing secret");
    let hooks = domain.store.list_webhooks(&org.id, &Page::first(100)).await.unwrap();
    assert_eq!(hooks.iter().filter(|h| h.url.ends_with("/crash")).count(), 1, "one endpoint");
}
