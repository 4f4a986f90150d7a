//! What every function of the serverless bundle shares: configuration from
//! the environment, the `App` on the AWS adapters, the HTTP entry point for
//! a route group, and the SQS batch handler with partial failures.
//!
//! Start-up makes no network call (cold starts stay close to a bare
//! `lambda_runtime` binary's): SDK clients connect on first use, and the
//! PostgreSQL admin connection, with its password from SSM, is opened by the
//! first job step that needs it.
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use capydb_domain::app::QuotaSettings;
use capydb_domain::jobs::Disposition;
use capydb_domain::model::ConnectionInfo;
use capydb_domain::ports::{
    ArtifactInfo, ArtifactStore, Clock, CloneStrategy, DatabaseProvider, Egress, EventBus, JobQueue, ProviderError,
    ProviderResult, SecretBox, Store, SystemClock, WebhookSender,
};
use capydb_domain::{App, AppParts, DomainError, DomainResult, Settings};
use capydb_egress::EgressPolicy;
use capydb_embedded::FileArtifactStore;
use capydb_postgres::{ClientEndpoint, PgProvider};
use tokio::sync::OnceCell;

use crate::client::{ClientCell, SdkCell};
use crate::{DynamoStore, EventBridgeBus, KmsSecretBox, SqsQueue};

/// The functions' configuration, from the environment `infra/template.yaml` sets.
#[derive(Debug, Clone)]
pub struct Config {
    pub table: String,
    pub jobs_queue_url: String,
    pub jobs_dead_letter_url: Option<String>,
    pub webhook_queue_url: String,
    pub webhook_dead_letter_url: Option<String>,
    pub event_bus: String,
    pub kms_key_id: String,
    /// `postgres://user@host:port/db`, without the password.
    pub pg_admin_url: String,
    /// SSM SecureString parameter holding the admin password.
    pub pg_admin_password_param: Option<String>,
    pub pg_version: String,
    pub artifact_dir: PathBuf,
    /// Receives of a job message before SQS moves it to the dead-letter
    /// queue (the redrive policy's maxReceiveCount).
    pub jobs_max_receives: u32,
    /// Outbound connections a caller aims (webhooks, imports) to private
    /// addresses: never when deployed (`from_env` always denies); the
    /// Lambda-shape tests set it to deliver to a receiver on 127.0.0.1.
    pub allow_private_egress: bool,
    pub region: String,
    /// Runs of a job before a retryable step error fails it.
    pub job_max_attempts: u32,
    /// Requests per minute from one client address; 0 is no limit.
    pub rate_limit_per_minute: u32,
    /// Per-organization and per-project limits (`CAPYDB_MAX_*`).
    pub quotas: QuotaSettings,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| format!("{name} is not set"))
}

fn opt_var(name: &str) -> Option<String> {
    var(name).ok()
}

/// The limits from `CAPYDB_MAX_*` (read through `vars`), each its default
/// when unset. A value that does not parse stops the start-up: a typo must
/// not lift a limit unnoticed.
fn quotas_from(vars: impl Fn(&str) -> Option<String>) -> Result<QuotaSettings, String> {
    let number = |name: &str, default: u32| match vars(name).filter(|v| !v.trim().is_empty()) {
        Some(v) => v.trim().parse().map_err(|_| format!("{name} must be a whole number, not {v:?}")),
        None => Ok(default),
    };
    let d = QuotaSettings::default();
    Ok(QuotaSettings {
        projects: number("CAPYDB_MAX_PROJECTS", d.projects)?,
        previews_per_project: number("CAPYDB_MAX_PREVIEWS_PER_PROJECT", d.previews_per_project)?,
        backups_per_project: number("CAPYDB_MAX_BACKUPS_PER_PROJECT", d.backups_per_project)?,
        webhooks: number("CAPYDB_MAX_WEBHOOKS", d.webhooks)?,
    })
}

impl Config {
    /// The egress policy of every function.
    pub fn egress(&self) -> EgressPolicy {
        EgressPolicy { allow_private: self.allow_private_egress }
    }

