//! `Store` on SQLite. Each entity is stored as explicit columns (not as its
//! serde form, which skips secrets such as key hashes and sealed passwords).
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};

use async_trait::async_trait;
use capydb_domain::model::*;
use capydb_domain::ports::{
    Admission, HeldKey, IdempotencyBegin, IdempotencyClaim, Page, QuotaClaim, QuotaKind, ResourceWrite, Store,
    StoredAnswer, Usage,
};
use capydb_domain::scopes::Scope;
use capydb_domain::{DomainError, DomainResult};
use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::db::{self, get_opt_ts, get_ts, invalid_column, map_sql_error, opt_ts, sql_err, sql_limit, ts};

/// Read-only connections per store. Reads are short (an indexed lookup), so a
/// few connections cover many concurrent requests on a small machine.
const READERS: usize = 4;

/// The metadata store on one SQLite file.
///
/// Writes go through a single connection behind a mutex (SQLite allows one
/// writer at a time anyway, and this way writers of one process queue on the
/// mutex instead of spinning on `SQLITE_BUSY`). Reads use a pool of read-only
/// connections, which WAL lets run alongside the writer. Calls run on the
/// caller's thread: every statement is an indexed lookup or a small write of
/// a few microseconds, well below what handing it to a blocking pool costs.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("readers", &self.readers.len()).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates its
    /// schema. Several stores, queues and processes may open the same file.
    pub fn open(path: &Path) -> DomainResult<SqliteStore> {
        // The writer first: it creates the file, switches it to WAL and
        // migrates, all of which read-only connections cannot do.
        let writer = db::open_writer(path)?;
        let readers = (0..READERS).map(|_| db::open_reader(path).map(Mutex::new)).collect::<DomainResult<Vec<_>>>()?;
        Ok(SqliteStore { writer: Mutex::new(writer), readers, next_reader: AtomicUsize::new(0) })
    }

    /// Runs `f` on a free read-only connection: the pool is tried
    /// round-robin without blocking, and only when every connection is busy
    /// does the call wait for one.
    pub(crate) fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> DomainResult<T> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let guard = match self.readers[(start + i) % n].try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            return f(&db::reset(guard)).map_err(sql_err(op));
        }
        let guard = self.readers[start].lock().unwrap_or_else(PoisonError::into_inner);
        f(&db::reset(guard)).map_err(sql_err(op))
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer, which takes the
    /// database write lock up front: a deferred transaction that reads and
    /// then writes can fail with `SQLITE_BUSY` at once instead of waiting
    /// when another handle on the file wrote in between.
    ///
    /// `f` returns `Ok((value, true))` to commit, `Ok((value, false))` to
    /// roll back.
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> DomainResult<(T, bool)>,
    ) -> DomainResult<T> {
        let mut conn = db::lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(op))?;
        let (value, commit) = f(&tx)?;
        if commit {
            tx.commit().map_err(sql_err(op))?;
        }
        Ok(value)
    }

    /// One auto-committed statement on the writer.
    pub(crate) fn execute(&self, op: &'static str, sql: &str, params: impl rusqlite::Params) -> DomainResult<usize> {
        let conn = db::lock(&self.writer);
        conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(sql_err(op))
    }
}

// Column lists as macros so the statements are assembled at compile time.
macro_rules! org_cols {
    () => {
        "id, name, created_at, updated_at"
    };
}
macro_rules! key_cols {
    () => {
        "id, organization_id, name, prefix, last4, scopes, project_id, expires_at, revoked_at, \
         last_used_at, last_used_ip, created_at, hash, created_by"
    };
}
macro_rules! project_cols {
    () => {
        "id, organization_id, name, region, pg_version, state, database_name, role_name, created_at, \
         updated_at, password_sealed, server_host, admin_password_sealed"
    };
}
macro_rules! preview_cols {
    () => {
        "id, organization_id, project_id, name, mode, state, database_name, role_name, ttl_hours, expires_at, \
         created_at, updated_at, password_sealed, server_host"
    };
}
macro_rules! job_cols {
    () => {
        "id, kind, state, organization_id, project_id, resource_kind, resource_id, attempt, step, \
         created_at, started_at, finished_at, error, version, lease_owner, lease_expires_at, params, waiting"
    };
}
macro_rules! event_cols {
    () => {
        "id, kind, organization_id, project_id, created_at, data, published_at"
    };
}

/// A newest-first page of `SELECT <cols> FROM <table> WHERE <filter on ?1>`:
/// two statements (with and without cursor) so both can use the index.
macro_rules! paged {
    ($cols:expr, $table:literal, $filter:literal) => {
        (
            concat!("SELECT ", $cols, " FROM ", $table, " WHERE ", $filter, " ORDER BY id DESC LIMIT ?2"),
            concat!("SELECT ", $cols, " FROM ", $table, " WHERE ", $filter, " AND id < ?3 ORDER BY id DESC LIMIT ?2"),
        )
    };
}

fn query_page<T>(
    conn: &Connection,
    (first, next): (&str, &str),
    key: &str,
    page: &Page,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let limit = sql_limit(page.limit);
    match &page.before {
        None => conn.prepare_cached(first)?.query_map(params![key, limit], map)?.collect(),
        Some(before) => conn.prepare_cached(next)?.query_map(params![key, limit, before], map)?.collect(),
    }
}

fn org_from_row(r: &Row<'_>) -> rusqlite::Result<Organization> {
    Ok(Organization { id: r.get(0)?, name: r.get(1)?, created_at: get_ts(r, 2)?, updated_at: get_ts(r, 3)? })
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes: String = r.get(5)?;
    let scopes: Vec<Scope> = serde_json::from_str(&scopes).map_err(|_| invalid_column(5, "unknown API key scope"))?;
    Ok(ApiKey {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        last4: r.get(4)?,
        scopes,
        project_id: r.get(6)?,
        expires_at: get_opt_ts(r, 7)?,
        revoked_at: get_opt_ts(r, 8)?,
        last_used_at: get_opt_ts(r, 9)?,
        last_used_ip: r.get(10)?,
        created_at: get_ts(r, 11)?,
        hash: r.get(12)?,
        created_by: r.get(13)?,
    })
}

fn project_from_row(r: &Row<'_>) -> rusqlite::Result<Project> {
    let state: String = r.get(5)?;
    Ok(Project {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        pg_version: r.get(4)?,
        state: ProjectState::parse(&state).ok_or_else(|| invalid_column(5, "unknown project state"))?,
        database_name: r.get(6)?,
        role_name: r.get(7)?,
        created_at: get_ts(r, 8)?,
        updated_at: get_ts(r, 9)?,
        password_sealed: r.get(10)?,
        server_host: r.get(11)?,
        admin_password_sealed: r.get(12)?,
    })
}

