//! The one place the functions' `App` is assembled from the AWS adapters,
//! and the role of each function: what it needs beyond what they all have.
use std::sync::Arc;

use capydb_aws::client::{ClientCell, SdkCell};
use capydb_aws::sdk::{dynamodb, eventbridge, kms, sqs};
use capydb_aws::{DynamoRateLimiter, DynamoStore, EventBridgeBus, KmsSecretBox, SqsQueue};
use capydb_domain::ports::{
    ArtifactStore, Clock, DatabaseEndpoint, DatabaseProbe, DatabaseProvider, DedicatedServers, Egress, EventBus,
    JobQueue, RateLimiter, SecretBox, ServerSnapshots, SessionVerifier, Store, SystemClock, WebhookSender,
};
use capydb_domain::{App, AppParts, Settings};

use crate::artifacts::LazyArtifacts;
use crate::config::{Config, Databases};
use crate::providers::{self, LazyProvider, LazyServers, LazySnapshots};

/// What a function needs beyond the adapters every function has. Chosen by
/// each function's entry point, so a binary links only what it uses: the
/// PostgreSQL provider (tokio-postgres, the clone and dump code) only where
/// databases are managed or pinged, the webhook HTTP client only where
/// webhooks are checked or sent. What a role lacks is `None` in its `App`,
/// not an adapter that fails every call.
pub struct Role {
    pub endpoint: Arc<dyn DatabaseEndpoint>,
    pub provider: Option<Arc<dyn DatabaseProvider>>,
    /// The Aurora clusters, in the worker of a deployment with
    /// `DatabaseProvider=aurora` (then there is no `provider`).
    pub servers: Option<Arc<dyn DedicatedServers>>,
    /// Their snapshots, in the sweeper of such a deployment.
    pub snapshots: Option<Arc<dyn ServerSnapshots>>,
    /// Asks the database server, without a credential, whether it takes
    /// connections: the health check of a function with no provider.
    pub probe: Option<Arc<dyn DatabaseProbe>>,
    pub webhook_sender: Option<Arc<dyn WebhookSender>>,
    /// The API functions verify browser sessions; the others answer no caller.
    pub sessions: Option<Arc<dyn SessionVerifier>>,
}

impl Role {
    /// What every role starts from: connection strings, and nothing else
    /// (no database managed or asked, no webhook sent, no caller).
    fn base(config: &Config) -> Result<Role, String> {
        Ok(Role {
            endpoint: Arc::new(providers::endpoint(config)?),
            provider: None,
            servers: None,
            snapshots: None,
            probe: None,
            webhook_sender: None,
            sessions: None,
        })
    }

    /// Answers connection strings; manages no database, sends no webhook.
    pub fn api(config: &Config) -> Result<Role, String> {
        Ok(Role { sessions: sessions(config)?, ..Self::base(config)? })
    }

    /// Checks and sends webhooks through the egress guard.
    pub fn webhooks(config: &Config) -> Result<Role, String> {
        let sender = capydb_egress::HttpWebhookSender::new(config.egress())?;
        Ok(Role { webhook_sender: Some(Arc::new(sender)), ..Self::api(config)? })
    }

    /// Runs job steps against the PostgreSQL server (`worker`). A deployment
    /// chooses its provider when it is deployed, and each provider has a
    /// worker binary of its own, so neither carries the other's code.
    pub fn server_worker(config: &Config, sdk: &Arc<SdkCell>) -> Result<Role, String> {
        match &config.databases {
            Databases::Server { .. } => {
                Ok(Role { provider: Some(Arc::new(LazyProvider::of(config, sdk)?)), ..Self::base(config)? })
            }
            Databases::Aurora(_) => Err("this is the postgres-server worker (`worker`), and \
                                         CAPYDB_DATABASE_PROVIDER is aurora: with aurora the template \
                                         deploys `worker-aurora`"
                .into()),
        }
    }

    /// Runs job steps against the Aurora clusters (`worker-aurora`).
    pub fn aurora_worker(config: &Config, sdk: &Arc<SdkCell>) -> Result<Role, String> {
        match &config.databases {
            Databases::Aurora(_) => {
                let servers = LazyServers::of(config, sdk, Arc::new(capydb_aurora::SystemResolver))?;
                Ok(Role { servers: Some(Arc::new(servers)), ..Self::base(config)? })
            }
            Databases::Server { .. } => Err("this is the aurora worker (`worker-aurora`), and \
                                             CAPYDB_DATABASE_PROVIDER is postgres-server: with it the \
                                             template deploys `worker`"
                .into()),
        }
    }

