//! The metadata store on one DynamoDB table (layout: `docs/data-model.md`).
//!
//! Every read on a request path is a `GetItem` or a `Query`; nothing scans.
//! Reads of one item are strongly consistent; listings come from the two
//! global secondary indexes and are eventually consistent (DynamoDB does not
//! offer more on a GSI), which the API documents for list endpoints. What the
//! SQLite store does in a transaction, this one does with `TransactWriteItems`
//! and conditions; the port contract suites hold both to the same rules.
mod idempotency;
pub mod item;
mod logins;
pub mod records;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    Select, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use capydb_domain::model::*;
use capydb_domain::ports::{
    Admission, HeldKey, IdempotencyBegin, IdempotencyClaim, Page, QuotaClaim, QuotaKind, ResourceWrite, Store,
    StoredAnswer, Usage,
};
use capydb_domain::{DomainError, DomainResult};

use item::{n, s, ts, Item};
use records::*;

/// Items of one transaction, at most this many (DynamoDB's limit).
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Retries of a transaction that collided with a concurrent one on the same item.
const CONFLICT_RETRIES: u32 = 4;
/// Tries of a transaction that counts: each cancellation that teaches it
/// something (a record's stored state, a counter to start, a hold or a
/// place released meanwhile) builds it again. A write usually learns one or
/// two things at once, so running out means constant interference.
const COUNTED_TRIES: u32 = 6;

pub struct DynamoStore {
    client: crate::client::ClientCell<Client>,
    table: String,
}

pub(crate) fn sdk_error<E, R>(what: &str, e: &SdkError<E, R>) -> DomainError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::error::sdk_error(&crate::error::DYNAMODB, what, e)
}

/// The write operations of one `TransactWriteItems`, with what the store
/// needs to interpret a cancellation.
#[derive(Default)]
struct Tx {
    items: Vec<TransactWriteItem>,
    /// Index of each item that takes a preview's name, with the name's key.
    name_claims: Vec<(usize, Preview)>,
    /// Previews written as deleted: their names are released after the commit.
    released_names: Vec<Preview>,
    /// Puts of projects, previews and backups, whose conditions assume a
    /// stored state (see [`Stored`]).
    counted: Vec<CountedAt>,
    /// Net change of each counter by the counted puts so far; `counters`
    /// turns them into one update per counter (a transaction may touch an
    /// item only once).
    deltas: Vec<((QuotaKind, String), i64)>,
    counters: Vec<CounterAt>,
}

/// What is stored under a counted record's key, as far as a transaction
/// knows: its put is conditioned on it, so a wrong guess cancels the
/// transaction instead of miscounting, and the store learns and tries again.
/// Counting by state change rather than by who writes keeps a resource
/// counted exactly while it exists and is not deleted, however often and
/// by whichever method it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Absent,
    /// Stored and not deleted: it counts.
    Live,
    Deleted,
}

/// Stored states learned from cancelled tries, by partition key.
type Known = HashMap<String, Stored>;

/// A counted put in a transaction.
struct CountedAt {
    at: usize,
    pk: String,
    sk: &'static str,
}

/// A counter update in a transaction.
struct CounterAt {
    at: usize,
    kind: QuotaKind,
    owner: String,
    /// The highest value the counter may have for the claim to pass.
    most: Option<i64>,
    claim: Option<QuotaClaim>,
}

/// A project, preview or backup about to be put.
struct CountedPut {
    item: Item,
    pk: String,
    sk: &'static str,
    kind: QuotaKind,
    owner: String,
    live: bool,
    /// The record's `deleted` state, as stored.
    deleted: &'static str,
}

/// What a cancelled counted transaction taught.
enum Learned {
    /// Something changed or was set up: build the transaction again.
    Retry,
    /// The claim is over its limit.
    Refused(DomainError),
    /// None of the counted items failed: the caller's own conditions did.
    Nothing,
}

/// A condition expression with the placeholders it uses (DynamoDB refuses
/// unused ones, so each condition carries exactly its own).
#[derive(Default)]
struct Cond {
    expr: String,
    names: Vec<(&'static str, &'static str)>,
    values: Vec<(&'static str, AttributeValue)>,
}

impl Cond {
    fn new(expr: impl Into<String>) -> Self {
        Cond { expr: expr.into(), ..Cond::default() }
    }

    fn name(mut self, placeholder: &'static str, attr: &'static str) -> Self {
        self.names.push((placeholder, attr));
        self
    }

