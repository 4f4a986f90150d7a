//! The ports: what the use cases need from the outside world. Each has one
//! adapter per shape (SQLite / DynamoDB, SQLite queue / SQS, ...) and one
//! contract suite (`contract`, feature `testkit`) that every adapter passes.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{DomainError, DomainResult};
use crate::model::*;

/// One page of a newest-first listing: at most `limit` items with ids
/// strictly less than `before` (the cursor is the last id of the previous page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub before: Option<String>,
}

impl Page {
    pub fn first(limit: usize) -> Self {
        Page { limit, before: None }
    }
}

/// The resource row a lifecycle transaction writes along with its job.
#[allow(clippy::large_enum_variant)] // built once per job transition; boxing buys nothing
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceWrite {
    Nothing,
    /// Insert or replace the project row.
    Project(Project),
    /// Insert or replace the preview row. Inserting a second live preview
    /// with the same name in a project is a `Conflict`.
    Preview(Preview),
    Backup(Backup),
    Restore(Restore),
    Import(Import),
    /// Several of the above, in order, in the same transaction.
    All(Vec<ResourceWrite>),
}

/// A kind of resource whose number is limited (see `QuotaSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Projects of an organization that are not deleted.
    Projects,
    /// Previews of a project that are not deleted.
    Previews,
    /// Backups of a project that are not deleted (safety backups included).
    Backups,
    /// Webhook endpoints of an organization.
    Webhooks,
}

impl QuotaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Projects => "projects",
            QuotaKind::Previews => "previews per project",
            QuotaKind::Backups => "backups per project",
            QuotaKind::Webhooks => "webhook endpoints",
        }
    }
}

/// One more resource counted against a limit, in the same transaction as
/// the write that adds it, so racing creates never overshoot. `owner` is
/// the organization (projects, webhooks) or the project (previews, backups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaClaim {
    pub kind: QuotaKind,
    pub owner: String,
    pub limit: u32,
}

impl QuotaClaim {
    /// The `403` of a claim over its limit; both stores answer it.
    pub fn exceeded(&self, in_use: u64) -> DomainError {
        DomainError::Forbidden(format!(
            "limit reached: at most {} {} ({} in use); delete one, or raise the limit",
            self.limit,
            self.kind.as_str(),
            in_use
        ))
    }
}

/// What `begin_job` checks in its transaction besides the resource lock.
///
/// The rule between a project's deletion and the jobs inside it: a job on
/// something inside a project (a preview, a backup) holds the project from
/// its start to its finish. It can start only while the project is
/// `ready`; the project's deletion can start only while nothing holds it.
/// Jobs on the project itself are kept apart by the project's own lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Hold this project (it must be `ready`) until the job finishes.
    pub hold_project: Option<String>,
    /// This project's deletion: nothing may hold it.
    pub project_unheld: Option<String>,
    pub quota: Option<QuotaClaim>,
    /// The `Idempotency-Key` record the starting request holds: the job's
    /// id is written into it in the same transaction as the job, provided
    /// the request still holds it (else the job is refused, `409`), so a
    /// retry after a crash answers from this job instead of starting another.
    pub idempotency: Option<HeldKey>,
}

/// A request's hold on an `Idempotency-Key` record: the record's key and the
/// lease the request claimed it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKey {
    pub key: String,
    pub lease_until: Timestamp,
}

impl HeldKey {
    /// The `409` of a job whose request no longer holds its key.
    pub fn lost() -> DomainError {
        DomainError::Conflict(
            "a retry of this request took its Idempotency-Key over; this attempt started nothing".into(),
        )
    }
}

impl Admission {
    /// The `409` of a project that is not `ready` when a job would hold it.
    pub fn project_not_ready(project_id: &str, state: &str) -> DomainError {
        DomainError::Conflict(format!("project {project_id} is {state}; this can start once it is ready"))
    }

    /// The `409` of a project deletion while `holder` works inside it.
    pub fn project_held(project_id: &str, holder: &str) -> DomainError {
        DomainError::Conflict(format!(
            "project {project_id} has a job in progress: {holder}; delete the project once it has finished"
        ))
    }
}

/// How many resources an organization has, per limited kind it owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub projects: u64,
    pub webhooks: u64,
}

