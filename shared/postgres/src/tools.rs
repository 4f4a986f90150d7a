//! Running `pg_dump` / `pg_restore` as child processes, shared by
//! `clone_database` and the backup operations: finding the tools, a clean
//! environment (no inherited PG* variables, the password only in the child's
//! `PGPASSWORD`), children killed when the caller's future is dropped,
//! private work dirs, and errors that say why in a user's words while the
//! end of stderr goes to the log.
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use capydb_domain::ports::ProviderResult;
use tokio_postgres::Client;

use crate::cluster::{is_executable, LocalCluster};
use crate::error::{failure, failure_as, from_pg, Cause};
use crate::provider::PgProvider;
use crate::sql::quote_ident;

/// Debian/Ubuntu put each major version's client tools here.
const VERSIONED_BIN_ROOT: &str = "/usr/lib/postgresql";
/// pg_dump gives up instead of queueing behind a client's ACCESS EXCLUSIVE
/// lock for longer than this (same budget as the admin session's DDL).
pub(crate) const DUMP_LOCK_WAIT: &str = "30s";
/// How much of a failed tool's stderr is logged.
const STDERR_TAIL_LINES: usize = 8;

impl PgProvider {
    /// The directory holding pg_dump and pg_restore, or a `Permanent` error
    /// saying what to install.
    pub(crate) fn dump_tools(&self, what: &str) -> ProviderResult<PathBuf> {
        find_dump_tools(&self.pg_version).ok_or_else(|| {
            let detail = format!(
                "pg_dump not found (looked in {VERSIONED_BIN_ROOT}/{}/bin, next to initdb and on PATH); \
                 install the PostgreSQL client tools",
                self.pg_version
            );
            failure(Cause::Internal, what, &detail)
        })
    }

    /// A pg_dump/pg_restore invocation reaching our server as the admin. The
    /// password travels in the child's environment, never in argv (which
    /// `ps` shows to every user).
    pub(crate) fn admin_tool(&self, bin: &Path, name: &str, app: &str) -> tokio::process::Command {
        let mut cmd = tool_command(bin, name);
        if let Some(password) = self.admin.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref());
        }
        if let Some(ip) = self.hostaddr {
            cmd.env("PGHOSTADDR", ip.to_string());
        }
        // Over TLS, the certificate verified as the provider's own sessions do.
        match &self.tls_roots {
            Some(roots) => cmd.env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", roots),
            None => cmd.env("PGSSLMODE", "disable"),
        };
        cmd.env("PGCONNECT_TIMEOUT", self.connect_timeout.as_secs().max(1).to_string())
            .env("PGAPPNAME", app)
            .args(["--host", &self.host, "--port", &self.port.to_string(), "--username", &self.admin_user])
            .arg("--no-password");
        cmd
    }
}

/// `bin/name` with none of our own PG* variables (PGDATABASE, PGOPTIONS,
/// PGSERVICE...), which must not change what the tool connects to, English
/// messages (which `run_tool` quotes and classifies), no stdin/stdout, and
/// killed when dropped: a cancelled operation must not leave a dump running.
pub(crate) fn tool_command(bin: &Path, name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin.join(name));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_MESSAGES", "C")
        .env_remove("LC_ALL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // And killed when we die, SIGKILL included: a dump orphaned by a killed
    // capydb-local would go on writing the file its restarted job rewrites.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// One dump/restore worker per CPU, at least two.
pub(crate) fn jobs() -> usize {
    jobs_for(std::thread::available_parallelism().ok().map(|n| n.get()))
}

/// `jobs()` for a machine with this many CPUs (`None`: unknown).
fn jobs_for(cpus: Option<usize>) -> usize {
    cpus.map_or(2, |n| n).max(2)
}

/// The directory holding pg_dump and pg_restore, preferring the server's
/// major version: pg_dump refuses a server newer than itself.
fn find_dump_tools(pg_version: &str) -> Option<PathBuf> {
    let has_both = |dir: &Path| is_executable(&dir.join("pg_dump")) && is_executable(&dir.join("pg_restore"));
    let versioned = Path::new(VERSIONED_BIN_ROOT).join(pg_version).join("bin");
    let path = std::env::var_os("PATH");
    std::iter::once(versioned)
        .chain(LocalCluster::find_binaries().ok())
        .chain(path.iter().flat_map(std::env::split_paths))
        .find(|dir| has_both(dir))
}

/// How a tool that ran ended badly.
pub(crate) struct ToolFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

impl ToolFailure {
    /// The last non-empty lines of stderr.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
    }
}

/// Runs a tool to completion: `Ok(Err(_))` when it ran and failed, `Err`
/// when it could not be started.
pub(crate) async fn run_tool_raw(
    mut cmd: tokio::process::Command,
    name: &str,
    what: &str,
) -> ProviderResult<Result<(), ToolFailure>> {
    let output = cmd.output().await.map_err(|e| {
        let detail = format!("{name} not found or not runnable ({e}); install the PostgreSQL client tools");
        failure(Cause::Internal, what, &detail)
    })?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(ToolFailure { status: output.status, stderr: String::from_utf8_lossy(&output.stderr).into_owned() }))
}

