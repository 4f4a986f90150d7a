//! The sweeper's preview expiry, driven with an injected clock: the same
//! use cases, SQLite adapters and PostgreSQL provider as capydb-local, but
//! time moves when the test says so (a TTL is at least an hour).
use std::sync::Arc;
use std::time::Duration;

use capydb_domain::fakes::ManualClock;
use capydb_domain::fields::{Name, PreviewName, TtlHours};
use capydb_domain::jobs::Disposition;
use capydb_domain::model::{PreviewMode, PreviewState};
use capydb_domain::ports::{ArtifactStore, Clock, DatabaseProvider, JobQueue, Page};
use capydb_domain::previews::{CreatePreview, UpdatePreview};
use capydb_domain::projects::CreateProject;
use capydb_domain::{App, Settings};
use capydb_egress::{EgressPolicy, HttpWebhookSender};
use capydb_embedded::FileArtifactStore;
use capydb_postgres::PgProvider;

use crate::helpers::*;

/// Runs queued jobs until the queue is empty, as the worker loop would.
pub async fn drain(app: &App) {
    drain_queue(app.queue.as_ref(), "job", |body| async move { app.run_job_message(&body, "test-worker").await }).await
}

/// Handles `queue`'s messages with `handle` until none is left; every
/// message must be done at once (the tests expect no retry).
pub async fn drain_queue<F, Fut>(queue: &dyn JobQueue, what: &str, handle: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Disposition>,
{
    for _ in 0..100 {
        let messages = queue.receive(10, Duration::from_secs(60)).await.expect("receive");
        if messages.is_empty() {
            return;
        }
        for m in messages {
            match handle(m.body).await {
                Disposition::Done => queue.delete(&m.receipt).await.expect("delete"),
                Disposition::RetryAfter(d) | Disposition::Failed(d) => {
                    panic!("a {what} message asked to come back after {d:?}; the test expects it done at once")
                }
            }
        }
    }
    panic!("the {what} queue did not drain");
}

/// The app of capydb-local, in this process, with a manual clock and the
/// given artifact store.
pub async fn in_process_app(
    dir: &std::path::Path,
    artifacts: Arc<dyn ArtifactStore>,
) -> (App, Arc<ManualClock>, Arc<PgProvider>) {
    in_process_app_with(dir, artifacts, Settings::default(), None).await
}

/// `in_process_app` with other settings.
pub async fn in_process_app_with(
    dir: &std::path::Path,
    artifacts: Arc<dyn ArtifactStore>,
    settings: Settings,
    sessions: Option<Arc<dyn capydb_domain::ports::SessionVerifier>>,
) -> (App, Arc<ManualClock>, Arc<PgProvider>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let provider = Arc::new(PgProvider::connect(&shared_postgres_url(), "local").await.expect("provider"));
    let adapters = capydb_local::wiring::open_adapters(dir).expect("the data dir's adapters");
    let app = capydb_local::wiring::app(
        &adapters,
        capydb_local::wiring::Parts {
            endpoint: Arc::new(provider.endpoint()),
            provider: provider.clone() as Arc<dyn DatabaseProvider>,
            webhook_sender: Arc::new(HttpWebhookSender::new(EgressPolicy::ALLOW_PRIVATE).unwrap()),
            egress: EgressPolicy::ALLOW_PRIVATE,
            artifacts,
            sessions,
            clock: clock.clone() as Arc<dyn Clock>,
            settings,
        },
    );
    (app, clock, provider)
}

/// Serves `app`'s router on a free loopback port, as capydb-local does
/// (JSON answers to unparsable requests, the peer's address for the rate
/// limit), for as long as the test runs; answers the base URL.
pub async fn serve_in_process(app: App) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let router = capydb_api::router(app);
    tokio::spawn(async move {
        let _ = capydb_api::serve::serve(listener, router, 1, std::future::pending()).await;
    });
    base
}

