//! CLI login: the OAuth 2.0 device authorization grant (RFC 8628).
//!
//! The CLI asks for a device code and a short user code, shows the user
//! code, and polls; the person approves that code in a signed-in browser
//! session; the next poll exchanges the device code, once, for a CLI token
//! (`capy_cli_...`) that acts as that person's session in the organization
//! it was approved for, with the role they held then, for 30 days or until
//! revoked. Only hashes of the device code, the user code and the token are
//! stored.
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{add, App};
use crate::error::{DomainError, DomainResult};
pub use crate::model::{CliSession, DeviceLogin, DeviceLoginStatus, LoginDecision, OrgRole};
use crate::model::{Organization, Timestamp};
use crate::ports::Page;
use crate::principal::{Credential, Principal, Session};
use crate::scopes::Scope;
use crate::{apikey, ids};

/// A CLI token's prefix (then 32 random base62 characters and a checksum,
/// like an API key's).
pub const CLI_PREFIX: &str = "capy_cli_";
/// A device code's prefix: it is a secret for ten minutes, and a prefix
/// lets secret scanners recognize one.
pub const DEVICE_PREFIX: &str = "capy_device_";
/// How long a device code and its user code can be approved and exchanged.
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(600);
/// The polling interval a new device code starts with, in seconds.
pub const POLL_INTERVAL_SECS: u32 = 5;
/// What `slow_down` adds to a device code's interval (RFC 8628 §3.5).
pub const SLOW_DOWN_SECS: u32 = 5;
/// How long a CLI token works.
pub const CLI_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The user code's alphabet: consonants without look-alikes (no vowels, so
/// no words; RFC 8628 §6.1). 20 letters, 8 of them: 34.5 bits.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
pub const USER_CODE_LEN: usize = 8;

/// `POST /v1/cli/login`: what the CLI shows and polls with (RFC 8628 §3.2).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceAuthorization {
    /// The CLI's secret for polling `POST /v1/cli/login/token`. Never show it.
    pub device_code: String,
    /// What the person confirms in the browser, `XXXX-XXXX`.
    pub user_code: String,
    /// Where the person approves the login.
    pub verification_uri: String,
    /// `verification_uri` with the user code filled in.
    pub verification_uri_complete: String,
    /// Seconds until both codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u32,
}

/// `POST /v1/cli/login/approve`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveCliLogin {
    /// The code the CLI shows, with or without its dash (or spaces), any case.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[- \t]*([BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz][- \t]*){8}$"
    )]
    pub user_code: String,
    /// `false` declines the login: the CLI's next poll is `access_denied`.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub approve: bool,
}

fn yes() -> bool {
    true
}

/// The answer to an approval.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CliLoginDecision {
    /// `approved` or `denied`.
    pub status: String,
    /// The organization the CLI token will act in.
    pub organization_id: String,
    /// The role the token will carry.
    pub role: OrgRole,
}

/// `POST /v1/cli/login/token`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliTokenRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub device_code: String,
    /// Optional, as RFC 8628 names it.
    pub grant_type: Option<DeviceGrantType>,
}

/// RFC 8628's grant type, the only one this endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum DeviceGrantType {
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
}

/// A successful exchange: the only time the token is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CliToken {
    /// `capy_cli_...`: send as `Authorization: Bearer <token>`.
    pub token: String,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub organization: Organization,
    pub cli_session: CliSession,
}

/// Why a poll did not get a token, as RFC 8628 §3.5 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantRefusal {
    AuthorizationPending,
    /// Polled before the interval passed; the interval is now this.
    SlowDown {
        interval: u32,
    },
    ExpiredToken,
    AccessDenied,
    /// Unknown, malformed, or already exchanged.
    InvalidGrant(&'static str),
}

impl GrantRefusal {
    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            GrantRefusal::AuthorizationPending => "authorization_pending",
            GrantRefusal::SlowDown { .. } => "slow_down",
            GrantRefusal::ExpiredToken => "expired_token",
            GrantRefusal::AccessDenied => "access_denied",
            GrantRefusal::InvalidGrant(_) => "invalid_grant",
        }
    }

    /// The `error_description`.
    pub fn description(&self) -> String {
        match self {
            GrantRefusal::AuthorizationPending => {
                "the login has not been approved yet; keep polling at the interval".into()
            }
            GrantRefusal::SlowDown { interval } => {
                format!("polled too fast: wait at least {interval} s between polls from now on")
            }
            GrantRefusal::ExpiredToken => "this device code has expired; start the login again".into(),
            GrantRefusal::AccessDenied => "the login was declined in the browser".into(),
            GrantRefusal::InvalidGrant(why) => (*why).into(),
        }
    }
}

