//! Start-up, the background loops, and shutdown.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use capydb_domain::api_keys::{mint_api_key, CreateApiKey};
use capydb_domain::app::QuotaSettings;
use capydb_domain::fields::{ExpiresInDays, Name, NonEmpty};
use capydb_domain::ports::{Clock, DatabaseProvider, SessionVerifier, Store, SystemClock};
use capydb_domain::runtime::{sweep_every, Consumer};
use capydb_domain::webhooks::WebhookSettings;
use capydb_domain::{JobSettings, RateLimitSettings, Settings};
use capydb_egress::{EgressPolicy, HttpWebhookSender};
use capydb_embedded::{FileArtifactStore, SqliteStore};
use capydb_postgres::{LocalCluster, PgProvider};
use tokio::sync::watch;

use crate::cli::{KeysCreateArgs, OrgsCreateArgs, ResetArgs, ServeArgs, DEFAULT_DATA_DIR};
use crate::wiring::{open_adapters, Adapters, DB_FILE, MAX_RECEIVES, SECRET_KEY_FILE};

const BOOTSTRAP_FILE: &str = "bootstrap.json";
const CLUSTER_DIR: &str = "postgres";
const REGION: &str = "local";

/// The data dir and everything in it are its user's alone (0700 dirs, 0600
/// files): they hold key hashes, client addresses, webhook URLs and the secret
/// key. As root the private cluster lives outside it (see `LocalCluster`),
/// since the `postgres` user cannot enter it.
const DIR_MODE: u32 = 0o700;
/// Except for a data dir whose cluster an earlier version made inside it as
/// root: the `postgres` user must still traverse it to reach the cluster.
const TRAVERSABLE_DIR_MODE: u32 = 0o711;

fn prepare_data_dir(dir: &Path) -> Result<PathBuf, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    dir.canonicalize().map_err(|e| format!("cannot resolve the data dir {}: {e}", dir.display()))
}

/// A permission `secure_data_dir` changed.
#[derive(Debug, PartialEq)]
struct ModeChange {
    path: PathBuf,
    from: u32,
    to: u32,
}

/// What capydb-local itself keeps at the top of a data dir (SQLite's -wal,
/// -shm and -journal files and the secret key's temp file included).
fn is_ours(name: &str) -> bool {
    name.starts_with(DB_FILE)
        || name.starts_with(SECRET_KEY_FILE)
        || [BOOTSTRAP_FILE, "lock", CLUSTER_DIR, "work", "backups"].contains(&name)
}

