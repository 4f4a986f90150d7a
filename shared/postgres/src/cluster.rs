//! `LocalCluster`: the private PostgreSQL cluster `capydb-local` runs from the
//! machine's own binaries when it is given no `--postgres-url`.
//!
//! Layout, for the dir `dir` that `capydb-local` owns (`<data-dir>/postgres`):
//!
//! ```text
//! dir/cluster.json      {"port": ..., "home": ...}: where the cluster lives and listens
//! dir/admin.sealed      the superuser password, sealed by the SecretBox (0600)
//! dir/cluster.lock      flock held while ensure_started runs
//! home/data/            the data directory (PGDATA)
//! home/postgres.log     the server log (pg_ctl -l)
//! home/capydb-dir       relocated homes only: the `dir` the home belongs to
//! ```
//!
//! `home` is `dir` itself, except as root: initdb and the server then run as
//! the `postgres` system user, who may not enter the data dir (it is 0700), so
//! the cluster lives in `/var/lib/capydb/clusters/<first 16 hex of
//! sha256(canonical dir)>`, a place that persists across reboots, unlike
//! `/tmp`. (A cluster an earlier version made inside `dir` as root stays
//! there; see `needs_traversal`.)
//!
//! A relocated home and its `dir` name each other (`capydb-dir` and
//! `cluster.json`), so a home whose `dir` is gone is known to be an orphan:
//! every start as root sweeps those (stops their server, deletes them), and
//! `remove` deletes the cluster of a `dir` wherever it lives. Homes are only
//! created, claimed and swept under one lock (`/var/lib/capydb/clusters/.lock`).
//!
//! The server outlives the process that started it (pg_ctl detaches it), so a
//! `capydb-local` killed without a clean shutdown finds it still running and
//! reuses it. It listens on 127.0.0.1 only and has no Unix socket.
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use capydb_domain::ports::SecretBox;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::error::mask_credentials;
use crate::provider::postgres_uri;

const ADMIN_USER: &str = "capydb_admin";
const STATE_FILE: &str = "cluster.json";
const SEALED_PASSWORD_FILE: &str = "admin.sealed";
const LOCK_FILE: &str = "cluster.lock";
const RELOCATION_ROOT: &str = "/var/lib/capydb/clusters";
/// In a relocated home: the canonical `dir` it belongs to.
const OWNER_FILE: &str = "capydb-dir";
/// In the relocation root: held while homes are created, claimed or swept.
const RELOCATION_LOCK: &str = ".lock";
const SYSTEM_USER: &str = "postgres";
/// Debian/Ubuntu install each major version here; PATH usually has only the client tools.
const VERSIONED_BIN_ROOT: &str = "/usr/lib/postgresql";
const MISSING_BINARIES: &str = "PostgreSQL server binaries (initdb and pg_ctl) were not found on PATH or in \
    /usr/lib/postgresql/<version>/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`; \
    Fedora/RHEL: `dnf install postgresql-server`; macOS: `brew install postgresql`) \
    or pass --postgres-url to use an existing server.";

/// How long pg_ctl waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";
/// How long a start may keep retrying after a port race or a predecessor
/// that is still exiting (a SIGKILLed postmaster stays a zombie until reaped).
const START_RETRY_BUDGET: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private cluster. Dropping it leaves the server running on
/// purpose; `stop` is for a clean shutdown.
#[derive(Clone)]
pub struct LocalCluster {
    /// The dir given to `ensure_started` (canonical): state and sealed password.
    dir: PathBuf,
    layout: Layout,
    port: u16,
    admin_password: String,
}

impl std::fmt::Debug for LocalCluster {
    // Hand-written so the admin password is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("data_dir", &self.layout.data)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// The directory holding `initdb` and `pg_ctl`: the first PATH entry that
    /// has both, else the newest `/usr/lib/postgresql/<version>/bin`.
    pub fn find_binaries() -> Result<PathBuf, String> {
        find_binaries_in(std::env::var_os("PATH").as_deref(), Path::new(VERSIONED_BIN_ROOT))
            .ok_or_else(|| MISSING_BINARIES.to_string())
    }

