//! `PgProvider`: the `DatabaseProvider` port on one PostgreSQL server, driven
//! through a superuser connection.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::model::ConnectionInfo;
use capydb_domain::ports::{CloneResult, DatabaseEndpoint, DatabaseProvider, ProviderError, ProviderResult};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::tls::PgTls;
use url::{Host, Url};

use crate::error::{connection_lost, failure_as, from_pg, Cause};
use crate::sql::{password_literal, quote_ident, quote_literal, validate_name, validate_password};

/// Budget for opening a connection (TCP, startup, SCRAM) and, in
/// `check_connection`, for the whole probe.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// DDL waiting on a lock gives up after this with 55P03 (retryable) instead of
/// holding a job worker indefinitely.
pub(crate) const LOCK_TIMEOUT: &str = "30s";
/// Backstop for a server that stops answering mid-statement.
const STATEMENT_BUDGET: Duration = Duration::from_secs(120);

/// Databases the provider must never create, alter or drop for a tenant.
const RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// Role attributes of every tenant role; `ensure_role` re-applies them when
/// the role exists so a drifted role converges back.
const ROLE_ATTRIBUTES: &str = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
/// What an admin that is not a superuser (RDS's and Aurora's master user, a
/// member of `rds_superuser`) may set on a role it created: PostgreSQL
/// refuses it even `NOSUPERUSER`, `NOREPLICATION` or `NOBYPASSRLS` (which
/// such a role cannot have anyway).
const ROLE_ATTRIBUTES_UNPRIVILEGED: &str = "LOGIN NOCREATEDB NOCREATEROLE";

/// Everything but RFC 3986 unreserved characters is percent-encoded in URI parts.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A `DatabaseProvider` on an existing PostgreSQL server (13 or later, for
/// `DROP DATABASE ... WITH (FORCE)`), reached with a superuser admin URL.
///
/// DDL runs on one admin connection, reopened when the server closed it.
/// Connections are plaintext (`NoTls`): the provider is meant for a server on
/// this machine or a trusted network.
pub struct PgProvider {
    region: String,
    pub(crate) pg_version: String,
    pub(crate) admin: Config,
    pub(crate) admin_user: String,
    admin_database: String,
    /// As the client should use it: no brackets around an IPv6 address.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The address `host` was resolved to, when the caller resolved it.
    pub(crate) hostaddr: Option<std::net::IpAddr>,
    /// Whether the admin role is a superuser. One that is not (RDS's master
    /// user) is made a member of each tenant role it creates, which
    /// `CREATE DATABASE ... OWNER`, `pg_restore --role` and dropping the
    /// role's database need.
    admin_is_superuser: bool,
    /// TLS, verifying the server's certificate, for a server that requires
    /// it (an Aurora cluster); plaintext otherwise.
    pub(crate) tls: Option<PgTls>,
    /// The TLS roots as a file, for pg_dump and pg_restore.
    pub(crate) tls_roots: Option<PathBuf>,
    /// How long a new connection may take: [`CONNECT_TIMEOUT`], or longer
    /// for a server that may be paused (an Aurora cluster resumes in ~15 s).
    pub(crate) connect_timeout: Duration,
    sslmode: &'static str,
    conn: Mutex<Option<Arc<Client>>>,
    /// Where `clone_database` writes its temporary dumps.
    pub(crate) work_dir: PathBuf,
    /// Whether a busy clone splits large tables into page ranges (see
    /// `clone_stream.rs`); otherwise each table is one frozen stream.
    pub(crate) page_range_streams: bool,
    /// Where an import may connect to.
    pub(crate) egress: capydb_egress::EgressPolicy,
}

impl std::fmt::Debug for PgProvider {
    // Hand-written so the admin password in `admin` can never be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProvider")
            .field("region", &self.region)
            .field("pg_version", &self.pg_version)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .finish_non_exhaustive()
    }
}

impl PgProvider {
    /// Parses `admin_url` (`postgres://user:password@host:port/database`),
    /// connects, and reads the server's version. Fails with `Permanent` for a
    /// malformed URL or rejected credentials, `Retryable` for an unreachable server.
    pub async fn connect(admin_url: &str, region: &str) -> ProviderResult<PgProvider> {
        PgProvider::connect_to(AdminTarget::parse(admin_url)?, None, None, CONNECT_TIMEOUT, region).await
    }

