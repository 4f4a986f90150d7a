//! Port contract suites (feature `testkit`): one per port, run against every adapter.
//!
//! The suites use only the port traits and domain types, so the SQLite
//! adapters and the cloud ones (DynamoDB, SQS, KMS) are held to the same
//! semantics. They create their own records under fresh ids and clean up the
//! locks and outbox entries they leave, so they can run against a store that
//! already holds data, and more than once. A failed check panics with a
//! message that says which rule broke.
//!
//! Every timestamp in the fixtures has a nanosecond part, so comparing whole
//! structs also checks that an adapter round-trips `DateTime<Utc>` exactly.
use std::future::Future;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rand::Rng;
use serde_json::json;

use crate::error::{DomainError, DomainResult};
use crate::ids::{self, new_id, new_id_at};
use crate::model::*;
use crate::ports::{Admission, JobQueue, Page, QuotaClaim, QuotaKind, ResourceWrite, SecretBox, Store};
use crate::scopes::Scope;

// ---------------------------------------------------------------------------
// helpers

fn ok<T>(result: DomainResult<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

/// Now, with a fixed, non-round nanosecond part.
fn base_time() -> Timestamp {
    at_secs(Utc::now().timestamp())
}

fn at_secs(secs: i64) -> Timestamp {
    match Utc.timestamp_opt(secs, 123_456_789) {
        chrono::LocalResult::Single(t) => t,
        _ => panic!("fixture timestamp {secs} is out of range"),
    }
}

fn plus_ms(t: Timestamp, ms: i64) -> Timestamp {
    t + chrono::Duration::milliseconds(ms)
}

/// `n` fresh ids of `prefix` in strictly increasing (creation) order:
/// `new_id` alone does not order ids made within the same millisecond.
fn ordered_ids(prefix: &str, n: usize) -> Vec<String> {
    let start = Utc::now().timestamp_millis() as u64;
    (0..n as u64).map(|i| new_id_at(prefix, start + i)).collect()
}

fn ids_of<'a, T: 'a>(items: impl IntoIterator<Item = &'a T>, id: impl Fn(&T) -> &str) -> Vec<String> {
    items.into_iter().map(|x| id(x).to_string()).collect()
}

fn organization(now: Timestamp) -> Organization {
    Organization { id: new_id(ids::ORG), name: "contract org".into(), created_at: now, updated_at: now }
}

fn api_key(org_id: &str, id: String, now: Timestamp) -> ApiKey {
    ApiKey {
        id,
        organization_id: org_id.into(),
        name: "contract key".into(),
        prefix: "capy_live_".into(),
        last4: "ab12".into(),
        scopes: vec![Scope::ProjectsRead, Scope::JobsRead, Scope::ApiKeysWrite],
        project_id: None,
        expires_at: Some(plus_ms(now, 86_400_000)),
        revoked_at: None,
        last_used_at: None,
        last_used_ip: None,
        created_at: now,
        // Unique per key; adapters index on it.
        // Round-trips through every store (a session's user id here).
        created_by: Some("user_contract".into()),
        hash: format!("contract-hash-{}", new_id("h")),
    }
}

fn project(org_id: &str, id: String, state: ProjectState, now: Timestamp) -> Project {
    Project {
        database_name: format!("db_{id}"),
        role_name: format!("role_{id}"),
        id,
        organization_id: org_id.into(),
        name: "contract project".into(),
        region: "local".into(),
        pg_version: "16".into(),
        state,
        created_at: now,
        updated_at: now,
        password_sealed: format!("v1:sealed-{}", new_id("s")),
        // A dedicated deployment's fields round-trip too.
        server_host: Some(format!("capydb-{}.cluster-c0ntract.eu-west-1.rds.amazonaws.com", new_id("h"))),
        admin_password_sealed: Some(format!("v1:sealed-admin-{}", new_id("s"))),
    }
}

/// A queued job of `kind` on the project, with a specification of that
/// kind as the use cases make it (`aim` points it at a preview or backup).
fn job(org_id: &str, project_id: &str, id: String, kind: JobKind, created_at: Timestamp) -> Job {
    let project = ResourceRef { kind: ResourceKind::Project, id: project_id.into() };
    let params = match kind {
        JobKind::RotateCredentials => json!({ "new_password_sealed": "v1:sealed-new-password" }),
        JobKind::Restore => json!({ "restore_id": "rst_1", "backup_id": "bkp_1", "safety_backup_id": "bkp_2" }),
        JobKind::Import => json!({ "import_id": "imp_1", "safety_backup_id": "bkp_2", "source_url_sealed": "v1:url" }),
        _ => json!(null),
    };
    let target = match kind {
        JobKind::CreatePreview | JobKind::ResetPreview | JobKind::DeletePreview => {
            ResourceRef { kind: ResourceKind::Preview, id: new_id(ids::PREVIEW) }
        }
        JobKind::CreateBackup => ResourceRef { kind: ResourceKind::Backup, id: new_id(ids::BACKUP) },
        _ => project,
    };
    let spec = JobSpec::decode(kind, &target, &params).expect("a specification of every kind");
    let mut j = Job::queued(id, spec, org_id, &project_id.into(), created_at);
    j.version = 1;
    j
}

/// Points a preview's or backup's job at `id`.
fn aim(j: &mut Job, kind: ResourceKind, id: &str) {
    j.resource = ResourceRef { kind, id: id.into() };
    j.spec = JobSpec::decode(j.kind, &j.resource, &j.spec.params()).expect("a job of this resource kind");
}

fn event(org_id: &str, project_id: &str, id: String, kind: EventType, now: Timestamp) -> Event {
    Event {
        id,
        kind,
        organization_id: org_id.into(),
        project_id: Some(project_id.into()),
        created_at: now,
        data: json!({ "project_id": project_id, "list": [1, 2, 3] }),
        published_at: None,
    }
}

/// The job as a worker would store it at the end: terminal, version bumped.
fn finished(job: &Job, state: JobState, at: Timestamp) -> Job {
    Job {
        state,
        finished_at: Some(at),
        version: job.version + 1,
        lease_owner: None,
        lease_expires_at: None,
        ..job.clone()
    }
}

/// Creates an organization with a first key; returns both.
async fn new_org(store: &dyn Store, now: Timestamp) -> (Organization, ApiKey) {
    let org = organization(now);
    let key = api_key(&org.id, new_id(ids::API_KEY), now);
    ok(store.create_organization(&org, &key).await, "create_organization");
    (org, key)
}

/// Stores a project the way the use cases do (through a job), and releases
/// the lock again.
async fn put_project(store: &dyn Store, p: &Project, now: Timestamp) {
    let j = job(&p.organization_id, &p.id, new_id(ids::JOB), JobKind::Provision, now);
    let held = ok(
        store.begin_job(&j, &ResourceWrite::Project(p.clone()), &[], &Admission::default()).await,
        "begin_job (put_project)",
    );
    assert_eq!(held, None, "begin_job on a fresh project must take the lock");
    let done = ok(
        store.finish_job(&finished(&j, JobState::Completed, now), j.version, &ResourceWrite::Nothing, &[]).await,
        "finish_job (put_project)",
    );
    assert!(done, "finish_job with the current version must succeed");
}

fn preview(project: &Project, id: String, name: &str, expires_at: Timestamp, now: Timestamp) -> Preview {
    Preview {
        database_name: id.clone(),
        role_name: format!("{id}_owner"),
        id,
        organization_id: project.organization_id.clone(),
        project_id: project.id.clone(),
        name: name.into(),
        mode: PreviewMode::Clone,
        state: PreviewState::Creating,
        ttl_hours: 72,
        expires_at,
        created_at: now,
        updated_at: now,
        password_sealed: format!("v1:sealed-{}", new_id("s")),
        server_host: None,
    }
}

/// Stores a preview through a job (as the use cases do), then finishes the
/// job writing `final_state`.
async fn put_preview(store: &dyn Store, pv: &Preview, final_state: PreviewState, now: Timestamp) -> DomainResult<()> {
    let mut j = job(&pv.organization_id, &pv.project_id, new_id(ids::JOB), JobKind::CreatePreview, now);
    aim(&mut j, ResourceKind::Preview, &pv.id);
    assert_eq!(
        store.begin_job(&j, &ResourceWrite::Preview(pv.clone()), &[], &Admission::default()).await?,
        None,
        "begin_job on a new preview"
    );
    let done = Preview { state: final_state, ..pv.clone() };
    let finished_ok = store
        .finish_job(&finished(&j, JobState::Completed, now), j.version, &ResourceWrite::Preview(done), &[])
        .await?;
    assert!(finished_ok, "finish_job (put_preview)");
    Ok(())
}

// ---------------------------------------------------------------------------
// Store

/// Every `Store` check, in order.
pub async fn run_store_contract(store: &dyn Store) {
    store_organizations(store).await;
    store_api_keys(store).await;
    store_projects(store).await;
    store_previews(store).await;
    store_backups(store).await;
    store_job_locks(store).await;
    store_job_versions(store).await;
    store_finish_job(store).await;
    store_stuck_jobs(store).await;
    store_outbox(store).await;
    store_webhooks(store).await;
    store_deliveries(store).await;
    store_project_holds(store).await;
    store_quotas(store).await;
    store_idempotency(store).await;
    store_idempotent_jobs(store).await;
    store_clerk_organizations(store).await;
}

/// A job started under an `Idempotency-Key` is recorded in the key's
/// record in the same write, only while the request holds the key; the
/// record then survives a release, and a takeover after the holder died
/// finds the job (`Recovered`), as every later takeover does.
pub async fn store_idempotent_jobs(store: &dyn Store) {
    use crate::ports::{HeldKey, IdempotencyBegin, IdempotencyClaim, StoredAnswer};
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let key = format!("idem-job-{}", new_id("t"));
    let claim = |at: Timestamp| IdempotencyClaim {
        key: key.clone(),
        fingerprint: "fp".into(),
        now: at,
        lease_until: at + chrono::Duration::seconds(30),
        expires_at: now + chrono::Duration::hours(24),
    };
    let first = claim(now);
    assert_eq!(store.begin_idempotent(&first).await.unwrap(), IdempotencyBegin::Started { taken_over: false });
    let held = HeldKey { key: key.clone(), lease_until: first.lease_until };
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let j = job(&org.id, &p.id, new_id(ids::JOB), JobKind::Provision, now);
    let admission = Admission { idempotency: Some(held.clone()), ..Admission::default() };
    assert_eq!(store.begin_job(&j, &ResourceWrite::Project(p.clone()), &[], &admission).await.unwrap(), None);
    // A release (say the answer was a 5xx) keeps a record that names a job.
    store.release_idempotent(&key, held.lease_until).await.unwrap();
    assert_eq!(
        store.begin_idempotent(&claim(plus_ms(now, 1000))).await.unwrap(),
        IdempotencyBegin::InFlight,
        "released, a record naming a job stays held until its lease ends"
    );
    // The holder died: past its lease the key is recovered from the job, again and again.
    let heir = claim(plus_ms(now, 31_000));
    assert_eq!(store.begin_idempotent(&heir).await.unwrap(), IdempotencyBegin::Recovered { made: j.id.clone() });
    let second_heir = claim(plus_ms(now, 62_000));
    assert_eq!(
        store.begin_idempotent(&second_heir).await.unwrap(),
        IdempotencyBegin::Recovered { made: j.id.clone() },
        "a recovery that died too leaves the job for the next one"
    );
    // A holder that lost its lease starts nothing: the job, its resource and its lock are not written.
    let q = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let late = job(&org.id, &q.id, new_id(ids::JOB), JobKind::Provision, now);
    let lost = Admission { idempotency: Some(held.clone()), ..Admission::default() };
    match store.begin_job(&late, &ResourceWrite::Project(q.clone()), &[], &lost).await {
        Err(DomainError::Conflict(m)) => assert!(m.contains("Idempotency-Key"), "{m}"),
        other => panic!("a job under a lost key must be refused with 409, got {other:?}"),
    }
    assert_eq!(store.get_job(&late.id).await.unwrap(), None, "the refused job is not stored");
    assert_eq!(store.get_project(&q.id).await.unwrap(), None, "nor its resource");
    let again = job(&org.id, &q.id, new_id(ids::JOB), JobKind::Provision, now);
    assert_eq!(
        store.begin_job(&again, &ResourceWrite::Project(q.clone()), &[], &Admission::default()).await.unwrap(),
        None,
        "nor its lock"
    );
    // Answered, the record replays whatever a late job would claim.
    let answer = StoredAnswer { status: 202, content_type: None, location: None, body: b"{}".to_vec() };
    assert!(store.complete_idempotent(&key, second_heir.lease_until, &answer).await.unwrap());
    let after = Admission {
        idempotency: Some(HeldKey { key: key.clone(), lease_until: second_heir.lease_until }),
        ..Admission::default()
    };
    let r = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let answered = job(&org.id, &r.id, new_id(ids::JOB), JobKind::Provision, now);
    assert!(
        store.begin_job(&answered, &ResourceWrite::Project(r), &[], &after).await.is_err(),
        "an answered key takes no job"
    );
    assert_eq!(store.begin_idempotent(&claim(plus_ms(now, 70_000))).await.unwrap(), IdempotencyBegin::Replay(answer));

    // An API key and a webhook endpoint are recorded the same way, and
    // refused under a key the request no longer holds.
    let claim_of = |key: &str, at: Timestamp| IdempotencyClaim {
        key: key.to_string(),
        fingerprint: "fp".into(),
        now: at,
        lease_until: at + chrono::Duration::seconds(30),
        expires_at: now + chrono::Duration::hours(24),
    };
    let api_key_key = format!("idem-key-{}", new_id("t"));
    let first = claim_of(&api_key_key, now);
    assert_eq!(store.begin_idempotent(&first).await.unwrap(), IdempotencyBegin::Started { taken_over: false });
    let held = HeldKey { key: api_key_key.clone(), lease_until: first.lease_until };
    let k = api_key(&org.id, new_id(ids::API_KEY), now);
    ok(store.insert_api_key(&k, Some(&held)).await, "insert_api_key under a held key");
    assert_eq!(
        store.begin_idempotent(&claim_of(&api_key_key, plus_ms(now, 31_000))).await.unwrap(),
        IdempotencyBegin::Recovered { made: k.id.clone() }
    );
    let late = api_key(&org.id, new_id(ids::API_KEY), now);
    assert!(store.insert_api_key(&late, Some(&held)).await.is_err(), "a lost key writes no API key");
    assert_eq!(store.get_api_key(&org.id, &late.id).await.unwrap(), None);
    assert_eq!(store.get_api_key_by_hash(&late.hash).await.unwrap(), None, "nor its hash");

    let webhook_key = format!("idem-whk-{}", new_id("t"));
    let first = claim_of(&webhook_key, now);
    assert_eq!(store.begin_idempotent(&first).await.unwrap(), IdempotencyBegin::Started { taken_over: false });
    let held = HeldKey { key: webhook_key.clone(), lease_until: first.lease_until };
    let w = webhook(&org.id, new_id(ids::WEBHOOK), now);
    ok(store.insert_webhook(&w, None, Some(&held)).await, "insert_webhook under a held key");
    assert_eq!(
        store.begin_idempotent(&claim_of(&webhook_key, plus_ms(now, 31_000))).await.unwrap(),
        IdempotencyBegin::Recovered { made: w.id.clone() }
    );
    let late = webhook(&org.id, new_id(ids::WEBHOOK), now);
    assert!(store.insert_webhook(&late, None, Some(&held)).await.is_err(), "a lost key writes no webhook endpoint");
    assert_eq!(store.get_webhook(&org.id, &late.id).await.unwrap(), None);
}

/// Clerk organizations: linked once, found by Clerk's id; concurrent first
/// links agree on one organization.
pub async fn store_clerk_organizations(store: &dyn Store) {
    let now = base_time();
    let clerk = format!("org_clerk{}", new_id("t"));
    assert_eq!(store.get_clerk_organization(&clerk).await.unwrap(), None);
    let first = Organization { id: new_id(ids::ORG), name: "acme".into(), created_at: now, updated_at: now };
    assert_eq!(store.link_clerk_organization(&clerk, &first).await.unwrap(), first);
    assert_eq!(store.get_clerk_organization(&clerk).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_organization(&first.id).await.unwrap(), Some(first.clone()));
    assert!(store.has_organizations().await.unwrap());
    let second = Organization { id: new_id(ids::ORG), ..first.clone() };
    assert_eq!(store.link_clerk_organization(&clerk, &second).await.unwrap(), first, "linked already");
    assert_eq!(store.get_organization(&second.id).await.unwrap(), None, "no second organization");

    let racing = format!("org_clerk{}", new_id("t"));
    let candidates: Vec<Organization> = (0..10)
        .map(|_| Organization { id: new_id(ids::ORG), name: "race".into(), created_at: now, updated_at: now })
        .collect();
    let linked = futures_join_all(candidates.iter().map(|o| store.link_clerk_organization(&racing, o))).await;
    let ids: std::collections::BTreeSet<String> = linked.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids.len(), 1, "concurrent first links agree: {ids:?}");
    let winner = ids.into_iter().next().unwrap();
    for c in &candidates {
        assert_eq!(store.get_organization(&c.id).await.unwrap().is_some(), c.id == winner, "only the winner exists");
    }
}

