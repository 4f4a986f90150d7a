//! Each entity as a DynamoDB item and back, with its keys. The layout is
//! documented in `docs/data-model.md`; this file and that table must agree.
use capydb_domain::model::*;
use capydb_domain::ports::QuotaKind;
use capydb_domain::DomainResult;

use super::item::{sort_ts, Item, ItemBuilder, Reader};

// Partition-key prefixes and the fixed sort keys of single-item partitions.
pub const META_PK: &str = "META";
pub const BOOTSTRAP_SK: &str = "BOOTSTRAP";

/// The link from a Clerk organization to the organization made for it.
pub fn clerk_org_pk(clerk_org_id: &str) -> String {
    format!("CLERKORG#{clerk_org_id}")
}
pub const CLERK_ORG_SK: &str = "CLERKORG";

pub fn org_pk(id: &str) -> String {
    format!("ORG#{id}")
}
pub fn key_pk(id: &str) -> String {
    format!("KEY#{id}")
}
pub fn key_hash_pk(hash: &str) -> String {
    format!("KEYHASH#{hash}")
}
pub fn project_pk(id: &str) -> String {
    format!("PRJ#{id}")
}
pub fn preview_pk(id: &str) -> String {
    format!("PVW#{id}")
}
pub fn preview_name_pk(project_id: &str, name: &str) -> String {
    format!("PVWNAME#{project_id}#{name}")
}
pub fn backup_pk(id: &str) -> String {
    format!("BKP#{id}")
}
pub fn restore_pk(id: &str) -> String {
    format!("RST#{id}")
}
pub fn import_pk(id: &str) -> String {
    format!("IMP#{id}")
}
pub fn job_pk(id: &str) -> String {
    format!("JOB#{id}")
}
pub fn lock_pk(kind: &str, id: &str) -> String {
    format!("LOCK#{kind}#{id}")
}
pub fn event_pk(id: &str) -> String {
    format!("EVT#{id}")
}
pub fn webhook_pk(id: &str) -> String {
    format!("WHK#{id}")
}
pub fn delivery_pk(id: &str) -> String {
    format!("DLV#{id}")
}
pub fn delivery_key_pk(webhook_id: &str, event_id: &str) -> String {
    format!("DLVKEY#{webhook_id}#{event_id}")
}
/// The counter of one limited kind for its owner (an organization or a project).
pub fn counter_pk(kind: QuotaKind, owner: &str) -> String {
    format!("COUNT#{}#{owner}", quota_slug(kind))
}
/// A project's holds: one item per job that holds it, and their count.
pub fn holds_pk(project: &str) -> String {
    format!("HOLDS#{project}")
}
pub fn hold_sk(job: &str) -> String {
    format!("{HOLD_SK_PREFIX}{job}")
}
pub const HOLD_SK_PREFIX: &str = "JOB#";
pub fn attempt_sk(number: u32) -> String {
    format!("{ATTEMPT_SK_PREFIX}{number:010}")
}
pub const ATTEMPT_SK_PREFIX: &str = "ATT#";

/// The sort key of an entity's own item: the entity's short name.
pub const ORG_SK: &str = "ORG";
pub const KEY_SK: &str = "KEY";
pub const KEY_HASH_SK: &str = "KEYHASH";
pub const PROJECT_SK: &str = "PRJ";
pub const PREVIEW_SK: &str = "PVW";
pub const PREVIEW_NAME_SK: &str = "PVWNAME";
pub const BACKUP_SK: &str = "BKP";
pub const RESTORE_SK: &str = "RST";
pub const IMPORT_SK: &str = "IMP";
pub const JOB_SK: &str = "JOB";
pub const LOCK_SK: &str = "LOCK";
pub const EVENT_SK: &str = "EVT";
pub const WEBHOOK_SK: &str = "WHK";
pub const DELIVERY_SK: &str = "DLV";
pub const DELIVERY_KEY_SK: &str = "DLVKEY";
/// The sort key of a counter: a quota's (under `COUNT#...`) and a project's
/// holds' (under `HOLDS#...`, next to the hold items it counts).
pub const COUNTER_SK: &str = "COUNT";
/// The number attribute of a counter item.
pub const COUNTER_N: &str = "n";