    /// As [`connect`](Self::connect), to the server `admin_url` names but at
    /// `address`, resolved beforehand (the host's name is kept for TLS and
    /// messages): every connection and tool this provider opens goes there.
    pub async fn connect_at(
        admin_url: &str,
        address: std::net::SocketAddr,
        region: &str,
    ) -> ProviderResult<PgProvider> {
        PgProvider::connect_to(AdminTarget::parse(admin_url)?, Some(address), None, CONNECT_TIMEOUT, region).await
    }

    /// As [`connect_at`](Self::connect_at), given the parts rather than a
    /// URL: `user` / `password` on the `postgres` database of the server
    /// named `host`, reached at `address`, over `tls` when given (every
    /// connection and tool then verifies the server's certificate for `host`).
    pub async fn connect_admin(
        host: &str,
        address: std::net::SocketAddr,
        user: &str,
        password: &str,
        tls: Option<PgTls>,
        connect_timeout: Duration,
        region: &str,
    ) -> ProviderResult<PgProvider> {
        let target = AdminTarget {
            host: host.to_string(),
            port: address.port(),
            user: user.to_string(),
            password: Some(password.to_string()),
            database: "postgres".to_string(),
        };
        PgProvider::connect_to(target, Some(address), tls, connect_timeout, region).await
    }

