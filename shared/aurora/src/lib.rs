//! Amazon Aurora PostgreSQL through the RDS API: the cluster operations
//! CapyDB's Aurora database provider is made of (a Serverless v2 cluster per
//! project, a copy-on-write clone per preview, cluster snapshots for
//! backups), each one a call that starts an operation or reads where it
//! stands and returns at once, under identifiers derived from resource ids
//! ([`names`]). The waiting is the job runtime's: a step that finds an
//! operation under way answers `ProviderError::NotYet`, and its job goes
//! back on the queue with a growing delay.
pub use aws_sdk_rds;
pub mod names;
mod rds;
mod servers;
#[cfg(feature = "testkit")]
pub mod standin;

pub use rds::{
    classify, classify_code, AuroraSettings, Cluster, Label, Purpose, Rds, SnapshotFacts, State, CHECK_AGAIN, ENGINE,
    JOB_TAG, SERVERLESS, SOURCE_CLUSTER_TAG, SOURCE_SNAPSHOT_TAG,
};
pub use servers::{AuroraServers, AuroraSnapshots, Resolve, SystemResolver, ADMIN_USER, PORT, RESUME_TIMEOUT};
