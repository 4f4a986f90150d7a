//! The application: the ports wired together, and the settings the use cases
//! read. Entry points (a Lambda, `capydb-local`) build one `App` at start-up
//! and share it.
use std::sync::Arc;
use std::time::Duration;

use crate::model::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{DomainError, DomainResult};
use crate::ports::{
    ArtifactStore, Clock, DatabaseEndpoint, DatabaseProbe, DatabaseProvider, DedicatedServers, Egress, EventBus,
    Hosting, JobQueue, LoginStore, RateLimiter, SecretBox, ServerSnapshots, SessionVerifier, Store, WebhookSender,
};
use crate::ports::{QuotaClaim, QuotaKind, WebhookSendError};

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// How long a worker owns a job once it took the lease.
    pub lease: Duration,
    /// Visibility timeout of a received queue message; longer than `lease`.
    pub visibility: Duration,
    /// Runs of a job before a retryable error becomes a failure.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A queued job with no progress for this long is re-driven by the sweeper.
    pub stale_after: Duration,
    /// The first wait of a step that answered "not yet"; each next one is
    /// twice the last (15 s, 30 s, 60 s, ...) up to `wait_cap`. A step may
    /// ask for longer, never for less.
    pub wait_first: Duration,
    pub wait_cap: Duration,
    /// A job still waiting this long after it started fails, and what it
    /// half-made is removed.
    pub wait_deadline: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            lease: Duration::from_secs(300),
            visibility: Duration::from_secs(330),
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            stale_after: Duration::from_secs(60),
            wait_first: Duration::from_secs(15),
            wait_cap: Duration::from_secs(300),
            wait_deadline: Duration::from_secs(2 * 3600),
        }
    }
}

/// Requests per client address allowed in each window.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Requests per window; 0 turns rate limiting off.
    pub limit: u32,
    pub window: Duration,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        // 100 requests a second per address, like Stripe's live mode.
        RateLimitSettings { limit: 6000, window: Duration::from_secs(60) }
    }
}

/// Per-organization limits, with defaults a small team never meets. They
/// stop a runaway CI job or script from creating databases without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotaSettings {
    /// Projects not deleted, per organization.
    pub projects: u32,
    /// Previews not deleted, per project.
    pub previews_per_project: u32,
    /// Backups not deleted (safety backups included), per project.
    pub backups_per_project: u32,
    /// Webhook endpoints, per organization.
    pub webhooks: u32,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings { projects: 100, previews_per_project: 50, backups_per_project: 200, webhooks: 25 }
    }
}

