//! Start-up, the background loops, and shutdown.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use capydb_domain::api_keys::{mint_api_key, CreateApiKey};
use capydb_domain::jobs::Disposition;
use capydb_domain::ports::{
    ArtifactStore, Clock, DatabaseProvider, Egress, EventBus, JobQueue, RateLimiter, SecretBox, Store, SystemClock,
    WebhookSender,
};
use capydb_domain::webhooks::WebhookSettings;
use capydb_domain::{App, AppParts, JobSettings, RateLimitSettings, Settings};
use capydb_egress::{EgressPolicy, HttpWebhookSender};
use capydb_embedded::{
    CachedStore, FileArtifactStore, KeyFileSecretBox, MemoryRateLimiter, QueueEventBus, SqliteQueue, SqliteStore,
};
use capydb_postgres::{LocalCluster, PgProvider};
use tokio::sync::watch;

use crate::cli::{KeysCreateArgs, OrgsCreateArgs, ServeArgs};

const DB_FILE: &str = "capydb.sqlite3";
const SECRET_KEY_FILE: &str = "secret.key";
const BOOTSTRAP_FILE: &str = "bootstrap.json";
const CLUSTER_DIR: &str = "postgres";
const JOB_QUEUE: &str = "jobs";
const WEBHOOK_QUEUE: &str = "webhooks";
/// Receives of one job message before it goes to the dead-letter queue.
const MAX_RECEIVES: u32 = 20;
const REGION: &str = "local";

/// The data dir is 0711: nobody else may list it, and every file in it that
/// holds a secret is 0600, but the `postgres` system user may traverse it to
/// reach the private cluster's own directory inside.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    dir.canonicalize().map_err(|e| format!("cannot resolve the data dir {}: {e}", dir.display()))
}

/// One `capydb-local` per data dir: a second one would run the same jobs and
/// fight over the cluster. The lock dies with the process, SIGKILL included.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!("another capydb-local is running on the data dir {}", dir.display()));
    }
    Ok(file)
}

struct Adapters {
    store: Arc<CachedStore<SqliteStore>>,
    queue: Arc<SqliteQueue>,
    webhook_queue: Arc<SqliteQueue>,
    secrets: Arc<KeyFileSecretBox>,
}

