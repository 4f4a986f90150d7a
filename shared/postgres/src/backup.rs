//! Backups, restores, imports and the swap that puts a restored copy in place
//! of a live database:
//!
//! - `dump_database`: `pg_dump -Fc` as the admin into a private file next to
//!   the destination, renamed into place only once complete.
//! - `restore_database`: a fresh database secured like `ensure_database`,
//!   filled by `pg_restore -j N --role=<owner>` so every object is the
//!   owner's; dropped again on any failure.
//! - `import_database`: `pg_dump -Fc` of any reachable server the egress
//!   policy allows, connected to the addresses it checked (the host is
//!   resolved once, here), the URL's password only in the child's
//!   `PGPASSWORD`, then `restore_database`.
//! - `replace_database`: both renames in one transaction, then the old data
//!   dropped; every state an interrupted call can leave is finished by the next.
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capydb_domain::ports::{DatabaseProvider, ProviderError, ProviderResult};
use capydb_egress::{EgressError, EgressPolicy};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use url::Url;

use crate::error::{failure, failure_as, from_pg, io_failure, mask_credentials, Cause};
use crate::provider::{advisory_lock, open_admin, PgProvider};
use crate::sql::{quote_ident, quote_literal, validate_name};
use crate::tools::{
    drop_database, jobs, lock_target, run_tool, run_tool_raw, tool_command, ToolFailure, WorkDir, DUMP_LOCK_WAIT,
};

/// What every malformed `source_url` is told; it never quotes the URL, which
/// may hold a password.
const SOURCE_URL_FORMAT: &str = "source_url must be postgres://user:password@host:port/database";
/// libpq's `sslmode` values.
const SSL_MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
/// libpq's `channel_binding` values.
const CHANNEL_BINDINGS: [&str; 3] = ["disable", "prefer", "require"];
/// At most this many of a source's addresses are tried, each for
/// `SOURCE_CONNECT_TIMEOUT`.
const SOURCE_MAX_ADDRESSES: usize = 4;
/// Seconds pg_dump waits for an import source to answer, per address.
const SOURCE_CONNECT_TIMEOUT: &str = "10";
/// Suffix of the name the live database is parked under during a swap.
const PREV_SUFFIX: &str = "_prev";
/// A client that reconnects to `live` between our terminate and the rename
/// makes the rename fail (after the server's own 5 s wait); we try again.
const SWAP_ATTEMPTS: u32 = 5;

impl PgProvider {
    /// Writes a custom-format (`pg_dump -Fc`) dump of `database` to `dest`,
    /// created or replaced. The dump goes to a private (0600) temporary file
    /// next to `dest` and is renamed into place only when complete, so a
    /// failed or cancelled dump never leaves a partial file at `dest`.
    pub async fn dump_database(&self, database: &str, dest: &Path) -> ProviderResult<()> {
        self.check_tenant_database(database)?;
        let what = format!("dump database {database}");
        if !DatabaseProvider::database_exists(self, database).await? {
            return Err(ProviderError::Permanent(format!("{what}: database {database} does not exist")));
        }
        let bin = self.dump_tools(&what)?;
        let partial = PartialFile::create_next_to(dest)
            .map_err(|e| io_failure(&format!("{what}: create a file next to {}", dest.display()), &e))?;
        let started = Instant::now();
        let mut pg_dump = self.admin_tool(&bin, "pg_dump", "capydb-backup");
        // Owners and grants stay in the dump (it is a faithful backup);
        // `restore_database` ignores them.
        pg_dump
            .args(["--format=custom", &format!("--lock-wait-timeout={DUMP_LOCK_WAIT}"), "--file"])
            .arg(&partial.path)
            .arg(database);
        run_tool(pg_dump, "pg_dump", &what).await?;
        let bytes = partial
            .persist(dest)
            .map_err(|e| io_failure(&format!("{what}: move the dump to {}", dest.display()), &e))?;
        tracing::info!(database, dest = %dest.display(), bytes, elapsed_ms = started.elapsed().as_millis() as u64, "database dumped");
        Ok(())
    }

    /// Drops `target` if it exists, creates it owned by `owner` and reachable
    /// only by it (like `ensure_database`), and restores `dump` into it as
    /// `owner`, so every restored object is `owner`'s. On any failure
    /// `target` is dropped again.
    pub async fn restore_database(&self, dump: &Path, target: &str, owner: &str) -> ProviderResult<()> {
        self.check_tenant_database(target)?;
        self.check_tenant_role(owner)?;
        let what = format!("restore database {target}");
        // A session of its own, like clone_database: a restore can take minutes.
        let session = open_admin(&self.admin, self.tls.as_ref()).await?;
        lock_target(&session, target, &what).await?;
        self.restore_locked(&session, dump, target, owner, &what).await
    }

