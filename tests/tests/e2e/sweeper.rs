//! The sweeper's preview expiry, driven with an injected clock: the same
//! use cases, SQLite adapters and PostgreSQL provider as capydb-local, but
//! time moves when the test says so (a TTL is at least an hour).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capydb_domain::jobs::Disposition;
use capydb_domain::model::{PreviewMode, PreviewState, Timestamp};
use capydb_domain::ports::{Clock, DatabaseProvider, JobQueue, Page, SecretBox, Store};
use capydb_domain::previews::{CreatePreview, UpdatePreview};
use capydb_domain::projects::CreateProject;
use capydb_domain::{App, AppParts, Settings};
use capydb_embedded::{KeyFileSecretBox, SqliteQueue, SqliteStore};
use capydb_postgres::PgProvider;

use crate::helpers::*;

struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn advance(&self, d: chrono::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += d;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.lock().map(|t| *t).unwrap_or_else(|_| chrono::Utc::now())
    }
}

/// Runs queued jobs until the queue is empty, as the worker loop would.
async fn drain(app: &App) {
    for _ in 0..100 {
        let messages = app.queue.receive(10, Duration::from_secs(60)).await.expect("receive");
        if messages.is_empty() {
            return;
        }
        for m in messages {
            match app.run_job_message(&m.body, "test-worker").await {
                Disposition::Done => app.queue.delete(&m.receipt).await.expect("delete"),
                Disposition::RetryAfter(d) => {
                    panic!("a job asked to retry after {d:?}; the test expects jobs to succeed")
                }
            }
        }
    }
    panic!("the queue did not drain");
}

#[tokio::test]
async fn expired_previews_are_deleted_and_extended_ones_are_kept() {
    let dir = temp_dir("sweeper");
    let db = dir.join("capydb.sqlite3");
    let clock = Arc::new(ManualClock(Mutex::new(chrono::Utc::now())));
    let secrets = Arc::new(KeyFileSecretBox::open_or_create(&dir.join("secret.key")).unwrap());
    let provider = Arc::new(PgProvider::connect(&shared_postgres_url(), "local").await.expect("provider"));
    let app = App::new(AppParts {
        store: Arc::new(SqliteStore::open(&db).unwrap()) as Arc<dyn Store>,
        queue: Arc::new(SqliteQueue::open(&db, "jobs", 5).unwrap()) as Arc<dyn JobQueue>,
        provider: provider.clone() as Arc<dyn DatabaseProvider>,
        secrets: secrets as Arc<dyn SecretBox>,
        clock: clock.clone() as Arc<dyn Clock>,
        settings: Settings::default(),
    });
    let (org, key) =
        capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "sweep", None).await.unwrap();
    let p = app.authenticate_api_key(&key, None).await.unwrap();
    let project = app
        .create_project(&p, CreateProject { name: "ttl".into(), region: None, pg_version: None })
        .await
        .unwrap()
        .project;
    drain(&app).await;

    let new = |name: &str| CreatePreview { name: name.into(), mode: PreviewMode::Empty, ttl_hours: Some(1) };
    let doomed = app.create_preview(&p, &project.id, new("doomed")).await.unwrap().preview;
    let kept = app.create_preview(&p, &project.id, new("kept")).await.unwrap().preview;
    drain(&app).await;
    assert_eq!(app.expire_previews().await.unwrap(), 0, "nothing has expired yet");

    // Half an hour in, `kept` is extended to two hours from then.
    clock.advance(chrono::Duration::minutes(30));
    app.update_preview(&p, &kept.id, UpdatePreview { ttl_hours: 2 }).await.unwrap();

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