#[tokio::test]
async fn expired_previews_are_deleted_and_extended_ones_are_kept() {
    let dir = temp_dir("sweeper");
    let artifacts = Arc::new(FileArtifactStore::open(&dir.join("backups")).unwrap());
    let (app, clock, provider) = in_process_app(&dir, artifacts).await;
    let (org, key) =
        capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "sweep", None).await.unwrap();
    let p = app.authenticate_api_key(&key, None).await.unwrap();
    let project = app
        .create_project(&p, CreateProject { name: Name::parse("name", "ttl").unwrap(), region: None, pg_version: None })
        .await
        .unwrap()
        .project;
    drain(&app).await;

    let new = |name: &str| CreatePreview {
        name: PreviewName::parse(name).unwrap(),
        mode: PreviewMode::Empty,
        ttl_hours: Some(TtlHours::parse("ttl_hours", 1).unwrap()),
    };
    let doomed = app.create_preview(&p, &project.id, new("doomed")).await.unwrap().preview;
    let kept = app.create_preview(&p, &project.id, new("kept")).await.unwrap().preview;
    drain(&app).await;
    assert_eq!(app.expire_previews().await.unwrap(), 0, "nothing has expired yet");

    // Half an hour in, `kept` is extended to two hours from then.
    clock.advance(chrono::Duration::minutes(30));
    app.update_preview(&p, &kept.id, UpdatePreview { ttl_hours: TtlHours::parse("ttl_hours", 2).unwrap() })
        .await
        .unwrap();

    // Past the first hour: only `doomed` has expired.
    clock.advance(chrono::Duration::minutes(31));
    assert_eq!(app.expire_previews().await.unwrap(), 1);
    drain(&app).await;
    let gone = app.store.get_preview(&doomed.id).await.unwrap().unwrap();
    assert_eq!(gone.state, PreviewState::Deleted);
    assert!(!provider.database_exists(&doomed.database_name).await.unwrap(), "database dropped");
    assert!(!provider.role_exists(&doomed.role_name).await.unwrap(), "role dropped");
    let still = app.store.get_preview(&kept.id).await.unwrap().unwrap();
    assert_eq!(still.state, PreviewState::Ready, "an extended preview is not swept");
    assert!(provider.database_exists(&kept.database_name).await.unwrap());

    // preview.expired, then preview.deleted, went to the outbox.
    let events = app.store.list_events(&org.id, &Page::first(100)).await.unwrap();
    let about_doomed: Vec<_> = events
        .iter()
        .rev() // oldest first
        .filter(|e| e.data["preview"]["id"] == doomed.id.as_str())
        .map(|e| e.kind.as_str())
        .collect();
    let expired_at = about_doomed.iter().position(|k| *k == "preview.expired").expect("preview.expired event");
    let deleted_at = about_doomed.iter().position(|k| *k == "preview.deleted").expect("preview.deleted event");
    assert!(expired_at < deleted_at, "expired before deleted: {about_doomed:?}");
    assert!(events.iter().all(|e| !e.data.to_string().contains("password")), "no secret in an event");

    // A second sweep finds nothing more; past its own TTL `kept` goes too.
    assert_eq!(app.expire_previews().await.unwrap(), 0);
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(app.expire_previews().await.unwrap(), 1);
    drain(&app).await;
    assert!(!provider.database_exists(&kept.database_name).await.unwrap());

    app.delete_project(&p, &project.id).await.unwrap();
    drain(&app).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An artifact store whose writes fail, as on a full disk.
struct FullDisk(FileArtifactStore);

