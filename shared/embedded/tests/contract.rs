//! The domain's port contract suites against the embedded adapters, plus the
//! properties only a file-backed adapter has (several handles, reopening).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use capydb_domain::contract;
use capydb_domain::ids::{self, new_id};
use capydb_domain::model::*;
use capydb_domain::ports::{Admission, JobQueue, Page, ResourceWrite, Store};
use capydb_domain::scopes::Scope;
use capydb_domain::DomainError;
use capydb_embedded::{CachedStore, KeyFileSecretBox, SqliteQueue, SqliteStore};
use chrono::{TimeZone, Utc};
use serde_json::json;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("capydb-embedded-{}", new_id("t")));
        std::fs::create_dir(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TICK: Duration = Duration::from_millis(100);

#[tokio::test]
async fn sqlite_store_passes_the_store_contract() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("capydb.db")).expect("open store");
    contract::run_store_contract(&store).await;
    // Again, on the now non-empty store: the suite must not depend on an empty one.
    contract::run_store_contract(&store).await;
}

#[tokio::test]
async fn sqlite_store_passes_the_login_store_contract() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("capydb.db")).expect("open store");
    contract::run_login_store_contract(&store, &store).await;
    contract::run_login_store_contract(&store, &store).await;
}

/// SQLite has no TTL: the sweep deletes expired device logins, and only those.
#[tokio::test]
async fn sqlite_sweeps_expired_device_logins() {
    use capydb_domain::cli_login::{DeviceLogin, DeviceLoginStatus};
    use capydb_domain::ports::LoginStore;
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("capydb.db")).expect("open store");
    let now = chrono::Utc::now();
    for (code, minutes) in [("old", 10), ("live", 30)] {
        let login = DeviceLogin {
            device_code_hash: format!("device-{code}"),
            user_code_hash: format!("user-{code}"),
            created_at: now,
            expires_at: now + chrono::Duration::minutes(minutes),
            interval_secs: 5,
            last_polled_at: None,
            status: DeviceLoginStatus::Pending,
            decision: None,
            cli_session_id: None,
            version: 1,
        };
        assert!(store.insert_device_login(&login, now).await.unwrap());
    }
    let later = now + chrono::Duration::minutes(20);
    assert_eq!(store.sweep_device_logins(later).await.unwrap(), 1);
    assert_eq!(store.sweep_device_logins(later).await.unwrap(), 0);
    assert!(store.get_device_login("device-old").await.unwrap().is_none());
    assert!(store.get_device_login("device-live").await.unwrap().is_some());
}

/// SQLite has no TTL: the sweep deletes expired idempotency records, and
/// only those.
#[tokio::test]
async fn sqlite_sweeps_expired_idempotency_records() {
    use capydb_domain::ports::{IdempotencyClaim, Store};
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("capydb.db")).expect("open store");
    let now = chrono::Utc::now();
    for (key, ttl_hours) in [("old", 1), ("live", 48)] {
        let claim = IdempotencyClaim {
            key: key.into(),
            fingerprint: "f".into(),
            now,
            lease_until: now + chrono::Duration::seconds(60),
            expires_at: now + chrono::Duration::hours(ttl_hours),
        };
        store.begin_idempotent(&claim).await.unwrap();
    }
    assert_eq!(store.sweep_idempotent(now + chrono::Duration::hours(2)).await.unwrap(), 1);
    assert_eq!(store.sweep_idempotent(now + chrono::Duration::hours(2)).await.unwrap(), 0);
    assert_eq!(store.sweep_idempotent(now + chrono::Duration::hours(49)).await.unwrap(), 1);
}

#[tokio::test]
async fn cached_sqlite_store_passes_the_store_contract() {
    let dir = TempDir::new();
    let store = CachedStore::new(SqliteStore::open(&dir.file("capydb.db")).expect("open store"));
    contract::run_store_contract(&store).await;
    contract::run_store_contract(&store).await;
}