    /// `restore_database` once the caller holds `target`'s lock on `session`.
    async fn restore_locked(
        &self,
        session: &Client,
        dump: &Path,
        target: &str,
        owner: &str,
        what: &str,
    ) -> ProviderResult<()> {
        let started = Instant::now();
        drop_database(session, target, what).await?;
        match self.load(dump, target, owner, what).await {
            Ok(()) => {
                tracing::info!(target, owner, elapsed_ms = started.elapsed().as_millis() as u64, "database restored");
                Ok(())
            }
            Err(e) => {
                // A half-restored database must not pass for a finished one.
                if let Err(cleanup) = drop_database(session, target, what).await {
                    tracing::warn!(target, error = %cleanup, "could not drop the unfinished restore");
                }
                Err(e)
            }
        }
    }

    async fn load(&self, dump: &Path, target: &str, owner: &str, what: &str) -> ProviderResult<()> {
        match self.role_is_superuser(owner).await? {
            None => return Err(ProviderError::Permanent(format!("{what}: role {owner} does not exist"))),
            Some(true) => return Err(ProviderError::Permanent(format!("{what}: role {owner} is a superuser"))),
            Some(false) => {}
        }
        let bin = self.dump_tools(what)?;
        // Never read as an option, whatever the file is called.
        let dump = if dump.is_absolute() { dump.to_path_buf() } else { Path::new(".").join(dump) };
        check_archive(&bin, &dump, what).await?;
        self.ensure_database_secured(target, owner).await?;
        let mut pg_restore = self.admin_tool(&bin, "pg_restore", "capydb-restore");
        pg_restore
            .args(["--jobs", &jobs().to_string(), "--no-owner", "--no-privileges", "--exit-on-error"])
            // Objects a tenant role cannot own or that point outside its
            // database; a dump of a foreign server may hold them.
            .args(["--no-tablespaces", "--no-publications", "--no-subscriptions", "--no-security-labels"])
            .arg(format!("--role={owner}"))
            .args(["--dbname", target])
            .arg(&dump);
        run_tool(pg_restore, "pg_restore", what).await
    }

    /// Which targets an import may connect to (default: public addresses only).
    pub fn set_egress_policy(&mut self, policy: EgressPolicy) {
        self.egress = policy;
    }

    /// Copies the database at `source_url` into `target` (as
    /// `restore_database` does): `pg_dump -Fc` into a private work dir, then
    /// a restore. The source's host is resolved once and every address
    /// checked against the egress policy; pg_dump connects to those addresses
    /// (`hostaddr`), the name kept for TLS. The URL's password reaches only
    /// the child's environment. An unreachable source, a refused login or a
    /// missing database is `Permanent`, all with the same message.
    pub async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()> {
        self.check_tenant_database(target)?;
        self.check_tenant_role(owner)?;
        let source = SourceUrl::parse(source_url)?;
        let what = format!("import the database {} into {target}", source.describe());
        let addresses = match self.egress.resolve(&source.host, source.port).await {
            Ok(addresses) => addresses,
            Err(EgressError::Refused(why)) => return Err(failure(Cause::SourceNotPublic, &what, &why)),
            Err(EgressError::Unresolved(why)) => return Err(failure(Cause::SourceUnreachable, &what, &why)),
        };
        let bin = self.dump_tools(&what)?;
        let work = WorkDir::create(&self.work_dir, &format!("import-{target}"))
            .map_err(|e| io_failure(&format!("{what}: create a work dir"), &e))?;
        let dump = work.path().join("source.dump");
        // Held through the dump and the restore: a second import into the
        // same target waits for none of it and fails at once (retryable).
        let session = open_admin(&self.admin, self.tls.as_ref()).await?;
        lock_target(&session, target, &what).await?;

        let started = Instant::now();
        let mut pg_dump = tool_command(&bin, "pg_dump");
        source.connect_args(&mut pg_dump, work.path(), &addresses);
        pg_dump.args(["--format=custom", &format!("--lock-wait-timeout={DUMP_LOCK_WAIT}"), "--file"]).arg(&dump);
        let outcome =
            run_tool_raw(pg_dump, "pg_dump", &what).await?.map_err(|failure| source.read_error(&failure, &what));
        if let Err(e) = outcome {
            // Like a failed restore, a failed import leaves no target.
            drop_database(&session, target, &what).await?;
            return Err(e);
        }
        let dumped = started.elapsed();
        self.restore_locked(&session, &dump, target, owner, &what).await?;
        tracing::info!(
            source = %source.describe(),
            target,
            dump_ms = dumped.as_millis() as u64,
            restore_ms = (started.elapsed() - dumped).as_millis() as u64,
            "database imported"
        );
        // The copy of the source's data goes with the work dir (also on the
        // early returns above, and when this future is dropped).
        drop(work);
        Ok(())
    }