/// The metadata store. Every method that changes more than one record does so
/// atomically (SQLite transaction, DynamoDB `TransactWriteItems`).
#[async_trait]
pub trait Store: Send + Sync {
    // organizations
    /// True once any organization exists (bootstrap ran).
    async fn has_organizations(&self) -> DomainResult<bool>;
    /// What the organization has of each limited kind it owns.
    async fn usage(&self, org_id: &str) -> DomainResult<Usage>;
    /// Creates an organization together with its first API key.
    async fn create_organization(&self, org: &Organization, first_key: &ApiKey) -> DomainResult<()>;
    async fn get_organization(&self, id: &str) -> DomainResult<Option<Organization>>;
    async fn update_organization(&self, org: &Organization) -> DomainResult<()>;
    /// The organization linked to a Clerk organization, if any.
    async fn get_clerk_organization(&self, clerk_org_id: &str) -> DomainResult<Option<Organization>>;
    /// Creates `org` linked to `clerk_org_id`, unless that Clerk
    /// organization is linked already: then answers the organization it is
    /// linked to. One organization per Clerk organization, also when first
    /// requests race.
    async fn link_clerk_organization(&self, clerk_org_id: &str, org: &Organization) -> DomainResult<Organization>;

    // API keys
    /// Fails with `Conflict` when a key with the same hash exists.
    /// With `held`, the key's id is written into that `Idempotency-Key`
    /// record in the same transaction, while the request holds it (else
    /// nothing is written: `HeldKey::lost`).
    async fn insert_api_key(&self, key: &ApiKey, held: Option<&HeldKey>) -> DomainResult<()>;
    async fn get_api_key_by_hash(&self, hash: &str) -> DomainResult<Option<ApiKey>>;
    async fn get_api_key(&self, org_id: &str, key_id: &str) -> DomainResult<Option<ApiKey>>;
    async fn list_api_keys(&self, org_id: &str, page: &Page) -> DomainResult<Vec<ApiKey>>;
    /// Sets `revoked_at` unless already set; returns the key as stored afterwards.
    async fn revoke_api_key(&self, org_id: &str, key_id: &str, at: Timestamp) -> DomainResult<Option<ApiKey>>;
    async fn touch_api_key(&self, key_id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()>;

    // projects
    /// Any state, `deleted` included.
    async fn get_project(&self, id: &str) -> DomainResult<Option<Project>>;
    /// Projects of the organization that are not `deleted`, newest first.
    async fn list_projects(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Project>>;
    /// Replaces the project row (used for non-lifecycle edits such as a rename).
    async fn update_project(&self, project: &Project) -> DomainResult<()>;

    // previews
    async fn get_preview(&self, id: &str) -> DomainResult<Option<Preview>>;
    /// Previews of the project that are not `deleted`, newest first.
    async fn list_previews(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Preview>>;
    /// Replaces the preview row (TTL extension).
    async fn update_preview(&self, preview: &Preview) -> DomainResult<()>;
    /// Previews that `Preview::is_expired` at `now` (an expiring state,
    /// `expires_at <= now`), oldest expiry first.
    async fn list_expired_previews(&self, now: Timestamp, limit: usize) -> DomainResult<Vec<Preview>>;

    // backups, restores, imports
    async fn get_backup(&self, id: &str) -> DomainResult<Option<Backup>>;
    /// Backups of the project that are not `deleted`, newest first.
    async fn list_backups(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Backup>>;
    /// Inserts or replaces the backup row (progress written by a job step).
    async fn put_backup(&self, backup: &Backup) -> DomainResult<()>;
    async fn get_restore(&self, id: &str) -> DomainResult<Option<Restore>>;
    async fn get_import(&self, id: &str) -> DomainResult<Option<Import>>;

    // jobs
    /// Atomically: writes the resource, inserts the job, takes the lock on
    /// `job.resource`, appends the events and applies `admission`. Returns
    /// `Some(running_job_id)` and writes nothing when another job holds the
    /// lock; writes nothing and answers the error of [`Admission`] or
    /// [`QuotaClaim::exceeded`] when the admission is refused.
    async fn begin_job(
        &self,
        job: &Job,
        write: &ResourceWrite,
        events: &[Event],
        admission: &Admission,
    ) -> DomainResult<Option<String>>;
    async fn get_job(&self, id: &str) -> DomainResult<Option<Job>>;
    async fn list_project_jobs(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Job>>;
    /// Replaces the job if its stored version is `expected_version`
    /// (`job.version` must be `expected_version + 1`). False when it was not.
    async fn update_job(&self, job: &Job, expected_version: u64) -> DomainResult<bool>;
    /// Like `update_job` (a terminal state), and in the same transaction writes
    /// the resource, releases the job's lock and its hold on a project (if
    /// it took one) and appends the events. A project, preview or backup
    /// that any write marks `deleted` stops counting against its quota.
    async fn finish_job(
        &self,
        job: &Job,
        expected_version: u64,
        write: &ResourceWrite,
        events: &[Event],
    ) -> DomainResult<bool>;
    /// Jobs that need a new queue message: not terminal, and either with no
    /// lease and created before `stale_before`, or with `lease_expires_at <
    /// stale_before` (a dead worker's lease, or a retry that is overdue).
    /// Oldest first.
    async fn list_stuck_jobs(&self, stale_before: Timestamp, limit: usize) -> DomainResult<Vec<Job>>;

    // outbox
    async fn list_unpublished_events(&self, limit: usize) -> DomainResult<Vec<Event>>;
    /// Idempotent; an unknown id is a no-op.
    async fn mark_event_published(&self, id: &str, at: Timestamp) -> DomainResult<()>;
    /// Events of an organization, newest first.
    async fn list_events(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Event>>;

    // webhook endpoints
    /// Inserts the endpoint, counted against `quota` when given.
    /// `held`: as for `insert_api_key`.
    async fn insert_webhook(
        &self,
        webhook: &WebhookEndpoint,
        quota: Option<&QuotaClaim>,
        held: Option<&HeldKey>,
    ) -> DomainResult<()>;
    async fn get_webhook(&self, org_id: &str, id: &str) -> DomainResult<Option<WebhookEndpoint>>;
    /// Endpoints of the organization, newest first.
    async fn list_webhooks(&self, org_id: &str, page: &Page) -> DomainResult<Vec<WebhookEndpoint>>;
    /// Writes the endpoint if its stored `updated_at` is still
    /// `expected` (nobody changed or disabled it since it was
    /// read); false otherwise, or when it no longer exists. `failing_since`
    /// is not written: it is kept, and cleared when `clear`
    /// (the write re-enables the endpoint: `WebhookEndpoint::set_enabled`).
    async fn update_webhook(&self, webhook: &WebhookEndpoint, expected: Timestamp, clear: bool) -> DomainResult<bool>;
    /// Records the outcome of an attempt on the endpoint: a success clears
    /// `failing_since`, a failure sets it unless set. Returns it as stored.
    async fn set_webhook_health(
        &self,
        org_id: &str,
        id: &str,
        ok: bool,
        at: Timestamp,
    ) -> DomainResult<Option<Timestamp>>;
    /// Disables the endpoint, saying why (nothing else of it changes).
    async fn disable_webhook(&self, org_id: &str, id: &str, reason: &str, at: Timestamp) -> DomainResult<()>;
    /// Deletes the endpoint and its deliveries; false when there was none.
    async fn delete_webhook(&self, org_id: &str, id: &str) -> DomainResult<bool>;

    // webhook deliveries
    /// Inserts the delivery unless one of the same event to the same endpoint
    /// exists; returns the stored one either way.
    async fn create_delivery(&self, delivery: &Delivery) -> DomainResult<Delivery>;
    /// The delivery without its attempts.
    async fn get_delivery(&self, id: &str) -> DomainResult<Option<Delivery>>;
    /// Deliveries of an endpoint, newest first, each with its attempts.
    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> DomainResult<Vec<Delivery>>;
    /// Takes the delivery for one attempt: sets `lease_until` and returns it
    /// only if it is `pending`, due (`next_attempt_at <= now`) and not leased
    /// by someone else (`lease_until` unset or `< now`).
    async fn claim_delivery(&self, id: &str, now: Timestamp, lease_until: Timestamp) -> DomainResult<Option<Delivery>>;
    /// Appends the attempt and replaces the delivery (state, counts, next
    /// attempt, lease) in one transaction.
    async fn record_attempt(&self, delivery: &Delivery, attempt: &DeliveryAttempt) -> DomainResult<()>;
    /// Replaces the delivery row (a redelivery, or a failure without an attempt).
    async fn update_delivery(&self, delivery: &Delivery) -> DomainResult<()>;
    /// `pending` deliveries with `next_attempt_at <= due_before` and no live
    /// lease at `now`, oldest due first.
    async fn list_due_deliveries(
        &self,
        due_before: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> DomainResult<Vec<Delivery>>;

    // idempotency records (`Idempotency-Key`)
    /// Claims `claim.key` for one request, atomically: a key nobody holds
    /// (or whose record expired) is `Started`; a key whose holder's lease
    /// ran out with no answer (that request died) is `Started` too, with
    /// `taken_over`; otherwise what the record says.
    async fn begin_idempotent(&self, claim: &IdempotencyClaim) -> DomainResult<IdempotencyBegin>;
    /// Stores the answer of a key this request holds, for replays until the
    /// record expires. False when the request no longer holds it.
    async fn complete_idempotent(&self, key: &str, lease_until: Timestamp, answer: &StoredAnswer)
        -> DomainResult<bool>;
    /// Gives up a key this request holds without an answer, so a retry runs
    /// the request again; a record naming a job is kept (its retry recovers).
    async fn release_idempotent(&self, key: &str, lease_until: Timestamp) -> DomainResult<()>;
    /// Deletes records that expired before `now`; how many. (DynamoDB's TTL
    /// does this deployed; reads never trust an expired record either way.)
    async fn sweep_idempotent(&self, now: Timestamp) -> DomainResult<u64>;
}

/// Device logins and CLI sessions (`cli_login`): kept apart from `Store`,
/// which they share nothing with but organizations' ids.
#[async_trait]
pub trait LoginStore: Send + Sync {
    /// Stores a new device login. `false` (nothing written) when a login
    /// that has not expired at `now` holds the same user code hash: the
    /// caller draws another code. An expired holder gives its code up.
    async fn insert_device_login(&self, login: &crate::model::DeviceLogin, now: Timestamp) -> DomainResult<bool>;
    /// By the device code's hash (strongly consistent).
    async fn get_device_login(&self, device_code_hash: &str) -> DomainResult<Option<crate::model::DeviceLogin>>;
    /// By the user code's hash, expired or not.
    async fn get_device_login_by_user_code(
        &self,
        user_code_hash: &str,
    ) -> DomainResult<Option<crate::model::DeviceLogin>>;
    /// Writes `login` if the stored one's version is `expected_version`;
    /// `false` when another write came first.
    async fn update_device_login(&self, login: &crate::model::DeviceLogin, expected_version: u64)
        -> DomainResult<bool>;
    /// In one atomic write: `login` (conditioned like `update_device_login`)
    /// and the new CLI session. `false`, and nothing written, when the
    /// login changed since it was read: a device code is exchanged once.
    async fn exchange_device_login(
        &self,
        login: &crate::model::DeviceLogin,
        expected_version: u64,
        session: &crate::model::CliSession,
    ) -> DomainResult<bool>;
    /// By the token's hash (every request with a CLI token).
    async fn get_cli_session_by_hash(&self, hash: &str) -> DomainResult<Option<crate::model::CliSession>>;
    /// One person's CLI sessions in one organization, newest first, revoked
    /// and expired ones included.
    async fn list_cli_sessions(
        &self,
        org_id: &str,
        user_id: &str,
        page: &Page,
    ) -> DomainResult<Vec<crate::model::CliSession>>;
    /// Sets `revoked_at` unless set; the session as stored after, or `None`
    /// when no session `id` of that person in that organization exists.
    async fn revoke_cli_session(
        &self,
        org_id: &str,
        user_id: &str,
        id: &str,
        at: Timestamp,
    ) -> DomainResult<Option<crate::model::CliSession>>;
    /// Records a use (`last_used_at`, `last_used_ip`).
    async fn touch_cli_session(&self, id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()>;
    /// Deletes device logins that expired before `now`; how many. (DynamoDB's
    /// TTL does this deployed; reads never trust an expired login either way.)
    async fn sweep_device_logins(&self, now: Timestamp) -> DomainResult<u64>;
}

/// One request's claim on an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The credential and the caller's key, hashed (`idempotency::record_key`).
    pub key: String,
    /// The request's method, path and body, hashed.
    pub fingerprint: String,
    pub now: Timestamp,
    /// Until when the claim holds without an answer; distinct per claim, it
    /// also tells a holder from the one that took over after it.
    pub lease_until: Timestamp,
    /// When the record, answered or not, is forgotten.
    pub expires_at: Timestamp,
}

/// The first answer to a key, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// This request holds the key. `taken_over`: an earlier request held it
    /// and died without an answer, having started no job.
    Started { taken_over: bool },
    /// This request holds the key, taken over from an earlier request that
    /// died after making `made` (a job, an API key or a webhook endpoint,
    /// recorded in the same write) but before it answered: the answer is
    /// made from it, nothing runs again. The record keeps `made`, so a later
    /// takeover finds it too.
    Recovered { made: String },
    /// Another request holding the key is still running.
    InFlight,
    /// The key was used for a different request (method, path or body).
    Mismatch,
    /// The key's first answer.
    Replay(StoredAnswer),
}

/// Where published events go: EventBridge deployed, the webhook queue locally.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// At least once; on error some events may have been published.
    async fn publish(&self, events: &[Event]) -> DomainResult<()>;
}

/// A signed webhook request, ready to send.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub timeout: Duration,
}

/// What came back from a webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    /// `Retry-After`, in seconds or as an HTTP date, as a duration from now.
    pub retry_after: Option<Duration>,
    /// The first 1 KiB of the body (lossy UTF-8).
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSendError {
    /// The egress guard refused the target: it is, or resolves to, a
    /// non-public address. Nothing was sent.
    #[error("{0}")]
    Refused(String),
    /// No response: DNS failure, connection error, TLS error, timeout.
    #[error("{0}")]
    Failed(String),
}

/// Sends webhook requests through the egress policy: the host is resolved,
/// non-public addresses are refused (unless private targets are allowed),
/// the checked address is the one connected to, and redirects are not followed.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    async fn send(&self, request: &WebhookRequest) -> Result<WebhookResponse, WebhookSendError>;
}

/// The egress policy every outbound connection a caller can aim obeys
/// (webhook URLs, import sources, a JWKS URL): use cases ask it before they
/// save a target; the adapter that connects checks again at connect time.
#[async_trait]
pub trait Egress: Send + Sync {
    /// May CapyDB connect where `url` points? The URL must say unambiguously
    /// where its client connects, and when private targets are denied its
    /// host must not be, or resolve to, a loopback, private, link-local or
    /// metadata address. The message says why not (never the password).
    async fn check_url(&self, url: &url::Url) -> Result<(), String>;
}

/// A message received from the job queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// Handle for `delete` / `change_visibility`; valid for this receive only.
    pub receipt: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

/// An at-least-once queue with SQS semantics: per-message delay, a visibility
/// timeout after each receive, a receive count, and a dead-letter queue that
/// takes a message instead of delivering it once it was received `max_receives` times.
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn send(&self, body: &str, delay: Duration) -> DomainResult<()>;
    async fn receive(&self, max: usize, visibility: Duration) -> DomainResult<Vec<QueueMessage>>;
    /// Deleting with a stale receipt (the message was received again since)
    /// does not fail. Whether it deletes the message is the queue's business
    /// (the SQLite queue ignores it, SQS's emulator honours it): nothing may
    /// rely on either.
    async fn delete(&self, receipt: &str) -> DomainResult<()>;
    /// Like `delete`, a stale receipt does not fail and its effect is unspecified.
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> DomainResult<()>;
    /// Bodies of messages moved to the dead-letter queue, oldest first.
    async fn dead_letters(&self, max: usize) -> DomainResult<Vec<String>>;
    /// Messages waiting (visible or delayed; approximate where the queue is).
    /// The health check's question: an unreachable queue answers an error.
    async fn depth(&self) -> DomainResult<u64>;
    /// Returns when a message may be ready to receive, or after `max` at
    /// the latest: what an idle consumer awaits between receives. A queue
    /// that knows when one is sent or becomes visible returns then; this
    /// default just sleeps `max`.
    async fn wait_for_message(&self, max: Duration) {
        tokio::time::sleep(max).await
    }
}

/// Why a provider operation failed, and whether trying again can help. The
/// message is shown to API users (the end of a failed job's `error`): it says
/// why in general terms and what to do, and never quotes a host or port, a
/// statement, a path or a tool's output; the provider logs those.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The server is unreachable, busy, or the object is momentarily locked.
    #[error("{0}")]
    Retryable(String),
    /// The request can never succeed as made (bad credentials, invalid name...).
    #[error("{0}")]
    Permanent(String),
    /// The operation is under way but not finished (a cloud database still
    /// being created): ask again after this long. The job waits without
    /// counting an attempt, and its step runs again.
    #[error("not finished yet; check again in {0:?}")]
    NotYet(std::time::Duration),
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// What `DatabaseProvider::clone_database` answers: how it copied.
pub type CloneResult = ProviderResult<CloneStrategy>;

/// How `clone_database` copied a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneStrategy {
    /// `CREATE DATABASE ... TEMPLATE`: a file copy, taken when nothing was connected to the source.
    Template,
    /// A parallel dump and restore, when the source had clients.
    DumpRestore,
}

/// What every function knows about the PostgreSQL service without talking
/// to it: where it is and how a client reaches a database there. The API
/// functions have only this; the worker has a whole [`DatabaseProvider`].
pub trait DatabaseEndpoint: Send + Sync {
    /// Where databases live, e.g. `local`.
    fn region(&self) -> String;
    /// Major versions this provider can create, e.g. `["15"]`.
    fn pg_versions(&self) -> Vec<String>;
    /// The connection details a client uses to reach `database` as `role`
    /// on the shared server.
    fn connection_info(&self, database: &str, role: &str, password: &str) -> ConnectionInfo;
    /// The same on a resource's own server at `host` (a dedicated deployment).
    fn connection_info_on(&self, host: &str, database: &str, role: &str, password: &str) -> ConnectionInfo;
}

/// Creates and removes databases and roles on a PostgreSQL service. Every
/// operation is idempotent: running it twice leaves the same state as once.
#[async_trait]
pub trait DatabaseProvider: Send + Sync {
    /// Creates a LOGIN role with this password, or sets the password if it exists.
    async fn ensure_role(&self, role: &str, password: &str) -> ProviderResult<()>;
    /// Creates the database owned by `owner` unless it exists.
    async fn ensure_database(&self, database: &str, owner: &str) -> ProviderResult<()>;
    /// Makes `target`, owned by `owner` and reachable only by it, a copy of
    /// `source`'s schema and data at this moment, every object inside owned
    /// by `owner`. Never disconnects, blocks or stalls the source's clients.
    /// Idempotent: a `target` left by an interrupted attempt is made again.
    async fn clone_database(&self, source: &str, source_owner: &str, target: &str, owner: &str) -> CloneResult;
    /// Writes a `pg_dump` custom-format dump of `database` to `dest`
    /// (created or replaced). Never disturbs the database's clients.
    async fn dump_database(&self, database: &str, dest: &Path) -> ProviderResult<()>;
    /// (Re)creates `target`, owned by `owner` and reachable only by it, from
    /// a dump made by `dump_database`, every restored object owned by `owner`.
    /// On failure `target` does not exist afterwards.
    async fn restore_database(&self, dump: &Path, target: &str, owner: &str) -> ProviderResult<()>;
    /// Copies the database at `source_url` (any reachable PostgreSQL server
    /// the egress policy allows, checked again as it connects) into `target`,
    /// as `restore_database` would. The URL's password is never logged,
    /// echoed, or put on a command line. An unreachable source, a refused
    /// login or a missing database is `Permanent`, all with one message, so
    /// an import cannot tell an open port from a closed one.
    async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()>;
    /// Puts `replacement` in the place of `live`, under `live`'s name (so
    /// connection strings are kept): ends `live`'s sessions, swaps, drops the
    /// old data. Idempotent across crashes: a call after a partial swap
    /// finishes it; after a completed swap (no `replacement`) it is a no-op.
    async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()>;
    /// Connects as `role` with `password` to `database` and runs `SELECT 1`.
    async fn check_connection(&self, database: &str, role: &str, password: &str) -> ProviderResult<()>;
    /// Ends the database's sessions and drops it; no error if it is absent.
    async fn drop_database(&self, database: &str) -> ProviderResult<()>;
    /// Drops the role; no error if it is absent.
    async fn drop_role(&self, role: &str) -> ProviderResult<()>;
    async fn database_exists(&self, database: &str) -> ProviderResult<bool>;
    async fn role_exists(&self, role: &str) -> ProviderResult<bool>;
    /// Whether the server takes a new connection and answers a query (the
    /// health check's question): on a connection of its own, so a busy
    /// admin session does not make a healthy server look down.
    async fn ping(&self) -> ProviderResult<()>;
}

/// Where projects' and previews' databases live: all on one PostgreSQL
/// server (the [`DatabaseProvider`] the entry point was wired with), or
/// each on a server of its own (an Aurora cluster) that the project's and
/// preview's jobs make and remove through [`DedicatedServers`]. A
/// deployment's choice (`DatabaseProvider` in the template), fixed for its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hosting {
    #[default]
    Shared,
    Dedicated,
}