    /// Makes sure the cluster for `dir` exists and runs, and answers once it
    /// accepts the admin's connections: initdb on first use, reuse of a server
    /// that is already running, otherwise a start on the stored port (or a new
    /// free one when that is taken).
    pub async fn ensure_started(dir: &Path, secrets: &dyn SecretBox) -> Result<LocalCluster, String> {
        let bin_dir = Self::find_binaries()?;
        let runner = Runner::detect()?;
        fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let dir = dir.canonicalize().map_err(|e| format!("could not resolve {}: {e}", dir.display()))?;
        let _lock = lock_dir(&dir).await?;

        let state = read_state(&dir);
        let home = match runner {
            Runner::Direct => {
                check_shell_safe(&dir)?;
                prepare_home(&dir, runner)?;
                dir.clone()
            }
            Runner::AsPostgres { .. } => {
                let relocation = Relocation::system();
                // Sweeping, choosing, creating and claiming a home happen
                // under one lock, so a sweep never sees a home half claimed.
                let _guard = relocation.lock()?;
                relocation.sweep(&|home| Layout::new(bin_dir.clone(), home.to_path_buf(), runner).stop_now());
                let home = choose_home(&dir, state.as_ref().map(|s| s.home.as_path()), &relocation, &bin_dir, runner)?;
                check_shell_safe(&home)?;
                prepare_home(&home, runner)?;
                if relocation.is_home(&home) {
                    set_owner(&home, &dir)
                        .map_err(|e| format!("could not write {OWNER_FILE} in {}: {e}", home.display()))?;
                    // Written now, not once the server runs: from here on
                    // the home is claimed, and no sweep may take it.
                    if state.as_ref().map(|s| &s.home) != Some(&home) {
                        let port = state.as_ref().map_or(0, |s| s.port);
                        write_state(&dir, &ClusterState { port, home: home.clone() })?;
                    }
                }
                home
            }
        };
        let layout = Layout::new(bin_dir, home, runner);

        let sealed_path = dir.join(SEALED_PASSWORD_FILE);
        let admin_password = if layout.data.join("PG_VERSION").exists() {
            let sealed = fs::read_to_string(&sealed_path).map_err(|e| {
                format!(
                    "the cluster in {} exists but its admin password {} cannot be read ({e}); \
                     remove {} to start over with an empty cluster",
                    layout.data.display(),
                    sealed_path.display(),
                    layout.data.display()
                )
            })?;
            secrets.open(sealed.trim()).await.map_err(|e| format!("could not open {}: {e}", sealed_path.display()))?
        } else {
            let password: String = rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
            let sealed =
                secrets.seal(&password).await.map_err(|e| format!("could not seal the admin password: {e}"))?;
            // Before initdb: a crash in between leaves a password without a
            // cluster (the next run overwrites it), never a cluster without one.
            write_private(&sealed_path, sealed.as_bytes())
                .map_err(|e| format!("could not write {}: {e}", sealed_path.display()))?;
            let started = Instant::now();
            layout.initdb(&password).await?;
            tracing::info!(data_dir = %layout.data.display(), elapsed_ms = started.elapsed().as_millis() as u64, "PostgreSQL cluster initialized");
            password
        };

        let mut cluster = LocalCluster { dir: dir.clone(), layout, port: 0, admin_password };
        let reused = match cluster.layout.running_postmaster().await? {
            Some((pid, port)) => {
                cluster.port = port;
                // A postmaster SIGKILLed a moment ago can still look alive here.
                let ready = cluster.wait_ready(Some(pid)).await?;
                if ready {
                    tracing::info!(port, data_dir = %cluster.layout.data.display(), "reusing the running PostgreSQL cluster");
                } else {
                    tracing::info!(pid, "the running postmaster exited meanwhile; starting a new one");
                }
                ready
            }
            None => false,
        };
        if !reused {
            let started = Instant::now();
            let preferred = state.as_ref().map(|s| s.port).filter(|&p| p != 0);
            cluster.port = cluster.layout.start(preferred, &cluster.admin_password).await?;
            // From here a failure must not leave behind the server this call
            // started: nobody would stop it.
            if let Err(e) = cluster.wait_ready(None).await {
                let _ = cluster.layout.stop_now();
                return Err(e);
            }
            tracing::info!(port = cluster.port, data_dir = %cluster.layout.data.display(), elapsed_ms = started.elapsed().as_millis() as u64, "PostgreSQL cluster started");
        }

        let new_state = ClusterState { port: cluster.port, home: cluster.layout.home.clone() };
        if read_state(&dir).as_ref() != Some(&new_state) {
            if let Err(e) = write_state(&dir, &new_state) {
                if !reused {
                    let _ = cluster.layout.stop_now();
                }
                return Err(e);
            }
        }
        Ok(cluster)
    }