    /// Puts `replacement` in the place of `live`, under `live`'s name: ends
    /// `live`'s sessions, renames `live` to `<live>_prev` and `replacement`
    /// to `live` in one transaction, then drops `<live>_prev`. The database
    /// keeps the owner and grants `replacement` was created with. A call
    /// after an interrupted one finishes it; after a completed one it is a no-op.
    pub async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()> {
        self.check_tenant_database(live)?;
        self.check_tenant_database(replacement)?;
        let prev = format!("{live}{PREV_SUFFIX}");
        validate_name("database", &prev).map_err(|_| {
            ProviderError::Permanent(format!(
                "database name {live} is too long to be replaced: {prev} would exceed 63 characters"
            ))
        })?;
        if replacement == live || replacement == prev {
            return Err(ProviderError::Permanent(format!("cannot replace database {live} with {replacement}")));
        }
        let what = format!("replace database {live} with {replacement}");
        let session = open_admin(&self.admin, self.tls.as_ref()).await?;
        // Held to the end of this call: no restore into `replacement`, and no
        // other swap of `live`, in the meantime.
        lock_target(&session, live, &what).await?;
        lock_target(&session, replacement, &what).await?;

        let existing = existing_databases(&session, &[live, replacement, &prev], &what).await?;
        let has = |name: &str| existing.iter().any(|e| e == name);
        match (has(live), has(replacement), has(&prev)) {
            (true, true, has_prev) => {
                if has_prev {
                    // Left by an earlier swap that stopped before its drop.
                    drop_database(&session, &prev, &what).await?;
                }
                rename(&session, &[(live, &prev), (replacement, live)], &what).await?;
                drop_database(&session, &prev, &what).await?;
                tracing::info!(live, replacement, "database replaced");
            }
            (false, true, true) => {
                // Stopped between the renames (not possible with both in one
                // transaction, but the state is unambiguous).
                rename(&session, &[(replacement, live)], &what).await?;
                drop_database(&session, &prev, &what).await?;
                tracing::info!(live, replacement, "interrupted database replacement finished");
            }
            (true, false, true) => {
                drop_database(&session, &prev, &what).await?;
                tracing::info!(live, replacement, "interrupted database replacement finished");
            }
            (true, false, false) => tracing::debug!(live, replacement, "database already replaced"),
            (false, true, false) => {
                return Err(ProviderError::Permanent(format!(
                    "{what}: database {live} does not exist (nor {prev} from an interrupted replacement)"
                )))
            }
            (false, false, _) => {
                return Err(ProviderError::Permanent(format!("{what}: neither {live} nor {replacement} exists")))
            }
        }
        Ok(())
    }
}

/// Which of `names` exist.
async fn existing_databases(session: &Client, names: &[&str], what: &str) -> ProviderResult<Vec<String>> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    session
        .query("SELECT datname::text FROM pg_database WHERE datname = ANY($1)", &[&names])
        .await
        .and_then(|rows| rows.iter().map(|row| row.try_get(0)).collect())
        .map_err(|e| from_pg(what, &e))
}

/// Ends the sessions of every database renamed and renames them all, in one
/// implicit transaction (all or nothing). RENAME refuses a database anyone is
/// connected to: it takes a lock that holds back new connections, then waits
/// up to 5 s for the terminated sessions to exit, and fails (55006) if a
/// client reconnected in between; we try again a few times.
async fn rename(session: &Client, renames: &[(&str, &str)], what: &str) -> ProviderResult<()> {
    let mut sql = String::new();
    let mut names = Vec::new();
    for (from, to) in renames {
        for name in [from, to] {
            // The lock of `ensure_database`: its GRANTs update the same rows.
            sql.push_str(&advisory_lock("database", name)?);
            sql.push_str("; ");
            names.push(quote_literal(name)?);
        }
    }
    sql.push_str(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname IN ({}) AND pid <> pg_backend_pid(); ",
        names.join(", ")
    ));
    for (from, to) in renames {
        sql.push_str(&format!("ALTER DATABASE {} RENAME TO {}; ", quote_ident(from), quote_ident(to)));
    }
    let mut attempt = 1;
    loop {
        match session.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < SWAP_ATTEMPTS => {
                tracing::info!(attempt, error = %e, "a client reconnected during the rename; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(from_pg(what, &e)),
        }
    }
}