    fn value(mut self, placeholder: &'static str, v: AttributeValue) -> Self {
        self.values.push((placeholder, v));
        self
    }
}

/// `builder` (a transaction item's builder) with `cond`'s expression,
/// names and values.
macro_rules! with_cond {
    ($builder:expr, $cond:expr) => {{
        let cond: Cond = $cond;
        let mut b = $builder.condition_expression(cond.expr);
        for (k, v) in cond.names {
            b = b.expression_attribute_names(k, v);
        }
        for (k, v) in cond.values {
            b = b.expression_attribute_values(k, v);
        }
        b
    }};
}

enum TxOutcome {
    Committed,
    /// Cancelled: the reason of each item, in order.
    Cancelled(Vec<CancellationReason>),
}

fn failed_at(reasons: &[CancellationReason], index: usize) -> bool {
    reasons.get(index).and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}

fn build<T>(what: &str, r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> DomainResult<T> {
    r.map_err(|e| DomainError::internal(format!("{what}: {e}")))
}

impl Tx {
    fn put(
        &mut self,
        table: &str,
        item: Item,
        condition: Option<(&str, Vec<(&str, AttributeValue)>)>,
    ) -> DomainResult<usize> {
        let mut put = Put::builder().table_name(table).set_item(Some(item));
        if let Some((expr, values)) = condition {
            put = put
                .condition_expression(expr)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            for (k, v) in values {
                put = put.expression_attribute_values(k, v);
            }
        }
        let put = build("build a transaction put", put.build())?;
        self.items.push(TransactWriteItem::builder().put(put).build());
        Ok(self.items.len() - 1)
    }

    /// A put under a condition with attribute names; a cancellation returns
    /// the stored item, so what the condition found needs no second read.
    fn put_when(&mut self, table: &str, item: Item, cond: Cond) -> DomainResult<usize> {
        let mut put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        put = with_cond!(put, cond);
        let put = build("build a transaction put", put.build())?;
        self.items.push(TransactWriteItem::builder().put(put).build());
        Ok(self.items.len() - 1)
    }

    /// A condition on an item the transaction does not write.
    fn check(&mut self, table: &str, pk: String, sk: &str, cond: Cond) -> DomainResult<usize> {
        let mut check = ConditionCheck::builder().table_name(table).key("pk", s(pk)).key("sk", s(sk));
        check = with_cond!(check, cond);
        let check = build("build a transaction condition check", check.build())?;
        self.items.push(TransactWriteItem::builder().condition_check(check).build());
        Ok(self.items.len() - 1)
    }

    /// An `UpdateItem` of an existing item: `expr` (say `SET #a = :a`) under
    /// `cond`, whose names and values serve both.
    fn update_when(&mut self, table: &str, pk: String, sk: &str, expr: &str, cond: Cond) -> DomainResult<usize> {
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(expr);
        update = with_cond!(update, cond);
        let update = build("build a transaction update", update.build())?;
        self.items.push(TransactWriteItem::builder().update(update).build());
        Ok(self.items.len() - 1)
    }

    /// Adds `delta` to a counter item's `n` (`ADD` starts a missing one at 0).
    fn add(&mut self, table: &str, pk: String, sk: &str, delta: i64, cond: Option<Cond>) -> DomainResult<usize> {
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("ADD #n :delta")
            .expression_attribute_names("#n", COUNTER_N)
            .expression_attribute_values(":delta", n(delta));
        if let Some(cond) = cond {
            update = with_cond!(update, cond);
        }
        let update = build("build a transaction update", update.build())?;
        self.items.push(TransactWriteItem::builder().update(update).build());
        Ok(self.items.len() - 1)
    }

    fn delete(
        &mut self,
        table: &str,
        pk: String,
        sk: &str,
        condition: Option<(&str, Vec<(&str, AttributeValue)>)>,
    ) -> DomainResult<usize> {
        let mut del = Delete::builder().table_name(table).key("pk", s(pk)).key("sk", s(sk));
        if let Some((expr, values)) = condition {
            del = del.condition_expression(expr);
            for (k, v) in values {
                del = del.expression_attribute_values(k, v);
            }
        }
        let del = build("build a transaction delete", del.build())?;
        self.items.push(TransactWriteItem::builder().delete(del).build());
        Ok(self.items.len() - 1)
    }

    /// Adds the items of a resource write: the resource itself and, for a
    /// preview, the claim on its name among the project's live previews.
    /// Projects, previews and backups are counted (see [`Stored`]); `fresh`
    /// is the kind being claimed, whose live writes are guessed new.
    fn resource(
        &mut self,
        table: &str,
        write: &ResourceWrite,
        known: &Known,
        fresh: Option<QuotaKind>,
    ) -> DomainResult<()> {
        match write {
            ResourceWrite::Nothing => {}
            ResourceWrite::Project(p) => {
                let put = CountedPut {
                    item: project_item(p),
                    pk: project_pk(&p.id),
                    sk: PROJECT_SK,
                    kind: QuotaKind::Projects,
                    owner: p.organization_id.clone(),
                    live: p.state != ProjectState::Deleted,
                    deleted: ProjectState::Deleted.as_str(),
                };
                self.counted(table, put, known, fresh)?;
            }
            ResourceWrite::Preview(p) => self.preview(table, p, known, fresh)?,
            ResourceWrite::Backup(b) => {
                let put = CountedPut {
                    item: backup_item(b),
                    pk: backup_pk(&b.id),
                    sk: BACKUP_SK,
                    kind: QuotaKind::Backups,
                    owner: b.project_id.clone(),
                    live: b.state != BackupState::Deleted,
                    deleted: BackupState::Deleted.as_str(),
                };
                self.counted(table, put, known, fresh)?;
            }
            ResourceWrite::Restore(r) => {
                self.put(table, restore_item(r), None)?;
            }
            ResourceWrite::Import(i) => {
                self.put(table, import_item(i), None)?;
            }
            ResourceWrite::All(writes) => {
                for w in writes {
                    self.resource(table, w, known, fresh)?;
                }
            }
        }
        Ok(())
    }

    /// Puts a counted record on the condition that what is stored is what
    /// `known` says, or else what is likely: nothing for a live record of
    /// the kind being claimed (a create), a live record otherwise (an update
    /// or a deletion). Counts the difference the put makes.
    fn counted(&mut self, table: &str, put: CountedPut, known: &Known, fresh: Option<QuotaKind>) -> DomainResult<()> {
        let guess = if put.live && fresh == Some(put.kind) { Stored::Absent } else { Stored::Live };
        let stored = known.get(&put.pk).copied().unwrap_or(guess);
        let cond = match stored {
            Stored::Absent => Cond::new("attribute_not_exists(pk)"),
            Stored::Live => Cond::new("attribute_exists(pk) AND #state <> :deleted"),
            Stored::Deleted => Cond::new("attribute_exists(pk) AND #state = :deleted"),
        };
        let cond = match stored {
            Stored::Absent => cond,
            Stored::Live | Stored::Deleted => cond.name("#state", "state").value(":deleted", s(put.deleted)),
        };
        let at = self.put_when(table, put.item, cond)?;
        self.count(put.kind, &put.owner, i64::from(put.live) - i64::from(stored == Stored::Live));
        self.counted.push(CountedAt { at, pk: put.pk, sk: put.sk });
        Ok(())
    }

    fn count(&mut self, kind: QuotaKind, owner: &str, delta: i64) {
        match self.deltas.iter_mut().find(|((k, o), _)| *k == kind && o == owner) {
            Some((_, d)) => *d += delta,
            None => self.deltas.push(((kind, owner.to_string()), delta)),
        }
    }

    /// Adds one update per counter the transaction changes, and the claim's
    /// condition: the counter may not pass the limit. Every update requires
    /// the counter to exist: `ADD` on a missing one would start it at 0,
    /// forgetting what a deployment from before counters already holds; the
    /// store starts it from a count and tries again (see `learn`).
    fn counters(&mut self, table: &str, claim: Option<&QuotaClaim>) -> DomainResult<()> {
        if let Some(c) = claim {
            self.count(c.kind, &c.owner, 0);
        }
        for ((kind, owner), delta) in std::mem::take(&mut self.deltas) {
            let claim = claim.filter(|c| c.kind == kind && c.owner == owner);
            if delta == 0 && claim.is_none() {
                continue;
            }
            // A claim counts one more even if this write adds nothing of its kind.
            let most = claim.map(|c| i64::from(c.limit) - delta.max(1));
            let cond = match most {
                Some(most) => {
                    Cond::new("attribute_exists(#n) AND #n <= :most").name("#n", COUNTER_N).value(":most", n(most))
                }
                None => Cond::new("attribute_exists(#n)").name("#n", COUNTER_N),
            };
            let at = self.add(table, counter_pk(kind, &owner), COUNTER_SK, delta, Some(cond))?;
            self.counters.push(CounterAt { at, kind, owner, most, claim: claim.cloned() });
        }
        Ok(())
    }

    fn preview(&mut self, table: &str, p: &Preview, known: &Known, fresh: Option<QuotaKind>) -> DomainResult<()> {
        let put = CountedPut {
            item: preview_item(p),
            pk: preview_pk(&p.id),
            sk: PREVIEW_SK,
            kind: QuotaKind::Previews,
            owner: p.project_id.clone(),
            live: p.state != PreviewState::Deleted,
            deleted: PreviewState::Deleted.as_str(),
        };
        self.counted(table, put, known, fresh)?;
        if preview_holds_name(p) {
            let i = self.put(
                table,
                preview_name_item(p),
                Some(("attribute_not_exists(pk) OR preview_id = :pvw", vec![(":pvw", s(&p.id))])),
            )?;
            self.name_claims.push((i, p.clone()));
        } else {
            self.released_names.push(p.clone());
        }
        Ok(())
    }

    fn events(&mut self, table: &str, events: &[Event]) -> DomainResult<()> {
        for e in events {
            self.put(table, event_item(e), None)?;
        }
        Ok(())
    }
}

impl DynamoStore {
    pub fn new(client: impl Into<crate::client::ClientCell<Client>>, table: impl Into<String>) -> Self {
        DynamoStore { client: client.into(), table: table.into() }
    }

    /// The organization named by the marker `has_organizations` reads, or
    /// `None` before the first one. The deployed shape creates organizations
    /// only by bootstrapping, so this is the bootstrapped one; the bootstrap
    /// function names it when it refuses to run again.
    pub async fn bootstrapped_organization_id(&self) -> DomainResult<Option<String>> {
        match self.get("read the bootstrap marker", META_PK.into(), BOOTSTRAP_SK).await? {
            Some(marker) => item::Reader::new(&marker, "bootstrap marker").s("last_organization_id").map(Some),
            None => Ok(None),
        }
    }

    async fn get(&self, what: &str, pk: String, sk: &str) -> DomainResult<Option<Item>> {
        let out = self
            .client
            .get()
            .await?
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(what, &e))?;
        Ok(out.item().cloned())
    }

    async fn get_as<T>(
        &self,
        what: &str,
        pk: String,
        sk: &str,
        parse: fn(&Item) -> DomainResult<T>,
    ) -> DomainResult<Option<T>> {
        self.get(what, pk, sk).await?.as_ref().map(parse).transpose()
    }

    /// Puts an item; `Ok(false)` when its condition did not hold.
    async fn put_if(
        &self,
        what: &str,
        item: Item,
        condition: Option<(&str, Vec<(&str, AttributeValue)>)>,
    ) -> DomainResult<bool> {
        let mut req = self.client.get().await?.put_item().table_name(&self.table).set_item(Some(item));
        if let Some((c, values)) = condition {
            req = req.condition_expression(c);
            for (k, v) in values {
                req = req.expression_attribute_values(k, v);
            }
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_error(what, &e)),
        }
    }

