//! Webhooks: endpoint management, the fan-out of published events into
//! deliveries, and delivery attempts signed per the Standard Webhooks
//! specification (<https://www.standardwebhooks.com/>).
//!
//! Flow: a job transition writes its events to the outbox; they are published
//! to the event bus (the webhook queue locally, EventBridge deployed). The
//! delivery handler receives each event, records one delivery per subscribed
//! endpoint (idempotent on endpoint + event) and queues an attempt for each.
//! An attempt is recorded whatever its outcome; a failed one is retried on
//! the schedule of `WebhookSettings`, through the queue (delays up to 15
//! minutes, as SQS allows) or the sweeper (longer ones).
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::SecondsFormat;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::app::{add, sub, App};
use crate::error::{DomainError, DomainResult};
use crate::fields::{NonEmpty, Text, UrlText};
use crate::ids;
use crate::jobs::Disposition;
use crate::model::{
    Delivery, DeliveryAttempt, DeliveryState, Event, EventType, ProjectState, Timestamp, WebhookEndpoint,
};
use crate::ports::{Page, QuotaKind, WebhookRequest, WebhookSendError};
use crate::principal::Principal;
use crate::scopes::Scope;

/// Every event type an endpoint can subscribe to, as the API names them.
pub fn event_type_names() -> impl Iterator<Item = &'static str> {
    EventType::ALL.iter().map(|t| t.as_str())
}

/// An event type an endpoint subscribes to, or `*` for every type. Its
/// schema lists [`EventType::ALL`], the list the check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(String);