/// `pg_restore --list`: reads the archive's table of contents without
/// connecting, so a missing, truncated-at-the-head or foreign file fails
/// early and clearly.
async fn check_archive(bin: &Path, dump: &Path, what: &str) -> ProviderResult<()> {
    if !dump.is_file() {
        let detail = format!("dump file {} does not exist", dump.display());
        return Err(failure(Cause::BadArchive, what, &detail));
    }
    let mut list = tool_command(bin, "pg_restore");
    list.arg("--list").arg(dump);
    match run_tool_raw(list, "pg_restore", what).await? {
        Ok(()) => Ok(()),
        Err(f) => {
            let detail = format!("{} is not a readable pg_dump custom-format archive: {}", dump.display(), f.tail());
            Err(failure(Cause::BadArchive, what, &detail))
        }
    }
}

/// A private file next to a destination, renamed onto it by `persist` and
/// removed when dropped otherwise (failure, cancellation).
struct PartialFile {
    path: PathBuf,
    persisted: bool,
}

impl PartialFile {
    fn create_next_to(dest: &Path) -> io::Result<PartialFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the destination names no file"))?;
        let mut partial = OsString::from(".");
        partial.push(name);
        partial.push(format!(".partial-{:08x}", rand::random::<u32>()));
        let path = dest.with_file_name(partial);
        // 0600 from the start: pg_dump truncates and fills this file, keeping its mode.
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        Ok(PartialFile { path, persisted: false })
    }

    /// Flushes the file to disk and renames it onto `dest`; answers its size.
    fn persist(mut self, dest: &Path) -> io::Result<u64> {
        let file = std::fs::File::open(&self.path)?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        std::fs::rename(&self.path, dest)?;
        self.persisted = true;
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // The rename itself survives a crash once the directory is synced.
        if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not sync the dump's directory");
        }
        Ok(bytes)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "could not remove a partial dump"),
        }
    }
}

/// An import source: `postgres://user:password@host:port/database[?sslmode=...]`,
/// where libpq would connect read by `capydb_egress::pg` (one host and port,
/// no parameter that could send it elsewhere).
#[derive(PartialEq)]
struct SourceUrl {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
    sslmode: String,
    channel_binding: Option<String>,
}

impl std::fmt::Debug for SourceUrl {
    // No password in any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("channel_binding", &self.channel_binding)
            .finish_non_exhaustive()
    }
}