    async fn connect_to(
        mut target: AdminTarget,
        address: Option<std::net::SocketAddr>,
        tls: Option<PgTls>,
        connect_timeout: Duration,
        region: &str,
    ) -> ProviderResult<PgProvider> {
        if let Some(address) = address {
            target.port = address.port();
        }
        let mut admin = Config::new();
        admin
            .host(&target.host)
            .port(target.port)
            .user(&target.user)
            .dbname(&target.database)
            .application_name("capydb")
            .connect_timeout(connect_timeout)
            .keepalives_idle(Duration::from_secs(30))
            .ssl_mode(ssl_mode(tls.as_ref()));
        if let Some(password) = &target.password {
            admin.password(password.as_bytes());
        }
        if let Some(address) = address {
            admin.hostaddr(address.ip());
        }
        let client = open_admin(&admin, tls.as_ref()).await?;
        let version_num = client
            .query_one("SHOW server_version_num", &[])
            .await
            .and_then(|row| row.try_get::<_, String>(0))
            .map_err(|e| from_pg("read the server version", &e))?;
        let admin_is_superuser = client
            .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])
            .await
            .and_then(|row| row.try_get::<_, bool>(0))
            .map_err(|e| from_pg("read the admin role's attributes", &e))?;
        let pg_version = major_version(&version_num)
            .ok_or_else(|| ProviderError::Permanent(format!("unexpected server_version_num {version_num:?}")))?;
        tracing::info!(host = %target.host, port = target.port, pg_version = %pg_version, "connected to the PostgreSQL server");
        Ok(PgProvider {
            region: region.to_string(),
            pg_version,
            admin,
            sslmode: sslmode_for(&target.host),
            admin_user: target.user,
            admin_database: target.database,
            host: target.host,
            port: target.port,
            hostaddr: address.map(|a| a.ip()),
            connect_timeout,
            admin_is_superuser,
            tls_roots: match &tls {
                Some(tls) => Some(
                    roots_file(tls)
                        .map_err(|e| crate::error::io_failure("write the TLS roots for the PostgreSQL tools", &e))?,
                ),
                None => None,
            },
            tls,
            conn: Mutex::new(Some(Arc::new(client))),
            work_dir: std::env::temp_dir(),
            page_range_streams: crate::tools::jobs() > 2,
            // The safe default; capydb-local allows private sources unless told not to.
            egress: capydb_egress::EgressPolicy::DENY_PRIVATE,
        })
    }

    /// The open admin connection, or a new one when the server closed the last.
    async fn client(&self) -> ProviderResult<Arc<Client>> {
        // Held across the connect so concurrent callers reconnect once, not each.
        let mut slot = self.conn.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(open_admin(&self.admin, self.tls.as_ref()).await?);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    async fn forget(&self, client: &Arc<Client>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *slot = None;
        }
    }

    /// Runs `op` on the admin connection. When the connection turns out to be
    /// dead (the server restarted since the last call), `op` runs once more on
    /// a fresh one: every operation here is idempotent, so a repeat is harmless.
    async fn with_admin<T, F, Fut>(&self, what: &str, op: F) -> ProviderResult<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let mut retried = false;
        loop {
            let client = self.client().await?;
            match tokio::time::timeout(STATEMENT_BUDGET, op(Arc::clone(&client))).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !retried && (connection_lost(&e) || client.is_closed()) => {
                    tracing::debug!(operation = what, error = %e, "admin connection lost; reconnecting");
                    self.forget(&client).await;
                    retried = true;
                }
                Ok(Err(e)) => return Err(from_pg(what, &e)),
                Err(_) => {
                    // The connection is stuck mid-statement; the next call needs a new one.
                    self.forget(&client).await;
                    let detail = format!("no answer from the server within {} s", STATEMENT_BUDGET.as_secs());
                    return Err(failure_as(true, Cause::TimedOut, what, &detail));
                }
            }
        }
    }

    pub(crate) async fn execute(&self, what: &str, sql: &str) -> ProviderResult<()> {
        self.with_admin(what, |c| async move { c.batch_execute(sql).await }).await
    }

    /// `Some(is_superuser)` when the role exists.
    pub(crate) async fn role_is_superuser(&self, role: &str) -> ProviderResult<Option<bool>> {
        self.with_admin(&format!("look up role {role}"), |c| async move {
            match c.query_opt("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).await? {
                Some(row) => row.try_get::<_, bool>(0).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// Makes an admin that is not a superuser a member of `role` (a no-op
    /// when it is one already, and for a superuser): what lets it give the
    /// role a database, restore as it, and drop what it owns.
    pub(crate) async fn act_as(&self, role: &str) -> ProviderResult<()> {
        if self.admin_is_superuser {
            return Ok(());
        }
        let grant = format!("{}; GRANT {} TO CURRENT_USER", advisory_lock("role", role)?, quote_ident(role));
        self.execute(&format!("let the admin act as {role}"), &grant).await
    }

    /// Tenant roles are never the admin or any other superuser: ALTERing or
    /// dropping one would take the control plane's own access away.
    pub(crate) fn check_tenant_role(&self, role: &str) -> ProviderResult<()> {
        validate_name("role", role)?;
        if role == self.admin_user {
            return Err(ProviderError::Permanent(format!("role {role} is the provider's admin role")));
        }
        Ok(())
    }

    pub(crate) fn check_tenant_database(&self, database: &str) -> ProviderResult<()> {
        validate_name("database", database)?;
        if RESERVED_DATABASES.contains(&database) || database == self.admin_database {
            return Err(ProviderError::Permanent(format!("database {database} is reserved")));
        }
        Ok(())
    }
}

impl PgProvider {
    /// What clients of this server are told: its region and version, and
    /// how they connect.
    pub fn endpoint(&self) -> ClientEndpoint {
        ClientEndpoint {
            host: self.host.clone(),
            port: self.port,
            sslmode: self.sslmode,
            region: self.region.clone(),
            pg_version: self.pg_version.clone(),
        }
    }
}

#[async_trait]
impl DatabaseProvider for PgProvider {
    async fn ensure_role(&self, role: &str, password: &str) -> ProviderResult<()> {
        self.check_tenant_role(role)?;
        let literal = password_literal(password)?;
        let name = quote_ident(role);
        // Locked like `ensure_database`'s grants: two callers altering one role
        // at once would otherwise race on its catalog row.
        let lock = advisory_lock("role", role)?;
        let attributes = if self.admin_is_superuser { ROLE_ATTRIBUTES } else { ROLE_ATTRIBUTES_UNPRIVILEGED };
        let alter = format!("{lock}; ALTER ROLE {name} WITH {attributes} PASSWORD {literal}");
        let what = format!("ensure role {role}");
        match self.role_is_superuser(role).await? {
            Some(true) => {
                return Err(ProviderError::Permanent(format!(
                    "role {role} exists as a superuser; refusing to manage it"
                )))
            }
            Some(false) => {
                self.execute(&what, &alter).await?;
                tracing::info!(role, "role password set");
            }
            None => {
                let create = format!("{lock}; CREATE ROLE {name} WITH {ROLE_ATTRIBUTES} PASSWORD {literal}");
                let (create, alter) = (create.as_str(), alter.as_str());
                self.with_admin(&what, |c| async move {
                    match c.batch_execute(create).await {
                        // Another caller created it between our look-up and
                        // our CREATE: 42710 if it had committed, 23505 (the
                        // catalog's unique index) if it was still in flight.
                        Err(e) if is_duplicate(&e, &SqlState::DUPLICATE_OBJECT) => c.batch_execute(alter).await,
                        other => other,
                    }
                })
                .await?;
                tracing::info!(role, "role ensured");
            }
        }
        self.act_as(role).await
    }

    async fn ensure_database(&self, database: &str, owner: &str) -> ProviderResult<()> {
        self.check_tenant_database(database)?;
        self.check_tenant_role(owner)?;
        let (db, owner_name) = (quote_ident(database), quote_ident(owner));
        let create = format!("CREATE DATABASE {db} OWNER {owner_name}");
        // Owner re-applied so a retried job converges; CONNECT revoked from
        // PUBLIC so no other tenant's role can reach this database. The lock
        // (held to the end of the batch's implicit transaction) queues a
        // concurrent caller instead of letting both update the same catalog
        // row, which fails one of them with "tuple concurrently updated".
        let secure = format!(
            "{lock}; \
             ALTER DATABASE {db} OWNER TO {owner_name}; \
             REVOKE ALL ON DATABASE {db} FROM PUBLIC; \
             GRANT ALL ON DATABASE {db} TO {owner_name}",
            lock = advisory_lock("database", database)?
        );
        let what = format!("ensure database {database}");
        self.act_as(owner).await?;
        let exists = self.database_exists(database).await?;
        if !exists {
            // Not in one batch with `secure`: CREATE DATABASE cannot run inside
            // the implicit transaction of a multi-statement query.
            let create = create.as_str();
            self.with_admin(&what, |c| async move {
                match c.batch_execute(create).await {
                    Err(e) if is_duplicate(&e, &SqlState::DUPLICATE_DATABASE) => Ok(()),
                    other => other,
                }
            })
            .await?;
        }
        self.execute(&what, &secure).await?;
        tracing::info!(database, owner, created = !exists, "database ensured");
        Ok(())
    }

    async fn clone_database(&self, source: &str, source_owner: &str, target: &str, owner: &str) -> CloneResult {
        PgProvider::clone_database(self, source, source_owner, target, owner).await
    }

    async fn dump_database(&self, database: &str, dest: &Path) -> ProviderResult<()> {
        PgProvider::dump_database(self, database, dest).await
    }

    async fn restore_database(&self, dump: &Path, target: &str, owner: &str) -> ProviderResult<()> {
        PgProvider::restore_database(self, dump, target, owner).await
    }

    async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()> {
        PgProvider::import_database(self, source_url, target, owner).await
    }

    async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()> {
        PgProvider::replace_database(self, live, replacement).await
    }

    async fn check_connection(&self, database: &str, role: &str, password: &str) -> ProviderResult<()> {
        validate_name("database", database)?;
        validate_name("role", role)?;
        validate_password(password)?;
        let mut config = Config::new();
        config.host(&self.host);
        if let Some(ip) = self.hostaddr {
            config.hostaddr(ip);
        }
        config
            .port(self.port)
            .user(role)
            .password(password.as_bytes())
            .dbname(database)
            .application_name("capydb-check")
            .connect_timeout(self.connect_timeout)
            .ssl_mode(ssl_mode(self.tls.as_ref()));
        let what = format!("connect to {database} as {role}");
        let probe = async {
            // The connection ends by itself once `client` is dropped at the end of the probe.
            let client = match &self.tls {
                None => config.connect(NoTls).await.map(|(client, connection)| {
                    tokio::spawn(connection);
                    client
                })?,
                Some(tls) => config.connect(tls.clone()).await.map(|(client, connection)| {
                    tokio::spawn(connection);
                    client
                })?,
            };
            client.simple_query("SELECT 1").await.map(drop)
        };
        match tokio::time::timeout(self.connect_timeout, probe).await {
            Ok(result) => result.map_err(|e| from_pg(&what, &e)),
            Err(_) => {
                let detail = format!("timed out after {} s", CONNECT_TIMEOUT.as_secs());
                Err(failure_as(true, Cause::TimedOut, &what, &detail))
            }
        }
    }

    async fn drop_database(&self, database: &str) -> ProviderResult<()> {
        self.check_tenant_database(database)?;
        // FORCE ends the database's sessions first, which the port requires.
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
        self.execute(&format!("drop database {database}"), &statement).await?;
        tracing::info!(database, "database dropped");
        Ok(())
    }

    async fn drop_role(&self, role: &str) -> ProviderResult<()> {
        self.check_tenant_role(role)?;
        if self.role_is_superuser(role).await? == Some(true) {
            return Err(ProviderError::Permanent(format!("role {role} is a superuser; refusing to drop it")));
        }
        let statement = format!("DROP ROLE IF EXISTS {}", quote_ident(role));
        self.execute(&format!("drop role {role}"), &statement).await?;
        tracing::info!(role, "role dropped");
        Ok(())
    }

    async fn database_exists(&self, database: &str) -> ProviderResult<bool> {
        validate_name("database", database)?;
        self.with_admin(&format!("look up database {database}"), |c| async move {
            c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database]).await.map(|row| row.is_some())
        })
        .await
    }

    async fn role_exists(&self, role: &str) -> ProviderResult<bool> {
        validate_name("role", role)?;
        Ok(self.role_is_superuser(role).await?.is_some())
    }

    async fn ping(&self) -> ProviderResult<()> {
        let client = open_admin(&self.admin, self.tls.as_ref()).await?;
        client.simple_query("SELECT 1").await.map(drop).map_err(|e| from_pg("ping the server", &e))
    }
}

fn client_info(host: &str, port: u16, sslmode: &str, database: &str, role: &str, password: &str) -> ConnectionInfo {
    ConnectionInfo {
        role: "owner".to_string(),
        host: host.to_string(),
        port,
        database: database.to_string(),
        user: role.to_string(),
        password: password.to_string(),
        sslmode: sslmode.to_string(),
        uri: postgres_uri(role, password, host, port, database, Some(sslmode)),
    }
}

/// The `DatabaseEndpoint` of a PostgreSQL server: its region and version,
/// and where its clients connect. `PgProvider::endpoint` answers it for a
/// connected server; `of_admin_url` knows it without connecting (a Lambda
/// answers connection strings before, or without, ever opening an admin
/// connection).
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    host: String,
    port: u16,
    sslmode: &'static str,
    region: String,
    pg_version: String,
}

