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
