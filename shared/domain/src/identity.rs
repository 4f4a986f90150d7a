//! Authentication: turning a presented credential into a `Principal`.
use std::time::Duration;

use crate::apikey;
use crate::app::{sub, App};
use crate::error::{DomainError, DomainResult};
use crate::model::Organization;
use crate::ports::SessionClaims;
use crate::principal::{Credential, Principal, Session};
use crate::scopes::Scope;

/// `last_used_at` / `last_used_ip` are written at most this often per key, so
/// a busy key does not turn every read into a write.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

impl App {
    /// Authenticates an API key. The format and checksum are checked before
    /// any store read, so garbage costs nothing.
    /// `client_ip` is written as text only when the key's use is recorded.
    /// The span is at debug level: at info it would cost every request a
    /// span of its own, and the request's span already names the request.
    #[tracing::instrument(level = "debug", name = "authenticate", skip_all)]
    pub async fn authenticate_api_key(
        &self,
        presented: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> DomainResult<Principal> {
        if !apikey::is_well_formed(apikey::LIVE_PREFIX, presented) {
            return Err(DomainError::Unauthenticated("malformed API key".into()));
        }
        let hash = apikey::hash(presented);
        let key = self
            .store
            .get_api_key_by_hash(&hash)
            .await?
            .ok_or_else(|| DomainError::Unauthenticated("unknown API key".into()))?;
        let now = self.now();
        if key.revoked_at.is_some() {
            return Err(DomainError::Unauthenticated("this API key has been revoked".into()));
        }
        if key.expires_at.is_some_and(|exp| exp <= now) {
            return Err(DomainError::Unauthenticated("this API key has expired".into()));
        }
        let organization = self
            .store
            .get_organization(&key.organization_id)
            .await?
            .ok_or_else(|| DomainError::Unauthenticated("unknown API key".into()))?;
        if key.last_used_at.is_none_or(|t| t <= sub(now, TOUCH_INTERVAL)) {
            let client_ip = client_ip.map(|ip| ip.to_string());
            if let Err(e) = self.store.touch_api_key(&key.id, now, client_ip.as_deref()).await {
                // Bookkeeping must not fail the request it describes.
                tracing::warn!(key_id = %key.id, error = %e, "could not record API key use");
            }
        }
        Ok(Principal {
            scopes: key.scopes.clone(),
            project_id: key.project_id.clone(),
            organization,
            credential: Credential::ApiKey(key),
        })
    }

    /// Authenticates a browser session's token (a Clerk session JWT): its
    /// active organization becomes the caller's, made on the first session
    /// seen for that Clerk organization. A session holds every scope in its
    /// organization; the admin role gates what `require_admin` names.
    #[tracing::instrument(level = "debug", name = "authenticate_session", skip_all)]
    pub async fn authenticate_session(&self, token: &str) -> DomainResult<SessionCaller> {
        let Some(verifier) = &self.sessions else {
            return Err(DomainError::Unauthenticated(
                "session tokens are not accepted here: this server has no Clerk configuration \
                 (CAPYDB_CLERK_JWT_KEY or CAPYDB_CLERK_JWKS_URL); use an API key"
                    .into(),
            ));
        };
        let claims = verifier.verify(token, self.now()).await?;
        self.session_principal(claims).await
    }

    /// The caller a verified session is.
    pub async fn session_principal(&self, claims: SessionClaims) -> DomainResult<SessionCaller> {
        let Some(org) = claims.org else {
            return Ok(SessionCaller::NoOrganization { user_id: claims.user_id });
        };
        let organization = match self.store.get_clerk_organization(&org.clerk_org_id).await? {
            Some(o) => o,
            None => {
                let now = self.now();
                let name = org.slug.clone().unwrap_or_else(|| org.clerk_org_id.clone());
                let fresh =
                    Organization { id: crate::ids::new_id(crate::ids::ORG), name, created_at: now, updated_at: now };
                let linked = self.store.link_clerk_organization(&org.clerk_org_id, &fresh).await?;
                if linked.id == fresh.id {
                    tracing::info!(organization_id = %linked.id, "organization made for a Clerk organization's first session");
                }
                linked
            }
        };
        Ok(SessionCaller::Principal(Principal {
            credential: Credential::Session(Session {
                user_id: claims.user_id,
                session_id: claims.session_id,
                clerk_org_id: org.clerk_org_id,
                role: org.role,
                cli_session_id: None,
            }),
            organization,
            scopes: Scope::ALL.to_vec(),
            project_id: None,
        }))
    }
}

/// Who a valid session is.
#[allow(clippy::large_enum_variant)] // made once per request and moved into the handler; boxing buys nothing
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCaller {
    /// In its active organization.
    Principal(Principal),
    /// Signed in, with no active organization: `GET /v1/me` answers, every
    /// organization resource is `403`.
    NoOrganization { user_id: String },
}