    pub fn from_env() -> Result<Config, String> {
        let pg_admin_url = var("CAPYDB_PG_ADMIN_URL")?;
        if url::Url::parse(&pg_admin_url).ok().and_then(|u| u.password().map(str::to_string)).is_some() {
            return Err("CAPYDB_PG_ADMIN_URL must not hold the password; put it in the SSM parameter \
                        CAPYDB_PG_ADMIN_PASSWORD_PARAM names"
                .into());
        }
        let jobs_max_receives = match opt_var("CAPYDB_JOBS_MAX_RECEIVES") {
            Some(v) => v.parse().map_err(|_| format!("CAPYDB_JOBS_MAX_RECEIVES must be a number, not {v:?}"))?,
            None => 5,
        };
        Ok(Config {
            table: var("CAPYDB_TABLE")?,
            jobs_queue_url: var("CAPYDB_JOBS_QUEUE_URL")?,
            jobs_dead_letter_url: opt_var("CAPYDB_JOBS_DLQ_URL"),
            webhook_queue_url: var("CAPYDB_WEBHOOK_QUEUE_URL")?,
            webhook_dead_letter_url: opt_var("CAPYDB_WEBHOOK_DLQ_URL"),
            event_bus: var("CAPYDB_EVENT_BUS")?,
            kms_key_id: var("CAPYDB_KMS_KEY_ID")?,
            pg_admin_url,
            pg_admin_password_param: opt_var("CAPYDB_PG_ADMIN_PASSWORD_PARAM"),
            pg_version: opt_var("CAPYDB_PG_VERSION").unwrap_or_else(|| "15".into()),
            artifact_dir: PathBuf::from(opt_var("CAPYDB_ARTIFACT_DIR").unwrap_or_else(|| "/mnt/artifacts".into())),
            jobs_max_receives,
            // No variable turns this on: a deployed function always denies.
            allow_private_egress: false,
            region: opt_var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            job_max_attempts: match opt_var("CAPYDB_JOB_MAX_ATTEMPTS") {
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("CAPYDB_JOB_MAX_ATTEMPTS must be a positive number, not {v:?}"))?,
                None => capydb_domain::JobSettings::default().max_attempts,
            },
            rate_limit_per_minute: match opt_var("CAPYDB_RATE_LIMIT_PER_MINUTE") {
                Some(v) => {
                    v.parse().map_err(|_| format!("CAPYDB_RATE_LIMIT_PER_MINUTE must be a number, not {v:?}"))?
                }
                None => capydb_domain::RateLimitSettings::default().limit,
            },
            quotas: quotas_from(|name| std::env::var(name).ok())?,
        })
    }
}

/// What a function needs beyond the adapters every function has. Chosen by
/// each function's entry point, so a binary links only what it uses: the
/// PostgreSQL provider (tokio-postgres, the clone and dump code) only in the
/// worker, the webhook HTTP client only where webhooks are checked or sent.
pub struct Role {
    pub provider: Arc<dyn DatabaseProvider>,
    pub webhook_sender: Arc<dyn WebhookSender>,
}

impl Role {
    /// Answers connection strings; manages no database, sends no webhook.
    pub fn api(config: &Config) -> Result<Role, String> {
        Ok(Role { provider: Arc::new(endpoint_provider(config)?), webhook_sender: Arc::new(NoWebhooks) })
    }

    /// Checks and sends webhooks through the egress guard.
    pub fn webhooks(config: &Config) -> Result<Role, String> {
        Ok(Role {
            provider: Arc::new(endpoint_provider(config)?),
            webhook_sender: Arc::new(capydb_egress::HttpWebhookSender::new(config.egress())?),
        })
    }

    /// Runs job steps against the PostgreSQL server.
    pub fn worker(config: &Config, sdk: &Arc<SdkCell>) -> Result<Role, String> {
        Ok(Role { provider: Arc::new(database_provider(config, sdk)?), webhook_sender: Arc::new(NoWebhooks) })
    }

    /// An API function that also reaches the PostgreSQL server: the backups
    /// function (in the VPC for its file system), which serves `/v1/health`
    /// and so must be able to ask the server. It runs no job step.
    pub fn api_with_database(config: &Config, sdk: &Arc<SdkCell>) -> Result<Role, String> {
        Self::worker(config, sdk)
    }
}

/// The PostgreSQL provider, connected (and its admin password read from
/// SSM) on first use.
fn database_provider(config: &Config, sdk: &Arc<SdkCell>) -> Result<LazyProvider, String> {
    Ok(LazyProvider {
        admin_url: config.pg_admin_url.clone(),
        password_param: config.pg_admin_password_param.clone(),
        ssm: ClientCell::lazy(sdk, aws_sdk_ssm::Client::new),
        region: config.region.clone(),
        pg_version: config.pg_version.clone(),
        endpoint: ClientEndpoint::of_admin_url(&config.pg_admin_url).map_err(|e| e.to_string())?,
        egress: config.egress(),
        provider: OnceCell::new(),
    })
}

