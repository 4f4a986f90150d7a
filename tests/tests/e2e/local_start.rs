//! Starting, restarting and resetting `capydb-local` as a developer does:
//! what it leaves on disk and running, and what it prints.
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::crash::find_postmaster_pid;
use crate::helpers::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Where `cluster.json` says the private cluster of `data_dir` lives.
fn cluster_home(data_dir: &Path) -> Option<PathBuf> {
    let state: serde_json::Value = serde_json::from_str(&read_file(&data_dir.join("postgres/cluster.json"))).ok()?;
    state["home"].as_str().map(PathBuf::from)
}

/// Deletes the private cluster of a data dir whose process the test ran by
/// hand, also when an assertion fails first.
struct RemoveCluster(PathBuf);

impl Drop for RemoveCluster {
    fn drop(&mut self) {
        remove_private_cluster(&self.0, self.0.parent().unwrap_or(Path::new("/tmp")));
    }
}

#[tokio::test]
async fn the_data_dir_and_everything_in_it_are_private_after_a_start_and_writes() {
    let app = TestApp::spawn_with(Options { pg: Pg::Private, ..Default::default() }).await;
    // Writes that reach every kind of file: the database (and its WAL), a
    // backup artifact, dumps' work dir.
    let project = app.completed_project("private").await;
    let hooks = format!("/v1/organizations/{}/webhooks", app.org_id);
    app.post(&hooks, json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})).await.expect(201);
    let r = app.post(&format!("/v1/projects/{project}/backups"), json!({"name": "b1"})).await;
    let job = app.wait_job(r.expect(202)["job"]["id"].as_str().expect("job id")).await;
    assert_eq!(job["state"], "completed", "{job}");

    let data = app.data_dir();
    for name in ["capydb.sqlite3", "capydb.sqlite3-wal", "capydb.sqlite3-shm", "bootstrap.json", "secret.key"] {
        assert!(data.join(name).exists(), "{name} is missing: the check below would prove less than it says");
    }
    assert!(data.join("backups/artifacts").read_dir().expect("artifacts").next().is_some(), "no backup file");
    let mode = |p: &Path| std::fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(format!("{:o}", mode(&data)), "700", "the data dir's mode");
    let pgdata = data.join("postgres/data");
    let mut stack = vec![data.clone()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list").flatten() {
            let path = entry.path();
            if path == pgdata {
                continue;
            }
            if entry.file_type().expect("type").is_dir() {
                stack.push(path.clone());
            }
            assert!(mode(&path) & 0o077 == 0, "{} has mode {:o}", path.display(), mode(&path));
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} entries checked");
    if is_root() {
        let home = cluster_home(&data).expect("cluster.json names the cluster's home");
        assert!(
            !home.starts_with(&data),
            "as root the cluster must live outside the 0700 data dir: {}",
            home.display()
        );
    }
}

#[tokio::test]
async fn a_taken_port_fails_the_start_and_leaves_no_cluster_running() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let listen = squatter.local_addr().expect("addr").to_string();
    let data = temp_dir("port-taken").join("data");
    let _cleanup = RemoveCluster(data.clone());
    let (status, _, stderr) =
        run_bin(&[OsStr::new("--listen"), OsStr::new(&listen), OsStr::new("--data-dir"), data.as_os_str()], None);
    assert!(!status.success(), "started on a taken port");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    if let Some(pid_file) = find_postmaster_pid(&data) {
        assert!(!postmaster_alive(&pid_file), "the failed start left its PostgreSQL server running");
    }
}

#[tokio::test]
async fn a_start_failing_after_the_cluster_started_stops_it() {
    let data = temp_dir("late-failure").join("data");
    let _cleanup = RemoveCluster(data.clone());
    std::fs::create_dir_all(&data).expect("data dir");
    // The backup store cannot make its directory where a file is.
    std::fs::write(data.join("backups"), "not a directory").expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let listen = format!("127.0.0.1:{port}");
    let (status, _, stderr) =
        run_bin(&[OsStr::new("--listen"), OsStr::new(&listen), OsStr::new("--data-dir"), data.as_os_str()], None);
    assert!(!status.success(), "started with a file where the backups go");
    assert!(stderr.contains("private PostgreSQL cluster ready"), "the failure came before the cluster: {stderr}");
    let pid_file = find_postmaster_pid(&data);
    assert!(
        pid_file.as_deref().is_none_or(|p| !postmaster_alive(p)),
        "the failed start left its PostgreSQL server running:\n{stderr}"
    );
}