impl ClientEndpoint {
    /// Asks this server, without logging in, whether it takes connections.
    pub fn probe(&self) -> crate::WireProbe {
        crate::WireProbe::new(&self.host, self.port)
    }

    /// The endpoint of a deployment whose projects and previews each have a
    /// server of their own (an Aurora cluster): no shared host; each
    /// resource's server listens on `port`, TLS required (except on loopback).
    pub fn dedicated(region: &str, pg_version: &str, port: u16) -> ClientEndpoint {
        ClientEndpoint {
            host: String::new(),
            port,
            sslmode: "require",
            region: region.to_string(),
            pg_version: pg_version.to_string(),
        }
    }

    pub fn of_admin_url(admin_url: &str, region: &str, pg_version: &str) -> ProviderResult<ClientEndpoint> {
        let t = AdminTarget::parse(admin_url)?;
        Ok(ClientEndpoint {
            sslmode: sslmode_for(&t.host),
            host: t.host,
            port: t.port,
            region: region.to_string(),
            pg_version: pg_version.to_string(),
        })
    }
}

impl DatabaseEndpoint for ClientEndpoint {
    fn region(&self) -> String {
        self.region.clone()
    }

    fn pg_versions(&self) -> Vec<String> {
        vec![self.pg_version.clone()]
    }

