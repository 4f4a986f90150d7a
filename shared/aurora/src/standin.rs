//! For tests (feature `testkit`): local PostgreSQL servers standing in for
//! the clusters moto's RDS API makes, which have no database behind them.
//!
//! [`StandIns`] is the [`Resolve`] the Aurora servers are given: the first
//! time a cluster's endpoint is resolved, it finds that cluster in moto and
//! starts a private PostgreSQL server for it (by the cluster's
//! `DbClusterResourceId`, which a rename keeps), and answers
//! `127.0.0.1:<its port>`; later lookups answer the same server. A cluster
//! made as a copy-on-write clone (tagged `capydb:source-cluster`) starts as
//! a copy of its source's server (`pg_dumpall` into it: roles, passwords,
//! databases), as RDS's clone would; one restored from a snapshot (tagged
//! `capydb:source-snapshot`) as a copy of what its source's server held
//! when the snapshot completed: [`Capturing`] wraps the servers and takes
//! that copy the moment a backup's snapshot is first reported complete.
//!
//! Each stand-in has the cluster's master user as Aurora makes it: not a
//! superuser, but `CREATEDB`, `CREATEROLE` and `pg_signal_backend` (what
//! `rds_superuser` gives that the provider uses). What it cannot stand in
//! for is the master password: moto keeps the one a cluster was made with
//! to itself, so a stand-in admits the master user by `trust` from
//! 127.0.0.1; every other role logs in with SCRAM, so a wrong customer
//! password is refused as on Aurora. The stand-in's own work (copies) runs
//! as the server's superuser.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use capydb_domain::error::DomainResult;
use capydb_domain::ports::{
    DatabaseProvider, DedicatedServers, ProviderError, ProviderResult, SecretBox, ServerOwner, ServerSource, Slot,
};
use capydb_postgres::LocalCluster;
use tokio::sync::Mutex;

use crate::names;
use crate::servers::{Resolve, ADMIN_USER};

pub use crate::rds::{SOURCE_CLUSTER_TAG, SOURCE_SNAPSHOT_TAG};

/// The deployment settings the tests make clusters with: a subnet group
/// and security group moto accepts, the `test` environment, and waits of
/// `check_again`.
pub fn settings(check_again: std::time::Duration) -> crate::AuroraSettings {
    crate::AuroraSettings {
        engine_version: "16.4".into(),
        min_capacity: 0.0,
        max_capacity: 8.0,
        preview_max_capacity: 2.0,
        seconds_until_auto_pause: 600,
        subnet_group: "capydb-private".into(),
        security_group_ids: vec!["sg-0123456789abcdef0".into()],
        kms_key_id: None,
        environment: "test".into(),
        check_again,
    }
}

pub struct StandIns {
    client: aws_sdk_rds::Client,
    base: PathBuf,
    /// DbClusterResourceId -> its server.
    servers: Mutex<HashMap<String, Arc<LocalCluster>>>,
    /// Snapshot identifier -> what its cluster's server held then (`pg_dumpall`).
    snapshots: Mutex<HashMap<String, Vec<u8>>>,
}

/// The stand-ins' own admin passwords are kept in the clear: test servers.
struct Clear;

#[async_trait]
impl SecretBox for Clear {
    async fn seal(&self, plaintext: &str) -> DomainResult<String> {
        Ok(plaintext.to_string())
    }
    async fn open(&self, sealed: &str) -> DomainResult<String> {
        Ok(sealed.to_string())
    }
}

impl StandIns {
    /// Stand-ins for the clusters `client` (moto) shows, their data under `base`.
    pub fn new(client: aws_sdk_rds::Client, base: PathBuf) -> StandIns {
        StandIns { client, base, servers: Mutex::new(HashMap::new()), snapshots: Mutex::new(HashMap::new()) }
    }

    /// The server standing in for the cluster with this resource id, if one was started.
    pub async fn server(&self, cluster_resource_id: &str) -> Option<Arc<LocalCluster>> {
        self.servers.lock().await.get(cluster_resource_id).cloned()
    }

    /// How many servers were started.
    pub async fn count(&self) -> usize {
        self.servers.lock().await.len()
    }