#[async_trait::async_trait]
impl ArtifactStore for FullDisk {
    async fn staging_path(&self, key: &str) -> capydb_domain::DomainResult<std::path::PathBuf> {
        self.0.staging_path(key).await
    }
    async fn put(
        &self,
        _key: &str,
        staged: &std::path::Path,
    ) -> capydb_domain::DomainResult<capydb_domain::ports::ArtifactInfo> {
        let _ = std::fs::remove_file(staged);
        Err(capydb_domain::DomainError::Internal(
            "could not write artifacts/bkp: No space left on device (os error 28)".into(),
        ))
    }
    async fn fetch(&self, key: &str) -> capydb_domain::DomainResult<std::path::PathBuf> {
        self.0.fetch(key).await
    }
    async fn delete(&self, key: &str) -> capydb_domain::DomainResult<()> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn a_backup_fails_cleanly_when_the_artifact_write_fails() {
    use capydb_domain::backups::CreateBackup;
    use capydb_domain::model::{BackupState, JobState};
    let dir = temp_dir("fulldisk");
    let artifacts = Arc::new(FullDisk(FileArtifactStore::open(&dir.join("backups")).unwrap()));
    let (app, _clock, _provider) = in_process_app(&dir, artifacts).await;
    let (_org, key) =
        capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "disk", None).await.unwrap();
    let p = app.authenticate_api_key(&key, None).await.unwrap();
    let project = app
        .create_project(
            &p,
            CreateProject { name: Name::parse("name", "full").unwrap(), region: None, pg_version: None },
        )
        .await
        .unwrap()
        .project;
    drain(&app).await;
    let started = app.create_backup(&p, &project.id, CreateBackup { name: None }).await.unwrap();
    drain(&app).await;
    let job = app.get_job(&p, &started.job.id).await.unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    // What went wrong, for a user: the disk's own words stay in the log.
    let error = job.error.as_deref().unwrap_or_default();
    assert!(error.contains("could not store the backup file"), "{job:?}");
    assert!(!error.contains("No space left on device"), "raw OS text in a job error: {job:?}");
    let backup = app.store.get_backup(&started.backup.id).await.unwrap().unwrap();
    assert_eq!(backup.state, BackupState::Failed);
    assert!(!dir.join("backups/artifacts").join(&backup.id).exists(), "no partial artifact");
    assert!(!dir.join("backups/staging").join(&backup.id).exists(), "no staging leftovers");
    // The project is unaffected and can still be backed up once space returns.
    assert_eq!(app.get_project(&p, &project.id).await.unwrap().state, capydb_domain::model::ProjectState::Ready);
    app.delete_project(&p, &project.id).await.unwrap();
    drain(&app).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a finished job again from its first step, as a worker would after a
/// crash that lost the job's progress: every step must find what the first
/// run made and end in the same state.
async fn run_again_from_scratch(app: &App, job_id: &str) {
    let mut job = app.store.get_job(job_id).await.unwrap().unwrap();
    let expected = job.version;
    job.version += 1;
    job.state = capydb_domain::model::JobState::Running;
    job.step = 0;
    job.finished_at = None;
    job.lease_owner = None;
    job.lease_expires_at = None;
    assert!(app.store.update_job(&job, expected).await.unwrap());
    let body = serde_json::json!({ "job_id": job_id }).to_string();
    assert_eq!(app.run_job_message(&body, "second-worker").await, Disposition::Done);
    let again = app.store.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(
        again.state,
        capydb_domain::model::JobState::Completed,
        "{} failed on its second run: {:?}",
        again.kind.as_str(),
        again.error
    );
}

#[tokio::test]
async fn every_job_kind_is_safe_to_run_twice() {
    use capydb_domain::backups::{CreateBackup, CreateRestore};
    use capydb_domain::model::RestoreMode;
    let dir = temp_dir("twice");
    let artifacts = Arc::new(FileArtifactStore::open(&dir.join("backups")).unwrap());
    let (app, _clock, provider) = in_process_app(&dir, artifacts).await;
    let (_org, key) =
        capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "twice", None).await.unwrap();
    let p = app.authenticate_api_key(&key, None).await.unwrap();

    let created = app
        .create_project(
            &p,
            CreateProject { name: Name::parse("name", "twice").unwrap(), region: None, pg_version: None },
        )
        .await
        .unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &created.job.id).await;
    let project = app.get_project(&p, &created.project.id).await.unwrap();
    let uri = app.project_connections(&p, &project.id).await.unwrap()[0].uri.clone();
    let (c, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);").await.unwrap();
    drop(c);

    let rot = app.rotate_credentials(&p, &project.id).await.unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &rot.job.id).await;

    let pv = app
        .create_preview(
            &p,
            &project.id,
            CreatePreview { name: PreviewName::parse("pr").unwrap(), mode: PreviewMode::Clone, ttl_hours: None },
        )
        .await
        .unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &pv.job.id).await;
    let reset = app.reset_preview(&p, &pv.preview.id).await.unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &reset.job.id).await;

    let bk = app.create_backup(&p, &project.id, CreateBackup { name: None }).await.unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &bk.job.id).await;
    let restore = CreateRestore {
        backup_id: bk.backup.id.clone(),
        mode: RestoreMode::Overwrite,
        preview_name: None,
        ttl_hours: None,
    };
    let rs = app.create_restore(&p, &project.id, restore).await.unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &rs.job.id).await;

    // Still one database and role each, and the data intact.
    let uri = app.project_connections(&p, &project.id).await.unwrap()[0].uri.clone();
    let (c, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    drop(c);
    let pv_uri = app.preview_connections(&p, &pv.preview.id).await.unwrap()[0].uri.clone();
    let (c, conn) = tokio_postgres::connect(&pv_uri, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    drop(c);

    let del_pv = app.delete_preview(&p, &pv.preview.id).await.unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &del_pv.job.id).await;
    let del = app.delete_project(&p, &project.id).await.unwrap();
    drain(&app).await;
    run_again_from_scratch(&app, &del.job.id).await;
    assert!(!provider.database_exists(&project.database_name).await.unwrap());
    assert!(!provider.role_exists(&project.role_name).await.unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
