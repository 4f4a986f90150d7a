//! Authentication: turning a presented credential into a `Principal`.
use std::time::Duration;

use crate::apikey;
use crate::app::{sub, App};
use crate::error::{DomainError, DomainResult};
use crate::principal::{Credential, Principal};

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
}