/// Idempotency records: one holder per key, even under concurrent claims;
/// in flight, mismatch and replay; a dead holder's key taken over after its
/// lease; answers stored and released only by the holder; expiry.
pub async fn store_idempotency(store: &dyn Store) {
    use crate::ports::{IdempotencyBegin, IdempotencyClaim, StoredAnswer};
    let now = base_time();
    let key = format!("idem-{}", crate::ids::new_id("t"));
    let claim = |fingerprint: &str, at: Timestamp| IdempotencyClaim {
        key: key.clone(),
        fingerprint: fingerprint.into(),
        now: at,
        lease_until: at + chrono::Duration::seconds(60),
        expires_at: at + chrono::Duration::hours(24),
    };
    let first = claim("fp-a", now);
    assert_eq!(store.begin_idempotent(&first).await.unwrap(), IdempotencyBegin::Started { taken_over: false });
    assert_eq!(
        store.begin_idempotent(&claim("fp-a", now + chrono::Duration::seconds(1))).await.unwrap(),
        IdempotencyBegin::InFlight,
        "a second claim while the first runs"
    );
    assert_eq!(
        store.begin_idempotent(&claim("fp-b", now + chrono::Duration::seconds(1))).await.unwrap(),
        IdempotencyBegin::Mismatch,
        "another request under the same key"
    );
    let answer = StoredAnswer {
        status: 202,
        content_type: Some("application/json".into()),
        location: Some("/v1/jobs/job_1".into()),
        body: b"{\"job\":{\"id\":\"job_1\"}}\n\x00\xff".to_vec(),
    };
    assert!(
        !store.complete_idempotent(&key, now + chrono::Duration::seconds(61), &answer).await.unwrap(),
        "only the holder (its lease) stores the answer"
    );
    store.release_idempotent(&key, now + chrono::Duration::seconds(61)).await.unwrap();
    assert!(store.complete_idempotent(&key, first.lease_until, &answer).await.unwrap(), "the holder stores its answer");
    assert!(!store.complete_idempotent(&key, first.lease_until, &answer).await.unwrap(), "an answer is stored once");
    let later = now + chrono::Duration::hours(1);
    assert_eq!(store.begin_idempotent(&claim("fp-a", later)).await.unwrap(), IdempotencyBegin::Replay(answer.clone()));
    assert_eq!(store.begin_idempotent(&claim("fp-b", later)).await.unwrap(), IdempotencyBegin::Mismatch);
    // Releasing an answered key changes nothing.
    store.release_idempotent(&key, first.lease_until).await.unwrap();
    assert_eq!(store.begin_idempotent(&claim("fp-a", later)).await.unwrap(), IdempotencyBegin::Replay(answer.clone()));
    // Expired: forgotten, whatever it held, and swept.
    let expired = now + chrono::Duration::hours(25);
    assert_eq!(
        store.begin_idempotent(&claim("fp-b", expired)).await.unwrap(),
        IdempotencyBegin::Started { taken_over: false },
        "an expired record is no record"
    );
    // The sweep (a no-op where the table's TTL deletes) never brings an
    // expired record back and leaves live ones alone.
    let swept_at = expired + chrono::Duration::hours(25);
    store.sweep_idempotent(swept_at).await.unwrap();
    assert_eq!(
        store.begin_idempotent(&claim("fp-a", swept_at)).await.unwrap(),
        IdempotencyBegin::Started { taken_over: false }
    );

    // A holder that dies: its key is taken over once the lease ran out, and
    // then the dead holder can neither answer nor release it.
    let dead_key = format!("idem-{}", crate::ids::new_id("t"));
    let dead = IdempotencyClaim { key: dead_key.clone(), ..claim("fp-a", now) };
    assert_eq!(store.begin_idempotent(&dead).await.unwrap(), IdempotencyBegin::Started { taken_over: false });
    let before_lease = IdempotencyClaim { key: dead_key.clone(), ..claim("fp-a", now + chrono::Duration::seconds(59)) };
    assert_eq!(store.begin_idempotent(&before_lease).await.unwrap(), IdempotencyBegin::InFlight);
    let heir = IdempotencyClaim { key: dead_key.clone(), ..claim("fp-a", now + chrono::Duration::seconds(61)) };
    assert_eq!(store.begin_idempotent(&heir).await.unwrap(), IdempotencyBegin::Started { taken_over: true });
    assert!(!store.complete_idempotent(&dead_key, dead.lease_until, &answer).await.unwrap(), "the dead holder");
    store.release_idempotent(&dead_key, dead.lease_until).await.unwrap();
    assert_eq!(
        store
            .begin_idempotent(&IdempotencyClaim {
                key: dead_key.clone(),
                ..claim("fp-a", now + chrono::Duration::seconds(62))
            })
            .await
            .unwrap(),
        IdempotencyBegin::InFlight,
        "the dead holder's release does not free the heir's claim"
    );
    store.release_idempotent(&dead_key, heir.lease_until).await.unwrap();
    let retry = IdempotencyClaim { key: dead_key.clone(), ..claim("fp-a", now + chrono::Duration::seconds(63)) };
    assert_eq!(
        store.begin_idempotent(&retry).await.unwrap(),
        IdempotencyBegin::Started { taken_over: false },
        "a released key runs again"
    );

    // Twenty concurrent first claims: exactly one holder.
    let race_key = format!("idem-{}", crate::ids::new_id("t"));
    let claims: Vec<_> = (0..20)
        .map(|i| IdempotencyClaim {
            key: race_key.clone(),
            lease_until: now + chrono::Duration::seconds(60) + chrono::Duration::milliseconds(i),
            ..claim("fp-a", now)
        })
        .collect();
    let results = futures_join_all(claims.iter().map(|c| store.begin_idempotent(c))).await;
    let started = results.iter().filter(|r| matches!(r, Ok(IdempotencyBegin::Started { .. }))).count();
    let in_flight = results.iter().filter(|r| matches!(r, Ok(IdempotencyBegin::InFlight))).count();
    assert_eq!((started, in_flight), (1, 19), "one holder under concurrent claims: {results:?}");
}

/// Organizations: create with the first key atomically, get, update.
pub async fn store_organizations(store: &dyn Store) {
    let now = base_time();
    let mut org = organization(now);
    // Extreme nanosecond values must survive too.
    org.created_at = Utc.timestamp_opt(now.timestamp(), 1).single().unwrap_or(now);
    org.updated_at = Utc.timestamp_opt(now.timestamp(), 999_999_999).single().unwrap_or(now);
    let key = api_key(&org.id, new_id(ids::API_KEY), now);
    ok(store.create_organization(&org, &key).await, "create_organization");

    assert!(
        ok(store.has_organizations().await, "has_organizations"),
        "has_organizations must be true after create_organization"
    );
    assert_eq!(
        ok(store.get_organization(&org.id).await, "get_organization"),
        Some(org.clone()),
        "get_organization must return the organization as created, timestamps exact to the nanosecond"
    );
    assert_eq!(
        ok(store.get_api_key_by_hash(&key.hash).await, "get_api_key_by_hash"),
        Some(key.clone()),
        "create_organization must store the first key"
    );
    assert_eq!(
        ok(store.get_organization(&new_id(ids::ORG)).await, "get_organization"),
        None,
        "get_organization of an unknown id must be None"
    );

    let renamed = Organization { name: "renamed org".into(), updated_at: plus_ms(now, 1500), ..org.clone() };
    ok(store.update_organization(&renamed).await, "update_organization");
    assert_eq!(
        ok(store.get_organization(&org.id).await, "get_organization"),
        Some(renamed),
        "update_organization must replace the organization"
    );
    let ghost = organization(now);
    match store.update_organization(&ghost).await {
        Err(DomainError::NotFound(_)) => {}
        other => panic!("update_organization of an unknown id must be NotFound, got {other:?}"),
    }

    // Atomicity: the first key clashes, so the organization must not exist either.
    let org2 = organization(now);
    let clash = ApiKey { hash: key.hash.clone(), ..api_key(&org2.id, new_id(ids::API_KEY), now) };
    match store.create_organization(&org2, &clash).await {
        Err(DomainError::Conflict(_)) => {}
        other => panic!("create_organization with a duplicate key hash must be Conflict, got {other:?}"),
    }
    assert_eq!(
        ok(store.get_organization(&org2.id).await, "get_organization"),
        None,
        "create_organization must write nothing when its first key fails"
    );
    assert_eq!(
        ok(store.get_api_key(&org2.id, &clash.id).await, "get_api_key"),
        None,
        "create_organization must write nothing when its first key fails"
    );
}