/// Takes group and other permissions off everything capydb-local keeps in
/// the data dir (data dirs made by earlier versions had 0644 files), and
/// gives the dir itself `root_mode`'s. Anything else someone put there is
/// not ours to change; PostgreSQL's own data directory is left to
/// PostgreSQL, which guards it itself; symlinks are not followed. Answers
/// what changed.
fn secure_data_dir(dir: &Path, root_mode: u32) -> Result<Vec<ModeChange>, String> {
    let mut changes = Vec::new();
    let pgdata = dir.join(CLUSTER_DIR).join("data");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        if meta.is_dir() && path != pgdata {
            for entry in fs::read_dir(&path).map_err(|e| format!("cannot list {}: {e}", path.display()))? {
                let entry = entry.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
                if path != dir || entry.file_name().to_str().is_some_and(is_ours) {
                    stack.push(entry.path());
                }
            }
        }
        if !(meta.is_dir() || meta.is_file()) || path == pgdata {
            continue;
        }
        let from = meta.permissions().mode() & 0o7777;
        let to = if path == dir { (from & !0o077) | (root_mode & 0o077) } else { from & !0o077 };
        if to != from {
            fs::set_permissions(&path, fs::Permissions::from_mode(to))
                .map_err(|e| format!("cannot change the permissions of {}: {e}", path.display()))?;
            changes.push(ModeChange { path, from, to });
        }
    }
    Ok(changes)
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

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    let dir = prepare_data_dir(&args.data_dir)?;
    let _lock = lock_data_dir(&dir)?;
    let traversable = LocalCluster::needs_traversal(&dir.join(CLUSTER_DIR));
    let root_mode = if traversable { TRAVERSABLE_DIR_MODE } else { DIR_MODE };
    for change in secure_data_dir(&dir, root_mode)? {
        tracing::warn!(
            path = %change.path.display(),
            from = format!("{:o}", change.from),
            to = format!("{:o}", change.to),
            "others could read or enter this data dir entry; its permissions were tightened"
        );
    }
    if traversable {
        tracing::warn!(
            data_dir = %dir.display(),
            "the data dir stays 0711 (not 0700) so the postgres user can reach the cluster an earlier \
             capydb-local made inside it; `capydb-local reset` deletes all its data and starts over with \
             the cluster outside it"
        );
    }
    // Before the cluster starts: a taken port must not leave a server behind.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let adapters = open_adapters(&dir)?;

    let (provider, cluster) = match &args.postgres_url {
        Some(url) => {
            (PgProvider::connect(url, REGION).await.map_err(|e| format!("cannot use --postgres-url: {e}"))?, None)
        }
        None => {
            LocalCluster::find_binaries()?;
            let started = LocalCluster::ensure_started(&dir.join(CLUSTER_DIR), adapters.secrets.as_ref()).await?;
            let admin_url = started.admin_url();
            tracing::info!(port = started.port(), "private PostgreSQL cluster ready");
            let cluster = StartedCluster(Some(started));
            let provider = PgProvider::connect(&admin_url, REGION)
                .await
                .map_err(|e| format!("cannot connect to the private PostgreSQL cluster: {e}"))?;
            (provider, Some(cluster))
        }
    };
    let served = run(&args, &dir, listener, adapters, provider).await;
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    served
}

/// The private cluster this process runs on. It is stopped on every way out
/// of `serve`: cleanly at the end, at once when dropped before that (an
/// error, a panic), so a failed start never leaves a server running.
struct StartedCluster(Option<LocalCluster>);

impl StartedCluster {
    async fn stop(mut self) {
        if let Some(cluster) = self.0.take() {
            if let Err(e) = cluster.stop().await {
                tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster");
            }
        }
    }
}

impl Drop for StartedCluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.0.take() {
            if let Err(e) = cluster.stop_immediate() {
                tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster");
            }
        }
    }
}