impl EventFilter {
    pub fn parse(raw: &str) -> DomainResult<Self> {
        if raw != "*" && EventType::parse(raw).is_none() {
            return Err(DomainError::invalid(format!(
                "unknown event type {raw:?}; known types: {}, or \"*\" for all",
                event_type_names().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(EventFilter(raw.to_string()))
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<str>::deserialize(d)?;
        EventFilter::parse(&raw).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

impl utoipa::PartialSchema for EventFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut values: Vec<&str> = event_type_names().collect();
        values.push("*");
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(values))
            .into()
    }
}

impl ToSchema for EventFilter {}

/// Descriptions of webhook endpoints.
pub type Description = Text<200>;
/// Webhook target URLs.
pub type WebhookUrl = UrlText<2048>;

const SECRET_PREFIX: &str = "whsec_";
/// What an attempt keeps of a response body.
pub const RESPONSE_KEEP_BYTES: usize = 1024;

pub use crate::app::WebhookSettings;

impl WebhookEndpoint {
    /// Enables or disables the endpoint. Enabling a disabled one clears
    /// `disabled_reason` and `failing_since` and answers true: the write must
    /// then clear the stored `failing_since` (`Store::update_webhook`).
    pub fn set_enabled(&mut self, enabled: bool) -> bool {
        let reenabled = enabled && !self.enabled;
        if reenabled {
            self.disabled_reason = None;
            self.failing_since = None;
        }
        self.enabled = enabled;
        reenabled
    }

    /// `events` as every store keeps it: a JSON array of strings. A failure
    /// is an error, never an empty list (which would unsubscribe the endpoint).
    pub fn events_json(&self) -> DomainResult<String> {
        serde_json::to_string(&self.events)
            .map_err(|e| DomainError::internal(format!("could not encode webhook {}'s events: {e}", self.id)))
    }
}

/// A message on the webhook queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookMessage {
    /// A published event, to fan out to the subscribed endpoints.
    Event(Event),
    /// An attempt of this delivery is due.
    Delivery(String),
}

impl WebhookMessage {
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http` or `https`. Must not resolve to a loopback, private, link-local
    /// or metadata address unless the server allows private targets.
    #[schema(inline)]
    pub url: WebhookUrl,
    /// Event types, or `["*"]` for all of them.
    #[schema(inline)]
    pub events: NonEmpty<EventFilter>,
    /// Only events of this project.
    pub project_id: Option<String>,
    #[schema(inline)]
    pub description: Option<Description>,
}

/// A field of a PATCH body that may be set to `null` to clear it.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[schema(inline)]
    pub url: Option<WebhookUrl>,
    #[schema(inline)]
    pub events: Option<NonEmpty<EventFilter>>,
    /// `null` removes the project filter.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub project_id: Option<Option<String>>,
    /// `null` removes the description.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Description>, inline)]
    pub description: Option<Option<Description>>,
    /// Enabling clears `disabled_reason` and `failing_since`.
    pub enabled: Option<bool>,
}

/// `201` answer of endpoint creation, and answer of a secret rotation: the
/// only times the secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    pub webhook: WebhookEndpoint,
    /// `whsec_` + base64: the Standard Webhooks signing secret.
    pub secret: String,
}

/// A new signing secret: 32 random bytes.
fn new_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with the secret's key.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> DomainResult<String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| DomainError::internal("a webhook secret is not base64"))?;
    let mut mac = hmac::Hmac::<sha2_next::Sha256>::new_from_slice(&key)
        .map_err(|_| DomainError::internal("a webhook secret has an unusable length"))?;
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

/// The body of every attempt of a delivery of `event`.
pub fn payload(kind: EventType, at: Timestamp, data: &serde_json::Value) -> String {
    serde_json::json!({
        "type": kind.as_str(),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": data,
    })
    .to_string()
}

fn parse_events(events: NonEmpty<EventFilter>) -> DomainResult<Vec<String>> {
    let events = events.into_inner();
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for EventFilter(e) in events {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.len() > 1 && out.iter().any(|e| e == "*") {
        return Err(DomainError::invalid("\"*\" already means every event type: give it alone"));
    }
    Ok(out)
}

/// Whether an endpoint wants this event.
pub fn subscribed(w: &WebhookEndpoint, kind: EventType, project_id: Option<&str>) -> bool {
    w.enabled
        && w.events.iter().any(|e| e == "*" || e == kind.as_str())
        && w.project_id.as_deref().is_none_or(|p| project_id == Some(p))
}

/// Delay before the next attempt, spread by `jitter` (a fraction) either way.
fn jittered(d: Duration, jitter: f64) -> Duration {
    use rand::Rng;
    if jitter <= 0.0 || d.is_zero() {
        return d;
    }
    d.mul_f64(rand::thread_rng().gen_range((1.0 - jitter)..=(1.0 + jitter)))
}

/// The wait before the next attempt after `attempts` failed ones in this
/// round, or `None` when the schedule is used up. A `Retry-After` longer than
/// the schedule's delay wins, up to `max_retry_after`.
fn next_delay(settings: &WebhookSettings, attempts: u32, retry_after: Option<Duration>) -> Option<Duration> {
    let delay = *settings.retry_schedule.get((attempts as usize).checked_sub(1)?)?;
    let delay = jittered(delay, settings.jitter);
    Some(match retry_after {
        Some(asked) => delay.max(asked.min(settings.max_retry_after)),
        None => delay,
    })
}

impl App {
    /// Checks a URL given for an endpoint and returns it normalized.
    async fn parse_target(&self, raw: &str) -> DomainResult<String> {
        let url = url::Url::parse(raw).map_err(|e| DomainError::invalid(format!("url is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DomainError::invalid("url must be an http:// or https:// URL"));
        }
        if url.host().is_none() {
            return Err(DomainError::invalid("url must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DomainError::invalid(
                "url must not carry credentials; verify the webhook-signature header instead",
            ));
        }
        if url.fragment().is_some() {
            return Err(DomainError::invalid("url must not have a #fragment"));
        }
        self.egress.check_url(&url).await.map_err(|e| DomainError::invalid(format!("url refused: {e}")))?;
        Ok(url.to_string())
    }

    async fn check_webhook_project(&self, org_id: &str, project_id: &str) -> DomainResult<()> {
        match self.store.get_project(project_id).await? {
            Some(p) if p.organization_id == org_id && p.state != ProjectState::Deleted => Ok(()),
            _ => Err(DomainError::NotFound(format!("no project {project_id}"))),
        }
    }

    fn authorize_webhooks(p: &Principal, org_id: &str, write: bool) -> DomainResult<()> {
        p.require(if write { Scope::OrganizationsWrite } else { Scope::OrganizationsRead })?;
        p.check_org(org_id, "organization", org_id)?;
        // An endpoint can see every project's events: a project-scoped key may not touch them.
        p.require_org_wide()
    }

    async fn load_webhook(&self, org_id: &str, id: &str) -> DomainResult<WebhookEndpoint> {
        self.store.get_webhook(org_id, id).await?.ok_or_else(|| DomainError::NotFound(format!("no webhook {id}")))
    }

    pub async fn create_webhook(
        &self,
        p: &Principal,
        org_id: &str,
        req: CreateWebhook,
    ) -> DomainResult<WebhookWithSecret> {
        Self::authorize_webhooks(p, org_id, true)?;
        let events = parse_events(req.events)?;
        let description = req.description.and_then(Text::into_inner);
        if let Some(project_id) = &req.project_id {
            self.check_webhook_project(org_id, project_id).await?;
        }
        let url = self.parse_target(req.url.as_str()).await?;
        let secret = new_secret();
        let now = self.now();
        let webhook = WebhookEndpoint {
            id: ids::new_id(ids::WEBHOOK),
            organization_id: org_id.to_string(),
            url,
            events,
            project_id: req.project_id,
            description,
            enabled: true,
            disabled_reason: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
            secret_sealed: self.secrets.seal(&secret).await?,
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
        };
        let quota = self.settings.quotas.claim(QuotaKind::Webhooks, org_id);
        self.store.insert_webhook(&webhook, Some(&quota), crate::scope::held().as_ref()).await?;
        tracing::info!(webhook_id = %webhook.id, "webhook endpoint created");
        Ok(WebhookWithSecret { webhook, secret })
    }

    pub async fn list_webhooks(&self, p: &Principal, org_id: &str, page: &Page) -> DomainResult<Vec<WebhookEndpoint>> {
        Self::authorize_webhooks(p, org_id, false)?;
        self.store.list_webhooks(org_id, page).await
    }

    pub async fn get_webhook(&self, p: &Principal, org_id: &str, id: &str) -> DomainResult<WebhookEndpoint> {
        Self::authorize_webhooks(p, org_id, false)?;
        self.load_webhook(org_id, id).await
    }

    pub async fn update_webhook(
        &self,
        p: &Principal,
        org_id: &str,
        id: &str,
        req: UpdateWebhook,
    ) -> DomainResult<WebhookEndpoint> {
        Self::authorize_webhooks(p, org_id, true)?;
        let mut w = self.load_webhook(org_id, id).await?;
        if let Some(events) = req.events {
            w.events = parse_events(events)?;
        }
        if let Some(description) = req.description {
            w.description = description.and_then(|d| d.into_inner());
        }
        if let Some(project_id) = req.project_id {
            if let Some(project_id) = &project_id {
                self.check_webhook_project(org_id, project_id).await?;
            }
            w.project_id = project_id;
        }
        if let Some(url) = req.url {
            w.url = self.parse_target(url.as_str()).await?;
        }
        let reenabled = req.enabled.is_some_and(|enabled| w.set_enabled(enabled));
        let read_at = w.updated_at;
        w.updated_at = self.now();
        self.write_webhook(&w, read_at, reenabled).await?;
        self.load_webhook(org_id, id).await
    }

    /// Writes an edited endpoint unless it changed since it was read (a
    /// concurrent edit or rotation, or a disable by the delivery loop).
    async fn write_webhook(&self, w: &WebhookEndpoint, read_at: Timestamp, reenabled: bool) -> DomainResult<()> {
        if self.store.update_webhook(w, read_at, reenabled).await? {
            return Ok(());
        }
        self.load_webhook(&w.organization_id, &w.id).await?;
        Err(DomainError::Conflict(format!("webhook {} changed while this request ran; read it again and retry", w.id)))
    }

    pub async fn delete_webhook(&self, p: &Principal, org_id: &str, id: &str) -> DomainResult<()> {
        Self::authorize_webhooks(p, org_id, true)?;
        if !self.store.delete_webhook(org_id, id).await? {
            return Err(DomainError::NotFound(format!("no webhook {id}")));
        }
        tracing::info!(webhook_id = %id, "webhook endpoint deleted");
        Ok(())
    }

    /// A new secret signs from now on; the old one signs alongside it for
    /// `previous_secret_grace`, so receivers can switch without a gap.
    pub async fn rotate_webhook_secret(
        &self,
        p: &Principal,
        org_id: &str,
        id: &str,
    ) -> DomainResult<WebhookWithSecret> {
        Self::authorize_webhooks(p, org_id, true)?;
        let mut w = self.load_webhook(org_id, id).await?;
        let secret = new_secret();
        let now = self.now();
        w.previous_secret_sealed = Some(std::mem::replace(&mut w.secret_sealed, self.secrets.seal(&secret).await?));
        w.previous_secret_expires_at = Some(add(now, self.settings.webhooks.previous_secret_grace));
        let read_at = w.updated_at;
        w.updated_at = now;
        self.write_webhook(&w, read_at, false).await?;
        tracing::info!(webhook_id = %id, "webhook secret rotated");
        Ok(WebhookWithSecret { webhook: w, secret })
    }

    /// Sends a `webhook.ping` to this endpoint alone.
    pub async fn ping_webhook(&self, p: &Principal, org_id: &str, id: &str) -> DomainResult<Delivery> {
        Self::authorize_webhooks(p, org_id, true)?;
        let w = self.load_webhook(org_id, id).await?;
        if !w.enabled {
            return Err(DomainError::Conflict(format!("webhook {id} is disabled; enable it first")));
        }
        let now = self.now();
        let event_id = ids::new_id(ids::EVENT);
        let body = payload(EventType::WebhookPing, now, &serde_json::json!({ "webhook": w }));
        let delivery =
            self.store.create_delivery(&self.new_delivery(&w, &event_id, EventType::WebhookPing, body)).await?;
        self.queue_attempt(&delivery.id, Duration::ZERO).await?;
        Ok(delivery)
    }

    pub async fn list_deliveries(
        &self,
        p: &Principal,
        org_id: &str,
        webhook_id: &str,
        page: &Page,
    ) -> DomainResult<Vec<Delivery>> {
        Self::authorize_webhooks(p, org_id, false)?;
        self.load_webhook(org_id, webhook_id).await?;
        self.store.list_deliveries(webhook_id, page).await
    }

    /// Sends a delivery again, with a fresh retry schedule.
    pub async fn redeliver(
        &self,
        p: &Principal,
        org_id: &str,
        webhook_id: &str,
        delivery_id: &str,
    ) -> DomainResult<Delivery> {
        Self::authorize_webhooks(p, org_id, true)?;
        let w = self.load_webhook(org_id, webhook_id).await?;
        let mut d = match self.store.get_delivery(delivery_id).await? {
            Some(d) if d.webhook_id == w.id => d,
            _ => return Err(DomainError::NotFound(format!("no delivery {delivery_id}"))),
        };
        if !w.enabled {
            return Err(DomainError::Conflict(format!("webhook {webhook_id} is disabled; enable it first")));
        }
        if d.state == DeliveryState::Pending {
            return Err(DomainError::Conflict(format!("delivery {delivery_id} is already pending")));
        }
        let now = self.now();
        d.state = DeliveryState::Pending;
        d.round_attempts = 0;
        d.next_attempt_at = Some(now);
        d.lease_until = None;
        d.updated_at = now;
        self.store.update_delivery(&d).await?;
        self.queue_attempt(&d.id, Duration::ZERO).await?;
        tracing::info!(delivery_id = %d.id, "redelivery requested");
        Ok(d)
    }

    fn new_delivery(&self, w: &WebhookEndpoint, event_id: &str, kind: EventType, body: String) -> Delivery {
        let now = self.now();
        Delivery {
            id: ids::new_id(ids::DELIVERY),
            webhook_id: w.id.clone(),
            organization_id: w.organization_id.clone(),
            event_id: event_id.to_string(),
            event_type: kind,
            state: DeliveryState::Pending,
            attempt_count: 0,
            next_attempt_at: Some(now),
            created_at: now,
            updated_at: now,
            payload: body,
            attempts: Vec::new(),
            round_attempts: 0,
            lease_until: None,
        }
    }

    async fn queue_attempt(&self, delivery_id: &str, delay: Duration) -> DomainResult<()> {
        self.webhook_queue.send(&WebhookMessage::Delivery(delivery_id.to_string()).to_body(), delay).await
    }

    /// Publishes the events, then marks them published.
    async fn publish_and_mark(&self, events: &[Event]) -> DomainResult<()> {
        self.bus.publish(events).await?;
        let now = self.now();
        for event in events {
            self.store.mark_event_published(&event.id, now).await?;
        }
        Ok(())
    }

    /// Publishes events that were written with a state change. A failure
    /// leaves them (or some of them) unpublished, for the sweeper to publish again.
    pub async fn publish_events(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.publish_and_mark(events).await {
            tracing::warn!(error = %e, "could not publish events; the sweeper will retry");
        }
    }

    /// Sweeper: publishes events left unpublished (a crash or a bus outage
    /// between the state change and its publication). Returns how many.
    pub async fn republish_events(&self) -> DomainResult<usize> {
        let mut total = 0;
        loop {
            let events = self.store.list_unpublished_events(100).await?;
            if events.is_empty() {
                return Ok(total);
            }
            self.publish_and_mark(&events).await?;
            total += events.len();
        }
    }

    /// Sweeper: queues an attempt for every delivery that is due and has no
    /// live message (its retry was further off than a queue delay allows, or
    /// a message was lost). Returns how many.
    pub async fn send_due_deliveries(&self) -> DomainResult<usize> {
        let now = self.now();
        let due = self.store.list_due_deliveries(sub(now, self.settings.webhooks.overdue_after), now, 500).await?;
        for d in &due {
            self.queue_attempt(&d.id, Duration::ZERO).await?;
        }
        Ok(due.len())
    }

    /// Handles one webhook-queue message. `RetryAfter` leaves the message on
    /// the queue to come back later (a store error, or a delivery leased by
    /// an attempt that may still be running).
    pub async fn handle_webhook_message(&self, body: &str) -> Disposition {
        let message: WebhookMessage = match serde_json::from_str(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "dropping a malformed webhook-queue message");
                return Disposition::Done;
            }
        };
        let result = match &message {
            WebhookMessage::Event(event) => self.fan_out(event).await.map(|()| Disposition::Done),
            WebhookMessage::Delivery(id) => self.attempt_delivery(id).await,
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "webhook message failed; it will come back");
            Disposition::Failed(Duration::from_secs(5))
        })
    }

    /// One delivery per subscribed endpoint of the event's organization.
    async fn fan_out(&self, event: &Event) -> DomainResult<()> {
        let body = payload(event.kind, event.created_at, &event.data);
        let mut page = Page::first(100);
        loop {
            let endpoints = self.store.list_webhooks(&event.organization_id, &page).await?;
            for w in &endpoints {
                if !subscribed(w, event.kind, event.project_id.as_deref()) {
                    continue;
                }
                let d = self.store.create_delivery(&self.new_delivery(w, &event.id, event.kind, body.clone())).await?;
                // A delivery made by an earlier run of this message already has its message.
                if d.state == DeliveryState::Pending && d.attempt_count == 0 {
                    self.queue_attempt(&d.id, Duration::ZERO).await?;
                }
            }
            match endpoints.last() {
                Some(last) if endpoints.len() == page.limit => page.before = Some(last.id.clone()),
                _ => return Ok(()),
            }
        }
    }

    async fn attempt_delivery(&self, id: &str) -> DomainResult<Disposition> {
        let settings = &self.settings.webhooks;
        let now = self.now();
        let lease = add(now, settings.timeout + Duration::from_secs(15));
        let Some(d) = self.store.claim_delivery(id, now, lease).await? else {
            return self.unclaimed(id, now).await;
        };
        let span = tracing::info_span!("delivery", delivery_id = %d.id, webhook_id = %d.webhook_id);
        tracing::Instrument::instrument(self.attempt_claimed(d, now), span).await
    }

    /// An attempt of a delivery this worker has claimed, inside its span
    /// (the span is entered on each poll, never held across an `.await`).
    async fn attempt_claimed(&self, mut d: Delivery, now: Timestamp) -> DomainResult<Disposition> {
        let settings = &self.settings.webhooks;
        let endpoint = self.store.get_webhook(&d.organization_id, &d.webhook_id).await?;
        let Some(w) = endpoint.filter(|w| w.enabled) else {
            d.state = DeliveryState::Failed;
            d.next_attempt_at = None;
            d.lease_until = None;
            d.updated_at = now;
            self.store.update_delivery(&d).await?;
            tracing::info!("delivery dropped: its endpoint is disabled or gone");
            return Ok(Disposition::Done);
        };

        let timestamp = now.timestamp();
        let mut signatures =
            vec![sign(&self.secrets.open(&w.secret_sealed).await?, &d.event_id, timestamp, &d.payload)?];
        if let (Some(previous), Some(until)) = (&w.previous_secret_sealed, w.previous_secret_expires_at) {
            if until > now {
                signatures.push(sign(&self.secrets.open(previous).await?, &d.event_id, timestamp, &d.payload)?);
            }
        }
        let request = WebhookRequest {
            url: w.url.clone(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("user-agent".into(), concat!("CapyDB-Webhooks/", env!("CARGO_PKG_VERSION")).into()),
                ("webhook-id".into(), d.event_id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signatures.join(" ")),
            ],
            body: d.payload.clone(),
            timeout: settings.timeout,
        };
        let started = Instant::now();
        let result = match self.webhook_sender() {
            Ok(sender) => sender.send(&request).await,
            Err(e) => Err(e),
        };
        let latency_ms = started.elapsed().as_millis() as u64;

        d.attempt_count += 1;
        d.round_attempts += 1;
        d.lease_until = None;
        d.updated_at = self.now();
        let mut attempt = DeliveryAttempt {
            number: d.attempt_count,
            attempted_at: now,
            status_code: None,
            latency_ms,
            response_body: None,
            error: None,
        };
        let mut retry_after = None;
        let mut disable = None;
        match result {
            Ok(r) => {
                attempt.status_code = Some(r.status);
                attempt.response_body = Some(r.body);
                retry_after = r.retry_after;
                if r.status == 410 {
                    disable = Some("the endpoint answered 410 Gone".to_string());
                }
            }
            Err(WebhookSendError::Refused(e)) | Err(WebhookSendError::Failed(e)) => attempt.error = Some(e),
        }
        let ok = attempt.status_code.is_some_and(|s| (200..300).contains(&s));
        let failing_since = self.store.set_webhook_health(&w.organization_id, &w.id, ok, now).await?;
        if let Some(since) = failing_since {
            if disable.is_none()
                && now.signed_duration_since(since).to_std().unwrap_or_default() >= settings.disable_after
            {
                disable = Some(format!("every attempt failed for {} days", settings.disable_after.as_secs() / 86_400));
            }
        }

        let mut next = None;
        if ok {
            d.state = DeliveryState::Succeeded;
        } else if disable.is_some() {
            d.state = DeliveryState::Failed;
        } else if let Some(delay) = next_delay(settings, d.round_attempts, retry_after) {
            next = Some(delay);
        } else {
            d.state = DeliveryState::Failed;
        }
        d.next_attempt_at = next.map(|delay| add(now, delay));
        self.store.record_attempt(&d, &attempt).await?;
        match (d.state, attempt.status_code) {
            (DeliveryState::Succeeded, Some(status)) => tracing::info!(status, latency_ms, "webhook delivered"),
            (state, status) => tracing::info!(
                status,
                error = attempt.error.as_deref().unwrap_or(""),
                attempt = d.attempt_count,
                state = state.as_str(),
                retry_in_ms = next.map(|n| n.as_millis() as u64),
                "webhook attempt failed"
            ),
        }
        if let Some(reason) = disable {
            self.store.disable_webhook(&w.organization_id, &w.id, &reason, now).await?;
            tracing::warn!(reason = %reason, "webhook endpoint disabled");
        }
        if let Some(delay) = next.filter(|d| *d <= settings.max_queue_delay) {
            self.queue_attempt(&d.id, delay).await?;
        }
        Ok(Disposition::Done)
    }

    /// Why a delivery message found nothing to do, and when to look again.
    async fn unclaimed(&self, id: &str, now: Timestamp) -> DomainResult<Disposition> {
        let Some(d) = self.store.get_delivery(id).await? else { return Ok(Disposition::Done) };
        if d.state != DeliveryState::Pending {
            return Ok(Disposition::Done);
        }
        let wait_until = match (d.lease_until.filter(|l| *l > now), d.next_attempt_at) {
            // Someone holds it: if that attempt dies, this message takes over.
            (Some(lease), _) => lease,
            (None, Some(next)) => next,
            (None, None) => return Ok(Disposition::Done),
        };
        let wait = wait_until.signed_duration_since(now).to_std().unwrap_or_default();
        if wait > self.settings.webhooks.max_queue_delay {
            // The sweeper sends it when it is due.
            return Ok(Disposition::Done);
        }
        Ok(Disposition::RetryAfter(wait.max(Duration::from_millis(100))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks reference implementations' test suites.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn events_are_checked_and_deduplicated() {
        let events = |v: &str| serde_json::from_str::<NonEmpty<EventFilter>>(v);
        let ok = parse_events(events(r#"["job.failed", "project.ready", "job.failed"]"#).unwrap()).unwrap();
        assert_eq!(ok, ["job.failed", "project.ready"]);
        assert_eq!(parse_events(events(r#"["*"]"#).unwrap()).unwrap(), ["*"]);
        assert!(events("[]").is_err());
        assert!(events(r#"["project.exploded"]"#).unwrap_err().to_string().contains("unknown event"));
        assert!(parse_events(events(r#"["*", "job.failed"]"#).unwrap()).is_err());
    }

    fn endpoint(events: &[&str], project: Option<&str>, enabled: bool) -> WebhookEndpoint {
        let now = chrono::Utc::now();
        WebhookEndpoint {
            id: "whk_1".into(),
            organization_id: "org_1".into(),
            url: "https://example.com/hook".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            project_id: project.map(str::to_string),
            description: None,
            enabled,
            disabled_reason: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
            secret_sealed: String::new(),
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
        }
    }

    #[test]
    fn subscriptions_filter_by_type_project_and_state() {
        assert!(subscribed(&endpoint(&["*"], None, true), EventType::JobFailed, Some("prj_a")));
        assert!(subscribed(&endpoint(&["job.failed"], None, true), EventType::JobFailed, None));
        assert!(!subscribed(&endpoint(&["job.failed"], None, true), EventType::JobCompleted, None));
        assert!(subscribed(&endpoint(&["*"], Some("prj_a"), true), EventType::JobFailed, Some("prj_a")));
        assert!(!subscribed(&endpoint(&["*"], Some("prj_a"), true), EventType::JobFailed, Some("prj_b")));
        assert!(!subscribed(&endpoint(&["*"], Some("prj_a"), true), EventType::JobFailed, None));
        assert!(!subscribed(&endpoint(&["*"], None, false), EventType::JobFailed, None));
    }

    #[test]
    fn payload_has_exactly_type_timestamp_and_data() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").unwrap().to_utc();
        let body = payload(EventType::ProjectReady, at, &serde_json::json!({"project": {"id": "prj_1"}}));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "project.ready", "timestamp": "2026-01-02T03:04:05.123456Z",
                               "data": {"project": {"id": "prj_1"}}})
        );
    }

    #[test]
    fn jitter_stays_within_its_band() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(100), 0.1);
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110), "{d:?}");
        }
        assert_eq!(jittered(Duration::ZERO, 0.1), Duration::ZERO);
    }

    #[test]
    fn the_schedule_is_eight_attempts_and_retry_after_can_only_lengthen_a_wait() {
        let settings = WebhookSettings { jitter: 0.0, ..WebhookSettings::default() };
        let secs = |attempts, ra: Option<u64>| {
            next_delay(&settings, attempts, ra.map(Duration::from_secs)).map(|d| d.as_secs())
        };
        let waits: Vec<Option<u64>> = (1..=8).map(|n| secs(n, None)).collect();
        assert_eq!(
            waits,
            [Some(5), Some(300), Some(1800), Some(7200), Some(18_000), Some(36_000), Some(36_000), None],
            "immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts"
        );
        assert_eq!(secs(1, Some(120)), Some(120), "Retry-After beyond the schedule's delay is honoured");
        assert_eq!(secs(2, Some(10)), Some(300), "a shorter Retry-After does not hurry the schedule");
        assert_eq!(secs(1, Some(10 * 86_400)), Some(86_400), "Retry-After is capped");
        assert_eq!(secs(8, Some(60)), None, "Retry-After does not extend a finished schedule");
        assert_eq!(secs(0, None), None);
    }

    #[test]
    fn queue_messages_round_trip() {
        let m = WebhookMessage::Delivery("dlv_1".into());
        assert_eq!(m.to_body(), r#"{"delivery":"dlv_1"}"#);
        assert_eq!(serde_json::from_str::<WebhookMessage>(&m.to_body()).unwrap(), m);
    }
}