fn open_adapters(dir: &Path) -> Result<Adapters, String> {
    let secrets = KeyFileSecretBox::open_or_create(&dir.join(SECRET_KEY_FILE)).map_err(|e| e.to_string())?;
    let db = dir.join(DB_FILE);
    let store = SqliteStore::open(&db).map_err(|e| e.to_string())?;
    let queue = SqliteQueue::open(&db, JOB_QUEUE, MAX_RECEIVES).map_err(|e| e.to_string())?;
    let webhook_queue = SqliteQueue::open(&db, WEBHOOK_QUEUE, MAX_RECEIVES).map_err(|e| e.to_string())?;
    // This process holds the data dir's lock, so every write to the cached
    // records goes through this one store value: the cache stays exact.
    Ok(Adapters {
        store: Arc::new(CachedStore::new(store)),
        queue: Arc::new(queue),
        webhook_queue: Arc::new(webhook_queue),
        secrets: Arc::new(secrets),
    })
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    let dir = prepare_data_dir(&args.data_dir)?;
    let _lock = lock_data_dir(&dir)?;
    let adapters = open_adapters(&dir)?;

    let (mut provider, cluster) = match &args.postgres_url {
        Some(url) => {
            (PgProvider::connect(url, REGION).await.map_err(|e| format!("cannot use --postgres-url: {e}"))?, None)
        }
        None => {
            LocalCluster::find_binaries()?;
            let cluster = LocalCluster::ensure_started(&dir.join(CLUSTER_DIR), adapters.secrets.as_ref()).await?;
            tracing::info!(port = cluster.port(), "private PostgreSQL cluster ready");
            let provider = PgProvider::connect(&cluster.admin_url(), REGION)
                .await
                .map_err(|e| format!("cannot connect to the private PostgreSQL cluster: {e}"))?;
            (provider, Some(cluster))
        }
    };

    // Dumps of busy databases being cloned live next to the rest of our data.
    let work = dir.join("work");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&work)
        .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    provider.set_work_dir(work);
    // One policy for every connection a caller aims: checked when webhooks
    // and imports are created, and again when they connect.
    let egress = EgressPolicy { allow_private: !args.deny_private_egress };
    provider.set_egress_policy(egress);

    let settings = Settings {
        jobs: JobSettings {
            backoff_base: Duration::from_millis(args.retry_base_ms),
            max_attempts: args.max_attempts.max(1),
            ..JobSettings::default()
        },
        webhooks: match &args.debug_webhook_retry_ms {
            Some(ms) => WebhookSettings {
                retry_schedule: ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
                jitter: 0.0,
                ..WebhookSettings::default()
            },
            None => WebhookSettings::default(),
        },
        rate_limit: RateLimitSettings { limit: args.rate_limit_per_minute, window: Duration::from_secs(60) },
    };
    let sender = HttpWebhookSender::new(egress)?;
    let app = App::new(AppParts {
        store: adapters.store.clone() as Arc<dyn Store>,
        queue: adapters.queue.clone() as Arc<dyn JobQueue>,
        webhook_queue: adapters.webhook_queue.clone() as Arc<dyn JobQueue>,
        bus: Arc::new(QueueEventBus::new(adapters.webhook_queue.clone())) as Arc<dyn EventBus>,
        webhook_sender: Arc::new(sender) as Arc<dyn WebhookSender>,
        egress: Arc::new(egress) as Arc<dyn Egress>,
        provider: match args.debug_provider_delay_ms {
            0 => Arc::new(provider) as Arc<dyn DatabaseProvider>,
            ms => Arc::new(crate::slow::SlowProvider::new(provider, Duration::from_millis(ms))),
        },
        secrets: adapters.secrets.clone() as Arc<dyn SecretBox>,
        artifacts: Arc::new(FileArtifactStore::open(&dir.join("backups")).map_err(|e| e.to_string())?)
            as Arc<dyn ArtifactStore>,
        rate_limiter: Arc::new(MemoryRateLimiter::new()) as Arc<dyn RateLimiter>,
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        settings,
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;

    let preset = std::env::var("CAPYDB_BOOTSTRAP_API_KEY").ok().filter(|k| !k.is_empty());
    if let Some((org, key)) = app.bootstrap(preset.as_deref()).await.map_err(|e| e.to_string())? {
        let record = serde_json::json!({ "organization_id": org.id });
        fs::write(dir.join(BOOTSTRAP_FILE), record.to_string())
            .map_err(|e| format!("cannot write {BOOTSTRAP_FILE}: {e}"))?;
        // The only lines capydb-local writes to stdout, once per data dir. A
        // closed stdout must not take the server down (println! would panic).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "CAPYDB_BASE=http://{local_addr}/api/capydb")
            .and_then(|()| writeln!(out, "CAPYDB_ORG_ID={}", org.id))
            .and_then(|()| writeln!(out, "CAPYDB_API_KEY={key}"))
            .and_then(|()| out.flush());
        drop(out);
        tracing::info!(org_id = %org.id, "bootstrapped a new organization and admin API key");
    }

    // No other worker can run on this data dir (we hold its lock), so every
    // unfinished job belongs to a previous process that died: resume them all.
    let resumed = app.redrive_stuck_jobs(true).await.map_err(|e| e.to_string())?;
    if resumed > 0 {
        tracing::info!(jobs = resumed, "resuming unfinished jobs");
    }
    // Likewise for webhook messages a dead process had received, and events
    // it wrote but did not get to publish.
    let released = adapters.webhook_queue.release_in_flight().map_err(|e| e.to_string())?;
    let republished = app.republish_events().await.map_err(|e| e.to_string())?;
    if released + republished > 0 {
        tracing::info!(messages = released, events = republished, "resuming webhook deliveries");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let worker_prefix = capydb_domain::ids::new_id("wrk");
    for n in 0..args.workers {
        tasks.push(tokio::spawn(worker_loop(app.clone(), format!("{worker_prefix}-{n}"), stop_rx.clone())));
    }
    for _ in 0..args.webhook_workers.max(1) {
        tasks.push(tokio::spawn(webhook_loop(app.clone(), stop_rx.clone())));
    }
    tasks.push(tokio::spawn(sweeper_loop(
        app.clone(),
        Duration::from_secs(args.sweep_interval.max(1)),
        stop_rx.clone(),
    )));

    tracing::info!(listen = %local_addr, data_dir = %dir.display(), "capydb-local serving");
    let router = capydb_api::router(app);
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal());
    let served = server.await.map_err(|e| format!("server error: {e}"));

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(cluster) = cluster {
        if let Err(e) = cluster.stop().await {
            tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster");
        }
    }
    served
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How long an idle worker waits before asking the queue again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Job worker: runs one job message at a time.
async fn worker_loop(app: App, worker: String, stop: watch::Receiver<bool>) {
    let queue = app.queue.clone();
    let visibility = app.settings.jobs.visibility;
    consume(queue, visibility, "job", stop, |body| {
        let (app, worker) = (app.clone(), worker.clone());
        async move { app.run_job_message(&body, &worker).await }
    })
    .await
}

/// Delivers webhooks: fans published events out into deliveries and makes
/// the attempts. Separate from the job workers, so a slow receiver never
/// holds up a job (nor a request: nothing here runs on the request path).
async fn webhook_loop(app: App, stop: watch::Receiver<bool>) {
    let queue = app.webhook_queue.clone();
    let visibility = app.settings.webhooks.visibility;
    consume(queue, visibility, "webhook", stop, |body| {
        let app = app.clone();
        async move { app.handle_webhook_message(&body).await }
    })
    .await
}

/// Receives one message at a time from `queue` until `stop`, hands its body
/// to `handle`, and settles it as `handle` says: deleted when done, made
/// visible again after the delay it asks for.
async fn consume<F, Fut>(
    queue: Arc<dyn JobQueue>,
    visibility: Duration,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Disposition>,
{
    loop {
        if *stop.borrow() {
            return;
        }
        let messages = match queue.receive(1, visibility).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, queue = what, "queue receive failed");
                Vec::new()
            }
        };
        if messages.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        for m in messages {
            let outcome = match handle(m.body).await {
                Disposition::Done => queue.delete(&m.receipt).await,
                Disposition::RetryAfter(d) | Disposition::Failed(d) => queue.change_visibility(&m.receipt, d).await,
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, queue = what, "could not settle a message; it will be redelivered");
            }
        }
    }
}

