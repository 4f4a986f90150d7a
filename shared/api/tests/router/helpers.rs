//! One `App` per test: the SQLite store and queues in a fresh temp dir, the
//! key-file secret box, an in-memory rate limiter, and, as the API functions
//! have, a database endpoint (the testkit's `FakeProvider`: region `test`,
//! version 15) but no database server to manage (no test here runs a job). Egress allows loopback, the only address a test
//! names (nothing here sends a webhook: no worker runs).
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use capydb_domain::fakes::FakeProvider;
use capydb_domain::ports::{
    ArtifactStore, Clock, DatabaseEndpoint, EventBus, JobQueue, RateLimiter, SecretBox, Store, SystemClock,
    WebhookSender,
};
use capydb_domain::{App, AppParts, Settings};
use capydb_egress::{EgressPolicy, HttpWebhookSender};
use capydb_embedded::{
    FileArtifactStore, KeyFileSecretBox, MemoryRateLimiter, QueueEventBus, SqliteQueue, SqliteStore,
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A temp dir removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("capydb-router-{tag}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The router, its app, and the first organization with its admin key
/// (every scope, as `capydb-local` bootstraps it).
pub struct Api {
    pub app: App,
    pub router: Router,
    pub org_id: String,
    pub key: String,
    _dir: TempDir,
}

pub async fn api(tag: &str) -> Api {
    api_with(tag, Settings::default()).await
}

pub async fn api_with(tag: &str, settings: Settings) -> Api {
    let dir = TempDir::new(tag);
    let db = dir.0.join("capydb.sqlite3");
    let webhook_queue = Arc::new(SqliteQueue::open(&db, "webhooks", 5).unwrap()) as Arc<dyn JobQueue>;
    let store = Arc::new(SqliteStore::open(&db).unwrap());
    let app = App::new(AppParts {
        store: store.clone() as Arc<dyn Store>,
        logins: store as Arc<dyn capydb_domain::ports::LoginStore>,
        queue: Arc::new(SqliteQueue::open(&db, "jobs", 5).unwrap()) as Arc<dyn JobQueue>,
        webhook_queue: webhook_queue.clone(),
        bus: Arc::new(QueueEventBus::new(webhook_queue)) as Arc<dyn EventBus>,
        webhook_sender: Some(
            Arc::new(HttpWebhookSender::new(EgressPolicy::ALLOW_PRIVATE).unwrap()) as Arc<dyn WebhookSender>
        ),
        egress: Arc::new(EgressPolicy::ALLOW_PRIVATE),
        // The API functions' shape: an endpoint that names its region and
        // versions, and no database server to manage.
        endpoint: Arc::new(FakeProvider::new()) as Arc<dyn DatabaseEndpoint>,
        provider: None,
        servers: None,
        snapshots: None,
        probe: None,
        secrets: Arc::new(KeyFileSecretBox::open_or_create(&dir.0.join("secret.key")).unwrap()) as Arc<dyn SecretBox>,
        artifacts: Arc::new(FileArtifactStore::open(&dir.0.join("backups")).unwrap()) as Arc<dyn ArtifactStore>,
        rate_limiter: Arc::new(MemoryRateLimiter::new()) as Arc<dyn RateLimiter>,
        sessions: None,
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        settings,
    });
    let (org, key) = capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "router", None)
        .await
        .expect("create organization");
    Api { router: capydb_api::router(app.clone()), app, org_id: org.id, key, _dir: dir }
}

/// An answer, its body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{}: body is not JSON ({e}): {:?}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// Asserts the API's error shape: this status, `Content-Type:
    /// application/json`, a body that is exactly `{"error": "<string>"}`
    /// whose message contains `needle`. Returns the message.
    pub fn expect_error(&self, status: u16, needle: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "status; body {:?}", String::from_utf8_lossy(&self.body));
        let ct = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(ct.starts_with("application/json"), "{status}: content-type {ct:?}");
        let v = self.json();
        let obj = v.as_object().unwrap_or_else(|| panic!("error body is not an object: {v}"));
        assert_eq!(obj.len(), 1, "error body has other keys than \"error\": {v}");
        let msg = obj["error"].as_str().unwrap_or_else(|| panic!("\"error\" is not a string: {v}")).to_string();
        assert!(msg.contains(needle), "{status}: error {msg:?} does not contain {needle:?}");
        msg
    }

    pub fn expect_status(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "status; body {:?}", String::from_utf8_lossy(&self.body));
        self.json()
    }
}

/// A request builder with the usual defaults.
pub struct Call {
    pub method: &'static str,
    pub uri: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub extensions: Option<capydb_api::extract::ClientIp>,
}

pub fn call(method: &'static str, uri: impl Into<String>) -> Call {
    Call { method, uri: uri.into(), key: None, headers: Vec::new(), body: None, extensions: None }
}

impl Call {
    pub fn key(mut self, key: &str) -> Call {
        self.key = Some(key.to_string());
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Call {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// A JSON body sent as `application/json`.
    pub fn json(self, v: Value) -> Call {
        self.raw("application/json", v.to_string().into_bytes())
    }
    pub fn raw(mut self, content_type: &str, body: Vec<u8>) -> Call {
        self.headers.push(("content-type".into(), content_type.into()));
        self.body = Some(body);
        self
    }
    pub fn client_ip(mut self, ip: &str) -> Call {
        self.extensions = Some(capydb_api::extract::ClientIp(ip.parse().unwrap()));
        self
    }

    pub async fn send(self, router: &Router) -> Answer {
        let mut req = Request::builder().method(self.method).uri(&self.uri);
        if let Some(k) = &self.key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut req = req.body(self.body.map(Body::from).unwrap_or_else(Body::empty)).expect("request");
        if let Some(ip) = self.extensions {
            req.extensions_mut().insert(ip);
        }
        let res = router.clone().oneshot(req).await.expect("the router is infallible");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        Answer { status: parts.status, headers: parts.headers, body }
    }
}