/// API keys: unique hash, org-scoped reads, paging, revoke, touch.
pub async fn store_api_keys(store: &dyn Store) {
    let now = base_time();
    let org = organization(now);
    let ids = ordered_ids(ids::API_KEY, 4);
    let keys: Vec<ApiKey> = ids.iter().map(|id| api_key(&org.id, id.clone(), now)).collect();
    ok(store.create_organization(&org, &keys[0]).await, "create_organization");
    for k in &keys[1..] {
        ok(store.insert_api_key(k, None).await, "insert_api_key");
    }
    let (other_org, other_key) = new_org(store, now).await;

    let dup = ApiKey { hash: keys[1].hash.clone(), ..api_key(&org.id, new_id(ids::API_KEY), now) };
    match store.insert_api_key(&dup, None).await {
        Err(DomainError::Conflict(_)) => {}
        other => panic!("insert_api_key with a duplicate hash must be Conflict, got {other:?}"),
    }
    assert_eq!(
        ok(store.get_api_key(&org.id, &dup.id).await, "get_api_key"),
        None,
        "a key refused for its duplicate hash must not be stored"
    );

    assert_eq!(
        ok(store.get_api_key_by_hash(&keys[2].hash).await, "get_api_key_by_hash"),
        Some(keys[2].clone()),
        "get_api_key_by_hash must return the stored key, hash and all"
    );
    assert_eq!(
        ok(store.get_api_key_by_hash("no-such-hash").await, "get_api_key_by_hash"),
        None,
        "get_api_key_by_hash of an unknown hash must be None"
    );
    assert_eq!(
        ok(store.get_api_key(&org.id, &keys[1].id).await, "get_api_key"),
        Some(keys[1].clone()),
        "get_api_key must find a key of its organization"
    );
    assert_eq!(
        ok(store.get_api_key(&other_org.id, &keys[1].id).await, "get_api_key"),
        None,
        "get_api_key must not find a key of another organization"
    );

    let page1 = ok(store.list_api_keys(&org.id, &Page::first(3)).await, "list_api_keys");
    assert_eq!(
        ids_of(&page1, |k| &k.id),
        vec![ids[3].clone(), ids[2].clone(), ids[1].clone()],
        "list_api_keys must list newest first, at most `limit`"
    );
    assert_eq!(page1[0], keys[3], "list_api_keys must return whole keys");
    let page2 =
        ok(store.list_api_keys(&org.id, &Page { limit: 3, before: Some(ids[1].clone()) }).await, "list_api_keys");
    assert_eq!(
        ids_of(&page2, |k| &k.id),
        vec![ids[0].clone()],
        "list_api_keys must continue strictly before the cursor"
    );
    let page3 =
        ok(store.list_api_keys(&org.id, &Page { limit: 3, before: Some(ids[0].clone()) }).await, "list_api_keys");
    assert!(page3.is_empty(), "list_api_keys past the last key must be empty");
    let others = ok(store.list_api_keys(&other_org.id, &Page::first(10)).await, "list_api_keys");
    assert_eq!(others, vec![other_key], "list_api_keys must list only the organization's keys");

    // revoke
    let t1 = plus_ms(now, 1000);
    assert_eq!(
        ok(store.revoke_api_key(&other_org.id, &keys[1].id, t1).await, "revoke_api_key"),
        None,
        "revoke_api_key must not find a key of another organization"
    );
    assert_eq!(
        ok(store.get_api_key(&org.id, &keys[1].id).await, "get_api_key").and_then(|k| k.revoked_at),
        None,
        "revoke_api_key through another organization must not revoke"
    );
    let revoked = ok(store.revoke_api_key(&org.id, &keys[1].id, t1).await, "revoke_api_key");
    let expected = ApiKey { revoked_at: Some(t1), ..keys[1].clone() };
    assert_eq!(revoked, Some(expected.clone()), "revoke_api_key must set revoked_at and return the stored key");
    let again = ok(store.revoke_api_key(&org.id, &keys[1].id, plus_ms(now, 5000)).await, "revoke_api_key");
    assert_eq!(again, Some(expected.clone()), "revoking twice must keep the first revoked_at");
    assert_eq!(
        ok(store.get_api_key_by_hash(&keys[1].hash).await, "get_api_key_by_hash"),
        Some(expected),
        "a revoked key must still be found by hash, with revoked_at"
    );
    assert_eq!(
        ok(store.revoke_api_key(&org.id, &new_id(ids::API_KEY), t1).await, "revoke_api_key"),
        None,
        "revoke_api_key of an unknown key must be None"
    );

    // touch
    let t2 = plus_ms(now, 2000);
    ok(store.touch_api_key(&keys[2].id, t2, Some("203.0.113.7")).await, "touch_api_key");
    let touched = ApiKey { last_used_at: Some(t2), last_used_ip: Some("203.0.113.7".into()), ..keys[2].clone() };
    assert_eq!(
        ok(store.get_api_key(&org.id, &keys[2].id).await, "get_api_key"),
        Some(touched),
        "touch_api_key must set last_used_at and last_used_ip and nothing else"
    );
    ok(store.touch_api_key(&new_id(ids::API_KEY), t2, None).await, "touch_api_key of an unknown key must not fail");
}

/// Projects: get in any state, list without deleted ones, update.
pub async fn store_projects(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let ids = ordered_ids(ids::PROJECT, 4);
    let states = [ProjectState::Ready, ProjectState::Provisioning, ProjectState::Deleted, ProjectState::Failed];
    let projects: Vec<Project> =
        ids.iter().zip(states).map(|(id, state)| project(&org.id, id.clone(), state, now)).collect();
    for p in &projects {
        put_project(store, p, now).await;
    }
    for p in &projects {
        assert_eq!(
            ok(store.get_project(&p.id).await, "get_project"),
            Some(p.clone()),
            "get_project must return the project in any state ({:?}), sealed password included",
            p.state
        );
    }
    assert_eq!(
        ok(store.get_project(&new_id(ids::PROJECT)).await, "get_project"),
        None,
        "get_project of an unknown id must be None"
    );

    let all = ok(store.list_projects(&org.id, &Page::first(10)).await, "list_projects");
    assert_eq!(
        all,
        vec![projects[3].clone(), projects[1].clone(), projects[0].clone()],
        "list_projects must list the organization's projects newest first, without deleted ones"
    );
    let page1 = ok(store.list_projects(&org.id, &Page::first(2)).await, "list_projects");
    assert_eq!(
        ids_of(&page1, |p| &p.id),
        vec![ids[3].clone(), ids[1].clone()],
        "list_projects must return at most `limit` projects"
    );
    let page2 =
        ok(store.list_projects(&org.id, &Page { limit: 2, before: Some(ids[1].clone()) }).await, "list_projects");
    assert_eq!(
        ids_of(&page2, |p| &p.id),
        vec![ids[0].clone()],
        "list_projects must continue strictly before the cursor"
    );
    let (other_org, _) = new_org(store, now).await;
    assert!(
        ok(store.list_projects(&other_org.id, &Page::first(10)).await, "list_projects").is_empty(),
        "list_projects must not list another organization's projects"
    );

    let renamed = Project {
        name: "renamed".into(),
        updated_at: plus_ms(now, 750),
        server_host: Some("capydb-renamed.cluster-c0ntract.eu-west-1.rds.amazonaws.com".into()),
        ..projects[0].clone()
    };
    ok(store.update_project(&renamed).await, "update_project");
    assert_eq!(
        ok(store.get_project(&renamed.id).await, "get_project"),
        Some(renamed),
        "update_project must replace the project"
    );
    let ghost = project(&org.id, new_id(ids::PROJECT), ProjectState::Ready, now);
    match store.update_project(&ghost).await {
        Err(DomainError::NotFound(_)) => {}
        other => panic!("update_project of an unknown project must be NotFound, got {other:?}"),
    }
    assert_eq!(ok(store.get_project(&ghost.id).await, "get_project"), None, "update_project must not create a project");
}

/// begin_job: the per-resource lock, and that a refused begin writes nothing.
/// Previews: round trip, live-name uniqueness, listing without the
/// deleted, expiry query, and events written by `begin_job`.
pub async fn store_previews(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let prj = project(&org.id, new_id(ids::PROJECT), ProjectState::Ready, now);
    put_project(store, &prj, now).await;
    let ids = ordered_ids(ids::PREVIEW, 4);
    let past = now - chrono::Duration::hours(1);
    let future = now + chrono::Duration::hours(1);

    let a = preview(&prj, ids[0].clone(), "pr-1", past, now);
    ok(put_preview(store, &a, PreviewState::Ready, now).await, "put preview a");
    let stored = ok(store.get_preview(&a.id).await, "get_preview").expect("preview a stored");
    assert_eq!(stored, Preview { state: PreviewState::Ready, ..a.clone() }, "a preview round-trips exactly");

    // A second live preview with the same name in the project: Conflict, nothing written.
    let dup = preview(&prj, ids[1].clone(), "pr-1", future, now);
    let mut j = job(&org.id, &prj.id, new_id(ids::JOB), JobKind::CreatePreview, now);
    aim(&mut j, ResourceKind::Preview, &dup.id);
    match store.begin_job(&j, &ResourceWrite::Preview(dup.clone()), &[], &Admission::default()).await {
        Err(DomainError::Conflict(_)) => {}
        other => panic!("a duplicate live preview name must be a Conflict, got {other:?}"),
    }
    assert_eq!(ok(store.get_preview(&dup.id).await, "get_preview"), None, "a refused begin_job writes nothing");
    assert_eq!(ok(store.get_job(&j.id).await, "get_job"), None, "a refused begin_job writes no job");

    // A host recorded once the preview's own server is made.
    let placed = Preview { server_host: Some("capydb-pvw.cluster-c0ntract.local".into()), ..stored.clone() };
    ok(store.update_preview(&placed).await, "update_preview");
    assert_eq!(ok(store.get_preview(&a.id).await, "get_preview"), Some(placed.clone()), "update_preview round-trips");
    // Once `a` is deleted its name is free.
    ok(store.update_preview(&Preview { state: PreviewState::Deleted, ..placed }).await, "update_preview");
    let b = preview(&prj, ids[2].clone(), "pr-1", future, now);
    ok(put_preview(store, &b, PreviewState::Ready, now).await, "a deleted preview's name can be reused");
    let c = preview(&prj, ids[3].clone(), "pr-2", past, now);
    ok(put_preview(store, &c, PreviewState::Failed, now).await, "put preview c");

    let listed = ok(store.list_previews(&prj.id, &Page::first(10)).await, "list_previews");
    assert_eq!(ids_of(&listed, |p| &p.id), vec![c.id.clone(), b.id.clone()], "live previews, newest first");
    let page =
        ok(store.list_previews(&prj.id, &Page { limit: 1, before: Some(c.id.clone()) }).await, "list_previews page");
    assert_eq!(ids_of(&page, |p| &p.id), vec![b.id.clone()], "the cursor continues after c");

    // Expired: ready or failed with expires_at <= now; not deleted ones, not future ones.
    let expired = ok(store.list_expired_previews(now, 100).await, "list_expired_previews");
    let mine: Vec<_> = expired.iter().filter(|p| p.project_id == prj.id).map(|p| p.id.clone()).collect();
    assert_eq!(mine, vec![c.id.clone()], "only c has expired and is still live");
    store_preview_expiry(store, &prj, now).await;

    // begin_job writes the events it is given, in the same transaction.
    let mut del = job(&org.id, &prj.id, new_id(ids::JOB), JobKind::DeletePreview, now);
    aim(&mut del, ResourceKind::Preview, &c.id);
    let e = event(&org.id, &prj.id, new_id(ids::EVENT), EventType::PreviewExpired, now);
    let deleting = Preview { state: PreviewState::Deleting, ..c.clone() };
    assert_eq!(
        ok(
            store
                .begin_job(&del, &ResourceWrite::Preview(deleting), std::slice::from_ref(&e), &Admission::default())
                .await,
            "begin_job"
        ),
        None
    );
    let events = ok(store.list_events(&org.id, &Page::first(10)).await, "list_events");
    assert!(events.iter().any(|x| x.id == e.id), "begin_job must write its events");
    ok(
        store.finish_job(&finished(&del, JobState::Completed, now), del.version, &ResourceWrite::Nothing, &[]).await,
        "finish",
    );
    ok(store.mark_event_published(&e.id, now).await, "mark_event_published");
}

/// `list_expired_previews` applies `Preview::is_expired`: in every state, a
/// preview past its expiry is listed exactly when the state expires (ready,
/// failed), and `expires_at == now` has expired while a nanosecond later has not.
async fn store_preview_expiry(store: &dyn Store, prj: &Project, now: Timestamp) {
    let expiring = |s: PreviewState| match s {
        PreviewState::Ready | PreviewState::Failed => true,
        PreviewState::Creating | PreviewState::Resetting | PreviewState::Deleting | PreviewState::Deleted => false,
    };
    let states = PreviewState::ALL.iter().copied();
    // Long before `now`, so other previews of a shared store do not crowd ours out.
    let past = now - chrono::Duration::days(400);
    let mut expected = Vec::new();
    let mut all = Vec::new();
    for (i, state) in states.enumerate() {
        let pv = preview(prj, new_id(ids::PREVIEW), &format!("expiry-{i}"), plus_ms(past, i as i64), now);
        ok(put_preview(store, &pv, state, now).await, "put preview (expiry)");
        assert_eq!(expiring(state), state.can_expire(), "PreviewState::can_expire disagrees for {state:?}");
        if expiring(state) {
            expected.push(pv.id.clone());
        }
        all.push(pv.id);
    }
    let at_now = preview(prj, new_id(ids::PREVIEW), "expiry-now", now, now);
    ok(put_preview(store, &at_now, PreviewState::Ready, now).await, "put preview (expiry now)");
    let just_after = preview(prj, new_id(ids::PREVIEW), "expiry-later", now + chrono::Duration::nanoseconds(1), now);
    ok(put_preview(store, &just_after, PreviewState::Ready, now).await, "put preview (expiry later)");
    all.extend([at_now.id.clone(), just_after.id.clone()]);

    let listed = ok(store.list_expired_previews(now, 1000).await, "list_expired_previews");
    let mine: Vec<String> = listed.iter().filter(|p| all.contains(&p.id)).map(|p| p.id.clone()).collect();
    expected.push(at_now.id.clone());
    assert_eq!(
        mine, expected,
        "list_expired_previews must list, oldest expiry first, the ready and failed previews whose expires_at <= now \
         (expires_at == now included); never creating, resetting, deleting or deleted ones, nor one a nanosecond from expiry"
    );
    assert!(listed.iter().all(|p| p.is_expired(now)), "every listed preview must be expired by Preview::is_expired");
    // Cleanup: free the names and the expiry listing for the next run.
    for id in &all {
        let pv = ok(store.get_preview(id).await, "get_preview").expect("stored");
        ok(store.update_preview(&Preview { state: PreviewState::Deleted, ..pv }).await, "update_preview");
    }
}

