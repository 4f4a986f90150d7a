//! `Idempotency-Key` on POST requests: the same key from the same
//! credential within a day answers the first answer again. The rules live
//! here; the HTTP layer (`capydb_api::idempotency`) reads the request and
//! writes the response, and the store keeps one record per key
//! (`Store::begin_idempotent` and friends).
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::{DomainError, DomainResult};
use crate::ports::{IdempotencyBegin, IdempotencyClaim, StoredAnswer};

/// How long a key and its first answer are kept.
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long a request holds a key without answering before another request
/// with it may run instead: a POST answers in milliseconds (the slow work is
/// a job), so only a request that died holds a key this long.
pub const LEASE: Duration = Duration::from_secs(30);
/// The draft standard leaves the length open; 255 is what peers accept.
pub const MAX_KEY_LEN: usize = 255;

/// Why a presented key is refused (`400`), if it is.
pub fn invalid_key(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("the Idempotency-Key header is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Some(format!("the Idempotency-Key header is {} characters; at most {MAX_KEY_LEN}", key.len()));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("the Idempotency-Key header may only hold visible ASCII characters".into());
    }
    None
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so no two different lists hash alike.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The record's key: the credential and the caller's key, hashed (one
/// caller's keys never meet another's).
pub fn record_key(credential: &str, key: &str) -> String {
    sha256_hex(&[credential.as_bytes(), key.as_bytes()])
}

/// What makes two requests "the same": method, path with query, and body.
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> String {
    sha256_hex(&[method.as_bytes(), path_and_query.as_bytes(), body])
}

/// A claim on a key, held by one request.
pub type Held = crate::ports::HeldKey;

pub use crate::scope::holding;

pub enum Begun {
    /// Run the request (inside [`holding`]), then `finish` with its answer.
    Run(Held),
    /// The earlier holder died after making this (a job, an API key, a
    /// webhook endpoint): answer from it (`recover_idempotent_request`),
    /// running nothing.
    Recover(Held, String),
    InFlight,
    Mismatch,
    Replay(StoredAnswer),
}

impl App {
    /// Claims `key` of `credential` for a request with `fingerprint`.
    pub async fn begin_idempotent_request(
        &self,
        credential: &str,
        key: &str,
        fingerprint: String,
    ) -> DomainResult<Begun> {
        let now = self.now();
        let claim = IdempotencyClaim {
            key: record_key(credential, key),
            fingerprint,
            now,
            lease_until: now + chrono::Duration::from_std(LEASE).unwrap_or_default(),
            expires_at: now + chrono::Duration::from_std(KEEP_FOR).unwrap_or_default(),
        };
        Ok(match self.store.begin_idempotent(&claim).await? {
            IdempotencyBegin::Started { taken_over } => {
                if taken_over {
                    tracing::warn!(
                        "an Idempotency-Key's earlier request ended without an answer and started no job; running it again"
                    );
                }
                Begun::Run(Held { key: claim.key, lease_until: claim.lease_until })
            }
            IdempotencyBegin::Recovered { made } => {
                tracing::warn!(%made, "an Idempotency-Key's earlier request made something and ended without an answer; answering from it");
                Begun::Recover(Held { key: claim.key, lease_until: claim.lease_until }, made)
            }
            IdempotencyBegin::InFlight => Begun::InFlight,
            IdempotencyBegin::Mismatch => Begun::Mismatch,
            IdempotencyBegin::Replay(a) => Begun::Replay(StoredAnswer { body: self.open_answer(&a.body).await?, ..a }),
        })
    }

    /// Stores the answer of a held key, or, for an answer a retry should
    /// not get again (a 5xx: the request may not have run), gives the key up.
    pub async fn finish_idempotent_request(&self, held: &Held, answer: StoredAnswer) -> DomainResult<()> {
        if answer.status >= 500 {
            return self.release_idempotent_request(held).await;
        }
        // Answers can hold what is shown once (an API key's plaintext, a
        // webhook secret): kept sealed, like every other secret at rest.
        let answer = StoredAnswer { body: self.seal_answer(&answer.body).await?, ..answer };
        if !self.store.complete_idempotent(&held.key, held.lease_until, &answer).await? {
            tracing::warn!("an Idempotency-Key's answer came after its lease ran out; a retry may have run it again");
        }
        Ok(())
    }
}

impl App {
    /// The answer to a request of `p` whose earlier attempt made `made` (a
    /// job, an API key, a webhook endpoint) and died before answering, as it
    /// is now, stored as the key's answer: a job's `202` with its resources;
    /// a webhook endpoint's `201` with its signing secret; for an API key,
    /// whose plaintext was shown nowhere and is kept nowhere, a `409` naming
    /// the key to revoke.
    pub async fn recover_idempotent_request(
        &self,
        held: &Held,
        p: &crate::principal::Principal,
        made: &str,
    ) -> DomainResult<StoredAnswer> {
        let json = |status: u16, body: serde_json::Result<Vec<u8>>| -> DomainResult<StoredAnswer> {
            Ok(StoredAnswer {
                status,
                content_type: Some("application/json".into()),
                location: None,
                body: body.map_err(DomainError::internal)?,
            })
        };
        let answer = if made.starts_with(crate::ids::API_KEY) {
            let error = format!(
                "the first request with this Idempotency-Key created API key {made}, but it ended before answering, \
                 and the key's plaintext was in that answer only: revoke {made} and create another key with a new \
                 Idempotency-Key"
            );
            json(409, serde_json::to_vec(&serde_json::json!({ "error": error })))?
        } else if made.starts_with(crate::ids::WEBHOOK) {
            let webhook = self.store.get_webhook(p.org_id(), made).await?.ok_or_else(|| {
                DomainError::internal(format!("the webhook endpoint {made} of an idempotent request is gone"))
            })?;
            let secret = self.secrets.open(&webhook.secret_sealed).await?;
            json(201, serde_json::to_vec(&crate::webhooks::WebhookWithSecret { webhook, secret }))?
        } else {
            self.answer_of_job(made).await?
        };
        self.finish_idempotent_request(held, answer.clone()).await?;
        Ok(answer)
    }

    /// The `202` body a lifecycle POST answers for `job_id`.
    async fn answer_of_job(&self, job_id: &str) -> DomainResult<StoredAnswer> {
        use crate::model::{JobSpec, RestoreInto};
        let gone =
            |what: &str, id: &str| DomainError::internal(format!("the {what} {id} of an idempotent job is gone"));
        let job = self.store.get_job(job_id).await?.ok_or_else(|| gone("job", job_id))?;
        let project =
            |id: String| async move { self.store.get_project(&id).await?.ok_or_else(|| gone("project", &id)) };
        let preview =
            |id: String| async move { self.store.get_preview(&id).await?.ok_or_else(|| gone("preview", &id)) };
        let json = |v: serde_json::Result<Vec<u8>>| v.map_err(DomainError::internal);
        let body = match job.spec.clone() {
            JobSpec::Provision | JobSpec::RotateCredentials { .. } | JobSpec::DeleteProject { .. } => {
                let project = project(job.resource.id.clone()).await?;
                json(serde_json::to_vec(&crate::projects::ProjectJob { project, job }))?
            }
            JobSpec::CreatePreview { preview: id }
            | JobSpec::ResetPreview { preview: id }
            | JobSpec::DeletePreview { preview: id } => {
                let preview = preview(id.to_string()).await?;
                json(serde_json::to_vec(&crate::previews::PreviewJob { preview, job }))?
            }
            JobSpec::CreateBackup { backup: id } => {
                let backup = self.store.get_backup(id.as_str()).await?.ok_or_else(|| gone("backup", id.as_str()))?;
                json(serde_json::to_vec(&crate::backups::BackupJob { backup, job }))?
            }
            JobSpec::Restore { restore: id, into, .. } => {
                let restore = self.store.get_restore(id.as_str()).await?.ok_or_else(|| gone("restore", id.as_str()))?;
                let preview = match into {
                    RestoreInto::Preview(p) => Some(preview(p.to_string()).await?),
                    RestoreInto::Project { .. } => None,
                };
                json(serde_json::to_vec(&crate::backups::RestoreJob { restore, job, preview }))?
            }
            JobSpec::Import { import: id, .. } => {
                let import = self.store.get_import(id.as_str()).await?.ok_or_else(|| gone("import", id.as_str()))?;
                json(serde_json::to_vec(&crate::backups::ImportJob { import, job }))?
            }
        };
        Ok(StoredAnswer { status: 202, content_type: Some("application/json".into()), location: None, body })
    }

    /// Gives a held key up without an answer: a retry runs the request again.
    pub async fn release_idempotent_request(&self, held: &Held) -> DomainResult<()> {
        self.store.release_idempotent(&held.key, held.lease_until).await
    }

    async fn seal_answer(&self, body: &[u8]) -> DomainResult<Vec<u8>> {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(body);
        Ok(self.secrets.seal(&text).await?.into_bytes())
    }

    async fn open_answer(&self, sealed: &[u8]) -> DomainResult<Vec<u8>> {
        use base64::Engine;
        let sealed =
            std::str::from_utf8(sealed).map_err(|_| DomainError::internal("a stored answer is not sealed text"))?;
        let text = self.secrets.open(sealed).await?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| DomainError::internal("a stored answer does not decode"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(invalid_key("").is_some());
        assert!(invalid_key(&"k".repeat(256)).is_some());
        assert!(invalid_key(&"k".repeat(255)).is_none());
        assert!(invalid_key("with space").is_some());
        assert!(invalid_key("ünï").is_some());
        assert!(invalid_key("ci-run-4412:create-preview").is_none());
    }

    #[test]
    fn hashes_separate_their_parts() {
        assert_ne!(record_key("ab", "c"), record_key("a", "bc"));
        assert_ne!(fingerprint("POST", "/v1/a", b"{}"), fingerprint("POST", "/v1/a", b"{} "));
        assert_eq!(fingerprint("POST", "/v1/a", b"{}"), fingerprint("POST", "/v1/a", b"{}"));
        assert_eq!(record_key("api_key:key_1", "k").len(), 64);
    }
}
