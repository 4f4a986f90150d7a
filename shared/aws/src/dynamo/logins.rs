//! `LoginStore` on DynamoDB (layout: `docs/data-model.md`).
//!
//! A device login is one item under its device code's hash (`DEVICE#…`),
//! written whole and conditioned on its `version`; its user code is claimed
//! by a second item (`USERCODE#…`, pointing at the device code's hash) in
//! the same transaction, which an expired login gives up. A CLI session is
//! an item under its id (`CLI#…`, listed per person in gsi1) plus a hash
//! claim (`CLIHASH#…`), like an API key. The exchange writes the spent
//! device login and both session items in one transaction. The table's TTL
//! removes device logins and user code claims a day after they expire.
use async_trait::async_trait;
use capydb_domain::cli_login::{CliSession, DeviceLogin, DeviceLoginStatus, LoginDecision};
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{LoginStore, OrgRole, Page};
use capydb_domain::DomainResult;

use super::item::{n, s, ts, Item, ItemBuilder, Reader};
use super::{opt_s, DynamoStore, TxOutcome, Update};

const DEVICE_SK: &str = "DEVICE";
const USER_CODE_SK: &str = "USERCODE";
const CLI_SK: &str = "CLI";
const CLI_HASH_SK: &str = "CLIHASH";

fn device_pk(device_code_hash: &str) -> String {
    format!("DEVICE#{device_code_hash}")
}
fn user_code_pk(user_code_hash: &str) -> String {
    format!("USERCODE#{user_code_hash}")
}
fn cli_pk(id: &str) -> String {
    format!("CLI#{id}")
}
fn cli_hash_pk(hash: &str) -> String {
    format!("CLIHASH#{hash}")
}
/// gsi1 partition of one person's CLI sessions in one organization.
fn cli_sessions_of(org_id: &str, user_id: &str) -> String {
    format!("ORG#{org_id}#USER#{user_id}#CLI")
}

/// A day past expiry, in seconds: the table's TTL attribute.
fn ttl_after(t: &Timestamp) -> i64 {
    t.timestamp() + 24 * 3600
}

fn device_item(l: &DeviceLogin) -> Item {
    let d = l.decision.as_ref();
    ItemBuilder::new(device_pk(&l.device_code_hash), DEVICE_SK)
        .s("user_code_hash", &l.user_code_hash)
        .t("created_at", &l.created_at)
        .t("expires_at", &l.expires_at)
        .n("interval_secs", l.interval_secs)
        .ot("last_polled_at", l.last_polled_at.as_ref())
        .s("status", l.status.as_str())
        .os("user_id", d.map(|d| d.user_id.as_str()))
        .os("organization_id", d.map(|d| d.organization_id.as_str()))
        .os("clerk_org_id", d.map(|d| d.clerk_org_id.as_str()))
        .os("role", d.map(|d| d.role.as_str()))
        .ot("decided_at", d.map(|d| &d.at))
        .os("cli_session_id", l.cli_session_id.as_deref())
        .n("version", l.version)
        .n("ttl", ttl_after(&l.expires_at))
        .build()
}

fn device_from(it: &Item) -> DomainResult<DeviceLogin> {
    let r = Reader::new(it, "device login");
    let hash = r.s("pk")?.strip_prefix("DEVICE#").map(str::to_string).ok_or_else(|| r.bad("pk", "is not DEVICE#…"))?;
    let decision = match r.os("user_id")? {
        None => None,
        Some(user_id) => Some(LoginDecision {
            user_id,
            organization_id: r.s("organization_id")?,
            clerk_org_id: r.s("clerk_org_id")?,
            role: r.e("role", OrgRole::parse)?,
            at: r.t("decided_at")?,
        }),
    };
    Ok(DeviceLogin {
        device_code_hash: hash,
        user_code_hash: r.s("user_code_hash")?,
        created_at: r.t("created_at")?,
        expires_at: r.t("expires_at")?,
        interval_secs: r.n("interval_secs")?,
        last_polled_at: r.ot("last_polled_at")?,
        status: r.e("status", DeviceLoginStatus::parse)?,
        decision,
        cli_session_id: r.os("cli_session_id")?,
        version: r.n("version")?,
    })
}

fn cli_item(c: &CliSession) -> Item {
    ItemBuilder::new(cli_pk(&c.id), CLI_SK)
        .index("gsi1", Some((cli_sessions_of(&c.organization_id, &c.user_id), c.id.clone())))
        .s("id", &c.id)
        .s("organization_id", &c.organization_id)
        .s("user_id", &c.user_id)
        .s("clerk_org_id", &c.clerk_org_id)
        .s("role", c.role.as_str())
        .s("prefix", &c.prefix)
        .s("last4", &c.last4)
        .t("created_at", &c.created_at)
        .t("expires_at", &c.expires_at)
        .ot("revoked_at", c.revoked_at.as_ref())
        .ot("last_used_at", c.last_used_at.as_ref())
        .os("last_used_ip", c.last_used_ip.as_deref())
        .s("hash", &c.hash)
        .build()
}

fn cli_from(it: &Item) -> DomainResult<CliSession> {
    let r = Reader::new(it, "CLI session");
    Ok(CliSession {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        user_id: r.s("user_id")?,
        clerk_org_id: r.s("clerk_org_id")?,
        role: r.e("role", OrgRole::parse)?,
        prefix: r.s("prefix")?,
        last4: r.s("last4")?,
        created_at: r.t("created_at")?,
        expires_at: r.t("expires_at")?,
        revoked_at: r.ot("revoked_at")?,
        last_used_at: r.ot("last_used_at")?,
        last_used_ip: r.os("last_used_ip")?,
        hash: r.s("hash")?,
    })
}