    /// An `UpdateItem` answering the item as it is afterwards, or `None`
    /// when its condition did not hold.
    async fn update(&self, what: &str, pk: String, sk: &str, u: Update) -> DomainResult<Option<Item>> {
        let mut req = self
            .client
            .get()
            .await?
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(u.expression())
            .return_values(ReturnValue::AllNew)
            .set_expression_attribute_names(Some(u.names));
        if !u.values.is_empty() {
            req = req.set_expression_attribute_values(Some(u.values));
        }
        if let Some(c) = u.condition {
            req = req.condition_expression(c);
        }
        match req.send().await {
            Ok(out) => Ok(Some(out.attributes().cloned().unwrap_or_default())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(sdk_error(what, &e)),
        }
    }

    async fn delete_item(
        &self,
        what: &str,
        pk: String,
        sk: &str,
        condition: Option<(&str, &str, AttributeValue)>,
    ) -> DomainResult<bool> {
        let mut req = self.client.get().await?.delete_item().table_name(&self.table).key("pk", s(pk)).key("sk", s(sk));
        if let Some((expr, k, v)) = condition {
            req = req.condition_expression(expr).expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_error(what, &e)),
        }
    }

    async fn commit(&self, what: &str, tx: &Tx) -> DomainResult<TxOutcome> {
        if tx.items.is_empty() {
            return Ok(TxOutcome::Committed);
        }
        if tx.items.len() > MAX_TRANSACTION_ITEMS {
            return Err(DomainError::internal(format!(
                "{what}: {} items exceed DynamoDB's transaction limit of {MAX_TRANSACTION_ITEMS}",
                tx.items.len()
            )));
        }
        let mut tries = 0;
        loop {
            let result =
                self.client.get().await?.transact_write_items().set_transact_items(Some(tx.items.clone())).send().await;
            let e = match result {
                Ok(_) => return Ok(TxOutcome::Committed),
                Err(e) => e,
            };
            let reasons = e
                .as_service_error()
                .and_then(|s| match s {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                        Some(c.cancellation_reasons().to_vec())
                    }
                    _ => None,
                });
            match reasons {
                // Another transaction touched one of our items at the same
                // moment: nothing was written; try again shortly.
                Some(r) if r.iter().any(|x| x.code() == Some("TransactionConflict")) && tries < CONFLICT_RETRIES => {}
                Some(r) if r.iter().any(|x| x.code() == Some("ConditionalCheckFailed")) => {
                    return Ok(TxOutcome::Cancelled(r));
                }
                _ if tries < CONFLICT_RETRIES && sdk_error(what, &e).to_string().contains("unavailable") => {}
                _ => return Err(sdk_error(what, &e)),
            }
            tries += 1;
            tokio::time::sleep(Duration::from_millis(20 << tries)).await;
        }
    }

    /// Commits `tx`; when it was cancelled because a preview's name is taken,
    /// frees the name if its holder no longer holds it (deleted, renamed or
    /// gone: a release that did not happen after a crash) and tries once more,
    /// else answers `Conflict`. Other cancellations are returned.
    async fn commit_with_names(&self, what: &str, tx: &Tx) -> DomainResult<TxOutcome> {
        for attempt in 0..2 {
            let reasons = match self.commit(what, tx).await? {
                TxOutcome::Committed => {
                    for p in &tx.released_names {
                        self.release_name(p).await;
                    }
                    return Ok(TxOutcome::Committed);
                }
                TxOutcome::Cancelled(r) => r,
            };
            let Some((i, p)) = tx.name_claims.iter().find(|(i, _)| failed_at(&reasons, *i)) else {
                return Ok(TxOutcome::Cancelled(reasons));
            };
            let holder = reasons[*i].item().and_then(|it| it.get("preview_id")).and_then(|v| v.as_s().ok()).cloned();
            let stale = match &holder {
                None => true,
                Some(id) => match self.get_preview(id).await? {
                    None => true,
                    Some(h) => !preview_holds_name(&h) || h.name != p.name || h.project_id != p.project_id,
                },
            };
            if !stale || attempt == 1 {
                return Err(DomainError::Conflict(format!(
                    "project {} already has a live preview named {:?}",
                    p.project_id, p.name
                )));
            }
            if let Some(id) = holder {
                let _ = self
                    .delete_item(
                        "free a stale preview name",
                        preview_name_pk(&p.project_id, &p.name),
                        PREVIEW_NAME_SK,
                        Some(("preview_id = :h", ":h", s(id))),
                    )
                    .await?;
            }
        }
        Err(DomainError::internal(format!("{what}: unreachable")))
    }

    /// Frees a deleted preview's name, if it still holds it. Best effort: a
    /// name left behind is freed by the next preview that wants it.
    async fn release_name(&self, p: &Preview) {
        let result = self
            .delete_item(
                "release the preview name",
                preview_name_pk(&p.project_id, &p.name),
                PREVIEW_NAME_SK,
                Some(("preview_id = :p", ":p", s(&p.id))),
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(preview_id = %p.id, error = %e, "could not release the preview's name; the next claim frees it");
        }
    }

    /// Items of a gsi query, at most `limit` of those `keep` accepts.
    async fn query(&self, what: &str, q: IndexQuery<'_>, keep: impl Fn(&Item) -> bool) -> DomainResult<Vec<Item>> {
        let mut out = Vec::new();
        if q.limit == 0 {
            return Ok(out);
        }
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let (cond, sk_value) = match &q.sk {
                SortKey::Any => (format!("{0}pk = :pk", q.index), None),
                SortKey::Lt(v) => (format!("{0}pk = :pk AND {0}sk < :sk", q.index), Some(v.clone())),
                SortKey::Le(v) => (format!("{0}pk = :pk AND {0}sk <= :sk", q.index), Some(v.clone())),
            };
            let want = q.limit - out.len();
            let mut req = self
                .client
                .get()
                .await?
                .query()
                .table_name(&self.table)
                .index_name(q.index)
                .key_condition_expression(cond)
                .expression_attribute_values(":pk", s(q.pk.clone()))
                .scan_index_forward(q.forward)
                .limit(i32::try_from(want.max(10)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some(v) = sk_value {
                req = req.expression_attribute_values(":sk", s(v));
            }
            let page = req.send().await.map_err(|e| sdk_error(what, &e))?;
            for it in page.items() {
                if out.len() < q.limit && keep(it) {
                    out.push(it.clone());
                }
            }
            match page.last_evaluated_key() {
                Some(k) if out.len() < q.limit => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// A newest-first page of a parent's children from gsi1.
    async fn page_of<T>(
        &self,
        what: &str,
        pk: String,
        page: &Page,
        parse: fn(&Item) -> DomainResult<T>,
    ) -> DomainResult<Vec<T>> {
        let sk = match &page.before {
            Some(b) => SortKey::Lt(b.clone()),
            None => SortKey::Any,
        };
        let items =
            self.query(what, IndexQuery { index: "gsi1", pk, sk, forward: false, limit: page.limit }, |_| true).await?;
        items.iter().map(parse).collect()
    }

    async fn attempts_of(&self, delivery_id: &str) -> DomainResult<Vec<DeliveryAttempt>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .get()
                .await?
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :att)")
                .expression_attribute_values(":pk", s(delivery_pk(delivery_id)))
                .expression_attribute_values(":att", s(ATTEMPT_SK_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("list the delivery's attempts", &e))?;
            for it in page.items() {
                out.push(attempt_from(it)?);
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(out),
            }
        }
    }

    /// Deletes the endpoint and frees its place; false when the
    /// organization has no such endpoint.
    async fn delete_counted_webhook(&self, org_id: &str, id: &str) -> DomainResult<bool> {
        let what = "delete the webhook";
        let mut known = Known::new();
        for _ in 0..COUNTED_TRIES {
            let mut tx = Tx::default();
            let at = tx.delete(
                &self.table,
                webhook_pk(id),
                WEBHOOK_SK,
                Some(("organization_id = :org", vec![(":org", s(org_id))])),
            )?;
            tx.count(QuotaKind::Webhooks, org_id, -1);
            tx.counters(&self.table, None)?;
            let reasons = match self.commit(what, &tx).await? {
                TxOutcome::Committed => return Ok(true),
                TxOutcome::Cancelled(reasons) => reasons,
            };
            if failed_at(&reasons, at) {
                return Ok(false);
            }
            match self.learn(&tx, &reasons, &mut known).await? {
                Learned::Retry => {}
                Learned::Refused(e) => return Err(e),
                Learned::Nothing => return Err(DomainError::internal(format!("{what}: unexpected cancellation"))),
            }
        }
        Err(retries_exhausted(what))
    }

    /// What a cancellation of `tx` says about its counted items: the stored
    /// state a counted put did not find as assumed (from the item the
    /// cancellation returns, or read), a missing counter (started here), or
    /// a claim over its limit. The caller's own conditions are its to read.
    async fn learn(&self, tx: &Tx, reasons: &[CancellationReason], known: &mut Known) -> DomainResult<Learned> {
        let mut retry = false;
        for c in tx.counted.iter().filter(|c| failed_at(reasons, c.at)) {
            let item = match reasons[c.at].item() {
                Some(it) => Some(it.clone()),
                None => self.get("read a counted record", c.pk.clone(), c.sk).await?,
            };
            let stored = match item {
                None => Stored::Absent,
                Some(it) => match it.get("state").and_then(|v| v.as_s().ok()) {
                    // The three kinds share the word; `Tx::resource` says which.
                    Some(state) if state == "deleted" => Stored::Deleted,
                    _ => Stored::Live,
                },
            };
            known.insert(c.pk.clone(), stored);
            retry = true;
        }
        for u in tx.counters.iter().filter(|u| failed_at(reasons, u.at)) {
            match self.counter(u.kind, &u.owner).await? {
                None => {
                    self.init_counter(u.kind, &u.owner).await?;
                }
                // Judged only once the puts' states are right: a corrected
                // guess changes what the write adds.
                Some(in_use) if !retry && u.most.is_some_and(|most| in_use > most) => {
                    if let Some(claim) = &u.claim {
                        return Ok(Learned::Refused(claim.exceeded(u64::try_from(in_use).unwrap_or(0))));
                    }
                }
                // Changed since the transaction ran (a place was freed).
                Some(_) => {}
            }
            retry = true;
        }
        Ok(if retry { Learned::Retry } else { Learned::Nothing })
    }

    /// A counter's value, `None` while it was never started.
    async fn counter(&self, kind: QuotaKind, owner: &str) -> DomainResult<Option<i64>> {
        self.get("read the counter", counter_pk(kind, owner), COUNTER_SK)
            .await?
            .map(|it| item::Reader::new(&it, "counter").n(COUNTER_N))
            .transpose()
    }

    /// Starts a missing counter from a count of what exists: the owner's
    /// gsi1 list of that kind, which holds exactly what counts. Written only
    /// if still missing, so racing starters agree on one value.
    ///
    /// The count is eventually consistent (a global index offers nothing
    /// stronger): a record written in the last moment before the start, by
    /// a version of the code that did not count yet, may be missing from it.
    /// Every write that counts requires the counter to exist, so nothing
    /// counted can be lost this way, only writes of the previous version
    /// while both run during a deployment.
    async fn init_counter(&self, kind: QuotaKind, owner: &str) -> DomainResult<i64> {
        let mut count: i64 = 0;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .get()
                .await?
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk")
                .expression_attribute_values(":pk", s(counted_list(kind, owner)))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("count what the limit counts", &e))?;
            count += i64::from(page.count());
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        let started = self
            .put_if("start the counter", counter_item(kind, owner, count), Some(("attribute_not_exists(pk)", vec![])))
            .await?;
        if started {
            tracing::info!(counter = %counter_pk(kind, owner), count, "counter started from a count");
            return Ok(count);
        }
        Ok(self.counter(kind, owner).await?.unwrap_or(count))
    }

    /// A counter's value, started if missing; what is in use, for `usage`.
    async fn in_use(&self, kind: QuotaKind, owner: &str) -> DomainResult<u64> {
        let n = match self.counter(kind, owner).await? {
            Some(n) => n,
            None => self.init_counter(kind, owner).await?,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One job that holds the project, read strongly consistently from the
    /// project's holds partition.
    async fn a_holder(&self, project_id: &str) -> DomainResult<Option<String>> {
        let page = self
            .client
            .get()
            .await?
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :job)")
            .expression_attribute_values(":pk", s(holds_pk(project_id)))
            .expression_attribute_values(":job", s(HOLD_SK_PREFIX))
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(|e| sdk_error("read the project's holds", &e))?;
        page.items().first().map(|it| item::Reader::new(it, "project hold").s("job_id")).transpose()
    }
}

fn retries_exhausted(what: &str) -> DomainError {
    DomainError::Unavailable(format!("{what}: the records it counts kept changing meanwhile; retry"))
}

enum SortKey {
    Any,
    Lt(String),
    Le(String),
}

struct IndexQuery<'a> {
    index: &'a str,
    pk: String,
    sk: SortKey,
    forward: bool,
    limit: usize,
}

