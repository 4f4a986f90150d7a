//! What the store and the queue share: opening a connection with the right
//! pragmas, the schema (one migration list for the whole file, since
//! `PRAGMA user_version` is per database), timestamp encoding and the mapping
//! of SQLite errors to `DomainError`.
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use capydb_domain::model::Timestamp;
use capydb_domain::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use rusqlite::types::{ToSql, ToSqlOutput};
use rusqlite::{ffi, Connection, ErrorCode, OpenFlags, TransactionBehavior};

/// How long a statement waits for another connection's write lock before
/// failing with `SQLITE_BUSY` (reported as `Unavailable`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements are prepared once per connection; this covers every statement
/// of the store with room to spare.
const STATEMENT_CACHE: usize = 64;

/// Schema versions, applied in order; `PRAGMA user_version` records how many
/// ran. Append only: a released migration is never edited.
///
/// Timestamps are INTEGER nanoseconds since the Unix epoch, so they sort as
/// numbers and round-trip `DateTime<Utc>` exactly.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE organizations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    last4           TEXT NOT NULL,
    scopes          TEXT NOT NULL, -- JSON array of scope names
    project_id      TEXT,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    last_used_at    INTEGER,
    last_used_ip    TEXT,
    created_at      INTEGER NOT NULL,
    hash            TEXT NOT NULL
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys(hash);
CREATE INDEX api_keys_org ON api_keys(organization_id, id);

CREATE TABLE projects (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    name            TEXT NOT NULL,
    region          TEXT NOT NULL,
    pg_version      TEXT NOT NULL,
    state           TEXT NOT NULL,
    database_name   TEXT NOT NULL,
    role_name       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    password_sealed TEXT NOT NULL
);
CREATE INDEX projects_org ON projects(organization_id, id);

-- No foreign keys on jobs and events: they are history and may refer to
-- resources of kinds this schema has no table for.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    organization_id  TEXT NOT NULL,
    project_id       TEXT,
    resource_kind    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    step             INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    error            TEXT,
    version          INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    params           TEXT NOT NULL -- JSON
);
CREATE INDEX jobs_project ON jobs(project_id, id) WHERE project_id IS NOT NULL;
-- Same predicate as the stuck-jobs query, so the planner can use it.
CREATE INDEX jobs_active ON jobs(created_at) WHERE state NOT IN ('completed', 'failed');

-- At most one running lifecycle job per resource.
CREATE TABLE resource_locks (
    resource_kind TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    PRIMARY KEY (resource_kind, resource_id)
) WITHOUT ROWID;

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    project_id      TEXT,
    created_at      INTEGER NOT NULL,
    data            TEXT NOT NULL, -- JSON
    published_at    INTEGER
);
CREATE INDEX events_org ON events(organization_id, id);
CREATE INDEX events_unpublished ON events(id) WHERE published_at IS NULL;

-- Queues, shared by every `SqliteQueue` on this file and told apart by name.
CREATE TABLE queue_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX queue_messages_queue ON queue_messages(queue, visible_at);

CREATE TABLE queue_dead_letters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    moved_at      INTEGER NOT NULL
);
CREATE INDEX queue_dead_letters_queue ON queue_dead_letters(queue, id);
"#,
    r#"
CREATE TABLE previews (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    project_id      TEXT NOT NULL REFERENCES projects(id),
    name            TEXT NOT NULL,
    mode            TEXT NOT NULL,
    state           TEXT NOT NULL,
    database_name   TEXT NOT NULL,
    role_name       TEXT NOT NULL,
    ttl_hours       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    password_sealed TEXT NOT NULL
);
CREATE INDEX previews_project ON previews(project_id, id);
-- A name is unique among a project's live previews; a deleted one frees it.
CREATE UNIQUE INDEX previews_live_name ON previews(project_id, name) WHERE state <> 'deleted';
CREATE INDEX previews_expiry ON previews(expires_at) WHERE state IN ('ready', 'failed');
"#,
    r#"