    fn connection_info(&self, database: &str, role: &str, password: &str) -> ConnectionInfo {
        client_info(&self.host, self.port, self.sslmode, database, role, password)
    }

    fn connection_info_on(&self, host: &str, database: &str, role: &str, password: &str) -> ConnectionInfo {
        client_info(host, self.port, sslmode_for(host), database, role, password)
    }
}

/// A transaction-scoped advisory lock on one object name, for statements run
/// as one multi-statement batch (an implicit transaction).
pub(crate) fn advisory_lock(kind: &str, name: &str) -> ProviderResult<String> {
    Ok(format!("SELECT pg_advisory_xact_lock(hashtext({}))", quote_literal(&format!("capydb {kind} {name}"))?))
}

/// "Already exists", either as the statement's own check reports it or as the
/// catalog's unique index does when a concurrent creator had not committed yet.
fn is_duplicate(e: &tokio_postgres::Error, own: &SqlState) -> bool {
    e.code().is_some_and(|c| c == own || *c == SqlState::UNIQUE_VIOLATION)
}

pub(crate) async fn open_admin(config: &Config, tls: Option<&PgTls>) -> ProviderResult<Client> {
    let what = "connect to the PostgreSQL server as the admin role";
    let connect = async {
        match tls {
            None => config.connect(NoTls).await.map(|(client, connection)| {
                spawn_connection(connection);
                client
            }),
            Some(tls) => config.connect(tls.clone()).await.map(|(client, connection)| {
                spawn_connection(connection);
                client
            }),
        }
    };
    let budget = config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
    let client = match tokio::time::timeout(budget, connect).await {
        Ok(result) => result.map_err(|e| from_pg(what, &e))?,
        Err(_) => {
            let detail = format!("timed out after {} s", budget.as_secs());
            return Err(failure_as(true, Cause::Unreachable, what, &detail));
        }
    };
    // password_encryption only matters for a password the server hashes
    // itself; ours arrive as verifiers, but nothing should ever yield md5.
    client
        .batch_execute(&format!("SET password_encryption = 'scram-sha-256'; SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .await
        .map_err(|e| from_pg("configure the admin session", &e))?;
    Ok(client)
}

/// Drives an admin session's connection until it ends.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "admin connection ended");
        }
    });
}

