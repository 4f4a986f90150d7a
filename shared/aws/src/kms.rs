//! `SecretBox` on KMS, by envelope encryption: each seal asks KMS for a fresh
//! AES-256 data key, seals the secret locally with AES-256-GCM and keeps the
//! data key only as KMS encrypted it. KMS's own `Encrypt` would cap secrets
//! at 4 KiB; this has no such limit, and the key never leaves KMS.
//!
//! Sealed text: `kms1:` + base64(u16 BE length ‖ encrypted data key ‖ nonce ‖ ciphertext ‖ tag).
use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;
use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use capydb_domain::ports::SecretBox;
use capydb_domain::{DomainError, DomainResult};
use capydb_embedded::{aead_open, aead_seal};

const PREFIX: &str = "kms1:";
const OPEN_FAILED: &str = "sealed secret could not be opened";
/// Bound into every data key: a ciphertext made for another purpose under
/// the same KMS key does not open here.
const CONTEXT: (&str, &str) = ("purpose", "capydb-secret-box");

pub struct KmsSecretBox {
    client: crate::client::ClientCell<Client>,
    key_id: String,
}

impl KmsSecretBox {
    pub fn new(client: impl Into<crate::client::ClientCell<Client>>, key_id: impl Into<String>) -> Self {
        KmsSecretBox { client: client.into(), key_id: key_id.into() }
    }
}

fn kms_error<E, R>(what: &str, e: &SdkError<E, R>) -> DomainError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::error::sdk_error(&crate::error::KMS, what, e)
}

fn cipher(key: &[u8]) -> DomainResult<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key).map_err(|_| DomainError::internal("KMS returned a data key of the wrong size"))
}

#[async_trait]
impl SecretBox for KmsSecretBox {
    async fn seal(&self, plaintext: &str) -> DomainResult<String> {
        let out = self
            .client
            .get()
            .await?
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(|e| kms_error("seal a secret", &e))?;
        let (Some(key), Some(wrapped)) = (out.plaintext(), out.ciphertext_blob()) else {
            return Err(DomainError::internal("KMS returned no data key"));
        };
        let wrapped = wrapped.as_ref();
        let len = u16::try_from(wrapped.len()).map_err(|_| DomainError::internal("KMS data key too long"))?;
        let sealed = aead_seal(&cipher(key.as_ref())?, plaintext.as_bytes())?;
        let mut raw = Vec::with_capacity(2 + wrapped.len() + sealed.len());
        raw.extend_from_slice(&len.to_be_bytes());
        raw.extend_from_slice(wrapped);
        raw.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", BASE64.encode(raw)))
    }

    async fn open(&self, sealed: &str) -> DomainResult<String> {
        let failed = || DomainError::internal(OPEN_FAILED);
        let raw = sealed.strip_prefix(PREFIX).and_then(|b| BASE64.decode(b).ok()).ok_or_else(failed)?;
        let (len, rest) = raw.split_at_checked(2).ok_or_else(failed)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (wrapped, sealed) = rest.split_at_checked(len).ok_or_else(failed)?;
        let out = match self
            .client
            .get()
            .await?
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
        {
            Ok(out) => out,
            // A tampered or foreign data key: not a KMS outage.
            Err(e) if e.code().is_some_and(|c| c == "InvalidCiphertextException" || c == "IncorrectKeyException") => {
                return Err(failed())
            }
            Err(e) => return Err(kms_error("open a secret", &e)),
        };
        let key = out.plaintext().ok_or_else(failed)?;
        let plaintext = aead_open(&cipher(key.as_ref())?, sealed).ok_or_else(failed)?;
        String::from_utf8(plaintext).map_err(|_| failed())
    }
}