    /// The sweeper: an API function's parts, and with Aurora the clusters'
    /// snapshots (it deletes those no longer kept; it makes no cluster).
    pub fn sweeper(config: &Config, sdk: &Arc<SdkCell>) -> Result<Role, String> {
        let role = Self::api(config)?;
        Ok(match &config.databases {
            Databases::Server { .. } => role,
            Databases::Aurora(_) => Role { snapshots: Some(Arc::new(LazySnapshots::of(config, sdk)?)), ..role },
        })
    }

    /// An API function that also reaches the PostgreSQL server: the backups
    /// function (in the VPC for its file system), which serves `/v1/health`.
    /// It asks the server without logging in (`WireProbe`), so it holds no
    /// admin password, and links neither the provider nor an SSM client.
    pub fn api_with_database(config: &Config) -> Result<Role, String> {
        match &config.databases {
            Databases::Server { .. } => {
                let endpoint = providers::endpoint(config)?;
                Ok(Role { probe: Some(Arc::new(endpoint.probe())), ..Self::api(config)? })
            }
            // No shared server to ask (health answers `not_applicable`).
            Databases::Aurora(_) => Self::api(config),
        }
    }
}

/// The session verifier `CAPYDB_CLERK_*` configure; none when neither a key
/// nor a JWKS URL is set (session tokens are then `401`, saying so).
fn sessions(config: &Config) -> Result<Option<Arc<dyn SessionVerifier>>, String> {
    if !config.clerk.is_enabled() {
        return Ok(None);
    }
    Ok(Some(Arc::new(capydb_clerk::ClerkVerifier::new(&config.clerk, config.egress())?)))
}

/// The settings of every function, from its configuration.
pub fn settings(config: &Config) -> Settings {
    Settings {
        jobs: capydb_domain::JobSettings { max_attempts: config.job_max_attempts, ..Default::default() },
        rate_limit: capydb_domain::RateLimitSettings {
            limit: config.rate_limit_per_minute,
            window: std::time::Duration::from_secs(60),
        },
        quotas: config.quotas,
        cli_login: capydb_domain::CliLoginSettings {
            rate_limit: capydb_domain::RateLimitSettings {
                limit: config.cli_login_rate_limit_per_minute,
                window: std::time::Duration::from_secs(60),
            },
            verification_uri: config.cli_verification_url.clone(),
        },
        hosting: config.databases.hosting(),
        final_snapshot_retention: std::time::Duration::from_secs(
            u64::from(config.final_snapshot_retention_days) * 24 * 3600,
        ),
        ..Default::default()
    }
}

/// The application on the AWS adapters. No network call is made here, and
/// no SDK client is made: each is made on first use from `sdk`.
pub fn app(config: &Config, sdk: &Arc<SdkCell>, role: Role) -> App {
    let dynamodb = ClientCell::lazy(sdk, dynamodb::Client::new);
    let sqs = ClientCell::lazy(sdk, sqs::Client::new);
    let store = Arc::new(DynamoStore::new(dynamodb.clone(), &config.table));
    App::new(AppParts {
        store: store.clone() as Arc<dyn Store>,
        logins: store as Arc<dyn capydb_domain::ports::LoginStore>,
        queue: Arc::new(SqsQueue::new(sqs.clone(), &config.jobs_queue_url, config.jobs_dead_letter_url.clone()))
            as Arc<dyn JobQueue>,
        webhook_queue: Arc::new(SqsQueue::new(sqs, &config.webhook_queue_url, config.webhook_dead_letter_url.clone()))
            as Arc<dyn JobQueue>,
        bus: Arc::new(EventBridgeBus::new(ClientCell::lazy(sdk, eventbridge::Client::new), &config.event_bus))
            as Arc<dyn EventBus>,
        webhook_sender: role.webhook_sender,
        // Every function that creates webhooks or imports checks them with
        // the same policy the worker and the webhook sender connect under.
        egress: Arc::new(config.egress()) as Arc<dyn Egress>,
        endpoint: role.endpoint,
        provider: role.provider,
        servers: role.servers,
        snapshots: role.snapshots,
        probe: role.probe,
        secrets: Arc::new(KmsSecretBox::new(ClientCell::lazy(sdk, kms::Client::new), &config.kms_key_id))
            as Arc<dyn SecretBox>,
        artifacts: Arc::new(LazyArtifacts::new(config.artifact_dir.clone())) as Arc<dyn ArtifactStore>,
        rate_limiter: Arc::new(DynamoRateLimiter::new(dynamodb, &config.table)) as Arc<dyn RateLimiter>,
        sessions: role.sessions,
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        settings: settings(config),
    })
}
