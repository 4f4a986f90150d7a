//! `PATCH .../webhooks/{id}`: re-enabling a disabled endpoint clears
//! `failing_since` (the domain decides, `WebhookEndpoint::set_enabled`, and
//! tells the store); any other edit keeps it.
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn re_enabling_clears_failing_since_and_other_edits_keep_it() {
    let api = api("webhooks").await;
    let hooks = format!("/v1/organizations/{}/webhooks", api.org_id);
    let r = call("POST", &hooks).key(&api.key).json(json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}));
    let id = r.send(&api.router).await.expect_status(201)["webhook"]["id"].as_str().unwrap().to_string();
    let path = format!("{hooks}/{id}");
    let get =
        || async { call("GET", &path).key(&api.key).send(&api.router).await.expect_status(200)["webhook"].clone() };

    // Failing while enabled: an edit keeps failing_since, and so does enabling it again.
    let t1 = api.app.now() - chrono::Duration::hours(2);
    api.app.store.set_webhook_health(&api.org_id, &id, false, t1).await.unwrap();
    let since = get().await["failing_since"].clone();
    assert!(since.is_string(), "{since}");
    for body in [json!({"description": "edited"}), json!({"enabled": true})] {
        let w = call("PATCH", &path).key(&api.key).json(body.clone()).send(&api.router).await.expect_status(200);
        assert_eq!(w["webhook"]["failing_since"], since, "{body} on an enabled endpoint");
    }

    // Disabled by the delivery loop: editing it leaves it disabled and failing.
    api.app.store.disable_webhook(&api.org_id, &id, "every attempt failed for 5 days", api.app.now()).await.unwrap();
    let r = call("PATCH", &path).key(&api.key).json(json!({"description": "still off", "enabled": false}));
    let w = r.send(&api.router).await.expect_status(200)["webhook"].clone();
    assert_eq!((w["enabled"].clone(), w["failing_since"].clone()), (json!(false), since.clone()), "{w}");
    assert_eq!(w["disabled_reason"], "every attempt failed for 5 days");

    // Re-enabled: failing_since and the reason are gone, in the answer and in the store.
    let w = call("PATCH", &path).key(&api.key).json(json!({"enabled": true})).send(&api.router).await;
    let w = w.expect_status(200)["webhook"].clone();
    assert_eq!(
        (w["enabled"].clone(), w["failing_since"].clone(), w["disabled_reason"].clone()),
        (json!(true), json!(null), json!(null))
    );
    let stored = api.app.store.get_webhook(&api.org_id, &id).await.unwrap().unwrap();
    assert_eq!((stored.enabled, stored.failing_since, stored.disabled_reason), (true, None, None));
}
