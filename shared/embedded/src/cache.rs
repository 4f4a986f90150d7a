//! `CachedStore`: a read-through cache in front of a `Store` for the reads on
//! every authenticated request (API key by hash, its organization, a project).
//!
//! Valid only when every write to the cached records goes through this same
//! value — true for `capydb-local`, which holds its data dir's lock. (The
//! `keys create` / `orgs create` commands only insert new records, and misses
//! are never cached, so a new key works at once.) Every write below drops or
//! refreshes what it touches, so a revocation takes effect on the very next
//! request.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use async_trait::async_trait;
use capydb_domain::cli_login::{CliSession, DeviceLogin};
use capydb_domain::model::{
    ApiKey, Backup, Delivery, DeliveryAttempt, Event, Import, Job, Organization, Preview, Project, Restore, Timestamp,
    WebhookEndpoint,
};
use capydb_domain::ports::{
    Admission, HeldKey, IdempotencyBegin, IdempotencyClaim, Page, QuotaClaim, ResourceWrite, Store, StoredAnswer, Usage,
};
use capydb_domain::DomainResult;

/// Past this many entries a map is emptied rather than grown.
const MAX_ENTRIES: usize = 10_000;

pub struct CachedStore<S> {
    inner: S,
    keys_by_hash: RwLock<HashMap<String, ApiKey>>,
    orgs: RwLock<HashMap<String, Organization>>,
    projects: RwLock<HashMap<String, Project>>,
    /// Bumped after every write. A read fills the cache only if no write
    /// finished while it ran, so a reader that fetched a record just before a
    /// write committed cannot cache the old version after the write's
    /// invalidation.
    generation: AtomicU64,
}