#[tokio::test]
async fn a_restart_prints_base_and_organization_and_a_command_that_mints_a_working_key() {
    let mut app = TestApp::spawn().await;
    let first: Vec<&str> = app.stdout.lines().collect();
    assert_eq!(first.len(), 3, "the first start prints exactly three lines: {first:?}");
    let base = format!("CAPYDB_BASE={}/api/capydb", app.base);
    assert_eq!(first[..2], [base.as_str(), &format!("CAPYDB_ORG_ID={}", app.org_id)]);

    app.terminate();
    app.stdout.clear();
    app.start().await;
    let again: Vec<&str> = app.stdout.lines().collect();
    assert_eq!(again.len(), 3, "{again:?}");
    assert_eq!(again[..2], [base.as_str(), &format!("CAPYDB_ORG_ID={}", app.org_id)]);
    assert!(!app.stdout.contains("CAPYDB_API_KEY="), "only the key's hash is kept: {}", app.stdout);
    let hint = again[2];
    assert!(hint.starts_with("# "), "the hint is a shell comment: {hint}");
    assert!(hint.contains("bash local/run keys create"), "{hint}");

    // The command the hint names works as printed.
    let command = hint
        .split_once("capydb-local ")
        .and_then(|(_, rest)| rest.split_once(" (from"))
        .map(|(command, _)| command)
        .unwrap_or_else(|| panic!("no command in the hint: {hint}"));
    let out = std::process::Command::new("bash").arg("-c").arg(format!("exec {BIN} {command}")).output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    let key = stdout.lines().find_map(|l| l.strip_prefix("CAPYDB_API_KEY=")).expect("a key line");
    let me = app.call("GET", "/v1/me", Some(key), None).await;
    assert_eq!(me.expect(200)["principal"]["organization"]["id"], app.org_id.as_str());
}

#[tokio::test]
async fn keys_create_finds_the_default_data_dir_of_a_server_started_in_the_same_directory() {
    let app = TestApp::spawn_with(Options { default_data_dir: true, ..Default::default() }).await;
    assert!(app.dir.join(".capydb/capydb.sqlite3").exists(), "the server did not use ./.capydb");
    let (status, stdout, stderr) = run_bin(&["keys", "create", "--scopes", "*"].map(OsStr::new), Some(&app.dir));
    assert!(status.success(), "keys create: {stderr}");
    let key = stdout.lines().find_map(|l| l.strip_prefix("CAPYDB_API_KEY=")).expect("a key line");
    app.call("GET", "/v1/me", Some(key), None).await.expect(200);

    // Elsewhere there is no data: it says where to run it, and creates nothing.
    let elsewhere = temp_dir("elsewhere");
    std::fs::create_dir(elsewhere.join(".capydb")).expect("mkdir");
    let (status, _, stderr) = run_bin(&["keys", "create", "--scopes", "*"].map(OsStr::new), Some(&elsewhere));
    assert!(!status.success());
    assert!(stderr.contains("no capydb-local data at") && stderr.contains("--data-dir"), "{stderr}");
    assert!(!elsewhere.join(".capydb/capydb.sqlite3").exists(), "an empty database was created");
}

#[tokio::test]
async fn reset_stops_the_cluster_and_deletes_the_data_dir_and_the_clusters_home() {
    let mut app = TestApp::spawn_with(Options { pg: Pg::Private, ..Default::default() }).await;
    let data = app.data_dir();
    let home = cluster_home(&data).expect("cluster.json names the cluster's home");
    let pid_file = find_postmaster_pid(&data).expect("postmaster.pid");
    let reset = [OsStr::new("reset"), OsStr::new("--data-dir"), data.as_os_str()];

    let (status, _, stderr) = run_bin(&reset, None);
    assert!(!status.success(), "reset deleted the data dir of a running capydb-local");
    assert!(stderr.contains("another capydb-local is running"), "{stderr}");
    assert!(data.join("capydb.sqlite3").exists());

    // Killed, capydb-local leaves its cluster running: reset stops it.
    app.kill9();
    assert!(postmaster_alive(&pid_file), "the cluster should outlive a SIGKILL of capydb-local");
    let (status, stdout, stderr) = run_bin(&reset, None);
    assert!(status.success(), "reset: {stderr}");
    assert!(!postmaster_alive(&pid_file), "reset left the PostgreSQL server running");
    assert!(!data.exists(), "reset left the data dir");
    assert!(!home.exists(), "reset left the cluster's home {}", home.display());
    assert!(stdout.contains(&format!("removed {}", data.display())), "{stdout}");
    if !home.starts_with(&data) {
        assert!(stdout.contains(&format!("removed {}", home.display())), "{stdout}");
    }
}

#[tokio::test]
async fn a_relocated_cluster_whose_data_dir_is_gone_is_stopped_and_removed_by_the_next_start() {
    if !is_root() {
        eprintln!("skipped: only root relocates clusters");
        return;
    }
    let mut gone = TestApp::spawn_with(Options { pg: Pg::Private, ..Default::default() }).await;
    let data = gone.data_dir();
    let home = cluster_home(&data).expect("cluster.json names the cluster's home");
    let pid_file = find_postmaster_pid(&data).expect("postmaster.pid");
    gone.kill9();
    std::fs::remove_dir_all(&data).expect("delete the data dir by hand");
    assert!(postmaster_alive(&pid_file) && home.exists(), "nothing left to sweep: the test proves nothing");

    // Any start of a private cluster sweeps (another test's may come first).
    let _next = TestApp::spawn_with(Options { pg: Pg::Private, ..Default::default() }).await;
    assert!(!postmaster_alive(&pid_file), "the orphan's PostgreSQL server still runs");
    assert!(!home.exists(), "the orphaned cluster {} was not removed", home.display());
}