fn preview_from_row(r: &Row<'_>) -> rusqlite::Result<Preview> {
    let mode: String = r.get(4)?;
    let state: String = r.get(5)?;
    Ok(Preview {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        mode: PreviewMode::parse(&mode).ok_or_else(|| invalid_column(4, "unknown preview mode"))?,
        state: PreviewState::parse(&state).ok_or_else(|| invalid_column(5, "unknown preview state"))?,
        database_name: r.get(6)?,
        role_name: r.get(7)?,
        ttl_hours: r.get(8)?,
        expires_at: get_ts(r, 9)?,
        created_at: get_ts(r, 10)?,
        updated_at: get_ts(r, 11)?,
        password_sealed: r.get(12)?,
        server_host: r.get(13)?,
    })
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let kind: String = r.get(1)?;
    let state: String = r.get(2)?;
    let version: i64 = r.get(13)?;
    let params: String = r.get(16)?;
    let kind = JobKind::parse(&kind).ok_or_else(|| invalid_column(1, "unknown job kind"))?;
    let resource_kind: String = r.get(5)?;
    let resource = ResourceRef {
        kind: ResourceKind::parse(&resource_kind).ok_or_else(|| invalid_column(5, "unknown resource kind"))?,
        id: r.get(6)?,
    };
    let params = serde_json::from_str(&params).map_err(|_| invalid_column(16, "job params are not JSON"))?;
    let spec = JobSpec::decode(kind, &resource, &params)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(16, rusqlite::types::Type::Text, e.into()))?;
    let waiting = match r.get::<_, Option<String>>(17)? {
        Some(text) => Some(
            JobWait::decode(&text)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, e.into()))?,
        ),
        None => None,
    };
    Ok(Job {
        id: r.get(0)?,
        kind,
        state: JobState::parse(&state).ok_or_else(|| invalid_column(2, "unknown job state"))?,
        organization_id: r.get(3)?,
        project_id: r.get(4)?,
        resource,
        attempt: r.get(7)?,
        step: r.get(8)?,
        created_at: get_ts(r, 9)?,
        started_at: get_opt_ts(r, 10)?,
        finished_at: get_opt_ts(r, 11)?,
        error: r.get(12)?,
        version: u64::try_from(version).map_err(|_| invalid_column(13, "negative job version"))?,
        lease_owner: r.get(14)?,
        lease_expires_at: get_opt_ts(r, 15)?,
        spec,
        waiting,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let data: String = r.get(5)?;
    let kind: String = r.get(1)?;
    Ok(Event {
        id: r.get(0)?,
        kind: EventType::parse(&kind).ok_or_else(|| invalid_column(1, "unknown event type"))?,
        organization_id: r.get(2)?,
        project_id: r.get(3)?,
        created_at: get_ts(r, 4)?,
        data: serde_json::from_str(&data).map_err(|_| invalid_column(5, "event data is not JSON"))?,
        published_at: get_opt_ts(r, 6)?,
    })
}

fn scopes_json(scopes: &[Scope]) -> DomainResult<String> {
    serde_json::to_string(scopes).map_err(|e| DomainError::internal(format!("could not encode scopes: {e}")))
}

fn version_param(version: u64) -> DomainResult<i64> {
    i64::try_from(version).map_err(|_| DomainError::internal("job version exceeds i64"))
}

/// In the transaction that makes `made`, writes its id into the
/// `Idempotency-Key` record `held` names, only while that request holds it
/// unanswered; otherwise the transaction is refused (`HeldKey::lost`).
fn record_made(tx: &Transaction<'_>, held: Option<&HeldKey>, made: &str) -> DomainResult<()> {
    let Some(held) = held else { return Ok(()) };
    let recorded = tx
        .prepare_cached(
            "UPDATE idempotency_records SET made = ?3 WHERE key = ?1 AND lease_until = ?2 AND status IS NULL",
        )
        .and_then(|mut s| s.execute(params![held.key, ts(&held.lease_until), made]))
        .map_err(sql_err("record what the idempotent request made"))?;
    if recorded == 1 {
        Ok(())
    } else {
        Err(HeldKey::lost())
    }
}

fn insert_key(conn: &Connection, key: &ApiKey) -> DomainResult<()> {
    let sql = concat!(
        "INSERT INTO api_keys (",
        key_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    );
    let scopes = scopes_json(&key.scopes)?;
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                key.id,
                key.organization_id,
                key.name,
                key.prefix,
                key.last4,
                scopes,
                key.project_id,
                opt_ts(&key.expires_at),
                opt_ts(&key.revoked_at),
                opt_ts(&key.last_used_at),
                key.last_used_ip,
                ts(&key.created_at),
                key.hash,
                key.created_by,
            ])
        })
        .map(drop)
        .map_err(sql_err("insert the API key"))
}

macro_rules! project_params {
    ($p:expr) => {
        params![
            $p.id,
            $p.organization_id,
            $p.name,
            $p.region,
            $p.pg_version,
            $p.state.as_str(),
            $p.database_name,
            $p.role_name,
            ts(&$p.created_at),
            ts(&$p.updated_at),
            $p.password_sealed,
            $p.server_host,
            $p.admin_password_sealed,
        ]
    };
}

fn upsert_project(conn: &Connection, p: &Project) -> rusqlite::Result<usize> {
    let sql = concat!(
        "INSERT INTO projects (",
        project_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT(id) DO UPDATE SET organization_id = excluded.organization_id, name = excluded.name, \
         region = excluded.region, pg_version = excluded.pg_version, state = excluded.state, \
         database_name = excluded.database_name, role_name = excluded.role_name, \
         created_at = excluded.created_at, updated_at = excluded.updated_at, \
         password_sealed = excluded.password_sealed, server_host = excluded.server_host, \
         admin_password_sealed = excluded.admin_password_sealed"
    );
    conn.prepare_cached(sql)?.execute(project_params!(p))
}

macro_rules! preview_params {
    ($p:expr) => {
        params![
            $p.id,
            $p.organization_id,
            $p.project_id,
            $p.name,
            $p.mode.as_str(),
            $p.state.as_str(),
            $p.database_name,
            $p.role_name,
            $p.ttl_hours,
            ts(&$p.expires_at),
            ts(&$p.created_at),
            ts(&$p.updated_at),
            $p.password_sealed,
            $p.server_host,
        ]
    };
}

fn upsert_preview(conn: &Connection, p: &Preview) -> DomainResult<()> {
    let sql = concat!(
        "INSERT INTO previews (",
        preview_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT(id) DO UPDATE SET organization_id = excluded.organization_id, \
         project_id = excluded.project_id, name = excluded.name, mode = excluded.mode, state = excluded.state, \
         database_name = excluded.database_name, role_name = excluded.role_name, ttl_hours = excluded.ttl_hours, \
         expires_at = excluded.expires_at, \
         created_at = excluded.created_at, updated_at = excluded.updated_at, password_sealed = excluded.password_sealed, \
         server_host = excluded.server_host"
    );
    conn.prepare_cached(sql).and_then(|mut s| s.execute(preview_params!(p))).map(drop).map_err(|e| {
        match map_sql_error("write the preview", &e) {
            // The only unique constraint a preview write can break besides its id.
            DomainError::Conflict(_) => {
                DomainError::Conflict(format!("project {} already has a live preview named {:?}", p.project_id, p.name))
            }
            other => other,
        }
    })
}