/// Backups, restores and imports: round trips, listing without the deleted,
/// and several records written by one `begin_job` (`ResourceWrite::All`).
pub async fn store_backups(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let prj = project(&org.id, new_id(ids::PROJECT), ProjectState::Ready, now);
    put_project(store, &prj, now).await;
    let ids = ordered_ids(ids::BACKUP, 2);
    let backup = |id: &str, kind: BackupKind| Backup {
        id: id.into(),
        organization_id: org.id.clone(),
        project_id: prj.id.clone(),
        name: "nightly".into(),
        kind,
        state: BackupState::Creating,
        size_bytes: None,
        sha256: None,
        created_at: now,
        completed_at: None,
    };
    let manual = backup(&ids[0], BackupKind::Manual);
    ok(store.put_backup(&manual).await, "put_backup");
    let done = Backup {
        state: BackupState::Completed,
        size_bytes: Some(u64::from(u32::MAX) + 7),
        sha256: Some("ab".repeat(32)),
        completed_at: Some(now),
        ..manual.clone()
    };
    ok(store.put_backup(&done).await, "put_backup (replace)");
    assert_eq!(
        ok(store.get_backup(&manual.id).await, "get_backup"),
        Some(done.clone()),
        "a backup round-trips exactly"
    );

    // One begin_job writes a safety backup and a restore together.
    let safety = backup(&ids[1], BackupKind::Safety);
    let restore = Restore {
        id: new_id(ids::RESTORE),
        organization_id: org.id.clone(),
        project_id: prj.id.clone(),
        backup_id: manual.id.clone(),
        mode: RestoreMode::Overwrite,
        state: OperationState::Running,
        preview_id: None,
        safety_backup_id: Some(safety.id.clone()),
        job_id: new_id(ids::JOB),
        created_at: now,
        finished_at: None,
    };
    let import = Import {
        id: new_id(ids::IMPORT),
        organization_id: org.id.clone(),
        project_id: prj.id.clone(),
        source: "postgres://u@h:5432/d".into(),
        state: OperationState::Failed,
        safety_backup_id: None,
        job_id: new_id(ids::JOB),
        created_at: now,
        finished_at: Some(now),
    };
    let j = job(&org.id, &prj.id, restore.job_id.clone(), JobKind::Restore, now);
    let write = ResourceWrite::All(vec![
        ResourceWrite::Backup(safety.clone()),
        ResourceWrite::Restore(restore.clone()),
        ResourceWrite::Import(import.clone()),
    ]);
    assert_eq!(ok(store.begin_job(&j, &write, &[], &Admission::default()).await, "begin_job (All)"), None);
    assert_eq!(ok(store.get_restore(&restore.id).await, "get_restore"), Some(restore.clone()));
    assert_eq!(ok(store.get_import(&import.id).await, "get_import"), Some(import.clone()));
    let listed = ok(store.list_backups(&prj.id, &Page::first(10)).await, "list_backups");
    assert_eq!(ids_of(&listed, |b| &b.id), vec![safety.id.clone(), manual.id.clone()], "newest first");
    ok(store.put_backup(&Backup { state: BackupState::Deleted, ..done }).await, "put_backup (deleted)");
    let listed = ok(store.list_backups(&prj.id, &Page::first(10)).await, "list_backups");
    assert_eq!(ids_of(&listed, |b| &b.id), vec![safety.id.clone()], "deleted backups are not listed");
    ok(
        store.finish_job(&finished(&j, JobState::Completed, now), j.version, &ResourceWrite::Nothing, &[]).await,
        "finish",
    );
}

pub async fn store_job_locks(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let q = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let jids = ordered_ids(ids::JOB, 4);
    let job1 = job(&org.id, &p.id, jids[0].clone(), JobKind::Provision, now);
    let job2 = job(&org.id, &p.id, jids[1].clone(), JobKind::DeleteProject, plus_ms(now, 10));
    let job3 = job(&org.id, &q.id, jids[2].clone(), JobKind::Provision, now);
    let job4 = job(&org.id, &p.id, jids[3].clone(), JobKind::RotateCredentials, plus_ms(now, 20));

    assert_eq!(
        ok(store.begin_job(&job1, &ResourceWrite::Project(p.clone()), &[], &Admission::default()).await, "begin_job"),
        None,
        "begin_job on an unlocked resource must succeed"
    );
    assert_eq!(
        ok(store.get_job(&job1.id).await, "get_job"),
        Some(job1.clone()),
        "begin_job must store the job with every field (version, lease, params)"
    );
    assert_eq!(ok(store.get_project(&p.id).await, "get_project"), Some(p.clone()), "begin_job must write the resource");

    let deleting = Project { state: ProjectState::Deleting, ..p.clone() };
    let held = ok(
        store.begin_job(&job2, &ResourceWrite::Project(deleting.clone()), &[], &Admission::default()).await,
        "begin_job",
    );
    assert_eq!(held, Some(job1.id.clone()), "begin_job on a locked resource must return the holder's job id");
    assert_eq!(ok(store.get_job(&job2.id).await, "get_job"), None, "a refused begin_job must not store its job");
    assert_eq!(
        ok(store.get_project(&p.id).await, "get_project"),
        Some(p.clone()),
        "a refused begin_job must not write its resource"
    );

    assert_eq!(
        ok(store.begin_job(&job3, &ResourceWrite::Project(q.clone()), &[], &Admission::default()).await, "begin_job"),
        None,
        "the lock is per resource: another project must not be blocked"
    );

    let ready = Project { state: ProjectState::Ready, updated_at: plus_ms(now, 5), ..p.clone() };
    let job1_done = finished(&job1, JobState::Completed, plus_ms(now, 5));
    assert!(
        ok(store.finish_job(&job1_done, 1, &ResourceWrite::Project(ready.clone()), &[]).await, "finish_job"),
        "finish_job with the current version must succeed"
    );
    assert_eq!(ok(store.get_project(&p.id).await, "get_project"), Some(ready), "finish_job must write the resource");
    assert_eq!(
        ok(
            store.begin_job(&job2, &ResourceWrite::Project(deleting.clone()), &[], &Admission::default()).await,
            "begin_job"
        ),
        None,
        "finish_job must release the lock"
    );
    assert_eq!(
        ok(store.get_project(&p.id).await, "get_project"),
        Some(deleting),
        "begin_job must write the resource once the lock is free"
    );

    // A late finish of job1 (e.g. a worker that lost its lease) must not
    // release job2's lock.
    let job1_again = Job { version: 3, ..job1_done.clone() };
    assert!(
        ok(store.finish_job(&job1_again, 2, &ResourceWrite::Nothing, &[]).await, "finish_job"),
        "finish_job with the current version must succeed"
    );
    assert_eq!(
        ok(store.begin_job(&job4, &ResourceWrite::Nothing, &[], &Admission::default()).await, "begin_job"),
        Some(job2.id.clone()),
        "finish_job must release only the lock its own job holds"
    );

    let listed = ok(store.list_project_jobs(&p.id, &Page::first(10)).await, "list_project_jobs");
    assert_eq!(
        listed,
        vec![job2.clone(), job1_again.clone()],
        "list_project_jobs must list the project's jobs newest first"
    );
    let page1 = ok(store.list_project_jobs(&p.id, &Page::first(1)).await, "list_project_jobs");
    assert_eq!(ids_of(&page1, |j| &j.id), vec![job2.id.clone()], "list_project_jobs must return at most `limit` jobs");
    let page2 = ok(
        store.list_project_jobs(&p.id, &Page { limit: 1, before: Some(job2.id.clone()) }).await,
        "list_project_jobs",
    );
    assert_eq!(
        ids_of(&page2, |j| &j.id),
        vec![job1.id.clone()],
        "list_project_jobs must continue strictly before the cursor"
    );

    for j in [&job2, &job3] {
        let done = finished(j, JobState::Completed, now);
        assert!(
            ok(store.finish_job(&done, j.version, &ResourceWrite::Nothing, &[]).await, "finish_job"),
            "cleanup: finish_job must succeed"
        );
    }
}

/// A job inside a project holds it: it starts only while the project is
/// ready, and the project's deletion waits for none and starts only while
/// nothing holds it.
pub async fn store_project_holds(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Ready, now);
    put_project(store, &p, now).await;
    let hold = Admission { hold_project: Some(p.id.clone()), ..Admission::default() };
    let unheld = Admission { project_unheld: Some(p.id.clone()), ..Admission::default() };
    let inside = |kind: JobKind, resource: &str| {
        let mut j = job(&org.id, &p.id, new_id(ids::JOB), kind, now);
        aim(&mut j, ResourceKind::Backup, resource);
        j
    };

    let backup_job = inside(JobKind::CreateBackup, &new_id(ids::BACKUP));
    assert_eq!(ok(store.begin_job(&backup_job, &ResourceWrite::Nothing, &[], &hold).await, "begin_job (hold)"), None);
    let second = inside(JobKind::CreateBackup, &new_id(ids::BACKUP));
    assert_eq!(
        ok(store.begin_job(&second, &ResourceWrite::Nothing, &[], &hold).await, "begin_job (hold)"),
        None,
        "several jobs may hold one project at once"
    );

    let deleting = Project { state: ProjectState::Deleting, ..p.clone() };
    let delete = job(&org.id, &p.id, new_id(ids::JOB), JobKind::DeleteProject, now);
    match store.begin_job(&delete, &ResourceWrite::Project(deleting.clone()), &[], &unheld).await {
        Err(DomainError::Conflict(m)) => assert!(
            m.contains(&backup_job.id) || m.contains(&second.id),
            "the refusal must name a job that holds the project: {m}"
        ),
        other => panic!("deleting a held project must be a Conflict, got {other:?}"),
    }
    assert_eq!(ok(store.get_project(&p.id).await, "get_project"), Some(p.clone()), "a refused deletion writes nothing");
    assert_eq!(ok(store.get_job(&delete.id).await, "get_job"), None, "a refused deletion stores no job");

    for j in [&backup_job, &second] {
        let done = finished(j, JobState::Completed, now);
        assert!(ok(store.finish_job(&done, j.version, &ResourceWrite::Nothing, &[]).await, "finish_job"));
    }
    assert_eq!(
        ok(store.begin_job(&delete, &ResourceWrite::Project(deleting.clone()), &[], &unheld).await, "begin_job"),
        None,
        "finish_job must release the job's hold"
    );
    let late = inside(JobKind::CreateBackup, &new_id(ids::BACKUP));
    match store.begin_job(&late, &ResourceWrite::Nothing, &[], &hold).await {
        Err(DomainError::Conflict(m)) => assert!(m.contains("deleting"), "the refusal must say why: {m}"),
        other => panic!("a job inside a project being deleted must be a Conflict, got {other:?}"),
    }
    assert_eq!(ok(store.get_job(&late.id).await, "get_job"), None, "a refused job is not stored");
    let gone = inside(JobKind::CreateBackup, &new_id(ids::BACKUP));
    let missing = Admission { hold_project: Some(new_id(ids::PROJECT)), ..Admission::default() };
    assert!(
        matches!(store.begin_job(&gone, &ResourceWrite::Nothing, &[], &missing).await, Err(DomainError::NotFound(_))),
        "holding a project that does not exist must be NotFound"
    );
    let done = finished(&delete, JobState::Completed, now);
    let deleted = Project { state: ProjectState::Deleted, ..p.clone() };
    assert!(ok(store.finish_job(&done, delete.version, &ResourceWrite::Project(deleted), &[]).await, "finish_job"));
}