/// Runs a tool against our own server. A failure's message says why in a
/// user's words; the end of stderr, which may quote the server's address, a
/// statement or a path (never the password: it is only in the
/// environment), goes to the log.
pub(crate) async fn run_tool(cmd: tokio::process::Command, name: &str, what: &str) -> ProviderResult<()> {
    let failure = match run_tool_raw(cmd, name, what).await? {
        Ok(()) => return Ok(()),
        Err(failure) => failure,
    };
    let detail = format!("{name} failed ({}): {}", failure.status, failure.tail());
    // A lock, a restart, a full connection table go away by themselves;
    // everything else is the request itself (a missing role, an object the
    // owner may not create, a full disk...).
    Err(self::failure(Cause::of_tool_output(name, &failure.stderr), what, &detail))
}

/// A 0700 directory for one operation's dump, removed with its contents when
/// dropped, also when the operation fails or its future is cancelled.
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    pub fn create(parent: &Path, label: &str) -> std::io::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let suffix: u32 = rand::random();
        let path = parent.join(format!("capydb-{label}-{suffix:08x}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(WorkDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove a work dir");
        }
    }
}

/// Takes the session-level advisory lock that keeps two operations that
/// (re)create `target` (clone, restore, import, replace) from interleaving.
/// Released when `session` is dropped, whatever the outcome.
pub(crate) async fn lock_target(session: &Client, target: &str, what: &str) -> ProviderResult<()> {
    let locked: bool = session
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&format!("capydb load {target}")])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| from_pg(what, &e))?;
    if locked {
        Ok(())
    } else {
        let detail = format!("another operation on database {target} is running");
        Err(failure_as(true, Cause::Concurrent, what, &detail))
    }
}

/// `DROP DATABASE IF EXISTS ... WITH (FORCE)`, which ends its sessions first.
pub(crate) async fn drop_database(session: &Client, database: &str, what: &str) -> ProviderResult<()> {
    session
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database)))
        .await
        .map_err(|e| from_pg(&format!("{what}: drop {database}"), &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capydb_domain::ports::ProviderError;

    #[test]
    fn work_dirs_are_private_and_removed_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = WorkDir::create(tmp.path(), "clone-prj_x").unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("file"), "x").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }

    /// One worker per CPU, never fewer than two (also when the CPU count is
    /// unknown); `jobs()` asks this machine. The CPU counts are given, so
    /// the rule is checked whatever machine runs the test.
    #[test]
    fn one_job_per_cpu_and_at_least_two() {
        assert_eq!(jobs_for(None), 2);
        assert_eq!(jobs_for(Some(1)), 2);
        assert_eq!(jobs_for(Some(2)), 2);
        assert_eq!(jobs_for(Some(3)), 3);
        assert_eq!(jobs_for(Some(64)), 64);
        let cpus = std::thread::available_parallelism().ok().map(|n| n.get());
        assert_eq!(jobs(), jobs_for(cpus));
    }

    /// What the probe saw in a failed backup's job: pg_dump's words, with the
    /// cluster's address and port and a statement. They stay out of the error.
    #[tokio::test]
    async fn failed_tools_answer_a_cause_and_never_their_output() {
        let mut cmd = tokio::process::Command::new("sh");
        let script = r#"echo 'pg_dump: error: query failed: ERROR:  syntax error at or near "secret_table"' >&2
            echo 'pg_dump: detail: Query was: SELECT * FROM secret_table' >&2
            echo 'pg_dump: hint: the server at 10.9.8.7:6543 said so' >&2
            exit 1"#;
        cmd.args(["-c", script]).stderr(Stdio::piped());
        match run_tool(cmd, "pg_dump", "dump database prj_x").await {
            Err(ProviderError::Permanent(m)) => {
                assert_eq!(m, Cause::DumpFailed.message());
                for leak in ["10.9.8.7", "6543", "SELECT", "secret_table", "pg_dump", "prj_x", "syntax"] {
                    assert!(!m.contains(leak), "the error quotes {leak:?}: {m}");
                }
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
        let mut refused = tokio::process::Command::new("sh");
        refused
            .args([
                "-c",
                "echo 'connection to server at \"10.0.0.5\", port 5432 failed: Connection refused' >&2; exit 1",
            ])
            .stderr(Stdio::piped());
        assert_eq!(
            run_tool(refused, "pg_dump", "x").await,
            Err(ProviderError::Retryable(Cause::Unreachable.message().into()))
        );
        let missing = tokio::process::Command::new("/nonexistent/pg_dump");
        assert_eq!(
            run_tool(missing, "pg_dump", "x").await,
            Err(ProviderError::Permanent(Cause::Internal.message().into()))
        );
    }

    #[test]
    fn the_log_keeps_the_end_of_stderr() {
        use std::os::unix::process::ExitStatusExt;
        let stderr = (1..=20).map(|i| format!("line{i}\n")).collect::<String>();
        let failure = ToolFailure { status: ExitStatus::from_raw(256), stderr };
        let tail = failure.tail();
        assert!(tail.contains("line20") && tail.contains("line13") && !tail.contains("line12"), "{tail}");
    }

    #[test]
    fn tool_commands_drop_inherited_pg_variables() {
        std::env::set_var("PGDATABASE_CAPYDB_TEST", "x");
        let cmd = tool_command(Path::new("/bin"), "true");
        let removed: Vec<_> = cmd.as_std().get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
        assert!(removed.iter().any(|k| *k == "PGDATABASE_CAPYDB_TEST"), "{removed:?}");
        std::env::remove_var("PGDATABASE_CAPYDB_TEST");
    }
}
