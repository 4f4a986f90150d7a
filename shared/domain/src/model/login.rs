//! The stored records of the CLI login (the `cli_login` use cases): device logins
//! and CLI sessions, and the organization role a person's session holds.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Timestamp;

/// The organization role a human session holds in its active organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    /// Clerk's `org:admin` (v1 claims) or `admin` (v2 claims).
    Admin,
    /// Any other organization role.
    Member,
}

impl OrgRole {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Admin => "admin",
            OrgRole::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<OrgRole> {
        match s {
            "admin" => Some(OrgRole::Admin),
            "member" => Some(OrgRole::Member),
            _ => None,
        }
    }
}

/// Where a device login stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceLoginStatus {
    Pending,
    Approved,
    Denied,
    /// Exchanged for a token: the device code is spent.
    Exchanged,
}

impl DeviceLoginStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceLoginStatus::Pending => "pending",
            DeviceLoginStatus::Approved => "approved",
            DeviceLoginStatus::Denied => "denied",
            DeviceLoginStatus::Exchanged => "exchanged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeviceLoginStatus::Pending,
            "approved" => DeviceLoginStatus::Approved,
            "denied" => DeviceLoginStatus::Denied,
            "exchanged" => DeviceLoginStatus::Exchanged,
            _ => return None,
        })
    }
}

/// Who approved or denied a device login, in which organization, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginDecision {
    pub user_id: String,
    pub organization_id: String,
    pub clerk_org_id: String,
    pub role: OrgRole,
    pub at: Timestamp,
}

/// One run of the device flow, stored under its device code's hash.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLogin {
    /// SHA-256 of the device code (the CLI's secret).
    pub device_code_hash: String,
    /// SHA-256 of the normalized user code (`BCDFGHJK`, no dash).
    pub user_code_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Seconds the CLI must wait between polls; grows with `slow_down`.
    pub interval_secs: u32,
    pub last_polled_at: Option<Timestamp>,
    pub status: DeviceLoginStatus,
    /// Set once approved or denied.
    pub decision: Option<LoginDecision>,
    /// The CLI session the exchange made.
    pub cli_session_id: Option<String>,
    /// Bumped by every write; writes are conditioned on it.
    pub version: u64,
}

/// A CLI token's record. The token itself is never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CliSession {
    /// `cli_...`
    pub id: String,
    pub organization_id: String,
    /// The Clerk user id of the person who approved the login.
    pub user_id: String,
    /// The organization role that person held when approving; the token's
    /// requests are gated by it.
    pub role: OrgRole,
    /// `capy_cli_`
    pub prefix: String,
    /// The token's last four characters.
    pub last4: String,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub expires_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_ip: Option<String>,
    /// Clerk's id of the organization; not shown.
    #[serde(skip)]
    #[schema(ignore)]
    pub clerk_org_id: String,
    /// SHA-256 of the token; never serialized.
    #[serde(skip)]
    #[schema(ignore)]
    pub hash: String,
}
