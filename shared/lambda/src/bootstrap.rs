//! The deployed shape's first organization and admin API key, made by the
//! `bootstrap` function when an operator invokes it by hand after
//! `sam deploy` (`capydb-local` does the same at its first start, see
//! `App::bootstrap`). The key's plaintext goes to one place only, a Secrets
//! Manager secret of the stack; the answer names the organization and the
//! secret, never the key.
//!
//! The order of the writes is what makes a crash, a timeout or a second
//! concurrent run harmless:
//!
//! 1. If an organization exists, refuse and write nothing. (DynamoDB's
//!    `META`/`BOOTSTRAP` marker is written in the organization's own
//!    transaction, so it exists exactly when the organization does.)
//! 2. Claim the secret's name with `CreateSecret`, holding a fresh key.
//!    `CreateSecret` never overwrites. If the name is taken while no
//!    organization exists, an earlier run stopped between this step and
//!    the next (crash, timeout, DynamoDB failure), or another run is
//!    between them right now. Either way the key already stored is the one
//!    to use, so it is read back and used, and never replaced.
//!    `PutSecretValue` would lose a key in the concurrent case: run A stores
//!    K_A, run B overwrites it with K_B, A commits its organization with
//!    K_A, and K_A is gone.
//! 3. Create the organization, its key and the marker in one DynamoDB
//!    transaction (`capydb_domain::organizations::create_organization`, the
//!    same as `capydb-local`'s). The key-hash item is written only if absent,
//!    so two runs holding the same key from step 2 cannot both commit. The
//!    loser's transaction writes nothing, and it answers with the refusal.
//!
//! Stopping after step 2 leaves a secret whose key authenticates nothing
//! yet, and the next run finishes with it. Stopping after step 3 leaves a
//! complete bootstrap. No sequence leaves an organization whose key is not
//! in the secret.
use capydb_domain::organizations::{create_organization, parse_organization_name};
use capydb_domain::ports::{Clock, Store, SystemClock};
use capydb_domain::{apikey, DomainError};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use capydb_aws::client::{ClientCell, SdkCell};
use capydb_aws::sdk::{dynamodb, secretsmanager};
use capydb_aws::secretsmanager::{Created, SecretsManager};
use capydb_aws::DynamoStore;
use lambda_runtime::{service_fn, LambdaEvent};

use crate::config::BootstrapConfig;
use crate::{init_tracing, sdk_config, Error};

const SECRET_DESCRIPTION: &str =
    "CapyDB: admin API key of the first organization, written once by the bootstrap function";

/// The event: `{"organization_name": "Acme"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    organization_name: String,
}

/// The answer of a run that created the organization. The key itself is in
/// the secret, and nowhere else.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Bootstrapped {
    pub organization_id: String,
    pub api_key_secret_arn: String,
}

/// Why a run created no organization. The invocation fails with the
/// variant's name as its `errorType` and the message as its `errorMessage`.
/// The operator who invokes the function sees every message in full.
/// They can read the stack's logs anyway, and a failed one-off command
/// should say why without sending them to CloudWatch.
#[derive(Debug)]
pub enum BootstrapError {
    /// The event is not `{"organization_name": "..."}` with a valid name.
    /// Nothing was written.
    InvalidRequest(String),
    /// An organization exists. Nothing was written; the message says where
    /// its key is.
    AlreadyBootstrapped { organization_id: String, message: String },
    /// No organization exists, but the secret's name is taken by a value that
    /// is not an API key. Nothing was written: the operator decides what that
    /// secret is.
    SecretInTheWay(String),
    /// AWS failed or refused. Running again is safe: it finishes with the key
    /// already in the secret, or names the organization if it was created.
    Failed(DomainError),
}

impl std::fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapError::InvalidRequest(m) | BootstrapError::SecretInTheWay(m) => f.write_str(m),
            BootstrapError::AlreadyBootstrapped { message, .. } => f.write_str(message),
            // The organization may exist even so (a commit whose answer was
            // lost); a new run either finishes with the key already in the
            // secret or names the organization.
            BootstrapError::Failed(e) => write!(f, "{e}; run again"),
        }
    }
}

impl std::error::Error for BootstrapError {}

impl From<DomainError> for BootstrapError {
    fn from(e: DomainError) -> Self {
        BootstrapError::Failed(e)
    }
}

