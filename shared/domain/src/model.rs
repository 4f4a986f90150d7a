//! Entities as stored and as the API shows them. Secrets (key hashes, sealed
//! passwords, job parameters) are `#[serde(skip)]` or kept out of the API
//! views, so serializing an entity for a response can never leak one.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::scopes::Scope;

/// `as_str` / `parse` / `ALL` for the enums stored as text. Given the whole
/// enum (`pub enum T { Variant => "name", ... }`) it also defines it, each
/// variant's serde name being its stored name, so the names are written once.
macro_rules! text_enum {
    ($(#[$m:meta])* pub enum $t:ident { $($(#[$vm:meta])* $v:ident => $s:tt),* $(,)? }) => {
        $(#[$m])*
        pub enum $t {
            $($(#[$vm])* #[serde(rename = $s)] $v),*
        }
        text_enum!($t { $($v => $s),* });
    };
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// Every value, in declaration order.
            pub const ALL: &'static [$t] = &[$(Self::$v),*];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}

mod job;
mod login;
pub use job::{Job, JobKind, JobSpec, JobState, JobWait, ResourceKind, ResourceRef, RestoreInto, Sealed};
pub use login::{CliSession, DeviceLogin, DeviceLoginStatus, LoginDecision, OrgRole};

pub type Timestamp = DateTime<Utc>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    /// `org_...`
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// `key_...`
    pub id: String,
    pub organization_id: String,
    pub name: String,
    /// The fixed prefix of the plaintext, `capy_live_`.
    pub prefix: String,
    /// The last four characters of the plaintext.
    pub last4: String,
    pub scopes: Vec<Scope>,
    /// When set, the key may only act on this project.
    pub project_id: Option<String>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_used_ip: Option<String>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    /// Who created the key: the Clerk user id of the session that did
    /// (`user_...`), or the id of the API key that did (`key_...`); null
    /// for keys made at bootstrap or from the command line.
    #[serde(default)]
    pub created_by: Option<String>,
    /// SHA-256 of the plaintext; never serialized.
    #[serde(skip)]
    #[schema(ignore)]
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectState {
    /// The database is being created; connections answer 409.
    Provisioning,
    /// Usable: a real connection with the issued credentials succeeded.
    Ready,
    /// A delete job runs.
    Deleting,
    /// Deleted; kept for the job history, hidden from lists and lookups.
    Deleted,
    /// Provisioning failed; delete it and create another.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    /// `prj_...`
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub region: String,
    pub pg_version: String,
    pub state: ProjectState,
    /// Name of the PostgreSQL database on the server.
    pub database_name: String,
    /// The owner role the connection strings use.
    pub role_name: String,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub updated_at: DateTime<Utc>,
    /// The owner role's password, sealed by the secret box; never serialized.
    #[serde(skip)]
    #[schema(ignore)]
    pub password_sealed: String,
    /// Where the database's own server takes connections, once made (a
    /// dedicated deployment's; `None` on the shared server).
    #[serde(skip)]
    #[schema(ignore)]
    pub server_host: Option<String>,
    /// The admin password of the project's server and its previews',
    /// sealed (a dedicated deployment's; `None` on the shared server).
    #[serde(skip)]
    #[schema(ignore)]
    pub admin_password_sealed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PreviewMode {
    /// A copy of the project's schema and data at creation (or reset) time.
    Clone,
    /// An empty database.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PreviewState {
    Creating,
    /// Usable: a real connection with the issued credentials succeeded.
    Ready,
    /// A reset job is replacing its contents with a fresh clone.
    Resetting,
    Deleting,
    Deleted,
    Failed,
}

/// A per-pull-request database: a clone of its project (or empty) with its
/// own role and password, deleted by the sweeper once `expires_at` passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Preview {
    /// `pvw_...`
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    /// Unique among the project's live previews, e.g. `pr-42`.
    pub name: String,
    pub mode: PreviewMode,
    pub state: PreviewState,
    pub database_name: String,
    pub role_name: String,
    /// The TTL last set; a reset restarts it from the reset's time.
    pub ttl_hours: u32,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    #[schema(ignore)]
    pub password_sealed: String,
    /// Where the preview's own server takes connections, once made (a
    /// dedicated deployment's; `None` on the shared server).
    #[serde(skip)]
    #[schema(ignore)]
    pub server_host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Asked for through the API.
    Manual,
    /// Taken automatically before an overwrite-restore or an import.
    Safety,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    Creating,
    Completed,
    Failed,
    Deleted,
}

/// A `pg_dump` custom-format artifact of a project's database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    /// `bkp_...`
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    pub name: String,
    pub kind: BackupKind,
    pub state: BackupState,
    /// Size of the artifact in bytes, once completed; `null` for a cluster
    /// snapshot (a deployment on Aurora), which has no file.
    pub size_bytes: Option<u64>,
    /// Lowercase hex SHA-256 of the artifact, once completed; `null` for a
    /// cluster snapshot.
    pub sha256: Option<String>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Replace the project's data in place, keeping its connection string,
    /// after an automatic safety backup.
    Overwrite,
    /// Restore into a new preview database.
    Preview,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Running,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Restore {
    /// `rst_...`
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    pub backup_id: String,
    pub mode: RestoreMode,
    pub state: OperationState,
    /// The preview restored into (`preview` mode).
    pub preview_id: Option<String>,
    /// The automatic backup taken first (`overwrite` mode).
    pub safety_backup_id: Option<String>,
    pub job_id: String,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Import {
    /// `imp_...`
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    /// The source URL without its password (`postgres://user@host:port/db`).
    pub source: String,
    pub state: OperationState,
    /// The automatic backup of the project taken first.
    pub safety_backup_id: Option<String>,
    pub job_id: String,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

text_enum! {
    /// Every type of event CapyDB announces (the `type` of an event and of a
    /// webhook payload).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
    pub enum EventType {
        JobCompleted => "job.completed",
        JobFailed => "job.failed",
        ProjectReady => "project.ready",
        ProjectDeleted => "project.deleted",
        PreviewReady => "preview.ready",
        PreviewExpired => "preview.expired",
        PreviewDeleted => "preview.deleted",
        BackupCompleted => "backup.completed",
        RestoreCompleted => "restore.completed",
        ImportCompleted => "import.completed",
        CredentialsRotated => "credentials.rotated",
        WebhookPing => "webhook.ping",
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain event, written to the outbox in the same transaction as the state
/// change it announces and published after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// `evt_...`, stable across republishing.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub organization_id: String,
    pub project_id: Option<String>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    pub data: serde_json::Value,
    #[serde(skip)]
    #[schema(ignore)]
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub published_at: Option<DateTime<Utc>>,
}

/// A webhook endpoint of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `whk_...`
    pub id: String,
    pub organization_id: String,
    pub url: String,
    /// Event types sent to this endpoint; `["*"]` is every type.
    pub events: Vec<String>,
    /// Only events of this project (and organization-wide `webhook.ping`) when set.
    pub project_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the endpoint was disabled, when CapyDB disabled it (`410 Gone`, or
    /// failing for 5 days). Cleared when it is enabled again.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to this endpoint has failed; `null` after a success.
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub updated_at: DateTime<Utc>,
    /// The signing secret (`whsec_...`), sealed by the secret box.
    #[serde(skip)]
    #[schema(ignore)]
    pub secret_sealed: String,
    /// The secret before the last rotation, sealed; it keeps signing until
    /// `previous_secret_expires_at`.
    #[serde(skip)]
    #[schema(ignore)]
    pub previous_secret_sealed: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// One message to one endpoint, and its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// `dlv_...`
    pub id: String,
    pub webhook_id: String,
    pub organization_id: String,
    /// The event delivered; also the `webhook-id` header, the same on every attempt.
    pub event_id: String,
    pub event_type: EventType,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempt_count: u32,
    /// When the next attempt is due (`pending` only).
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub updated_at: DateTime<Utc>,
    /// The exact body sent on every attempt: `{"type", "timestamp", "data"}`.
    pub payload: String,
    /// Attempts, oldest first (filled in when listed).
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    /// Attempts in the current round: a redelivery starts the retry schedule again.
    #[serde(skip)]
    #[schema(ignore)]
    pub round_attempts: u32,
    /// A worker holds the delivery for an attempt until then.
    #[serde(skip)]
    #[schema(ignore)]
    pub lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Succeeded,
    /// Every scheduled attempt failed, the endpoint answered `410`, or it was
    /// disabled or deleted before the delivery succeeded.
    Failed,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    /// 1 for the first attempt.
    pub number: u32,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status, when a response came back.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The first 1 KiB of the response body.
    pub response_body: Option<String>,
    /// Why no usable response came back (refused address, timeout, connection error).
    pub error: Option<String>,
}

/// What a caller may see of a database connection. Built on request from the
/// sealed password; never stored in this form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionInfo {
    /// `owner` for the project's owner role.
    pub role: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    pub sslmode: String,
    /// A `postgres://` URI with all of the above.
    pub uri: String,
}

text_enum!(ProjectState {
    Provisioning => "provisioning",
    Ready => "ready",
    Deleting => "deleting",
    Deleted => "deleted",
    Failed => "failed",
});
text_enum!(PreviewMode { Clone => "clone", Empty => "empty" });
text_enum!(PreviewState {
    Creating => "creating",
    Ready => "ready",
    Resetting => "resetting",
    Deleting => "deleting",
    Deleted => "deleted",
    Failed => "failed",
});
text_enum!(JobState { Queued => "queued", Running => "running", Completed => "completed", Failed => "failed" });
text_enum!(BackupKind { Manual => "manual", Safety => "safety" });
text_enum!(BackupState { Creating => "creating", Completed => "completed", Failed => "failed", Deleted => "deleted" });
text_enum!(RestoreMode { Overwrite => "overwrite", Preview => "preview" });
text_enum!(OperationState { Running => "running", Completed => "completed", Failed => "failed" });
text_enum!(DeliveryState { Pending => "pending", Succeeded => "succeeded", Failed => "failed" });

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored text of each value is its JSON name, and parses back.
    fn agrees<T: Copy + PartialEq + std::fmt::Debug + Serialize>(
        v: T,
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) {
        assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{}\"", as_str(v)));
        assert_eq!(parse(as_str(v)), Some(v));
    }

    #[test]
    fn stored_names_match_api_names() {
        macro_rules! every {
            ($($t:ty),*) => {$(
                assert!(!<$t>::ALL.is_empty());
                for v in <$t>::ALL {
                    agrees(*v, <$t>::as_str, <$t>::parse);
                }
            )*};
        }
        every!(
            JobKind,
            JobState,
            EventType,
            ResourceKind,
            ProjectState,
            PreviewState,
            PreviewMode,
            BackupKind,
            BackupState,
            RestoreMode,
            OperationState,
            DeliveryState
        );
        assert_eq!(JobKind::ALL.len(), 9);
        assert_eq!(EventType::ALL.len(), 12);
        assert_eq!(JobKind::parse("nope"), None);
    }
}
