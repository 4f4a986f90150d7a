//! `RateLimiter` in memory, for the one `capydb-local` process.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::model::Timestamp;
use capydb_domain::ports::{rate_window, RateLimiter, RateWindow};
use capydb_domain::DomainResult;

/// Keys kept before windows that ended are swept out.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
pub struct MemoryRateLimiter {
    /// key → (window start in ms, count in that window)
    counts: Mutex<HashMap<String, (i64, u64)>>,
}

impl MemoryRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn hit(&self, key: &str, window: Duration, now: Timestamp) -> DomainResult<RateWindow> {
        let (start, resets_at) = rate_window(window, now);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= SWEEP_AT {
            counts.retain(|_, (s, _)| *s >= start);
        }
        // The key is copied only the first time it is seen.
        let slot = match counts.get_mut(key) {
            Some(slot) => slot,
            None => counts.entry(key.to_string()).or_insert((start, 0)),
        };
        if slot.0 != start {
            *slot = (start, 0);
        }
        slot.1 += 1;
        Ok(RateWindow { count: slot.1, resets_at })
    }
}
