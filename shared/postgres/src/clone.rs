//! `PgProvider::clone_database`: a copy of one tenant database for another
//! owner, made without disturbing the source's clients.
//!
//! Two ways, picked per call from the source's state:
//!
//! - **Template** (nothing connected to the source): `CREATE DATABASE ...
//!   TEMPLATE source STRATEGY FILE_COPY`, a file-level copy, then the objects
//!   are handed to the new owner with `REASSIGN OWNED`. While it copies, the
//!   server holds a ShareLock on the source database, and a new connection to
//!   the source waits on it (its startup takes RowExclusiveLock on the
//!   database): a client arriving mid-copy waits for the rest of the copy. The
//!   window is the copy itself plus the checkpoints FILE_COPY forces before
//!   and after it; a `CHECKPOINT` issued just before, outside the lock, leaves
//!   the forced one little to flush (skipped when little WAL was written
//!   since the last checkpoint: then there is little to flush anyway). If a client connects between our check
//!   and the lock, CREATE DATABASE waits up to 5 s for it to leave (server
//!   behaviour, not configurable) and then fails with 55006; we fall back to
//!   the dump below, so that rare race can hold new connections for up to 5 s.
//! - **DumpRestore** (clients connected): the rows are streamed into the
//!   target from one snapshot of the source while its clients carry on
//!   (`clone_stream.rs`; the one description of it is in
//!   `docs/architecture.md`, Previews). If the stream cannot start, a
//!   `pg_dump -Fd -j N` into a private work dir and `pg_restore -j N
//!   --role=<owner>` make the same copy from one snapshot.
use std::path::PathBuf;
use std::time::Instant;

use capydb_domain::ports::{CloneResult, CloneStrategy, ProviderError, ProviderResult};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::clone_stream::{StreamFailure, RESTORE_OPTIONS};
use crate::error::from_pg;
use crate::provider::{advisory_lock, open_admin, PgProvider};
use crate::sql::quote_ident;
use crate::tools::{drop_database, jobs, lock_target, run_tool, WorkDir, DUMP_LOCK_WAIT};

/// How the template copy ended.
enum TemplateOutcome {
    Copied,
    /// A session connected to the source in the meantime (55006).
    SourceBusy,
}

impl PgProvider {
    /// Where `clone_database` writes its temporary dumps (default: the system
    /// temp dir). A dump is as large as the source's data, so this should be
    /// on a disk with room for the largest database.
    pub fn set_work_dir(&mut self, dir: PathBuf) {
        self.work_dir = dir;
    }

    /// How a busy clone streams a large table: in page ranges over several
    /// workers (`true`), or whole, into a table truncated in the same
    /// transaction, with `COPY ... FREEZE` (`false`). The default is page
    /// ranges with more than 2 CPUs. On 2 they are no faster (`bench/clone.sh`):
    /// one stream's source and target backends already keep both cores busy.
    /// A frozen table needs no hint bits set and written back by the index
    /// builds or the clone's first readers, and no freezing VACUUM later.
    pub fn set_page_range_streams(&mut self, on: bool) {
        self.page_range_streams = on;
    }

