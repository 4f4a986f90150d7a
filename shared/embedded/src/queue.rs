//! `JobQueue` on SQLite with SQS semantics: delay, visibility timeout,
//! receive count, dead-letter queue, and receipts that go stale when the
//! message is received again.
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::ports::{JobQueue, QueueMessage};
use capydb_domain::DomainResult;
use rand::RngCore;
use rusqlite::{params, Connection, TransactionBehavior};

use crate::db::{self, now_nanos, sql_err, sql_limit};

/// One named queue in a SQLite file. Queues live in their own tables, so the
/// file can be the store's; several queues (and handles on the same queue,
/// in this process or another) can share it.
pub struct SqliteQueue {
    conn: Mutex<Connection>,
    name: String,
    max_receives: u32,
    /// Told of every message this process sends or makes visible sooner:
    /// an idle consumer wakes at once instead of at its next poll.
    arrived: tokio::sync::Notify,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue").field("name", &self.name).field("max_receives", &self.max_receives).finish()
    }
}

impl SqliteQueue {
    /// Opens the queue `queue_name` in the database at `path` (creating the
    /// file and schema if needed). A message received `max_receives` times
    /// goes to the dead-letter queue on its next receive instead of being
    /// delivered again.
    pub fn open(path: &Path, queue_name: &str, max_receives: u32) -> DomainResult<Self> {
        let conn = db::open_writer(path)?;
        Ok(SqliteQueue {
            conn: Mutex::new(conn),
            name: queue_name.to_string(),
            max_receives,
            arrived: tokio::sync::Notify::new(),
        })
    }
}

/// The shortest an idle consumer's wait lasts without a message announced.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// `now + d` in epoch nanoseconds, saturating (a huge timeout means "never").
fn after(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A fresh receipt for one delivery: `<message id>:<random>`. The id part
/// makes delete and change_visibility a primary-key lookup; the random part
/// makes receipts of earlier deliveries (and guessed ones) stale.
fn new_receipt(id: i64) -> String {
    let mut token = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut token);
    let mut receipt = format!("{id}:");
    for b in token {
        // Writing to a String cannot fail.
        let _ = write!(receipt, "{b:02x}");
    }
    receipt
}

