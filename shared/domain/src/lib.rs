//! CapyDB's domain: entities, scopes, principals and their authorization
//! rules, the job model, the ports the adapters implement, and the use cases
//! that compose them. Nothing here knows about HTTP, SQL, or AWS.
pub mod api_keys;
pub mod apikey;
pub mod app;
pub mod backups;
pub mod cli_login;
pub mod error;
pub mod fields;
pub mod health;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod jobs;
pub mod model;
pub mod organizations;
pub mod ports;
pub mod previews;
pub mod principal;
pub mod projects;
pub mod runtime;
pub mod scope;
pub mod scopes;
pub mod sweep;
pub mod ts;
pub mod webhooks;

pub use app::{App, AppParts, CliLoginSettings, JobSettings, RateLimitSettings, Settings};
pub use error::{DomainError, DomainResult};

#[cfg(feature = "testkit")]
pub mod contract;
#[cfg(feature = "testkit")]
pub mod fakes;
#[cfg(feature = "testkit")]
pub mod job_contract;