impl<S: Store> CachedStore<S> {
    pub fn new(inner: S) -> Self {
        CachedStore {
            inner,
            keys_by_hash: RwLock::default(),
            orgs: RwLock::default(),
            projects: RwLock::default(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

fn get<V: Clone>(map: &RwLock<HashMap<String, V>>, k: &str) -> Option<V> {
    map.read().ok().and_then(|m| m.get(k).cloned())
}

fn forget<V>(map: &RwLock<HashMap<String, V>>, k: &str) {
    if let Ok(mut m) = map.write() {
        m.remove(k);
    }
}

impl<S> CachedStore<S> {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches `v` if no write finished since `seen` was read.
    fn fill<V>(&self, map: &RwLock<HashMap<String, V>>, seen: u64, k: &str, v: V) {
        if let Ok(mut m) = map.write() {
            if self.generation() != seen {
                return;
            }
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(k.to_string(), v);
        }
    }

    fn wrote(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn forget_key_id(&self, key_id: &str) {
        if let Ok(mut m) = self.keys_by_hash.write() {
            m.retain(|_, k| k.id != key_id);
        }
    }

    fn forget_resource(&self, write: &ResourceWrite) {
        match write {
            ResourceWrite::Nothing => {}
            ResourceWrite::Project(p) => forget(&self.projects, &p.id),
            ResourceWrite::All(writes) => writes.iter().for_each(|w| self.forget_resource(w)),
            ResourceWrite::Preview(_)
            | ResourceWrite::Backup(_)
            | ResourceWrite::Restore(_)
            | ResourceWrite::Import(_) => {}
        }
    }
}

#[async_trait]
impl<S: Store> Store for CachedStore<S> {
    async fn has_organizations(&self) -> DomainResult<bool> {
        self.inner.has_organizations().await
    }
    async fn usage(&self, org_id: &str) -> DomainResult<Usage> {
        self.inner.usage(org_id).await
    }
    async fn create_organization(&self, org: &Organization, first_key: &ApiKey) -> DomainResult<()> {
        self.inner.create_organization(org, first_key).await
    }
    async fn get_organization(&self, id: &str) -> DomainResult<Option<Organization>> {
        if let Some(o) = get(&self.orgs, id) {
            return Ok(Some(o));
        }
        let seen = self.generation();
        let found = self.inner.get_organization(id).await?;
        if let Some(o) = &found {
            self.fill(&self.orgs, seen, id, o.clone());
        }
        Ok(found)
    }
    async fn update_organization(&self, org: &Organization) -> DomainResult<()> {
        forget(&self.orgs, &org.id);
        let r = self.inner.update_organization(org).await;
        self.wrote();
        forget(&self.orgs, &org.id);
        r
    }
    async fn insert_api_key(&self, key: &ApiKey, held: Option<&HeldKey>) -> DomainResult<()> {
        self.inner.insert_api_key(key, held).await
    }
    async fn get_clerk_organization(&self, clerk_org_id: &str) -> DomainResult<Option<Organization>> {
        self.inner.get_clerk_organization(clerk_org_id).await
    }
    async fn link_clerk_organization(&self, clerk_org_id: &str, org: &Organization) -> DomainResult<Organization> {
        self.inner.link_clerk_organization(clerk_org_id, org).await
    }
    async fn get_api_key_by_hash(&self, hash: &str) -> DomainResult<Option<ApiKey>> {
        if let Some(k) = get(&self.keys_by_hash, hash) {
            return Ok(Some(k));
        }
        let seen = self.generation();
        let found = self.inner.get_api_key_by_hash(hash).await?;
        if let Some(k) = &found {
            self.fill(&self.keys_by_hash, seen, hash, k.clone());
        }
        Ok(found)
    }
    async fn get_api_key(&self, org_id: &str, key_id: &str) -> DomainResult<Option<ApiKey>> {
        self.inner.get_api_key(org_id, key_id).await
    }
    async fn list_api_keys(&self, org_id: &str, page: &Page) -> DomainResult<Vec<ApiKey>> {
        self.inner.list_api_keys(org_id, page).await
    }
    async fn revoke_api_key(&self, org_id: &str, key_id: &str, at: Timestamp) -> DomainResult<Option<ApiKey>> {
        self.forget_key_id(key_id);
        let r = self.inner.revoke_api_key(org_id, key_id, at).await;
        self.wrote();
        self.forget_key_id(key_id);
        r
    }
    async fn touch_api_key(&self, key_id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()> {
        self.inner.touch_api_key(key_id, at, ip).await?;
        self.wrote();
        if let Ok(mut m) = self.keys_by_hash.write() {
            for k in m.values_mut().filter(|k| k.id == key_id) {
                k.last_used_at = Some(at);
                k.last_used_ip = ip.map(str::to_string);
            }
        }
        Ok(())
    }
    async fn get_project(&self, id: &str) -> DomainResult<Option<Project>> {
        if let Some(p) = get(&self.projects, id) {
            return Ok(Some(p));
        }
        let seen = self.generation();
        let found = self.inner.get_project(id).await?;
        if let Some(p) = &found {
            self.fill(&self.projects, seen, id, p.clone());
        }
        Ok(found)
    }
    async fn list_projects(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Project>> {
        self.inner.list_projects(org_id, page).await
    }
    async fn update_project(&self, project: &Project) -> DomainResult<()> {
        forget(&self.projects, &project.id);
        let r = self.inner.update_project(project).await;
        self.wrote();
        forget(&self.projects, &project.id);
        r
    }
    async fn get_preview(&self, id: &str) -> DomainResult<Option<Preview>> {
        self.inner.get_preview(id).await
    }
    async fn list_previews(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Preview>> {
        self.inner.list_previews(project_id, page).await
    }
    async fn update_preview(&self, preview: &Preview) -> DomainResult<()> {
        self.inner.update_preview(preview).await
    }
    async fn list_expired_previews(&self, now: Timestamp, limit: usize) -> DomainResult<Vec<Preview>> {
        self.inner.list_expired_previews(now, limit).await
    }
    async fn get_backup(&self, id: &str) -> DomainResult<Option<Backup>> {
        self.inner.get_backup(id).await
    }
    async fn list_backups(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Backup>> {
        self.inner.list_backups(project_id, page).await
    }
    async fn put_backup(&self, backup: &Backup) -> DomainResult<()> {
        self.inner.put_backup(backup).await
    }
    async fn get_restore(&self, id: &str) -> DomainResult<Option<Restore>> {
        self.inner.get_restore(id).await
    }
    async fn get_import(&self, id: &str) -> DomainResult<Option<Import>> {
        self.inner.get_import(id).await
    }
    async fn begin_job(
        &self,
        job: &Job,
        write: &ResourceWrite,
        events: &[Event],
        admission: &Admission,
    ) -> DomainResult<Option<String>> {
        self.forget_resource(write);
        let r = self.inner.begin_job(job, write, events, admission).await;
        self.wrote();
        self.forget_resource(write);
        r
    }
    async fn get_job(&self, id: &str) -> DomainResult<Option<Job>> {
        self.inner.get_job(id).await
    }
    async fn list_project_jobs(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Job>> {
        self.inner.list_project_jobs(project_id, page).await
    }
    async fn update_job(&self, job: &Job, expected_version: u64) -> DomainResult<bool> {
        self.inner.update_job(job, expected_version).await
    }
    async fn finish_job(
        &self,
        job: &Job,
        expected_version: u64,
        write: &ResourceWrite,
        events: &[Event],
    ) -> DomainResult<bool> {
        self.forget_resource(write);
        let r = self.inner.finish_job(job, expected_version, write, events).await;
        self.wrote();
        self.forget_resource(write);
        r
    }
    async fn list_stuck_jobs(&self, stale_before: Timestamp, limit: usize) -> DomainResult<Vec<Job>> {
        self.inner.list_stuck_jobs(stale_before, limit).await
    }
    async fn list_unpublished_events(&self, limit: usize) -> DomainResult<Vec<Event>> {
        self.inner.list_unpublished_events(limit).await
    }
    async fn mark_event_published(&self, id: &str, at: Timestamp) -> DomainResult<()> {
        self.inner.mark_event_published(id, at).await
    }
    async fn list_events(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Event>> {
        self.inner.list_events(org_id, page).await
    }
    // Webhooks and deliveries are not cached: they are read off the request's hot path.
    async fn insert_webhook(
        &self,
        webhook: &WebhookEndpoint,
        quota: Option<&QuotaClaim>,
        held: Option<&HeldKey>,
    ) -> DomainResult<()> {
        self.inner.insert_webhook(webhook, quota, held).await
    }
    async fn get_webhook(&self, org_id: &str, id: &str) -> DomainResult<Option<WebhookEndpoint>> {
        self.inner.get_webhook(org_id, id).await
    }
    async fn list_webhooks(&self, org_id: &str, page: &Page) -> DomainResult<Vec<WebhookEndpoint>> {
        self.inner.list_webhooks(org_id, page).await
    }
    async fn update_webhook(&self, webhook: &WebhookEndpoint, expected: Timestamp, clear: bool) -> DomainResult<bool> {
        self.inner.update_webhook(webhook, expected, clear).await
    }
    async fn set_webhook_health(
        &self,
        org_id: &str,
        id: &str,
        ok: bool,
        at: Timestamp,
    ) -> DomainResult<Option<Timestamp>> {
        self.inner.set_webhook_health(org_id, id, ok, at).await
    }
    async fn disable_webhook(&self, org_id: &str, id: &str, reason: &str, at: Timestamp) -> DomainResult<()> {
        self.inner.disable_webhook(org_id, id, reason, at).await
    }
    async fn delete_webhook(&self, org_id: &str, id: &str) -> DomainResult<bool> {
        self.inner.delete_webhook(org_id, id).await
    }
    async fn create_delivery(&self, delivery: &Delivery) -> DomainResult<Delivery> {
        self.inner.create_delivery(delivery).await
    }
    async fn get_delivery(&self, id: &str) -> DomainResult<Option<Delivery>> {
        self.inner.get_delivery(id).await
    }
    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> DomainResult<Vec<Delivery>> {
        self.inner.list_deliveries(webhook_id, page).await
    }
    async fn begin_idempotent(&self, claim: &IdempotencyClaim) -> DomainResult<IdempotencyBegin> {
        self.inner.begin_idempotent(claim).await
    }
    async fn complete_idempotent(
        &self,
        key: &str,
        lease_until: Timestamp,
        answer: &StoredAnswer,
    ) -> DomainResult<bool> {
        self.inner.complete_idempotent(key, lease_until, answer).await
    }
    async fn release_idempotent(&self, key: &str, lease_until: Timestamp) -> DomainResult<()> {
        self.inner.release_idempotent(key, lease_until).await
    }
    async fn sweep_idempotent(&self, now: Timestamp) -> DomainResult<u64> {
        self.inner.sweep_idempotent(now).await
    }
    async fn claim_delivery(&self, id: &str, now: Timestamp, lease_until: Timestamp) -> DomainResult<Option<Delivery>> {
        self.inner.claim_delivery(id, now, lease_until).await
    }
    async fn record_attempt(&self, delivery: &Delivery, attempt: &DeliveryAttempt) -> DomainResult<()> {
        self.inner.record_attempt(delivery, attempt).await
    }
    async fn update_delivery(&self, delivery: &Delivery) -> DomainResult<()> {
        self.inner.update_delivery(delivery).await
    }
    async fn list_due_deliveries(
        &self,
        due_before: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> DomainResult<Vec<Delivery>> {
        self.inner.list_due_deliveries(due_before, now, limit).await
    }
}

/// Device logins and CLI sessions are not cached: a CLI token's request
/// reads its session from the store, so a revocation needs no invalidation.
#[async_trait]
impl<S: capydb_domain::ports::LoginStore> capydb_domain::ports::LoginStore for CachedStore<S> {
    async fn insert_device_login(&self, login: &DeviceLogin, now: Timestamp) -> DomainResult<bool> {
        self.inner.insert_device_login(login, now).await
    }
    async fn get_device_login(&self, device_code_hash: &str) -> DomainResult<Option<DeviceLogin>> {
        self.inner.get_device_login(device_code_hash).await
    }
    async fn get_device_login_by_user_code(&self, user_code_hash: &str) -> DomainResult<Option<DeviceLogin>> {
        self.inner.get_device_login_by_user_code(user_code_hash).await
    }
    async fn update_device_login(&self, login: &DeviceLogin, expected_version: u64) -> DomainResult<bool> {
        self.inner.update_device_login(login, expected_version).await
    }
    async fn exchange_device_login(
        &self,
        login: &DeviceLogin,
        expected_version: u64,
        session: &CliSession,
    ) -> DomainResult<bool> {
        self.inner.exchange_device_login(login, expected_version, session).await
    }
    async fn get_cli_session_by_hash(&self, hash: &str) -> DomainResult<Option<CliSession>> {
        self.inner.get_cli_session_by_hash(hash).await
    }
    async fn list_cli_sessions(&self, org_id: &str, user_id: &str, page: &Page) -> DomainResult<Vec<CliSession>> {
        self.inner.list_cli_sessions(org_id, user_id, page).await
    }
    async fn revoke_cli_session(
        &self,
        org_id: &str,
        user_id: &str,
        id: &str,
        at: Timestamp,
    ) -> DomainResult<Option<CliSession>> {
        self.inner.revoke_cli_session(org_id, user_id, id, at).await
    }
    async fn touch_cli_session(&self, id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()> {
        self.inner.touch_cli_session(id, at, ip).await
    }
    async fn sweep_device_logins(&self, now: Timestamp) -> DomainResult<u64> {
        self.inner.sweep_device_logins(now).await
    }
}