// gsi1: children of a parent, newest first by id.
pub fn keys_of_org(org: &str) -> String {
    format!("ORG#{org}#KEYS")
}
pub fn projects_of_org(org: &str) -> String {
    format!("ORG#{org}#PROJECTS")
}
pub fn previews_of_project(project: &str) -> String {
    format!("PRJ#{project}#PREVIEWS")
}
pub fn backups_of_project(project: &str) -> String {
    format!("PRJ#{project}#BACKUPS")
}
pub fn jobs_of_project(project: &str) -> String {
    format!("PRJ#{project}#JOBS")
}
pub fn events_of_org(org: &str) -> String {
    format!("ORG#{org}#EVENTS")
}
pub fn webhooks_of_org(org: &str) -> String {
    format!("ORG#{org}#WEBHOOKS")
}
pub fn deliveries_of_webhook(webhook: &str) -> String {
    format!("WHK#{webhook}#DELIVERIES")
}

/// The gsi1 list holding exactly what counts against a limit: it is sparse
/// (deleted projects, previews and backups leave it; deleted webhook
/// endpoints are removed), so a count of it is the usage. Counters start
/// from it (`DynamoStore::init_counter`).
pub fn counted_list(kind: QuotaKind, owner: &str) -> String {
    match kind {
        QuotaKind::Projects => projects_of_org(owner),
        QuotaKind::Previews => previews_of_project(owner),
        QuotaKind::Backups => backups_of_project(owner),
        QuotaKind::Webhooks => webhooks_of_org(owner),
    }
}

/// A limited kind in a key (`QuotaKind::as_str` is prose, with spaces).
pub fn quota_slug(kind: QuotaKind) -> &'static str {
    match kind {
        QuotaKind::Projects => "projects",
        QuotaKind::Previews => "previews",
        QuotaKind::Backups => "backups",
        QuotaKind::Webhooks => "webhooks",
    }
}

// gsi2: the sweeper's work lists, oldest first.
pub const EXPIRING_PREVIEWS: &str = "PREVIEWS#EXPIRING";
pub const ACTIVE_JOBS: &str = "JOBS#ACTIVE";
pub const UNPUBLISHED_EVENTS: &str = "EVENTS#UNPUBLISHED";
pub const PENDING_DELIVERIES: &str = "DELIVERIES#PENDING";

/// A gsi2 sort key: a time, then the id to keep it unique.
pub fn timed(t: &Timestamp, id: &str) -> String {
    format!("{}#{id}", sort_ts(t))
}

/// The upper bound for "at or before `t`" on a [`timed`] key.
pub fn timed_upto(t: &Timestamp) -> String {
    // '~' sorts after every id character.
    format!("{}#~", sort_ts(t))
}

/// The upper bound for "strictly before `t`" on a [`timed`] key.
pub fn timed_before(t: &Timestamp) -> String {
    format!("{}#", sort_ts(t))
}

// ---------------------------------------------------------------------------

pub fn org_item(o: &Organization) -> Item {
    ItemBuilder::new(org_pk(&o.id), ORG_SK)
        .s("id", &o.id)
        .s("name", &o.name)
        .t("created_at", &o.created_at)
        .t("updated_at", &o.updated_at)
        .build()
}

pub fn org_from(item: &Item) -> DomainResult<Organization> {
    let r = Reader::new(item, "organization");
    Ok(Organization {
        id: r.s("id")?,
        name: r.s("name")?,
        created_at: r.t("created_at")?,
        updated_at: r.t("updated_at")?,
    })
}

pub fn key_item(k: &ApiKey) -> DomainResult<Item> {
    let scopes = serde_json::to_string(&k.scopes).map_err(capydb_domain::DomainError::internal)?;
    Ok(ItemBuilder::new(key_pk(&k.id), KEY_SK)
        .index("gsi1", Some((keys_of_org(&k.organization_id), k.id.clone())))
        .s("id", &k.id)
        .s("organization_id", &k.organization_id)
        .s("name", &k.name)
        .s("prefix", &k.prefix)
        .s("last4", &k.last4)
        .s("scopes", scopes)
        .os("project_id", k.project_id.as_deref())
        .ot("expires_at", k.expires_at.as_ref())
        .ot("revoked_at", k.revoked_at.as_ref())
        .ot("last_used_at", k.last_used_at.as_ref())
        .os("last_used_ip", k.last_used_ip.as_deref())
        .t("created_at", &k.created_at)
        .s("hash", &k.hash)
        .os("created_by", k.created_by.as_deref())
        .build())
}

