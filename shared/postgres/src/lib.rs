//! The PostgreSQL-server adapter of the `DatabaseProvider` port, and the
//! private cluster behind it in local mode. `PgProvider` creates and drops
//! tenant databases and login roles on any PostgreSQL server reached with a
//! superuser URL; `LocalCluster` initializes, starts, reuses and stops the
//! cluster `capydb-local` runs from the machine's own PostgreSQL binaries when
//! it is given no server. Driver errors become `ProviderError::Retryable` or
//! `Permanent` here and nowhere else, and no password reaches a log or an error.
mod backup;
mod clone;
mod clone_stream;
mod cluster;
pub mod copy_source;
mod error;
mod probe;
mod provider;
mod sql;
mod tls;
mod tools;

pub use cluster::LocalCluster;
pub use probe::WireProbe;
pub use provider::{ClientEndpoint, PgProvider};
pub use tls::PgTls;
