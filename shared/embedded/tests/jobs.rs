//! The job state machine's contract (`capydb_domain::job_contract`) on the
//! SQLite store and queues.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use capydb_domain::fakes::{AnyWhere, FakeProvider, StoredJob};
use capydb_domain::job_contract::{run_job_contract, JobRigs};
use capydb_domain::ports::{
    ArtifactStore, Clock, DatabaseEndpoint, DatabaseProvider, Egress, EventBus, JobQueue, RateLimiter, SecretBox, Store,
};
use capydb_domain::{App, AppParts, Settings};
use capydb_embedded::{
    FileArtifactStore, KeyFileSecretBox, MemoryRateLimiter, QueueEventBus, SqliteQueue, SqliteStore,
};

/// Each `App` on its own data dir; the last one's database is rewritten.
#[derive(Default)]
struct SqliteRigs {
    dirs: Mutex<Vec<PathBuf>>,
}

impl Drop for SqliteRigs {
    fn drop(&mut self) {
        for dir in self.dirs.lock().unwrap().iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

const DB: &str = "capydb.sqlite3";

#[async_trait]
impl JobRigs for SqliteRigs {
    async fn app(&self, provider: Arc<FakeProvider>, clock: Arc<dyn Clock>, settings: Settings) -> App {
        let dir = std::env::temp_dir().join(capydb_domain::ids::new_id("jobs-test"));
        std::fs::create_dir_all(&dir).unwrap();
        self.dirs.lock().unwrap().push(dir.clone());
        let db = dir.join(DB);
        let webhook_queue = Arc::new(SqliteQueue::open(&db, "webhooks", 5).unwrap());
        let store = Arc::new(SqliteStore::open(&db).unwrap());
        App::new(AppParts {
            store: store.clone() as Arc<dyn Store>,
            logins: store as Arc<dyn capydb_domain::ports::LoginStore>,
            queue: Arc::new(SqliteQueue::open(&db, "jobs", 5).unwrap()) as Arc<dyn JobQueue>,
            webhook_queue: webhook_queue.clone() as Arc<dyn JobQueue>,
            bus: Arc::new(QueueEventBus::new(webhook_queue)) as Arc<dyn EventBus>,
            webhook_sender: None,
            egress: Arc::new(AnyWhere) as Arc<dyn Egress>,
            endpoint: provider.clone() as Arc<dyn DatabaseEndpoint>,
            provider: Some(provider as Arc<dyn DatabaseProvider>),
            servers: None,
            snapshots: None,
            probe: None,
            secrets: Arc::new(KeyFileSecretBox::open_or_create(&dir.join("secret.key")).unwrap()) as Arc<dyn SecretBox>,
            artifacts: Arc::new(FileArtifactStore::open(&dir.join("backups")).unwrap()) as Arc<dyn ArtifactStore>,
            rate_limiter: Arc::new(MemoryRateLimiter::new()) as Arc<dyn RateLimiter>,
            sessions: None,
            clock,
            settings,
        })
    }

    /// The row's columns as the code before the typed job model wrote them.
    async fn store_old_shape(&self, job_id: &str, old: &StoredJob) {
        let db = self.dirs.lock().unwrap().last().unwrap().join(DB);
        let conn = rusqlite::Connection::open(db).unwrap();
        let changed = conn
            .execute(
                "UPDATE jobs SET kind = ?1, resource_kind = ?2, resource_id = ?3, step = ?4, params = ?5 WHERE id = ?6",
                rusqlite::params![old.kind, old.resource_kind, old.resource_id, old.step, old.params, job_id],
            )
            .unwrap();
        assert_eq!(changed, 1, "the job's row");
    }
}

#[tokio::test]
async fn the_job_state_machine_keeps_its_contract_on_sqlite() {
    run_job_contract(&SqliteRigs::default()).await;
}