    /// Stops the cluster of `dir` if it runs and deletes it wherever it
    /// lives (inside `dir`, or its relocated home), with its state and sealed
    /// password; the rest of `dir` is left alone. Answers what was deleted.
    /// For `capydb-local reset`, and tests that must not leave clusters behind.
    pub fn remove(dir: &Path) -> Result<Vec<PathBuf>, String> {
        let dir = match dir.canonicalize() {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("could not resolve {}: {e}", dir.display())),
        };
        let relocation = Relocation::system();
        let recorded = read_state(&dir).map(|s| s.home);
        let home = match recorded {
            Some(home) if home == dir || relocation.is_home(&home) => Some(home),
            _ if dir.join("data").exists() => Some(dir.clone()),
            // Only root relocates; nobody else could delete the home anyway.
            _ if is_root() => Some(relocation.home_for(&dir)).filter(|h| h.exists()),
            _ => None,
        };
        let mut removed = Vec::new();
        let remove = |result: io::Result<()>, path: &Path, removed: &mut Vec<PathBuf>| match result {
            Ok(()) => {
                removed.push(path.to_path_buf());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("could not remove {}: {e}", path.display())),
        };
        match home {
            Some(home) if home == dir => {
                stop_cluster_in(&home)?;
                remove(fs::remove_dir_all(home.join("data")), &home.join("data"), &mut removed)?;
                remove(fs::remove_file(home.join("postgres.log")), &home.join("postgres.log"), &mut removed)?;
            }
            Some(home) => {
                let _guard = relocation.lock()?;
                match read_owner(&home) {
                    // Another data dir uses it (this one is a copy): not ours to delete.
                    Some(owner) if owner != dir && dir_claims(&owner, &home) => {
                        tracing::warn!(home = %home.display(), owner = %owner.display(), "leaving the cluster of another data dir alone");
                    }
                    // A home of an earlier version has no owner file: it is
                    // ours only if this dir's state names it or it is this dir's.
                    _ => {
                        stop_cluster_in(&home)?;
                        remove(fs::remove_dir_all(&home), &home, &mut removed)?;
                    }
                }
            }
            None => {}
        }
        for name in [STATE_FILE, SEALED_PASSWORD_FILE] {
            let path = dir.join(name);
            remove(fs::remove_file(&path), &path, &mut removed)?;
        }
        Ok(removed)
    }

    /// Whether the cluster of `dir` is one an earlier version made inside
    /// `dir` while running as root. The server runs as the `postgres` user,
    /// who must then be able to traverse `dir`'s parent: that data dir
    /// cannot be 0700 until the cluster is reset.
    pub fn needs_traversal(dir: &Path) -> bool {
        let Ok(dir) = dir.canonicalize() else { return false };
        is_root()
            && match read_state(&dir) {
                Some(state) => state.home == dir,
                None => dir.join("data").join("PG_VERSION").exists(),
            }
    }

    /// `postgres://capydb_admin:<password>@127.0.0.1:<port>/postgres`
    pub fn admin_url(&self) -> String {
        postgres_uri(ADMIN_USER, &self.admin_password, "127.0.0.1", self.port, "postgres", None)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's PGDATA (holds `postmaster.pid` while the server runs).
    pub fn data_dir(&self) -> &Path {
        &self.layout.data
    }

    /// Fast shutdown (sessions are ended, the data is checkpointed), for a
    /// clean exit of `capydb-local`. Stopping a stopped cluster is fine.
    pub async fn stop(&self) -> Result<(), String> {
        let (status, output) = run(self.layout.pg_ctl(&["-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])).await?;
        if status.success() || self.layout.running_postmaster().await?.is_none() {
            tracing::info!(port = self.port, "PostgreSQL cluster stopped");
            Ok(())
        } else {
            Err(format!("pg_ctl stop failed ({status}): {output}"))
        }
    }

    /// Immediate shutdown without waiting on the async runtime: for `Drop`
    /// guards and panic paths, where the runtime may be gone.
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.layout.stop_now()
    }

    /// Stops the server at once and deletes the cluster: data, log, state and
    /// sealed password. For tests and throwaway data dirs: a relocated cluster
    /// lives outside `dir` and would otherwise outlive it.
    pub fn destroy(&self) -> Result<(), String> {
        self.stop_immediate()?;
        Self::remove(&self.dir).map(drop)
    }

    /// Waits until the admin can connect: pg_ctl -w returns once the
    /// postmaster is up, but a reused server may still be recovering, and this
    /// also proves the sealed password is right. With `watch`, answers `false`
    /// as soon as that postmaster turns out to be dead.
    async fn wait_ready(&self, watch: Option<i32>) -> Result<bool, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(ADMIN_USER)
            .password(self.admin_password.as_bytes())
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match config.connect(NoTls).await {
                Ok((client, connection)) => {
                    // The connection ends by itself once its client is gone.
                    drop(client);
                    let _ = connection.await;
                    return Ok(true);
                }
                Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => {
                    return Err(format!(
                        "the cluster in {} rejects the admin password from {SEALED_PASSWORD_FILE}: \
                         was the data dir copied without it?",
                        self.layout.data.display()
                    ))
                }
                Err(_) if watch.is_some_and(|pid| !process_alive(pid)) => return Ok(false),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the PostgreSQL cluster to accept connections");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "the cluster on 127.0.0.1:{} did not accept connections within {} s: {e}",
                        self.port,
                        READY_TIMEOUT.as_secs()
                    ))
                }
            }
        }
    }
}

/// How the server binaries are run. initdb and the postmaster refuse to run
/// as root, so as root everything runs as the `postgres` system user.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Runner {
    Direct,
    AsPostgres { uid: u32, gid: u32 },
}

impl Runner {
    fn detect() -> Result<Runner, String> {
        if !is_root() {
            return Ok(Runner::Direct);
        }
        let (uid, gid) = lookup_user(SYSTEM_USER).ok_or_else(|| {
            format!(
                "running as root, the cluster must run as the `{SYSTEM_USER}` system user, which does not exist: \
                 install PostgreSQL from your distribution's packages (they create it), run as a normal user, \
                 or pass --postgres-url"
            )
        })?;
        Ok(Runner::AsPostgres { uid, gid })
    }

    fn command(self, program: &Path) -> Command {
        let mut cmd = match self {
            Runner::Direct => Command::new(program),
            Runner::AsPostgres { .. } => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", SYSTEM_USER, "--"]).arg(program);
                cmd
            }
        };
        // The postgres user may not be able to read our working directory,
        // and pg_ctl fails when it cannot resolve it.
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }
}

/// Paths and commands of one cluster.
#[derive(Debug, Clone)]
struct Layout {
    bin_dir: PathBuf,
    home: PathBuf,
    data: PathBuf,
    log: PathBuf,
    runner: Runner,
}

/// Why one start attempt failed, as far as a retry can fix it.
enum StartFailure {
    PortTaken(String),
    PredecessorExiting(String),
    Other(String),
}