    /// Makes `target`, owned by `owner` and reachable only by it (like
    /// `ensure_database`), a copy of `source` at this moment with every object
    /// inside owned by `owner`. A `target` left by an interrupted attempt is
    /// dropped and made again; on failure no `target` is left behind.
    pub async fn clone_database(&self, source: &str, source_owner: &str, target: &str, owner: &str) -> CloneResult {
        self.check_tenant_database(source)?;
        self.check_tenant_database(target)?;
        self.check_tenant_role(source_owner)?;
        self.check_tenant_role(owner)?;
        if source == target {
            return Err(ProviderError::Permanent(format!("cannot clone database {source} onto itself")));
        }
        // A server that needs TLS is a dedicated one, cloned whole by its
        // provider; the streaming copy's sessions speak plaintext.
        if self.tls.is_some() {
            return Err(ProviderError::Permanent(
                "copying a database inside a server that requires TLS is not supported".into(),
            ));
        }
        let started = Instant::now();
        // A session of its own: a copy can take minutes, and on the shared
        // admin connection every other provider call would queue behind it.
        let session = open_admin(&self.admin, self.tls.as_ref()).await?;
        let opened = started.elapsed();
        let what = format!("clone database {source} into {target}");
        // Two clones (or a clone and a restore) into one target would drop
        // each other's work.
        lock_target(&session, target, &what).await?;
        self.check_clone_roles(&session, source, source_owner, owner, &what).await?;
        drop_database(&session, target, &what).await?;
        tracing::debug!(
            target,
            session_ms = opened.as_millis() as u64,
            checks_ms = (started.elapsed() - opened).as_millis() as u64,
            "clone prepared"
        );

        let result = self.copy(&session, source, source_owner, target, owner, &what).await;
        match result {
            Ok(strategy) => {
                tracing::info!(source, target, owner, strategy = ?strategy, elapsed_ms = started.elapsed().as_millis() as u64, "database cloned");
                Ok(strategy)
            }
            Err(e) => {
                // A half-made copy must not pass for a finished one.
                if let Err(cleanup) = drop_database(&session, target, &what).await {
                    tracing::warn!(target, error = %cleanup, "could not drop the unfinished clone");
                }
                Err(e)
            }
        }
    }

    /// The source exists and is `source_owner`'s; `owner` is an ordinary role.
    async fn check_clone_roles(
        &self,
        session: &Client,
        source: &str,
        source_owner: &str,
        owner: &str,
        what: &str,
    ) -> ProviderResult<()> {
        let row = session
            .query_opt("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", &[&source])
            .await
            .map_err(|e| from_pg(what, &e))?;
        let actual: String = match row {
            Some(row) => row.try_get(0).map_err(|e| from_pg(what, &e))?,
            None => return Err(ProviderError::Permanent(format!("{what}: database {source} does not exist"))),
        };
        if actual != source_owner {
            // REASSIGN OWNED BY the wrong role would leave the copy's objects
            // with a role the new owner cannot act as.
            return Err(ProviderError::Permanent(format!(
                "{what}: database {source} is owned by {actual}, not {source_owner}"
            )));
        }
        match self.role_is_superuser(owner).await? {
            None => Err(ProviderError::Permanent(format!("{what}: role {owner} does not exist"))),
            Some(true) => Err(ProviderError::Permanent(format!("{what}: role {owner} is a superuser"))),
            Some(false) => Ok(()),
        }
    }

    async fn copy(
        &self,
        session: &Client,
        source: &str,
        source_owner: &str,
        target: &str,
        owner: &str,
        what: &str,
    ) -> CloneResult {
        if !source_in_use(session, source, what).await? {
            match template_copy(session, source, target, owner, what).await? {
                TemplateOutcome::Copied => {
                    let started = Instant::now();
                    self.hand_over(source, source_owner, target, owner, what).await?;
                    let handed = started.elapsed();
                    self.ensure_database_secured(target, owner).await?;
                    tracing::debug!(
                        target,
                        hand_over_ms = handed.as_millis() as u64,
                        secure_ms = (started.elapsed() - handed).as_millis() as u64,
                        "template copy handed over"
                    );
                    return Ok(CloneStrategy::Template);
                }
                TemplateOutcome::SourceBusy => {
                    tracing::info!(
                        source,
                        "a client connected to the source during the template copy; dumping instead"
                    );
                    // CREATE DATABASE is atomic, but a retry must start clean anyway.
                    drop_database(session, target, what).await?;
                }
            }
        }
        match self.stream_clone(source, target, owner, what).await {
            Ok(()) => {}
            Err(StreamFailure::Failed(e)) => return Err(e),
            Err(StreamFailure::TryDump(e)) => {
                tracing::warn!(source, target, error = %e, "streaming the data failed; dumping instead");
                drop_database(session, target, what).await?;
                self.dump_restore(source, target, owner, what).await?;
            }
        }
        Ok(CloneStrategy::DumpRestore)
    }