/// The message id a receipt names; `None` for something that is no receipt,
/// which is treated like a stale one.
fn receipt_id(receipt: &str) -> Option<i64> {
    receipt.split_once(':').and_then(|(id, _)| id.parse().ok())
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn send(&self, body: &str, delay: Duration) -> DomainResult<()> {
        let now = now_nanos();
        let conn = db::lock(&self.conn);
        conn.prepare_cached(
            "INSERT INTO queue_messages (queue, body, sent_at, visible_at, receive_count) VALUES (?1, ?2, ?3, ?4, 0)",
        )
        .and_then(|mut s| s.execute(params![self.name, body, now, after(now, delay)]))
        .map_err(sql_err("send the message"))?;
        self.arrived.notify_one();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> DomainResult<Vec<QueueMessage>> {
        let mut conn = db::lock(&self.conn);
        // IMMEDIATE: two receivers on the file must not pick the same message.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err("receive messages"))?;
        let now = now_nanos();
        let visible_at = after(now, visibility);
        let mut out = Vec::new();
        // Ids already looked at in this call: with a zero visibility timeout a
        // delivered message would otherwise be picked again at once.
        let mut after_id = 0i64;
        while out.len() < max {
            let batch: Vec<(i64, String, i64, u32)> = tx
                .prepare_cached(
                    "SELECT id, body, sent_at, receive_count FROM queue_messages \
                     WHERE queue = ?1 AND visible_at <= ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                )
                .and_then(|mut s| {
                    s.query_map(params![self.name, now, after_id, sql_limit(max - out.len())], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect()
                })
                .map_err(sql_err("receive messages"))?;
            if batch.is_empty() {
                break;
            }
            for (id, body, sent_at, count) in batch {
                after_id = id;
                if count >= self.max_receives {
                    tx.prepare_cached(
                        "INSERT INTO queue_dead_letters (queue, body, sent_at, receive_count, moved_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![self.name, body, sent_at, count, now]))
                    .and_then(|_| tx.prepare_cached("DELETE FROM queue_messages WHERE id = ?1"))
                    .and_then(|mut s| s.execute([id]))
                    .map_err(sql_err("move a message to the dead-letter queue"))?;
                    continue;
                }
                let receipt = new_receipt(id);
                let receive_count = count.saturating_add(1);
                tx.prepare_cached(
                    "UPDATE queue_messages SET receive_count = ?2, visible_at = ?3, receipt = ?4 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, receive_count, visible_at, receipt]))
                .map_err(sql_err("receive messages"))?;
                out.push(QueueMessage { receipt, body, receive_count });
            }
        }
        tx.commit().map_err(sql_err("receive messages"))?;
        Ok(out)
    }

    async fn delete(&self, receipt: &str) -> DomainResult<()> {
        let Some(id) = receipt_id(receipt) else { return Ok(()) };
        let conn = db::lock(&self.conn);
        conn.prepare_cached("DELETE FROM queue_messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3")
            .and_then(|mut s| s.execute(params![id, self.name, receipt]))
            .map(drop)
            .map_err(sql_err("delete the message"))
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> DomainResult<()> {
        let Some(id) = receipt_id(receipt) else { return Ok(()) };
        let visible_at = after(now_nanos(), timeout);
        let conn = db::lock(&self.conn);
        conn.prepare_cached("UPDATE queue_messages SET visible_at = ?4 WHERE id = ?1 AND queue = ?2 AND receipt = ?3")
            .and_then(|mut s| s.execute(params![id, self.name, receipt, visible_at]))
            .map_err(sql_err("change the message's visibility"))?;
        self.arrived.notify_one();
        Ok(())
    }

    /// Until a message this process sends (or makes visible sooner) is
    /// announced, the earliest delayed or invisible one becomes visible, or
    /// `max` passes (a message another process sent is seen then).
    async fn wait_for_message(&self, max: Duration) {
        // Registered before the look at the table: a send between the two
        // still wakes this wait.
        let arrived = self.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let next: Option<i64> = {
            let conn = db::lock(&self.conn);
            conn.prepare_cached("SELECT MIN(visible_at) FROM queue_messages WHERE queue = ?1")
                .and_then(|mut s| s.query_row([&self.name], |r| r.get(0)))
                .unwrap_or(None)
        };
        let wait = match next {
            Some(at) => Duration::from_nanos(u64::try_from(at.saturating_sub(now_nanos())).unwrap_or(0)).min(max),
            None => max,
        };
        // Never a spin: a message visible now that the receive before this
        // did not take (it failed, or another consumer took it meanwhile)
        // is asked for again after a breath.
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep(wait.max(MIN_WAIT)) => {}
        }
    }

    async fn dead_letters(&self, max: usize) -> DomainResult<Vec<String>> {
        let conn = db::lock(&self.conn);
        conn.prepare_cached("SELECT body FROM queue_dead_letters WHERE queue = ?1 ORDER BY id LIMIT ?2")
            .and_then(|mut s| s.query_map(params![self.name, sql_limit(max)], |r| r.get(0))?.collect())
            .map_err(sql_err("list dead letters"))
    }

    async fn depth(&self) -> DomainResult<u64> {
        self.len().map(|n| n as u64)
    }
}

impl SqliteQueue {
    /// How many messages wait in the queue, visible or not (for metrics and tests).
    pub fn len(&self) -> DomainResult<usize> {
        let conn = db::lock(&self.conn);
        let n: i64 = conn
            .prepare_cached("SELECT count(*) FROM queue_messages WHERE queue = ?1")
            .and_then(|mut s| s.query_row([&self.name], |r| r.get(0)))
            .map_err(sql_err("count messages"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Makes every received-but-unsettled message visible now. For a process
    /// that knows it is the queue's only consumer (capydb-local holds its
    /// data dir's lock) at start-up: those receives belonged to a process
    /// that died, and waiting out their visibility timeout only delays them.
    pub fn release_in_flight(&self) -> DomainResult<usize> {
        let now = now_nanos();
        let conn = db::lock(&self.conn);
        conn.prepare_cached(
            "UPDATE queue_messages SET visible_at = ?2, receipt = NULL WHERE queue = ?1 AND receipt IS NOT NULL AND visible_at > ?2",
        )
        .and_then(|mut s| s.execute(params![self.name, now]))
        .map_err(sql_err("release in-flight messages"))
    }

    /// True when no message waits in the queue.
    pub fn is_empty(&self) -> DomainResult<bool> {
        self.len().map(|n| n == 0)
    }
}
