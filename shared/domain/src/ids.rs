//! Prefixed, opaque, time-sortable identifiers (`prj_01j...`).
//!
//! The body is a ULID (48-bit millisecond timestamp + 80 random bits) in
//! lowercase Crockford base32, so ids sort by creation time as strings, which
//! is what list ordering and cursors rely on.
use rand::RngCore;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub const ORG: &str = "org";
pub const PROJECT: &str = "prj";
pub const PREVIEW: &str = "pvw";
pub const BACKUP: &str = "bkp";
pub const RESTORE: &str = "rst";
pub const IMPORT: &str = "imp";
pub const JOB: &str = "job";
pub const API_KEY: &str = "key";
pub const WEBHOOK: &str = "whk";
pub const EVENT: &str = "evt";
pub const DELIVERY: &str = "dlv";
pub const USER: &str = "usr";
pub const CLI_SESSION: &str = "cli";
pub const REQUEST: &str = "req";

/// Ids that cross layers inside a job's specification, typed so a preview's
/// id cannot be passed where a backup's is meant (`JobSpec`).
macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

id_type!(
    /// `prj_...`
    ProjectId,
    /// `pvw_...`
    PreviewId,
    /// `bkp_...`
    BackupId,
    /// `rst_...`
    RestoreId,
    /// `imp_...`
    ImportId,
    /// `job_...`
    JobId,
);

/// A new id with the given prefix, e.g. `new_id(ids::PROJECT)`. Within a
/// process, ids are strictly increasing: two made in the same millisecond
/// still sort in the order they were made (the second is the first plus one,
/// as ULID's monotonic mode does), so "newest first" holds for them too.
pub fn new_id(prefix: &str) -> String {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let fresh = random_value(chrono::Utc::now().timestamp_millis() as u64);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let value = if fresh > *last { fresh } else { *last + 1 };
    *last = value;
    encode(prefix, value)
}

pub fn new_id_at(prefix: &str, millis: u64) -> String {
    encode(prefix, random_value(millis))
}

/// 48 bits of milliseconds, then 80 random bits.
fn random_value(millis: u64) -> u128 {
    let mut random = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut random);
    let mut value: u128 = (millis as u128 & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= (*b as u128) << (8 * (9 - i));
    }
    value
}

fn encode(prefix: &str, value: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        out.push(ALPHABET[((value >> (5 * i)) & 31) as usize] as char);
    }
    out
}

/// True when `id` looks like an id of this prefix. Used to answer 404 early
/// for garbage path parameters without a store read.
pub fn is_valid(prefix: &str, id: &str) -> bool {
    match id.split_once('_') {
        Some((p, body)) => p == prefix && body.len() == 26 && body.bytes().all(|b| ALPHABET.contains(&b)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_sort_by_time() {
        let a = new_id_at(PROJECT, 1_000);
        let b = new_id_at(PROJECT, 2_000);
        assert!(a.starts_with("prj_"));
        assert!(a < b, "{a} should sort before {b}");
        assert!(is_valid(PROJECT, &a));
        assert!(!is_valid(ORG, &a));
        assert!(!is_valid(PROJECT, "prj_../../etc"));
    }

    #[test]
    fn ids_made_in_the_same_millisecond_still_sort_in_creation_order() {
        let ids: Vec<String> = (0..2_000).map(|_| new_id(PROJECT)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "new_id must be strictly increasing within a process");
        assert!(ids.iter().all(|id| is_valid(PROJECT, id)));
    }
}