#[tokio::test]
async fn cached_store_sees_revocation_and_project_writes_at_once() {
    let dir = TempDir::new();
    let store = CachedStore::new(SqliteStore::open(&dir.file("capydb.db")).expect("open store"));
    let now = Utc::now();
    let (org, key, mut project, mut job) = fixtures(now);
    store.create_organization(&org, &key).await.unwrap();
    // Warm the cache, then revoke through it: the next read sees the revocation.
    assert!(store.get_api_key_by_hash(&key.hash).await.unwrap().unwrap().revoked_at.is_none());
    store.revoke_api_key(&org.id, &key.id, now).await.unwrap();
    let after = store.get_api_key_by_hash(&key.hash).await.unwrap().unwrap();
    assert!(after.revoked_at.is_some(), "a cached key must not outlive its revocation");

    // A project cached in one state is re-read after a job writes it.
    assert_eq!(
        store.begin_job(&job, &ResourceWrite::Project(project.clone()), &[], &Admission::default()).await.unwrap(),
        None
    );
    assert_eq!(store.get_project(&project.id).await.unwrap().unwrap().state, ProjectState::Provisioning);
    project.state = ProjectState::Ready;
    let expected = job.version;
    job.version += 1;
    job.state = JobState::Completed;
    assert!(store.finish_job(&job, expected, &ResourceWrite::Project(project.clone()), &[]).await.unwrap());
    assert_eq!(
        store.get_project(&project.id).await.unwrap().unwrap().state,
        ProjectState::Ready,
        "stale cached project"
    );
}

#[tokio::test]
async fn sqlite_queue_passes_the_queue_contract_on_the_store_file() {
    let dir = TempDir::new();
    let path = dir.file("capydb.db");
    // The queue shares the store's file in capydb-local.
    let _store = SqliteStore::open(&path).expect("open store");
    contract::run_queue_contract(
        |max_receives| {
            let path = path.clone();
            async move {
                let q = SqliteQueue::open(&path, &new_id("q"), max_receives).expect("open queue");
                Box::new(q) as Box<dyn JobQueue>
            }
        },
        TICK,
    )
    .await;
}

