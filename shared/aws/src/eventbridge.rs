//! `EventBus` on EventBridge: each event is one entry on the CapyDB bus,
//! source `capydb`, detail type the event type, detail the webhook-queue
//! message. The bus's rule sends every entry to the webhook queue, where it
//! arrives wrapped in EventBridge's envelope ([`unwrap_envelope`]).
use async_trait::async_trait;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use capydb_domain::model::Event;
use capydb_domain::ports::EventBus;
use capydb_domain::webhooks::WebhookMessage;
use capydb_domain::{DomainError, DomainResult};

pub const SOURCE: &str = "capydb";
/// PutEvents takes at most this many entries per call.
const BATCH: usize = 10;

pub struct EventBridgeBus {
    client: crate::client::ClientCell<Client>,
    bus: String,
}

impl EventBridgeBus {
    pub fn new(client: impl Into<crate::client::ClientCell<Client>>, bus: impl Into<String>) -> Self {
        EventBridgeBus { client: client.into(), bus: bus.into() }
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[Event]) -> DomainResult<()> {
        for chunk in events.chunks(BATCH) {
            let entries = chunk
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(e.kind.as_str())
                        .detail(WebhookMessage::Event(e.clone()).to_body())
                        .build()
                })
                .collect();
            let out = self.client.get().await?.put_events().set_entries(Some(entries)).send().await.map_err(|e| {
                let msg = DisplayErrorContext(&e).to_string();
                tracing::warn!(error = %msg, "EventBridge PutEvents failed");
                DomainError::Unavailable("publish events: the event bus is unavailable; retry later".into())
            })?;
            if out.failed_entry_count() > 0 {
                let why: Vec<String> =
                    out.entries().iter().filter_map(|r| r.error_message().map(str::to_string)).collect();
                tracing::warn!(failed = out.failed_entry_count(), errors = ?why, "EventBridge refused some events");
                // At least once: the caller leaves them unpublished and the sweeper retries.
                return Err(DomainError::Unavailable(format!(
                    "publish events: {} of {} were not accepted",
                    out.failed_entry_count(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}

/// A webhook-queue body as the webhook loop expects it: the `detail` of an
/// EventBridge envelope (what the rule's SQS target delivers), or the body
/// itself (a delivery attempt the app queued directly).
pub fn unwrap_envelope(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "detail-type")]
        _detail_type: String,
        source: String,
        detail: serde_json::Value,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(env) if env.source == SOURCE => env.detail.to_string(),
        _ => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_unwrapped_and_plain_bodies_kept() {
        let plain = r#"{"delivery":"dlv_1"}"#;
        assert_eq!(unwrap_envelope(plain), plain);
        let wrapped = r#"{"version":"0","id":"x","detail-type":"project.ready","source":"capydb","account":"1","time":"2026-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{"delivery":"dlv_2"}}"#;
        assert_eq!(unwrap_envelope(wrapped), r#"{"delivery":"dlv_2"}"#);
        // Someone else's event on the bus is not ours to unwrap.
        let foreign = wrapped.replace("\"capydb\"", "\"aws.events\"");
        assert_eq!(unwrap_envelope(&foreign), foreign);
    }
}
