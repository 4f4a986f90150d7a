//! The application: the ports wired together, and the settings the use cases
//! read. Entry points (a Lambda, `capydb-local`) build one `App` at start-up
//! and share it.
use std::sync::Arc;
use std::time::Duration;

use crate::error::{DomainError, DomainResult};
use crate::model::Timestamp;
use crate::ports::{
    ArtifactStore, Clock, DatabaseProvider, Egress, EventBus, JobQueue, RateLimiter, SecretBox, Store, WebhookSender,
};

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

#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub jobs: JobSettings,
    pub webhooks: crate::webhooks::WebhookSettings,
    pub rate_limit: RateLimitSettings,
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

pub struct AppParts {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn JobQueue>,
    /// Published events and webhook attempts (a second queue of the same kind).
    pub webhook_queue: Arc<dyn JobQueue>,
    pub bus: Arc<dyn EventBus>,
    pub webhook_sender: Arc<dyn WebhookSender>,
    /// Decides where outbound connections a caller aims may go.
    pub egress: Arc<dyn Egress>,
    pub provider: Arc<dyn DatabaseProvider>,
    pub secrets: Arc<dyn SecretBox>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub rate_limiter: Arc<dyn RateLimiter>,
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
}

/// Adds a std duration to a timestamp without panicking on absurd values.
pub fn add(ts: Timestamp, d: Duration) -> Timestamp {
    chrono::Duration::from_std(d).ok().and_then(|d| ts.checked_add_signed(d)).unwrap_or(ts)
}

pub(crate) fn sub(ts: Timestamp, d: Duration) -> Timestamp {
    chrono::Duration::from_std(d).ok().and_then(|d| ts.checked_sub_signed(d)).unwrap_or(ts)
}

/// Validates a human-facing name: trimmed, 1..=max characters, no control characters.
pub fn parse_name(field: &str, raw: &str, max: usize) -> DomainResult<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(DomainError::invalid(format!("{field} must not be empty")));
    }
    if name.chars().count() > max {
        return Err(DomainError::invalid(format!("{field} must be at most {max} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!("{field} must not contain control characters")));
    }
    Ok(name.to_string())
}

/// A random password of 32 base62 characters (~190 bits).
pub fn random_password() -> String {
    use rand::Rng;
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..32).map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char).collect()
}
