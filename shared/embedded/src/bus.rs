//! `EventBus` on the webhook queue: each published event becomes one
//! message for the webhook delivery loop (deployed, EventBridge and a rule
//! feeding an SQS queue play this part).
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::model::Event;
use capydb_domain::ports::{EventBus, JobQueue};
use capydb_domain::webhooks::WebhookMessage;
use capydb_domain::DomainResult;

pub struct QueueEventBus {
    queue: Arc<dyn JobQueue>,
}

impl QueueEventBus {
    pub fn new(queue: Arc<dyn JobQueue>) -> Self {
        QueueEventBus { queue }
    }
}

#[async_trait]
impl EventBus for QueueEventBus {
    async fn publish(&self, events: &[Event]) -> DomainResult<()> {
        for event in events {
            self.queue.send(&WebhookMessage::Event(event.clone()).to_body(), Duration::ZERO).await?;
        }
        Ok(())
    }
}
