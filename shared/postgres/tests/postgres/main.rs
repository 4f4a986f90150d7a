//! Integration tests against real PostgreSQL clusters started by
//! `LocalCluster`, one private cluster (own dir, own port) per test.
mod backup;
mod clone;
mod cluster;
mod copy_source;
mod helpers;
mod provider;