/// The project or preview a dedicated server is for: its identity (the
/// server's identifier is derived from `resource_id`) and its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOwner<'a> {
    pub organization_id: &'a str,
    pub project_id: &'a str,
    /// The project's id, or the preview's.
    pub resource_id: &'a str,
}

impl ServerOwner<'_> {
    pub fn is_project(&self) -> bool {
        self.resource_id == self.project_id
    }
}

/// What a new dedicated server starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource<'a> {
    /// An empty server: the job makes the role and database on it.
    Empty,
    /// A copy-on-write clone of the live server of the project with this id,
    /// as of now: every role, password and database in it.
    CloneOf(&'a str),
    /// The server as the snapshot of the backup with this id holds it.
    Snapshot(&'a str),
}

/// A snapshot a dedicated deployment keeps: a backup's, or the last one of
/// a deleted project's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// The provider's identifier.
    pub id: String,
    /// The backup it holds, when it is a backup's.
    pub backup_id: Option<String>,
    /// The project whose server it was taken of as the server was removed.
    pub final_of: Option<String>,
    pub created_at: Option<Timestamp>,
}

/// Which of a resource's servers an operation is about: the live one, or
/// the replacement a job builds (a preview reset) before it takes the live
/// one's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    Live,
    /// Built by the job with this id.
    Replacement(&'a str),
}

