//! The one place `capydb-local`'s `App` is assembled from its adapters: the
//! server (`runtime::run`) and the in-process end-to-end tests both call
//! [`app`], so the two cannot drift apart.
use std::path::Path;
use std::sync::Arc;

use capydb_domain::ports::{
    ArtifactStore, Clock, DatabaseEndpoint, DatabaseProvider, Egress, EventBus, JobQueue, LoginStore, RateLimiter,
    SecretBox, SessionVerifier, Store, WebhookSender,
};
use capydb_domain::{App, AppParts, Settings};
use capydb_egress::EgressPolicy;
use capydb_embedded::{CachedStore, KeyFileSecretBox, MemoryRateLimiter, QueueEventBus, SqliteQueue, SqliteStore};

pub const DB_FILE: &str = "capydb.sqlite3";
pub const SECRET_KEY_FILE: &str = "secret.key";
const JOB_QUEUE: &str = "jobs";
const WEBHOOK_QUEUE: &str = "webhooks";
/// Receives of one queue message before it goes to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 20;

/// The embedded adapters in a data dir: the store and both queues in one
/// SQLite file, the secret key next to it.
pub struct Adapters {
    pub store: Arc<CachedStore<SqliteStore>>,
    pub queue: Arc<SqliteQueue>,
    pub webhook_queue: Arc<SqliteQueue>,
    pub secrets: Arc<KeyFileSecretBox>,
}

/// Opens (creating if needed) the adapters of the data dir `dir`.
pub fn open_adapters(dir: &Path) -> Result<Adapters, String> {
    let secrets = KeyFileSecretBox::open_or_create(&dir.join(SECRET_KEY_FILE)).map_err(|e| e.to_string())?;
    let db = dir.join(DB_FILE);
    let store = SqliteStore::open(&db).map_err(|e| e.to_string())?;
    let queue = SqliteQueue::open(&db, JOB_QUEUE, MAX_RECEIVES).map_err(|e| e.to_string())?;
    let webhook_queue = SqliteQueue::open(&db, WEBHOOK_QUEUE, MAX_RECEIVES).map_err(|e| e.to_string())?;
    // One process holds the data dir's lock, so every write to the cached
    // records goes through this one store value: the cache stays exact.
    Ok(Adapters {
        store: Arc::new(CachedStore::new(store)),
        queue: Arc::new(queue),
        webhook_queue: Arc::new(webhook_queue),
        secrets: Arc::new(secrets),
    })
}

/// What differs between the server and a test on the same adapters.
pub struct Parts {
    /// Region, versions and connection strings (the provider's server).
    pub endpoint: Arc<dyn DatabaseEndpoint>,
    pub provider: Arc<dyn DatabaseProvider>,
    pub webhook_sender: Arc<dyn WebhookSender>,
    /// Checked when webhooks and imports are created; the provider and the
    /// sender must connect under the same policy.
    pub egress: EgressPolicy,
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Verifies session tokens; `None` without a Clerk configuration.
    pub sessions: Option<Arc<dyn SessionVerifier>>,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
}

/// The application on the embedded adapters: published events go to the
/// webhook queue, rate limits are counted in memory.
pub fn app(adapters: &Adapters, parts: Parts) -> App {
    App::new(AppParts {
        store: adapters.store.clone() as Arc<dyn Store>,
        logins: adapters.store.clone() as Arc<dyn LoginStore>,
        queue: adapters.queue.clone() as Arc<dyn JobQueue>,
        webhook_queue: adapters.webhook_queue.clone() as Arc<dyn JobQueue>,
        bus: Arc::new(QueueEventBus::new(adapters.webhook_queue.clone())) as Arc<dyn EventBus>,
        webhook_sender: Some(parts.webhook_sender),
        egress: Arc::new(parts.egress) as Arc<dyn Egress>,
        endpoint: parts.endpoint,
        provider: Some(parts.provider),
        servers: None,
        snapshots: None,
        probe: None,
        secrets: adapters.secrets.clone() as Arc<dyn SecretBox>,
        artifacts: parts.artifacts,
        rate_limiter: Arc::new(MemoryRateLimiter::new()) as Arc<dyn RateLimiter>,
        sessions: parts.sessions,
        clock: parts.clock,
        settings: parts.settings,
    })
}
