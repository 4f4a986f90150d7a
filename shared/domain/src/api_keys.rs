//! API keys: minting (never above the minter's own scopes), listing, revoking.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::error::{DomainError, DomainResult};
use crate::fields::{ClientTime, ExpiresInDays, Name, NonEmpty};
use crate::model::{ApiKey, ProjectState, Timestamp};
use crate::ports::{Page, Store};
use crate::principal::Principal;
use crate::scopes::Scope;
use crate::{apikey, ids};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(inline)]
    pub name: Name<100>,
    /// At least one scope, each held by the calling credential.
    #[schema(inline)]
    pub scopes: NonEmpty<Scope>,
    /// Restrict the key to this project. Such a key may not carry
    /// `organizations:write`, `api_keys:read` or `api_keys:write`.
    pub project_id: Option<String>,
    /// An absolute expiry in the future; exclusive with `expires_in_days`.
    #[schema(inline)]
    pub expires_at: Option<ClientTime>,
    /// Expiry relative to now, in days; exclusive with `expires_at`.
    #[schema(inline)]
    pub expires_in_days: Option<ExpiresInDays>,
}

/// A request gives one of these at most: the check in `mint_api_key`, and
/// the schema's `not` (added to the document where it is built).
pub const EXCLUSIVE_EXPIRY: [&str; 2] = ["expires_at", "expires_in_days"];

/// `201` answer of key creation: the only time the plaintext is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub api_key: ApiKey,
    /// The key itself. Store it now: it cannot be shown again.
    pub plaintext: String,
}

impl App {
    pub async fn create_api_key(&self, p: &Principal, org_id: &str, req: CreateApiKey) -> DomainResult<CreatedApiKey> {
        p.require(Scope::ApiKeysWrite)?;
        p.check_org(org_id, "organization", org_id)?;
        p.require_org_wide()?;
        p.require_admin("create an API key")?;
        if let Some(s) = req.scopes.as_slice().iter().find(|s| !p.has(**s)) {
            return Err(DomainError::Forbidden(format!(
                "cannot grant the scope {s}: the calling credential does not hold it"
            )));
        }
        mint_api_key(self.store.as_ref(), self.now(), org_id, req, Some(p.creator_id())).await
    }

    pub async fn list_api_keys(&self, p: &Principal, org_id: &str, page: &Page) -> DomainResult<Vec<ApiKey>> {
        p.require(Scope::ApiKeysRead)?;
        p.check_org(org_id, "organization", org_id)?;
        p.require_org_wide()?;
        self.store.list_api_keys(org_id, page).await
    }

    pub async fn get_api_key(&self, p: &Principal, org_id: &str, key_id: &str) -> DomainResult<ApiKey> {
        p.require(Scope::ApiKeysRead)?;
        p.check_org(org_id, "organization", org_id)?;
        p.require_org_wide()?;
        self.store.get_api_key(org_id, key_id).await?.ok_or_else(|| DomainError::not_found("API key", key_id))
    }

    /// Revocation is immediate: the next request with that key is refused.
    pub async fn revoke_api_key(&self, p: &Principal, org_id: &str, key_id: &str) -> DomainResult<ApiKey> {
        p.require(Scope::ApiKeysWrite)?;
        p.check_org(org_id, "organization", org_id)?;
        p.require_org_wide()?;
        p.require_admin("revoke an API key")?;
        let key = self
            .store
            .revoke_api_key(org_id, key_id, self.now())
            .await?
            .ok_or_else(|| DomainError::not_found("API key", key_id))?;
        tracing::info!(key_id = %key.id, org_id, "API key revoked");
        Ok(key)
    }
}

/// Mints a key after checking the request, without a calling principal: the
/// shared core of `create_api_key` and of `capydb-local keys create`, which
/// whoever owns the data dir runs.
pub async fn mint_api_key(
    store: &dyn Store,
    now: Timestamp,
    org_id: &str,
    req: CreateApiKey,
    created_by: Option<String>,
) -> DomainResult<CreatedApiKey> {
    let name = req.name.into_inner();
    let mut scopes = req.scopes.into_inner();
    scopes.sort();
    scopes.dedup();
    if let Some(project_id) = &req.project_id {
        if let Some(s) = scopes.iter().find(|s| s.is_org_management()) {
            return Err(DomainError::invalid(format!(
                "a project-scoped key cannot carry the organization-management scope {s}"
            )));
        }
        let exists = store
            .get_project(project_id)
            .await?
            .is_some_and(|pr| pr.organization_id == org_id && pr.state != ProjectState::Deleted);
        if !exists {
            return Err(DomainError::NotFound(format!("project {project_id} not found in this organization")));
        }
    }
    let expires_at = match (req.expires_at.map(ClientTime::get), req.expires_in_days) {
        (Some(_), Some(_)) => {
            let [a, b] = EXCLUSIVE_EXPIRY;
            return Err(DomainError::invalid(format!("give {a} or {b}, not both")));
        }
        (Some(at), None) if at <= now => return Err(DomainError::invalid("expires_at must be in the future")),
        (Some(at), None) => Some(at),
        (None, Some(d)) => Some(now + chrono::Duration::days(i64::from(d.get()))),
        (None, None) => None,
    };
    let plaintext = apikey::generate(apikey::LIVE_PREFIX);
    let key = ApiKey {
        id: ids::new_id(ids::API_KEY),
        organization_id: org_id.to_string(),
        name,
        prefix: apikey::LIVE_PREFIX.into(),
        last4: apikey::last4(&plaintext),
        scopes,
        project_id: req.project_id,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        last_used_ip: None,
        created_at: now,
        created_by,
        hash: apikey::hash(&plaintext),
    };
    store.insert_api_key(&key, crate::scope::held().as_ref()).await?;
    tracing::info!(key_id = %key.id, org_id, "API key created");
    Ok(CreatedApiKey { api_key: key, plaintext })
}
