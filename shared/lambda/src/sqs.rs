//! The SQS functions (`worker`, `worker-aurora`, `webhook-delivery`):
//! batches with partial failures, settled by the domain's one runtime.
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use capydb_aws::client::SdkCell;
use capydb_domain::jobs::Disposition;
use capydb_domain::ports::{JobQueue, QueueMessage};
use capydb_domain::runtime::{settle, JobHandler, MessageHandler, Settled, WebhookHandler};
use capydb_domain::App;
use lambda_runtime::{service_fn, LambdaEvent};

use crate::config::Config;
use crate::wiring::Role;
use crate::{start, Error};

/// Runs `handler` on every record of an SQS batch at once, settles each as
/// [`capydb_domain::runtime::settle`] says (the same settling as
/// `capydb-local`'s queues), and answers the records to retry
/// (`ReportBatchItemFailures`), so one bad message never makes Lambda retry
/// the others. An acknowledged record succeeds (Lambda deletes it); a
/// released one fails and counts toward the dead-letter limit; a panic in
/// `handler` fails only its record. `max_receives` is the queue's redrive
/// policy's maxReceiveCount, when known.
pub async fn sqs_batch(
    queue: Arc<dyn JobQueue>,
    handler: Arc<dyn MessageHandler>,
    max_receives: Option<u32>,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut tasks = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let message = QueueMessage {
            receipt: record.receipt_handle.clone().unwrap_or_default(),
            receive_count: record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
            body: record.body.unwrap_or_default(),
        };
        let (queue, handler) = (Arc::clone(&queue), Arc::clone(&handler));
        let task = tokio::spawn(async move {
            let disposition = handler.handle(&message.body).await;
            settle(queue.as_ref(), handler.as_ref(), &message, disposition, max_receives).await
        });
        tasks.push((id, task));
    }
    let mut response = SqsBatchResponse::default();
    for (id, task) in tasks {
        let ok = match task.await {
            Ok(Settled::Acknowledge) => true,
            Ok(Settled::Release) => false,
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

/// The webhook queue's handler in the functions: the rule's SQS target
/// wraps published events in EventBridge's envelope.
struct EnvelopedWebhooks(WebhookHandler);

#[async_trait]
impl MessageHandler for EnvelopedWebhooks {
    async fn handle(&self, body: &str) -> Disposition {
        self.0.handle(&capydb_aws::eventbridge::unwrap_envelope(body)).await
    }

    async fn dead_lettered(&self, body: &str, why: &str) {
        self.0.dead_lettered(body, why).await
    }
}

/// Handles the jobs queue's batches (`worker`).
pub async fn worker_batch(app: App, max_receives: u32, event: SqsEvent) -> SqsBatchResponse {
    let worker = format!("lambda-{}", std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "local".into()));
    let queue = Arc::clone(&app.queue);
    sqs_batch(queue, Arc::new(JobHandler { app, worker }), Some(max_receives), event).await
}

/// Handles the webhook queue's batches (`webhook-delivery`): published events
/// (in EventBridge's envelope) and delivery attempts.
pub async fn webhook_batch(app: App, event: SqsEvent) -> SqsBatchResponse {
    let queue = Arc::clone(&app.webhook_queue);
    // Its dead-letter limit is the template's business; nothing but a log
    // line would follow from knowing it.
    sqs_batch(queue, Arc::new(EnvelopedWebhooks(WebhookHandler { app })), None, event).await
}

/// `main` of a worker: the jobs queue's SQS event source. `role` is the
/// provider's ([`Role::server_worker`] in `worker`, [`Role::aurora_worker`]
/// in `worker-aurora`), so each binary links one provider.
pub async fn run_worker(role: fn(&Config, &Arc<SdkCell>) -> Result<Role, String>) -> Result<(), Error> {
    let (config, app) = start(role).await?;
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

    /// Answers what each body says.
    struct Scripted;

    #[async_trait]
    impl MessageHandler for Scripted {
        async fn handle(&self, body: &str) -> Disposition {
            match body {
                "done" => Disposition::Done,
                "wait" => Disposition::RetryAfter(std::time::Duration::from_secs(3600)),
                "fail" => Disposition::Failed(std::time::Duration::from_secs(1)),
                _ => panic!("a handler bug"),
            }
        }
        async fn dead_lettered(&self, body: &str, _why: &str) {
            panic!("{body} was received once of five; it is not dead-lettered");
        }
    }

    #[tokio::test]
    async fn a_batch_reports_only_its_failures_and_requeues_planned_waits() {
        let dir = std::env::temp_dir().join(capydb_domain::ids::new_id("sqs-batch"));
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite = Arc::new(SqliteQueue::open(&dir.join("q.db"), "jobs", 5).unwrap());
        let queue: Arc<dyn JobQueue> = sqlite.clone();
        let mut event = SqsEvent::default();
        event.records = vec![record("1", "done"), record("2", "wait"), record("3", "fail"), record("4", "panic")];
        let response = sqs_batch(Arc::clone(&queue), Arc::new(Scripted), Some(5), event).await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, ["3", "4"], "only the failed and the panicked records are retried by SQS");
        // The planned wait went back on the queue as a copy, delayed as asked.
        assert_eq!(sqlite.len().unwrap(), 1, "one copy waits in the queue");
        assert!(queue.receive(10, std::time::Duration::from_secs(5)).await.unwrap().is_empty(), "delayed");
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