impl SourceUrl {
    fn parse(source_url: &str) -> ProviderResult<SourceUrl> {
        let invalid = || ProviderError::Permanent(SOURCE_URL_FORMAT.to_string());
        let url = Url::parse(source_url).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid());
        }
        let target = capydb_egress::pg::target(&url).map_err(|why| match url.host_str() {
            Some(h) if !h.is_empty() => ProviderError::Permanent(format!("source_url: {why}")),
            _ => invalid(),
        })?;
        let user = decode(url.username()).ok_or_else(invalid)?;
        let password = url.password().map(|p| decode(p).ok_or_else(invalid)).transpose()?.filter(|p| !p.is_empty());
        let database = decode(url.path().trim_start_matches('/')).ok_or_else(invalid)?;
        if user.is_empty() || database.is_empty() {
            return Err(invalid());
        }
        let mut sslmode = "prefer".to_string();
        let mut channel_binding = None;
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(value.to_string())
            } else {
                Err(ProviderError::Permanent(format!("source_url: {key} must be one of {}", allowed.join(", "))))
            }
        };
        for (key, value) in url.query_pairs() {
            // The other parameters `pg::target` lets through (connect_timeout,
            // application_name) are ours to choose.
            match key.as_ref() {
                "sslmode" => sslmode = one_of("sslmode", &value, &SSL_MODES)?,
                "channel_binding" => channel_binding = Some(one_of("channel_binding", &value, &CHANNEL_BINDINGS)?),
                _ => {}
            }
        }
        Ok(SourceUrl { host: target.host, port: target.port, user, password, database, sslmode, channel_binding })
    }

    /// `database db at host:port`, for logs.
    fn describe(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{} at {host}:{}", self.database, self.port)
    }

    /// Connection arguments and environment for a pg_dump of the source, at
    /// `addresses` only (checked by the egress policy): the host name is
    /// repeated once per address with `hostaddr` listing them, so libpq tries
    /// each in turn as it would after its own lookup, makes no lookup of its
    /// own, and still checks certificates and sends SNI for the name.
    /// Nothing of this machine's libpq set-up is used for a server the user
    /// names: no password file (which could hold our own credentials), no
    /// client certificate, no service file.
    fn connect_args(&self, cmd: &mut tokio::process::Command, work: &Path, addresses: &[std::net::SocketAddr]) {
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
        if let Some(binding) = &self.channel_binding {
            cmd.env("PGCHANNELBINDING", binding);
        }
        cmd.env("PGSSLMODE", &self.sslmode)
            .env("PGCONNECT_TIMEOUT", SOURCE_CONNECT_TIMEOUT)
            .env("PGAPPNAME", "capydb-import")
            .env("PGPASSFILE", work.join("no-passfile"))
            .env("PGSERVICEFILE", work.join("no-servicefile"))
            .env("PGSSLCERT", work.join("no-cert"))
            .env("PGSSLKEY", work.join("no-key"))
            .arg("--no-password")
            // Everything in one connection string: pg_dump would read a bare
            // name containing `=` or starting with `postgres://` as one anyway.
            .arg(format!("--dbname={}", self.conninfo(addresses)));
    }

    /// `host=... hostaddr=... port=... user=... dbname=...`, every value quoted.
    fn conninfo(&self, addresses: &[std::net::SocketAddr]) -> String {
        let addresses = &addresses[..addresses.len().min(SOURCE_MAX_ADDRESSES)];
        let hosts = vec![self.host.as_str(); addresses.len()].join(",");
        let ips: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
        format!(
            "host={} hostaddr={} port={} user={} dbname={}",
            conninfo_quote(&hosts),
            conninfo_quote(&ips.join(",")),
            self.port,
            conninfo_quote(&self.user),
            conninfo_quote(&self.database)
        )
    }

    /// The error for a failed dump of the source: a cause a user can act on
    /// (one message for every failure to connect or log in, see
    /// `Cause::of_source_dump`); pg_dump's words, credentials masked, are
    /// only logged.
    fn read_error(&self, failure: &ToolFailure, what: &str) -> ProviderError {
        let cause = Cause::of_source_dump(&failure.stderr);
        let detail = format!("pg_dump failed ({}): {}", failure.status, failure.tail());
        let detail = mask_credentials(&detail, self.password.as_deref());
        // Only a lock held on the source goes away by itself; every failure
        // to connect is permanent, so they all read alike to the end.
        failure_as(cause == Cause::SourceLocked, cause, what, &detail)
    }
}

