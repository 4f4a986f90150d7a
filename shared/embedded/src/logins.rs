//! `LoginStore` on SQLite: device logins (`device_logins`) and CLI sessions
//! (`cli_sessions`), in the store's database file.
use async_trait::async_trait;
use capydb_domain::cli_login::{CliSession, DeviceLogin, DeviceLoginStatus, LoginDecision};
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{LoginStore, OrgRole, Page};
use capydb_domain::{DomainError, DomainResult};
use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::db::{get_opt_ts, get_ts, invalid_column, opt_ts, sql_err, sql_limit, ts};
use crate::store::SqliteStore;

macro_rules! login_cols {
    () => {
        "device_code_hash, user_code_hash, created_at, expires_at, interval_secs, last_polled_at, status, \
         user_id, organization_id, clerk_org_id, role, decided_at, cli_session_id, version"
    };
}
macro_rules! cli_cols {
    () => {
        "id, organization_id, user_id, clerk_org_id, role, prefix, last4, created_at, expires_at, revoked_at, \
         last_used_at, last_used_ip, hash"
    };
}

fn role_at(r: &Row<'_>, idx: usize) -> rusqlite::Result<OrgRole> {
    let role: String = r.get(idx)?;
    OrgRole::parse(&role).ok_or_else(|| invalid_column(idx, "unknown organization role"))
}

fn login_from_row(r: &Row<'_>) -> rusqlite::Result<DeviceLogin> {
    let status: String = r.get(6)?;
    let status = DeviceLoginStatus::parse(&status).ok_or_else(|| invalid_column(6, "unknown device login status"))?;
    let decision = match r.get::<_, Option<String>>(7)? {
        None => None,
        Some(user_id) => Some(LoginDecision {
            user_id,
            organization_id: r.get(8)?,
            clerk_org_id: r.get(9)?,
            role: role_at(r, 10)?,
            at: get_ts(r, 11)?,
        }),
    };
    let version: i64 = r.get(13)?;
    Ok(DeviceLogin {
        device_code_hash: r.get(0)?,
        user_code_hash: r.get(1)?,
        created_at: get_ts(r, 2)?,
        expires_at: get_ts(r, 3)?,
        interval_secs: r.get(4)?,
        last_polled_at: get_opt_ts(r, 5)?,
        status,
        decision,
        cli_session_id: r.get(12)?,
        version: u64::try_from(version).map_err(|_| invalid_column(13, "negative version"))?,
    })
}

fn cli_from_row(r: &Row<'_>) -> rusqlite::Result<CliSession> {
    Ok(CliSession {
        id: r.get(0)?,
        organization_id: r.get(1)?,
        user_id: r.get(2)?,
        clerk_org_id: r.get(3)?,
        role: role_at(r, 4)?,
        prefix: r.get(5)?,
        last4: r.get(6)?,
        created_at: get_ts(r, 7)?,
        expires_at: get_ts(r, 8)?,
        revoked_at: get_opt_ts(r, 9)?,
        last_used_at: get_opt_ts(r, 10)?,
        last_used_ip: r.get(11)?,
        hash: r.get(12)?,
    })
}

fn version(v: u64) -> DomainResult<i64> {
    i64::try_from(v).map_err(|_| DomainError::internal("a device login's version is out of range"))
}

/// Runs `sql` with a login's columns in `login_cols!()` order as ?1..?14,
/// then `extra` (?15 on).
fn with_login(
    conn: &Connection,
    sql: &str,
    login: &DeviceLogin,
    extra: &[&dyn ToSql],
    op: &'static str,
) -> DomainResult<usize> {
    let d = login.decision.as_ref();
    let (created, expires, polled) = (ts(&login.created_at), ts(&login.expires_at), opt_ts(&login.last_polled_at));
    let (user, org, clerk) = (d.map(|d| &d.user_id), d.map(|d| &d.organization_id), d.map(|d| &d.clerk_org_id));
    let (role, decided) = (d.map(|d| d.role.as_str()), d.map(|d| ts(&d.at)));
    let (status, v) = (login.status.as_str(), version(login.version)?);
    let mut all: Vec<&dyn ToSql> = vec![
        &login.device_code_hash,
        &login.user_code_hash,
        &created,
        &expires,
        &login.interval_secs,
        &polled,
        &status,
        &user,
        &org,
        &clerk,
        &role,
        &decided,
        &login.cli_session_id,
        &v,
    ];
    all.extend_from_slice(extra);
    conn.prepare_cached(sql).and_then(|mut s| s.execute(&*all)).map_err(sql_err(op))
}

/// Writes every column of `login` where its stored version is `expected`.
fn update_login(conn: &Connection, login: &DeviceLogin, expected: u64, op: &'static str) -> DomainResult<bool> {
    let sql = "UPDATE device_logins SET user_code_hash = ?2, created_at = ?3, expires_at = ?4, interval_secs = ?5, \
               last_polled_at = ?6, status = ?7, user_id = ?8, organization_id = ?9, clerk_org_id = ?10, role = ?11, \
               decided_at = ?12, cli_session_id = ?13, version = ?14 WHERE device_code_hash = ?1 AND version = ?15";
    let expected = version(expected)?;
    Ok(with_login(conn, sql, login, &[&expected], op)? == 1)
}