fn endpoint_provider(config: &Config) -> Result<EndpointProvider, String> {
    Ok(EndpointProvider {
        region: config.region.clone(),
        pg_version: config.pg_version.clone(),
        endpoint: ClientEndpoint::of_admin_url(&config.pg_admin_url).map_err(|e| e.to_string())?,
    })
}

/// The application on the AWS adapters. No network call is made here, and
/// no SDK client is made: each is made on first use from `sdk`.
pub fn app(config: &Config, sdk: &Arc<SdkCell>, role: Role) -> App {
    let dynamodb = ClientCell::lazy(sdk, aws_sdk_dynamodb::Client::new);
    let sqs = ClientCell::lazy(sdk, aws_sdk_sqs::Client::new);
    App::new(AppParts {
        store: Arc::new(DynamoStore::new(dynamodb.clone(), &config.table)) as Arc<dyn Store>,
        queue: Arc::new(SqsQueue::new(sqs.clone(), &config.jobs_queue_url, config.jobs_dead_letter_url.clone()))
            as Arc<dyn JobQueue>,
        webhook_queue: Arc::new(SqsQueue::new(sqs, &config.webhook_queue_url, config.webhook_dead_letter_url.clone()))
            as Arc<dyn JobQueue>,
        bus: Arc::new(EventBridgeBus::new(ClientCell::lazy(sdk, aws_sdk_eventbridge::Client::new), &config.event_bus))
            as Arc<dyn EventBus>,
        webhook_sender: role.webhook_sender,
        // Every function that creates webhooks or imports checks them with
        // the same policy the worker and the webhook sender connect under.
        egress: Arc::new(config.egress()) as Arc<dyn Egress>,
        provider: role.provider,
        secrets: Arc::new(KmsSecretBox::new(ClientCell::lazy(sdk, aws_sdk_kms::Client::new), &config.kms_key_id))
            as Arc<dyn SecretBox>,
        artifacts: Arc::new(LazyArtifacts { dir: config.artifact_dir.clone(), store: OnceCell::new() })
            as Arc<dyn ArtifactStore>,
        rate_limiter: Arc::new(crate::DynamoRateLimiter::new(dynamodb, &config.table))
            as Arc<dyn capydb_domain::ports::RateLimiter>,
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        settings: Settings {
            jobs: capydb_domain::JobSettings { max_attempts: config.job_max_attempts, ..Default::default() },
            rate_limit: capydb_domain::RateLimitSettings {
                limit: config.rate_limit_per_minute,
                window: std::time::Duration::from_secs(60),
            },
            quotas: config.quotas,
            ..Default::default()
        },
    })
}

/// `WebhookSender` of the functions that never send webhooks: an attempt
/// through it is a bug in the wiring, reported as a failed attempt.
struct NoWebhooks;

#[async_trait]
impl WebhookSender for NoWebhooks {
    async fn send(
        &self,
        _: &capydb_domain::ports::WebhookRequest,
    ) -> Result<capydb_domain::ports::WebhookResponse, capydb_domain::ports::WebhookSendError> {
        Err(capydb_domain::ports::WebhookSendError::Failed("this function does not send webhooks".into()))
    }
}

/// `DatabaseProvider` of the functions that only answer about databases
/// (versions, region, connection strings); the worker manages them.
struct EndpointProvider {
    region: String,
    pg_version: String,
    endpoint: ClientEndpoint,
}

fn not_here() -> ProviderError {
    ProviderError::Permanent("this function does not manage databases; the worker does".into())
}