pub fn key_hash_item(k: &ApiKey) -> Item {
    ItemBuilder::new(key_hash_pk(&k.hash), KEY_HASH_SK).s("key_id", &k.id).build()
}

pub fn key_from(item: &Item) -> DomainResult<ApiKey> {
    let r = Reader::new(item, "api key");
    Ok(ApiKey {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        name: r.s("name")?,
        prefix: r.s("prefix")?,
        last4: r.s("last4")?,
        scopes: r.json("scopes")?,
        project_id: r.os("project_id")?,
        expires_at: r.ot("expires_at")?,
        revoked_at: r.ot("revoked_at")?,
        last_used_at: r.ot("last_used_at")?,
        last_used_ip: r.os("last_used_ip")?,
        created_at: r.t("created_at")?,
        hash: r.s("hash")?,
        created_by: r.os("created_by")?,
    })
}

pub fn project_item(p: &Project) -> Item {
    let listed = p.state != ProjectState::Deleted;
    ItemBuilder::new(project_pk(&p.id), PROJECT_SK)
        .index("gsi1", listed.then(|| (projects_of_org(&p.organization_id), p.id.clone())))
        .s("id", &p.id)
        .s("organization_id", &p.organization_id)
        .s("name", &p.name)
        .s("region", &p.region)
        .s("pg_version", &p.pg_version)
        .s("state", p.state.as_str())
        .s("database_name", &p.database_name)
        .s("role_name", &p.role_name)
        .t("created_at", &p.created_at)
        .t("updated_at", &p.updated_at)
        .s("password_sealed", &p.password_sealed)
        .os("server_host", p.server_host.as_deref())
        .os("admin_password_sealed", p.admin_password_sealed.as_deref())
        .build()
}

pub fn project_from(item: &Item) -> DomainResult<Project> {
    let r = Reader::new(item, "project");
    Ok(Project {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        name: r.s("name")?,
        region: r.s("region")?,
        pg_version: r.s("pg_version")?,
        state: r.e("state", ProjectState::parse)?,
        database_name: r.s("database_name")?,
        role_name: r.s("role_name")?,
        created_at: r.t("created_at")?,
        updated_at: r.t("updated_at")?,
        password_sealed: r.s("password_sealed")?,
        server_host: r.os("server_host")?,
        admin_password_sealed: r.os("admin_password_sealed")?,
    })
}

/// A preview holds its name among the project's live previews until it is deleted.
pub fn preview_holds_name(p: &Preview) -> bool {
    p.state != PreviewState::Deleted
}

pub fn preview_item(p: &Preview) -> Item {
    let expiring = p.state.can_expire();
    ItemBuilder::new(preview_pk(&p.id), PREVIEW_SK)
        .index("gsi1", preview_holds_name(p).then(|| (previews_of_project(&p.project_id), p.id.clone())))
        .index("gsi2", expiring.then(|| (EXPIRING_PREVIEWS.to_string(), timed(&p.expires_at, &p.id))))
        .s("id", &p.id)
        .s("organization_id", &p.organization_id)
        .s("project_id", &p.project_id)
        .s("name", &p.name)
        .s("mode", p.mode.as_str())
        .s("state", p.state.as_str())
        .s("database_name", &p.database_name)
        .s("role_name", &p.role_name)
        .n("ttl_hours", p.ttl_hours)
        .t("expires_at", &p.expires_at)
        .t("created_at", &p.created_at)
        .t("updated_at", &p.updated_at)
        .s("password_sealed", &p.password_sealed)
        .os("server_host", p.server_host.as_deref())
        .build()
}

pub fn preview_name_item(p: &Preview) -> Item {
    ItemBuilder::new(preview_name_pk(&p.project_id, &p.name), PREVIEW_NAME_SK).s("preview_id", &p.id).build()
}

pub fn preview_from(item: &Item) -> DomainResult<Preview> {
    let r = Reader::new(item, "preview");
    Ok(Preview {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        project_id: r.s("project_id")?,
        name: r.s("name")?,
        mode: r.e("mode", PreviewMode::parse)?,
        state: r.e("state", PreviewState::parse)?,
        database_name: r.s("database_name")?,
        role_name: r.s("role_name")?,
        ttl_hours: r.n("ttl_hours")?,
        expires_at: r.t("expires_at")?,
        created_at: r.t("created_at")?,
        updated_at: r.t("updated_at")?,
        password_sealed: r.s("password_sealed")?,
        server_host: r.os("server_host")?,
    })
}

