//! For tests (feature `testkit`): local PostgreSQL servers standing in for
//! the clusters moto's RDS API makes, which have no database behind them.
//!
//! [`StandIns`] is the [`Resolve`] the Aurora servers are given: the first
//! time a cluster's endpoint is resolved, it finds that cluster in moto and
//! starts a private PostgreSQL server for it (by the cluster's
//! `DbClusterResourceId`, which a rename keeps), and answers
//! `127.0.0.1:<its port>`; later lookups answer the same server. A cluster
//! made as a copy-on-write clone (tagged `capydb:source`) starts as a copy
//! of its source's server (`pg_dumpall` into it: roles, passwords,
//! databases), as RDS's clone would.
//!
//! What it cannot stand in for: the master password. moto keeps the one a
//! cluster was made with to itself, so a stand-in admits its admin
//! (`capydb_admin`) by `trust` from 127.0.0.1; every other role logs in
//! with SCRAM, so a wrong customer password is refused as on Aurora.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use capydb_domain::error::DomainResult;
use capydb_domain::ports::SecretBox;
use capydb_postgres::LocalCluster;
use tokio::sync::Mutex;

use crate::servers::{Resolve, ADMIN_USER};

/// The tag a clone carries naming the cluster it was cloned from.
pub use crate::rds::SOURCE_TAG;

pub struct StandIns {
    client: aws_sdk_rds::Client,
    base: PathBuf,
    /// DbClusterResourceId -> its server.
    servers: Mutex<HashMap<String, Arc<LocalCluster>>>,
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
        StandIns { client, base, servers: Mutex::new(HashMap::new()) }
    }

    /// The server standing in for the cluster with this resource id, if one was started.
    pub async fn server(&self, cluster_resource_id: &str) -> Option<Arc<LocalCluster>> {
        self.servers.lock().await.get(cluster_resource_id).cloned()
    }

    /// How many servers were started.
    pub async fn count(&self) -> usize {
        self.servers.lock().await.len()
    }

    /// The cluster moto shows with this endpoint: (identifier, resource id, source tag).
    async fn cluster_at(&self, host: &str) -> std::io::Result<(String, String, Option<String>)> {
        let mut pages = self.client.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| other(format!("describe DB clusters: {e}")))?;
            for c in page.db_clusters() {
                if c.endpoint() == Some(host) {
                    let source = c.tag_list().iter().find(|t| t.key() == Some(SOURCE_TAG)).and_then(|t| t.value());
                    return Ok((
                        c.db_cluster_identifier().unwrap_or_default().to_string(),
                        c.db_cluster_resource_id().unwrap_or_default().to_string(),
                        source.map(str::to_string),
                    ));
                }
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no cluster has the endpoint {host}")))
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
        // The admin by trust (see the module's note), everyone else by SCRAM.
        let hba = server.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(&hba, format!("host all {ADMIN_USER} 127.0.0.1/32 trust\n{rules}"))?;
        let (client, connection) =
            tokio_postgres::connect(&server.admin_url(), tokio_postgres::NoTls).await.map_err(other)?;
        tokio::spawn(connection);
        client.simple_query("SELECT pg_reload_conf()").await.map_err(other)?;
        Ok(Arc::new(server))
    }

    /// Everything of `from` (roles with their passwords, databases) into `to`.
    async fn copy(from: &LocalCluster, to: &LocalCluster) -> std::io::Result<()> {
        let bin = LocalCluster::find_binaries().map_err(other)?;
        let dump = tokio::process::Command::new(bin.join("pg_dumpall"))
            .args(["--host", "127.0.0.1", "--port", &from.port().to_string(), "--username", ADMIN_USER])
            .arg("--no-password")
            .output()
            .await?;
        if !dump.status.success() {
            return Err(other(format!("pg_dumpall: {}", String::from_utf8_lossy(&dump.stderr))));
        }
        let mut psql = tokio::process::Command::new(bin.join("psql"))
            .args(["--host", "127.0.0.1", "--port", &to.port().to_string(), "--username", ADMIN_USER])
            .args(["--dbname", "postgres", "--quiet", "--no-psqlrc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = psql.stdin.take().ok_or_else(|| other("psql has no stdin"))?;
            stdin.write_all(&dump.stdout).await?;
        }
        let status = psql.wait().await?;
        if !status.success() {
            return Err(other(format!("psql exited with {status}")));
        }
        Ok(())
    }
}

fn other(e: impl ToString) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[async_trait]
impl Resolve for StandIns {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<SocketAddr> {
        let (_, resource_id, source) = self.cluster_at(host).await?;
        let mut servers = self.servers.lock().await;
        if let Some(server) = servers.get(&resource_id) {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, server.port())));
        }
        let server = self.start(&resource_id).await?;
        if let Some(source) = source {
            let source_id = self.resource_id_of(&source).await?;
            let from = servers.get(&source_id).cloned().ok_or_else(|| other(format!("{source} has no stand-in")))?;
            Self::copy(&from, &server).await?;
        }
        let port = server.port();
        servers.insert(resource_id, server);
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