#[async_trait]
impl DatabaseProvider for EndpointProvider {
    fn region(&self) -> String {
        self.region.clone()
    }
    fn pg_versions(&self) -> Vec<String> {
        vec![self.pg_version.clone()]
    }
    async fn ensure_role(&self, _: &str, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn ensure_database(&self, _: &str, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn clone_database(&self, _: &str, _: &str, _: &str, _: &str) -> ProviderResult<CloneStrategy> {
        Err(not_here())
    }
    async fn dump_database(&self, _: &str, _: &std::path::Path) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn restore_database(&self, _: &std::path::Path, _: &str, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn import_database(&self, _: &str, _: &str, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn replace_database(&self, _: &str, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn check_connection(&self, _: &str, _: &str, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn drop_database(&self, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn drop_role(&self, _: &str) -> ProviderResult<()> {
        Err(not_here())
    }
    async fn database_exists(&self, _: &str) -> ProviderResult<bool> {
        Err(not_here())
    }
    async fn role_exists(&self, _: &str) -> ProviderResult<bool> {
        Err(not_here())
    }
    async fn ping(&self) -> ProviderResult<()> {
        Err(not_here())
    }
    fn connection_info(&self, database: &str, role: &str, password: &str) -> ConnectionInfo {
        self.endpoint.connection_info(database, role, password)
    }
}

/// Logs as JSON lines (CloudWatch) at the level `RUST_LOG` names (`error`,
/// `warn`, `info` (default), `debug`, `trace`; per-target filters are not
/// supported in the functions).
pub fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.split(',').next().and_then(|l| l.trim().parse::<tracing::Level>().ok()))
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .without_time() // CloudWatch stamps every line
        .try_init();
}

pub use lambda_runtime::Error;
use lambda_runtime::{service_fn, LambdaEvent};

/// The roots AWS's service endpoints chain to (Amazon Trust Services). The
/// SDK trusts these instead of reading the system's whole store at start-up,
/// which was most of a function's cold start.
const AMAZON_ROOTS: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// The SDK configuration of a function: region and credentials from the
/// Lambda environment, HTTPS with rustls (aws-lc-rs) trusting Amazon's roots.
pub async fn sdk_config() -> Result<SdkConfig, Error> {
    use aws_smithy_http_client::tls;
    let trust = tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_ROOTS);
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(tls::TlsContext::builder().with_trust_store(trust).build()?)
        .build_https();
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await)
}

/// The config and app a function starts with; `role` picks the
/// function-specific adapters.
pub async fn start(role: fn(&Config, &Arc<SdkCell>) -> Result<Role, String>) -> Result<(Config, App), Error> {
    let t0 = std::time::Instant::now();
    init_tracing();
    let t1 = std::time::Instant::now();
    let config = Config::from_env()?;
    let sdk = SdkCell::lazy(|| async { sdk_config().await.map_err(|e| e.to_string()) });
    let role = role(&config, &sdk)?;
    let app = app(&config, &sdk, role);
    let us = |a: std::time::Instant, b: std::time::Instant| (b - a).as_micros() as u64;
    tracing::debug!(tracing_us = us(t0, t1), app_us = us(t1, std::time::Instant::now()), "start-up phases");
    Ok((config, app))
}

/// `main` of `worker`: the jobs queue's SQS event source.
pub async fn run_worker() -> Result<(), Error> {
    let (config, app) = start(Role::worker).await?;
    let max = config.jobs_max_receives;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| {
        let app = app.clone();
        async move { Ok::<_, Error>(worker_batch(app, max, e.payload).await) }
    }))
    .await
}

/// `main` of `webhook-delivery`: the webhook queue's SQS event source.
pub async fn run_webhook_delivery() -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::webhooks(c)).await?;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| {
        let app = app.clone();
        async move { Ok::<_, Error>(webhook_batch(app, e.payload).await) }
    }))
    .await
}

/// `main` of `sweeper`: the one-minute schedule (the event's content is not used).
pub async fn run_sweeper() -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::api(c)).await?;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let app = app.clone();
        async move { sweep(&app).await.map_err(Error::from) }
    }))
    .await
}

/// The bootstrap function's configuration: the table, the secret that
/// receives the admin key, and the stack's KMS key. It reads nothing else,
/// so it runs without the queue, bus and PostgreSQL settings.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub table: String,
    /// `<stack>/bootstrap-api-key`; the template grants access to it alone.
    pub secret_name: String,
    /// Encrypts the secret; Secrets Manager's own key when unset.
    pub kms_key_id: Option<String>,
}

impl BootstrapConfig {
    pub fn from_env() -> Result<BootstrapConfig, String> {
        Ok(BootstrapConfig {
            table: var("CAPYDB_TABLE")?,
            secret_name: var("CAPYDB_BOOTSTRAP_SECRET_NAME")?,
            kms_key_id: opt_var("CAPYDB_KMS_KEY_ID"),
        })
    }
}

/// `main` of `bootstrap`: invoked by hand once after `sam deploy` with
/// `{"organization_name": "..."}` (see `crate::bootstrap`).
pub async fn run_bootstrap() -> Result<(), Error> {
    init_tracing();
    let config = BootstrapConfig::from_env()?;
    let sdk = SdkCell::lazy(|| async { sdk_config().await.map_err(|e| e.to_string()) });
    let bootstrap = Arc::new(crate::bootstrap::Bootstrap::new(
        DynamoStore::new(ClientCell::lazy(&sdk, aws_sdk_dynamodb::Client::new), config.table),
        crate::secretsmanager::SecretsManager::new(ClientCell::lazy(&sdk, aws_sdk_secretsmanager::Client::new)),
        config.secret_name,
        config.kms_key_id,
    ));
    lambda_runtime::run(service_fn(move |e: LambdaEvent<serde_json::Value>| {
        let bootstrap = Arc::clone(&bootstrap);
        async move { bootstrap.handle(e.payload).await }
    }))
    .await
}