/// The user code as the person may type it (`wdjb-mjht`, `WDJB MJHT`), as
/// it is hashed: upper case, separators dropped. `None` when it cannot be a
/// user code.
pub fn normalize_user_code(code: &str) -> Option<String> {
    let normalized: String =
        code.chars().filter(|c| !matches!(c, '-' | ' ' | '\t')).map(|c| c.to_ascii_uppercase()).collect();
    (normalized.len() == USER_CODE_LEN && normalized.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(normalized)
}

/// A fresh user code, normalized (no dash).
pub fn new_user_code() -> String {
    let mut rng = rand::thread_rng();
    (0..USER_CODE_LEN).map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char).collect()
}

/// `BCDFGHJK` → `BCDF-GHJK`.
pub fn display_user_code(normalized: &str) -> String {
    let (a, b) = normalized.split_at(normalized.len() / 2);
    format!("{a}-{b}")
}

/// Polls closer together than this many seconds are too fast.
fn too_fast(login: &DeviceLogin, now: Timestamp) -> bool {
    login.last_polled_at.is_some_and(|t| now < t + chrono::Duration::seconds(i64::from(login.interval_secs)))
}

/// Attempts at a conditional write that lost to a concurrent one before
/// giving up with `409`.
const WRITE_ATTEMPTS: usize = 5;

impl App {
    /// Starts a device login. `verification_uri` is where the person
    /// approves (the dashboard's page, or this API's approve endpoint).
    pub async fn start_cli_login(&self, verification_uri: &str) -> DomainResult<DeviceAuthorization> {
        let now = self.now();
        let device_code = apikey::generate(DEVICE_PREFIX);
        for _ in 0..WRITE_ATTEMPTS {
            let user_code = new_user_code();
            let login = DeviceLogin {
                device_code_hash: apikey::hash(&device_code),
                user_code_hash: apikey::hash(&user_code),
                created_at: now,
                expires_at: add(now, DEVICE_CODE_TTL),
                interval_secs: POLL_INTERVAL_SECS,
                last_polled_at: None,
                status: DeviceLoginStatus::Pending,
                decision: None,
                cli_session_id: None,
                version: 1,
            };
            // `false`: a live login holds this user code; draw another.
            if self.logins.insert_device_login(&login, now).await? {
                let shown = display_user_code(&user_code);
                let sep = if verification_uri.contains('?') { '&' } else { '?' };
                return Ok(DeviceAuthorization {
                    device_code,
                    verification_uri_complete: format!("{verification_uri}{sep}user_code={shown}"),
                    user_code: shown,
                    verification_uri: verification_uri.to_string(),
                    expires_in: DEVICE_CODE_TTL.as_secs(),
                    interval: POLL_INTERVAL_SECS,
                });
            }
        }
        Err(DomainError::Unavailable("could not draw a free user code; retry".into()))
    }

    /// Approves (or declines) the device login showing `user_code`, as the
    /// browser session `p` in its organization. Any role may approve: the
    /// token carries that role.
    pub async fn approve_cli_login(&self, p: &Principal, req: ApproveCliLogin) -> DomainResult<CliLoginDecision> {
        let session = match &p.credential {
            Credential::Session(s) if s.cli_session_id.is_none() => s,
            Credential::Session(_) => {
                return Err(DomainError::Forbidden(
                    "a CLI token cannot approve a CLI login: approve it in the browser, signed in".into(),
                ))
            }
            Credential::ApiKey(_) => {
                return Err(DomainError::Forbidden(
                    "approving a CLI login needs a signed-in browser session (Clerk), not an API key".into(),
                ))
            }
        };
        let Some(code) = normalize_user_code(&req.user_code) else {
            return Err(DomainError::invalid(format!(
                "user_code must be the {USER_CODE_LEN} letters the CLI shows, like BCDF-GHJK"
            )));
        };
        let unknown = || {
            DomainError::NotFound("no CLI login is waiting for this code; check it, or start the login again".into())
        };
        for _ in 0..WRITE_ATTEMPTS {
            let now = self.now();
            let login = self.logins.get_device_login_by_user_code(&apikey::hash(&code)).await?.ok_or_else(unknown)?;
            if now >= login.expires_at {
                return Err(DomainError::invalid(
                    "this code has expired (codes last 10 minutes); start the login again",
                ));
            }
            if login.status != DeviceLoginStatus::Pending {
                return Err(DomainError::Conflict(format!(
                    "this CLI login was already {}",
                    if login.status == DeviceLoginStatus::Denied { "declined" } else { "approved" }
                )));
            }
            let status = if req.approve { DeviceLoginStatus::Approved } else { DeviceLoginStatus::Denied };
            let decided = DeviceLogin {
                status,
                decision: Some(LoginDecision {
                    user_id: session.user_id.clone(),
                    organization_id: p.org_id().to_string(),
                    clerk_org_id: session.clerk_org_id.clone(),
                    role: session.role,
                    at: now,
                }),
                version: login.version + 1,
                ..login.clone()
            };
            if self.logins.update_device_login(&decided, login.version).await? {
                tracing::info!(user_id = %session.user_id, organization_id = %p.org_id(), status = status.as_str(), "CLI login decided");
                return Ok(CliLoginDecision {
                    status: status.as_str().into(),
                    organization_id: p.org_id().to_string(),
                    role: session.role,
                });
            }
        }
        Err(DomainError::Conflict("this CLI login changed while it was being approved; retry".into()))
    }