impl Layout {
    fn new(bin_dir: PathBuf, home: PathBuf, runner: Runner) -> Layout {
        Layout { bin_dir, data: home.join("data"), log: home.join("postgres.log"), home, runner }
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = self.runner.command(&self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data).args(args);
        cmd
    }

    /// Immediate shutdown (no checkpoint; the next start recovers), without
    /// the async runtime. Nothing to do when no live postmaster is recorded.
    fn stop_now(&self) -> Result<(), String> {
        if !read_pid_file(&self.data).is_some_and(|(pid, _)| process_alive(pid)) {
            return Ok(());
        }
        let mut cmd = self.pg_ctl(&["-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"]);
        let output = cmd.output().map_err(|e| spawn_error(&cmd, &e))?;
        if output.status.success() || !self.data.join("postmaster.pid").exists() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl stop -m immediate failed ({}): {}",
                output.status,
                combined(&output.stdout, &output.stderr)
            ))
        }
    }

    async fn initdb(&self, password: &str) -> Result<(), String> {
        let pwfile = TempFile::create(&self.home.join(".initdb-pw"), password.as_bytes(), self.runner)
            .map_err(|e| format!("could not write initdb's password file: {e}"))?;
        let mut cmd = self.runner.command(&self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-U", ADMIN_USER, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
            .arg([OsStr::new("--pwfile="), pwfile.0.as_os_str()].join(OsStr::new("")));
        let (status, output) = run(cmd).await?;
        drop(pwfile);
        if status.success() {
            Ok(())
        } else {
            // initdb reads the password from the file and never prints it,
            // but this text leaves the crate: masked wherever it would stand.
            Err(format!("initdb failed ({status}): {}", mask_credentials(&output, Some(password))))
        }
    }

    /// `(pid, port)` of the postmaster running on this data dir, if one is.
    async fn running_postmaster(&self) -> Result<Option<(i32, u16)>, String> {
        let (status, output) = run(self.pg_ctl(&["status"])).await?;
        match status.code() {
            Some(0) => {}
            // 3: no server running; 4: no accessible data directory.
            Some(3 | 4) => return Ok(None),
            _ => return Err(format!("pg_ctl status failed ({status}): {output}")),
        }
        Ok(read_pid_file(&self.data).filter(|&(pid, _)| process_alive(pid)))
    }

    /// Starts the server on `preferred` when it is free, else on a free port;
    /// answers the port it listens on.
    async fn start(&self, preferred: Option<u16>, password: &str) -> Result<u16, String> {
        let mut port = match preferred {
            Some(p) if port_is_free(p) => p,
            _ => free_port()?,
        };
        let deadline = Instant::now() + START_RETRY_BUDGET;
        loop {
            match self.start_on(port).await? {
                None => return Ok(port),
                Some(StartFailure::PortTaken(why)) if Instant::now() < deadline => {
                    tracing::debug!(port, why = %why, "port taken meanwhile; trying another");
                    port = free_port()?;
                }
                Some(StartFailure::PredecessorExiting(why)) if Instant::now() < deadline => {
                    tracing::debug!(why = %why, "the previous postmaster has not fully exited; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Some(
                    StartFailure::PortTaken(why) | StartFailure::PredecessorExiting(why) | StartFailure::Other(why),
                ) => return Err(mask_credentials(&why, Some(password))),
            }
        }
    }

    async fn start_on(&self, port: u16) -> Result<Option<StartFailure>, String> {
        let log_offset = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        // No Unix socket: its path is limited to ~107 bytes and the default
        // directory may not be writable; pg_ctl -w watches postmaster.pid, not
        // the socket. The options pass through pg_ctl's shell, hence the ''.
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
        let mut cmd = self.pg_ctl(&["-w", "-t", PG_CTL_WAIT_SECS, "-o", &options]);
        cmd.arg("-l").arg(&self.log).arg("start");
        let (status, output) = run(cmd).await?;
        if status.success() {
            return Ok(None);
        }
        let log = read_from(&self.log, log_offset);
        let why = format!("pg_ctl start failed ({status}): {}\nserver log:\n{}", output.trim(), tail(&log, 4000));
        Ok(Some(if log.contains("could not bind") || log.contains("Address already in use") {
            StartFailure::PortTaken(why)
        } else if log.contains("lock file \"postmaster.pid\" already exists")
            || log.contains("pre-existing shared memory block")
        {
            StartFailure::PredecessorExiting(why)
        } else {
            StartFailure::Other(why)
        }))
    }
}

/// What `cluster.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ClusterState {
    port: u16,
    home: PathBuf,
}

/// An unreadable state file is not fatal: the port is re-picked and the home
/// recomputed.
fn read_state(dir: &Path) -> Option<ClusterState> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable cluster state file");
            None
        }
    }
}

fn write_state(dir: &Path, state: &ClusterState) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| format!("could not encode {STATE_FILE}: {e}"))?;
    write_private(&dir.join(STATE_FILE), &json).map_err(|e| format!("could not write {STATE_FILE}: {e}"))
}

/// Where relocated homes live: `RELOCATION_ROOT`, or a temp dir in tests.
struct Relocation {
    root: PathBuf,
}

