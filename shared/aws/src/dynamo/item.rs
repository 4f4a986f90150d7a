//! Building and reading DynamoDB items attribute by attribute.
//!
//! Timestamps are stored as `N` nanoseconds since the Unix epoch, so they
//! round-trip `DateTime<Utc>` exactly and compare as numbers in condition
//! expressions. In sort keys they are zero-padded decimal strings
//! ([`sort_ts`]) so that string order is time order.
use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use capydb_domain::model::Timestamp;
use capydb_domain::{DomainError, DomainResult};
use chrono::{DateTime, Utc};

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn nanos(t: &Timestamp) -> i64 {
    // Outside 1677..2262 chrono cannot count nanoseconds in an i64; such a
    // timestamp cannot come from the API (inputs are bounded), clamp it.
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 { i64::MIN } else { i64::MAX })
}

pub fn ts(t: &Timestamp) -> AttributeValue {
    n(nanos(t))
}

/// A timestamp as a fixed-width sort-key fragment (times before 1970 sort as 1970).
pub fn sort_ts(t: &Timestamp) -> String {
    format!("{:020}", nanos(t).max(0))
}

/// An item under construction. Absent optional values are left out, so a
/// sparse index never sees an item whose key attribute would be empty.
pub struct ItemBuilder(Item);

impl ItemBuilder {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        let mut item = Item::new();
        item.insert("pk".into(), s(pk));
        item.insert("sk".into(), s(sk));
        ItemBuilder(item)
    }

    pub fn s(mut self, k: &str, v: impl Into<String>) -> Self {
        self.0.insert(k.into(), s(v));
        self
    }

    pub fn os(self, k: &str, v: Option<impl Into<String>>) -> Self {
        match v {
            Some(v) => self.s(k, v),
            None => self,
        }
    }

    pub fn n(mut self, k: &str, v: impl std::fmt::Display) -> Self {
        self.0.insert(k.into(), n(v));
        self
    }

    pub fn on(self, k: &str, v: Option<impl std::fmt::Display>) -> Self {
        match v {
            Some(v) => self.n(k, v),
            None => self,
        }
    }

    pub fn t(mut self, k: &str, v: &Timestamp) -> Self {
        self.0.insert(k.into(), ts(v));
        self
    }

    pub fn ot(self, k: &str, v: Option<&Timestamp>) -> Self {
        match v {
            Some(v) => self.t(k, v),
            None => self,
        }
    }

    pub fn b(mut self, k: &str, v: bool) -> Self {
        self.0.insert(k.into(), AttributeValue::Bool(v));
        self
    }

    /// A secondary-index key pair, or nothing (the item stays out of the index).
    pub fn index(self, name: &str, key: Option<(String, String)>) -> Self {
        match key {
            Some((pk, sk)) => self.s(&format!("{name}pk"), pk).s(&format!("{name}sk"), sk),
            None => self,
        }
    }

    pub fn build(self) -> Item {
        self.0
    }
}

/// Reads the attributes of one item; a missing or mistyped attribute is an
/// `Internal` error naming the item kind and attribute.
pub struct Reader<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, what: &'static str) -> Self {
        Reader { item, what }
    }

    pub fn bad(&self, k: &str, why: &str) -> DomainError {
        DomainError::internal(format!("corrupt {} item: attribute {k:?} {why}", self.what))
    }

    pub fn os(&self, k: &str) -> DomainResult<Option<String>> {
        match self.item.get(k) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.bad(k, "is not a string")),
        }
    }

    pub fn s(&self, k: &str) -> DomainResult<String> {
        self.os(k)?.ok_or_else(|| self.bad(k, "is missing"))
    }

    pub fn on<T: FromStr>(&self, k: &str) -> DomainResult<Option<T>> {
        match self.item.get(k) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.bad(k, "is out of range")),
            Some(_) => Err(self.bad(k, "is not a number")),
        }
    }

    pub fn n<T: FromStr>(&self, k: &str) -> DomainResult<T> {
        self.on(k)?.ok_or_else(|| self.bad(k, "is missing"))
    }

    pub fn ot(&self, k: &str) -> DomainResult<Option<Timestamp>> {
        Ok(self.on::<i64>(k)?.map(DateTime::<Utc>::from_timestamp_nanos))
    }

    pub fn t(&self, k: &str) -> DomainResult<Timestamp> {
        self.ot(k)?.ok_or_else(|| self.bad(k, "is missing"))
    }

    pub fn b(&self, k: &str) -> DomainResult<bool> {
        match self.item.get(k) {
            Some(AttributeValue::Bool(v)) => Ok(*v),
            None => Err(self.bad(k, "is missing")),
            Some(_) => Err(self.bad(k, "is not a boolean")),
        }
    }

    /// A text enum (`ProjectState::parse` and friends).
    pub fn e<T>(&self, k: &str, parse: fn(&str) -> Option<T>) -> DomainResult<T> {
        let raw = self.s(k)?;
        parse(&raw).ok_or_else(|| self.bad(k, &format!("has the unknown value {raw:?}")))
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, k: &str) -> DomainResult<T> {
        serde_json::from_str(&self.s(k)?).map_err(|e| self.bad(k, &format!("is not valid JSON ({e})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_round_trip_to_the_nanosecond_and_sort_as_strings() {
        let a = Utc.timestamp_opt(315_532_800, 123_456_789).unwrap();
        let b = Utc.timestamp_opt(1_900_000_000, 1).unwrap();
        let item = ItemBuilder::new("p", "s").t("a", &a).ot("b", Some(&b)).ot("c", None).build();
        let r = Reader::new(&item, "test");
        assert_eq!(r.t("a").unwrap(), a);
        assert_eq!(r.ot("b").unwrap(), Some(b));
        assert_eq!(r.ot("c").unwrap(), None);
        assert!(sort_ts(&a) < sort_ts(&b));
        assert_eq!(sort_ts(&a).len(), sort_ts(&b).len());
    }

    #[test]
    fn a_corrupt_item_is_an_error_that_names_the_attribute() {
        let item = ItemBuilder::new("p", "s").s("state", "exploded").n("count", "x1").build();
        let r = Reader::new(&item, "project");
        let e = r.e("state", capydb_domain::model::ProjectState::parse).unwrap_err();
        assert!(e.to_string().contains("corrupt project item") && e.to_string().contains("state"), "{e}");
        assert!(r.n::<u32>("count").is_err());
        assert!(r.s("missing").is_err());
        assert_eq!(r.os("missing").unwrap(), None);
    }
}