#[async_trait]
impl LoginStore for SqliteStore {
    async fn insert_device_login(&self, login: &DeviceLogin, now: Timestamp) -> DomainResult<bool> {
        const OP: &str = "store the device login";
        self.write(OP, |tx| {
            // An expired login gives its user code up.
            tx.prepare_cached("DELETE FROM device_logins WHERE user_code_hash = ?1 AND expires_at <= ?2")
                .and_then(|mut s| s.execute(params![login.user_code_hash, ts(&now)]))
                .map_err(sql_err(OP))?;
            let held = tx
                .prepare_cached("SELECT 1 FROM device_logins WHERE user_code_hash = ?1")
                .and_then(|mut s| s.exists([&login.user_code_hash]))
                .map_err(sql_err(OP))?;
            if held {
                return Ok((false, false));
            }
            let sql = concat!(
                "INSERT INTO device_logins (",
                login_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            );
            with_login(tx, sql, login, &[], OP)?;
            Ok((true, true))
        })
    }

    async fn get_device_login(&self, device_code_hash: &str) -> DomainResult<Option<DeviceLogin>> {
        self.read("read the device login", |c| {
            c.prepare_cached(concat!("SELECT ", login_cols!(), " FROM device_logins WHERE device_code_hash = ?1"))?
                .query_row([device_code_hash], login_from_row)
                .optional()
        })
    }

    async fn get_device_login_by_user_code(&self, user_code_hash: &str) -> DomainResult<Option<DeviceLogin>> {
        self.read("read the device login", |c| {
            c.prepare_cached(concat!("SELECT ", login_cols!(), " FROM device_logins WHERE user_code_hash = ?1"))?
                .query_row([user_code_hash], login_from_row)
                .optional()
        })
    }

    async fn update_device_login(&self, login: &DeviceLogin, expected_version: u64) -> DomainResult<bool> {
        const OP: &str = "update the device login";
        self.write(OP, |tx| update_login(tx, login, expected_version, OP).map(|done| (done, done)))
    }

    async fn exchange_device_login(
        &self,
        login: &DeviceLogin,
        expected_version: u64,
        session: &CliSession,
    ) -> DomainResult<bool> {
        const OP: &str = "exchange the device code";
        self.write(OP, |tx| {
            if !update_login(tx, login, expected_version, OP)? {
                return Ok((false, false));
            }
            tx.prepare_cached(concat!(
                "INSERT INTO cli_sessions (",
                cli_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    session.id,
                    session.organization_id,
                    session.user_id,
                    session.clerk_org_id,
                    session.role.as_str(),
                    session.prefix,
                    session.last4,
                    ts(&session.created_at),
                    ts(&session.expires_at),
                    opt_ts(&session.revoked_at),
                    opt_ts(&session.last_used_at),
                    session.last_used_ip,
                    session.hash,
                ])
            })
            .map_err(sql_err(OP))?;
            Ok((true, true))
        })
    }

    async fn get_cli_session_by_hash(&self, hash: &str) -> DomainResult<Option<CliSession>> {
        self.read("read the CLI session", |c| {
            c.prepare_cached(concat!("SELECT ", cli_cols!(), " FROM cli_sessions WHERE hash = ?1"))?
                .query_row([hash], cli_from_row)
                .optional()
        })
    }

    async fn list_cli_sessions(&self, org_id: &str, user_id: &str, page: &Page) -> DomainResult<Vec<CliSession>> {
        const WHERE: &str = " FROM cli_sessions WHERE organization_id = ?1 AND user_id = ?2";
        let limit = sql_limit(page.limit);
        self.read("list CLI sessions", |c| match &page.before {
            None => c
                .prepare_cached(&format!("SELECT {}{WHERE} ORDER BY id DESC LIMIT ?3", cli_cols!()))?
                .query_map(params![org_id, user_id, limit], cli_from_row)?
                .collect(),
            Some(before) => c
                .prepare_cached(&format!("SELECT {}{WHERE} AND id < ?4 ORDER BY id DESC LIMIT ?3", cli_cols!()))?
                .query_map(params![org_id, user_id, limit, before], cli_from_row)?
                .collect(),
        })
    }

    async fn revoke_cli_session(
        &self,
        org_id: &str,
        user_id: &str,
        id: &str,
        at: Timestamp,
    ) -> DomainResult<Option<CliSession>> {
        const OP: &str = "revoke the CLI session";
        self.write(OP, |tx| {
            let session = tx
                .prepare_cached(concat!(
                    "UPDATE cli_sessions SET revoked_at = coalesce(revoked_at, ?4) \
                     WHERE id = ?1 AND organization_id = ?2 AND user_id = ?3 RETURNING ",
                    cli_cols!()
                ))
                .and_then(|mut s| s.query_row(params![id, org_id, user_id, ts(&at)], cli_from_row).optional())
                .map_err(sql_err(OP))?;
            Ok((session, true))
        })
    }

    async fn touch_cli_session(&self, id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()> {
        self.execute(
            "record the CLI session's use",
            "UPDATE cli_sessions SET last_used_at = ?2, last_used_ip = ?3 WHERE id = ?1",
            params![id, ts(&at), ip],
        )
        .map(drop)
    }

    async fn sweep_device_logins(&self, now: Timestamp) -> DomainResult<u64> {
        self.execute(
            "sweep expired device logins",
            "DELETE FROM device_logins WHERE expires_at <= ?1",
            params![ts(&now)],
        )
        .map(|n| n as u64)
    }
}
