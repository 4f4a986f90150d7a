//! `LocalCluster`: the private PostgreSQL cluster `capydb-local` runs from the
//! machine's own binaries when it is given no `--postgres-url`.
//!
//! Layout, for the data dir `dir` that `capydb-local` owns:
//!
//! ```text
//! dir/cluster.json      {"port": ..., "home": ...}: where the cluster lives and listens
//! dir/admin.sealed      the superuser password, sealed by the SecretBox (0600)
//! dir/cluster.lock      flock held while ensure_started runs
//! home/data/            the data directory (PGDATA)
//! home/postgres.log     the server log (pg_ctl -l)
//! ```
//!
//! `home` is `dir` itself, except as root when the `postgres` user cannot reach
//! `dir` (e.g. it is under `/root`, mode 700): then it is
//! `/var/lib/capydb/clusters/<first 16 hex of sha256(canonical dir)>`, a place
//! that persists across reboots, unlike `/tmp`.
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
        let home = choose_home(&dir, state.as_ref().map(|s| s.home.as_path()), runner).await?;
        check_shell_safe(&home)?;
        prepare_home(&home, runner)?;
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
            cluster.port = cluster.layout.start(state.as_ref().map(|s| s.port), &cluster.admin_password).await?;
            cluster.wait_ready(None).await?;
            tracing::info!(port = cluster.port, data_dir = %cluster.layout.data.display(), elapsed_ms = started.elapsed().as_millis() as u64, "PostgreSQL cluster started");
        }

        let new_state = ClusterState { port: cluster.port, home: cluster.layout.home.clone() };
        if state.as_ref() != Some(&new_state) {
            let json =
                serde_json::to_vec_pretty(&new_state).map_err(|e| format!("could not encode {STATE_FILE}: {e}"))?;
            write_private(&dir.join(STATE_FILE), &json).map_err(|e| format!("could not write {STATE_FILE}: {e}"))?;
        }
        Ok(cluster)
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
        let mut cmd = self.layout.pg_ctl(&["-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"]);
        let output = cmd.output().map_err(|e| spawn_error(&cmd, &e))?;
        if output.status.success() || !self.layout.data.join("postmaster.pid").exists() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl stop -m immediate failed ({}): {}",
                output.status,
                combined(&output.stdout, &output.stderr)
            ))
        }
    }

    /// Stops the server at once and deletes the cluster: data, log, state and
    /// sealed password. For tests and throwaway data dirs: a relocated cluster
    /// lives outside `dir` and would otherwise outlive it.
    pub fn destroy(&self) -> Result<(), String> {
        self.stop_immediate()?;
        let remove = |result: io::Result<()>, path: &Path| match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("could not remove {}: {e}", path.display())),
            _ => Ok(()),
        };
        if self.layout.home == self.dir {
            remove(fs::remove_dir_all(&self.layout.data), &self.layout.data)?;
            remove(fs::remove_file(&self.layout.log), &self.layout.log)?;
        } else {
            remove(fs::remove_dir_all(&self.layout.home), &self.layout.home)?;
        }
        for name in [STATE_FILE, SEALED_PASSWORD_FILE] {
            let path = self.dir.join(name);
            remove(fs::remove_file(&path), &path)?;
        }
        Ok(())
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
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
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

fn is_relocated_home(home: &Path) -> bool {
    home.parent() == Some(Path::new(RELOCATION_ROOT))
        && home
            .file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.len() == 16 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn relocated_home(dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let digest = hex::encode(Sha256::digest(dir.as_os_str().as_bytes()));
    Path::new(RELOCATION_ROOT).join(&digest[..16])
}

/// As root, the cluster lives in `dir` when the postgres user can reach it,
/// else in the relocation root. A recorded home is kept (so a later chmod of
/// a parent, or a move of `dir`, does not orphan the cluster), but only if it
/// is `dir` or a relocated home: the state file is not trusted to point
/// anywhere else, since root creates and chowns the home.
async fn choose_home(dir: &Path, recorded: Option<&Path>, runner: Runner) -> Result<PathBuf, String> {
    if runner == Runner::Direct {
        return Ok(dir.to_path_buf());
    }
    match recorded {
        Some(home) if home == dir || is_relocated_home(home) => return Ok(home.to_path_buf()),
        Some(home) => tracing::warn!(home = %home.display(), "ignoring an unexpected cluster location in {STATE_FILE}"),
        None => {}
    }
    let relocated = relocated_home(dir);
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let mut probe = runner.command(Path::new("test"));
    probe.arg("-x").arg(parent);
    let (status, _) = run(probe).await?;
    if status.success() {
        Ok(dir.to_path_buf())
    } else {
        tracing::info!(dir = %dir.display(), home = %relocated.display(), "the postgres user cannot reach the data dir; the cluster lives elsewhere");
        Ok(relocated)
    }
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
    if home.starts_with(RELOCATION_ROOT) {
        // Explicit modes: the postgres user must traverse these whatever our umask.
        fs::DirBuilder::new().recursive(true).mode(0o755).create(RELOCATION_ROOT).map_err(fail)?;
        for dir in [Path::new(RELOCATION_ROOT), Path::new(RELOCATION_ROOT).parent().unwrap_or(Path::new("/"))] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(fail)?;
        }
    }
    fs::create_dir_all(home).map_err(fail)?;
    if fs::metadata(home).map_err(fail)?.uid() != uid {
        std::os::unix::fs::chown(home, Some(uid), Some(gid)).map_err(fail)?;
        fs::set_permissions(home, fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// Serializes `ensure_started` across processes sharing `dir`; released when
/// the returned file is dropped.
async fn lock_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("could not open {}: {e}", path.display()))?;
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
        let a = relocated_home(Path::new("/root/.capydb"));
        assert_eq!(a, relocated_home(Path::new("/root/.capydb")));
        assert_ne!(a, relocated_home(Path::new("/root/other")));
        assert_eq!(a.file_name().unwrap().len(), 16);
        assert!(is_relocated_home(&a));
        for other in [
            "/var/lib/capydb/clusters",
            "/etc",
            "/var/lib/capydb/clusters/../../../../etc",
            "/var/lib/capydb/clusters/0123456789abcdeX",
        ] {
            assert!(!is_relocated_home(Path::new(other)), "{other} taken for a relocated home");
        }
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