/// A libpq connection-string value: single-quoted, `\` and `'` escaped.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-decoded UTF-8 without NUL (which no argument or environment
/// variable can carry).
fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned()).filter(|s| !s.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_are_parsed_and_decoded() {
        let s = SourceUrl::parse(
            "postgresql://ad%40min:p%2Fw%3A%25@db.example.com:6543/my%20db?sslmode=require&channel_binding=require",
        )
        .unwrap();
        assert_eq!(
            s,
            SourceUrl {
                host: "db.example.com".into(),
                port: 6543,
                user: "ad@min".into(),
                password: Some("p/w:%".into()),
                database: "my db".into(),
                sslmode: "require".into(),
                channel_binding: Some("require".into()),
            }
        );
        assert_eq!(s.describe(), "my db at db.example.com:6543");
        let s = SourceUrl::parse("postgres://u@[::1]/d").unwrap();
        assert_eq!((s.port, s.password.as_deref(), s.sslmode.as_str()), (5432, None, "prefer"));
        assert_eq!(s.describe(), "d at [::1]:5432");
    }

    #[test]
    fn bad_source_urls_are_permanent_and_never_quote_the_password() {
        for url in [
            "mysql://u:hunter2@h/db",
            "http://u:hunter2@h/db",
            "postgres://u:hunter2@/db",
            "postgres://u:hunter2@h",
            "postgres://u:hunter2@h/",
            "postgres://:hunter2@h/db",
            "postgres://u:hunter2@%2Fvar%2Frun/db",
            "postgres://u:hunter2@a%2Cb/db",
            "postgres://u:hunter2@a,b/db",
            "postgres://u:hunter2@h:0/db",
            "postgres://u:hunter2@h/d%00b",
            "hunter2",
            "postgres://u:hunter2@h/db?sslmode=hunter2",
            "postgres://u:hunter2@h/db?channel_binding=hunter2",
            "postgres://u:hunter2@h/db?hostaddr=10.0.0.1",
            "postgres://u:hunter2@h/db?host=%2Ftmp",
            "postgres://u:hunter2@h/db?x=1",
        ] {
            match SourceUrl::parse(url) {
                Err(ProviderError::Permanent(m)) => {
                    assert!(!m.contains("hunter2"), "{m}");
                    assert!(m.starts_with("source_url"), "{m}");
                }
                other => panic!("{url}: expected a permanent error, got {other:?}"),
            }
        }
    }

    /// pg_dump connects to the checked addresses only, one try per address
    /// as libpq would make after its own lookup, and the name stays for TLS.
    #[test]
    fn the_source_is_reached_at_the_checked_addresses_only() {
        let s = SourceUrl::parse("postgres://u:Pa55word@db.example.com:6543/d?sslmode=verify-full").unwrap();
        let addrs: Vec<std::net::SocketAddr> =
            vec!["203.0.113.7:6543".parse().unwrap(), "[2001:db8::7]:6543".parse().unwrap()];
        assert_eq!(
            s.conninfo(&addrs),
            "host='db.example.com,db.example.com' hostaddr='203.0.113.7,2001:db8::7' port=6543 user='u' dbname='d'"
        );
        let many: Vec<std::net::SocketAddr> = (1..=9).map(|i| format!("203.0.113.{i}:6543").parse().unwrap()).collect();
        assert_eq!(s.conninfo(&many).matches("db.example.com").count(), SOURCE_MAX_ADDRESSES);
        let mut cmd = tokio::process::Command::new("pg_dump");
        s.connect_args(&mut cmd, Path::new("/w"), &addrs);
        let args: Vec<_> = cmd.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!args.iter().any(|a| a.contains("Pa55word")), "the password is on the command line: {args:?}");
        assert!(!args.iter().any(|a| a == "--host" || a == "--port"), "{args:?}");
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_quote("db"), "'db'");
        assert_eq!(conninfo_quote(r"a'b\c host=x"), r"'a\'b\\c host=x'");
    }

    #[test]
    fn partial_files_are_private_and_removed_unless_persisted() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("backup.dump");
        let partial = PartialFile::create_next_to(&dest).unwrap();
        assert_eq!(std::fs::metadata(&partial.path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(partial);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

        std::fs::write(&dest, "old").unwrap();
        let partial = PartialFile::create_next_to(&dest).unwrap();
        std::fs::write(&partial.path, "new").unwrap();
        assert_eq!(partial.persist(&dest).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    fn failed(stderr: &str) -> ToolFailure {
        use std::os::unix::process::ExitStatusExt;
        ToolFailure { status: std::process::ExitStatus::from_raw(256), stderr: stderr.into() }
    }

    /// A closed port, a port where something else listens, a wrong password:
    /// the same words, which name neither the source nor the reason.
    #[test]
    fn read_errors_say_the_same_for_every_failure_to_connect() {
        let s = SourceUrl::parse("postgres://u:p@h:9/db").unwrap();
        let closed = "pg_dump: error: connection to server at \"h\" (127.0.0.1), port 9 failed: Connection refused\n\
                      \tIs the server running on that host and accepting TCP/IP connections?\n";
        let other = "pg_dump: error: connection to server at \"h\" (127.0.0.1), port 9 failed: server closed the \
                     connection unexpectedly\n";
        let login = "pg_dump: error: connection to server at \"h\" (127.0.0.1), port 9 failed: FATAL:  password \
                     authentication failed for user \"u\"\n";
        let expected = ProviderError::Permanent(Cause::SourceUnreachable.message().into());
        for stderr in [closed, other, login] {
            let e = s.read_error(&failed(stderr), "import");
            assert_eq!(e, expected, "{stderr}");
        }
        let too_new = "pg_dump: error: aborting because of server version mismatch\n\
                       pg_dump: detail: server version: 17.2; pg_dump version: 15.10\n";
        assert_eq!(
            s.read_error(&failed(too_new), "import"),
            ProviderError::Permanent(Cause::SourceTooNew.message().into())
        );
    }
}