/// An `UpdateItem` expression built field by field. Every attribute name goes
/// through `#name` placeholders (several are DynamoDB reserved words).
#[derive(Default)]
struct Update {
    sets: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    condition: Option<String>,
}

impl Update {
    fn name(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    fn set(mut self, attr: &str, v: AttributeValue) -> Self {
        let (k, v) = (self.name(attr), self.value(v));
        self.sets.push(format!("{k} = {v}"));
        self
    }

    fn set_if_absent(mut self, attr: &str, v: AttributeValue) -> Self {
        let (k, v) = (self.name(attr), self.value(v));
        self.sets.push(format!("{k} = if_not_exists({k}, {v})"));
        self
    }

    fn set_opt(self, attr: &str, v: Option<AttributeValue>) -> Self {
        match v {
            Some(v) => self.set(attr, v),
            None => self.remove(attr),
        }
    }

    fn remove(mut self, attr: &str) -> Self {
        let k = self.name(attr);
        self.removes.push(k);
        self
    }

    /// `cond` may use `#attr` for any attribute passed in `attrs` and `:name` values from `values`.
    fn when(mut self, cond: &str, attrs: &[&str], values: Vec<(&str, AttributeValue)>) -> Self {
        for a in attrs {
            self.name(a);
        }
        for (k, v) in values {
            self.values.insert(k.to_string(), v);
        }
        self.condition = Some(format!("attribute_exists(pk) AND ({cond})"));
        self
    }

    fn expression(&self) -> String {
        let mut e = String::new();
        if !self.sets.is_empty() {
            e.push_str("SET ");
            e.push_str(&self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            if !e.is_empty() {
                e.push(' ');
            }
            e.push_str("REMOVE ");
            e.push_str(&self.removes.join(", "));
        }
        e
    }
}

fn opt_s(v: Option<&str>) -> Option<AttributeValue> {
    v.map(s)
}

#[async_trait]
impl Store for DynamoStore {
    async fn has_organizations(&self) -> DomainResult<bool> {
        Ok(self.get("check for organizations", META_PK.into(), BOOTSTRAP_SK).await?.is_some())
    }

    async fn usage(&self, org_id: &str) -> DomainResult<Usage> {
        Ok(Usage {
            projects: self.in_use(QuotaKind::Projects, org_id).await?,
            webhooks: self.in_use(QuotaKind::Webhooks, org_id).await?,
        })
    }

    async fn create_organization(&self, org: &Organization, first_key: &ApiKey) -> DomainResult<()> {
        let t = &self.table;
        let mut tx = Tx::default();
        tx.put(t, org_item(org), Some(("attribute_not_exists(pk)", vec![])))?;
        tx.put(t, key_item(first_key)?, Some(("attribute_not_exists(pk)", vec![])))?;
        tx.put(t, key_hash_item(first_key), Some(("attribute_not_exists(pk)", vec![])))?;
        // The marker `has_organizations` reads; every creation rewrites it.
        tx.put(t, item::ItemBuilder::new(META_PK, BOOTSTRAP_SK).s("last_organization_id", &org.id).build(), None)?;
        match self.commit("create the organization", &tx).await? {
            TxOutcome::Committed => Ok(()),
            TxOutcome::Cancelled(_) => {
                Err(DomainError::Conflict(format!("organization {} or its first API key already exists", org.id)))
            }
        }
    }

    async fn get_organization(&self, id: &str) -> DomainResult<Option<Organization>> {
        self.get_as("read the organization", org_pk(id), ORG_SK, org_from).await
    }

    async fn update_organization(&self, org: &Organization) -> DomainResult<()> {
        if self.put_if("update the organization", org_item(org), Some(("attribute_exists(pk)", vec![]))).await? {
            Ok(())
        } else {
            Err(DomainError::not_found("organization", &org.id))
        }
    }

    async fn get_clerk_organization(&self, clerk_org_id: &str) -> DomainResult<Option<Organization>> {
        let Some(link) =
            self.get("read the Clerk organization's link", clerk_org_pk(clerk_org_id), CLERK_ORG_SK).await?
        else {
            return Ok(None);
        };
        let org_id = item::Reader::new(&link, "Clerk organization link").s("organization_id")?;
        self.get_organization(&org_id).await
    }

    async fn link_clerk_organization(&self, clerk_org_id: &str, org: &Organization) -> DomainResult<Organization> {
        let t = &self.table;
        let mut tx = Tx::default();
        tx.put(t, org_item(org), Some(("attribute_not_exists(pk)", vec![])))?;
        let link =
            item::ItemBuilder::new(clerk_org_pk(clerk_org_id), CLERK_ORG_SK).s("organization_id", &org.id).build();
        tx.put(t, link, Some(("attribute_not_exists(pk)", vec![])))?;
        tx.put(t, item::ItemBuilder::new(META_PK, BOOTSTRAP_SK).s("last_organization_id", &org.id).build(), None)?;
        match self.commit("link the Clerk organization", &tx).await? {
            TxOutcome::Committed => Ok(org.clone()),
            // Another request linked it first: its organization.
            TxOutcome::Cancelled(_) => self.get_clerk_organization(clerk_org_id).await?.ok_or_else(|| {
                DomainError::internal(format!(
                    "Clerk organization {clerk_org_id}: the link was refused but is not there"
                ))
            }),
        }
    }

    async fn insert_api_key(&self, key: &ApiKey, held: Option<&HeldKey>) -> DomainResult<()> {
        let mut tx = Tx::default();
        tx.put(&self.table, key_item(key)?, Some(("attribute_not_exists(pk)", vec![])))?;
        tx.put(&self.table, key_hash_item(key), Some(("attribute_not_exists(pk)", vec![])))?;
        let made = held.map(|h| idempotency::record_made(&mut tx, &self.table, h, &key.id)).transpose()?;
        match self.commit("insert the API key", &tx).await? {
            TxOutcome::Committed => Ok(()),
            TxOutcome::Cancelled(reasons) if made.is_some_and(|at| failed_at(&reasons, at)) => Err(HeldKey::lost()),
            TxOutcome::Cancelled(_) => {
                Err(DomainError::Conflict("an API key with this id or hash already exists".into()))
            }
        }
    }

    async fn get_api_key_by_hash(&self, hash: &str) -> DomainResult<Option<ApiKey>> {
        let Some(pointer) = self.get("read the API key", key_hash_pk(hash), KEY_HASH_SK).await? else {
            return Ok(None);
        };
        let key_id = item::Reader::new(&pointer, "api key hash").s("key_id")?;
        Ok(self.get_as("read the API key", key_pk(&key_id), KEY_SK, key_from).await?.filter(|k| k.hash == hash))
    }

    async fn get_api_key(&self, org_id: &str, key_id: &str) -> DomainResult<Option<ApiKey>> {
        Ok(self
            .get_as("read the API key", key_pk(key_id), KEY_SK, key_from)
            .await?
            .filter(|k| k.organization_id == org_id))
    }

    async fn list_api_keys(&self, org_id: &str, page: &Page) -> DomainResult<Vec<ApiKey>> {
        self.page_of("list API keys", keys_of_org(org_id), page, key_from).await
    }

    async fn revoke_api_key(&self, org_id: &str, key_id: &str, at: Timestamp) -> DomainResult<Option<ApiKey>> {
        let u = Update::default().set_if_absent("revoked_at", ts(&at)).when(
            "#organization_id = :org",
            &["organization_id"],
            vec![(":org", s(org_id))],
        );
        self.update("revoke the API key", key_pk(key_id), KEY_SK, u).await?.as_ref().map(key_from).transpose()
    }

    async fn touch_api_key(&self, key_id: &str, at: Timestamp, ip: Option<&str>) -> DomainResult<()> {
        let u = Update::default().set("last_used_at", ts(&at)).set_opt("last_used_ip", opt_s(ip)).when(
            "attribute_exists(pk)",
            &[],
            vec![],
        );
        self.update("record the API key's use", key_pk(key_id), KEY_SK, u).await.map(drop)
    }

    async fn get_project(&self, id: &str) -> DomainResult<Option<Project>> {
        self.get_as("read the project", project_pk(id), PROJECT_SK, project_from).await
    }

    async fn list_projects(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Project>> {
        self.page_of("list projects", projects_of_org(org_id), page, project_from).await
    }

    async fn update_project(&self, project: &Project) -> DomainResult<()> {
        if self.put_if("update the project", project_item(project), Some(("attribute_exists(pk)", vec![]))).await? {
            Ok(())
        } else {
            Err(DomainError::not_found("project", &project.id))
        }
    }

    async fn get_preview(&self, id: &str) -> DomainResult<Option<Preview>> {
        self.get_as("read the preview", preview_pk(id), PREVIEW_SK, preview_from).await
    }

    async fn list_previews(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Preview>> {
        self.page_of("list previews", previews_of_project(project_id), page, preview_from).await
    }

    async fn update_preview(&self, preview: &Preview) -> DomainResult<()> {
        let what = "update the preview";
        let mut known = Known::new();
        for _ in 0..COUNTED_TRIES {
            let mut tx = Tx::default();
            tx.preview(&self.table, preview, &known, None)?;
            tx.counters(&self.table, None)?;
            let reasons = match self.commit_with_names(what, &tx).await? {
                TxOutcome::Committed => return Ok(()),
                TxOutcome::Cancelled(reasons) => reasons,
            };
            match self.learn(&tx, &reasons, &mut known).await? {
                // An update, never a create: a preview that is not stored is not found.
                _ if known.get(&preview_pk(&preview.id)) == Some(&Stored::Absent) => {
                    return Err(DomainError::not_found("preview", &preview.id));
                }
                Learned::Retry => {}
                Learned::Refused(e) => return Err(e),
                Learned::Nothing => return Err(DomainError::internal(format!("{what}: unexpected cancellation"))),
            }
        }
        Err(retries_exhausted(what))
    }

    async fn list_expired_previews(&self, now: Timestamp, limit: usize) -> DomainResult<Vec<Preview>> {
        let q = IndexQuery {
            index: "gsi2",
            pk: EXPIRING_PREVIEWS.into(),
            sk: SortKey::Le(timed_upto(&now)),
            forward: true,
            limit,
        };
        let listed: Vec<Preview> = self
            .query("list expired previews", q, |_| true)
            .await?
            .iter()
            .map(preview_from)
            .collect::<DomainResult<_>>()?;
        Ok(listed.into_iter().filter(|p| p.is_expired(now)).collect())
    }

    async fn get_backup(&self, id: &str) -> DomainResult<Option<Backup>> {
        self.get_as("read the backup", backup_pk(id), BACKUP_SK, backup_from).await
    }

    async fn list_backups(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Backup>> {
        self.page_of("list backups", backups_of_project(project_id), page, backup_from).await
    }

    async fn put_backup(&self, backup: &Backup) -> DomainResult<()> {
        let what = "write the backup";
        let mut known = Known::new();
        for _ in 0..COUNTED_TRIES {
            let mut tx = Tx::default();
            tx.resource(&self.table, &ResourceWrite::Backup(backup.clone()), &known, None)?;
            tx.counters(&self.table, None)?;
            let reasons = match self.commit(what, &tx).await? {
                TxOutcome::Committed => return Ok(()),
                TxOutcome::Cancelled(reasons) => reasons,
            };
            match self.learn(&tx, &reasons, &mut known).await? {
                Learned::Retry => {}
                Learned::Refused(e) => return Err(e),
                Learned::Nothing => return Err(DomainError::internal(format!("{what}: unexpected cancellation"))),
            }
        }
        Err(retries_exhausted(what))
    }

    async fn get_restore(&self, id: &str) -> DomainResult<Option<Restore>> {
        self.get_as("read the restore", restore_pk(id), RESTORE_SK, restore_from).await
    }

    async fn get_import(&self, id: &str) -> DomainResult<Option<Import>> {
        self.get_as("read the import", import_pk(id), IMPORT_SK, import_from).await
    }

    async fn begin_job(
        &self,
        job: &Job,
        write: &ResourceWrite,
        events: &[Event],
        admission: &Admission,
    ) -> DomainResult<Option<String>> {
        let what = "begin the job";
        let t = &self.table;
        if admission.hold_project.is_some() && admission.hold_project == admission.project_unheld {
            // Both would touch the holds counter: DynamoDB refuses two
            // operations on one item in a transaction, and it is no rule anyway.
            return Err(DomainError::internal("a job cannot both hold a project and require it unheld"));
        }
        let fresh = admission.quota.as_ref().map(|q| q.kind);
        let mut known = Known::new();
        for _ in 0..COUNTED_TRIES {
            let mut tx = Tx::default();
            let lock = tx.put(t, lock_item(job), Some(("attribute_not_exists(pk)", vec![])))?;
            let job_at = tx.put(t, job_item(job), Some(("attribute_not_exists(pk)", vec![])))?;
            tx.resource(t, write, &known, fresh)?;
            tx.events(t, events)?;
            // A hold never writes the project item (jobs on the project
            // itself are kept apart by its lock), so it can check it here.
            let hold = match &admission.hold_project {
                Some(p) => {
                    let ready = Cond::new("#state = :ready")
                        .name("#state", "state")
                        .value(":ready", s(ProjectState::Ready.as_str()));
                    let at = tx.check(t, project_pk(p), PROJECT_SK, ready)?;
                    tx.put(t, hold_item(p, &job.id), None)?;
                    tx.add(t, holds_pk(p), COUNTER_SK, 1, None)?;
                    Some((at, p))
                }
                None => None,
            };
            // A missing holds counter is no hold: nothing held the project
            // since holds were counted.
            let unheld = match &admission.project_unheld {
                Some(p) => {
                    let none =
                        Cond::new("attribute_not_exists(#n) OR #n = :zero").name("#n", COUNTER_N).value(":zero", n(0));
                    Some((tx.check(t, holds_pk(p), COUNTER_SK, none)?, p))
                }
                None => None,
            };
            tx.counters(t, admission.quota.as_ref())?;
            // The job, in the request's Idempotency-Key record, while it holds it.
            let idempotency = match &admission.idempotency {
                Some(held) => Some(idempotency::record_made(&mut tx, t, held, &job.id)?),
                None => None,
            };
            let reasons = match self.commit_with_names(what, &tx).await? {
                TxOutcome::Committed => return Ok(None),
                TxOutcome::Cancelled(reasons) => reasons,
            };
            if idempotency.is_some_and(|at| failed_at(&reasons, at)) {
                return Err(HeldKey::lost());
            }
            if failed_at(&reasons, lock) {
                let holder = reasons[lock].item().and_then(|it| it.get("job_id")).and_then(|v| v.as_s().ok()).cloned();
                return match holder {
                    Some(h) => Ok(Some(h)),
                    // The condition failed but no item came back: read it.
                    None => {
                        let it = self
                            .get(
                                "read the resource lock",
                                lock_pk(job.resource.kind.as_str(), &job.resource.id),
                                LOCK_SK,
                            )
                            .await?;
                        let h = it.as_ref().map(|it| item::Reader::new(it, "lock").s("job_id")).transpose()?;
                        Ok(Some(h.unwrap_or_default()))
                    }
                };
            }
            if failed_at(&reasons, job_at) {
                return Err(DomainError::Conflict(format!("job {} already exists", job.id)));
            }
            if let Some((_, p)) = hold.filter(|(at, _)| failed_at(&reasons, *at)) {
                match self.get_project(p).await?.map(|prj| prj.state) {
                    None | Some(ProjectState::Deleted) => return Err(DomainError::not_found("project", p)),
                    // Ready again since the transaction ran.
                    Some(ProjectState::Ready) => continue,
                    Some(state) => return Err(Admission::project_not_ready(p, state.as_str())),
                }
            }
            if let Some((_, p)) = unheld.filter(|(at, _)| failed_at(&reasons, *at)) {
                match self.a_holder(p).await? {
                    Some(holder) => return Err(Admission::project_held(p, &holder)),
                    // Released since the transaction ran.
                    None => continue,
                }
            }
            match self.learn(&tx, &reasons, &mut known).await? {
                Learned::Retry => {}
                Learned::Refused(e) => return Err(e),
                Learned::Nothing => return Err(DomainError::Conflict("a record of this job already exists".into())),
            }
        }
        Err(retries_exhausted(what))
    }

    async fn get_job(&self, id: &str) -> DomainResult<Option<Job>> {
        self.get_as("read the job", job_pk(id), JOB_SK, job_from).await
    }

    async fn list_project_jobs(&self, project_id: &str, page: &Page) -> DomainResult<Vec<Job>> {
        self.page_of("list the project's jobs", jobs_of_project(project_id), page, job_from).await
    }

    async fn update_job(&self, job: &Job, expected_version: u64) -> DomainResult<bool> {
        check_version(job, expected_version)?;
        self.put_if(
            "update the job",
            job_item(job),
            Some(("version = :expected", vec![(":expected", n(expected_version))])),
        )
        .await
    }

    async fn finish_job(
        &self,
        job: &Job,
        expected_version: u64,
        write: &ResourceWrite,
        events: &[Event],
    ) -> DomainResult<bool> {
        check_version(job, expected_version)?;
        let t = &self.table;
        // Only this job's own lock: after a lost lease the resource may
        // already be locked by the job that came next. The lock cannot
        // change hands between this read and the commit while this job holds
        // it, since only this job's finish releases it.
        let lock_pk = lock_pk(job.resource.kind.as_str(), &job.resource.id);
        let lock = self.get("read the resource lock", lock_pk.clone(), LOCK_SK).await?;
        let ours =
            lock.as_ref().and_then(|it| it.get("job_id")).and_then(|v| v.as_s().ok()).is_some_and(|h| *h == job.id);
        // The same for its hold on a project: only its begin wrote it, only
        // this finish (guarded by the job's version) removes it.
        let held = match &job.project_id {
            Some(p) => self.get("read the project hold", holds_pk(p), &hold_sk(&job.id)).await?.map(|_| p),
            None => None,
        };
        let what = "finish the job";
        let mut known = Known::new();
        for _ in 0..COUNTED_TRIES {
            let mut tx = Tx::default();
            let job_at =
                tx.put(t, job_item(job), Some(("version = :expected", vec![(":expected", n(expected_version))])))?;
            if ours {
                tx.delete(t, lock_pk.clone(), LOCK_SK, Some(("job_id = :job", vec![(":job", s(&job.id))])))?;
            }
            if let Some(p) = held {
                tx.delete(t, holds_pk(p), &hold_sk(&job.id), Some(("attribute_exists(pk)", vec![])))?;
                tx.add(t, holds_pk(p), COUNTER_SK, -1, None)?;
            }
            tx.resource(t, write, &known, None)?;
            tx.events(t, events)?;
            tx.counters(t, None)?;
            let reasons = match self.commit_with_names(what, &tx).await? {
                TxOutcome::Committed => return Ok(true),
                TxOutcome::Cancelled(reasons) => reasons,
            };
            if failed_at(&reasons, job_at) {
                return Ok(false);
            }
            match self.learn(&tx, &reasons, &mut known).await? {
                Learned::Retry => {}
                Learned::Refused(e) => return Err(e),
                Learned::Nothing => {
                    return Err(DomainError::Unavailable(
                        "the job's lock or hold changed while finishing it; retry".into(),
                    ))
                }
            }
        }
        Err(retries_exhausted(what))
    }

    async fn list_stuck_jobs(&self, stale_before: Timestamp, limit: usize) -> DomainResult<Vec<Job>> {
        let q = IndexQuery {
            index: "gsi2",
            pk: ACTIVE_JOBS.into(),
            sk: SortKey::Lt(timed_before(&stale_before)),
            forward: true,
            limit,
        };
        let mut jobs: Vec<Job> =
            self.query("list stuck jobs", q, |_| true).await?.iter().map(job_from).collect::<Result<_, _>>()?;
        jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(jobs)
    }

    async fn list_unpublished_events(&self, limit: usize) -> DomainResult<Vec<Event>> {
        let q = IndexQuery { index: "gsi2", pk: UNPUBLISHED_EVENTS.into(), sk: SortKey::Any, forward: true, limit };
        self.query("list unpublished events", q, |_| true).await?.iter().map(event_from).collect()
    }

    async fn mark_event_published(&self, id: &str, at: Timestamp) -> DomainResult<()> {
        let u = Update::default().set_if_absent("published_at", ts(&at)).remove("gsi2pk").remove("gsi2sk").when(
            "attribute_exists(pk)",
            &[],
            vec![],
        );
        self.update("mark the event published", event_pk(id), EVENT_SK, u).await.map(drop)
    }

    async fn list_events(&self, org_id: &str, page: &Page) -> DomainResult<Vec<Event>> {
        self.page_of("list events", events_of_org(org_id), page, event_from).await
    }

    async fn insert_webhook(
        &self,
        webhook: &WebhookEndpoint,
        quota: Option<&QuotaClaim>,
        held: Option<&HeldKey>,
    ) -> DomainResult<()> {
        let what = "insert the webhook";
        let mut known = Known::new();
        for _ in 0..COUNTED_TRIES {
            let mut tx = Tx::default();
            let at = tx.put(&self.table, webhook_item(webhook)?, Some(("attribute_not_exists(pk)", vec![])))?;
            // Counted with or without a claim, as its deletion frees a place.
            tx.count(QuotaKind::Webhooks, &webhook.organization_id, 1);
            tx.counters(&self.table, quota)?;
            let made = held.map(|h| idempotency::record_made(&mut tx, &self.table, h, &webhook.id)).transpose()?;
            let reasons = match self.commit(what, &tx).await? {
                TxOutcome::Committed => return Ok(()),
                TxOutcome::Cancelled(reasons) => reasons,
            };
            if made.is_some_and(|at| failed_at(&reasons, at)) {
                return Err(HeldKey::lost());
            }
            if failed_at(&reasons, at) {
                return Err(DomainError::Conflict(format!("webhook {} already exists", webhook.id)));
            }
            match self.learn(&tx, &reasons, &mut known).await? {
                Learned::Retry => {}
                Learned::Refused(e) => return Err(e),
                Learned::Nothing => return Err(DomainError::internal(format!("{what}: unexpected cancellation"))),
            }
        }
        Err(retries_exhausted(what))
    }

    async fn get_webhook(&self, org_id: &str, id: &str) -> DomainResult<Option<WebhookEndpoint>> {
        Ok(self
            .get_as("read the webhook", webhook_pk(id), WEBHOOK_SK, webhook_from)
            .await?
            .filter(|w| w.organization_id == org_id))
    }

    async fn list_webhooks(&self, org_id: &str, page: &Page) -> DomainResult<Vec<WebhookEndpoint>> {
        self.page_of("list webhooks", webhooks_of_org(org_id), page, webhook_from).await
    }

    async fn update_webhook(&self, webhook: &WebhookEndpoint, expected: Timestamp, clear: bool) -> DomainResult<bool> {
        let w = webhook;
        let events = w.events_json()?;
        let mut u = Update::default()
            .set("url", s(&w.url))
            .set("events", s(events))
            .set_opt("project_id", opt_s(w.project_id.as_deref()))
            .set_opt("description", opt_s(w.description.as_deref()))
            .set("enabled", AttributeValue::Bool(w.enabled))
            .set_opt("disabled_reason", opt_s(w.disabled_reason.as_deref()))
            .set("updated_at", ts(&w.updated_at))
            .set("secret_sealed", s(&w.secret_sealed))
            .set_opt("previous_secret_sealed", opt_s(w.previous_secret_sealed.as_deref()))
            .set_opt("previous_secret_expires_at", w.previous_secret_expires_at.as_ref().map(ts));
        if clear {
            u = u.remove("failing_since");
        }
        // The caller decided on the endpoint as it read it: the write holds
        // only while nobody changed or disabled it since (`updated_at`).
        let u = u.when(
            "#organization_id = :org AND #updated_at = :expected",
            &["organization_id"],
            vec![(":org", s(&w.organization_id)), (":expected", ts(&expected))],
        );
        Ok(self.update("update the webhook", webhook_pk(&w.id), WEBHOOK_SK, u).await?.is_some())
    }

    async fn set_webhook_health(
        &self,
        org_id: &str,
        id: &str,
        ok: bool,
        at: Timestamp,
    ) -> DomainResult<Option<Timestamp>> {
        let u = if ok {
            Update::default().remove("failing_since")
        } else {
            Update::default().set_if_absent("failing_since", ts(&at))
        };
        let u = u.when("#organization_id = :org", &["organization_id"], vec![(":org", s(org_id))]);
        match self.update("record the webhook's health", webhook_pk(id), WEBHOOK_SK, u).await? {
            Some(it) => item::Reader::new(&it, "webhook").ot("failing_since"),
            None => Ok(None),
        }
    }

    async fn disable_webhook(&self, org_id: &str, id: &str, reason: &str, at: Timestamp) -> DomainResult<()> {
        let u = Update::default()
            .set("enabled", AttributeValue::Bool(false))
            .set("disabled_reason", s(reason))
            .set("updated_at", ts(&at))
            .when("#organization_id = :org", &["organization_id"], vec![(":org", s(org_id))]);
        self.update("disable the webhook", webhook_pk(id), WEBHOOK_SK, u).await.map(drop)
    }

    async fn delete_webhook(&self, org_id: &str, id: &str) -> DomainResult<bool> {
        if !self.delete_counted_webhook(org_id, id).await? {
            return Ok(false);
        }
        // Not one transaction (an endpoint may have more deliveries than one
        // can hold): a delivery left behind by a crash here is unreachable
        // through the API, and its next attempt fails it (no endpoint).
        loop {
            let q = IndexQuery {
                index: "gsi1",
                pk: deliveries_of_webhook(id),
                sk: SortKey::Any,
                forward: true,
                limit: 100,
            };
            let batch = self.query("list the webhook's deliveries", q, |_| true).await?;
            if batch.is_empty() {
                return Ok(true);
            }
            for it in &batch {
                let d = delivery_from(it)?;
                for a in self.attempts_of(&d.id).await? {
                    self.delete_item("delete a delivery attempt", delivery_pk(&d.id), &attempt_sk(a.number), None)
                        .await?;
                }
                self.delete_item(
                    "delete the delivery key",
                    delivery_key_pk(&d.webhook_id, &d.event_id),
                    DELIVERY_KEY_SK,
                    None,
                )
                .await?;
                self.delete_item("delete the delivery", delivery_pk(&d.id), DELIVERY_SK, None).await?;
            }
        }
    }

    async fn create_delivery(&self, delivery: &Delivery) -> DomainResult<Delivery> {
        let t = &self.table;
        let mut tx = Tx::default();
        let key = tx.put(t, delivery_key_item(delivery), Some(("attribute_not_exists(pk)", vec![])))?;
        tx.put(t, delivery_item(delivery), None)?;
        match self.commit("create the delivery", &tx).await? {
            TxOutcome::Committed => Ok(Delivery { attempts: Vec::new(), ..delivery.clone() }),
            TxOutcome::Cancelled(reasons) if failed_at(&reasons, key) => {
                let pointer = self
                    .get(
                        "read the delivery key",
                        delivery_key_pk(&delivery.webhook_id, &delivery.event_id),
                        DELIVERY_KEY_SK,
                    )
                    .await?
                    .ok_or_else(|| DomainError::Unavailable("the delivery was deleted meanwhile; retry".into()))?;
                let id = item::Reader::new(&pointer, "delivery key").s("delivery_id")?;
                self.get_delivery(&id)
                    .await?
                    .ok_or_else(|| DomainError::Unavailable("the delivery was deleted meanwhile; retry".into()))
            }
            TxOutcome::Cancelled(_) => Err(DomainError::internal("create the delivery: unexpected cancellation")),
        }
    }

    async fn get_delivery(&self, id: &str) -> DomainResult<Option<Delivery>> {
        self.get_as("read the delivery", delivery_pk(id), DELIVERY_SK, delivery_from).await
    }

    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> DomainResult<Vec<Delivery>> {
        let mut out = self.page_of("list deliveries", deliveries_of_webhook(webhook_id), page, delivery_from).await?;
        for d in &mut out {
            d.attempts = self.attempts_of(&d.id).await?;
        }
        Ok(out)
    }

    async fn begin_idempotent(&self, claim: &IdempotencyClaim) -> DomainResult<IdempotencyBegin> {
        self.idempotency_begin(claim).await
    }

    async fn complete_idempotent(
        &self,
        key: &str,
        lease_until: Timestamp,
        answer: &StoredAnswer,
    ) -> DomainResult<bool> {
        self.idempotency_complete(key, lease_until, answer).await
    }

    async fn release_idempotent(&self, key: &str, lease_until: Timestamp) -> DomainResult<()> {
        self.idempotency_release(key, lease_until).await
    }

    /// The table's TTL deletes expired records (see `idempotency`): nothing to do here.
    async fn sweep_idempotent(&self, _now: Timestamp) -> DomainResult<u64> {
        Ok(0)
    }

    async fn claim_delivery(&self, id: &str, now: Timestamp, lease_until: Timestamp) -> DomainResult<Option<Delivery>> {
        let u = Update::default().set("lease_until", ts(&lease_until)).when(
            "#state = :pending AND #next_attempt_at <= :now AND (attribute_not_exists(#lease_until) OR #lease_until < :now)",
            &["state", "next_attempt_at"],
            vec![(":pending", s(DeliveryState::Pending.as_str())), (":now", ts(&now))],
        );
        self.update("claim the delivery", delivery_pk(id), DELIVERY_SK, u)
            .await?
            .as_ref()
            .map(delivery_from)
            .transpose()
    }

    async fn record_attempt(&self, delivery: &Delivery, attempt: &DeliveryAttempt) -> DomainResult<()> {
        let mut tx = Tx::default();
        tx.put(&self.table, delivery_item(delivery), None)?;
        tx.put(&self.table, attempt_item(&delivery.id, attempt), None)?;
        match self.commit("record the attempt", &tx).await? {
            TxOutcome::Committed => Ok(()),
            TxOutcome::Cancelled(_) => Err(DomainError::internal("record the attempt: unexpected cancellation")),
        }
    }

    async fn update_delivery(&self, delivery: &Delivery) -> DomainResult<()> {
        self.put_if("update the delivery", delivery_item(delivery), None).await.map(drop)
    }

    async fn list_due_deliveries(
        &self,
        due_before: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> DomainResult<Vec<Delivery>> {
        let q = IndexQuery {
            index: "gsi2",
            pk: PENDING_DELIVERIES.into(),
            sk: SortKey::Le(timed_upto(&due_before)),
            forward: true,
            limit,
        };
        let now_ns = item::nanos(&now);
        let unleased = |it: &Item| match item::Reader::new(it, "delivery").on::<i64>("lease_until") {
            Ok(Some(until)) => until < now_ns,
            _ => true,
        };
        self.query("list due deliveries", q, unleased).await?.iter().map(delivery_from).collect()
    }
}

fn check_version(job: &Job, expected_version: u64) -> DomainResult<()> {
    // A write that does not bump the version would let two writers both
    // succeed against the same expected version; refuse it as the bug it is.
    if Some(job.version) != expected_version.checked_add(1) {
        return Err(DomainError::internal("job.version must be expected_version + 1"));
    }
    Ok(())
}