CREATE TABLE backups (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    project_id      TEXT NOT NULL REFERENCES projects(id),
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    size_bytes      INTEGER,
    sha256          TEXT,
    created_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX backups_project ON backups(project_id, id);

CREATE TABLE restores (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    project_id       TEXT NOT NULL REFERENCES projects(id),
    backup_id        TEXT NOT NULL,
    mode             TEXT NOT NULL,
    state            TEXT NOT NULL,
    preview_id       TEXT,
    safety_backup_id TEXT,
    job_id           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);

CREATE TABLE imports (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    project_id       TEXT NOT NULL REFERENCES projects(id),
    source           TEXT NOT NULL, -- the URL without its password
    state            TEXT NOT NULL,
    safety_backup_id TEXT,
    job_id           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
"#,
    r#"
CREATE TABLE webhooks (
    id                         TEXT PRIMARY KEY,
    organization_id            TEXT NOT NULL REFERENCES organizations(id),
    url                        TEXT NOT NULL,
    events                     TEXT NOT NULL, -- JSON array
    project_id                 TEXT,
    description                TEXT,
    enabled                    INTEGER NOT NULL,
    disabled_reason            TEXT,
    failing_since              INTEGER,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL,
    secret_sealed              TEXT NOT NULL,
    previous_secret_sealed     TEXT,
    previous_secret_expires_at INTEGER
);
CREATE INDEX webhooks_org ON webhooks(organization_id, id);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt_count   INTEGER NOT NULL,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    round_attempts  INTEGER NOT NULL,
    lease_until     INTEGER
);
-- One delivery of an event per endpoint, however often the event is handled.
CREATE UNIQUE INDEX deliveries_event ON deliveries(webhook_id, event_id);
CREATE INDEX deliveries_webhook ON deliveries(webhook_id, id);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id   TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    attempted_at  INTEGER NOT NULL,
    status_code   INTEGER,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT,
    error         TEXT,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
"#,
    // 2: a job inside a project (a preview, a backup) holds the project
    // until it finishes; the project's deletion starts only when none does.
    // Jobs already running when this version arrives hold theirs too.
    r#"
CREATE TABLE project_holds (
    job_id     TEXT PRIMARY KEY,
    project_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX project_holds_project ON project_holds(project_id);
INSERT INTO project_holds (job_id, project_id)
    SELECT id, project_id FROM jobs
    WHERE state NOT IN ('completed', 'failed') AND project_id IS NOT NULL AND resource_kind <> 'project';
"#,
    // 3: `Idempotency-Key` records. `lease_until` is set while the request
    // that holds the key runs, `status` once its answer is stored.
    r#"
CREATE TABLE idempotency_records (
    key          TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    lease_until  INTEGER,
    status       INTEGER,
    content_type TEXT,
    location     TEXT,
    body         BLOB
) WITHOUT ROWID;
CREATE INDEX idempotency_records_expiry ON idempotency_records(expires_at);
"#,
    // 4: organizations made for Clerk organizations, by Clerk's id.
    r#"
CREATE TABLE clerk_organizations (
    clerk_org_id    TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL UNIQUE REFERENCES organizations(id)
) WITHOUT ROWID;
"#,
    // 5: who created an API key (a session's user id or a key's id).
    r#"
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
"#,
    // 6: the CLI login's device logins and the CLI sessions it makes.
    r#"
CREATE TABLE device_logins (
    device_code_hash TEXT PRIMARY KEY,
    user_code_hash   TEXT NOT NULL UNIQUE,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    interval_secs    INTEGER NOT NULL,
    last_polled_at   INTEGER,
    status           TEXT NOT NULL,
    user_id          TEXT,
    organization_id  TEXT,
    clerk_org_id     TEXT,
    role             TEXT,
    decided_at       INTEGER,
    cli_session_id   TEXT,
    version          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX device_logins_expiry ON device_logins(expires_at);

CREATE TABLE cli_sessions (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    user_id         TEXT NOT NULL,
    clerk_org_id    TEXT NOT NULL,
    role            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    last4           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    last_used_at    INTEGER,
    last_used_ip    TEXT,
    hash            TEXT NOT NULL UNIQUE
);
CREATE INDEX cli_sessions_user ON cli_sessions(organization_id, user_id, id);
"#,
    // 7: what an idempotent request made (a job, an API key, a webhook
    // endpoint), written in the same transaction.
    r#"
ALTER TABLE idempotency_records ADD COLUMN made TEXT;
"#,
    // 8: what a running job waits on (`JobWait::encode`), while it waits.
    r#"
ALTER TABLE jobs ADD COLUMN waiting TEXT;
"#,
    // 9: a dedicated deployment's server of each project and preview (its
    // host once made) and the admin password a project's servers share.
    r#"
ALTER TABLE projects ADD COLUMN server_host TEXT;
ALTER TABLE projects ADD COLUMN admin_password_sealed TEXT;
ALTER TABLE previews ADD COLUMN server_host TEXT;
"#,
];

/// Opens the read-write connection, switches the file to WAL and brings the
/// schema up to date. Safe to race with another process doing the same: the
/// migration runs in an IMMEDIATE transaction, so only one applies it.
pub(crate) fn open_writer(path: &Path) -> DomainResult<Connection> {
    // SQLite would create a new database 0644 (less the umask), and it gives
    // the -wal and -shm files it makes later the database's own mode. Created
    // 0600 here first, all three stay private to their owner whatever the
    // process's umask: they hold key hashes, client addresses, webhook URLs.
    // Only ever a new file: opening and closing an existing one would drop
    // the POSIX locks this process's connections hold on it (closing any
    // descriptor of a file releases them all), and another process would
    // then take itself for the last connection and checkpoint the WAL away.
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(DomainError::Internal(format!("could not create the database file: {}", e.kind()))),
    }
    let mut conn = Connection::open(path).map_err(sql_err("open the database"))?;
    configure(&conn).map_err(sql_err("configure the database"))?;
    // WAL lets readers run while the writer commits; it is persistent, so
    // only the first open of a file actually changes anything.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql_err("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DomainError::Internal(format!("the database refused WAL mode (journal_mode is {mode})")));
    }
    // NORMAL in WAL mode is durable against process crashes, and loses at most
    // the last transactions on power loss, in exchange for no fsync per commit.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err("configure the database"))?;
    conn.pragma_update(None, "foreign_keys", true).map_err(sql_err("configure the database"))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a connection that can only read; used for the store's read pool.
/// Needs the file to exist in WAL mode already (open the writer first).
pub(crate) fn open_reader(path: &Path) -> DomainResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err("open the database"))?;
    configure(&conn).map_err(sql_err("configure the database"))?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