impl Relocation {
    fn system() -> Relocation {
        Relocation { root: PathBuf::from(RELOCATION_ROOT) }
    }

    /// Only direct children named like `home_for` names them: the state file
    /// is not trusted to point anywhere else, since root creates, chowns and
    /// deletes these.
    fn is_home(&self, home: &Path) -> bool {
        home.parent() == Some(self.root.as_path())
            && home
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.len() == 16 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    }

    fn home_for(&self, dir: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let digest = hex::encode(Sha256::digest(dir.as_os_str().as_bytes()));
        self.root.join(&digest[..16])
    }

    /// Creates the root (the postgres user must traverse it and its parent,
    /// whatever our umask) and takes its lock; released when the file drops.
    /// A blocking lock: it is held only for a few file operations and the
    /// immediate stops of orphans.
    fn lock(&self) -> Result<File, String> {
        let fail = |e: io::Error| format!("could not prepare {}: {e}", self.root.display());
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&self.root).map_err(fail)?;
        for dir in [self.root.as_path(), self.root.parent().unwrap_or(Path::new("/"))] {
            if fs::metadata(dir).map_err(fail)?.permissions().mode() & 0o777 != 0o755 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(fail)?;
            }
        }
        let path = self.root.join(RELOCATION_LOCK);
        let file = open_lock_file(&path)?;
        // SAFETY: the descriptor belongs to `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("could not lock {}: {}", path.display(), io::Error::last_os_error()));
        }
        Ok(file)
    }

    /// Stops and deletes every home whose data dir no longer claims it (the
    /// dir was deleted, or reset by hand); answers the homes deleted. Homes
    /// of earlier versions carry no owner file and are only reported: whose
    /// they are cannot be told. Call with the lock held.
    fn sweep(&self, stop: &dyn Fn(&Path) -> Result<(), String>) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        let (mut removed, mut unmarked) = (Vec::new(), Vec::new());
        for home in entries.flatten().map(|e| e.path()).filter(|p| self.is_home(p)) {
            let Some(owner) = read_owner(&home) else {
                unmarked.push(home.display().to_string());
                continue;
            };
            if dir_claims(&owner, &home) {
                continue;
            }
            match stop(&home).and_then(|()| {
                fs::remove_dir_all(&home).map_err(|e| format!("could not remove {}: {e}", home.display()))
            }) {
                Ok(()) => {
                    tracing::info!(home = %home.display(), data_dir = %owner.display(), "removed an orphaned PostgreSQL cluster: its data dir is gone");
                    removed.push(home);
                }
                Err(e) => {
                    tracing::warn!(home = %home.display(), data_dir = %owner.display(), error = %e, "could not remove an orphaned PostgreSQL cluster")
                }
            }
        }
        if !unmarked.is_empty() {
            tracing::info!(
                homes = %unmarked.join(" "),
                "relocated PostgreSQL clusters made by an earlier capydb-local are left alone; \
                 each is claimed when its data dir starts again, the others can be deleted by hand"
            );
        }
        removed
    }
}

/// The dir a relocated home belongs to, from its owner file.
fn read_owner(home: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = fs::read(home.join(OWNER_FILE)).ok()?;
    let path = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    (!path.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(path)))
}

fn set_owner(home: &Path, dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if read_owner(home).as_deref() == Some(dir) {
        return Ok(());
    }
    let mut line = dir.as_os_str().as_bytes().to_vec();
    line.push(b'\n');
    write_private(&home.join(OWNER_FILE), &line)
}

/// Whether `dir` still uses `home` for its cluster: its state names it. A
/// state file that exists but cannot be read or parsed counts as a claim,
/// and so does a sealed admin password without a state: a home is deleted
/// only when nothing could ever use it again.
fn dir_claims(dir: &Path, home: &Path) -> bool {
    match fs::read(dir.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice::<ClusterState>(&bytes).map_or(true, |state| state.home == home),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::symlink_metadata(dir) {
            Ok(_) => dir.join(SEALED_PASSWORD_FILE).exists(),
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        },
        Err(_) => true,
    }
}

/// As root the cluster lives in a relocated home: the data dir is 0700 and
/// the postgres user cannot enter it. A recorded home is kept (a moved `dir`
/// takes its cluster along) unless another existing data dir claims it (the
/// data dir was copied, and two of them would share one server). A cluster
/// an earlier version made inside `dir` stays there. Call with the
/// relocation lock held.
fn choose_home(
    dir: &Path,
    recorded: Option<&Path>,
    relocation: &Relocation,
    bin_dir: &Path,
    runner: Runner,
) -> Result<PathBuf, String> {
    let claimed_elsewhere = |home: &Path| read_owner(home).filter(|owner| owner != dir && dir_claims(owner, home));
    match recorded {
        Some(home) if home == dir => return Ok(dir.to_path_buf()),
        Some(home) if relocation.is_home(home) => {
            if let Some(owner) = claimed_elsewhere(home) {
                return Err(format!(
                    "the PostgreSQL cluster in {} belongs to the data dir {} (was this data dir copied from it?); \
                     reset this one to give it a cluster of its own",
                    home.display(),
                    owner.display()
                ));
            }
            return Ok(home.to_path_buf());
        }
        Some(home) => tracing::warn!(home = %home.display(), "ignoring an unexpected cluster location in {STATE_FILE}"),
        None if dir.join("data").join("PG_VERSION").exists() => return Ok(dir.to_path_buf()),
        None => {}
    }
    let home = relocation.home_for(dir);
    if let Some(owner) = claimed_elsewhere(&home) {
        return Err(format!(
            "{} is the cluster of the data dir {}, which was moved from here; \
             choose another data dir or reset that one",
            home.display(),
            owner.display()
        ));
    }
    // A cluster in our home with no admin password to open it was left by a
    // data dir deleted at this same path (one of an earlier version: the
    // sweep took any other). Nothing can use it: start afresh.
    if home.join("data").exists() && !dir.join(SEALED_PASSWORD_FILE).exists() {
        Layout::new(bin_dir.to_path_buf(), home.clone(), runner).stop_now()?;
        fs::remove_dir_all(&home).map_err(|e| format!("could not remove {}: {e}", home.display()))?;
        tracing::info!(home = %home.display(), "removed a PostgreSQL cluster left by an earlier data dir at this path");
    }
    Ok(home)
}