    /// The cluster moto shows with this endpoint.
    async fn cluster_at(&self, host: &str) -> std::io::Result<Found> {
        let mut pages = self.client.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| other(format!("describe DB clusters: {e}")))?;
            for c in page.db_clusters() {
                if c.endpoint() == Some(host) {
                    let tag = |key: &str| {
                        c.tag_list().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_string)
                    };
                    return Ok(Found {
                        resource_id: c.db_cluster_resource_id().unwrap_or_default().to_string(),
                        source_cluster: tag(SOURCE_CLUSTER_TAG),
                        source_snapshot: tag(SOURCE_SNAPSHOT_TAG),
                    });
                }
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no cluster has the endpoint {host}")))
    }

    /// Keeps what the server standing in for `cluster` holds now as the
    /// snapshot `snapshot` (once: a snapshot does not change).
    pub async fn capture(&self, cluster: &str, snapshot: &str) -> std::io::Result<()> {
        let mut snapshots = self.snapshots.lock().await;
        if snapshots.contains_key(snapshot) {
            return Ok(());
        }
        let resource_id = self.resource_id_of(cluster).await?;
        let server = self.server(&resource_id).await.ok_or_else(|| other(format!("{cluster} has no stand-in")))?;
        snapshots.insert(snapshot.to_string(), Self::dump(&server).await?);
        Ok(())
    }

    async fn resource_id_of(&self, cluster: &str) -> std::io::Result<String> {
        let out = self
            .client
            .describe_db_clusters()
            .db_cluster_identifier(cluster)
            .send()
            .await
            .map_err(|e| other(format!("describe {cluster}: {e}")))?;
        Ok(out.db_clusters().first().and_then(|c| c.db_cluster_resource_id()).unwrap_or_default().to_string())
    }

    async fn start(&self, resource_id: &str) -> std::io::Result<Arc<LocalCluster>> {
        let dir = self.base.join(resource_id);
        let server = LocalCluster::ensure_started(&dir, &Clear).await.map_err(other)?;
        // The master user by trust (see the module's note), everyone else by SCRAM.
        let hba = server.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        // The superuser too: a copy from another stand-in sets its password
        // to that one's (`pg_dumpall` carries every role's).
        let superuser =
            server.admin_url().split_once("://").and_then(|(_, r)| r.split_once(':')).map(|(u, _)| u.to_string());
        let superuser = superuser.ok_or_else(|| other("the stand-in's admin URL names no user"))?;
        std::fs::write(
            &hba,
            format!("host all {ADMIN_USER} 127.0.0.1/32 trust\nhost all {superuser} 127.0.0.1/32 trust\n{rules}"),
        )?;
        let (client, connection) =
            tokio_postgres::connect(&server.admin_url(), tokio_postgres::NoTls).await.map_err(other)?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE ROLE {ADMIN_USER} LOGIN CREATEDB CREATEROLE; GRANT pg_signal_backend TO {ADMIN_USER}; \
                 SELECT pg_reload_conf()"
            ))
            .await
            .map_err(other)?;
        Ok(Arc::new(server))
    }

    /// Everything `from` holds (roles with their passwords, databases), as SQL.
    async fn dump(from: &LocalCluster) -> std::io::Result<Vec<u8>> {
        let bin = LocalCluster::find_binaries().map_err(other)?;
        let mut pg_dumpall = tokio::process::Command::new(bin.join("pg_dumpall"));
        let dump = Self::as_superuser(from, &mut pg_dumpall).output().await?;
        if !dump.status.success() {
            return Err(other(format!("pg_dumpall: {}", String::from_utf8_lossy(&dump.stderr))));
        }
        Ok(dump.stdout)
    }

    /// `command` connecting to `server` as its superuser (its admin URL's
    /// user and password), the password in the environment.
    fn as_superuser<'a>(
        server: &LocalCluster,
        command: &'a mut tokio::process::Command,
    ) -> &'a mut tokio::process::Command {
        let url = server.admin_url();
        let credentials = url.split_once("://").and_then(|(_, rest)| rest.split_once('@')).map(|(c, _)| c);
        let (user, password) = credentials.and_then(|c| c.split_once(':')).unwrap_or_default();
        command
            .env("PGPASSWORD", password)
            .args(["--host", "127.0.0.1", "--port", &server.port().to_string(), "--username", user])
            .arg("--no-password")
    }

    /// Plays `dump` into `to`.
    async fn load(dump: &[u8], to: &LocalCluster) -> std::io::Result<()> {
        let bin = LocalCluster::find_binaries().map_err(other)?;
        let mut command = tokio::process::Command::new(bin.join("psql"));
        let mut psql = Self::as_superuser(to, &mut command)
            .args(["--dbname", "postgres", "--quiet", "--no-psqlrc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = psql.stdin.take().ok_or_else(|| other("psql has no stdin"))?;
            stdin.write_all(dump).await?;
        }
        let status = psql.wait().await?;
        if !status.success() {
            return Err(other(format!("psql exited with {status}")));
        }
        Ok(())
    }
}

struct Found {
    resource_id: String,
    source_cluster: Option<String>,
    source_snapshot: Option<String>,
}

/// The servers of a deployment whose stand-ins capture each backup's
/// snapshot the moment it is first reported complete (see the module).
pub struct Capturing {
    pub inner: Arc<dyn DedicatedServers>,
    pub stand_ins: Arc<StandIns>,
}

#[async_trait]
impl DedicatedServers for Capturing {
    async fn make(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String> {
        self.inner.make(owner, slot, source, admin_password).await
    }
    async fn swap(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.inner.swap(owner, job).await
    }
    async fn revert(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.inner.revert(owner, job).await
    }
    async fn remove_spares(&self, owner: ServerOwner<'_>) -> ProviderResult<()> {
        self.inner.remove_spares(owner).await
    }
    async fn remove(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()> {
        self.inner.remove(owner, final_snapshot).await
    }
    async fn admin(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>> {
        self.inner.admin(host, admin_password).await
    }
    async fn snapshot(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()> {
        self.inner.snapshot(owner, backup_id).await?;
        let (cluster, snapshot) = (names::cluster(owner.resource_id), names::backup_snapshot(backup_id));
        self.stand_ins.capture(&cluster, &snapshot).await.map_err(|e| ProviderError::Retryable(e.to_string()))
    }
}

fn other(e: impl ToString) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[async_trait]
impl Resolve for StandIns {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<SocketAddr> {
        let found = self.cluster_at(host).await?;
        let mut servers = self.servers.lock().await;
        if let Some(server) = servers.get(&found.resource_id) {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, server.port())));
        }
        let server = self.start(&found.resource_id).await?;
        if let Some(source) = &found.source_cluster {
            let source_id = self.resource_id_of(source).await?;
            let from = servers.get(&source_id).cloned().ok_or_else(|| other(format!("{source} has no stand-in")))?;
            Self::load(&Self::dump(&from).await?, &server).await?;
        }
        if let Some(snapshot) = &found.source_snapshot {
            let snapshots = self.snapshots.lock().await;
            let dump = snapshots.get(snapshot).ok_or_else(|| other(format!("{snapshot} was not captured")))?;
            Self::load(dump, &server).await?;
        }
        let port = server.port();
        servers.insert(found.resource_id, server);
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        for server in self.servers.get_mut().values() {
            let _ = server.destroy();
        }
    }
}