/// Limits: counted in the transaction that adds a resource (racing creates
/// never overshoot), and freed when a write marks the resource deleted.
pub async fn store_quotas(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    assert_eq!(
        ok(store.usage(&org.id).await, "usage"),
        crate::ports::Usage::default(),
        "a new organization uses nothing"
    );
    let claim = |kind: QuotaKind, owner: &str, limit: u32| Admission {
        quota: Some(QuotaClaim { kind, owner: owner.into(), limit }),
        ..Admission::default()
    };

    // Projects: 5 racing creates against a limit of 3.
    let racers: Vec<(Job, Project)> = (0..5)
        .map(|_| {
            let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
            (job(&org.id, &p.id, new_id(ids::JOB), JobKind::Provision, now), p)
        })
        .collect();
    let admission = claim(QuotaKind::Projects, &org.id, 3);
    let writes: Vec<ResourceWrite> = racers.iter().map(|(_, p)| ResourceWrite::Project(p.clone())).collect();
    let results =
        futures_join_all(racers.iter().zip(&writes).map(|((j, _), w)| store.begin_job(j, w, &[], &admission))).await;
    let admitted: Vec<&(Job, Project)> =
        racers.iter().zip(&results).filter(|(_, r)| matches!(r, Ok(None))).map(|(x, _)| x).collect();
    assert_eq!(admitted.len(), 3, "exactly the limit is admitted: {results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, DomainError::Forbidden(m) if m.contains("at most 3 projects") && m.contains("3 in use")),
                "over the limit must be Forbidden naming the limit and the usage: {e:?}"
            );
        }
    }
    for ((_, p), r) in racers.iter().zip(&results) {
        if r.is_err() {
            assert_eq!(ok(store.get_project(&p.id).await, "get_project"), None, "a refused create writes nothing");
        }
    }
    assert_eq!(ok(store.usage(&org.id).await, "usage").projects, 3);
    // A deletion frees a place.
    let (j0, p0) = admitted[0];
    let done = finished(j0, JobState::Completed, now);
    let deleted = Project { state: ProjectState::Deleted, ..p0.clone() };
    assert!(ok(store.finish_job(&done, j0.version, &ResourceWrite::Project(deleted), &[]).await, "finish_job"));
    assert_eq!(ok(store.usage(&org.id).await, "usage").projects, 2, "a deleted project stops counting");
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let j = job(&org.id, &p.id, new_id(ids::JOB), JobKind::Provision, now);
    assert_eq!(
        ok(store.begin_job(&j, &ResourceWrite::Project(p.clone()), &[], &admission).await, "begin_job"),
        None,
        "a deleted project frees its place"
    );

    // Previews of one project.
    let prj = project(&org.id, new_id(ids::PROJECT), ProjectState::Ready, now);
    put_project(store, &prj, now).await;
    let admission = claim(QuotaKind::Previews, &prj.id, 1);
    let new_preview = |name: &str| {
        let pv = preview(&prj, new_id(ids::PREVIEW), name, plus_ms(now, 3_600_000), now);
        let mut j = job(&org.id, &prj.id, new_id(ids::JOB), JobKind::CreatePreview, now);
        aim(&mut j, ResourceKind::Preview, &pv.id);
        (j, pv)
    };
    let (j1, pv1) = new_preview("one");
    assert_eq!(
        ok(store.begin_job(&j1, &ResourceWrite::Preview(pv1.clone()), &[], &admission).await, "begin_job"),
        None
    );
    let (j2, pv2) = new_preview("two");
    assert!(
        matches!(store.begin_job(&j2, &ResourceWrite::Preview(pv2.clone()), &[], &admission).await,
            Err(DomainError::Forbidden(ref m)) if m.contains("previews per project")),
        "a second preview over a limit of 1 must be Forbidden"
    );
    let gone = Preview { state: PreviewState::Deleted, ..pv1.clone() };
    let done = finished(&j1, JobState::Completed, now);
    assert!(ok(store.finish_job(&done, j1.version, &ResourceWrite::Preview(gone), &[]).await, "finish_job"));
    assert_eq!(
        ok(store.begin_job(&j2, &ResourceWrite::Preview(pv2.clone()), &[], &admission).await, "begin_job"),
        None,
        "a deleted preview frees its place"
    );

    // Backups: a backup deleted through put_backup frees its place too.
    let admission = claim(QuotaKind::Backups, &prj.id, 1);
    let backup = |id: String| Backup {
        id,
        organization_id: org.id.clone(),
        project_id: prj.id.clone(),
        name: "nightly".into(),
        kind: BackupKind::Manual,
        state: BackupState::Creating,
        size_bytes: None,
        sha256: None,
        created_at: now,
        completed_at: None,
    };
    let b1 = backup(new_id(ids::BACKUP));
    let mut bj1 = job(&org.id, &prj.id, new_id(ids::JOB), JobKind::CreateBackup, now);
    aim(&mut bj1, ResourceKind::Backup, &b1.id);
    assert_eq!(ok(store.begin_job(&bj1, &ResourceWrite::Backup(b1.clone()), &[], &admission).await, "begin_job"), None);
    let b2 = backup(new_id(ids::BACKUP));
    let mut bj2 = job(&org.id, &prj.id, new_id(ids::JOB), JobKind::CreateBackup, now);
    aim(&mut bj2, ResourceKind::Backup, &b2.id);
    assert!(
        matches!(
            store.begin_job(&bj2, &ResourceWrite::Backup(b2.clone()), &[], &admission).await,
            Err(DomainError::Forbidden(_))
        ),
        "a second backup over a limit of 1 must be Forbidden"
    );
    let completed = Backup { state: BackupState::Completed, ..b1.clone() };
    let done = finished(&bj1, JobState::Completed, now);
    assert!(ok(store.finish_job(&done, bj1.version, &ResourceWrite::Backup(completed.clone()), &[]).await, "finish"));
    ok(store.put_backup(&Backup { state: BackupState::Deleted, ..completed.clone() }).await, "put_backup (deleted)");
    ok(store.put_backup(&Backup { state: BackupState::Deleted, ..completed }).await, "put_backup (deleted again)");
    assert_eq!(
        ok(store.begin_job(&bj2, &ResourceWrite::Backup(b2.clone()), &[], &admission).await, "begin_job"),
        None,
        "a deleted backup frees its place (once, however often it is written deleted)"
    );
    let b3 = backup(new_id(ids::BACKUP));
    let mut bj3 = job(&org.id, &prj.id, new_id(ids::JOB), JobKind::CreateBackup, now);
    aim(&mut bj3, ResourceKind::Backup, &b3.id);
    assert!(
        matches!(
            store.begin_job(&bj3, &ResourceWrite::Backup(b3), &[], &admission).await,
            Err(DomainError::Forbidden(_))
        ),
        "deleting one backup twice must not free two places"
    );

    // Webhook endpoints.
    let quota = QuotaClaim { kind: QuotaKind::Webhooks, owner: org.id.clone(), limit: 1 };
    let w1 = webhook(&org.id, new_id(ids::WEBHOOK), now);
    ok(store.insert_webhook(&w1, Some(&quota), None).await, "insert_webhook");
    let w2 = webhook(&org.id, new_id(ids::WEBHOOK), now);
    assert!(
        matches!(store.insert_webhook(&w2, Some(&quota), None).await, Err(DomainError::Forbidden(ref m)) if m.contains("webhook endpoints")),
        "a second endpoint over a limit of 1 must be Forbidden"
    );
    assert_eq!(ok(store.usage(&org.id).await, "usage").webhooks, 1);
    assert!(ok(store.delete_webhook(&org.id, &w1.id).await, "delete_webhook"));
    ok(store.insert_webhook(&w2, Some(&quota), None).await, "insert_webhook after a delete");
    assert_eq!(ok(store.usage(&org.id).await, "usage"), crate::ports::Usage { projects: 4, webhooks: 1 });
}

/// update_job: optimistic concurrency on `version`.
pub async fn store_job_versions(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let j = job(&org.id, &p.id, new_id(ids::JOB), JobKind::DeleteProject, now);
    assert_eq!(
        ok(store.begin_job(&j, &ResourceWrite::Project(p), &[], &Admission::default()).await, "begin_job"),
        None,
        "begin_job must succeed"
    );
    assert_eq!(ok(store.get_job(&new_id(ids::JOB)).await, "get_job"), None, "get_job of an unknown id must be None");

    let running = Job {
        state: JobState::Running,
        attempt: 1,
        step: 2,
        started_at: Some(plus_ms(now, 1)),
        error: Some("transient: retrying".into()),
        version: 2,
        lease_owner: Some("worker-1".into()),
        lease_expires_at: Some(plus_ms(now, 30_000)),
        // The progress a deletion records in its specification.
        spec: JobSpec::DeleteProject {
            dropped_previews: vec![new_id(ids::PREVIEW).into(), new_id(ids::PREVIEW).into()],
        },
        // A wait, to the nanosecond.
        waiting: Some(JobWait {
            step: "drop_database".into(),
            since: plus_ms(now, 2),
            checks: 3,
            next_check_at: plus_ms(now, 60_003),
        }),
        ..j.clone()
    };
    assert!(ok(store.update_job(&running, 1).await, "update_job"), "update_job with the stored version must succeed");
    assert_eq!(
        ok(store.get_job(&j.id).await, "get_job"),
        Some(running.clone()),
        "update_job must replace every field, lease and specification included"
    );

    let stale = Job { step: 9, ..running.clone() };
    assert!(
        !ok(store.update_job(&stale, 1).await, "update_job"),
        "update_job with a stale expected version must return false"
    );
    assert_eq!(
        ok(store.get_job(&j.id).await, "get_job"),
        Some(running.clone()),
        "a refused update_job must not change the job"
    );
    let ghost = Job { id: new_id(ids::JOB), ..running.clone() };
    assert!(
        !ok(store.update_job(&Job { version: 3, ..ghost }, 2).await, "update_job"),
        "update_job of an unknown job must return false"
    );

    let done = finished(&running, JobState::Completed, plus_ms(now, 2));
    assert!(
        ok(store.finish_job(&done, 2, &ResourceWrite::Nothing, &[]).await, "finish_job"),
        "cleanup: finish_job must succeed"
    );
}

/// finish_job: all-or-nothing, events appended, listed newest first.
pub async fn store_finish_job(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Provisioning, now);
    let j = job(&org.id, &p.id, new_id(ids::JOB), JobKind::Provision, now);
    assert_eq!(
        ok(store.begin_job(&j, &ResourceWrite::Project(p.clone()), &[], &Admission::default()).await, "begin_job"),
        None,
        "begin_job must succeed"
    );

    let eids = ordered_ids(ids::EVENT, 2);
    let events = vec![
        event(&org.id, &p.id, eids[0].clone(), EventType::ProjectReady, plus_ms(now, 3)),
        event(&org.id, &p.id, eids[1].clone(), EventType::JobCompleted, plus_ms(now, 3)),
    ];
    let ready = Project { state: ProjectState::Ready, ..p.clone() };

    let wrong = Job { version: 6, ..finished(&j, JobState::Completed, now) };
    assert!(
        !ok(store.finish_job(&wrong, 5, &ResourceWrite::Project(ready.clone()), &events).await, "finish_job"),
        "finish_job with a stale expected version must return false"
    );
    assert_eq!(
        ok(store.get_job(&j.id).await, "get_job"),
        Some(j.clone()),
        "a refused finish_job must not change the job"
    );
    assert_eq!(
        ok(store.get_project(&p.id).await, "get_project"),
        Some(p.clone()),
        "a refused finish_job must not write the resource"
    );
    assert!(
        ok(store.list_events(&org.id, &Page::first(10)).await, "list_events").is_empty(),
        "a refused finish_job must not append events"
    );
    let probe = job(&org.id, &p.id, new_id(ids::JOB), JobKind::DeleteProject, now);
    assert_eq!(
        ok(store.begin_job(&probe, &ResourceWrite::Nothing, &[], &Admission::default()).await, "begin_job"),
        Some(j.id.clone()),
        "a refused finish_job must keep the lock"
    );

    let done = Job { step: 3, error: None, ..finished(&j, JobState::Completed, plus_ms(now, 3)) };
    assert!(
        ok(store.finish_job(&done, 1, &ResourceWrite::Project(ready.clone()), &events).await, "finish_job"),
        "finish_job with the current version must succeed"
    );
    assert_eq!(ok(store.get_job(&j.id).await, "get_job"), Some(done), "finish_job must store the job");
    assert_eq!(ok(store.get_project(&p.id).await, "get_project"), Some(ready), "finish_job must write the resource");
    let listed = ok(store.list_events(&org.id, &Page::first(10)).await, "list_events");
    assert_eq!(
        listed,
        vec![events[1].clone(), events[0].clone()],
        "finish_job must append its events; list_events lists them newest first"
    );
    let page2 = ok(store.list_events(&org.id, &Page { limit: 1, before: Some(eids[1].clone()) }).await, "list_events");
    assert_eq!(page2, vec![events[0].clone()], "list_events must continue strictly before the cursor");
    let (other_org, _) = new_org(store, now).await;
    assert!(
        ok(store.list_events(&other_org.id, &Page::first(10)).await, "list_events").is_empty(),
        "list_events must not list another organization's events"
    );

    // finish_job released the lock: the probe may begin now.
    assert_eq!(
        ok(store.begin_job(&probe, &ResourceWrite::Nothing, &[], &Admission::default()).await, "begin_job"),
        None,
        "finish_job must release the lock"
    );
    let probe_done = finished(&probe, JobState::Failed, now);
    assert!(
        ok(store.finish_job(&probe_done, 1, &ResourceWrite::Nothing, &[]).await, "finish_job"),
        "cleanup: finish_job must succeed"
    );
    for e in &events {
        ok(store.mark_event_published(&e.id, now).await, "cleanup: mark_event_published");
    }
}

/// list_stuck_jobs: which jobs need a new queue message, oldest first.
pub async fn store_stuck_jobs(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    // Long ago (1980 plus up to ~11 days), so live jobs of a shared store
    // cannot crowd ours out of the oldest-first listing.
    let base = at_secs(315_532_800 + rand::thread_rng().gen_range(0..1_000_000));
    let stale_before = plus_ms(base, 100_000);
    let jobs_at = |state: JobState, created: i64, lease: Option<i64>| {
        let p = new_id(ids::PROJECT);
        Job {
            state,
            lease_owner: lease.map(|_| "worker-x".to_string()),
            lease_expires_at: lease.map(|ms| plus_ms(base, ms)),
            ..job(&org.id, &p, new_id(ids::JOB), JobKind::Provision, plus_ms(base, created))
        }
    };
    let queued_old = jobs_at(JobState::Queued, 0, None);
    let lease_lapsed = jobs_at(JobState::Running, 1_000, Some(10_000));
    let lease_live = jobs_at(JobState::Running, 2_000, Some(1_000_000));
    let terminal = jobs_at(JobState::Completed, 3_000, None);
    let queued_new = jobs_at(JobState::Queued, 200_000, None);
    let all = [&queued_old, &lease_lapsed, &lease_live, &terminal, &queued_new];
    for j in all {
        assert_eq!(
            ok(store.begin_job(j, &ResourceWrite::Nothing, &[], &Admission::default()).await, "begin_job"),
            None,
            "begin_job must succeed"
        );
    }
    let ours: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();

    let stuck = ok(store.list_stuck_jobs(stale_before, 10_000).await, "list_stuck_jobs");
    let stuck_ours: Vec<Job> = stuck.into_iter().filter(|j| ours.contains(&j.id.as_str())).collect();
    assert_eq!(
        stuck_ours,
        vec![queued_old.clone(), lease_lapsed.clone()],
        "list_stuck_jobs must return, oldest first, the non-terminal jobs without a lease created before stale_before \
         and those whose lease expired before it; not live leases, terminal jobs or recent jobs"
    );
    let one = ok(store.list_stuck_jobs(stale_before, 1).await, "list_stuck_jobs");
    assert_eq!(one.len(), 1, "list_stuck_jobs must honour `limit`");

    for j in all {
        let done = finished(j, JobState::Failed, now);
        assert!(
            ok(store.finish_job(&done, j.version, &ResourceWrite::Nothing, &[]).await, "finish_job"),
            "cleanup: finish_job must succeed"
        );
    }
    let after = ok(store.list_stuck_jobs(stale_before, 10_000).await, "list_stuck_jobs");
    assert!(!after.iter().any(|j| ours.contains(&j.id.as_str())), "finished jobs must not be listed as stuck");
}

