//! `LocalCluster` lifecycle: first start, reuse of a running server, restart
//! after a clean stop or a SIGKILL, a taken port, and where secrets end up.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use capydb_domain::ports::{DatabaseProvider, SecretBox};
use capydb_postgres::LocalCluster;

use crate::helpers::{is_root, postmaster_pid, DestroyOnDrop, TestCluster, XorBox};

/// Data written before an outage, checked after it.
async fn provision(t: &TestCluster) {
    let p = t.provider().await;
    p.ensure_role("prj_k_owner", "pw").await.unwrap();
    p.ensure_database("prj_k", "prj_k_owner").await.unwrap();
}

async fn assert_provisioned(t: &TestCluster, after: &str) {
    let p = t.provider().await;
    assert!(p.database_exists("prj_k").await.unwrap(), "the database is gone after {after}");
    p.check_connection("prj_k", "prj_k_owner", "pw").await.unwrap_or_else(|e| panic!("after {after}: {e}"));
}

fn state_port(dir: &Path) -> u64 {
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
    state["port"].as_u64().expect("cluster.json records the port")
}

#[tokio::test]
async fn ensure_started_twice_reuses_the_running_server() {
    let mut t = TestCluster::start().await;
    let (port, pid) = (t.cluster.port(), postmaster_pid(t.cluster.data_dir()));
    let again = t.restart().await;
    assert_eq!(again.port(), port);
    assert_eq!(postmaster_pid(again.data_dir()), pid, "the second call started another postmaster");
    assert_eq!(state_port(&t.dir), u64::from(port));
}

#[tokio::test]
async fn a_stopped_cluster_starts_again_with_its_data() {
    let mut t = TestCluster::start().await;
    provision(&t).await;
    t.cluster.stop().await.expect("stop");
    assert!(!t.cluster.data_dir().join("postmaster.pid").exists(), "the server is still running after stop");
    t.cluster.stop().await.expect("stopping a stopped cluster is fine");
    t.restart().await;
    assert_provisioned(&t, "a clean stop").await;
}

#[tokio::test]
async fn a_killed_postmaster_is_restarted_with_its_data() {
    let mut t = TestCluster::start().await;
    provision(&t).await;
    let pid = postmaster_pid(t.cluster.data_dir());
    // SAFETY: plain syscall on a pid this test's cluster owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "could not SIGKILL the postmaster");
    let started = Instant::now();
    t.restart().await;
    assert!(t.cluster.data_dir().join("postmaster.pid").exists());
    assert_ne!(postmaster_pid(t.cluster.data_dir()), pid, "the dead postmaster was taken for a running one");
    assert_provisioned(&t, "a SIGKILL of the postmaster").await;
    eprintln!("restart after SIGKILL took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_taken_port_moves_the_cluster_to_a_free_one() {
    let mut t = TestCluster::start().await;
    provision(&t).await;
    let old = t.cluster.port();
    t.cluster.stop().await.expect("stop");
    let squatter = std::net::TcpListener::bind(("127.0.0.1", old)).expect("the stopped cluster's port is free");
    let new = t.restart().await.port();
    assert_ne!(new, old);
    assert_eq!(state_port(&t.dir), u64::from(new), "cluster.json still has the old port");
    drop(squatter);
    assert_provisioned(&t, "a move to another port").await;
}

#[tokio::test]
async fn the_admin_password_is_stored_only_sealed() {
    let t = TestCluster::start().await;
    let url = url::Url::parse(&t.cluster.admin_url()).unwrap();
    let password = url.password().expect("the admin URL has a password").to_string();
    assert_eq!((url.username(), url.host_str(), url.path()), ("capydb_admin", Some("127.0.0.1"), "/postgres"));
    assert!(password.len() >= 24, "a weak admin password: {} characters", password.len());

    let sealed_path = t.dir.join("admin.sealed");
    let mode = std::fs::metadata(&sealed_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.sealed has mode {mode:o}");
    let sealed = std::fs::read_to_string(&sealed_path).unwrap();
    assert_eq!(XorBox.open(sealed.trim()).await.unwrap(), password);

    let home = t.cluster.data_dir().parent().unwrap().to_path_buf();
    let mut stack = vec![t.dir.clone(), home];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            assert_ne!(entry.file_name(), ".initdb-pw", "initdb's password file was left behind");
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(
                    !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
                    "{} holds the admin password in plaintext",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn as_root_a_dir_the_postgres_user_cannot_reach_is_relocated() {
    if !is_root() {
        eprintln!("skipped: only root relocates the cluster");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    // Like /root: the postgres user cannot traverse it.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = private.join("capydb");
    let cluster = LocalCluster::ensure_started(&dir, &XorBox).await.expect("the relocated cluster starts");
    // Removes the relocated cluster even if an assertion below fails.
    struct Destroy(LocalCluster);
    impl Drop for Destroy {
        fn drop(&mut self) {
            if let Err(e) = self.0.destroy() {
                eprintln!("could not destroy the relocated test cluster: {e}");
            }
        }
    }
    let _destroy = Destroy(cluster.clone());
    let home = cluster.data_dir().parent().unwrap().to_path_buf();

    assert!(home.starts_with("/var/lib/capydb/clusters"), "cluster home {}", home.display());
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
    assert_eq!(state["home"].as_str(), home.to_str(), "cluster.json records where the cluster lives");
    let again = LocalCluster::ensure_started(&dir, &XorBox).await.expect("the relocated cluster is found again");
    assert_eq!(again.port(), cluster.port());
    tokio::time::timeout(Duration::from_secs(10), async {
        capydb_postgres::PgProvider::connect(&again.admin_url(), "local").await.expect("admin connects");
    })
    .await
    .unwrap();
    drop(_destroy);
    assert!(!home.exists(), "destroy left the relocated home {} behind", home.display());
}

/// The data dir of capydb-local is 0700, so as root even a dir the postgres
/// user could reach gets its cluster outside, in a home that names it.
#[tokio::test]
async fn as_root_every_cluster_lives_in_a_relocated_home_that_names_its_dir() {
    if !is_root() {
        eprintln!("skipped: only root relocates the cluster");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The old rule: a dir the postgres user can reach kept its cluster inside.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("capydb");
    let cluster = LocalCluster::ensure_started(&dir, &XorBox).await.expect("the cluster starts");
    let _destroy = DestroyOnDrop(cluster.clone());
    let home = cluster.data_dir().parent().unwrap().to_path_buf();
    assert!(home.starts_with("/var/lib/capydb/clusters"), "the cluster lives in {}", home.display());
    let owner = std::fs::read_to_string(home.join("capydb-dir")).expect("the home names its dir");
    assert_eq!(owner.trim_end(), dir.canonicalize().unwrap().to_str().unwrap());
}

#[tokio::test]
async fn destroy_removes_the_cluster_and_the_next_start_begins_afresh() {
    let mut t = TestCluster::start().await;
    provision(&t).await;
    let old_url = t.cluster.admin_url();
    t.cluster.destroy().expect("destroy");
    assert!(!t.cluster.data_dir().exists(), "destroy left the data dir behind");
    assert!(!t.dir.join("admin.sealed").exists() && !t.dir.join("cluster.json").exists());

    t.restart().await;
    assert_ne!(t.cluster.admin_url(), old_url, "a new cluster gets a new admin password");
    assert!(!t.provider().await.database_exists("prj_k").await.unwrap(), "the new cluster has the old data");
}