pub fn backup_item(b: &Backup) -> Item {
    let listed = b.state != BackupState::Deleted;
    ItemBuilder::new(backup_pk(&b.id), BACKUP_SK)
        .index("gsi1", listed.then(|| (backups_of_project(&b.project_id), b.id.clone())))
        .s("id", &b.id)
        .s("organization_id", &b.organization_id)
        .s("project_id", &b.project_id)
        .s("name", &b.name)
        .s("kind", b.kind.as_str())
        .s("state", b.state.as_str())
        .on("size_bytes", b.size_bytes)
        .os("sha256", b.sha256.as_deref())
        .t("created_at", &b.created_at)
        .ot("completed_at", b.completed_at.as_ref())
        .build()
}

pub fn backup_from(item: &Item) -> DomainResult<Backup> {
    let r = Reader::new(item, "backup");
    Ok(Backup {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        project_id: r.s("project_id")?,
        name: r.s("name")?,
        kind: r.e("kind", BackupKind::parse)?,
        state: r.e("state", BackupState::parse)?,
        size_bytes: r.on("size_bytes")?,
        sha256: r.os("sha256")?,
        created_at: r.t("created_at")?,
        completed_at: r.ot("completed_at")?,
    })
}

pub fn restore_item(x: &Restore) -> Item {
    ItemBuilder::new(restore_pk(&x.id), RESTORE_SK)
        .s("id", &x.id)
        .s("organization_id", &x.organization_id)
        .s("project_id", &x.project_id)
        .s("backup_id", &x.backup_id)
        .s("mode", x.mode.as_str())
        .s("state", x.state.as_str())
        .os("preview_id", x.preview_id.as_deref())
        .os("safety_backup_id", x.safety_backup_id.as_deref())
        .s("job_id", &x.job_id)
        .t("created_at", &x.created_at)
        .ot("finished_at", x.finished_at.as_ref())
        .build()
}

pub fn restore_from(item: &Item) -> DomainResult<Restore> {
    let r = Reader::new(item, "restore");
    Ok(Restore {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        project_id: r.s("project_id")?,
        backup_id: r.s("backup_id")?,
        mode: r.e("mode", RestoreMode::parse)?,
        state: r.e("state", OperationState::parse)?,
        preview_id: r.os("preview_id")?,
        safety_backup_id: r.os("safety_backup_id")?,
        job_id: r.s("job_id")?,
        created_at: r.t("created_at")?,
        finished_at: r.ot("finished_at")?,
    })
}

pub fn import_item(x: &Import) -> Item {
    ItemBuilder::new(import_pk(&x.id), IMPORT_SK)
        .s("id", &x.id)
        .s("organization_id", &x.organization_id)
        .s("project_id", &x.project_id)
        .s("source", &x.source)
        .s("state", x.state.as_str())
        .os("safety_backup_id", x.safety_backup_id.as_deref())
        .s("job_id", &x.job_id)
        .t("created_at", &x.created_at)
        .ot("finished_at", x.finished_at.as_ref())
        .build()
}

pub fn import_from(item: &Item) -> DomainResult<Import> {
    let r = Reader::new(item, "import");
    Ok(Import {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        project_id: r.s("project_id")?,
        source: r.s("source")?,
        state: r.e("state", OperationState::parse)?,
        safety_backup_id: r.os("safety_backup_id")?,
        job_id: r.s("job_id")?,
        created_at: r.t("created_at")?,
        finished_at: r.ot("finished_at")?,
    })
}

/// When the sweeper should look at a job again: its lease's expiry, or,
/// without a lease, its creation (a queued job whose message may be lost).
pub fn job_due(j: &Job) -> Timestamp {
    j.lease_expires_at.unwrap_or(j.created_at)
}