/// The outbox: unpublished events oldest first, marking them published.
pub async fn store_outbox(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let p = project(&org.id, new_id(ids::PROJECT), ProjectState::Ready, now);
    let j = job(&org.id, &p.id, new_id(ids::JOB), JobKind::RotateCredentials, now);
    assert_eq!(
        ok(store.begin_job(&j, &ResourceWrite::Project(p.clone()), &[], &Admission::default()).await, "begin_job"),
        None,
        "begin_job must succeed"
    );
    let eids = ordered_ids(ids::EVENT, 3);
    let events: Vec<Event> =
        eids.iter().map(|id| event(&org.id, &p.id, id.clone(), EventType::ProjectDeleted, now)).collect();
    let done = finished(&j, JobState::Completed, now);
    assert!(
        ok(store.finish_job(&done, 1, &ResourceWrite::Nothing, &events).await, "finish_job"),
        "finish_job must succeed"
    );

    let ours = |list: Vec<Event>| -> Vec<Event> { list.into_iter().filter(|e| eids.contains(&e.id)).collect() };
    let pending = ours(ok(store.list_unpublished_events(10_000).await, "list_unpublished_events"));
    assert_eq!(pending, events, "list_unpublished_events must list unpublished events oldest first");
    assert!(
        ok(store.list_unpublished_events(1).await, "list_unpublished_events").len() <= 1,
        "list_unpublished_events must honour `limit`"
    );

    let t = plus_ms(now, 42);
    ok(store.mark_event_published(&eids[1], t).await, "mark_event_published");
    let pending = ours(ok(store.list_unpublished_events(10_000).await, "list_unpublished_events"));
    assert_eq!(
        pending,
        vec![events[0].clone(), events[2].clone()],
        "a published event must leave the unpublished list"
    );
    let listed = ok(store.list_events(&org.id, &Page::first(10)).await, "list_events");
    let published = Event { published_at: Some(t), ..events[1].clone() };
    assert_eq!(
        listed,
        vec![events[2].clone(), published, events[0].clone()],
        "list_events must show every event, with published_at once published"
    );

    for id in [&eids[0], &eids[2]] {
        ok(store.mark_event_published(id, t).await, "mark_event_published");
    }
    let pending = ours(ok(store.list_unpublished_events(10_000).await, "list_unpublished_events"));
    assert!(pending.is_empty(), "every published event must leave the unpublished list");
}

fn webhook(org_id: &str, id: String, now: Timestamp) -> WebhookEndpoint {
    WebhookEndpoint {
        id,
        organization_id: org_id.to_string(),
        url: "https://hooks.example.com/capydb".into(),
        events: vec!["project.ready".into(), "job.failed".into()],
        project_id: None,
        description: Some("ci".into()),
        enabled: true,
        disabled_reason: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
        secret_sealed: "sealed-secret".into(),
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
    }
}

fn delivery(w: &WebhookEndpoint, id: String, event_id: &str, now: Timestamp) -> Delivery {
    Delivery {
        id,
        webhook_id: w.id.clone(),
        organization_id: w.organization_id.clone(),
        event_id: event_id.to_string(),
        event_type: EventType::ProjectReady,
        state: DeliveryState::Pending,
        attempt_count: 0,
        next_attempt_at: Some(now),
        created_at: now,
        updated_at: now,
        payload: r#"{"type":"project.ready","timestamp":"2026-01-01T00:00:00Z","data":{}}"#.into(),
        attempts: Vec::new(),
        round_attempts: 0,
        lease_until: None,
    }
}

/// Webhook endpoints: insert, get (scoped to the organization), list newest
/// first, update (secrets included), health, disable, delete.
pub async fn store_webhooks(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let (other, _) = new_org(store, now).await;
    let wids = ordered_ids(ids::WEBHOOK, 3);
    let hooks: Vec<WebhookEndpoint> = wids.iter().map(|id| webhook(&org.id, id.clone(), now)).collect();
    for h in &hooks {
        ok(store.insert_webhook(h, None, None).await, "insert_webhook");
    }
    assert!(store.insert_webhook(&hooks[0], None, None).await.is_err(), "insert_webhook must refuse a duplicate id");
    assert_eq!(ok(store.get_webhook(&org.id, &wids[0]).await, "get_webhook"), Some(hooks[0].clone()));
    assert_eq!(
        ok(store.get_webhook(&other.id, &wids[0]).await, "get_webhook"),
        None,
        "get_webhook must not find another organization's endpoint"
    );
    let first = ok(store.list_webhooks(&org.id, &Page::first(2)).await, "list_webhooks");
    assert_eq!(first, vec![hooks[2].clone(), hooks[1].clone()], "list_webhooks: newest first, limited");
    let next =
        ok(store.list_webhooks(&org.id, &Page { limit: 2, before: Some(wids[1].clone()) }).await, "list_webhooks");
    assert_eq!(next, vec![hooks[0].clone()], "list_webhooks must continue after the cursor");

    let mut changed = hooks[1].clone();
    changed.url = "https://other.example.com/".into();
    changed.events = vec!["*".into()];
    changed.project_id = Some("prj_x".into());
    changed.previous_secret_sealed = Some("old-sealed".into());
    changed.previous_secret_expires_at = Some(plus_ms(now, 86_400_000));
    changed.secret_sealed = "new-sealed".into();
    changed.updated_at = plus_ms(now, 5);
    assert!(ok(store.update_webhook(&changed, now, false).await, "update_webhook"));
    assert_eq!(ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook"), Some(changed.clone()));
    let stale = WebhookEndpoint { url: "https://stale.example.com/".into(), ..changed.clone() };
    assert!(
        !ok(store.update_webhook(&stale, now, false).await, "update_webhook"),
        "update_webhook must refuse a write based on an outdated read"
    );
    assert_eq!(ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook"), Some(changed.clone()));
    let ghost = webhook(&org.id, new_id(ids::WEBHOOK), now);
    assert!(
        !ok(store.update_webhook(&ghost, now, false).await, "update_webhook"),
        "update_webhook of a missing endpoint is false"
    );
    assert_eq!(ok(store.get_webhook(&org.id, &ghost.id).await, "get_webhook"), None, "and must not create it");

    let t1 = plus_ms(now, 10);
    let t2 = plus_ms(now, 20);
    assert_eq!(ok(store.set_webhook_health(&org.id, &wids[1], false, t1).await, "set_webhook_health"), Some(t1));
    assert_eq!(
        ok(store.set_webhook_health(&org.id, &wids[1], false, t2).await, "set_webhook_health"),
        Some(t1),
        "a second failure must keep the first failure's time"
    );
    assert_eq!(ok(store.set_webhook_health(&org.id, &wids[1], true, t2).await, "set_webhook_health"), None);
    ok(store.set_webhook_health(&org.id, &wids[1], false, t2).await, "set_webhook_health");
    ok(store.disable_webhook(&org.id, &wids[1], "gone", t2).await, "disable_webhook");
    let disabled = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("gone"));
    assert_eq!(disabled.failing_since, Some(t2));
    assert_eq!(disabled.url, changed.url, "disable_webhook must change nothing else");
    let edited = WebhookEndpoint { description: Some("edit".into()), failing_since: None, ..disabled.clone() };
    assert!(
        !ok(store.update_webhook(&edited, changed.updated_at, true).await, "update_webhook"),
        "a disable is a change"
    );
    assert_eq!(
        ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint").failing_since,
        Some(t2),
        "a refused update_webhook must not clear failing_since"
    );
    let t3 = plus_ms(now, 30);
    let edited = WebhookEndpoint { updated_at: t3, ..edited };
    assert!(ok(store.update_webhook(&edited, disabled.updated_at, false).await, "update_webhook"));
    let got = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    assert_eq!(got.failing_since, Some(t2), "an edit that leaves it disabled keeps failing_since");
    // The store applies the caller's decision, not a rule of its own: told
    // to, it clears even on a write that leaves the endpoint disabled.
    let t35 = plus_ms(now, 35);
    let still_disabled = WebhookEndpoint { updated_at: t35, failing_since: None, ..got.clone() };
    assert!(ok(store.update_webhook(&still_disabled, t3, true).await, "update_webhook"));
    let got = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    assert_eq!((got.enabled, got.failing_since), (false, None), "clear_failing_since clears, whatever else is written");
    assert_eq!(ok(store.set_webhook_health(&org.id, &wids[1], false, t2).await, "set_webhook_health"), Some(t2));
    let got = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    // Re-enabling: the domain decides (`WebhookEndpoint::set_enabled`), the store clears.
    let mut enabled = WebhookEndpoint { updated_at: plus_ms(now, 36), ..got.clone() };
    assert!(enabled.set_enabled(true), "enabling a disabled endpoint re-enables it");
    assert_eq!((enabled.disabled_reason.as_deref(), enabled.failing_since), (None, None));
    assert!(ok(store.update_webhook(&enabled, t35, true).await, "update_webhook"));
    let got = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    assert_eq!((got.enabled, got.failing_since), (true, None), "update_webhook(clear_failing_since) clears it");
    assert_eq!(got, enabled, "the re-enabled endpoint round-trips");
    // A failure while enabled, then an edit of the enabled endpoint: kept.
    let t4 = plus_ms(now, 40);
    ok(store.set_webhook_health(&org.id, &wids[1], false, t4).await, "set_webhook_health");
    let mut again = WebhookEndpoint { updated_at: plus_ms(now, 41), ..got.clone() };
    assert!(!again.set_enabled(true), "enabling an enabled endpoint is no re-enabling");
    assert!(ok(store.update_webhook(&again, got.updated_at, false).await, "update_webhook"));
    let got = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    assert_eq!(got.failing_since, Some(t4), "an edit without clear_failing_since keeps failing_since");
    // A delivery that succeeds clears it.
    assert_eq!(ok(store.set_webhook_health(&org.id, &wids[1], true, t4).await, "set_webhook_health"), None);
    let got = ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook").expect("endpoint");
    assert_eq!(got.failing_since, None, "a success clears the stored failing_since");

    // `events` round-trips as the list it is, whatever its strings hold.
    let odd = WebhookEndpoint {
        events: vec!["project.ready".into(), "quote\"back\\slash".into(), "ünïcödé ✓".into(), "[]".into(), "*".into()],
        updated_at: plus_ms(now, 50),
        ..got.clone()
    };
    assert!(ok(store.update_webhook(&odd, got.updated_at, false).await, "update_webhook"));
    assert_eq!(ok(store.get_webhook(&org.id, &wids[1]).await, "get_webhook"), Some(odd), "events round-trip");

    assert!(!ok(store.delete_webhook(&other.id, &wids[0]).await, "delete_webhook"), "not another org's endpoint");
    assert!(ok(store.delete_webhook(&org.id, &wids[0]).await, "delete_webhook"));
    assert!(!ok(store.delete_webhook(&org.id, &wids[0]).await, "delete_webhook"), "a second delete is false");
    assert_eq!(ok(store.get_webhook(&org.id, &wids[0]).await, "get_webhook"), None);
}

/// Deliveries: idempotent creation per (endpoint, event), claims with
/// leases, attempts recorded with the delivery, due listing, deletion with
/// the endpoint.
pub async fn store_deliveries(store: &dyn Store) {
    let now = base_time();
    let (org, _) = new_org(store, now).await;
    let w = webhook(&org.id, new_id(ids::WEBHOOK), now);
    ok(store.insert_webhook(&w, None, None).await, "insert_webhook");
    let eids = ordered_ids(ids::EVENT, 2);
    let dids = ordered_ids(ids::DELIVERY, 3);
    let d0 = delivery(&w, dids[0].clone(), &eids[0], now);
    assert_eq!(ok(store.create_delivery(&d0).await, "create_delivery"), d0);
    let again = delivery(&w, dids[2].clone(), &eids[0], now);
    assert_eq!(
        ok(store.create_delivery(&again).await, "create_delivery"),
        d0,
        "a second delivery of the same event to the same endpoint must return the first"
    );
    assert_eq!(ok(store.get_delivery(&dids[2]).await, "get_delivery"), None, "and must not be stored");
    let d1 = delivery(&w, dids[1].clone(), &eids[1], plus_ms(now, 1000));
    ok(store.create_delivery(&d1).await, "create_delivery");

    // Not yet due: no claim.
    assert_eq!(ok(store.claim_delivery(&d1.id, now, plus_ms(now, 500)).await, "claim_delivery"), None);
    let lease = plus_ms(now, 30_000);
    let claimed = ok(store.claim_delivery(&d0.id, now, lease).await, "claim_delivery").expect("a due delivery");
    assert_eq!(claimed.lease_until, Some(lease));
    assert_eq!(
        ok(store.claim_delivery(&d0.id, plus_ms(now, 1), lease).await, "claim_delivery"),
        None,
        "a leased delivery must not be claimed again before the lease ends"
    );
    let due = ok(store.list_due_deliveries(plus_ms(now, 5000), plus_ms(now, 1), 100).await, "list_due_deliveries");
    let due: Vec<&str> = due.iter().map(|d| d.id.as_str()).filter(|id| dids.iter().any(|d| d == id)).collect();
    assert_eq!(due, vec![d1.id.as_str()], "list_due_deliveries must skip leased ones");
    let after_lease = plus_ms(now, 30_001);
    assert!(
        ok(store.claim_delivery(&d0.id, after_lease, plus_ms(now, 60_000)).await, "claim_delivery").is_some(),
        "an expired lease must not block a claim"
    );

    let mut failed = claimed.clone();
    failed.attempt_count = 1;
    failed.round_attempts = 1;
    failed.lease_until = None;
    failed.next_attempt_at = Some(plus_ms(now, 5000));
    failed.updated_at = plus_ms(now, 40);
    let a1 = DeliveryAttempt {
        number: 1,
        attempted_at: plus_ms(now, 30),
        status_code: Some(500),
        latency_ms: 12,
        response_body: Some("boom".into()),
        error: None,
    };
    ok(store.record_attempt(&failed, &a1).await, "record_attempt");
    let mut done = failed.clone();
    done.attempt_count = 2;
    done.round_attempts = 2;
    done.state = DeliveryState::Succeeded;
    done.next_attempt_at = None;
    let a2 = DeliveryAttempt {
        number: 2,
        attempted_at: plus_ms(now, 5030),
        status_code: None,
        latency_ms: 3,
        response_body: None,
        error: Some("connection refused".into()),
    };
    ok(store.record_attempt(&done, &a2).await, "record_attempt");
    assert_eq!(ok(store.get_delivery(&d0.id).await, "get_delivery"), Some(done.clone()), "get_delivery: no attempts");
    let listed = ok(store.list_deliveries(&w.id, &Page::first(10)).await, "list_deliveries");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, d1.id, "list_deliveries: newest first");
    assert_eq!(listed[1], Delivery { attempts: vec![a1, a2], ..done.clone() }, "with their attempts, oldest first");
    assert_eq!(
        ok(store.claim_delivery(&d0.id, plus_ms(now, 99_000), plus_ms(now, 99_999)).await, "claim"),
        None,
        "a finished delivery must not be claimed"
    );

    let mut redo = done.clone();
    redo.state = DeliveryState::Pending;
    redo.next_attempt_at = Some(now);
    redo.round_attempts = 0;
    ok(store.update_delivery(&redo).await, "update_delivery");
    assert_eq!(ok(store.get_delivery(&d0.id).await, "get_delivery"), Some(redo));

    assert!(ok(store.delete_webhook(&org.id, &w.id).await, "delete_webhook"));
    assert_eq!(ok(store.get_delivery(&d0.id).await, "get_delivery"), None, "deliveries go with their endpoint");
    assert!(ok(store.list_deliveries(&w.id, &Page::first(10)).await, "list_deliveries").is_empty());
}