impl From<BootstrapError> for lambda_runtime::Diagnostic {
    fn from(e: BootstrapError) -> Self {
        let error_type = match &e {
            BootstrapError::InvalidRequest(_) => "InvalidRequest",
            BootstrapError::AlreadyBootstrapped { .. } => "AlreadyBootstrapped",
            BootstrapError::SecretInTheWay(_) => "SecretInTheWay",
            BootstrapError::Failed(DomainError::Unavailable(_)) => "Unavailable",
            BootstrapError::Failed(_) => "Failed",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}

/// The operation, on the stack's table and secret.
pub struct Bootstrap {
    store: DynamoStore,
    secrets: SecretsManager,
    secret_name: String,
    /// The stack's KMS key, which encrypts the secret (Secrets Manager's own
    /// key when `None`).
    kms_key_id: Option<String>,
}

impl Bootstrap {
    pub fn new(
        store: DynamoStore,
        secrets: SecretsManager,
        secret_name: impl Into<String>,
        kms_key_id: Option<String>,
    ) -> Self {
        Bootstrap { store, secrets, secret_name: secret_name.into(), kms_key_id }
    }

    /// One invocation: `event` is the payload as the function receives it.
    pub async fn handle(&self, event: serde_json::Value) -> Result<Bootstrapped, BootstrapError> {
        let request: Request = serde_json::from_value(event).map_err(|e| {
            BootstrapError::InvalidRequest(format!("the event must be {{\"organization_name\": \"...\"}}: {e}"))
        })?;
        // Checked before anything is written, so an invalid name leaves no secret behind.
        let name = parse_organization_name("organization_name", &request.organization_name)
            .map_err(|e| BootstrapError::InvalidRequest(e.to_string()))?;

        // Step 1 (see the module's comment for the order and why).
        if let Some(org_id) = self.store.bootstrapped_organization_id().await? {
            return Err(self.refusal(org_id).await);
        }

        // Step 2.
        let fresh = apikey::generate(apikey::LIVE_PREFIX);
        let kms = self.kms_key_id.as_deref();
        let (secret_arn, key) = match self.secrets.create(&self.secret_name, &fresh, kms, SECRET_DESCRIPTION).await? {
            Created::New(arn) => (arn, fresh),
            Created::Exists => {
                let stored = self.secrets.read(&self.secret_name).await?.ok_or_else(|| {
                    DomainError::Unavailable(format!(
                        "the secret {} existed a moment ago and is gone now",
                        self.secret_name
                    ))
                })?;
                if !apikey::is_well_formed(apikey::LIVE_PREFIX, &stored.value) {
                    return Err(BootstrapError::SecretInTheWay(format!(
                        "no organization exists, but the secret {} holds something other than a CapyDB API key; \
                         nothing was created. Check what it is, delete it if it is not needed \
                         (aws secretsmanager delete-secret --secret-id {} --force-delete-without-recovery), \
                         and run again",
                        stored.arn, self.secret_name
                    )));
                }
                tracing::info!(
                    secret_arn = %stored.arn,
                    "the secret already holds a key (of an unfinished or a concurrent run); using it"
                );
                (stored.arn, stored.value)
            }
        };

        // Step 3.
        match create_organization(&self.store, SystemClock.now(), &name, Some(&key)).await {
            Ok((org, _)) => {
                tracing::info!(org_id = %org.id, %secret_arn, "bootstrapped the first organization and its admin API key");
                Ok(Bootstrapped { organization_id: org.id, api_key_secret_arn: secret_arn })
            }
            // Another run committed the same key first (step 3): it bootstrapped.
            Err(DomainError::Conflict(why)) => match self.store.bootstrapped_organization_id().await? {
                Some(org_id) => Err(self.refusal(org_id).await),
                None => Err(BootstrapError::Failed(DomainError::Conflict(why))),
            },
            Err(e) => Err(BootstrapError::Failed(e)),
        }
    }

    /// The refusal when `org_id` exists: which organization, and where its
    /// key is. A lookup that fails only makes the message less precise.
    async fn refusal(&self, org_id: String) -> BootstrapError {
        let org = match self.store.get_organization(&org_id).await {
            Ok(Some(org)) => format!("organization {org_id} ({:?})", org.name),
            _ => format!("organization {org_id}"),
        };
        let secret = &self.secret_name;
        let key = match self.secrets.arn_of(secret).await {
            Ok(Some(arn)) => format!(
                "Its admin API key is in the secret {arn} \
                 (aws secretsmanager get-secret-value --secret-id {secret} --query SecretString --output text)"
            ),
            Ok(None) => format!(
                "The secret {secret} that held its admin API key no longer exists, so the key cannot be shown \
                 again; use another key of the organization to make a new one"
            ),
            Err(e) => format!("Its admin API key was stored in the secret {secret} (which could not be checked: {e})"),
        };
        BootstrapError::AlreadyBootstrapped {
            message: format!("already bootstrapped: {org} exists, and nothing was created. {key}."),
            organization_id: org_id,
        }
    }
}

/// `main` of `bootstrap`: invoked by hand once after `sam deploy` with
/// `{"organization_name": "..."}` (see `crate::bootstrap`).
pub async fn run_bootstrap() -> Result<(), Error> {
    init_tracing();
    let config = BootstrapConfig::from_env()?;
    let sdk = SdkCell::lazy(|| async { sdk_config().await.map_err(|e| e.to_string()) });
    let bootstrap = Arc::new(Bootstrap::new(
        DynamoStore::new(ClientCell::lazy(&sdk, dynamodb::Client::new), config.table),
        SecretsManager::new(ClientCell::lazy(&sdk, secretsmanager::Client::new)),
        config.secret_name,
        config.kms_key_id,
    ));
    lambda_runtime::run(service_fn(move |e: LambdaEvent<serde_json::Value>| {
        let bootstrap = Arc::clone(&bootstrap);
        async move { bootstrap.handle(e.payload).await }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_own_error_type_and_a_failure_says_to_run_again() {
        let diag = |e: BootstrapError| lambda_runtime::Diagnostic::from(e);
        let d = diag(BootstrapError::AlreadyBootstrapped { organization_id: "org_1".into(), message: "m".into() });
        assert_eq!((d.error_type.as_str(), d.error_message.as_str()), ("AlreadyBootstrapped", "m"));
        assert_eq!(diag(BootstrapError::InvalidRequest("bad".into())).error_type, "InvalidRequest");
        assert_eq!(diag(BootstrapError::SecretInTheWay("x".into())).error_type, "SecretInTheWay");
        let d = diag(BootstrapError::Failed(DomainError::Unavailable("DynamoDB is down".into())));
        assert_eq!(d.error_type, "Unavailable");
        assert!(d.error_message.starts_with("DynamoDB is down;") && d.error_message.ends_with("run again"), "{d:?}");
        assert_eq!(diag(BootstrapError::Failed(DomainError::Internal("x".into()))).error_type, "Failed");
    }
}
