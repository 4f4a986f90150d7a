//! The few Secrets Manager calls the bootstrap function makes: create a
//! secret only if its name is free, read one, find one's ARN. Nothing else
//! in the bundle keeps a secret there (the secret box seals with KMS into
//! the table), so this module is linked into the bootstrap function alone.
use aws_sdk_secretsmanager::Client;
use capydb_domain::{DomainError, DomainResult};

use crate::client::ClientCell;
use crate::error::{sdk_error, SECRETS_MANAGER};

pub struct SecretsManager {
    client: ClientCell<Client>,
}

/// What `create` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The secret is new and holds the value; its ARN.
    New(String),
    /// A secret of that name exists; nothing was written.
    Exists,
}

/// A secret's value as stored. Its `Debug` does not show the value, so a
/// stray `{:?}` cannot log it.
pub struct Stored {
    pub arn: String,
    pub value: String,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("arn", &self.arn).field("value", &"(redacted)").finish()
    }
}

impl SecretsManager {
    pub fn new(client: impl Into<ClientCell<Client>>) -> Self {
        SecretsManager { client: client.into() }
    }

    /// Creates the secret `name` holding `value`, encrypted with `kms_key_id`
    /// (Secrets Manager's own key when `None`), unless the name is taken:
    /// `CreateSecret` never overwrites, which is what makes it a claim.
    pub async fn create(
        &self,
        name: &str,
        value: &str,
        kms_key_id: Option<&str>,
        description: &str,
    ) -> DomainResult<Created> {
        let out = self
            .client
            .get()
            .await?
            .create_secret()
            .name(name)
            .secret_string(value)
            .set_kms_key_id(kms_key_id.map(str::to_string))
            .description(description)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Created::New(arn(out.arn(), name)?)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => Ok(Created::Exists),
            // The one refusal an operator can act on: a deleted secret keeps
            // its name until its recovery window ends.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_invalid_request_exception()) => {
                Err(DomainError::Internal(format!(
                    "Secrets Manager refused to create the secret {name}: {}. If a secret of this name is \
                     scheduled for deletion, restore it (aws secretsmanager restore-secret --secret-id {name}) \
                     and run again",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )))
            }
            Err(e) => Err(sdk_error(&SECRETS_MANAGER, &format!("create the secret {name}"), &e)),
        }
    }

    /// The current value of the secret `name`, or `None` when there is no such secret.
    pub async fn read(&self, name: &str) -> DomainResult<Option<Stored>> {
        match self.client.get().await?.get_secret_value().secret_id(name).send().await {
            Ok(out) => {
                let value = out.secret_string().ok_or_else(|| {
                    DomainError::Internal(format!("the secret {name} holds binary data, not a string"))
                })?;
                Ok(Some(Stored { arn: arn(out.arn(), name)?, value: value.to_string() }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(sdk_error(&SECRETS_MANAGER, &format!("read the secret {name}"), &e)),
        }
    }

    /// The ARN of the secret `name`, or `None` when there is no such secret;
    /// reads no value.
    pub async fn arn_of(&self, name: &str) -> DomainResult<Option<String>> {
        match self.client.get().await?.describe_secret().secret_id(name).send().await {
            Ok(out) => arn(out.arn(), name).map(Some),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(sdk_error(&SECRETS_MANAGER, &format!("describe the secret {name}"), &e)),
        }
    }
}

fn arn(arn: Option<&str>, name: &str) -> DomainResult<String> {
    arn.map(str::to_string).ok_or_else(|| DomainError::Internal(format!("Secrets Manager answered no ARN for {name}")))
}