pub fn job_item(j: &Job) -> Item {
    ItemBuilder::new(job_pk(&j.id), JOB_SK)
        .index("gsi1", j.project_id.as_ref().map(|p| (jobs_of_project(p), j.id.clone())))
        .index("gsi2", (!j.state.is_terminal()).then(|| (ACTIVE_JOBS.to_string(), timed(&job_due(j), &j.id))))
        .s("id", &j.id)
        .s("kind", j.kind.as_str())
        .s("state", j.state.as_str())
        .s("organization_id", &j.organization_id)
        .os("project_id", j.project_id.as_deref())
        .s("resource_kind", j.resource.kind.as_str())
        .s("resource_id", &j.resource.id)
        .n("attempt", j.attempt)
        .n("step", j.step)
        .t("created_at", &j.created_at)
        .ot("started_at", j.started_at.as_ref())
        .ot("finished_at", j.finished_at.as_ref())
        .os("error", j.error.as_deref())
        .n("version", j.version)
        .os("lease_owner", j.lease_owner.as_deref())
        .ot("lease_expires_at", j.lease_expires_at.as_ref())
        .s("params", j.spec.params().to_string())
        .os("waiting", j.waiting.as_ref().map(JobWait::encode))
        .build()
}

pub fn job_from(item: &Item) -> DomainResult<Job> {
    let r = Reader::new(item, "job");
    let kind = r.e("kind", JobKind::parse)?;
    let resource = ResourceRef { kind: r.e("resource_kind", ResourceKind::parse)?, id: r.s("resource_id")? };
    let params: serde_json::Value = r.json("params")?;
    let spec =
        JobSpec::decode(kind, &resource, &params).map_err(|e| r.bad("params", &format!("are not usable: {e}")))?;
    Ok(Job {
        id: r.s("id")?,
        kind,
        state: r.e("state", JobState::parse)?,
        organization_id: r.s("organization_id")?,
        project_id: r.os("project_id")?,
        resource,
        attempt: r.n("attempt")?,
        step: r.n("step")?,
        created_at: r.t("created_at")?,
        started_at: r.ot("started_at")?,
        finished_at: r.ot("finished_at")?,
        error: r.os("error")?,
        version: r.n("version")?,
        lease_owner: r.os("lease_owner")?,
        lease_expires_at: r.ot("lease_expires_at")?,
        spec,
        waiting: r.os("waiting")?.map(|w| JobWait::decode(&w).map_err(|e| r.bad("waiting", &e))).transpose()?,
    })
}

pub fn lock_item(j: &Job) -> Item {
    ItemBuilder::new(lock_pk(j.resource.kind.as_str(), &j.resource.id), LOCK_SK).s("job_id", &j.id).build()
}

pub fn counter_item(kind: QuotaKind, owner: &str, n: i64) -> Item {
    ItemBuilder::new(counter_pk(kind, owner), COUNTER_SK).n(COUNTER_N, n).build()
}

pub fn hold_item(project: &str, job: &str) -> Item {
    ItemBuilder::new(holds_pk(project), hold_sk(job)).s("job_id", job).build()
}

pub fn event_item(e: &Event) -> Item {
    ItemBuilder::new(event_pk(&e.id), EVENT_SK)
        .index("gsi1", Some((events_of_org(&e.organization_id), e.id.clone())))
        .index("gsi2", e.published_at.is_none().then(|| (UNPUBLISHED_EVENTS.to_string(), e.id.clone())))
        .s("id", &e.id)
        .s("kind", e.kind.as_str())
        .s("organization_id", &e.organization_id)
        .os("project_id", e.project_id.as_deref())
        .t("created_at", &e.created_at)
        .s("data", e.data.to_string())
        .ot("published_at", e.published_at.as_ref())
        .build()
}

pub fn event_from(item: &Item) -> DomainResult<Event> {
    let r = Reader::new(item, "event");
    Ok(Event {
        id: r.s("id")?,
        kind: r.e("kind", EventType::parse)?,
        organization_id: r.s("organization_id")?,
        project_id: r.os("project_id")?,
        created_at: r.t("created_at")?,
        data: r.json("data")?,
        published_at: r.ot("published_at")?,
    })
}

pub fn webhook_item(w: &WebhookEndpoint) -> DomainResult<Item> {
    let events = w.events_json()?;
    Ok(ItemBuilder::new(webhook_pk(&w.id), WEBHOOK_SK)
        .index("gsi1", Some((webhooks_of_org(&w.organization_id), w.id.clone())))
        .s("id", &w.id)
        .s("organization_id", &w.organization_id)
        .s("url", &w.url)
        .s("events", events)
        .os("project_id", w.project_id.as_deref())
        .os("description", w.description.as_deref())
        .b("enabled", w.enabled)
        .os("disabled_reason", w.disabled_reason.as_deref())
        .ot("failing_since", w.failing_since.as_ref())
        .t("created_at", &w.created_at)
        .t("updated_at", &w.updated_at)
        .s("secret_sealed", &w.secret_sealed)
        .os("previous_secret_sealed", w.previous_secret_sealed.as_deref())
        .ot("previous_secret_expires_at", w.previous_secret_expires_at.as_ref())
        .build())
}