const BACKUP_COLS: &str =
    "id, organization_id, project_id, name, kind, state, size_bytes, sha256, created_at, completed_at";
const RESTORE_COLS: &str =
    "id, organization_id, project_id, backup_id, mode, state, preview_id, safety_backup_id, job_id, \
                            created_at, finished_at";
const IMPORT_COLS: &str =
    "id, organization_id, project_id, source, state, safety_backup_id, job_id, created_at, finished_at";

fn backup_from_row(r: &Row<'_>) -> rusqlite::Result<Backup> {
    let kind: String = r.get(4)?;
    let state: String = r.get(5)?;
    let size: Option<i64> = r.get(6)?;
    Ok(Backup {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        kind: BackupKind::parse(&kind).ok_or_else(|| invalid_column(4, "unknown backup kind"))?,
        state: BackupState::parse(&state).ok_or_else(|| invalid_column(5, "unknown backup state"))?,
        size_bytes: size.map(|s| s.max(0) as u64),
        sha256: r.get(7)?,
        created_at: get_ts(r, 8)?,
        completed_at: get_opt_ts(r, 9)?,
    })
}

fn restore_from_row(r: &Row<'_>) -> rusqlite::Result<Restore> {
    let mode: String = r.get(4)?;
    let state: String = r.get(5)?;
    Ok(Restore {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        project_id: r.get(2)?,
        backup_id: r.get(3)?,
        mode: RestoreMode::parse(&mode).ok_or_else(|| invalid_column(4, "unknown restore mode"))?,
        state: OperationState::parse(&state).ok_or_else(|| invalid_column(5, "unknown restore state"))?,
        preview_id: r.get(6)?,
        safety_backup_id: r.get(7)?,
        job_id: r.get(8)?,
        created_at: get_ts(r, 9)?,
        finished_at: get_opt_ts(r, 10)?,
    })
}

fn import_from_row(r: &Row<'_>) -> rusqlite::Result<Import> {
    let state: String = r.get(4)?;
    Ok(Import {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        project_id: r.get(2)?,
        source: r.get(3)?,
        state: OperationState::parse(&state).ok_or_else(|| invalid_column(4, "unknown import state"))?,
        safety_backup_id: r.get(5)?,
        job_id: r.get(6)?,
        created_at: get_ts(r, 7)?,
        finished_at: get_opt_ts(r, 8)?,
    })
}

fn upsert_backup(conn: &Connection, b: &Backup) -> DomainResult<()> {
    let size = b.size_bytes.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO backups ({BACKUP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            b.id,
            b.organization_id,
            b.project_id,
            b.name,
            b.kind.as_str(),
            b.state.as_str(),
            size,
            b.sha256,
            ts(&b.created_at),
            opt_ts(&b.completed_at),
        ])
    })
    .map(drop)
    .map_err(sql_err("write the backup"))
}

fn upsert_restore(conn: &Connection, r: &Restore) -> DomainResult<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO restores ({RESTORE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            r.id,
            r.organization_id,
            r.project_id,
            r.backup_id,
            r.mode.as_str(),
            r.state.as_str(),
            r.preview_id,
            r.safety_backup_id,
            r.job_id,
            ts(&r.created_at),
            opt_ts(&r.finished_at),
        ])
    })
    .map(drop)
    .map_err(sql_err("write the restore"))
}

fn upsert_import(conn: &Connection, i: &Import) -> DomainResult<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO imports ({IMPORT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            i.id,
            i.organization_id,
            i.project_id,
            i.source,
            i.state.as_str(),
            i.safety_backup_id,
            i.job_id,
            ts(&i.created_at),
            opt_ts(&i.finished_at),
        ])
    })
    .map(drop)
    .map_err(sql_err("write the import"))
}

fn write_resource(conn: &Connection, write: &ResourceWrite) -> DomainResult<()> {
    match write {
        ResourceWrite::Nothing => Ok(()),
        ResourceWrite::Project(p) => upsert_project(conn, p).map(drop).map_err(sql_err("write the project")),
        ResourceWrite::Preview(p) => upsert_preview(conn, p),
        ResourceWrite::Backup(b) => upsert_backup(conn, b),
        ResourceWrite::Restore(r) => upsert_restore(conn, r),
        ResourceWrite::Import(i) => upsert_import(conn, i),
        ResourceWrite::All(writes) => writes.iter().try_for_each(|w| write_resource(conn, w)),
    }
}

/// Binds a job's columns in `job_cols!()` order (?1..?18) and hands them to
/// `f`: `insert_job` uses them as they are, `update_job_if` adds the expected
/// version as ?18.
fn with_job_params<R>(job: &Job, version: i64, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
    let (kind, state) = (job.kind.as_str(), job.state.as_str());
    let (created, started, finished) = (ts(&job.created_at), opt_ts(&job.started_at), opt_ts(&job.finished_at));
    let lease = opt_ts(&job.lease_expires_at);
    let params = job.spec.params().to_string();
    let waiting = job.waiting.as_ref().map(JobWait::encode);
    let resource_kind = job.resource.kind.as_str();
    f(&[
        &job.id,
        &kind,
        &state,
        &job.organization_id,
        &job.project_id,
        &resource_kind,
        &job.resource.id,
        &job.attempt,
        &job.step,
        &created,
        &started,
        &finished,
        &job.error,
        &version,
        &job.lease_owner,
        &lease,
        &params,
        &waiting,
    ])
}

fn insert_job(conn: &Connection, job: &Job) -> DomainResult<()> {
    let sql = concat!(
        "INSERT INTO jobs (",
        job_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    );
    let version = version_param(job.version)?;
    with_job_params(job, version, |p| conn.prepare_cached(sql).and_then(|mut s| s.execute(p)))
        .map(drop)
        .map_err(sql_err("insert the job"))
}

/// The optimistic-concurrency update shared by `update_job` and `finish_job`.
fn update_job_if(conn: &Connection, job: &Job, expected_version: u64) -> DomainResult<bool> {
    // A write that does not bump the version would let two writers both
    // succeed against the same expected version; refuse it as the bug it is.
    if Some(job.version) != expected_version.checked_add(1) {
        return Err(DomainError::internal("job.version must be expected_version + 1"));
    }
    let sql = "UPDATE jobs SET kind = ?2, state = ?3, organization_id = ?4, project_id = ?5, \
               resource_kind = ?6, resource_id = ?7, attempt = ?8, step = ?9, created_at = ?10, \
               started_at = ?11, finished_at = ?12, error = ?13, version = ?14, lease_owner = ?15, \
               lease_expires_at = ?16, params = ?17, waiting = ?18 WHERE id = ?1 AND version = ?19";
    let version = version_param(job.version)?;
    let expected = version_param(expected_version)?;
    let changed = with_job_params(job, version, |p| {
        let mut all = p.to_vec();
        all.push(&expected);
        conn.prepare_cached(sql).and_then(|mut s| s.execute(&*all))
    })
    .map_err(sql_err("update the job"))?;
    Ok(changed == 1)
}

