//! `JobQueue` on SQS: the jobs queue and the webhook queue, each with its
//! dead-letter queue (the redrive policy in `infra/template.yaml`).
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use capydb_domain::ports::{JobQueue, QueueMessage};
use capydb_domain::{DomainError, DomainResult};

/// SQS's longest per-message delay. A longer wait arrives early; the job's
/// lease (or the delivery's `next_attempt_at`) sends it back to sleep.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS's longest visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

pub struct SqsQueue {
    client: crate::client::ClientCell<Client>,
    url: String,
    dead_letter_url: Option<String>,
}

/// Receipt errors: the message was deleted, received again since (a stale
/// receipt), or belongs to another queue. The port treats these as no-ops.
const RECEIPT_CODES: [&str; 4] = [
    "ReceiptHandleIsInvalid",
    "InvalidParameterValue",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];

fn sqs_error<E, R>(what: &str, e: &SdkError<E, R>) -> DomainError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::error::sdk_error(&crate::error::SQS, what, e)
}

/// Whole seconds, rounded up: a delay must never end early.
fn secs_up(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

impl SqsQueue {
    pub fn new(
        client: impl Into<crate::client::ClientCell<Client>>,
        url: impl Into<String>,
        dead_letter_url: Option<String>,
    ) -> Self {
        SqsQueue { client: client.into(), url: url.into(), dead_letter_url }
    }

    fn is_receipt_error<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
        matches!(e, SdkError::ServiceError(_)) && e.code().is_some_and(|c| RECEIPT_CODES.contains(&c))
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, body: &str, delay: Duration) -> DomainResult<()> {
        self.client
            .get()
            .await?
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(secs_up(delay.min(MAX_DELAY)))
            .send()
            .await
            .map(drop)
            .map_err(|e| sqs_error("send a queue message", &e))
    }

    async fn receive(&self, max: usize, visibility: Duration) -> DomainResult<Vec<QueueMessage>> {
        let max = max.clamp(1, 10);
        let out = self
            .client
            .get()
            .await?
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(secs_up(visibility.min(MAX_VISIBILITY)))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sqs_error("receive queue messages", &e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| QueueMessage {
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> DomainResult<()> {
        match self.client.get().await?.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) if Self::is_receipt_error(&e) => Ok(()),
            Err(e) => Err(sqs_error("delete a queue message", &e)),
        }
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> DomainResult<()> {
        let req = self
            .client
            .get()
            .await?
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_up(timeout.min(MAX_VISIBILITY)));
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if Self::is_receipt_error(&e) => Ok(()),
            Err(e) => Err(sqs_error("change a queue message's visibility", &e)),
        }
    }

    /// Peeks at the dead-letter queue (a receive with visibility 0, so the
    /// messages stay for an operator to inspect and redrive), oldest first.
    async fn dead_letters(&self, max: usize) -> DomainResult<Vec<String>> {
        let Some(dlq) = &self.dead_letter_url else {
            return Ok(Vec::new());
        };
        let out = self
            .client
            .get()
            .await?
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(0)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| sqs_error("read the dead-letter queue", &e))?;
        let mut msgs: Vec<(u64, String)> = out
            .messages()
            .iter()
            .map(|m| {
                let sent = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                (sent, m.body().unwrap_or_default().to_string())
            })
            .collect();
        msgs.sort_by_key(|(sent, _)| *sent);
        Ok(msgs.into_iter().map(|(_, b)| b).collect())
    }

    async fn depth(&self) -> DomainResult<u64> {
        let out = self
            .client
            .get()
            .await?
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sqs_error("read the queue's attributes", &e))?;
        let attrs = out.attributes();
        let count = |name: QueueAttributeName| -> u64 {
            attrs.and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }
}

/// The ARN of a queue, for redrive policies and EventBridge targets.
pub async fn arn_of(client: &Client, url: &str) -> DomainResult<String> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sqs_error("read a queue's ARN", &e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| DomainError::internal("SQS answered no queue ARN"))
}