/// The router of the named route groups, as a function serves it. The
/// caller's address comes from API Gateway's request context (there is no
/// TCP peer to ask), for the keys' `last_used_ip`.
pub fn routes(app: App, groups: &[Group]) -> axum::Router {
    let mut routes = axum::Router::new();
    for g in groups {
        routes = routes.merge(g());
    }
    capydb_api::finish(routes, app).layer(axum::middleware::map_request(source_ip))
}

async fn source_ip(mut req: axum::extract::Request) -> axum::extract::Request {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok()),
        _ => None,
    };
    if let Some(ip) = ip {
        req.extensions_mut().insert(capydb_api::extract::ClientIp(ip));
    }
    req
}

/// A route group's router.
pub type Group = fn() -> axum::Router<App>;

/// The route groups of each API function (package name = function name =
/// binary name; `infra/template.yaml` routes to them). Each `main.rs` names
/// its own list, so its binary links only those routers.
pub mod functions {
    use super::Group;
    use capydb_api::*;
    pub const IDENTITY: &[Group] = &[me::router, organizations::router];
    pub const PROJECTS: &[Group] = &[projects::router];
    pub const PREVIEWS: &[Group] = &[previews::router];
    pub const BACKUPS: &[Group] = &[backups::router, health::router];
    pub const JOBS: &[Group] = &[jobs::router];
    pub const WEBHOOKS: &[Group] = &[webhooks::router];
    pub const OPENAPI: &[Group] = &[openapi::router];
}

/// Every API function by name, for tests and tools.
pub const API_FUNCTIONS: [(&str, &[Group]); 7] = [
    ("identity", functions::IDENTITY),
    ("projects", functions::PROJECTS),
    ("previews", functions::PREVIEWS),
    ("backups", functions::BACKUPS),
    ("jobs", functions::JOBS),
    ("webhooks", functions::WEBHOOKS),
    ("openapi", functions::OPENAPI),
];

/// The route groups of an API function.
pub fn groups_of(function: &str) -> Option<&'static [Group]> {
    API_FUNCTIONS.iter().find(|(f, _)| *f == function).map(|(_, g)| *g)
}

/// `main` of a route-group function: serves its groups' routes from API
/// Gateway HTTP API events.
pub async fn serve_api(groups: &[Group]) -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::api(c)).await?;
    let t = std::time::Instant::now();
    let router = routes(app, groups);
    tracing::debug!(routes_us = t.elapsed().as_micros() as u64, "routes built");
    lambda_http::run(router).await
}

/// `serve_api` for the backups function, which also answers `/v1/health`
/// (the one API function that reaches the database server).
pub async fn serve_backups_api(groups: &[Group]) -> Result<(), Error> {
    let (_, app) = start(Role::api_with_database).await?;
    lambda_http::run(routes(app, groups)).await
}

/// `serve_api` for the webhooks function, which checks webhook targets.
pub async fn serve_webhooks_api(groups: &[Group]) -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::webhooks(c)).await?;
    lambda_http::run(routes(app, groups)).await
}

/// What the worker does with one job message; `receive_count` is SQS's
/// ApproximateReceiveCount.
pub async fn handle_job_record(
    app: &App,
    config_max_receives: u32,
    body: &str,
    receive_count: u32,
    worker: &str,
) -> Disposition {
    let d = app.run_job_message(body, worker).await;
    if let Disposition::Failed(_) = d {
        if receive_count >= config_max_receives {
            // SQS moves the message to the dead-letter queue instead of
            // delivering it again: fail its job now, or it stays running forever.
            let why = format!("its queue message failed {receive_count} times and was moved to the dead-letter queue");
            if let Err(e) = app.abandon_job_message(body, &why).await {
                tracing::error!(error = %e, "could not fail the job of a dead-lettered message; the sweeper re-drives it");
            }
        }
    }
    d
}