fn insert_event(conn: &Connection, e: &Event) -> DomainResult<()> {
    let sql = concat!("INSERT INTO events (", event_cols!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                e.id,
                e.kind.as_str(),
                e.organization_id,
                e.project_id,
                ts(&e.created_at),
                e.data.to_string(),
                opt_ts(&e.published_at),
            ])
        })
        .map(drop)
        .map_err(sql_err("insert the event"))
}

macro_rules! webhook_cols {
    () => {
        "id, organization_id, url, events, project_id, description, enabled, disabled_reason, failing_since, \
         created_at, updated_at, secret_sealed, previous_secret_sealed, previous_secret_expires_at"
    };
}
macro_rules! delivery_cols {
    () => {
        "id, webhook_id, organization_id, event_id, event_type, state, attempt_count, next_attempt_at, \
         created_at, updated_at, payload, round_attempts, lease_until"
    };
}

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookEndpoint> {
    let events: String = r.get(3)?;
    Ok(WebhookEndpoint {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).map_err(|_| invalid_column(3, "events is not a JSON array"))?,
        project_id: r.get(4)?,
        description: r.get(5)?,
        enabled: r.get(6)?,
        disabled_reason: r.get(7)?,
        failing_since: get_opt_ts(r, 8)?,
        created_at: get_ts(r, 9)?,
        updated_at: get_ts(r, 10)?,
        secret_sealed: r.get(11)?,
        previous_secret_sealed: r.get(12)?,
        previous_secret_expires_at: get_opt_ts(r, 13)?,
    })
}

fn insert_webhook(conn: &Connection, w: &WebhookEndpoint) -> DomainResult<usize> {
    let events = w.events_json()?;
    conn.prepare_cached(&format!(
        "INSERT INTO webhooks ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        webhook_cols!()
    ))
    .and_then(|mut s| {
        s.execute(params![
            w.id,
            w.organization_id,
            w.url,
            events,
            w.project_id,
            w.description,
            w.enabled,
            w.disabled_reason,
            opt_ts(&w.failing_since),
            ts(&w.created_at),
            ts(&w.updated_at),
            w.secret_sealed,
            w.previous_secret_sealed,
            opt_ts(&w.previous_secret_expires_at),
        ])
    })
    .map_err(sql_err("write the webhook"))
}

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let state: String = r.get(5)?;
    let event_type: String = r.get(4)?;
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        organization_id: r.get(2)?,
        event_id: r.get(3)?,
        event_type: EventType::parse(&event_type).ok_or_else(|| invalid_column(4, "unknown event type"))?,
        state: DeliveryState::parse(&state).ok_or_else(|| invalid_column(5, "unknown delivery state"))?,
        attempt_count: r.get(6)?,
        next_attempt_at: get_opt_ts(r, 7)?,
        created_at: get_ts(r, 8)?,
        updated_at: get_ts(r, 9)?,
        payload: r.get(10)?,
        attempts: Vec::new(),
        round_attempts: r.get(11)?,
        lease_until: get_opt_ts(r, 12)?,
    })
}

/// Inserts the delivery, or updates what changes over its life. Not `INSERT
/// OR REPLACE`: a replace deletes the row first, and its attempts with it.
fn upsert_delivery(conn: &Connection, d: &Delivery) -> DomainResult<()> {
    conn.prepare_cached(concat!(
        "INSERT INTO deliveries (",
        delivery_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempt_count = excluded.attempt_count, \
         next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, \
         round_attempts = excluded.round_attempts, lease_until = excluded.lease_until"
    ))
    .and_then(|mut s| {
        s.execute(params![
            d.id,
            d.webhook_id,
            d.organization_id,
            d.event_id,
            d.event_type.as_str(),
            d.state.as_str(),
            d.attempt_count,
            opt_ts(&d.next_attempt_at),
            ts(&d.created_at),
            ts(&d.updated_at),
            d.payload,
            d.round_attempts,
            opt_ts(&d.lease_until),
        ])
    })
    .map(drop)
    .map_err(sql_err("write the delivery"))
}

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<DeliveryAttempt> {
    Ok(DeliveryAttempt {
        number: r.get(0)?,
        attempted_at: get_ts(r, 1)?,
        status_code: r.get(2)?,
        latency_ms: r.get::<_, i64>(3)?.max(0) as u64,
        response_body: r.get(4)?,
        error: r.get(5)?,
    })
}

fn list_attempts(conn: &Connection, delivery_id: &str) -> rusqlite::Result<Vec<DeliveryAttempt>> {
    conn.prepare_cached(
        "SELECT number, attempted_at, status_code, latency_ms, response_body, error \
         FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY number",
    )?
    .query_map([delivery_id], attempt_from_row)?
    .collect()
}