/// Everything after the data dir, the listener and the database server are
/// ready; the caller stops the private cluster whatever this answers.
async fn run(
    args: &ServeArgs,
    dir: &Path,
    listener: tokio::net::TcpListener,
    adapters: Adapters,
    mut provider: PgProvider,
) -> Result<(), String> {
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
        cli_login: capydb_domain::CliLoginSettings {
            rate_limit: RateLimitSettings {
                limit: args.cli_login_rate_limit_per_minute,
                window: Duration::from_secs(60),
            },
            verification_uri: args.cli_verification_url.clone(),
        },
        quotas: {
            let d = QuotaSettings::default();
            QuotaSettings {
                projects: args.max_projects.unwrap_or(d.projects),
                previews_per_project: args.max_previews_per_project.unwrap_or(d.previews_per_project),
                backups_per_project: args.max_backups_per_project.unwrap_or(d.backups_per_project),
                webhooks: args.max_webhooks.unwrap_or(d.webhooks),
            }
        },
        // Every database on the PostgreSQL server it runs or is given.
        hosting: capydb_domain::ports::Hosting::Shared,
        ..Settings::default()
    };
    let sender = HttpWebhookSender::new(egress)?;
    let provider = Arc::new(provider);
    let app = crate::wiring::app(
        &adapters,
        crate::wiring::Parts {
            endpoint: Arc::new(provider.endpoint()),
            provider: match args.debug_provider_delay_ms {
                0 => provider as Arc<dyn DatabaseProvider>,
                ms => Arc::new(crate::slow::SlowProvider::new(provider, Duration::from_millis(ms))),
            },
            webhook_sender: Arc::new(sender),
            egress,
            artifacts: Arc::new(FileArtifactStore::open(&dir.join("backups")).map_err(|e| e.to_string())?),
            sessions: sessions(egress, args.dev_sessions.then_some(dir))?,
            clock: Arc::new(SystemClock),
            settings,
        },
    );

    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let base = format!("http://{local_addr}/api/capydb");

    let preset = std::env::var("CAPYDB_BOOTSTRAP_API_KEY").ok().filter(|k| !k.is_empty());
    // stdout carries only these lines; a closed stdout must not take the
    // server down (println! would panic).
    let lines = match app.bootstrap(preset.as_deref()).await.map_err(|e| e.to_string())? {
        Some((org, key)) => {
            write_bootstrap_record(dir, &org.id)?;
            tracing::info!(org_id = %org.id, "bootstrapped a new organization and admin API key");
            first_start_lines(&base, &org.id, &key)
        }
        None => {
            let data_dir_flag = (args.data_dir != Path::new(DEFAULT_DATA_DIR)).then_some(dir);
            restart_lines(&base, read_bootstrap_org(dir).ok().as_deref(), data_dir_flag)
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    drop(out);

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
        let consumer = Consumer::jobs(&app, format!("{worker_prefix}-{n}"), MAX_RECEIVES);
        tasks.push(tokio::spawn(consumer.run(stop_rx.clone())));
    }
    for _ in 0..args.webhook_workers.max(1) {
        tasks.push(tokio::spawn(Consumer::webhooks(&app, MAX_RECEIVES).run(stop_rx.clone())));
    }
    tasks.push(tokio::spawn(sweep_every(
        app.clone(),
        Duration::from_secs(args.sweep_interval.max(1)),
        stop_rx.clone(),
    )));

    tracing::info!(listen = %local_addr, data_dir = %dir.display(), "capydb-local serving");
    let router = capydb_api::router(app);
    // Connection threads, one per CPU; hyper's own answers to unparsable
    // requests are rewritten to JSON on the way out.
    let served = capydb_api::serve::serve(listener, router, capydb_api::serve::default_shards(), shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"));

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    served
}

/// The first start of a data dir prints exactly these three lines (scripts
/// and the README's `export` read them); the key is shown this once.
fn first_start_lines(base: &str, org_id: &str, key: &str) -> String {
    format!("CAPYDB_BASE={base}\nCAPYDB_ORG_ID={org_id}\nCAPYDB_API_KEY={key}\n")
}

/// A later start prints the base URL and organization again, and, since only
/// the key's hash is kept, how to mint another: as a shell comment, so the
/// output can still be pasted after `export` or sourced.
fn restart_lines(base: &str, org_id: Option<&str>, data_dir_flag: Option<&Path>) -> String {
    let mut lines = format!("CAPYDB_BASE={base}\n");
    if let Some(org_id) = org_id {
        lines.push_str(&format!("CAPYDB_ORG_ID={org_id}\n"));
    }
    let args = match data_dir_flag {
        Some(dir) => format!("keys create --data-dir {} --scopes '*'", shell_quote(&dir.to_string_lossy())),
        None => "keys create --scopes '*'".to_string(),
    };
    lines.push_str(&format!(
        "# The API key is shown on the first start only. Mint another with: capydb-local {args} \
         (from the repository: bash local/run {args})\n"
    ));
    lines
}

/// Quotes `s` for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn write_bootstrap_record(dir: &Path, org_id: &str) -> Result<(), String> {
    let record = serde_json::json!({ "organization_id": org_id });
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(BOOTSTRAP_FILE))
        .map_err(|e| format!("cannot write {BOOTSTRAP_FILE}: {e}"))?;
    file.write_all(record.to_string().as_bytes()).map_err(|e| format!("cannot write {BOOTSTRAP_FILE}: {e}"))
}