/// An idle consumer's wait ends when a message is sent, when a delayed one
/// becomes visible, and otherwise only at its bound.
#[tokio::test]
async fn an_idle_wait_ends_when_a_message_arrives_or_becomes_visible() {
    let dir = TempDir::new();
    let q = Arc::new(SqliteQueue::open(&dir.file("capydb.db"), "jobs", 5).expect("open queue"));
    let long = Duration::from_secs(30);

    // Nothing queued: the wait lasts until a send.
    let waiting = tokio::spawn({
        let q = Arc::clone(&q);
        async move { q.wait_for_message(long).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "an empty queue's wait ended without a message");
    q.send("now", Duration::ZERO).await.expect("send");
    tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the send did not end the wait").unwrap();
    assert_eq!(q.receive(1, Duration::from_secs(60)).await.expect("receive").len(), 1);

    // A message delayed 300 ms: a consumer's loop of waits (a wait may end
    // early: the send announced the message) gets it once it is visible,
    // long before the 30 s bound.
    q.send("later", Duration::from_millis(300)).await.expect("send");
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            q.wait_for_message(long).await;
            let m = q.receive(1, Duration::from_secs(60)).await.expect("receive");
            if !m.is_empty() {
                return m;
            }
        }
    })
    .await
    .expect("the delay did not end the wait");
    assert_eq!(got[0].body, "later");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "received before the message was visible: {waited:?}");

    // Only an in-flight message (visible again in 60 s): the bound holds.
    let started = std::time::Instant::now();
    q.wait_for_message(Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn key_file_secret_box_passes_the_secret_box_contract() {
    let dir = TempDir::new();
    let b = KeyFileSecretBox::open_or_create(&dir.file("secret.key")).expect("open secret box");
    contract::secret_box_contract(&b).await;
}

#[tokio::test]
async fn queue_event_bus_passes_the_event_bus_contract() {
    let dir = TempDir::new();
    let queue: Arc<dyn JobQueue> =
        Arc::new(SqliteQueue::open(&dir.file("capydb.db"), "webhooks", 5).expect("open queue"));
    let bus = capydb_embedded::QueueEventBus::new(Arc::clone(&queue));
    contract::event_bus_contract(&bus, &*queue, str::to_string, TICK).await;
}

#[tokio::test]
async fn memory_rate_limiter_passes_the_rate_limiter_contract() {
    contract::rate_limiter_contract(&capydb_embedded::MemoryRateLimiter::new()).await;
}

fn fixtures(now: Timestamp) -> (Organization, ApiKey, Project, Job) {
    let org = Organization { id: new_id(ids::ORG), name: "acme".into(), created_at: now, updated_at: now };
    let key = ApiKey {
        id: new_id(ids::API_KEY),
        organization_id: org.id.clone(),
        name: "first".into(),
        prefix: "capy_live_".into(),
        last4: "wxyz".into(),
        scopes: Scope::ALL.to_vec(),
        project_id: None,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        last_used_ip: None,
        created_at: now,
        created_by: None,
        hash: new_id("hash"),
    };
    let project = Project {
        id: new_id(ids::PROJECT),
        organization_id: org.id.clone(),
        name: "shop".into(),
        region: "local".into(),
        pg_version: "16".into(),
        state: ProjectState::Provisioning,
        database_name: "db_shop".into(),
        role_name: "shop_owner".into(),
        created_at: now,
        updated_at: now,
        password_sealed: "v1:opaque".into(),
        server_host: None,
        admin_password_sealed: None,
    };
    let mut job = Job::queued(new_id(ids::JOB), JobSpec::Provision, &org.id, &project.id.as_str().into(), now);
    job.version = 1;
    (org, key, project, job)
}

fn job_on(job: &Job) -> Job {
    Job {
        id: new_id(ids::JOB),
        kind: JobKind::DeleteProject,
        spec: JobSpec::DeleteProject { dropped_previews: Vec::new() },
        ..job.clone()
    }
}

#[tokio::test]
async fn two_stores_on_one_file_share_the_resource_lock() {
    let dir = TempDir::new();
    let path = dir.file("capydb.db");
    let a = SqliteStore::open(&path).expect("open store a");
    let b = SqliteStore::open(&path).expect("open store b");
    let (org, key, project, job) = fixtures(Utc::now());
    a.create_organization(&org, &key).await.expect("create org");

    assert_eq!(a.begin_job(&job, &ResourceWrite::Project(project.clone()), &[], &Admission::default()).await, Ok(None));
    let second = job_on(&job);
    assert_eq!(
        b.begin_job(&second, &ResourceWrite::Nothing, &[], &Admission::default()).await,
        Ok(Some(job.id.clone())),
        "the other handle must see the lock and name its holder"
    );
    assert_eq!(b.get_job(&second.id).await, Ok(None));
    assert_eq!(b.get_project(&project.id).await, Ok(Some(project)), "the other handle must read the committed write");
}

/// Many tasks on two handles race for one resource: exactly one wins and
/// every loser is told the winner's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_begin_jobs_take_the_lock_once() {
    let dir = TempDir::new();
    let path = dir.file("capydb.db");
    let stores =
        [Arc::new(SqliteStore::open(&path).expect("open a")), Arc::new(SqliteStore::open(&path).expect("open b"))];
    let (org, key, project, job) = fixtures(Utc::now());
    stores[0].create_organization(&org, &key).await.expect("create org");

    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&stores[i % 2]);
        let job = job_on(&job);
        let write = ResourceWrite::Project(project.clone());
        tasks.push(tokio::spawn(async move {
            let held = store.begin_job(&job, &write, &[], &Admission::default()).await.expect("begin_job");
            (job.id, held)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let winners: Vec<&String> = results.iter().filter(|(_, held)| held.is_none()).map(|(id, _)| id).collect();
    assert_eq!(winners.len(), 1, "exactly one begin_job must take the lock: {results:?}");
    for (_, held) in &results {
        if let Some(holder) = held {
            assert_eq!(holder, winners[0], "losers must be told the winner's id");
        }
    }
}

#[tokio::test]
async fn data_survives_closing_and_reopening() {
    let dir = TempDir::new();
    let path = dir.file("capydb.db");
    // Sub-microsecond precision must survive the file too.
    let now = Utc.timestamp_opt(1_750_000_000, 987_654_321).single().expect("timestamp");
    let (org, key, project, job) = fixtures(now);
    let event = Event {
        id: new_id(ids::EVENT),
        kind: EventType::ProjectReady,
        organization_id: org.id.clone(),
        project_id: Some(project.id.clone()),
        created_at: now,
        data: json!({ "a": 1 }),
        published_at: None,
    };
    let done = Job { state: JobState::Completed, version: 2, finished_at: Some(now), ..job.clone() };
    let ready = Project { state: ProjectState::Ready, ..project.clone() };
    {
        let store = SqliteStore::open(&path).expect("open store");
        let queue = SqliteQueue::open(&path, "jobs", 5).expect("open queue");
        store.create_organization(&org, &key).await.expect("create org");
        store
            .begin_job(&job, &ResourceWrite::Project(project.clone()), &[], &Admission::default())
            .await
            .expect("begin job");
        assert!(store
            .finish_job(&done, 1, &ResourceWrite::Project(ready.clone()), std::slice::from_ref(&event))
            .await
            .expect("finish"));
        queue.send("pending work", Duration::ZERO).await.expect("send");
    }
    let store = SqliteStore::open(&path).expect("reopen store");
    let queue = SqliteQueue::open(&path, "jobs", 5).expect("reopen queue");
    assert_eq!(store.get_organization(&org.id).await, Ok(Some(org.clone())));
    assert_eq!(store.get_api_key_by_hash(&key.hash).await, Ok(Some(key)));
    assert_eq!(store.get_project(&ready.id).await, Ok(Some(ready)));
    assert_eq!(store.get_job(&done.id).await, Ok(Some(done)));
    assert_eq!(store.list_events(&org.id, &Page::first(10)).await, Ok(vec![event]));
    let got = queue.receive(10, Duration::from_secs(30)).await.expect("receive");
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["pending work"]);
}

#[tokio::test]
async fn queue_delivers_oldest_first_and_handles_share_messages() {
    let dir = TempDir::new();
    let path = dir.file("queue.db");
    let a = SqliteQueue::open(&path, "jobs", 5).expect("open a");
    let b = SqliteQueue::open(&path, "jobs", 5).expect("open b");
    for body in ["one", "two", "three"] {
        a.send(body, Duration::ZERO).await.expect("send");
    }
    let first = b.receive(2, Duration::from_secs(30)).await.expect("receive");
    assert_eq!(first.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["one", "two"], "oldest first");
    let rest = a.receive(10, Duration::from_secs(30)).await.expect("receive");
    assert_eq!(
        rest.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["three"],
        "a message received through one handle is invisible to the other"
    );
    for m in first.iter().chain(&rest) {
        a.delete(&m.receipt).await.expect("delete through the other handle");
    }
    assert_eq!(b.len(), Ok(0));
    a.delete("garbage").await.expect("a malformed receipt is a no-op");
    a.change_visibility("12:nope", Duration::ZERO).await.expect("an unknown receipt is a no-op");
}

#[tokio::test]
async fn zero_visibility_does_not_deliver_a_message_twice_in_one_receive() {
    let dir = TempDir::new();
    let q = SqliteQueue::open(&dir.file("queue.db"), "jobs", 5).expect("open");
    q.send("once", Duration::ZERO).await.expect("send");
    let got = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(got.len(), 1);
    let again = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(again.iter().map(|m| m.receive_count).collect::<Vec<_>>(), [2]);
}

#[test]
fn opening_an_impossible_path_is_an_error_not_a_panic() {
    let dir = TempDir::new();
    let path = dir.file("missing-dir").join("capydb.db");
    assert!(matches!(SqliteStore::open(&path), Err(DomainError::Internal(_))));
    assert!(matches!(SqliteQueue::open(&path, "jobs", 5), Err(DomainError::Internal(_))));
    assert!(matches!(KeyFileSecretBox::open_or_create(&path), Err(DomainError::Internal(_))));
    // A directory where the database should be.
    assert!(matches!(SqliteStore::open(Path::new(&dir.0)), Err(DomainError::Internal(_))));
}

#[tokio::test]
async fn the_database_and_its_wal_and_shm_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    // Under a umask that hides group and other bits this cannot fail; say so
    // rather than pass for the wrong reason.
    std::fs::write(dir.file("probe"), "").expect("probe file");
    let probe = std::fs::metadata(dir.file("probe")).expect("probe").permissions().mode() & 0o777;
    if probe & 0o044 == 0 {
        eprintln!("skipped: the umask already makes new files private ({probe:o})");
        return;
    }
    let path = dir.file("capydb.sqlite3");
    let store = SqliteStore::open(&path).expect("open store");
    let queue = SqliteQueue::open(&path, "jobs", 5).expect("open queue");
    queue.send("a write, so the WAL is used", Duration::ZERO).await.expect("send");
    assert_eq!(store.get_organization("org_none").await, Ok(None));
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.file(&format!("capydb.sqlite3{suffix}"));
        let mode = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} has mode {:o}", file.display(), mode & 0o777);
    }
}