fn migrate(conn: &mut Connection) -> DomainResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err("migrate the schema"))?;
    let current: i64 =
        tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_err("read the schema version"))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(DomainError::Internal(format!(
            "the database has schema version {current}, newer than this build knows ({}); upgrade CapyDB",
            MIGRATIONS.len()
        )));
    }
    if current == MIGRATIONS.len() {
        return Ok(());
    }
    for migration in &MIGRATIONS[current..] {
        tx.execute_batch(migration).map_err(sql_err("migrate the schema"))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64).map_err(sql_err("migrate the schema"))?;
    tx.commit().map_err(sql_err("migrate the schema"))
}

/// Locks a connection. A panic while it was held leaves nothing behind that
/// matters (a `Transaction` rolls back when dropped, statements reset), so a
/// poisoned mutex is recovered rather than turning the store off for good;
/// any transaction a panic left open anyway is rolled back here.
pub(crate) fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
    reset(guard)
}

pub(crate) fn reset(guard: MutexGuard<'_, Connection>) -> MutexGuard<'_, Connection> {
    if !guard.is_autocommit() {
        // Best effort: if even this fails, the next statement reports it.
        let _ = guard.execute_batch("ROLLBACK");
    }
    guard
}

/// A `DomainError` for a failed SQLite call. The message names the operation
/// and SQLite's error class, never a parameter value: it ends up in logs.
pub(crate) fn sql_err(op: &'static str) -> impl Fn(rusqlite::Error) -> DomainError {
    move |e| map_sql_error(op, &e)
}

pub(crate) fn map_sql_error(op: &str, e: &rusqlite::Error) -> DomainError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                DomainError::Unavailable(format!("store is busy: could not {op}; retry"))
            }
            ErrorCode::ConstraintViolation
                if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                DomainError::Conflict(format!("could not {op}: it already exists"))
            }
            ErrorCode::ConstraintViolation if f.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                DomainError::Internal(format!("could not {op}: it refers to a record that does not exist"))
            }
            // `ffi::Error`'s Display is SQLite's generic description of the
            // code; the detailed message (second field) is left out because
            // it can quote SQL.
            _ => DomainError::Internal(format!("store could not {op}: {f}")),
        },
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
            DomainError::Internal(format!("store could not {op}: a stored value is invalid ({inner})"))
        }
        rusqlite::Error::ToSqlConversionFailure(inner) => {
            DomainError::Internal(format!("store could not {op}: {inner}"))
        }
        _ => DomainError::Internal(format!("store could not {op}: {}", error_class(e))),
    }
}

/// The variant of a rusqlite error without its payload, which may hold data.
fn error_class(e: &rusqlite::Error) -> &'static str {
    match e {
        rusqlite::Error::QueryReturnedNoRows => "no rows",
        rusqlite::Error::InvalidColumnType(..) => "unexpected column type",
        rusqlite::Error::InvalidColumnIndex(_) | rusqlite::Error::InvalidColumnName(_) => "unknown column",
        rusqlite::Error::IntegralValueOutOfRange(..) => "integer out of range",
        rusqlite::Error::Utf8Error(_) => "invalid UTF-8",
        rusqlite::Error::InvalidParameterCount(..) | rusqlite::Error::InvalidParameterName(_) => "bad parameters",
        _ => "unexpected driver error",
    }
}

/// A conversion failure for a stored value that does not parse, e.g. an
/// unknown enum name written by a newer build.
pub(crate) fn invalid_column(idx: usize, what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, what.into())
}

/// A timestamp as a SQL parameter: nanoseconds since the epoch. Representable
/// from 1677-09-21 to 2262-04-11; outside that range binding fails.
pub(crate) struct Ts<'a>(pub &'a Timestamp);

impl ToSql for Ts<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0
            .timestamp_nanos_opt()
            .map(ToSqlOutput::from)
            .ok_or_else(|| rusqlite::Error::ToSqlConversionFailure("timestamp outside 1677..2262".into()))
    }
}

pub(crate) fn ts(t: &Timestamp) -> Ts<'_> {
    Ts(t)
}

pub(crate) fn opt_ts(t: &Option<Timestamp>) -> Option<Ts<'_>> {
    t.as_ref().map(Ts)
}

pub(crate) fn get_ts(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    Ok(DateTime::<Utc>::from_timestamp_nanos(row.get(idx)?))
}

pub(crate) fn get_opt_ts(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(DateTime::<Utc>::from_timestamp_nanos))
}

/// Nanoseconds since the epoch, now (the queue runs on the real clock).
pub(crate) fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A `usize` limit as SQL wants it; anything past `i64::MAX` means "all".
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
