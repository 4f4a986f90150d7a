//! What the end-to-end tests of both shapes share, without `capydb-local`'s
//! binary: scratch dirs, the shared PostgreSQL server, and a webhook
//! receiver on 127.0.0.1 whose signatures an independent verifier checks.
//! `tests/tests/e2e` (the local shape) and `shared/lambda/tests/aws_shape`
//! (the deployed shape, which must not link into the e2e binary) both
//! include this file.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxumPath, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

/// The repository's root (where `Cargo.lock` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("Cargo.lock").is_file())
        .expect("the workspace root above this package")
        .to_path_buf()
}

/// A fresh directory under this test binary's scratch root. The root (the
/// shared cluster's data dir included) is removed when the binary exits, so a
/// run leaves nothing behind in the system temp dir; a failed `TestApp` moves
/// its own dir out first (see its `Drop`) to keep its logs.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = scratch_root().join(format!("{tag}-{}", capydb_domain::ids::new_id("t")));
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

static SCRATCH_ROOT: OnceLock<PathBuf> = OnceLock::new();
static CLUSTER_TO_STOP: OnceLock<capydb_postgres::LocalCluster> = OnceLock::new();

fn scratch_root() -> &'static Path {
    SCRATCH_ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("capydb-e2e-{}", capydb_domain::ids::new_id("run")));
        fs::create_dir_all(&root).expect("scratch root");
        // Runs when the test binary exits (libtest returns from main, or
        // calls exit with 101 when a test failed): stop the shared cluster
        // and delete it (a relocated cluster lives outside the root), then
        // remove everything under the root.
        extern "C" fn clean_up() {
            if let Some(c) = CLUSTER_TO_STOP.get() {
                let _ = c.destroy();
            }
            if let Some(root) = SCRATCH_ROOT.get() {
                let _ = fs::remove_dir_all(root);
            }
        }
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(clean_up) };
        root
    })
}

/// The PostgreSQL server shared by the tests of this binary.
pub fn shared_postgres_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CAPYDB_TEST_POSTGRES_URL") {
            return url;
        }
        // No server given: run one capydb-local with a private cluster and
        // borrow it. `capydb-local` prints nothing about its admin URL, so
        // start the cluster through the library instead.
        // A thread of its own: callers are inside a tokio runtime already.
        std::thread::spawn(start_private_cluster_for_tests).join().expect("shared cluster start")
    })
    .clone()
}

fn start_private_cluster_for_tests() -> String {
    let dir = temp_dir("shared-pg");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let secrets = capydb_embedded::KeyFileSecretBox::open_or_create(&dir.join("secret.key")).expect("secret box");
        let cluster = capydb_postgres::LocalCluster::ensure_started(&dir.join("postgres"), &secrets)
            .await
            .expect("a PostgreSQL cluster for the tests (set CAPYDB_TEST_POSTGRES_URL to use an existing server)");
        let url = cluster.admin_url();
        // Stopped when the test binary exits (see `scratch_root`).
        CLUSTER_TO_STOP.set(cluster).ok();
        url
    })
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Received>,
    /// Statuses to answer per path, in order; 200 once a path's list is empty.
    script: HashMap<String, VecDeque<u16>>,
    /// While set, every path answers 503.
    down: bool,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    base: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new().route("/{path}", axum::routing::post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let base = format!("http://{}", listener.local_addr().expect("receiver address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, state }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub(crate) fn script(&self, path: &str, statuses: &[u16]) {
        self.state.lock().unwrap().script.insert(path.to_string(), statuses.iter().copied().collect());
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub(crate) fn got_any(&self, path: &str, kind: &str) -> bool {
        self.got(path).iter().any(|r| event_type(r) == kind)
    }

    pub(crate) fn got(&self, path: &str) -> Vec<Received> {
        self.state.lock().unwrap().got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until `done` holds for what `path` received.
    pub(crate) async fn wait(&self, path: &str, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got(path);
            if done(&got) {
                return got;
            }
            let types: Vec<String> = got.iter().map(event_type).collect();
            assert!(Instant::now() < deadline, "receiver never saw {what}; got {types:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    AxumPath(path): AxumPath<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, &'static str) {
    let mut s = state.lock().unwrap();
    let headers =
        headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string())).collect();
    let status = if s.down { 503 } else { s.script.get_mut(&path).and_then(|q| q.pop_front()).unwrap_or(200) };
    s.got.push(Received { path, headers, body });
    (StatusCode::from_u16(status).unwrap(), "thanks")
}

pub(crate) fn event_type(r: &Received) -> String {
    serde_json::from_str::<Value>(&r.body).ok().and_then(|v| v["type"].as_str().map(str::to_string)).unwrap_or_default()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPYDB_TEST_PYTHON") {
        return p.into();
    }
    let venv = workspace_root().join(".venv-ci/bin/python");
    assert!(
        venv.exists(),
        "the webhook tests verify signatures with the standardwebhooks package: run `bash .ci/run` once \
         (it creates .venv-ci), or set CAPYDB_TEST_PYTHON to a python with standardwebhooks installed"
    );
    venv
}

/// Runs the independent verifier over `(secret, delivery, expected validity)`;
/// returns how many verified.
pub(crate) fn verify_independently(cases: &[(&str, &Received, bool)]) -> usize {
    let file = temp_dir("webhook-verify").join("deliveries.json");
    let list: Vec<Value> = cases
        .iter()
        .map(|(secret, r, valid)| json!({"secret": secret, "headers": r.headers, "body": r.body, "valid": valid}))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let script = workspace_root().join("tests/webhooks/verify.py");
    let out = std::process::Command::new(python()).arg(script).arg(&file).output().expect("run verify.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "independent verification failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.trim().strip_prefix("verified ").and_then(|n| n.parse().ok()).expect("verify.py output")
}