pub fn webhook_from(item: &Item) -> DomainResult<WebhookEndpoint> {
    let r = Reader::new(item, "webhook");
    Ok(WebhookEndpoint {
        id: r.s("id")?,
        organization_id: r.s("organization_id")?,
        url: r.s("url")?,
        events: r.json("events")?,
        project_id: r.os("project_id")?,
        description: r.os("description")?,
        enabled: r.b("enabled")?,
        disabled_reason: r.os("disabled_reason")?,
        failing_since: r.ot("failing_since")?,
        created_at: r.t("created_at")?,
        updated_at: r.t("updated_at")?,
        secret_sealed: r.s("secret_sealed")?,
        previous_secret_sealed: r.os("previous_secret_sealed")?,
        previous_secret_expires_at: r.ot("previous_secret_expires_at")?,
    })
}

pub fn delivery_item(d: &Delivery) -> Item {
    let due = match (d.state, d.next_attempt_at.as_ref()) {
        (DeliveryState::Pending, Some(next)) => Some((PENDING_DELIVERIES.to_string(), timed(next, &d.id))),
        _ => None,
    };
    ItemBuilder::new(delivery_pk(&d.id), DELIVERY_SK)
        .index("gsi1", Some((deliveries_of_webhook(&d.webhook_id), d.id.clone())))
        .index("gsi2", due)
        .s("id", &d.id)
        .s("webhook_id", &d.webhook_id)
        .s("organization_id", &d.organization_id)
        .s("event_id", &d.event_id)
        .s("event_type", d.event_type.as_str())
        .s("state", d.state.as_str())
        .n("attempt_count", d.attempt_count)
        .ot("next_attempt_at", d.next_attempt_at.as_ref())
        .t("created_at", &d.created_at)
        .t("updated_at", &d.updated_at)
        .s("payload", &d.payload)
        .n("round_attempts", d.round_attempts)
        .ot("lease_until", d.lease_until.as_ref())
        .build()
}

pub fn delivery_key_item(d: &Delivery) -> Item {
    ItemBuilder::new(delivery_key_pk(&d.webhook_id, &d.event_id), DELIVERY_KEY_SK).s("delivery_id", &d.id).build()
}

pub fn delivery_from(item: &Item) -> DomainResult<Delivery> {
    let r = Reader::new(item, "delivery");
    Ok(Delivery {
        id: r.s("id")?,
        webhook_id: r.s("webhook_id")?,
        organization_id: r.s("organization_id")?,
        event_id: r.s("event_id")?,
        event_type: r.e("event_type", EventType::parse)?,
        state: r.e("state", DeliveryState::parse)?,
        attempt_count: r.n("attempt_count")?,
        next_attempt_at: r.ot("next_attempt_at")?,
        created_at: r.t("created_at")?,
        updated_at: r.t("updated_at")?,
        payload: r.s("payload")?,
        attempts: Vec::new(),
        round_attempts: r.n("round_attempts")?,
        lease_until: r.ot("lease_until")?,
    })
}

pub fn attempt_item(delivery_id: &str, a: &DeliveryAttempt) -> Item {
    ItemBuilder::new(delivery_pk(delivery_id), attempt_sk(a.number))
        .n("number", a.number)
        .t("attempted_at", &a.attempted_at)
        .on("status_code", a.status_code)
        .n("latency_ms", a.latency_ms)
        .os("response_body", a.response_body.as_deref())
        .os("error", a.error.as_deref())
        .build()
}

pub fn attempt_from(item: &Item) -> DomainResult<DeliveryAttempt> {
    let r = Reader::new(item, "delivery attempt");
    Ok(DeliveryAttempt {
        number: r.n("number")?,
        attempted_at: r.t("attempted_at")?,
        status_code: r.on("status_code")?,
        latency_ms: r.n("latency_ms")?,
        response_body: r.os("response_body")?,
        error: r.os("error")?,
    })
}