/// Stops the server of the cluster in `home` if one runs. Binaries and the
/// runner are looked up only then, so deleting a stopped cluster needs neither.
fn stop_cluster_in(home: &Path) -> Result<(), String> {
    let data = home.join("data");
    if !read_pid_file(&data).is_some_and(|(pid, _)| process_alive(pid)) {
        return Ok(());
    }
    Layout::new(LocalCluster::find_binaries()?, home.to_path_buf(), Runner::detect()?).stop_now()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// pg_ctl pastes the data dir and log paths into a `/bin/sh -c` line inside
/// double quotes, without escaping.
fn check_shell_safe(home: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    if home.as_os_str().as_bytes().iter().any(|b| b"\"$`\\\n".contains(b)) {
        return Err(format!(
            "{} contains a character pg_ctl cannot handle (\", $, `, \\ or a newline); choose another data dir",
            home.display()
        ));
    }
    Ok(())
}

/// Creates `home` and, as root, hands it to the postgres user (initdb creates
/// `data` inside it, pg_ctl writes the log there).
fn prepare_home(home: &Path, runner: Runner) -> Result<(), String> {
    let fail = |e: io::Error| format!("could not prepare {}: {e}", home.display());
    let Runner::AsPostgres { uid, gid } = runner else {
        return fs::create_dir_all(home).map_err(fail);
    };
    fs::create_dir_all(home).map_err(fail)?;
    if fs::metadata(home).map_err(fail)?.uid() != uid {
        std::os::unix::fs::chown(home, Some(uid), Some(gid)).map_err(fail)?;
        fs::set_permissions(home, fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// A lock file to `flock`: private, never followed through a symlink.
fn open_lock_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("could not open {}: {e}", path.display()))
}

/// Serializes `ensure_started` across processes sharing `dir`; released when
/// the returned file is dropped.
async fn lock_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let file = open_lock_file(&path)?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::WouldBlock {
            return Err(format!("could not lock {}: {err}", path.display()));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "another process has been starting the cluster in {} for over a minute",
                dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Written to a fresh file and renamed into place: a crash leaves the old
/// content or the new, and a symlink planted at `path` is replaced, not followed.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or("state");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// A 0600 file readable by the server's user, removed when dropped (also
/// when the future creating the cluster is cancelled).
struct TempFile(PathBuf);

impl TempFile {
    fn create(path: &Path, contents: &[u8], runner: Runner) -> io::Result<TempFile> {
        let _ = fs::remove_file(path);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        let guard = TempFile(path.to_path_buf());
        if let Runner::AsPostgres { uid, gid } = runner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(contents)?;
        Ok(guard)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Runs a command to completion; only failing to spawn it is an error here.
async fn run(cmd: Command) -> Result<(ExitStatus, String), String> {
    let mut cmd = tokio::process::Command::from(cmd);
    let output = cmd.output().await.map_err(|e| spawn_error(cmd.as_std(), &e))?;
    Ok((output.status, combined(&output.stdout, &output.stderr)))
}

fn spawn_error(cmd: &Command, e: &io::Error) -> String {
    let program = cmd.get_program().to_string_lossy();
    if program == "runuser" && e.kind() == io::ErrorKind::NotFound {
        "running as root needs `runuser` (util-linux) to start PostgreSQL as the postgres user".to_string()
    } else {
        format!("could not run {program}: {e}")
    }
}

fn combined(stdout: &[u8], stderr: &[u8]) -> String {
    let (out, err) = (String::from_utf8_lossy(stdout), String::from_utf8_lossy(stderr));
    match (out.trim(), err.trim()) {
        (o, "") => o.to_string(),
        ("", e) => e.to_string(),
        (o, e) => format!("{e}\n{o}"),
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_to_string(&mut text));
    }
    text
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `(pid, port)` from postmaster.pid: line 1 is the pid, line 4 the port.
fn read_pid_file(data: &Path) -> Option<(i32, u16)> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let port = lines.nth(2)?.trim().parse().ok()?;
    Some((pid, port))
}

/// Unlike pg_ctl's own check, a zombie counts as dead: a SIGKILLed
/// postmaster lingers as one until its parent (init) reaps it.
fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: i32) -> bool {
    // The state follows the parenthesized command name, which may itself hold spaces or ')'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next()))
        .is_some_and(|state| matches!(state, 'Z' | 'X'))
}

#[cfg(not(target_os = "linux"))]
fn is_zombie(_pid: i32) -> bool {
    false
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is its size;
    // the reentrant variant keeps parallel callers from sharing a static buffer.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut result) };
    (rc == 0 && !result.is_null()).then_some((entry.pw_uid, entry.pw_gid))
}

fn find_binaries_in(path: Option<&OsStr>, versioned_root: &Path) -> Option<PathBuf> {
    let has_both = |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"));
    for dir in path.map(std::env::split_paths).into_iter().flatten() {
        if !has_both(&dir) {
            continue;
        }
        // Distributions symlink the tools into PATH; the real directory is
        // where pg_ctl is sure to find the matching `postgres` binary.
        let real = dir.join("initdb").canonicalize().ok().and_then(|p| p.parent().map(Path::to_path_buf));
        return Some(real.filter(|r| has_both(r)).unwrap_or(dir));
    }
    fs::read_dir(versioned_root)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> =
                entry.file_name().to_str()?.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin(dir: &Path, tools: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for tool in tools {
            let path = dir.join(tool);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn binaries_come_from_the_first_path_entry_holding_both_tools() {
        let tmp = tempfile::tempdir().unwrap();
        let (only_pg_ctl, both) = (tmp.path().join("a"), tmp.path().join("b"));
        fake_bin(&only_pg_ctl, &["pg_ctl"]);
        fake_bin(&both, &["initdb", "pg_ctl"]);
        let path = std::env::join_paths([&only_pg_ctl, &both]).unwrap();
        assert_eq!(find_binaries_in(Some(&path), &tmp.path().join("none")), Some(both));
    }

    #[test]
    fn binaries_fall_back_to_the_newest_versioned_dir() {
        let tmp = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16"] {
            fake_bin(&tmp.path().join(version).join("bin"), &["initdb", "pg_ctl"]);
        }
        // A newer version without initdb (client tools only) does not count.
        fake_bin(&tmp.path().join("17").join("bin"), &["pg_ctl"]);
        let empty = std::env::join_paths([tmp.path().join("nothing")]).unwrap();
        assert_eq!(find_binaries_in(Some(&empty), tmp.path()), Some(tmp.path().join("16").join("bin")));
        assert_eq!(find_binaries_in(None, &tmp.path().join("nothing")), None);
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        assert_eq!(find_binaries_in(None, Path::new("/nonexistent")), None);
        assert!(MISSING_BINARIES.contains("apt-get install postgresql"));
        assert!(MISSING_BINARIES.contains("--postgres-url"));
    }

    #[test]
    fn relocated_home_is_stable_and_short() {
        let relocation = Relocation::system();
        let a = relocation.home_for(Path::new("/root/.capydb"));
        assert_eq!(a, relocation.home_for(Path::new("/root/.capydb")));
        assert_ne!(a, relocation.home_for(Path::new("/root/other")));
        assert_eq!(a.file_name().unwrap().len(), 16);
        assert!(a.starts_with(RELOCATION_ROOT));
        assert!(relocation.is_home(&a));
        for other in [
            "/var/lib/capydb/clusters",
            "/var/lib/capydb/clusters/.lock",
            "/etc",
            "/var/lib/capydb/clusters/../../../../etc",
            "/var/lib/capydb/clusters/0123456789abcdeX",
        ] {
            assert!(!relocation.is_home(Path::new(other)), "{other} taken for a relocated home");
        }
    }

    /// A temp relocation root, and data dirs next to it.
    struct Homes {
        tmp: tempfile::TempDir,
        relocation: Relocation,
    }

    impl Homes {
        fn new() -> Homes {
            let tmp = tempfile::tempdir().unwrap();
            let relocation = Relocation { root: tmp.path().join("clusters") };
            fs::create_dir(&relocation.root).unwrap();
            Homes { tmp, relocation }
        }

        /// A relocated home made for the data dir `name`, its owner file
        /// naming it, and the data dir itself when `state` says what to put in it.
        fn home(&self, name: &str, state: Option<&str>) -> (PathBuf, PathBuf) {
            let dir = self.tmp.path().join(name);
            let home = self.relocation.home_for(&dir);
            fs::create_dir_all(home.join("data")).unwrap();
            set_owner(&home, &dir).unwrap();
            match state {
                Some("claims") => {
                    fs::create_dir(&dir).unwrap();
                    write_state(&dir, &ClusterState { port: 5432, home: home.clone() }).unwrap();
                }
                Some(file_and_text) => {
                    fs::create_dir(&dir).unwrap();
                    let (file, text) = file_and_text.split_once('=').unwrap();
                    fs::write(dir.join(file), text).unwrap();
                }
                None => {}
            }
            (dir, home)
        }
    }

    #[test]
    fn homes_whose_data_dir_no_longer_claims_them_are_stopped_and_swept() {
        let h = Homes::new();
        let (_, gone) = h.home("gone", None);
        let (_, emptied) = h.home("emptied", Some("unrelated=x"));
        let (live_dir, live) = h.home("live", Some("claims"));
        let (_, sealed_only) = h.home("sealed-only", Some("admin.sealed=abc"));
        let (_, unreadable) = h.home("unreadable", Some("cluster.json={not json"));
        let (_, elsewhere) = h.home("elsewhere", None);
        fs::create_dir(h.tmp.path().join("elsewhere")).unwrap();
        write_state(&h.tmp.path().join("elsewhere"), &ClusterState { port: 1, home: live.clone() }).unwrap();
        let unmarked = h.relocation.home_for(Path::new("/from/an/earlier/version"));
        fs::create_dir_all(unmarked.join("data")).unwrap();
        let not_a_home = h.relocation.root.join("notes");
        fs::create_dir(&not_a_home).unwrap();

        let stopped = std::sync::Mutex::new(Vec::new());
        let mut removed = h.relocation.sweep(&|home| {
            stopped.lock().unwrap().push(home.to_path_buf());
            Ok(())
        });
        removed.sort();
        let mut expected = vec![gone, emptied, elsewhere];
        expected.sort();
        assert_eq!(removed, expected, "the homes of deleted, emptied and other-claiming data dirs");
        let mut stopped = stopped.into_inner().unwrap();
        stopped.sort();
        assert_eq!(stopped, expected, "each removed home's server is stopped first");
        for kept in [&live, &sealed_only, &unreadable, &unmarked, &not_a_home] {
            assert!(kept.exists(), "{} was swept", kept.display());
        }
        assert_eq!(read_owner(&live), Some(live_dir));
    }

    #[test]
    fn a_home_whose_server_does_not_stop_is_kept() {
        let h = Homes::new();
        let (_, gone) = h.home("gone", None);
        let removed = h.relocation.sweep(&|_| Err("pg_ctl stop failed".into()));
        assert!(removed.is_empty());
        assert!(gone.join("data").exists(), "a home was deleted under a running server");
    }

    #[test]
    fn a_moved_data_dir_keeps_its_cluster() {
        let h = Homes::new();
        let (old_dir, home) = h.home("old", None);
        let new_dir = h.tmp.path().join("new");
        fs::create_dir(&new_dir).unwrap();
        let chosen = choose_home(&new_dir, Some(&home), &h.relocation, Path::new("/nonexistent"), Runner::Direct);
        assert_eq!(chosen, Ok(home.clone()), "moved from {}", old_dir.display());
    }

    #[test]
    fn a_copied_data_dir_does_not_share_its_origins_cluster() {
        let h = Homes::new();
        let (origin, home) = h.home("origin", Some("claims"));
        let copy = h.tmp.path().join("copy");
        fs::create_dir(&copy).unwrap();
        let err = choose_home(&copy, Some(&home), &h.relocation, Path::new("/nonexistent"), Runner::Direct)
            .expect_err("two data dirs would share one server");
        assert!(err.contains(&origin.display().to_string()) && err.contains("copied"), "{err}");
        assert!(home.join("data").exists());
    }

    #[test]
    fn a_cluster_left_by_a_deleted_data_dir_at_the_same_path_is_replaced() {
        let h = Homes::new();
        let dir = h.tmp.path().join("again");
        fs::create_dir(&dir).unwrap();
        // An earlier version's home: no owner file, a cluster, no password for it.
        let home = h.relocation.home_for(&dir);
        fs::create_dir_all(home.join("data")).unwrap();
        fs::write(home.join("data").join("PG_VERSION"), "15\n").unwrap();
        let chosen = choose_home(&dir, None, &h.relocation, Path::new("/nonexistent"), Runner::Direct);
        assert_eq!(chosen, Ok(home.clone()));
        assert!(!home.join("data").exists(), "the unusable cluster was kept");
    }

    #[test]
    fn a_cluster_with_its_sealed_password_is_reused_without_a_state_file() {
        let h = Homes::new();
        let (dir, home) = h.home("lost-state", Some("admin.sealed=abc"));
        fs::write(home.join("data").join("PG_VERSION"), "15\n").unwrap();
        let chosen = choose_home(&dir, None, &h.relocation, Path::new("/nonexistent"), Runner::Direct);
        assert_eq!(chosen, Ok(home.clone()));
        assert!(home.join("data").join("PG_VERSION").exists());
    }

    #[test]
    fn owner_file_round_trips_and_is_private() {
        let h = Homes::new();
        let (dir, home) = h.home("owned", None);
        assert_eq!(read_owner(&home), Some(dir));
        assert_eq!(fs::metadata(home.join(OWNER_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_owner(h.tmp.path()), None);
    }

    #[test]
    fn pid_file_gives_pid_and_port() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("postmaster.pid"), "8223\n/data\n1795702018\n55432\n\n127.0.0.1\n").unwrap();
        assert_eq!(read_pid_file(tmp.path()), Some((8223, 55432)));
    }

    #[test]
    fn private_files_are_0600_and_replace_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, "keep").unwrap();
        let path = tmp.path().join("cluster.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_private(&path, b"{}").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}");
        assert_eq!(fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn paths_pg_ctl_would_mangle_are_refused() {
        assert!(check_shell_safe(Path::new("/home/me/.capydb/postgres")).is_ok());
        for bad in ["/tmp/a\"b", "/tmp/$HOME", "/tmp/`id`", "/tmp/a\\b", "/tmp/a\nb"] {
            assert!(check_shell_safe(Path::new(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