    /// One poll of the CLI: a token once approved, else why not.
    pub async fn poll_cli_login(&self, req: CliTokenRequest) -> DomainResult<Result<CliToken, GrantRefusal>> {
        if !apikey::is_well_formed(DEVICE_PREFIX, &req.device_code) {
            return Ok(Err(GrantRefusal::InvalidGrant("this is not a device code this server issued")));
        }
        let hash = apikey::hash(&req.device_code);
        for _ in 0..WRITE_ATTEMPTS {
            let now = self.now();
            let Some(login) = self.logins.get_device_login(&hash).await? else {
                return Ok(Err(GrantRefusal::InvalidGrant("unknown device code")));
            };
            match login.status {
                DeviceLoginStatus::Exchanged => {
                    return Ok(Err(GrantRefusal::InvalidGrant(
                        "this device code was already exchanged for a token; it works once",
                    )))
                }
                _ if now >= login.expires_at => return Ok(Err(GrantRefusal::ExpiredToken)),
                DeviceLoginStatus::Denied => return Ok(Err(GrantRefusal::AccessDenied)),
                DeviceLoginStatus::Pending => {
                    let slow = too_fast(&login, now);
                    let polled = DeviceLogin {
                        last_polled_at: Some(now),
                        interval_secs: login.interval_secs + if slow { SLOW_DOWN_SECS } else { 0 },
                        version: login.version + 1,
                        ..login.clone()
                    };
                    if self.logins.update_device_login(&polled, login.version).await? {
                        return Ok(Err(if slow {
                            GrantRefusal::SlowDown { interval: polled.interval_secs }
                        } else {
                            GrantRefusal::AuthorizationPending
                        }));
                    }
                }
                DeviceLoginStatus::Approved => {
                    let decision = login
                        .decision
                        .clone()
                        .ok_or_else(|| DomainError::internal("an approved device login without its decision"))?;
                    let organization =
                        self.store.get_organization(&decision.organization_id).await?.ok_or_else(|| {
                            DomainError::internal("the organization a CLI login was approved for is gone")
                        })?;
                    let token = apikey::generate(CLI_PREFIX);
                    let session = CliSession {
                        id: ids::new_id(ids::CLI_SESSION),
                        organization_id: decision.organization_id.clone(),
                        user_id: decision.user_id.clone(),
                        role: decision.role,
                        prefix: CLI_PREFIX.into(),
                        last4: apikey::last4(&token),
                        created_at: now,
                        expires_at: add(now, CLI_SESSION_TTL),
                        revoked_at: None,
                        last_used_at: None,
                        last_used_ip: None,
                        clerk_org_id: decision.clerk_org_id.clone(),
                        hash: apikey::hash(&token),
                    };
                    let exchanged = DeviceLogin {
                        status: DeviceLoginStatus::Exchanged,
                        cli_session_id: Some(session.id.clone()),
                        last_polled_at: Some(now),
                        version: login.version + 1,
                        ..login.clone()
                    };
                    if self.logins.exchange_device_login(&exchanged, login.version, &session).await? {
                        tracing::info!(cli_session_id = %session.id, user_id = %session.user_id, organization_id = %session.organization_id, "CLI session started");
                        return Ok(Ok(CliToken {
                            token,
                            expires_at: session.expires_at,
                            organization,
                            cli_session: session,
                        }));
                    }
                }
            }
            // Another poll wrote first: read again.
        }
        Err(DomainError::Conflict("this device code is being polled concurrently; poll once per interval".into()))
    }