/// Runs `handle` on every record of an SQS batch at once and answers the
/// records to retry (`ReportBatchItemFailures`), so one bad message never
/// makes Lambda retry the others:
/// - `Done`: success; Lambda deletes the message.
/// - `RetryAfter(d)`: a planned wait (a backoff, a lease held elsewhere). A
///   fresh copy is queued with delay `d` and the record succeeds, so waiting
///   never counts toward the dead-letter limit. If the copy cannot be
///   queued, the record fails and comes back after the visibility timeout.
/// - `Failed(d)`: the message's visibility is set to `d` and the record
///   fails, counting toward the dead-letter limit.
/// - A panic in `handle` fails only its record.
pub async fn sqs_batch<F, Fut>(queue: Arc<dyn JobQueue>, event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(String, u32) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Disposition> + Send + 'static,
{
    let mut tasks = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let receipt = record.receipt_handle.clone().unwrap_or_default();
        let body = record.body.unwrap_or_default();
        let count = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let task = tokio::spawn(handle.clone()(body.clone(), count));
        tasks.push((id, receipt, body, task));
    }
    let mut response = SqsBatchResponse::default();
    for (id, receipt, body, task) in tasks {
        let ok = match task.await {
            Ok(Disposition::Done) => true,
            Ok(Disposition::RetryAfter(d)) => match queue.send(&body, d).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "could not queue the retry; SQS redelivers the message");
                    false
                }
            },
            Ok(Disposition::Failed(d)) => {
                if let Err(e) = queue.change_visibility(&receipt, d).await {
                    tracing::warn!(message_id = %id, error = %e, "could not shorten the message's visibility");
                }
                false
            }
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "the message's handler panicked");
                false
            }
        };
        if !ok {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// `DatabaseProvider` that connects on first use: the admin password comes
/// from SSM then, so functions that only answer connection strings never fetch it.
pub struct LazyProvider {
    admin_url: String,
    password_param: Option<String>,
    ssm: ClientCell<aws_sdk_ssm::Client>,
    region: String,
    pg_version: String,
    endpoint: ClientEndpoint,
    /// Where imports may connect (the deployed policy denies private targets).
    egress: EgressPolicy,
    provider: OnceCell<PgProvider>,
}

/// A failure to set the provider up (configuration, SSM): it reaches a
/// job's `error`, so the detail goes to the log and a user reads a sentence.
fn setup_error(retryable: bool, detail: String) -> ProviderError {
    tracing::error!(error = %detail, "the worker could not set up its PostgreSQL provider");
    let message = "CapyDB could not reach its database server; retry, or contact support if it persists".to_string();
    if retryable {
        ProviderError::Retryable(message)
    } else {
        ProviderError::Permanent(message)
    }
}

impl LazyProvider {
    async fn get(&self) -> ProviderResult<&PgProvider> {
        self.provider
            .get_or_try_init(|| async {
                let mut url = url::Url::parse(&self.admin_url)
                    .map_err(|e| setup_error(false, format!("invalid CAPYDB_PG_ADMIN_URL: {e}")))?;
                if let Some(param) = &self.password_param {
                    let ssm = self.ssm.get().await.map_err(|e| setup_error(true, e.to_string()))?;
                    let out = ssm.get_parameter().name(param).with_decryption(true).send().await.map_err(|e| {
                        let why = aws_sdk_ssm::error::DisplayErrorContext(&e);
                        setup_error(true, format!("read the admin password parameter {param}: {why}"))
                    })?;
                    let password = out.parameter().and_then(|p| p.value()).unwrap_or_default();
                    url.set_password(Some(password))
                        .map_err(|()| setup_error(false, "CAPYDB_PG_ADMIN_URL cannot carry a password".into()))?;
                }
                // Its own errors are already a user's sentence, the detail logged.
                let mut provider = PgProvider::connect(url.as_str(), &self.region).await?;
                provider.set_egress_policy(self.egress);
                let versions = provider.pg_versions();
                if !versions.contains(&self.pg_version) {
                    return Err(setup_error(
                        false,
                        format!(
                            "CAPYDB_PG_VERSION is {} but the server runs PostgreSQL {}",
                            self.pg_version,
                            versions.join(", ")
                        ),
                    ));
                }
                Ok(provider)
            })
            .await
    }
}

#[async_trait]
impl DatabaseProvider for LazyProvider {
    fn region(&self) -> String {
        self.region.clone()
    }
    fn pg_versions(&self) -> Vec<String> {
        vec![self.pg_version.clone()]
    }
    async fn ensure_role(&self, role: &str, password: &str) -> ProviderResult<()> {
        self.get().await?.ensure_role(role, password).await
    }
    async fn ensure_database(&self, database: &str, owner: &str) -> ProviderResult<()> {
        self.get().await?.ensure_database(database, owner).await
    }
    async fn clone_database(
        &self,
        source: &str,
        source_owner: &str,
        target: &str,
        owner: &str,
    ) -> ProviderResult<CloneStrategy> {
        self.get().await?.clone_database(source, source_owner, target, owner).await
    }
    async fn dump_database(&self, database: &str, dest: &std::path::Path) -> ProviderResult<()> {
        self.get().await?.dump_database(database, dest).await
    }
    async fn restore_database(&self, dump: &std::path::Path, target: &str, owner: &str) -> ProviderResult<()> {
        self.get().await?.restore_database(dump, target, owner).await
    }
    async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()> {
        self.get().await?.import_database(source_url, target, owner).await
    }
    async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()> {
        self.get().await?.replace_database(live, replacement).await
    }
    async fn check_connection(&self, database: &str, role: &str, password: &str) -> ProviderResult<()> {
        self.get().await?.check_connection(database, role, password).await
    }
    async fn drop_database(&self, database: &str) -> ProviderResult<()> {
        self.get().await?.drop_database(database).await
    }
    async fn drop_role(&self, role: &str) -> ProviderResult<()> {
        self.get().await?.drop_role(role).await
    }
    async fn database_exists(&self, database: &str) -> ProviderResult<bool> {
        self.get().await?.database_exists(database).await
    }
    async fn role_exists(&self, role: &str) -> ProviderResult<bool> {
        self.get().await?.role_exists(role).await
    }
    async fn ping(&self) -> ProviderResult<()> {
        self.get().await?.ping().await
    }
    fn connection_info(&self, database: &str, role: &str, password: &str) -> ConnectionInfo {
        self.endpoint.connection_info(database, role, password)
    }
}

/// The backup artifacts on the EFS mount, opened on first use: only the
/// functions that mount it (worker, backups) ever touch it.
pub struct LazyArtifacts {
    dir: PathBuf,
    store: OnceCell<FileArtifactStore>,
}

impl LazyArtifacts {
    async fn get(&self) -> DomainResult<&FileArtifactStore> {
        self.store
            .get_or_try_init(|| async {
                FileArtifactStore::open(&self.dir).map_err(|e| {
                    DomainError::Unavailable(format!(
                        "the backup store {} is not reachable from this function: {e}",
                        self.dir.display()
                    ))
                })
            })
            .await
    }
}

#[async_trait]
impl ArtifactStore for LazyArtifacts {
    async fn staging_path(&self, key: &str) -> DomainResult<PathBuf> {
        self.get().await?.staging_path(key).await
    }
    async fn put(&self, key: &str, staged: &std::path::Path) -> DomainResult<ArtifactInfo> {
        self.get().await?.put(key, staged).await
    }
    async fn fetch(&self, key: &str) -> DomainResult<PathBuf> {
        self.get().await?.fetch(key).await
    }
    async fn delete(&self, key: &str) -> DomainResult<()> {
        self.get().await?.delete(key).await
    }
}

/// Handles the jobs queue's batches (`worker`).
pub async fn worker_batch(app: App, max_receives: u32, event: SqsEvent) -> SqsBatchResponse {
    let worker = format!("lambda-{}", std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "local".into()));
    let queue = Arc::clone(&app.queue);
    sqs_batch(queue, event, move |body, count| {
        let (app, worker) = (app.clone(), worker.clone());
        async move { handle_job_record(&app, max_receives, &body, count, &worker).await }
    })
    .await
}

