//! `Idempotency-Key` records: one item per key (`IDEMP#<key>`), claimed
//! with a conditional put on the record as it was read, so of concurrent
//! first requests exactly one holds the key. The table's TTL removes a
//! record a day after it expires; reads never trust an expired record.
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{IdempotencyBegin, IdempotencyClaim, StoredAnswer};
use capydb_domain::{DomainError, DomainResult};

use super::item::{self, n, s, Item, ItemBuilder, Reader};
use super::{DynamoStore, Update};

const SK: &str = "IDEMP";

fn pk(key: &str) -> String {
    format!("IDEMP#{key}")
}

/// The answer is stored under names no DynamoDB reserved word shadows.
struct Record {
    fingerprint: String,
    created_at: i64,
    expires_at: i64,
    lease_until: Option<i64>,
    answer: Option<StoredAnswer>,
    /// What the holder made (a job, an API key, a webhook endpoint), written with it.
    made: Option<String>,
}

/// Adds to `tx` (the transaction that makes it) the id of what the request
/// made, in the record `held` names, conditioned on the request still
/// holding it unanswered; answers the item's index in the transaction.
pub(super) fn record_made(
    tx: &mut super::Tx,
    table: &str,
    held: &capydb_domain::ports::HeldKey,
    made: &str,
) -> DomainResult<usize> {
    let cond = super::Cond::new("#lease_until = :lease AND attribute_not_exists(#answer_status)")
        .name("#lease_until", "lease_until")
        .name("#answer_status", "answer_status")
        .name("#made", "made")
        .value(":lease", n(item::nanos(&held.lease_until)))
        .value(":made", s(made));
    tx.update_when(table, pk(&held.key), SK, "SET #made = :made", cond)
}

fn record(it: &Item) -> DomainResult<Record> {
    let r = Reader::new(it, "idempotency record");
    let answer = match r.on::<u16>("answer_status")? {
        None => None,
        Some(status) => Some(StoredAnswer {
            status,
            content_type: r.os("answer_type")?,
            location: r.os("answer_location")?,
            body: match it.get("answer_body") {
                None | Some(AttributeValue::Null(_)) => Vec::new(),
                Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
                Some(_) => return Err(r.bad("answer_body", "is not binary")),
            },
        }),
    };
    Ok(Record {
        fingerprint: r.s("fingerprint")?,
        created_at: r.n("created_at")?,
        expires_at: r.n("expires_at")?,
        lease_until: r.on("lease_until")?,
        answer,
        made: r.os("made")?,
    })
}

impl DynamoStore {
    pub(super) async fn idempotency_begin(&self, claim: &IdempotencyClaim) -> DomainResult<IdempotencyBegin> {
        const WHAT: &str = "claim the idempotency key";
        let now = item::nanos(&claim.now);
        // Each round reads the record and claims it only as it was read;
        // a lost race reads again and answers what the winner wrote.
        for _ in 0..5 {
            let found = self.get(WHAT, pk(&claim.key), SK).await?.as_ref().map(record).transpose()?;
            let (taken_over, condition) = match &found {
                None => (false, None),
                Some(r) if r.expires_at <= now => (false, Some(r)),
                Some(r) if r.fingerprint != claim.fingerprint => return Ok(IdempotencyBegin::Mismatch),
                Some(Record { answer: Some(a), .. }) => return Ok(IdempotencyBegin::Replay(a.clone())),
                Some(Record { lease_until: Some(l), .. }) if *l > now => return Ok(IdempotencyBegin::InFlight),
                Some(r) => (true, Some(r)),
            };
            // The TTL attribute is in seconds; DynamoDB deletes within
            // about a day of it, and a read before then sees `expires_at`.
            // A dead holder that started a job: its record stays as it is
            // (created, expiring, the job) with this request's lease.
            let recovered = condition.and_then(|r| r.made.clone().map(|m| (m, r.created_at, r.expires_at)));
            let item = match &recovered {
                Some((made, created_at, expires_at)) => ItemBuilder::new(pk(&claim.key), SK)
                    .s("fingerprint", &claim.fingerprint)
                    .n("created_at", *created_at)
                    .n("expires_at", *expires_at)
                    .n("lease_until", item::nanos(&claim.lease_until))
                    .s("made", made)
                    .n("ttl", expires_at / 1_000_000_000 + 3600)
                    .build(),
                None => ItemBuilder::new(pk(&claim.key), SK)
                    .s("fingerprint", &claim.fingerprint)
                    .n("created_at", now)
                    .n("expires_at", item::nanos(&claim.expires_at))
                    .n("lease_until", item::nanos(&claim.lease_until))
                    .n("ttl", claim.expires_at.timestamp() + 3600)
                    .build(),
            };
            let cond = match condition {
                None => ("attribute_not_exists(pk)", vec![]),
                Some(r) => (
                    "created_at = :created AND expires_at = :expires",
                    vec![(":created", n(r.created_at)), (":expires", n(r.expires_at))],
                ),
            };
            if self.put_if(WHAT, item, Some(cond)).await? {
                return Ok(match recovered {
                    Some((made, ..)) => IdempotencyBegin::Recovered { made },
                    None => IdempotencyBegin::Started { taken_over },
                });
            }
        }
        Err(DomainError::internal(format!("{WHAT}: the record kept changing under concurrent requests")))
    }

    pub(super) async fn idempotency_complete(
        &self,
        key: &str,
        lease_until: Timestamp,
        answer: &StoredAnswer,
    ) -> DomainResult<bool> {
        let mut u = Update::default()
            .set("answer_status", n(answer.status))
            .set_opt("answer_type", answer.content_type.clone().map(s))
            .set_opt("answer_location", answer.location.clone().map(s))
            .remove("lease_until");
        if !answer.body.is_empty() {
            u = u.set("answer_body", AttributeValue::B(Blob::new(answer.body.clone())));
        }
        let u = u.when(
            "#lease_until = :lease AND attribute_not_exists(#answer_status)",
            &["lease_until", "answer_status"],
            vec![(":lease", n(item::nanos(&lease_until)))],
        );
        Ok(self.update("store the idempotent answer", pk(key), SK, u).await?.is_some())
    }

    pub(super) async fn idempotency_release(&self, key: &str, lease_until: Timestamp) -> DomainResult<()> {
        // Only an unanswered claim carries `lease_until`, so matching it
        // leaves an answered record alone; one naming a job stays for the
        // retry that recovers it.
        self.delete_item(
            "release the idempotency key",
            pk(key),
            SK,
            Some(("lease_until = :lease AND attribute_not_exists(made)", ":lease", n(item::nanos(&lease_until)))),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_record_is_an_error_not_a_replay() {
        let it = ItemBuilder::new(pk("k"), SK).s("fingerprint", "f").n("created_at", 1).n("expires_at", 2).build();
        assert!(record(&it).unwrap().answer.is_none());
        let mut bad = it.clone();
        bad.insert("answer_status".into(), n(200));
        bad.insert("answer_body".into(), s("not binary"));
        assert!(record(&bad).is_err());
    }
}