/// The organization the data dir was bootstrapped with.
fn read_bootstrap_org(dir: &Path) -> Result<String, String> {
    let raw = fs::read_to_string(dir.join(BOOTSTRAP_FILE)).map_err(|_| {
        format!("{} has not been bootstrapped yet: start capydb-local on it first, or pass --org", dir.display())
    })?;
    let v: serde_json::Value = serde_json::from_str(&raw).map_err(|e| format!("{BOOTSTRAP_FILE} is damaged: {e}"))?;
    v["organization_id"].as_str().map(str::to_string).ok_or_else(|| format!("{BOOTSTRAP_FILE} names no organization"))
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

fn open_store_for_cli(data_dir: &Path) -> Result<(PathBuf, SqliteStore), String> {
    let not_here = |why: String| {
        format!(
            "no capydb-local data at {} ({why}): run this where capydb-local was started \
             (bash local/run keeps its data in <repository>/.capydb), or pass --data-dir",
            data_dir.display()
        )
    };
    let dir = data_dir.canonicalize().map_err(|e| not_here(e.to_string()))?;
    // Opening would create an empty database in whatever dir was given.
    if !dir.join(DB_FILE).is_file() {
        return Err(not_here(format!("no {DB_FILE}")));
    }
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
        None => read_bootstrap_org(&dir)?,
    };
    if store.get_organization(&org_id).await.map_err(|e| e.to_string())?.is_none() {
        return Err(format!("no organization {org_id} in {}", dir.display()));
    }
    let scopes = capydb_domain::scopes::parse_scope_list(&args.scopes)?;
    let err = |e: capydb_domain::DomainError| e.to_string();
    let req = CreateApiKey {
        name: Name::parse("--name", &args.name).map_err(err)?,
        scopes: NonEmpty::new("--scopes", scopes).map_err(err)?,
        project_id: args.project,
        expires_at: None,
        expires_in_days: args
            .expires_in_days
            .map(|d| ExpiresInDays::parse("--expires-in-days", d))
            .transpose()
            .map_err(err)?,
    };
    let created = mint_api_key(&store, SystemClock.now(), &org_id, req, None).await.map_err(|e| e.to_string())?;
    println!("CAPYDB_API_KEY={}", created.plaintext);
    println!("CAPYDB_API_KEY_ID={}", created.api_key.id);
    Ok(())
}

/// `capydb-local reset`: stops the private cluster, deletes it wherever it
/// lives, then deletes the data dir. Refuses a running data dir and anything
/// that does not look like one.
pub fn reset(args: ResetArgs) -> Result<(), String> {
    let dir = match args.data_dir.canonicalize() {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("# nothing to reset: there is no data dir at {}", args.data_dir.display());
            return Ok(());
        }
        Err(e) => return Err(format!("cannot resolve {}: {e}", args.data_dir.display())),
    };
    if ![DB_FILE, SECRET_KEY_FILE, "lock"].iter().any(|name| dir.join(name).exists()) {
        return Err(format!(
            "{} does not look like a capydb-local data dir (no {DB_FILE}, {SECRET_KEY_FILE} or lock); not deleting it",
            dir.display()
        ));
    }
    // Held while deleting, so no capydb-local starts on it meanwhile.
    let _lock = lock_data_dir(&dir).map_err(|e| format!("{e}: stop it before resetting"))?;
    let cluster_dir = dir.join(CLUSTER_DIR);
    let had_cluster = cluster_dir.exists();
    for path in LocalCluster::remove(&cluster_dir)? {
        // What is inside the data dir goes with it; say what was elsewhere.
        if !path.starts_with(&dir) {
            println!("removed {}", path.display());
        }
    }
    fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    println!("removed {}", dir.display());
    if !had_cluster {
        println!("# no private cluster: databases made on a --postgres-url server were not dropped");
    }
    Ok(())
}

/// `sessions create`: prints a development session token.
pub fn sessions_create(args: crate::cli::SessionsCreateArgs) -> Result<(), String> {
    let pair = crate::dev_sessions::key(&args.data_dir)?;
    let token = crate::dev_sessions::mint(&pair, &args.user, &args.org, &args.role, args.ttl_minutes)?;
    eprintln!(
        "capydb-local: a DEVELOPMENT session token for {} ({} of {}), valid {} min; \
         the server accepts it only when started with --dev-sessions",
        args.user, args.role, args.org, args.ttl_minutes
    );
    println!("{token}");
    Ok(())
}