impl QuotaSettings {
    pub fn claim(&self, kind: QuotaKind, owner: &str) -> QuotaClaim {
        let limit = match kind {
            QuotaKind::Projects => self.projects,
            QuotaKind::Previews => self.previews_per_project,
            QuotaKind::Backups => self.backups_per_project,
            QuotaKind::Webhooks => self.webhooks,
        };
        QuotaClaim { kind, owner: owner.to_string(), limit }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Delays before the 2nd, 3rd, ... attempt. After the last, the delivery fails.
    pub retry_schedule: Vec<Duration>,
    /// Each delay is spread by up to this fraction either way.
    pub jitter: f64,
    pub timeout: Duration,
    /// Visibility timeout of a received webhook-queue message.
    pub visibility: Duration,
    /// The longest delay a queue message can carry (SQS: 15 minutes); the
    /// sweeper sends later retries when they are due.
    pub max_queue_delay: Duration,
    /// A due delivery with no attempt for this long is re-sent by the sweeper.
    pub overdue_after: Duration,
    /// An endpoint failing continuously this long is disabled.
    pub disable_after: Duration,
    /// How long the secret replaced by a rotation keeps signing.
    pub previous_secret_grace: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let (s, m, h) = (1, 60, 3600);
        WebhookSettings {
            retry_schedule: [5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: 0.1,
            timeout: Duration::from_secs(15),
            visibility: Duration::from_secs(60),
            max_queue_delay: Duration::from_secs(15 * m),
            overdue_after: Duration::from_secs(30),
            disable_after: Duration::from_secs(5 * 24 * h),
            previous_secret_grace: Duration::from_secs(24 * h),
            max_retry_after: Duration::from_secs(24 * h),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub jobs: JobSettings,
    pub webhooks: WebhookSettings,
    pub rate_limit: RateLimitSettings,
    pub quotas: QuotaSettings,
    pub cli_login: CliLoginSettings,
    /// One shared server, or a server per project and preview.
    pub hosting: Hosting,
    /// How long a deleted project's final snapshot is kept (a dedicated
    /// deployment's); zero keeps it until deleted by hand.
    pub final_snapshot_retention: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jobs: JobSettings::default(),
            webhooks: WebhookSettings::default(),
            rate_limit: RateLimitSettings::default(),
            quotas: QuotaSettings::default(),
            cli_login: CliLoginSettings::default(),
            hosting: Hosting::default(),
            final_snapshot_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The CLI login endpoints' own settings.
#[derive(Debug, Clone)]
pub struct CliLoginSettings {
    /// The stricter per-address bucket of `POST /v1/cli/login`,
    /// `/v1/cli/login/approve` and `/v1/cli/login/token` (they count only
    /// there, not in the general one).
    pub rate_limit: RateLimitSettings,
    /// The page where a person approves a CLI login (the dashboard's); when
    /// unset, this API's own `POST /v1/cli/login/approve` URL is shown.
    pub verification_uri: Option<String>,
}

impl Default for CliLoginSettings {
    fn default() -> Self {
        CliLoginSettings {
            rate_limit: RateLimitSettings { limit: 10, window: Duration::from_secs(60) },
            verification_uri: None,
        }
    }
}

/// The application. Cheap to clone (one `Arc`): the HTTP layer clones it per request.
#[derive(Clone)]
pub struct App(Arc<AppParts>);

impl std::ops::Deref for App {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

#[derive(Clone)]
pub struct AppParts {
    pub store: Arc<dyn Store>,
    /// Device logins and CLI sessions.
    pub logins: Arc<dyn LoginStore>,
    pub queue: Arc<dyn JobQueue>,
    /// Published events and webhook attempts (a second queue of the same kind).
    pub webhook_queue: Arc<dyn JobQueue>,
    pub bus: Arc<dyn EventBus>,
    /// Sends webhook requests; `None` where the entry point sends none
    /// (the worker, the API functions but `webhooks`, the sweeper).
    pub webhook_sender: Option<Arc<dyn WebhookSender>>,
    /// Decides where outbound connections a caller aims may go.
    pub egress: Arc<dyn Egress>,
    /// Where databases live and how clients reach them; every entry point has it.
    pub endpoint: Arc<dyn DatabaseEndpoint>,
    /// Manages databases; `None` where the entry point manages none (the
    /// API functions, the sweeper, `webhook-delivery`).
    pub provider: Option<Arc<dyn DatabaseProvider>>,
    /// Makes and removes the servers of a dedicated deployment
    /// (`settings.hosting`); `None` where the entry point manages none, and
    /// on the shared server.
    pub servers: Option<Arc<dyn DedicatedServers>>,
    /// The snapshots a dedicated deployment keeps, where the sweep runs
    /// with them (`None` elsewhere, and on the shared server).
    pub snapshots: Option<Arc<dyn ServerSnapshots>>,
    /// Asks the database server whether it takes connections, for the
    /// health check, where no `provider` is wired to ask (the backups
    /// function); `None` elsewhere.
    pub probe: Option<Arc<dyn DatabaseProbe>>,
    pub secrets: Arc<dyn SecretBox>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Verifies browser sessions' tokens; `None` where no Clerk
    /// configuration is set (a session token is then `401`, saying so).
    pub sessions: Option<Arc<dyn SessionVerifier>>,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
}

impl App {
    pub fn new(parts: AppParts) -> App {
        App(Arc::new(parts))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The database provider, or an error where this entry point was wired
    /// without one (a bug in the wiring, never a user's doing).
    pub fn database(&self) -> DomainResult<&dyn DatabaseProvider> {
        self.provider.as_deref().ok_or_else(|| {
            DomainError::Internal("this function manages no database (it was wired without a provider)".into())
        })
    }

    /// The dedicated servers' manager, or an error where this entry point
    /// was wired without one.
    pub fn servers(&self) -> DomainResult<&dyn DedicatedServers> {
        self.servers.as_deref().ok_or_else(|| {
            DomainError::Internal("this function manages no database servers (it was wired without them)".into())
        })
    }

    /// The webhook sender, or why there is none.
    pub fn webhook_sender(&self) -> Result<&dyn WebhookSender, WebhookSendError> {
        self.webhook_sender.as_deref().ok_or_else(|| {
            WebhookSendError::Failed("this function sends no webhooks (it was wired without a sender)".into())
        })
    }
}

/// Adds a std duration to a timestamp without panicking on absurd values.
pub fn add(ts: Timestamp, d: Duration) -> Timestamp {
    chrono::Duration::from_std(d).ok().and_then(|d| ts.checked_add_signed(d)).unwrap_or(ts)
}

pub(crate) fn sub(ts: Timestamp, d: Duration) -> Timestamp {
    chrono::Duration::from_std(d).ok().and_then(|d| ts.checked_sub_signed(d)).unwrap_or(ts)
}

/// A random password of 32 base62 characters (~190 bits).
pub fn random_password() -> String {
    use rand::Rng;
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..32).map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char).collect()
}