    /// The REVOKE/GRANT of `ensure_database`, which also creates the database
    /// when it is missing (the dump/restore path relies on that).
    pub(crate) async fn ensure_database_secured(&self, database: &str, owner: &str) -> ProviderResult<()> {
        capydb_domain::ports::DatabaseProvider::ensure_database(self, database, owner).await
    }

    /// After a template copy, the copy's objects still belong to
    /// `source_owner`. `REASSIGN OWNED` run inside the copy hands them to
    /// `owner`, but it also reassigns `source_owner`'s shared objects, the
    /// source database among them; those are given back in the same
    /// transaction, so no other session ever sees them with another owner.
    async fn hand_over(
        &self,
        source: &str,
        source_owner: &str,
        target: &str,
        owner: &str,
        what: &str,
    ) -> ProviderResult<()> {
        if source_owner == owner {
            return Ok(());
        }
        let mut config = self.admin.clone();
        config.dbname(target);
        let mut client = open_admin(&config, self.tls.as_ref()).await?;
        let fail = |e: tokio_postgres::Error| from_pg(&format!("{what}: hand the copy to {owner}"), &e);
        let tx = client.transaction().await.map_err(fail)?;
        // The same lock as `ensure_database` on the source: it updates the
        // source's pg_database row too, and two updates at once fail one of them.
        tx.batch_execute(&advisory_lock("database", source)?).await.map_err(fail)?;
        let owned: Vec<String> = tx
            .query("SELECT datname::text FROM pg_database WHERE datdba = $1::text::regrole", &[&source_owner])
            .await
            .map_err(fail)?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        let (from, to) = (quote_ident(source_owner), quote_ident(owner));
        let mut sql = format!("REASSIGN OWNED BY {from} TO {to};");
        for database in &owned {
            sql.push_str(&format!(" ALTER DATABASE {} OWNER TO {from};", quote_ident(database)));
        }
        tx.batch_execute(&sql).await.map_err(fail)?;
        tx.commit().await.map_err(fail)
    }

    /// `pg_dump -Fd -j N` of `source`, then `pg_restore -j N --role=owner`
    /// into a new `target`. `--no-owner --no-privileges`: the copy's objects
    /// are created by `owner` itself and carry no grants to other roles.
    async fn dump_restore(&self, source: &str, target: &str, owner: &str, what: &str) -> ProviderResult<()> {
        let bin = self.dump_tools(what)?;
        let jobs = jobs().to_string();
        let work = WorkDir::create(&self.work_dir, &format!("clone-{target}"))
            .map_err(|e| crate::error::io_failure(&format!("{what}: create a work dir"), &e))?;
        let dump = work.path().join("dump");

        let started = Instant::now();
        let mut pg_dump = self.admin_tool(&bin, "pg_dump", "capydb-clone");
        pg_dump
            .args(["--format=directory", "--jobs", &jobs, "--no-owner", "--no-privileges"])
            // Uncompressed: the dump lives for one restore on a local disk,
            // and gzip would cost more CPU than the disk writes it saves.
            .args(["--compress=0", &format!("--lock-wait-timeout={DUMP_LOCK_WAIT}")])
            .arg("--file")
            .arg(&dump)
            .arg(source);
        run_tool(pg_dump, "pg_dump", what).await?;
        let dumped = started.elapsed();

        self.ensure_database_secured(target, owner).await?;
        let mut pg_restore = self.admin_tool(&bin, "pg_restore", "capydb-clone");
        pg_restore
            .env("PGOPTIONS", RESTORE_OPTIONS)
            .args(["--jobs", &jobs, "--no-owner", "--no-privileges", "--exit-on-error"])
            .arg(format!("--role={owner}"))
            .args(["--dbname", target])
            .arg(&dump);
        run_tool(pg_restore, "pg_restore", what).await?;
        tracing::debug!(
            source,
            target,
            dump_ms = dumped.as_millis() as u64,
            restore_ms = (started.elapsed() - dumped).as_millis() as u64,
            "dump and restore done"
        );
        drop(work);
        Ok(())
    }
}

