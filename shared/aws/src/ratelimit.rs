//! `RateLimiter` on DynamoDB: one counter item per key and window
//! (`RATE#<key>#<window start ms>`), incremented atomically with `ADD`, and
//! removed by the table's TTL a while after its window ended (TTL may lag by
//! days; a stale counter is never read again, since the next window has its
//! own item).
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{rate_window, RateLimiter, RateWindow};
use capydb_domain::{DomainError, DomainResult};

pub struct DynamoRateLimiter {
    client: crate::client::ClientCell<Client>,
    table: String,
}

impl DynamoRateLimiter {
    pub fn new(client: impl Into<crate::client::ClientCell<Client>>, table: impl Into<String>) -> Self {
        DynamoRateLimiter { client: client.into(), table: table.into() }
    }
}

#[async_trait]
impl RateLimiter for DynamoRateLimiter {
    async fn hit(&self, key: &str, window: Duration, now: Timestamp) -> DomainResult<RateWindow> {
        let (start, resets_at) = rate_window(window, now);
        // Kept an hour past its window, then DynamoDB's TTL may remove it.
        let expires = resets_at.timestamp() + 3600;
        let out = self
            .client
            .get()
            .await?
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("RATE#{key}#{start}")))
            .key("sk", AttributeValue::S("RATE".into()))
            .update_expression("ADD #count :one SET #ttl = :ttl")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":ttl", AttributeValue::N(expires.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| crate::dynamo::sdk_error("count the request", &e))?;
        let count = out
            .attributes()
            .and_then(|a| a.get("count"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| DomainError::internal("DynamoDB answered no count"))?;
        Ok(RateWindow { count, resets_at })
    }
}