/// Handles the webhook queue's batches (`webhook-delivery`): published events
/// (in EventBridge's envelope) and delivery attempts.
pub async fn webhook_batch(app: App, event: SqsEvent) -> SqsBatchResponse {
    let queue = Arc::clone(&app.webhook_queue);
    sqs_batch(queue, event, move |body, _count| {
        let app = app.clone();
        async move { app.handle_webhook_message(&crate::eventbridge::unwrap_envelope(&body)).await }
    })
    .await
}

/// One sweep (`sweeper`, every minute): expired previews, stuck jobs,
/// unpublished events, due webhook retries. Each part runs even if another fails;
/// the invocation fails if any did, so the failure shows in the function's metrics.
pub async fn sweep(app: &App) -> Result<serde_json::Value, String> {
    let mut errors = Vec::new();
    let mut note = |what: &str, r: DomainResult<usize>| match r {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(part = what, error = %e, "sweep part failed");
            errors.push(format!("{what}: {e}"));
            0
        }
    };
    let expired = note("expire previews", app.expire_previews().await);
    let redriven = note("re-drive stuck jobs", app.redrive_stuck_jobs(false).await);
    let republished = note("republish events", app.republish_events().await);
    let retried = note("send due webhook retries", app.send_due_deliveries().await);
    let summary = serde_json::json!({
        "expired_previews": expired,
        "redriven_jobs": redriven,
        "republished_events": republished,
        "webhook_retries": retried,
    });
    tracing::info!(%summary, "sweep done");
    if errors.is_empty() {
        Ok(summary)
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;
    use capydb_embedded::SqliteQueue;

    fn record(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.receipt_handle = Some(format!("receipt-{id}"));
        m.body = Some(body.into());
        m.attributes.insert("ApproximateReceiveCount".into(), "1".into());
        m
    }

    #[test]
    fn quotas_default_when_unset_and_refuse_what_does_not_parse() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(quotas_from(env(&[])), Ok(QuotaSettings::default()), "unset: the defaults");
        let set = quotas_from(env(&[
            ("CAPYDB_MAX_PROJECTS", "3"),
            ("CAPYDB_MAX_PREVIEWS_PER_PROJECT", " 4 "),
            ("CAPYDB_MAX_BACKUPS_PER_PROJECT", "5"),
            ("CAPYDB_MAX_WEBHOOKS", ""),
        ]));
        let d = QuotaSettings::default();
        assert_eq!(
            set,
            Ok(QuotaSettings { projects: 3, previews_per_project: 4, backups_per_project: 5, webhooks: d.webhooks }),
            "each variable sets its own limit; an empty one is unset"
        );
        for name in [
            "CAPYDB_MAX_PROJECTS",
            "CAPYDB_MAX_PREVIEWS_PER_PROJECT",
            "CAPYDB_MAX_BACKUPS_PER_PROJECT",
            "CAPYDB_MAX_WEBHOOKS",
        ] {
            let bad = move |n: &str| (n == name).then(|| "ten".to_string());
            let e = quotas_from(bad).expect_err("an unparsable limit must stop the start-up");
            assert!(e.contains(name) && e.contains("ten"), "the error must name the variable and value: {e}");
        }
        let negative = quotas_from(|n: &str| (n == "CAPYDB_MAX_WEBHOOKS").then(|| "-1".to_string()));
        assert!(negative.is_err(), "a negative limit is not a limit");
    }

    #[tokio::test]
    async fn the_sdk_config_builds_with_amazons_roots_only() {
        assert_eq!(String::from_utf8_lossy(AMAZON_ROOTS).matches("BEGIN CERTIFICATE").count(), 5);
        let sdk = sdk_config().await.expect("the SDK's HTTPS client builds from the embedded roots");
        assert!(sdk.http_client().is_some());
    }

    #[tokio::test]
    async fn a_batch_reports_only_its_failures_and_requeues_planned_waits() {
        let dir = std::env::temp_dir().join(capydb_domain::ids::new_id("sqs-batch"));
        std::fs::create_dir_all(&dir).unwrap();
        let queue: Arc<dyn JobQueue> = Arc::new(SqliteQueue::open(&dir.join("q.db"), "jobs", 5).unwrap());
        let mut event = SqsEvent::default();
        event.records = vec![record("1", "done"), record("2", "wait"), record("3", "fail"), record("4", "panic")];
        let response = sqs_batch(Arc::clone(&queue), event, |body, count| async move {
            assert_eq!(count, 1, "the receive count comes from the record's attributes");
            match body.as_str() {
                "done" => Disposition::Done,
                "wait" => Disposition::RetryAfter(std::time::Duration::from_millis(200)),
                "fail" => Disposition::Failed(std::time::Duration::from_secs(1)),
                _ => panic!("a handler bug"),
            }
        })
        .await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, ["3", "4"], "only the failed and the panicked records are retried by SQS");
        // The planned wait went back on the queue as a delayed copy.
        assert!(queue.receive(10, std::time::Duration::from_secs(5)).await.unwrap().is_empty(), "delayed");
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let copies = queue.receive(10, std::time::Duration::from_secs(5)).await.unwrap();
        assert_eq!(copies.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["wait"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `sam build` runs `cargo lambda build --release`, which sets
    /// `panic = "abort"` unless the release profile says otherwise; with
    /// abort, the panicking record above would take its whole batch down.
    #[test]
    fn the_release_profile_keeps_unwinding_for_the_batch_handler() {
        let manifest = include_str!("../../../Cargo.toml");
        let release: Vec<&str> = manifest
            .lines()
            .skip_while(|l| l.trim() != "[profile.release]")
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(!release.is_empty(), "the workspace Cargo.toml has a [profile.release] section");
        assert!(release.contains(&r#"panic = "unwind""#), "[profile.release] must say panic = \"unwind\": {release:?}");
        assert!(release.contains(&"strip = true"), "{release:?}");
    }
}
