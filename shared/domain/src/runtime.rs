//! The one runtime of queue messages, for every shape: what happens to a
//! message once its handler answered a [`Disposition`] ([`settle`]), the
//! consumer loop `capydb-local` runs on its queues ([`consume`]), and the
//! periodic sweep ([`sweep_every`]). The SQS batch handler of the Lambda
//! functions settles its records with the same [`settle`], so a message
//! fares the same whether SQLite or SQS carried it:
//!
//! - `Done`: the message is acknowledged (deleted).
//! - `RetryAfter(d)`: a planned wait (a backoff, a lease held elsewhere). A
//!   fresh copy is queued with delay `d` and the original acknowledged, so
//!   waiting never counts toward the dead-letter limit. If the copy cannot
//!   be queued, the original is released and comes back after its
//!   visibility timeout.
//! - `Failed(d)`: the message is released, visible again after `d`; the
//!   receive counts toward the dead-letter limit. At the limit the queue
//!   moves it to its dead-letter queue instead of delivering it again, so
//!   the handler hears of it now ([`MessageHandler::dead_lettered`]): a job
//!   is failed with the reason, never left `running`.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::app::App;
use crate::jobs::Disposition;
use crate::ports::{JobQueue, QueueMessage};

/// The use case behind a queue: runs a message, and hears when one will
/// not be delivered again.
#[async_trait]
pub trait MessageHandler: Send + Sync {
    async fn handle(&self, body: &str) -> Disposition;
    /// The message failed its last allowed receive; the queue moves it to
    /// its dead-letter queue instead of delivering it again. `why` says so
    /// in a user's words.
    async fn dead_lettered(&self, body: &str, why: &str);
}

/// The jobs queue's handler: runs a job's steps as `worker`.
#[derive(Clone)]
pub struct JobHandler {
    pub app: App,
    pub worker: String,
}

#[async_trait]
impl MessageHandler for JobHandler {
    async fn handle(&self, body: &str) -> Disposition {
        self.app.run_job_message(body, &self.worker).await
    }

    async fn dead_lettered(&self, body: &str, why: &str) {
        // Fail its job now, or it stays running forever.
        if let Err(e) = self.app.abandon_job_message(body, why).await {
            tracing::error!(error = %e, "could not fail the job of a dead-lettered message; the sweeper re-drives it");
        }
    }
}

/// The webhook queue's handler: fans published events out into deliveries
/// and makes the attempts. A dead-lettered message has no job to fail; its
/// delivery (if it got that far) is retried by the sweep when due.
#[derive(Clone)]
pub struct WebhookHandler {
    pub app: App,
}

#[async_trait]
impl MessageHandler for WebhookHandler {
    async fn handle(&self, body: &str) -> Disposition {
        self.app.handle_webhook_message(body).await
    }

    async fn dead_lettered(&self, _body: &str, why: &str) {
        tracing::error!(reason = why, "a webhook-queue message goes to the dead-letter queue");
    }
}

/// What the carrier of a settled message does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Remove it: the local loop deletes it; the SQS batch handler reports
    /// the record a success, and Lambda deletes it.
    Acknowledge,
    /// Leave it: it comes back (its visibility is set already) and the
    /// receive counted. The SQS batch handler reports a batch item failure.
    Release,
}

/// Settles `message` of `queue` after `handler` answered `disposition` (see
/// the module's documentation). `max_receives` is the queue's dead-letter
/// limit (SQS's maxReceiveCount, `SqliteQueue`'s `max_receives`); `None`
/// when the caller does not know it (nothing is told of a dead letter then).
pub async fn settle(
    queue: &dyn JobQueue,
    handler: &dyn MessageHandler,
    message: &QueueMessage,
    disposition: Disposition,
    max_receives: Option<u32>,
) -> Settled {
    match disposition {
        Disposition::Done => Settled::Acknowledge,
        Disposition::RetryAfter(delay) => match queue.send(&message.body, delay).await {
            Ok(()) => Settled::Acknowledge,
            Err(e) => {
                tracing::warn!(error = %e, "could not queue a planned retry; the message comes back after its visibility timeout");
                Settled::Release
            }
        },
        Disposition::Failed(delay) => {
            if let Err(e) = queue.change_visibility(&message.receipt, delay).await {
                tracing::warn!(error = %e, "could not shorten the message's visibility");
            }
            if let Some(max) = max_receives.filter(|max| message.receive_count >= *max) {
                let count = message.receive_count;
                let why = format!(
                    "its queue message failed {count} times (the limit is {max}) and was moved to the dead-letter queue"
                );
                handler.dead_lettered(&message.body, &why).await;
            }
            Settled::Release
        }
    }
}

/// The longest an idle consumer waits before asking the queue again. The
/// SQLite queue wakes it sooner, when a message is sent or becomes visible
/// (`JobQueue::wait_for_message`): without that, a dozen idle consumers
/// polling every 100 ms cost a busy API 1% of its CPU, and an idle
/// capydb-local 120 wake-ups a second.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One consumer of a queue: what it receives from and hands messages to.
#[derive(Clone)]
pub struct Consumer {
    pub queue: Arc<dyn JobQueue>,
    pub handler: Arc<dyn MessageHandler>,
    /// The visibility timeout of each receive.
    pub visibility: Duration,
    /// The queue's dead-letter limit.
    pub max_receives: Option<u32>,
    /// The queue's name in logs.
    pub name: &'static str,
}

impl Consumer {
    /// The jobs queue's consumer, running jobs as `worker`.
    pub fn jobs(app: &App, worker: String, max_receives: u32) -> Consumer {
        Consumer {
            queue: Arc::clone(&app.queue),
            handler: Arc::new(JobHandler { app: app.clone(), worker }),
            visibility: app.settings.jobs.visibility,
            max_receives: Some(max_receives),
            name: "job",
        }
    }

    /// The webhook queue's consumer. Separate from the job workers, so a
    /// slow receiver never holds up a job.
    pub fn webhooks(app: &App, max_receives: u32) -> Consumer {
        Consumer {
            queue: Arc::clone(&app.webhook_queue),
            handler: Arc::new(WebhookHandler { app: app.clone() }),
            visibility: app.settings.webhooks.visibility,
            max_receives: Some(max_receives),
            name: "webhook",
        }
    }

    /// Receives and settles at most one message; false when there was none.
    pub async fn poll_once(&self) -> bool {
        let messages = match self.queue.receive(1, self.visibility).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, queue = self.name, "queue receive failed");
                // A queue that fails keeps failing for a while: ask again
                // after a pause, not at the next message's visibility.
                tokio::time::sleep(POLL_INTERVAL).await;
                return false;
            }
        };
        let any = !messages.is_empty();
        for m in messages {
            let disposition = self.handler.handle(&m.body).await;
            let settled = settle(self.queue.as_ref(), self.handler.as_ref(), &m, disposition, self.max_receives).await;
            if settled == Settled::Acknowledge {
                if let Err(e) = self.queue.delete(&m.receipt).await {
                    tracing::warn!(error = %e, queue = self.name, "could not delete a message; it will be redelivered");
                }
            }
        }
        any
    }

    /// Receives one message at a time until `stop`, settling each.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if !self.poll_once().await {
                tokio::select! {
                    _ = self.queue.wait_for_message(POLL_INTERVAL) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Sweeps every `every` until `stop` (see [`App::sweep`]).
pub async fn sweep_every(app: App, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        app.sweep().await;
    }
}