/// The session verifier the `CAPYDB_CLERK_*` variables configure, or none
/// when neither a key nor a JWKS URL is set (session tokens are then `401`).
/// A key that does not parse stops the start.
fn sessions(egress: EgressPolicy, dev: Option<&Path>) -> Result<Option<Arc<dyn SessionVerifier>>, String> {
    let clerk = capydb_clerk::ClerkConfig::from_env()?;
    let config = match (dev, clerk.is_enabled()) {
        (Some(_), true) => {
            return Err("--dev-sessions (CAPYDB_DEV_SESSIONS) and a Clerk configuration (CAPYDB_CLERK_*) \
                        exclude each other: development tokens are for a server without Clerk"
                .into())
        }
        (Some(dir), false) => {
            tracing::warn!(
                "FOR DEVELOPMENT ONLY: accepting session tokens signed with this data dir's development key \
                 (capydb-local sessions create)"
            );
            crate::dev_sessions::server_config(dir)?
        }
        (None, true) => clerk,
        (None, false) => return Ok(None),
    };
    let verifier = capydb_clerk::ClerkVerifier::new(&config, egress)?;
    tracing::info!(
        jwks = config.jwks_url.is_some() && config.jwt_key_pem.is_none(),
        issuer = config.issuer.as_deref().unwrap_or("(any)"),
        "browser sessions (Clerk) are accepted"
    );
    Ok(Some(Arc::new(verifier)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir().join(capydb_domain::ids::new_id("capydb-local-test"));
            fs::create_dir(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn set(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A data dir as an earlier version left it: 0711, its files 0644.
    fn loose_data_dir(tmp: &TempDir) -> PathBuf {
        let dir = tmp.0.join("data");
        for sub in ["backups/artifacts", "postgres/data", "work"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        for file in
            [DB_FILE, "capydb.sqlite3-wal", BOOTSTRAP_FILE, "backups/artifacts/bkp_1", "postgres/data/PG_VERSION"]
        {
            fs::write(dir.join(file), "x").expect("write");
            set(&dir.join(file), 0o644);
        }
        fs::write(dir.join(SECRET_KEY_FILE), "k").expect("write");
        set(&dir.join(SECRET_KEY_FILE), 0o600);
        for sub in ["backups", "backups/artifacts", "postgres", "postgres/data", "work"] {
            set(&dir.join(sub), 0o755);
        }
        set(&dir, 0o711);
        dir
    }

    #[test]
    fn loose_permissions_in_the_data_dir_are_tightened_and_reported() {
        let tmp = TempDir::new();
        let dir = loose_data_dir(&tmp);
        let changes = secure_data_dir(&dir, DIR_MODE).expect("secure");
        assert_eq!(format!("{:o}", mode(&dir)), "700");
        for file in [DB_FILE, "capydb.sqlite3-wal", BOOTSTRAP_FILE, SECRET_KEY_FILE, "backups/artifacts/bkp_1"] {
            assert_eq!(format!("{:o}", mode(&dir.join(file))), "600", "{file}");
        }
        for sub in ["backups", "backups/artifacts", "postgres", "work"] {
            assert_eq!(format!("{:o}", mode(&dir.join(sub))), "700", "{sub}");
        }
        let reported: Vec<_> = changes.iter().map(|c| (c.path.clone(), c.from, c.to)).collect();
        assert!(reported.contains(&(dir.join(DB_FILE), 0o644, 0o600)), "{reported:?}");
        assert!(reported.contains(&(dir.clone(), 0o711, 0o700)), "{reported:?}");
        assert!(!reported.iter().any(|(p, ..)| p == &dir.join(SECRET_KEY_FILE)), "an unchanged file was reported");
        assert!(secure_data_dir(&dir, DIR_MODE).expect("again").is_empty(), "a second pass changes nothing");
    }

    #[test]
    fn files_capydb_local_did_not_make_are_left_alone() {
        let tmp = TempDir::new();
        let dir = loose_data_dir(&tmp);
        for name in ["notes.txt", "capydb.sqlite3.bak-by-hand"] {
            fs::write(dir.join(name), "mine").expect("write");
            set(&dir.join(name), 0o644);
        }
        secure_data_dir(&dir, DIR_MODE).expect("secure");
        assert_eq!(format!("{:o}", mode(&dir.join("notes.txt"))), "644");
        // Named like ours: SQLite's and our own files share the prefix, so it is treated as ours.
        assert_eq!(format!("{:o}", mode(&dir.join("capydb.sqlite3.bak-by-hand"))), "600");
    }

    #[test]
    fn postgres_data_directory_is_left_to_postgres() {
        let tmp = TempDir::new();
        let dir = loose_data_dir(&tmp);
        secure_data_dir(&dir, DIR_MODE).expect("secure");
        assert_eq!(format!("{:o}", mode(&dir.join("postgres/data"))), "755");
        assert_eq!(format!("{:o}", mode(&dir.join("postgres/data/PG_VERSION"))), "644");
    }

    #[test]
    fn a_data_dir_holding_an_old_root_cluster_stays_traversable() {
        let tmp = TempDir::new();
        let dir = loose_data_dir(&tmp);
        set(&dir, 0o700);
        secure_data_dir(&dir, TRAVERSABLE_DIR_MODE).expect("secure");
        assert_eq!(format!("{:o}", mode(&dir)), "711", "the postgres user could not reach the cluster");
        assert_eq!(format!("{:o}", mode(&dir.join(DB_FILE))), "600");
    }

    #[test]
    fn symlinks_in_the_data_dir_are_not_followed() {
        let tmp = TempDir::new();
        let outside = tmp.0.join("outside");
        fs::write(&outside, "x").expect("write");
        set(&outside, 0o644);
        let dir = tmp.0.join("data");
        fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::symlink(&outside, dir.join("link")).expect("symlink");
        secure_data_dir(&dir, DIR_MODE).expect("secure");
        assert_eq!(format!("{:o}", mode(&outside)), "644", "a file outside the data dir was changed through a symlink");
    }

    #[test]
    fn first_start_prints_exactly_three_lines() {
        let lines = first_start_lines("http://127.0.0.1:8787/api/capydb", "org_1", "capy_live_x");
        assert_eq!(
            lines,
            "CAPYDB_BASE=http://127.0.0.1:8787/api/capydb\nCAPYDB_ORG_ID=org_1\nCAPYDB_API_KEY=capy_live_x\n"
        );
    }

    #[test]
    fn a_restart_prints_base_and_org_and_how_to_mint_a_key() {
        let lines = restart_lines("http://127.0.0.1:8787/api/capydb", Some("org_1"), None);
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines[..2], ["CAPYDB_BASE=http://127.0.0.1:8787/api/capydb", "CAPYDB_ORG_ID=org_1"]);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].starts_with("# "), "the hint must be a shell comment: {}", lines[2]);
        assert!(lines[2].contains("capydb-local keys create --scopes '*'"), "{}", lines[2]);
        assert!(lines[2].contains("bash local/run keys create --scopes '*'"), "{}", lines[2]);
        assert!(!lines.iter().any(|l| l.contains("CAPYDB_API_KEY=")));
    }

    #[test]
    fn the_restart_hint_names_a_data_dir_other_than_the_default() {
        let lines = restart_lines("http://x/api/capydb", Some("org_1"), Some(Path::new("/srv/my data")));
        assert!(lines.contains("capydb-local keys create --data-dir '/srv/my data' --scopes '*'"), "{lines}");
        let lines = restart_lines("http://x/api/capydb", None, Some(Path::new("/srv/capydb")));
        assert!(lines.contains("keys create --data-dir /srv/capydb --scopes '*'"), "{lines}");
        assert!(!lines.contains("CAPYDB_ORG_ID"), "no organization recorded, none printed: {lines}");
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("/srv/capydb-1.2"), "/srv/capydb-1.2");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn reset_refuses_a_dir_that_is_not_a_data_dir() {
        let tmp = TempDir::new();
        fs::write(tmp.0.join("notes.txt"), "mine").expect("write");
        let err = reset(ResetArgs { data_dir: tmp.0.clone() }).expect_err("not a data dir");
        assert!(err.contains("does not look like a capydb-local data dir"), "{err}");
        assert!(tmp.0.join("notes.txt").exists());
    }
}