/// Anything that makes `CREATE DATABASE ... TEMPLATE` fail or wait: a
/// session (autovacuum workers excepted: the server ends those itself), a
/// prepared transaction or a logical replication slot on the source.
async fn source_in_use(session: &Client, source: &str, what: &str) -> ProviderResult<bool> {
    let busy: bool = session
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
                            AND backend_type IS DISTINCT FROM 'autovacuum worker') \
                 OR EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = $1) \
                 OR EXISTS (SELECT 1 FROM pg_replication_slots WHERE database = $1)",
            &[&source],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| from_pg(what, &e))?;
    Ok(busy)
}

/// WAL written since the last checkpoint began under which no `CHECKPOINT`
/// precedes a template copy. Every page dirtied since then was WAL-logged,
/// most with a full-page image, so the copy's own checkpoint has at most
/// about this much to write. (Pages dirtied by hint bits alone are not
/// WAL-logged without checksums; a scan that sets many is the exception.)
const PRE_CHECKPOINT_WAL: f64 = 8.0 * 1024.0 * 1024.0;

/// Bytes of WAL since the redo point of the last checkpoint; `None` when the
/// admin role may not read the control data (then we checkpoint as before).
async fn pending_checkpoint_wal(session: &Client) -> Option<f64> {
    let row = session
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), redo_lsn)::float8 FROM pg_control_checkpoint()",
            &[],
        )
        .await;
    match row.and_then(|r| r.try_get::<_, f64>(0)) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the WAL written since the last checkpoint");
            None
        }
    }
}

/// FILE_COPY rather than PG15's default WAL_LOG, measured on this machine
/// after a CHECKPOINT: 112 MB (pgbench -s 7) 0.12-0.30 s against 0.33-0.62 s,
/// 1 GB (pgbench -s 70) 1.9-2.3 s against 4.7-4.9 s. WAL_LOG pushes every
/// block through shared buffers and the WAL; and the lock that holds back new
/// connections to the source lasts as long as the copy, so faster is also kinder.
async fn template_copy(
    session: &Client,
    source: &str,
    target: &str,
    owner: &str,
    what: &str,
) -> ProviderResult<TemplateOutcome> {
    // FILE_COPY checkpoints under the source's lock; flushing the cluster's
    // dirty buffers first, before taking it, leaves that checkpoint little to
    // do. Unless it already has little to do: a checkpoint costs its fsyncs
    // even with nothing to write (~50 ms here), and FILE_COPY makes two.
    let started = Instant::now();
    let pending = pending_checkpoint_wal(session).await;
    let checkpoint = pending.is_none_or(|bytes| bytes >= PRE_CHECKPOINT_WAL);
    if checkpoint {
        match session.batch_execute("CHECKPOINT").await {
            Ok(()) => {}
            // An admin that is not a superuser (RDS's) may not: the copy's own
            // checkpoint then has more to write, and the copy is as correct.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
                tracing::debug!("the admin may not CHECKPOINT; the copy's own checkpoint flushes everything");
            }
            Err(e) => return Err(from_pg(what, &e)),
        }
    }
    let checked = started.elapsed();
    let create = format!(
        "CREATE DATABASE {} TEMPLATE {} OWNER {} STRATEGY FILE_COPY",
        quote_ident(target),
        quote_ident(source),
        quote_ident(owner)
    );
    let result = session.batch_execute(&create).await;
    tracing::debug!(
        source,
        target,
        wal_since_checkpoint = pending.map(|b| b as u64),
        checkpoint,
        checkpoint_ms = checked.as_millis() as u64,
        create_ms = (started.elapsed() - checked).as_millis() as u64,
        "template copy"
    );
    match result {
        Ok(()) => Ok(TemplateOutcome::Copied),
        Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => Ok(TemplateOutcome::SourceBusy),
        Err(e) => Err(from_pg(what, &e)),
    }
}