// ---------------------------------------------------------------------------
// JobQueue

/// Every `JobQueue` check. `make(max_receives)` returns a fresh, empty queue
/// whose dead-letter queue takes a message once it was received
/// `max_receives` times. `tick` is the shortest delay and visibility timeout
/// the adapter honours with precision (SQLite: 100 ms; SQS: 1 s); the suite
/// waits a few ticks at a time.
pub async fn run_queue_contract<F, Fut>(mut make: F, tick: Duration)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Box<dyn JobQueue>>,
{
    queue_send_receive_delete(&*make(5).await, tick).await;
    queue_visibility_and_stale_receipts(&*make(5).await, tick).await;
    queue_delay(&*make(5).await, tick).await;
    queue_change_visibility(&*make(5).await, tick).await;
    queue_batches(&*make(5).await, tick).await;
    queue_dead_letters(&*make(2).await, tick).await;
    let (a, b) = (make(5).await, make(5).await);
    queue_isolation(&*a, &*b).await;
}

/// Receives until `n` messages arrived or `patience` passed: a receive may
/// return fewer than are visible (SQS samples servers).
async fn receive_n(
    q: &dyn JobQueue,
    n: usize,
    visibility: Duration,
    patience: Duration,
) -> Vec<crate::ports::QueueMessage> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let batch = ok(q.receive(n - got.len(), visibility).await, "receive");
        assert!(batch.len() <= n - got.len(), "receive must return at most `max` messages");
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got.extend(batch);
    }
    got
}

async fn sleep_ticks(tick: Duration, n: u32) {
    tokio::time::sleep(tick * n).await;
}

pub async fn queue_send_receive_delete(q: &dyn JobQueue, tick: Duration) {
    assert_eq!(ok(q.depth().await, "depth"), 0, "a fresh queue must hold no message");
    ok(q.send("alpha", Duration::ZERO).await, "send");
    assert_eq!(ok(q.depth().await, "depth"), 1, "depth must count a sent message");
    let got = receive_n(q, 1, tick * 2, tick * 20).await;
    assert_eq!(ok(q.depth().await, "depth"), 1, "depth must count a received, unsettled message");
    assert_eq!(got.len(), 1, "a sent message must be received");
    assert_eq!(
        (got[0].body.as_str(), got[0].receive_count),
        ("alpha", 1),
        "the first receive must carry the body and receive_count 1"
    );
    assert!(
        ok(q.receive(10, tick * 2).await, "receive").is_empty(),
        "a received message must be invisible during its visibility timeout"
    );
    ok(q.delete(&got[0].receipt).await, "delete");
    assert_eq!(ok(q.depth().await, "depth"), 0, "a deleted message must leave the queue's depth");
    sleep_ticks(tick, 3).await;
    assert!(ok(q.receive(10, tick * 2).await, "receive").is_empty(), "a deleted message must never come back");
    ok(q.delete(&got[0].receipt).await, "deleting an already deleted message must not fail");
}

pub async fn queue_visibility_and_stale_receipts(q: &dyn JobQueue, tick: Duration) {
    ok(q.send("bravo", Duration::ZERO).await, "send");
    let first = receive_n(q, 1, tick * 2, tick * 20).await;
    assert_eq!(first.len(), 1, "a sent message must be received");
    sleep_ticks(tick, 3).await;
    let second = receive_n(q, 1, tick * 3, tick * 20).await;
    assert_eq!(second.len(), 1, "a message not deleted must be received again after its visibility timeout");
    assert_eq!((second[0].body.as_str(), second[0].receive_count), ("bravo", 2), "a redelivery must count the receive");
    assert_ne!(second[0].receipt, first[0].receipt, "each receive must hand out a new receipt");

    ok(q.change_visibility(&second[0].receipt, Duration::ZERO).await, "change_visibility");
    let third = receive_n(q, 1, tick * 2, tick * 20).await;
    assert_eq!(third.len(), 1, "change_visibility to zero with the current receipt must redeliver");
    assert_eq!(third[0].receive_count, 3, "receive_count must count every receive");
    // What a stale receipt does is the queue's business (the SQLite queue
    // ignores it; SQS's emulator honours it): it must not fail, and nothing
    // may rely on either outcome (leases in the store guard every job and
    // delivery against a second runner).
    ok(q.change_visibility(&first[0].receipt, tick * 30).await, "change_visibility with a stale receipt must not fail");
    ok(q.delete(&first[0].receipt).await, "delete with a stale receipt must not fail");
    ok(q.delete(&third[0].receipt).await, "delete");
    sleep_ticks(tick, 3).await;
    assert!(ok(q.receive(10, tick).await, "receive").is_empty(), "delete with the current receipt must delete");
}

pub async fn queue_delay(q: &dyn JobQueue, tick: Duration) {
    ok(q.send("charlie", tick * 3).await, "send");
    assert!(
        ok(q.receive(10, tick).await, "receive").is_empty(),
        "a delayed message must not be visible before its delay"
    );
    sleep_ticks(tick, 4).await;
    let got = receive_n(q, 1, tick, tick * 20).await;
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["charlie"],
        "a delayed message must be visible after its delay"
    );
    ok(q.delete(&got[0].receipt).await, "delete");
}

pub async fn queue_change_visibility(q: &dyn JobQueue, tick: Duration) {
    ok(q.send("delta", Duration::ZERO).await, "send");
    let got = receive_n(q, 1, tick * 2, tick * 20).await;
    assert_eq!(got.len(), 1, "a sent message must be received");
    ok(q.change_visibility(&got[0].receipt, tick * 30).await, "change_visibility");
    sleep_ticks(tick, 4).await;
    assert!(
        ok(q.receive(10, tick).await, "receive").is_empty(),
        "change_visibility must extend the visibility timeout"
    );
    ok(q.change_visibility(&got[0].receipt, Duration::ZERO).await, "change_visibility");
    let again = receive_n(q, 1, tick, tick * 20).await;
    assert_eq!(again.len(), 1, "change_visibility to zero must make the message visible at once");
    assert_eq!(again[0].receive_count, 2, "receive_count must count every receive");
    ok(q.delete(&again[0].receipt).await, "delete");
}

pub async fn queue_batches(q: &dyn JobQueue, tick: Duration) {
    let bodies: Vec<String> = (0..5).map(|i| format!("echo-{i}")).collect();
    for b in &bodies {
        ok(q.send(b, Duration::ZERO).await, "send");
    }
    let first = ok(q.receive(3, tick * 50).await, "receive");
    assert!(first.len() <= 3, "receive must return at most `max` messages");
    let mut got = first;
    got.extend(receive_n(q, 5 - got.len(), tick * 50, tick * 20).await);
    let mut seen: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    seen.sort();
    assert_eq!(seen, bodies, "every sent message must be received exactly once while invisible");
    assert!(got.iter().all(|m| m.receive_count == 1), "first receives must have receive_count 1");
    for m in &got {
        ok(q.delete(&m.receipt).await, "delete");
    }
}

pub async fn queue_dead_letters(q: &dyn JobQueue, tick: Duration) {
    // `make(2)`: two receives, then the dead-letter queue.
    assert!(ok(q.dead_letters(10).await, "dead_letters").is_empty(), "a fresh queue must have no dead letters");
    ok(q.send("poison", Duration::ZERO).await, "send");
    for n in 1..=2 {
        let got = receive_n(q, 1, tick, tick * 20).await;
        assert_eq!(got.len(), 1, "receive {n} of 2 must deliver the message");
        assert_eq!(got[0].receive_count, n, "receive_count must count every receive");
        sleep_ticks(tick, 2).await;
    }
    assert!(
        ok(q.receive(10, tick).await, "receive").is_empty(),
        "a message received max_receives times must not be delivered again"
    );
    let deadline = tokio::time::Instant::now() + tick * 20;
    let mut dead = ok(q.dead_letters(10).await, "dead_letters");
    while dead.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        dead = ok(q.dead_letters(10).await, "dead_letters");
    }
    assert_eq!(dead, ["poison"], "a message received max_receives times must move to the dead-letter queue");
}

/// Two queues from the factory must not see each other's messages.
pub async fn queue_isolation(a: &dyn JobQueue, b: &dyn JobQueue) {
    ok(a.send("foxtrot", Duration::ZERO).await, "send");
    assert!(
        ok(b.receive(10, Duration::from_secs(1)).await, "receive").is_empty(),
        "a queue must not deliver another queue's messages"
    );
    let got = receive_n(a, 1, Duration::from_secs(1), Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "a sent message must be received");
    ok(b.delete(&got[0].receipt).await, "delete through another queue must not fail");
    ok(a.change_visibility(&got[0].receipt, Duration::ZERO).await, "change_visibility");
    let again = receive_n(a, 1, Duration::from_secs(1), Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1, "delete through another queue must not delete the message");
    ok(a.delete(&again[0].receipt).await, "delete");
}

// ---------------------------------------------------------------------------
// EventBus

/// Every `EventBus` check: what is published arrives on the webhook queue
/// `queue`, each event once as a `WebhookMessage::Event` (after `unwrap`, which
/// removes whatever envelope the bus wraps messages in), whole. Events from a
/// shared bus that are not this run's are ignored and left alone.
pub async fn event_bus_contract(
    bus: &dyn crate::ports::EventBus,
    queue: &dyn JobQueue,
    unwrap: fn(&str) -> String,
    tick: Duration,
) {
    use crate::webhooks::WebhookMessage;
    let now = base_time();
    let org = new_id(ids::ORG);
    let prj = new_id(ids::PROJECT);
    let events: Vec<Event> = ordered_ids(ids::EVENT, 12)
        .into_iter()
        .enumerate()
        .map(|(i, id)| Event {
            data: json!({ "n": i, "text": "ünïcode ✓", "nested": { "list": [1, 2, 3] } }),
            ..event(&org, &prj, id, EventType::ProjectReady, plus_ms(now, i as i64))
        })
        .collect();
    // 12 events: more than one PutEvents batch.
    ok(bus.publish(&events).await, "publish");
    ok(bus.publish(&[]).await, "publishing nothing must succeed");

    let deadline = tokio::time::Instant::now() + tick * 30;
    let mut got: Vec<Event> = Vec::new();
    while got.len() < events.len() && tokio::time::Instant::now() < deadline {
        let batch = ok(queue.receive(10, tick * 30).await, "receive");
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for m in batch {
            let body = unwrap(&m.body);
            match serde_json::from_str::<WebhookMessage>(&body) {
                Ok(WebhookMessage::Event(e)) if e.organization_id == org => {
                    got.push(e);
                    ok(queue.delete(&m.receipt).await, "delete");
                }
                Ok(_) => ok(queue.change_visibility(&m.receipt, Duration::ZERO).await, "change_visibility"),
                Err(e) => panic!("a published event must arrive as a webhook-queue message; got {body:?} ({e})"),
            }
        }
    }
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got.len(), events.len(), "every published event must arrive once");
    for (g, e) in got.iter().zip(&events) {
        assert_eq!(
            (&g.id, &g.kind, &g.organization_id, &g.project_id, &g.data),
            (&e.id, &e.kind, &e.organization_id, &e.project_id, &e.data),
            "an event must arrive whole"
        );
        assert_eq!(
            g.created_at.timestamp_micros(),
            e.created_at.timestamp_micros(),
            "an event's time must arrive to the microsecond"
        );
    }
}