/// Makes and removes the servers of a [`Hosting::Dedicated`] deployment.
/// Every operation returns at once: it starts what is to be done or checks
/// how far it is, and answers `ProviderError::NotYet` until it is finished,
/// so a job step never waits inside a call. Every operation is idempotent
/// and finds what an earlier, interrupted call made by its derived identifier.
#[async_trait]
pub trait DedicatedServers: Send + Sync {
    /// Makes the server of `owner` in `slot` from `source`, with this admin
    /// password (clones keep their source's, which is the same: a project
    /// and its previews share one), or finds it made; answers the host its
    /// clients connect to once it takes connections.
    async fn make(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String>;
    /// Puts the replacement `job` built in the live server's place, under
    /// the live server's identifier (so its host, and the connection
    /// strings, stay the same), and sets the old server aside to be removed
    /// by [`remove_spares`](Self::remove_spares). Answers the live host.
    /// Done already when there is no replacement.
    async fn swap(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String>;
    /// Undoes what `job` did towards replacing `owner`'s live server: a swap
    /// begun or finished is turned back (the server it set aside takes the
    /// live identifier again), and the replacement goes. Answers the live host.
    async fn revert(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String>;
    /// Removes every server of `owner` but the live one: a replacement a
    /// job built and did not swap in, the old one a swap set aside.
    async fn remove_spares(&self, owner: ServerOwner<'_>) -> ProviderResult<()>;
    /// Removes every server of `owner` (live, a replacement, a retired
    /// one), the live one leaving a final snapshot when `final_snapshot`
    /// (a deleted project's; never a preview's or a half-made server's).
    async fn remove(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()>;
    /// The server at `host`, logged in as its admin: what runs the SQL
    /// (roles, databases, dumps, checks) on it.
    async fn admin(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>>;
    /// Takes the snapshot of `owner`'s live server that the backup
    /// `backup_id` is, or finds it taken; done once it is complete.
    async fn snapshot(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()>;
}

/// The snapshots a dedicated deployment keeps, as the sweep prunes them:
/// listing and deleting, and nothing that makes or changes a server (the
/// sweeper links no more than this).
#[async_trait]
pub trait ServerSnapshots: Send + Sync {
    /// Every snapshot this deployment keeps (backups' and final ones).
    async fn snapshots(&self) -> ProviderResult<Vec<ServerSnapshot>>;
    /// Deletes a snapshot `snapshots` listed; done if it is gone.
    async fn delete_snapshot(&self, id: &str) -> ProviderResult<()>;
}

/// Whether the database server takes connections, asked without a
/// credential: the health check's question in a process that manages no
/// database (deployed, the backups function), so it need not hold the
/// server's admin password. Where a `DatabaseProvider` is wired, its `ping`
/// answers instead, logging in.
#[async_trait]
pub trait DatabaseProbe: Send + Sync {
    async fn probe(&self) -> ProviderResult<()>;
}

/// Seals secrets at rest (database passwords, later webhook secrets).
#[async_trait]
pub trait SecretBox: Send + Sync {
    async fn seal(&self, plaintext: &str) -> DomainResult<String>;
    async fn open(&self, sealed: &str) -> DomainResult<String>;
}

/// Size and digest of a stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// Where backup artifacts live: files under the data dir locally (S3 when
/// deployed). Keys are resource ids such as `bkp_...`.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// A fresh local path a producer (pg_dump) writes the artifact to before `put`.
    async fn staging_path(&self, key: &str) -> DomainResult<PathBuf>;
    /// Moves the staged file into the store under `key` (replacing any
    /// earlier one) and answers its size and SHA-256. A failed write (disk
    /// full) is an error and leaves no artifact under `key`.
    async fn put(&self, key: &str, staged: &Path) -> DomainResult<ArtifactInfo>;
    /// A local path holding the artifact's bytes, for a restore to read.
    async fn fetch(&self, key: &str) -> DomainResult<PathBuf>;
    /// No error if it is absent.
    async fn delete(&self, key: &str) -> DomainResult<()>;
}

/// A fixed window of the rate limiter: how many requests a key made in it
/// (the one just counted included) and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWindow {
    pub count: u64,
    pub resets_at: Timestamp,
}

/// Request counters for rate limiting, in fixed windows aligned on the epoch
/// (`[k·window, (k+1)·window)`). In memory locally; DynamoDB counters with a
/// TTL deployed, so every Lambda instance counts in the same place.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `key` in the window holding `now`, atomically.
    async fn hit(&self, key: &str, window: Duration, now: Timestamp) -> DomainResult<RateWindow>;
}

/// The window of length `window` holding `now`: its start, and its end.
pub fn rate_window(window: Duration, now: Timestamp) -> (i64, Timestamp) {
    let len = window.as_millis().clamp(1, i64::MAX as u128) as i64;
    let start = now.timestamp_millis().div_euclid(len) * len;
    let end = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(start.saturating_add(len)).unwrap_or(now);
    (start, end)
}

pub use crate::model::OrgRole;

/// The active organization of a verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOrg {
    /// Clerk's organization id (`org_...` in Clerk's own format).
    pub clerk_org_id: String,
    pub role: OrgRole,
    pub slug: Option<String>,
}

/// What a verified session token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    /// Clerk's user id (`sub`).
    pub user_id: String,
    /// Clerk's session id (`sid`), when the token carries one.
    pub session_id: Option<String>,
    /// `None`: the session has no active organization.
    pub org: Option<SessionOrg>,
    pub expires_at: Timestamp,
}

/// Verifies a browser session's token (a Clerk session JWT in both shapes).
/// Every token that is not a valid session of this deployment is
/// `DomainError::Unauthenticated` with a reason a developer can act on
/// ("the token has expired", "algorithm HS256 is not accepted", ...);
/// never a 500 for bad input.
#[async_trait]
pub trait SessionVerifier: Send + Sync {
    async fn verify(&self, token: &str, now: Timestamp) -> DomainResult<SessionClaims>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}