async fn sweeper_loop(app: App, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        match app.expire_previews().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(previews = n, "sweeper started deleting expired previews"),
            Err(e) => tracing::warn!(error = %e, "preview expiry sweep failed"),
        }
        match app.redrive_stuck_jobs(false).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "sweeper re-drove stuck jobs"),
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
        match app.republish_events().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "sweeper published events left unpublished"),
            Err(e) => tracing::warn!(error = %e, "event republish failed"),
        }
        match app.send_due_deliveries().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "sweeper queued due webhook retries"),
            Err(e) => tracing::warn!(error = %e, "webhook retry sweep failed"),
        }
    }
}

fn open_store_for_cli(data_dir: &Path) -> Result<(PathBuf, SqliteStore), String> {
    let dir = data_dir.canonicalize().map_err(|e| format!("no data dir at {}: {e}", data_dir.display()))?;
    let store = SqliteStore::open(&dir.join(DB_FILE)).map_err(|e| e.to_string())?;
    Ok((dir, store))
}

pub async fn orgs_create(args: OrgsCreateArgs) -> Result<(), String> {
    let (_, store) = open_store_for_cli(&args.data_dir)?;
    let (org, key) = capydb_domain::organizations::create_organization(&store, SystemClock.now(), &args.name, None)
        .await
        .map_err(|e| e.to_string())?;
    println!("CAPYDB_ORG_ID={}", org.id);
    println!("CAPYDB_API_KEY={key}");
    Ok(())
}

pub async fn keys_create(args: KeysCreateArgs) -> Result<(), String> {
    let (dir, store) = open_store_for_cli(&args.data_dir)?;
    let org_id = match args.org {
        Some(o) => o,
        None => {
            let raw = fs::read_to_string(dir.join(BOOTSTRAP_FILE)).map_err(|_| {
                format!(
                    "{} has not been bootstrapped yet: start capydb-local on it first, or pass --org",
                    dir.display()
                )
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&raw).map_err(|e| format!("{BOOTSTRAP_FILE} is damaged: {e}"))?;
            v["organization_id"].as_str().ok_or_else(|| format!("{BOOTSTRAP_FILE} names no organization"))?.to_string()
        }
    };
    if store.get_organization(&org_id).await.map_err(|e| e.to_string())?.is_none() {
        return Err(format!("no organization {org_id} in {}", dir.display()));
    }
    let scopes = capydb_domain::scopes::parse_scope_list(&args.scopes)?;
    let req = CreateApiKey {
        name: args.name,
        scopes,
        project_id: args.project,
        expires_at: None,
        expires_in_days: args.expires_in_days,
    };
    let created = mint_api_key(&store, SystemClock.now(), &org_id, req).await.map_err(|e| e.to_string())?;
    println!("CAPYDB_API_KEY={}", created.plaintext);
    println!("CAPYDB_API_KEY_ID={}", created.api_key.id);
    Ok(())
}