/// `150010` → `15`; before 10 the major version had two parts (`90624` → `9.6`).
fn major_version(version_num: &str) -> Option<String> {
    let n: u32 = version_num.trim().parse().ok()?;
    Some(if n >= 100_000 { (n / 10_000).to_string() } else { format!("{}.{}", n / 10_000, n / 100 % 100) })
}

/// The roots of `tls` in a file of the temp dir for libpq's
/// `PGSSLROOTCERT`: named after this process and their content, created
/// only if absent (never following or trusting a file someone else put
/// there: one that exists must hold exactly these roots).
fn roots_file(tls: &PgTls) -> std::io::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    use std::io::Write;
    let mut hasher = std::hash::DefaultHasher::new();
    tls.roots_pem().hash(&mut hasher);
    let name = format!("capydb-pg-roots-{}-{:016x}.pem", std::process::id(), hasher.finish());
    let path = std::env::temp_dir().join(name);
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut file) => {
            file.write_all(tls.roots_pem())?;
            file.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::read(&path)? != tls.roots_pem() {
                return Err(std::io::Error::other(format!("{} holds other certificates", path.display())));
            }
        }
        Err(e) => return Err(e),
    }
    Ok(path)
}

/// Require TLS when the provider has it; plaintext otherwise.
fn ssl_mode(tls: Option<&PgTls>) -> tokio_postgres::config::SslMode {
    match tls {
        Some(_) => tokio_postgres::config::SslMode::Require,
        None => tokio_postgres::config::SslMode::Disable,
    }
}

fn sslmode_for(host: &str) -> &'static str {
    if matches!(host, "127.0.0.1" | "localhost" | "::1") {
        "disable"
    } else {
        "require"
    }
}