fn same_version(expected: u64) -> Option<(&'static str, Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>)> {
    Some(("version = :expected", vec![(":expected", n(expected))]))
}

#[async_trait]
impl LoginStore for DynamoStore {
    async fn insert_device_login(&self, login: &DeviceLogin, now: Timestamp) -> DomainResult<bool> {
        let t = &self.table;
        let mut tx = super::Tx::default();
        tx.put(t, device_item(login), Some(("attribute_not_exists(pk)", vec![])))?;
        let claim = ItemBuilder::new(user_code_pk(&login.user_code_hash), USER_CODE_SK)
            .s("device_code_hash", &login.device_code_hash)
            .t("expires_at", &login.expires_at)
            .n("ttl", ttl_after(&login.expires_at))
            .build();
        tx.put(t, claim, Some(("attribute_not_exists(pk) OR expires_at <= :now", vec![(":now", ts(&now))])))?;
        Ok(matches!(self.commit("store the device login", &tx).await?, TxOutcome::Committed))
    }

    async fn get_device_login(&self, device_code_hash: &str) -> DomainResult<Option<DeviceLogin>> {
        self.get_as("read the device login", device_pk(device_code_hash), DEVICE_SK, device_from).await
    }

    async fn get_device_login_by_user_code(&self, user_code_hash: &str) -> DomainResult<Option<DeviceLogin>> {
        const WHAT: &str = "read the device login";
        let Some(claim) = self.get(WHAT, user_code_pk(user_code_hash), USER_CODE_SK).await? else {
            return Ok(None);
        };
        let device = Reader::new(&claim, "user code claim").s("device_code_hash")?;
        Ok(self
            .get_as(WHAT, device_pk(&device), DEVICE_SK, device_from)
            .await?
            .filter(|l| l.user_code_hash == user_code_hash))
    }

    async fn update_device_login(&self, login: &DeviceLogin, expected_version: u64) -> DomainResult<bool> {
        self.put_if("update the device login", device_item(login), same_version(expected_version)).await
    }

    async fn exchange_device_login(
        &self,
        login: &DeviceLogin,
        expected_version: u64,
        session: &CliSession,
    ) -> DomainResult<bool> {
        let t = &self.table;
        let mut tx = super::Tx::default();
        tx.put(t, device_item(login), same_version(expected_version))?;
        tx.put(t, cli_item(session), Some(("attribute_not_exists(pk)", vec![])))?;
        let claim = ItemBuilder::new(cli_hash_pk(&session.hash), CLI_HASH_SK).s("cli_session_id", &session.id).build();
        tx.put(t, claim, Some(("attribute_not_exists(pk)", vec![])))?;
        Ok(matches!(self.commit("exchange the device code", &tx).await?, TxOutcome::Committed))
    }

    async fn get_cli_session_by_hash(&self, hash: &str) -> DomainResult<Option<CliSession>> {
        const WHAT: &str = "read the CLI session";
        let Some(claim) = self.get(WHAT, cli_hash_pk(hash), CLI_HASH_SK).await? else {
            return Ok(None);
        };
        let id = Reader::new(&claim, "CLI session hash").s("cli_session_id")?;
        Ok(self.get_as(WHAT, cli_pk(&id), CLI_SK, cli_from).await?.filter(|c| c.hash == hash))
    }

    async fn list_cli_sessions(&self, org_id: &str, user_id: &str, page: &Page) -> DomainResult<Vec<CliSession>> {
        self.page_of("list CLI sessions", cli_sessions_of(org_id, user_id), page, cli_from).await
    }

    async fn revoke_cli_session(
        &self,
        org_id: &str,
        user_id: &str,
        id: &str,
        at: Timestamp,
    ) -> DomainResult<Option<CliSession>> {
        let u = Update::default().set_if_absent("revoked_at", ts(&at)).when(
            "#organization_id = :org AND #user_id = :user",
            &["organization_id", "user_id"],
            vec![(":org", s(org_id)), (":user", s(user_id))],
        );
        self.update("revoke the CLI session", cli_pk(id), CLI_SK, u).await?.as_ref().map(cli_from).transpose()
    }

    async fn touch_cli_session(&self, id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()> {
        let u = Update::default().set("last_used_at", ts(&at)).set_opt("last_used_ip", opt_s(ip)).when(
            "attribute_exists(pk)",
            &[],
            vec![],
        );
        self.update("record the CLI session's use", cli_pk(id), CLI_SK, u).await.map(drop)
    }

    /// The table's TTL removes expired device logins; reads check expiry.
    async fn sweep_device_logins(&self, _now: Timestamp) -> DomainResult<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_login_round_trips_through_its_item() {
        let now = chrono::Utc::now();
        let mut login = DeviceLogin {
            device_code_hash: "d".repeat(64),
            user_code_hash: "u".repeat(64),
            created_at: now,
            expires_at: now,
            interval_secs: 10,
            last_polled_at: Some(now),
            status: DeviceLoginStatus::Approved,
            decision: Some(LoginDecision {
                user_id: "user_1".into(),
                organization_id: "org_1".into(),
                clerk_org_id: "org_clerk".into(),
                role: OrgRole::Member,
                at: now,
            }),
            cli_session_id: Some("cli_1".into()),
            version: 3,
        };
        assert_eq!(device_from(&device_item(&login)).unwrap(), login);
        login.decision = None;
        login.last_polled_at = None;
        login.cli_session_id = None;
        assert_eq!(device_from(&device_item(&login)).unwrap(), login);
        let mut bad = device_item(&login);
        bad.insert("status".into(), s("lost"));
        assert!(device_from(&bad).is_err());
    }
}