/// How many resources of `kind` count against `owner`'s limit.
fn count_of(c: &Connection, kind: QuotaKind, owner: &str) -> rusqlite::Result<u64> {
    let sql = match kind {
        QuotaKind::Projects => "SELECT count(*) FROM projects WHERE organization_id = ?1 AND state <> 'deleted'",
        QuotaKind::Previews => "SELECT count(*) FROM previews WHERE project_id = ?1 AND state <> 'deleted'",
        QuotaKind::Backups => "SELECT count(*) FROM backups WHERE project_id = ?1 AND state <> 'deleted'",
        QuotaKind::Webhooks => "SELECT count(*) FROM webhooks WHERE organization_id = ?1",
    };
    let n: i64 = c.prepare_cached(sql)?.query_row([owner], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Refuses a claim over its limit. Inside the writer's IMMEDIATE
/// transaction, so the count cannot change before the insert.
fn check_quota(tx: &Transaction<'_>, q: &QuotaClaim) -> DomainResult<()> {
    let in_use = count_of(tx, q.kind, &q.owner).map_err(sql_err("count against the limit"))?;
    if in_use >= u64::from(q.limit) {
        return Err(q.exceeded(in_use));
    }
    Ok(())
}

/// The checks of an `Admission`, before anything is written.
fn admit(tx: &Transaction<'_>, job: &Job, admission: &Admission) -> DomainResult<()> {
    if let Some(project_id) = &admission.hold_project {
        let state: Option<String> = tx
            .prepare_cached("SELECT state FROM projects WHERE id = ?1")
            .and_then(|mut s| s.query_row([project_id], |r| r.get(0)).optional())
            .map_err(sql_err("read the project's state"))?;
        match state.as_deref() {
            None | Some("deleted") => return Err(DomainError::not_found("project", project_id)),
            Some("ready") => {}
            Some(other) => return Err(Admission::project_not_ready(project_id, other)),
        }
        tx.prepare_cached("INSERT INTO project_holds (job_id, project_id) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute([&job.id, project_id]))
            .map_err(sql_err("hold the project"))?;
    }
    if let Some(project_id) = &admission.project_unheld {
        let holder: Option<String> = tx
            .prepare_cached("SELECT job_id FROM project_holds WHERE project_id = ?1 ORDER BY job_id LIMIT 1")
            .and_then(|mut s| s.query_row([project_id], |r| r.get(0)).optional())
            .map_err(sql_err("check the project's holds"))?;
        if let Some(holder) = holder {
            return Err(Admission::project_held(project_id, &holder));
        }
    }
    if let Some(q) = &admission.quota {
        check_quota(tx, q)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn has_organizations(&self) -> DomainResult<bool> {
        self.read("check for organizations", |c| {
            c.prepare_cached("SELECT EXISTS (SELECT 1 FROM organizations)")?.query_row([], |r| r.get(0))
        })
    }

    async fn usage(&self, org_id: &str) -> DomainResult<Usage> {
        self.read("count the organization's resources", |c| {
            Ok(Usage {
                projects: count_of(c, QuotaKind::Projects, org_id)?,
                webhooks: count_of(c, QuotaKind::Webhooks, org_id)?,
            })
        })
    }

    async fn create_organization(&self, org: &Organization, first_key: &ApiKey) -> DomainResult<()> {
        self.write("create the organization", |tx| {
            tx.prepare_cached(concat!("INSERT INTO organizations (", org_cols!(), ") VALUES (?1, ?2, ?3, ?4)"))
                .and_then(|mut s| s.execute(params![org.id, org.name, ts(&org.created_at), ts(&org.updated_at)]))
                .map_err(sql_err("create the organization"))?;
            insert_key(tx, first_key)?;
            Ok(((), true))
        })
    }

    async fn get_organization(&self, id: &str) -> DomainResult<Option<Organization>> {
        self.read("read the organization", |c| {
            c.prepare_cached(concat!("SELECT ", org_cols!(), " FROM organizations WHERE id = ?1"))?
                .query_row([id], org_from_row)
                .optional()
        })
    }

    async fn update_organization(&self, org: &Organization) -> DomainResult<()> {
        let changed = self.execute(
            "update the organization",
            "UPDATE organizations SET name = ?2, created_at = ?3, updated_at = ?4 WHERE id = ?1",
            params![org.id, org.name, ts(&org.created_at), ts(&org.updated_at)],
        )?;
        if changed == 0 {
            return Err(DomainError::not_found("organization", &org.id));
        }
        Ok(())
    }

    async fn get_clerk_organization(&self, clerk_org_id: &str) -> DomainResult<Option<Organization>> {
        self.read("read the Clerk organization's link", |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                org_cols!(),
                " FROM organizations WHERE id = (SELECT organization_id FROM clerk_organizations WHERE clerk_org_id = ?1)"
            ))?
            .query_row([clerk_org_id], org_from_row)
            .optional()
        })
    }

    async fn link_clerk_organization(&self, clerk_org_id: &str, org: &Organization) -> DomainResult<Organization> {
        const OP: &str = "link the Clerk organization";
        self.write(OP, |tx| {
            let linked = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    org_cols!(),
                    " FROM organizations WHERE id = (SELECT organization_id FROM clerk_organizations WHERE clerk_org_id = ?1)"
                ))
                .and_then(|mut s| s.query_row([clerk_org_id], org_from_row).optional())
                .map_err(sql_err(OP))?;
            if let Some(existing) = linked {
                return Ok((existing, false));
            }
            tx.prepare_cached(concat!("INSERT INTO organizations (", org_cols!(), ") VALUES (?1, ?2, ?3, ?4)"))
                .and_then(|mut s| s.execute(params![org.id, org.name, ts(&org.created_at), ts(&org.updated_at)]))
                .map_err(sql_err(OP))?;
            tx.prepare_cached("INSERT INTO clerk_organizations (clerk_org_id, organization_id) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![clerk_org_id, org.id]))
                .map_err(sql_err(OP))?;
            Ok((org.clone(), true))
        })
    }

    async fn insert_api_key(&self, key: &ApiKey, held: Option<&HeldKey>) -> DomainResult<()> {
        self.write("insert the API key", |tx| {
            record_made(tx, held, &key.id)?;
            insert_key(tx, key).map(|_| ((), true))
        })
    }

    async fn get_api_key_by_hash(&self, hash: &str) -> DomainResult<Option<ApiKey>> {
        self.read("read the API key", |c| {
            c.prepare_cached(concat!("SELECT ", key_cols!(), " FROM api_keys WHERE hash = ?1"))?
                .query_row([hash], key_from_row)
                .optional()
        })
    }

    async fn get_api_key(&self, org_id: &str, key_id: &str) -> DomainResult<Option<ApiKey>> {
        self.read("read the API key", |c| {
            c.prepare_cached(concat!("SELECT ", key_cols!(), " FROM api_keys WHERE id = ?1 AND organization_id = ?2"))?
                .query_row([key_id, org_id], key_from_row)
                .optional()
        })
    }

    async fn list_api_keys(&self, org_id: &str, page: &Page) -> DomainResult<Vec<ApiKey>> {
        self.read("list API keys", |c| {
            query_page(c, paged!(key_cols!(), "api_keys", "organization_id = ?1"), org_id, page, key_from_row)
        })
    }

    async fn revoke_api_key(&self, org_id: &str, key_id: &str, at: Timestamp) -> DomainResult<Option<ApiKey>> {
        self.write("revoke the API key", |tx| {
            let key = tx
                .prepare_cached(concat!(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?3) \
                     WHERE id = ?1 AND organization_id = ?2 RETURNING ",
                    key_cols!()
                ))
                .and_then(|mut s| s.query_row(params![key_id, org_id, ts(&at)], key_from_row).optional())
                .map_err(sql_err("revoke the API key"))?;
            Ok((key, true))
        })
    }

    async fn touch_api_key(&self, key_id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()> {
        self.execute(
            "record the API key's use",
            "UPDATE api_keys SET last_used_at = ?2, last_used_ip = ?3 WHERE id = ?1",
            params![key_id, ts(&at), ip],
        )
        .map(drop)
    }

    async fn get_project(&self, id: &str) -> DomainResult<Option<Project>> {
        self.read("read the project", |c| {
            c.prepare_cached(concat!("SELECT ", project_cols!(), " FROM projects WHERE id = ?1"))?
                .query_row([id], project_from_row)
                .optional()
        })
    }

    async fn list_projects(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Project>> {
        self.read("list projects", |c| {
            query_page(
                c,
                paged!(project_cols!(), "projects", "organization_id = ?1 AND state <> 'deleted'"),
                org_id,
                page,
                project_from_row,
            )
        })
    }

    async fn update_project(&self, project: &Project) -> DomainResult<()> {
        let sql = "UPDATE projects SET organization_id = ?2, name = ?3, region = ?4, pg_version = ?5, \
                   state = ?6, database_name = ?7, role_name = ?8, created_at = ?9, updated_at = ?10, \
                   password_sealed = ?11, server_host = ?12, admin_password_sealed = ?13 WHERE id = ?1";
        let changed = self.execute("update the project", sql, project_params!(project))?;
        if changed == 0 {
            return Err(DomainError::not_found("project", &project.id));
        }
        Ok(())
    }

    async fn get_preview(&self, id: &str) -> DomainResult<Option<Preview>> {
        self.read("read the preview", |c| {
            c.prepare_cached(concat!("SELECT ", preview_cols!(), " FROM previews WHERE id = ?1"))?
                .query_row([id], preview_from_row)
                .optional()
        })
    }

    async fn list_previews(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Preview>> {
        self.read("list previews", |c| {
            query_page(
                c,
                paged!(preview_cols!(), "previews", "project_id = ?1 AND state <> 'deleted'"),
                project_id,
                page,
                preview_from_row,
            )
        })
    }

    async fn update_preview(&self, preview: &Preview) -> DomainResult<()> {
        let sql = "UPDATE previews SET organization_id = ?2, project_id = ?3, name = ?4, mode = ?5, state = ?6, \
                   database_name = ?7, role_name = ?8, ttl_hours = ?9, expires_at = ?10, created_at = ?11, \
                   updated_at = ?12, password_sealed = ?13, server_host = ?14 WHERE id = ?1";
        let changed = self.execute("update the preview", sql, preview_params!(preview))?;
        if changed == 0 {
            return Err(DomainError::not_found("preview", &preview.id));
        }
        Ok(())
    }

    async fn list_expired_previews(&self, now: Timestamp, limit: usize) -> DomainResult<Vec<Preview>> {
        let limit = sql_limit(limit);
        // The states come from the domain's rule (`PreviewState::EXPIRING`).
        let states: Vec<String> = PreviewState::EXPIRING.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "SELECT {} FROM previews WHERE state IN ({}) AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
            preview_cols!(),
            states.join(", ")
        );
        let listed: Vec<Preview> = self.read("list expired previews", |c| {
            c.prepare_cached(&sql)?.query_map(params![ts(&now), limit], preview_from_row)?.collect()
        })?;
        Ok(listed.into_iter().filter(|p| p.is_expired(now)).collect())
    }

    async fn get_backup(&self, id: &str) -> DomainResult<Option<Backup>> {
        self.read("read the backup", |c| {
            c.prepare_cached(&format!("SELECT {BACKUP_COLS} FROM backups WHERE id = ?1"))?
                .query_row([id], backup_from_row)
                .optional()
        })
    }

    async fn list_backups(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Backup>> {
        self.read("list backups", |c| {
            let first = format!(
                "SELECT {BACKUP_COLS} FROM backups WHERE project_id = ?1 AND state <> 'deleted' ORDER BY id DESC LIMIT ?2"
            );
            let next = format!(
                "SELECT {BACKUP_COLS} FROM backups WHERE project_id = ?1 AND state <> 'deleted' AND id < ?3 \
                 ORDER BY id DESC LIMIT ?2"
            );
            query_page(c, (&first, &next), project_id, page, backup_from_row)
        })
    }

    async fn put_backup(&self, backup: &Backup) -> DomainResult<()> {
        self.write("write the backup", |tx| upsert_backup(tx, backup).map(|()| ((), true)))
    }

    async fn get_restore(&self, id: &str) -> DomainResult<Option<Restore>> {
        self.read("read the restore", |c| {
            c.prepare_cached(&format!("SELECT {RESTORE_COLS} FROM restores WHERE id = ?1"))?
                .query_row([id], restore_from_row)
                .optional()
        })
    }

    async fn get_import(&self, id: &str) -> DomainResult<Option<Import>> {
        self.read("read the import", |c| {
            c.prepare_cached(&format!("SELECT {IMPORT_COLS} FROM imports WHERE id = ?1"))?
                .query_row([id], import_from_row)
                .optional()
        })
    }

    async fn begin_job(
        &self,
        job: &Job,
        write: &ResourceWrite,
        events: &[Event],
        admission: &Admission,
    ) -> DomainResult<Option<String>> {
        self.write("begin the job", |tx| {
            let holder: Option<String> = tx
                .prepare_cached("SELECT job_id FROM resource_locks WHERE resource_kind = ?1 AND resource_id = ?2")
                .and_then(|mut s| s.query_row([job.resource.kind.as_str(), &job.resource.id], |r| r.get(0)).optional())
                .map_err(sql_err("check the resource lock"))?;
            if holder.is_some() {
                return Ok((holder, false));
            }
            record_made(tx, admission.idempotency.as_ref(), &job.id)?;
            admit(tx, job, admission)?;
            write_resource(tx, write)?;
            insert_job(tx, job)?;
            tx.prepare_cached("INSERT INTO resource_locks (resource_kind, resource_id, job_id) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute([job.resource.kind.as_str(), &job.resource.id, &job.id]))
                .map_err(sql_err("lock the resource"))?;
            for event in events {
                insert_event(tx, event)?;
            }
            Ok((None, true))
        })
    }

    async fn get_job(&self, id: &str) -> DomainResult<Option<Job>> {
        self.read("read the job", |c| {
            c.prepare_cached(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = ?1"))?
                .query_row([id], job_from_row)
                .optional()
        })
    }

    async fn list_project_jobs(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Job>> {
        self.read("list the project's jobs", |c| {
            query_page(c, paged!(job_cols!(), "jobs", "project_id = ?1"), project_id, page, job_from_row)
        })
    }

    async fn update_job(&self, job: &Job, expected_version: u64) -> DomainResult<bool> {
        update_job_if(&db::lock(&self.writer), job, expected_version)
    }

    async fn finish_job(
        &self,
        job: &Job,
        expected_version: u64,
        write: &ResourceWrite,
        events: &[Event],
    ) -> DomainResult<bool> {
        self.write("finish the job", |tx| {
            if !update_job_if(tx, job, expected_version)? {
                return Ok((false, false));
            }
            // Counts are of rows not deleted: a deleted resource frees its
            // place by this write alone.
            tx.prepare_cached("DELETE FROM project_holds WHERE job_id = ?1")
                .and_then(|mut s| s.execute([&job.id]))
                .map_err(sql_err("release the project hold"))?;
            write_resource(tx, write)?;
            // Only this job's own lock: after a lost lease the resource may
            // already be locked by the job that came next.
            tx.prepare_cached(
                "DELETE FROM resource_locks WHERE resource_kind = ?1 AND resource_id = ?2 AND job_id = ?3",
            )
            .and_then(|mut s| s.execute([job.resource.kind.as_str(), &job.resource.id, &job.id]))
            .map_err(sql_err("release the resource lock"))?;
            for event in events {
                insert_event(tx, event)?;
            }
            Ok((true, true))
        })
    }

    async fn list_stuck_jobs(&self, stale_before: Timestamp, limit: usize) -> DomainResult<Vec<Job>> {
        self.read("list stuck jobs", |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                job_cols!(),
                " FROM jobs WHERE state NOT IN ('completed', 'failed') \
                 AND ((lease_expires_at IS NULL AND created_at < ?1) OR lease_expires_at < ?1) \
                 ORDER BY created_at, id LIMIT ?2"
            ))?
            .query_map(params![ts(&stale_before), sql_limit(limit)], job_from_row)?
            .collect()
        })
    }

    async fn list_unpublished_events(&self, limit: usize) -> DomainResult<Vec<Event>> {
        self.read("list unpublished events", |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE published_at IS NULL ORDER BY id LIMIT ?1"
            ))?
            .query_map([sql_limit(limit)], event_from_row)?
            .collect()
        })
    }

    async fn mark_event_published(&self, id: &str, at: Timestamp) -> DomainResult<()> {
        self.execute(
            "mark the event published",
            "UPDATE events SET published_at = ?2 WHERE id = ?1",
            params![id, ts(&at)],
        )
        .map(drop)
    }

    async fn list_events(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Event>> {
        self.read("list events", |c| {
            query_page(c, paged!(event_cols!(), "events", "organization_id = ?1"), org_id, page, event_from_row)
        })
    }

    async fn insert_webhook(
        &self,
        webhook: &WebhookEndpoint,
        quota: Option<&QuotaClaim>,
        held: Option<&HeldKey>,
    ) -> DomainResult<()> {
        self.write("create the webhook", |tx| {
            if let Some(q) = quota {
                check_quota(tx, q)?;
            }
            record_made(tx, held, &webhook.id)?;
            insert_webhook(tx, webhook).map(|_| ((), true))
        })
    }

    async fn get_webhook(&self, org_id: &str, id: &str) -> DomainResult<Option<WebhookEndpoint>> {
        self.read("read the webhook", |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                webhook_cols!(),
                " FROM webhooks WHERE id = ?1 AND organization_id = ?2"
            ))?
            .query_row([id, org_id], webhook_from_row)
            .optional()
        })
    }

    async fn list_webhooks(&self, org_id: &str, page: &Page) -> DomainResult<Vec<WebhookEndpoint>> {
        self.read("list webhooks", |c| {
            query_page(c, paged!(webhook_cols!(), "webhooks", "organization_id = ?1"), org_id, page, webhook_from_row)
        })
    }

    async fn update_webhook(&self, webhook: &WebhookEndpoint, expected: Timestamp, clear: bool) -> DomainResult<bool> {
        let w = webhook;
        let events = w.events_json()?;
        let n = self.execute(
            "update the webhook",
            "UPDATE webhooks SET url = ?3, events = ?4, project_id = ?5, description = ?6, \
             failing_since = CASE WHEN ?14 THEN NULL ELSE failing_since END, \
             enabled = ?7, disabled_reason = ?8, updated_at = ?9, secret_sealed = ?10, \
             previous_secret_sealed = ?11, previous_secret_expires_at = ?12 \
             WHERE id = ?1 AND organization_id = ?2 AND updated_at = ?13",
            params![
                w.id,
                w.organization_id,
                w.url,
                events,
                w.project_id,
                w.description,
                w.enabled,
                w.disabled_reason,
                ts(&w.updated_at),
                w.secret_sealed,
                w.previous_secret_sealed,
                opt_ts(&w.previous_secret_expires_at),
                ts(&expected),
                clear,
            ],
        )?;
        Ok(n == 1)
    }

    async fn set_webhook_health(
        &self,
        org_id: &str,
        id: &str,
        ok: bool,
        at: Timestamp,
    ) -> DomainResult<Option<Timestamp>> {
        self.write("record the webhook's health", |tx| {
            let sql = if ok {
                "UPDATE webhooks SET failing_since = NULL WHERE id = ?1 AND organization_id = ?2 AND ?3 IS NOT NULL"
            } else {
                "UPDATE webhooks SET failing_since = COALESCE(failing_since, ?3) WHERE id = ?1 AND organization_id = ?2"
            };
            tx.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![id, org_id, ts(&at)]))
                .map_err(sql_err("record the webhook's health"))?;
            let since: Option<Option<i64>> = tx
                .prepare_cached("SELECT failing_since FROM webhooks WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
                .map_err(sql_err("record the webhook's health"))?;
            Ok((since.flatten().map(chrono::DateTime::<chrono::Utc>::from_timestamp_nanos), true))
        })
    }

    async fn disable_webhook(&self, org_id: &str, id: &str, reason: &str, at: Timestamp) -> DomainResult<()> {
        self.execute(
            "disable the webhook",
            "UPDATE webhooks SET enabled = 0, disabled_reason = ?3, updated_at = ?4 WHERE id = ?1 AND organization_id = ?2",
            params![id, org_id, reason, ts(&at)],
        )
        .map(drop)
    }

    async fn delete_webhook(&self, org_id: &str, id: &str) -> DomainResult<bool> {
        self.write("delete the webhook", |tx| {
            let n = tx
                .prepare_cached("DELETE FROM webhooks WHERE id = ?1 AND organization_id = ?2")
                .and_then(|mut s| s.execute([id, org_id]))
                .map_err(sql_err("delete the webhook"))?;
            if n == 0 {
                return Ok((false, false));
            }
            tx.prepare_cached(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE webhook_id = ?1)",
            )
            .and_then(|mut s| s.execute([id]))
            .and_then(|_| tx.prepare_cached("DELETE FROM deliveries WHERE webhook_id = ?1")?.execute([id]))
            .map_err(sql_err("delete the webhook's deliveries"))?;
            Ok((true, true))
        })
    }

    async fn create_delivery(&self, delivery: &Delivery) -> DomainResult<Delivery> {
        self.write("create the delivery", |tx| {
            let existing = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    delivery_cols!(),
                    " FROM deliveries WHERE webhook_id = ?1 AND event_id = ?2"
                ))
                .and_then(|mut s| s.query_row([&delivery.webhook_id, &delivery.event_id], delivery_from_row).optional())
                .map_err(sql_err("create the delivery"))?;
            if let Some(d) = existing {
                return Ok((d, false));
            }
            upsert_delivery(tx, delivery)?;
            Ok((delivery.clone(), true))
        })
    }

    async fn get_delivery(&self, id: &str) -> DomainResult<Option<Delivery>> {
        self.read("read the delivery", |c| {
            c.prepare_cached(concat!("SELECT ", delivery_cols!(), " FROM deliveries WHERE id = ?1"))?
                .query_row([id], delivery_from_row)
                .optional()
        })
    }

    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> DomainResult<Vec<Delivery>> {
        self.read("list deliveries", |c| {
            let mut out = query_page(
                c,
                paged!(delivery_cols!(), "deliveries", "webhook_id = ?1"),
                webhook_id,
                page,
                delivery_from_row,
            )?;
            for d in &mut out {
                d.attempts = list_attempts(c, &d.id)?;
            }
            Ok(out)
        })
    }

    async fn begin_idempotent(&self, claim: &IdempotencyClaim) -> DomainResult<IdempotencyBegin> {
        const OP: &str = "claim the idempotency key";
        self.write(OP, |tx| {
            type Row = (
                String,
                i64,
                Option<i64>,
                Option<u16>,
                Option<String>,
                Option<String>,
                Option<Vec<u8>>,
                Option<String>,
            );
            let found: Option<Row> = tx
                .prepare_cached(
                    "SELECT fingerprint, expires_at, lease_until, status, content_type, location, body, made \
                     FROM idempotency_records WHERE key = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([&claim.key], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
                    })
                    .optional()
                })
                .map_err(sql_err(OP))?;
            let now = claim.now.timestamp_nanos_opt().unwrap_or(i64::MAX);
            let taken_over = match found {
                Some((_, expires_at, ..)) if expires_at <= now => false,
                Some((fingerprint, ..)) if fingerprint != claim.fingerprint => {
                    return Ok((IdempotencyBegin::Mismatch, false))
                }
                Some((_, _, _, Some(status), content_type, location, body, _)) => {
                    let answer = StoredAnswer { status, content_type, location, body: body.unwrap_or_default() };
                    return Ok((IdempotencyBegin::Replay(answer), false));
                }
                Some((_, _, Some(lease), ..)) if lease > now => return Ok((IdempotencyBegin::InFlight, false)),
                // The dead holder made something: take its lease, keep the rest.
                Some((.., Some(made))) => {
                    tx.prepare_cached("UPDATE idempotency_records SET lease_until = ?2 WHERE key = ?1")
                        .and_then(|mut s| s.execute(params![claim.key, ts(&claim.lease_until)]))
                        .map_err(sql_err(OP))?;
                    return Ok((IdempotencyBegin::Recovered { made }, true));
                }
                Some(_) => true,
                None => false,
            };
            tx.prepare_cached(
                "INSERT OR REPLACE INTO idempotency_records (key, fingerprint, created_at, expires_at, lease_until) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    claim.key,
                    claim.fingerprint,
                    ts(&claim.now),
                    ts(&claim.expires_at),
                    ts(&claim.lease_until)
                ])
            })
            .map_err(sql_err(OP))?;
            Ok((IdempotencyBegin::Started { taken_over }, true))
        })
    }

    async fn complete_idempotent(
        &self,
        key: &str,
        lease_until: Timestamp,
        answer: &StoredAnswer,
    ) -> DomainResult<bool> {
        let n = self.execute(
            "store the idempotent answer",
            "UPDATE idempotency_records SET status = ?3, content_type = ?4, location = ?5, body = ?6, lease_until = NULL \
             WHERE key = ?1 AND lease_until = ?2 AND status IS NULL",
            params![key, ts(&lease_until), answer.status, answer.content_type, answer.location, answer.body],
        )?;
        Ok(n == 1)
    }

    async fn release_idempotent(&self, key: &str, lease_until: Timestamp) -> DomainResult<()> {
        self.execute(
            "release the idempotency key",
            "DELETE FROM idempotency_records WHERE key = ?1 AND lease_until = ?2 AND status IS NULL AND made IS NULL",
            params![key, ts(&lease_until)],
        )?;
        Ok(())
    }

    async fn sweep_idempotent(&self, now: Timestamp) -> DomainResult<u64> {
        let n = self.execute(
            "sweep idempotency records",
            "DELETE FROM idempotency_records WHERE expires_at <= ?1",
            params![ts(&now)],
        )?;
        Ok(n as u64)
    }

    async fn claim_delivery(&self, id: &str, now: Timestamp, lease_until: Timestamp) -> DomainResult<Option<Delivery>> {
        self.write("claim the delivery", |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE deliveries SET lease_until = ?3 WHERE id = ?1 AND state = 'pending' \
                     AND next_attempt_at <= ?2 AND (lease_until IS NULL OR lease_until < ?2)",
                )
                .and_then(|mut s| s.execute(params![id, ts(&now), ts(&lease_until)]))
                .map_err(sql_err("claim the delivery"))?;
            if n == 0 {
                return Ok((None, false));
            }
            let d = tx
                .prepare_cached(concat!("SELECT ", delivery_cols!(), " FROM deliveries WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], delivery_from_row))
                .map_err(sql_err("claim the delivery"))?;
            Ok((Some(d), true))
        })
    }

    async fn record_attempt(&self, delivery: &Delivery, attempt: &DeliveryAttempt) -> DomainResult<()> {
        self.write("record the attempt", |tx| {
            upsert_delivery(tx, delivery)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO delivery_attempts \
                 (delivery_id, number, attempted_at, status_code, latency_ms, response_body, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    delivery.id,
                    attempt.number,
                    ts(&attempt.attempted_at),
                    attempt.status_code,
                    i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
                    attempt.response_body,
                    attempt.error,
                ])
            })
            .map_err(sql_err("record the attempt"))?;
            Ok(((), true))
        })
    }

    async fn update_delivery(&self, delivery: &Delivery) -> DomainResult<()> {
        self.write("update the delivery", |tx| upsert_delivery(tx, delivery).map(|()| ((), true)))
    }

    async fn list_due_deliveries(
        &self,
        due_before: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> DomainResult<Vec<Delivery>> {
        self.read("list due deliveries", |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?1 \
                  AND (lease_until IS NULL OR lease_until < ?2) ORDER BY next_attempt_at LIMIT ?3"
            ))?
            .query_map(params![ts(&due_before), ts(&now), sql_limit(limit)], delivery_from_row)?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stuck-jobs query names the terminal states in SQL; it must agree
    /// with the domain's `is_terminal`. For every state (the `match` stops
    /// compiling when one is added), a job in it whose lease lapsed long ago
    /// is listed as stuck exactly when that state is not terminal.
    #[tokio::test]
    async fn the_stuck_jobs_query_skips_exactly_the_terminal_states() {
        let states = [JobState::Queued, JobState::Running, JobState::Completed, JobState::Failed];
        for s in states {
            match s {
                JobState::Queued | JobState::Running | JobState::Completed | JobState::Failed => {}
            }
        }
        // Removed when the test ends, failed or not.
        struct TempDir(std::path::PathBuf);
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = TempDir(std::env::temp_dir().join(format!(
            "capydb-stuck-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        )));
        std::fs::create_dir_all(&dir.0).unwrap();
        let store = SqliteStore::open(&dir.0.join("s.sqlite3")).unwrap();
        let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
        let mut ids = Vec::new();
        for state in states {
            let id = capydb_domain::ids::new_id(capydb_domain::ids::JOB);
            let job = Job {
                id: id.clone(),
                kind: JobKind::Provision,
                state,
                organization_id: "org_1".into(),
                project_id: Some(format!("prj_{}", state.as_str())),
                resource: ResourceRef { kind: ResourceKind::Project, id: format!("prj_{}", state.as_str()) },
                attempt: 1,
                step: 0,
                created_at: long_ago,
                started_at: None,
                finished_at: None,
                error: None,
                version: 1,
                lease_owner: Some("w".into()),
                lease_expires_at: Some(long_ago),
                spec: JobSpec::Provision,
                waiting: None,
            };
            assert_eq!(store.begin_job(&job, &ResourceWrite::Nothing, &[], &Admission::default()).await.unwrap(), None);
            ids.push((state, id));
        }
        let stuck = store.list_stuck_jobs(chrono::Utc::now(), 100).await.unwrap();
        for (state, id) in ids {
            let listed = stuck.iter().any(|j| j.id == id);
            assert_eq!(listed, !state.is_terminal(), "a {} job with a lapsed lease: listed {listed}", state.as_str());
        }
    }
}