// ---------------------------------------------------------------------------
// RateLimiter

/// Every `RateLimiter` check: counts per key and window, windows aligned on
/// the epoch, keys apart, and atomic under concurrent hits.
pub async fn rate_limiter_contract(l: &dyn crate::ports::RateLimiter) {
    let window = Duration::from_secs(60);
    // A window of its own, far from any other run's, so a shared limiter is fine.
    let start = at_secs(1_000_000_000 + 60 * rand::thread_rng().gen_range(0..10_000_000));
    let start = Utc.timestamp_opt(start.timestamp() - start.timestamp() % 60, 0).single().expect("window start");
    let end = start + chrono::Duration::seconds(60);
    let key = format!("contract:{}", new_id("k"));
    for n in 1..=3u64 {
        let at = start + chrono::Duration::seconds(10 * n as i64);
        let w = ok(l.hit(&key, window, at).await, "hit");
        assert_eq!(w, crate::ports::RateWindow { count: n, resets_at: end }, "hit {n} must count within its window");
    }
    let other = ok(l.hit(&format!("{key}-other"), window, start).await, "hit");
    assert_eq!(other.count, 1, "keys must be counted apart");
    let last_ms = end - chrono::Duration::milliseconds(1);
    assert_eq!(ok(l.hit(&key, window, last_ms).await, "hit").count, 4, "the window's last millisecond is in it");
    let next = ok(l.hit(&key, window, end).await, "hit");
    assert_eq!(next.count, 1, "a new window starts from zero");
    assert_eq!(next.resets_at, end + chrono::Duration::seconds(60), "windows are aligned and back to back");

    // Concurrent hits never lose a count. (Which count each one is told may
    // repeat under an emulator that reads back after a concurrent write;
    // DynamoDB itself answers each ADD's own value. Nothing relies on it.)
    let key = format!("contract:{}", new_id("k"));
    let hits = (0..20).map(|_| l.hit(&key, window, start));
    let counts: Vec<u64> = futures_join_all(hits).await.into_iter().map(|r| ok(r, "concurrent hit").count).collect();
    assert!(counts.iter().all(|c| (1..=20).contains(c)), "concurrent hits count within 1..=20: {counts:?}");
    assert_eq!(ok(l.hit(&key, window, start).await, "hit").count, 21, "20 concurrent hits must all be counted");
}

/// `join_all` without a dependency: polls the futures together.
pub async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("every future finished")).collect()
}

// ---------------------------------------------------------------------------
// SecretBox

/// Every `SecretBox` check.
pub async fn secret_box_contract(b: &dyn SecretBox) {
    let long = "x".repeat(10_000);
    for plaintext in ["", "hunter2", "pässwörd ✓ with spaces and \"quotes\"", long.as_str()] {
        let sealed = ok(b.seal(plaintext).await, "seal");
        assert_eq!(ok(b.open(&sealed).await, "open"), plaintext, "open(seal(x)) must be x");
    }

    let secret = "contract-marker-7f3a";
    let s1 = ok(b.seal(secret).await, "seal");
    let s2 = ok(b.seal(secret).await, "seal");
    assert_ne!(s1, s2, "sealing the same plaintext twice must give different texts (fresh nonce)");
    assert!(!s1.contains(secret), "sealed text must not contain the plaintext");

    let mut tampered: Vec<char> = s1.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let truncated = &s1[..s1.len() - 4];
    for bad in [tampered.as_str(), truncated, "not sealed at all", ""] {
        match b.open(bad).await {
            Err(DomainError::Internal(msg)) => {
                assert!(!msg.contains(secret), "an open error must not reveal the plaintext")
            }
            other => panic!("open of tampered or foreign text {bad:?} must fail with Internal, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// LoginStore

/// Device logins and CLI sessions: inserts that give a live user code to
/// one login only, conditional updates, an exchange that happens once even
/// when concurrent, CLI sessions found by hash, listed per person and
/// organization and revoked only by their owner. `orgs` makes the
/// organizations the sessions belong to.
pub async fn run_login_store_contract(store: &dyn crate::ports::LoginStore, orgs: &dyn Store) {
    use crate::cli_login::{CliSession, DeviceLogin, DeviceLoginStatus, LoginDecision};
    use crate::ports::OrgRole;
    let now = base_time();
    let org = organization(now);
    let first_key = api_key(&org.id, new_id(ids::API_KEY), now);
    ok(orgs.create_organization(&org, &first_key).await, "create the organization");
    let hash = |s: &str| crate::apikey::hash(&format!("{s}-{}", new_id("t")));
    let login = |user_code_hash: &str, expires_at: Timestamp| DeviceLogin {
        device_code_hash: hash("device"),
        user_code_hash: user_code_hash.to_string(),
        created_at: now,
        expires_at,
        interval_secs: 5,
        last_polled_at: None,
        status: DeviceLoginStatus::Pending,
        decision: None,
        cli_session_id: None,
        version: 1,
    };

    // A live user code belongs to one login; an expired one gives it up.
    let user_code = hash("user");
    let first = login(&user_code, plus_ms(now, 600_000));
    assert!(ok(store.insert_device_login(&first, now).await, "insert"));
    assert_eq!(store.get_device_login(&first.device_code_hash).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_device_login_by_user_code(&user_code).await.unwrap(), Some(first.clone()));
    let clash = login(&user_code, plus_ms(now, 600_000));
    assert!(!store.insert_device_login(&clash, plus_ms(now, 1000)).await.unwrap(), "a live login holds the code");
    assert_eq!(store.get_device_login(&clash.device_code_hash).await.unwrap(), None, "nothing written");
    let after_expiry = plus_ms(now, 600_001);
    assert!(store.insert_device_login(&clash, after_expiry).await.unwrap(), "an expired login gives its code up");
    assert_eq!(
        store.get_device_login_by_user_code(&user_code).await.unwrap().map(|l| l.device_code_hash),
        Some(clash.device_code_hash.clone())
    );
    assert_eq!(store.get_device_login(&hash("nobody")).await.unwrap(), None);
    assert_eq!(store.get_device_login_by_user_code(&hash("nobody")).await.unwrap(), None);

    // Conditional updates: the version read is the version written over.
    let live = login(&hash("user"), plus_ms(now, 600_000));
    assert!(store.insert_device_login(&live, now).await.unwrap());
    let polled = DeviceLogin { last_polled_at: Some(plus_ms(now, 10)), interval_secs: 10, version: 2, ..live.clone() };
    assert!(store.update_device_login(&polled, 1).await.unwrap());
    assert!(!store.update_device_login(&polled, 1).await.unwrap(), "a stale version loses");
    let approved = DeviceLogin {
        status: DeviceLoginStatus::Approved,
        decision: Some(LoginDecision {
            user_id: "user_cli".into(),
            organization_id: org.id.clone(),
            clerk_org_id: "org_clerk_cli".into(),
            role: OrgRole::Member,
            at: plus_ms(now, 20),
        }),
        version: 3,
        ..polled.clone()
    };
    assert!(store.update_device_login(&approved, 2).await.unwrap());
    assert_eq!(store.get_device_login(&live.device_code_hash).await.unwrap(), Some(approved.clone()));

    // The exchange: once, even when raced; nothing of a lost race is kept.
    let session = |n: u64| {
        let token_hash = hash("token");
        CliSession {
            id: new_id_at(ids::CLI_SESSION, Utc::now().timestamp_millis() as u64 + n),
            organization_id: org.id.clone(),
            user_id: "user_cli".into(),
            role: OrgRole::Member,
            prefix: "capy_cli_".into(),
            last4: token_hash[..4].to_string(),
            created_at: plus_ms(now, 30),
            expires_at: plus_ms(now, 30 * 24 * 3600 * 1000),
            revoked_at: None,
            last_used_at: None,
            last_used_ip: None,
            clerk_org_id: "org_clerk_cli".into(),
            hash: token_hash,
        }
    };
    let candidates: Vec<CliSession> = (0..8).map(session).collect();
    let results = futures_join_all(candidates.iter().map(|c| {
        let exchanged = DeviceLogin {
            status: DeviceLoginStatus::Exchanged,
            cli_session_id: Some(c.id.clone()),
            version: 4,
            ..approved.clone()
        };
        async move { store.exchange_device_login(&exchanged, 3, c).await }
    }))
    .await;
    let won: Vec<&CliSession> =
        candidates.iter().zip(&results).filter(|(_, r)| *r.as_ref().unwrap()).map(|(c, _)| c).collect();
    assert_eq!(won.len(), 1, "one exchange of {} wins: {results:?}", candidates.len());
    let winner = won[0].clone();
    for c in &candidates {
        let found = store.get_cli_session_by_hash(&c.hash).await.unwrap();
        assert_eq!(found.as_ref(), (c.id == winner.id).then_some(&winner), "only the winner's session exists");
    }
    let spent = store.get_device_login(&live.device_code_hash).await.unwrap().unwrap();
    assert_eq!(
        (spent.status, spent.cli_session_id.as_deref()),
        (DeviceLoginStatus::Exchanged, Some(winner.id.as_str()))
    );

    // Listing per person and organization, newest first, paged.
    let mut mine = vec![winner.clone()];
    for n in 0..2u64 {
        let l = login(&hash("user"), plus_ms(now, 600_000));
        assert!(store.insert_device_login(&l, now).await.unwrap());
        let s = session(100 + n);
        let spent =
            DeviceLogin { status: DeviceLoginStatus::Exchanged, cli_session_id: Some(s.id.clone()), version: 2, ..l };
        assert!(store.exchange_device_login(&spent, 1, &s).await.unwrap());
        mine.push(s);
    }
    let other_user = CliSession { user_id: "user_other".into(), ..session(200) };
    let l = login(&hash("user"), plus_ms(now, 600_000));
    assert!(store.insert_device_login(&l, now).await.unwrap());
    let spent = DeviceLogin { status: DeviceLoginStatus::Exchanged, version: 2, ..l };
    assert!(store.exchange_device_login(&spent, 1, &other_user).await.unwrap());
    mine.sort_by(|a, b| b.id.cmp(&a.id));
    let listed = store.list_cli_sessions(&org.id, "user_cli", &Page::first(10)).await.unwrap();
    assert_eq!(listed, mine, "the person's sessions, newest first");
    let page = store.list_cli_sessions(&org.id, "user_cli", &Page { limit: 2, before: None }).await.unwrap();
    assert_eq!(ids_of(&page, |s| &s.id), ids_of(&mine[..2], |s| &s.id));
    let rest = store
        .list_cli_sessions(&org.id, "user_cli", &Page { limit: 2, before: Some(page[1].id.clone()) })
        .await
        .unwrap();
    assert_eq!(ids_of(&rest, |s| &s.id), ids_of(&mine[2..], |s| &s.id));
    assert!(store.list_cli_sessions("org_elsewhere", "user_cli", &Page::first(10)).await.unwrap().is_empty());

    // Touch and revoke: only the owner, in the organization; revoking twice keeps the first time.
    store.touch_cli_session(&winner.id, plus_ms(now, 40), Some("127.0.0.1")).await.unwrap();
    let touched = store.get_cli_session_by_hash(&winner.hash).await.unwrap().unwrap();
    assert_eq!((touched.last_used_at, touched.last_used_ip.as_deref()), (Some(plus_ms(now, 40)), Some("127.0.0.1")));
    assert_eq!(store.revoke_cli_session(&org.id, "user_other", &winner.id, plus_ms(now, 50)).await.unwrap(), None);
    assert_eq!(
        store.revoke_cli_session("org_elsewhere", "user_cli", &winner.id, plus_ms(now, 50)).await.unwrap(),
        None
    );
    assert_eq!(store.revoke_cli_session(&org.id, "user_cli", "cli_missing", plus_ms(now, 50)).await.unwrap(), None);
    let revoked = store.revoke_cli_session(&org.id, "user_cli", &winner.id, plus_ms(now, 50)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(plus_ms(now, 50)));
    let again = store.revoke_cli_session(&org.id, "user_cli", &winner.id, plus_ms(now, 60)).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(plus_ms(now, 50)), "the first revocation's time stays");
    assert_eq!(store.get_cli_session_by_hash(&winner.hash).await.unwrap().unwrap().revoked_at, Some(plus_ms(now, 50)));

    // The sweep (a no-op where the table's TTL deletes) never brings an
    // expired login back and leaves live ones alone.
    store.sweep_device_logins(plus_ms(now, 1000)).await.unwrap();
    assert!(store.get_device_login(&clash.device_code_hash).await.unwrap().is_some(), "live");
    assert!(store.get_cli_session_by_hash(&winner.hash).await.unwrap().is_some(), "sessions are not swept");
}