    /// Authenticates a CLI token: the approving person's session in the
    /// organization it was approved for.
    #[tracing::instrument(level = "debug", name = "authenticate_cli", skip_all)]
    pub async fn authenticate_cli_token(
        &self,
        presented: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> DomainResult<Principal> {
        if !apikey::is_well_formed(CLI_PREFIX, presented) {
            return Err(DomainError::Unauthenticated("malformed CLI token".into()));
        }
        let session = self
            .logins
            .get_cli_session_by_hash(&apikey::hash(presented))
            .await?
            .ok_or_else(|| DomainError::Unauthenticated("unknown CLI token".into()))?;
        let now = self.now();
        if session.revoked_at.is_some() {
            return Err(DomainError::Unauthenticated(
                "this CLI session has been revoked; log in again (capy login)".into(),
            ));
        }
        if session.expires_at <= now {
            return Err(DomainError::Unauthenticated("this CLI session has expired; log in again (capy login)".into()));
        }
        let organization = self
            .store
            .get_organization(&session.organization_id)
            .await?
            .ok_or_else(|| DomainError::Unauthenticated("unknown CLI token".into()))?;
        if session.last_used_at.is_none_or(|t| t <= crate::app::sub(now, crate::identity::TOUCH_INTERVAL)) {
            let ip = client_ip.map(|ip| ip.to_string());
            if let Err(e) = self.logins.touch_cli_session(&session.id, now, ip.as_deref()).await {
                tracing::warn!(cli_session_id = %session.id, error = %e, "could not record CLI session use");
            }
        }
        Ok(Principal {
            credential: Credential::Session(Session {
                user_id: session.user_id,
                session_id: None,
                clerk_org_id: session.clerk_org_id,
                role: session.role,
                cli_session_id: Some(session.id),
            }),
            organization,
            scopes: Scope::ALL.to_vec(),
            project_id: None,
        })
    }

    /// The calling person's CLI sessions in this organization, newest first.
    pub async fn list_cli_sessions(&self, p: &Principal, page: &Page) -> DomainResult<Vec<CliSession>> {
        let user = person(p)?;
        self.logins.list_cli_sessions(p.org_id(), &user.user_id, page).await
    }

    /// Revokes one of the calling person's CLI sessions: its token is `401`
    /// from the next request on. Revoking a revoked one answers it as is.
    pub async fn revoke_cli_session(&self, p: &Principal, id: &str) -> DomainResult<CliSession> {
        let user = person(p)?;
        let revoked = self
            .logins
            .revoke_cli_session(p.org_id(), &user.user_id, id, self.now())
            .await?
            .ok_or_else(|| DomainError::not_found("CLI session", id))?;
        tracing::info!(cli_session_id = %id, user_id = %user.user_id, "CLI session revoked");
        Ok(revoked)
    }
}

/// CLI sessions are a person's: a browser session or a CLI token, never an API key.
fn person(p: &Principal) -> DomainResult<&Session> {
    match &p.credential {
        Credential::Session(s) => Ok(s),
        Credential::ApiKey(_) => Err(DomainError::Forbidden(
            "CLI sessions belong to a person: use a browser session or a CLI token, not an API key".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_alphabet_and_read_back_in_any_form() {
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), USER_CODE_LEN);
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), USER_CODE_LEN + 1);
            assert_eq!(&shown[4..5], "-");
            assert_eq!(normalize_user_code(&shown).as_deref(), Some(code.as_str()));
            assert_eq!(normalize_user_code(&shown.to_lowercase()).as_deref(), Some(code.as_str()));
            assert_eq!(normalize_user_code(&shown.replace('-', " ")).as_deref(), Some(code.as_str()));
        }
        // No vowels, no digits, no look-alikes.
        for c in b"AEIOUY0123456789" {
            assert!(!USER_CODE_ALPHABET.contains(c), "{}", *c as char);
        }
        assert_eq!(normalize_user_code("BCDF-GHJ"), None, "too short");
        assert_eq!(normalize_user_code("BCDF-GHJA"), None, "a vowel");
        assert_eq!(normalize_user_code("BCDF-GHJKL"), None, "too long");
    }

    #[test]
    fn a_poll_before_the_interval_is_too_fast() {
        let now = chrono::Utc::now();
        let mut login = DeviceLogin {
            device_code_hash: String::new(),
            user_code_hash: String::new(),
            created_at: now,
            expires_at: now,
            interval_secs: 5,
            last_polled_at: None,
            status: DeviceLoginStatus::Pending,
            decision: None,
            cli_session_id: None,
            version: 1,
        };
        assert!(!too_fast(&login, now), "the first poll");
        login.last_polled_at = Some(now);
        assert!(too_fast(&login, now + chrono::Duration::milliseconds(4999)));
        assert!(!too_fast(&login, now + chrono::Duration::seconds(5)));
        login.interval_secs = 10;
        assert!(too_fast(&login, now + chrono::Duration::seconds(9)));
    }

    #[test]
    fn refusals_use_rfc_8628_codes() {
        assert_eq!(GrantRefusal::AuthorizationPending.code(), "authorization_pending");
        assert_eq!(GrantRefusal::SlowDown { interval: 10 }.code(), "slow_down");
        assert!(GrantRefusal::SlowDown { interval: 10 }.description().contains("10 s"));
        assert_eq!(GrantRefusal::ExpiredToken.code(), "expired_token");
        assert_eq!(GrantRefusal::AccessDenied.code(), "access_denied");
        assert_eq!(GrantRefusal::InvalidGrant("x").code(), "invalid_grant");
    }
}