/// `postgres://user:password@host:port/database[?sslmode=...]`, every part
/// percent-encoded.
pub(crate) fn postgres_uri(
    user: &str,
    password: &str,
    host: &str,
    port: u16,
    database: &str,
    sslmode: Option<&str>,
) -> String {
    let enc = |s: &str| utf8_percent_encode(s, URI_COMPONENT).to_string();
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let mut uri = format!("postgres://{}:{}@{host}:{port}/{}", enc(user), enc(password), enc(database));
    if let Some(mode) = sslmode {
        uri.push_str("?sslmode=");
        uri.push_str(&enc(mode));
    }
    uri
}

/// The parts of the admin URL the provider uses; query parameters are ignored.
#[derive(Debug, PartialEq)]
struct AdminTarget {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
}

impl AdminTarget {
    fn parse(admin_url: &str) -> ProviderResult<AdminTarget> {
        // The URL holds the admin password: no message here quotes it.
        let invalid = |why: &str| ProviderError::Permanent(format!("invalid PostgreSQL admin URL: {why}"));
        let url = Url::parse(admin_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid("the scheme must be postgres:// or postgresql://"));
        }
        let host = match url.host() {
            Some(Host::Domain(d)) if !d.is_empty() => decode(d).map_err(|_| invalid("the host is not UTF-8"))?,
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("it names no host")),
        };
        let user = decode(url.username()).map_err(|_| invalid("the user is not UTF-8"))?;
        if user.is_empty() {
            return Err(invalid("it names no user"));
        }
        let password = url.password().map(decode).transpose().map_err(|_| invalid("the password is not UTF-8"))?;
        let database = decode(url.path().trim_start_matches('/')).map_err(|_| invalid("the database is not UTF-8"))?;
        Ok(AdminTarget {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database: if database.is_empty() { "postgres".to_string() } else { database },
        })
    }
}

fn decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_url_parts_are_decoded() {
        let t =
            AdminTarget::parse("postgres://ad%40min:p%2Fw%3A%25@db.example.com:6543/ops%20db?sslmode=require").unwrap();
        assert_eq!(
            t,
            AdminTarget {
                host: "db.example.com".into(),
                port: 6543,
                user: "ad@min".into(),
                password: Some("p/w:%".into()),
                database: "ops db".into(),
            }
        );
        let t = AdminTarget::parse("postgresql://admin@127.0.0.1").unwrap();
        assert_eq!((t.port, t.password, t.database.as_str()), (5432, None, "postgres"));
        let t = AdminTarget::parse("postgres://admin:pw@[::1]:5433/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 5433));
    }

    #[test]
    fn bad_admin_urls_are_permanent_and_never_quote_the_password() {
        for url in ["mysql://a:hunter2@h/db", "postgres://:hunter2@h/db", "not a url hunter2", "postgres:///db"] {
            match AdminTarget::parse(url) {
                Err(ProviderError::Permanent(m)) => assert!(!m.contains("hunter2"), "{m}"),
                other => panic!("{url}: expected a permanent error, got {other:?}"),
            }
        }
    }

    #[test]
    fn uri_percent_encodes_every_part() {
        assert_eq!(
            postgres_uri("prj_1_owner", "p@ss:w/rd?#%", "127.0.0.1", 5432, "prj_1", Some("disable")),
            "postgres://prj_1_owner:p%40ss%3Aw%2Frd%3F%23%25@127.0.0.1:5432/prj_1?sslmode=disable"
        );
        assert_eq!(postgres_uri("u", "p", "::1", 1, "d", None), "postgres://u:p@[::1]:1/d");
    }

    #[test]
    fn loopback_hosts_disable_ssl_others_require_it() {
        assert_eq!(sslmode_for("127.0.0.1"), "disable");
        assert_eq!(sslmode_for("localhost"), "disable");
        assert_eq!(sslmode_for("db.internal"), "require");
        assert_eq!(sslmode_for("10.0.0.5"), "require");
    }

    #[test]
    fn major_versions_from_version_numbers() {
        assert_eq!(major_version("150010").as_deref(), Some("15"));
        assert_eq!(major_version("170002").as_deref(), Some("17"));
        assert_eq!(major_version("90624").as_deref(), Some("9.6"));
        assert_eq!(major_version("fifteen"), None);
    }
}
