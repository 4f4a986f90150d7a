//! Starts and drives a real `capydb-local` process.
//!
//! Most tests share one PostgreSQL server (`CAPYDB_TEST_POSTGRES_URL`, set by
//! `.ci/run`, or a private cluster this binary starts once) through
//! `--postgres-url`; every test gets its own data dir, port and organization.
//! Tests that are about the private cluster itself pass `Pg::Private`.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use crate::support::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_capydb-local-e2e");

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pg {
    Shared,
    Private,
}

pub struct Options {
    pub pg: Pg,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run in the app's dir without `--data-dir`, as `bash local/run` does:
    /// the data lands in `./.capydb`.
    pub default_data_dir: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { pg: Pg::Shared, args: Vec::new(), env: Vec::new(), default_data_dir: false }
    }
}

impl Options {
    pub fn args(args: &[&str]) -> Self {
        Options { args: args.iter().map(|a| a.to_string()).collect(), ..Default::default() }
    }
}

pub struct TestApp {
    pub port: u16,
    pub base: String,
    pub dir: PathBuf,
    pub key: String,
    pub org_id: String,
    pub stdout: String,
    pub options: Options,
    child: Option<Child>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "expected HTTP {status}, got {}: {}", self.status, self.text);
        &self.body
    }
    #[track_caller]
    pub fn expect_error(&self, status: u16, contains: &str) {
        assert_eq!(self.status, status, "expected HTTP {status}, got {}: {}", self.status, self.text);
        let msg = self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("error body is not {{\"error\": ...}}: {}", self.text));
        assert!(msg.contains(contains), "error {msg:?} should mention {contains:?}");
        assert_eq!(self.body.as_object().map(|o| o.len()), Some(1), "error body has exactly one field: {}", self.text);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let dir = temp_dir("app");
        let key = capydb_domain::apikey::generate(capydb_domain::apikey::LIVE_PREFIX);
        let mut app = TestApp {
            port: free_port(),
            base: String::new(),
            dir,
            key,
            org_id: String::new(),
            stdout: String::new(),
            options,
            child: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        app.base = format!("http://127.0.0.1:{}", app.port);
        app.start().await;
        let me = app.get("/v1/me").await;
        app.org_id = me.expect(200)["principal"]["organization"]["id"].as_str().expect("org id").to_string();
        app
    }

    /// A client of a server this test process runs itself on `base` (an
    /// `App` with an injected clock, see `serve_in_process`): no child
    /// process; `key` and `org_id` are what the test made.
    pub fn attach(base: String, key: String, org_id: String) -> TestApp {
        TestApp {
            port: 0,
            base,
            dir: temp_dir("attached"),
            key,
            org_id,
            stdout: String::new(),
            options: Options::default(),
            child: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `try_request` from another loopback source address (say 127.0.0.2):
    /// the server sees another client address.
    pub async fn try_request_from(
        &self,
        source: std::net::IpAddr,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        assert!(source.is_loopback(), "tests only ever send from loopback");
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(source));
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        self.request_with(&client, method, path, body, headers).await
    }

    async fn request_with(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let mut req = http::Request::builder().method(method).uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp { status, headers, body, text })
    }

    /// Starts (or restarts) the process on the same port and data dir.
    pub async fn start(&mut self) {
        self.start_with_extra(&[]).await
    }

    pub async fn start_with_extra(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("stderr.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("--listen").arg(format!("127.0.0.1:{}", self.port));
        if self.options.default_data_dir {
            cmd.current_dir(&self.dir);
        } else {
            cmd.arg("--data-dir").arg(self.data_dir());
        }
        cmd.args(&self.options.args)
            .args(extra)
            .env("CAPYDB_BOOTSTRAP_API_KEY", &self.key)
            .env("RUST_LOG", "info,tokio_postgres=warn")
            .envs(self.options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if self.options.pg == Pg::Shared {
            cmd.arg("--postgres-url").arg(shared_postgres_url());
        }
        let mut child = cmd.spawn().expect("start capydb-local");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        self.child = Some(child);
        self.wait_ready().await;
        // The bootstrap lines are written before the server answers.
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(line) = rx.try_recv() {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("capydb-local exited with {status} before serving:\n{}", self.logs());
            }
            if let Ok(r) = self.try_request("GET", "/v1/openapi.json", None, &[]).await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "capydb-local did not serve within 90 s:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where this app keeps its data (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        if self.options.default_data_dir {
            self.dir.join(".capydb")
        } else {
            self.dir.join("data")
        }
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Logs are written in batches every few milliseconds: wait for a line.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait")
    }

    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        self.request_with(&self.client, method, path, body, headers).await
    }

    pub async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        let auth;
        if let Some(k) = key {
            auth = format!("Bearer {k}");
            headers.push(("authorization", auth.as_str()));
        }
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.try_request(method, path, body, &headers).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(&self.key.clone()), None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(&self.key.clone()), Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call("PATCH", path, Some(&self.key.clone()), Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, Some(&self.key.clone()), None).await
    }

    /// Mints a key through the API with the admin key.
    pub async fn create_key(&self, body: Value) -> String {
        let r = self.post(&format!("/v1/organizations/{}/api-keys", self.org_id), body).await;
        r.expect(201)["plaintext"].as_str().expect("plaintext").to_string()
    }

    /// Creates a project; returns (project id, job id).
    pub async fn create_project(&self, name: &str) -> (String, String) {
        let r = self.post("/v1/projects", serde_json::json!({ "name": name })).await;
        let b = r.expect(202);
        (b["project"]["id"].as_str().expect("project id").into(), b["job"]["id"].as_str().expect("job id").into())
    }

    /// Polls a job until it is `completed` or `failed`; returns the job.
    pub async fn wait_job(&self, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/v1/jobs/{job_id}")).await;
            let job = r.expect(200)["job"].clone();
            match job["state"].as_str() {
                Some("completed") | Some("failed") => return job,
                _ => {}
            }
            assert!(Instant::now() < deadline, "job {job_id} not finished after 60 s: {job}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn completed_project(&self, name: &str) -> String {
        let (id, job) = self.create_project(name).await;
        let job = self.wait_job(&job).await;
        assert_eq!(job["state"], "completed", "provision failed: {job}");
        id
    }

    pub async fn connection_uri(&self, project_id: &str) -> String {
        let r = self.get(&format!("/v1/projects/{project_id}/connections")).await;
        r.expect(200)[0]["uri"].as_str().expect("uri").to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.options.pg == Pg::Private {
            remove_private_cluster(&self.data_dir(), &self.dir);
        }
        if std::thread::panicking() {
            // Keep the failed test's data dir and logs past the scratch
            // root's removal at exit.
            let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let kept = std::env::temp_dir().join(format!("capydb-e2e-failed-{name}"));
            if fs::rename(&self.dir, &kept).is_ok() {
                eprintln!("capydb-local's data dir and stderr.log kept in {}", kept.display());
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Stops and deletes the private cluster of `data_dir`: as root it lives
/// outside the data dir (see `LocalCluster`) and would outlive the test. Its
/// server log is kept in `keep_log_in` first, for a failed test's record.
pub fn remove_private_cluster(data_dir: &Path, keep_log_in: &Path) {
    let cluster_dir = data_dir.join("postgres");
    let state: Value = serde_json::from_str(&read_file(&cluster_dir.join("cluster.json"))).unwrap_or(Value::Null);
    if let Some(home) = state["home"].as_str() {
        let _ = fs::copy(Path::new(home).join("postgres.log"), keep_log_in.join("postgres.log"));
    }
    if let Err(e) = capydb_postgres::LocalCluster::remove(&cluster_dir) {
        eprintln!("could not remove the private cluster of {}: {e}", data_dir.display());
    }
}

/// Runs `capydb-local` with `args` to its end (90 s at most) and answers its
/// exit status, stdout and stderr.
pub fn run_bin(args: &[&std::ffi::OsStr], cwd: Option<&Path>) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "info,tokio_postgres=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().expect("start capydb-local");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capydb-local {args:?} did not exit within 90 s:\n{}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default())
}

/// Whether the postmaster recorded in `pid_file` still runs (a zombie does not count).
pub fn postmaster_alive(pid_file: &Path) -> bool {
    let Some(pid) = read_file(pid_file).lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return false;
    };
    let stat = read_file(Path::new(&format!("/proc/{pid}/stat")));
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
    !stat.is_empty() && !matches!(state, Some('Z' | 'X'))
}

/// Connects with a `postgres://` URI and runs `SELECT 1`.
pub async fn pg_select1(uri: &str) -> Result<(), String> {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(uri, tokio_postgres::NoTls))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| pg_error(&e))?;
    tokio::spawn(conn);
    let row = client.query_one("SELECT 1", &[]).await.map_err(|e| pg_error(&e))?;
    let one: i32 = row.get(0);
    if one == 1 {
        Ok(())
    } else {
        Err("SELECT 1 returned something else".into())
    }
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Runs a query as the server's superuser.
pub async fn admin_query_count(admin_url: &str, sql: &str, param: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.expect("admin connect");
    tokio::spawn(conn);
    client.query_one(sql, &[&param]).await.expect("admin query").get(0)
}

pub fn read_file(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Runs the futures concurrently (racing requests); their outputs in order.
pub use capydb_domain::contract::futures_join_all as futures_join;
