//! The embedded adapters: everything CapyDB needs from the outside world,
//! except PostgreSQL itself, in one local SQLite file and one key file. They
//! back `capydb-local` (a single process with no cloud dependencies) and are
//! the reference the cloud adapters (DynamoDB, SQS, KMS) are measured
//! against: all of them pass the same contract suites from
//! `capydb_domain::contract`.
//!
//! - [`SqliteStore`] implements `Store`: one writer connection and a small
//!   pool of read-only connections on a WAL database.
//! - [`SqliteQueue`] implements `JobQueue` with SQS semantics in tables of its
//!   own, so it can share the store's database file.
//! - [`QueueEventBus`] implements `EventBus` on a second `SqliteQueue`,
//!   the webhook queue.
//! - [`KeyFileSecretBox`] implements `SecretBox` with AES-256-GCM and a key
//!   kept in a `0600` file.
mod artifacts;
mod bus;
mod cache;
mod db;
mod logins;
mod queue;
mod ratelimit;
mod secret;
mod store;

pub use artifacts::FileArtifactStore;
pub use bus::QueueEventBus;
pub use cache::CachedStore;
pub use queue::SqliteQueue;
pub use ratelimit::MemoryRateLimiter;
pub use secret::{aead_open, aead_seal, KeyFileSecretBox};
pub use store::SqliteStore;
