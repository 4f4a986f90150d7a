//! `AuroraServers`: the `DedicatedServers` of a deployment whose projects
//! and previews each have an Aurora PostgreSQL cluster of their own.
//!
//! Every call looks at where the cluster stands and takes the next step
//! from there (create, add the writer, rename, delete), then returns: a
//! cluster not ready yet is `ProviderError::NotYet`, and the job runtime
//! calls again later. Nothing is remembered between calls but what RDS
//! shows under the identifiers `names` derives, so a call after a crash
//! carries on where the last one was.
//!
//! - A server is a cluster and its one Serverless v2 writer, named after
//!   the cluster's `DbClusterResourceId` (unchanged by a rename).
//! - A project's cluster is made empty with the master user `capydb_master`
//!   and the project's admin password; a preview's clone keeps that admin and
//!   password (they are the project's too).
//! - A replacement (a preview reset) is built as `…-next`, tagged with the
//!   job building it; the swap renames the live cluster to `…-old` and the
//!   replacement to the live identifier, so the endpoint's host (the
//!   identifier and the account's suffix) stays the same.
//! - SQL on a server runs through a `PgProvider` logged in as its admin at
//!   the address a [`Resolve`] gives for the cluster's endpoint, over TLS
//!   verified against the Amazon RDS roots (`set_tls`).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use capydb_domain::ports::{
    DatabaseProvider, DedicatedServers, ProviderError, ProviderResult, ServerOwner, ServerSnapshot, ServerSnapshots,
    ServerSource, Slot,
};
use capydb_egress::EgressPolicy;
use capydb_postgres::{PgProvider, PgTls};

use crate::names;
use crate::rds::{Cluster, Label, Purpose, Rds, State, CHECK_AGAIN, JOB_TAG};

/// The master user every cluster is made with. Not a superuser on Aurora
/// (a member of `rds_superuser`): the provider makes it a member of each
/// role it creates, which is what it needs to manage their databases.
pub const ADMIN_USER: &str = "capydb_master";
/// The port Aurora PostgreSQL listens on.
pub const PORT: u16 = 5432;
/// How long a connection to a cluster may take: a paused one (minimum
/// capacity 0) resumes on the first connection, in about 15 s.
pub const RESUME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// Where a cluster endpoint's host takes connections.
#[async_trait]
pub trait Resolve: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr>;
}

/// The system's resolver (a VPC's DNS, deployed).
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} resolves to no address")))
    }
}

pub struct AuroraServers {
    rds: Rds,
    resolver: Arc<dyn Resolve>,
    region: String,
    /// Where dumps are written (a Lambda's `/tmp`).
    work_dir: PathBuf,
    /// Where an import may connect to.
    egress: EgressPolicy,
    /// TLS to the clusters, their certificates verified (the RDS roots,
    /// deployed); plaintext only to the tests' stand-ins.
    tls: Option<PgTls>,
}

impl AuroraServers {
    pub fn new(rds: Rds, resolver: Arc<dyn Resolve>, region: &str) -> AuroraServers {
        AuroraServers {
            rds,
            resolver,
            region: region.to_string(),
            work_dir: std::env::temp_dir(),
            egress: EgressPolicy::DENY_PRIVATE,
            tls: None,
        }
    }

    /// Connect to the clusters over `tls` (deployed: [`PgTls::rds`]).
    pub fn set_tls(&mut self, tls: PgTls) {
        self.tls = Some(tls);
    }

    pub fn set_work_dir(&mut self, dir: PathBuf) {
        self.work_dir = dir;
    }

    pub fn set_egress_policy(&mut self, policy: EgressPolicy) {
        self.egress = policy;
    }

    fn paced<T>(&self, result: ProviderResult<T>) -> ProviderResult<T> {
        match result {
            Err(ProviderError::NotYet(_)) => Err(ProviderError::NotYet(self.rds.settings().check_again)),
            other => other,
        }
    }

    fn label(owner: ServerOwner<'_>, job: Option<&str>) -> Label {
        Label {
            organization: owner.organization_id.to_string(),
            project: owner.project_id.to_string(),
            resource: owner.resource_id.to_string(),
            purpose: if owner.is_project() { Purpose::Project } else { Purpose::Preview },
            job: job.map(str::to_string),
        }
    }

    /// Starts removing the cluster `id` (protection off, its instances,
    /// then the cluster, leaving `final_snapshot` when named): true once it
    /// is gone.
    async fn remove_cluster(&self, id: &str, final_snapshot: Option<&str>) -> ProviderResult<bool> {
        let Some(cluster) = self.rds.describe(id).await? else {
            return Ok(true);
        };
        if cluster.state == State::Deleting {
            return Ok(false);
        }
        if cluster.deletion_protection {
            // Deleted at the next call, once RDS shows the protection off
            // (a delete sent at once may still find it on, and be refused).
            self.rds.allow_deletion(id).await?;
            return Ok(false);
        }
        let writer = names::writer(&cluster.resource_id);
        let mut instances = cluster.members.clone();
        if !instances.contains(&writer) {
            instances.push(writer);
        }
        for instance in &instances {
            self.rds.delete_instance(instance).await?;
        }
        // RDS deletes a cluster whose instances are deleting; a busy one
        // (still creating, modifying) answers NotYet.
        self.rds.delete_cluster(id, final_snapshot).await?;
        tracing::info!(cluster = id, "deleting the DB cluster");
        Ok(false)
    }

    /// The host of a cluster whose writer takes connections, else NotYet
    /// (the writer is started here when there is none).
    async fn ready(&self, id: &str, cluster: Cluster, label: &Label) -> ProviderResult<String> {
        let endpoint = cluster.state.ready("database cluster")?;
        let writer = names::writer(&cluster.resource_id);
        match self.rds.instance(&writer).await? {
            State::Absent => {
                self.rds.create_writer(&writer, id, label).await?;
                tracing::info!(cluster = id, instance = %writer, "creating the writer instance");
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            State::Available { .. } => endpoint.ok_or(ProviderError::NotYet(CHECK_AGAIN)),
            other => other.ready("writer instance").and(Err(ProviderError::NotYet(CHECK_AGAIN))),
        }
    }
}

impl AuroraServers {
    async fn make_now(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String> {
        let (id, job) = match slot {
            Slot::Live => (names::cluster(owner.resource_id), None),
            Slot::Replacement(job) => (names::replacement(owner.resource_id), Some(job)),
        };
        let label = Self::label(owner, job);
        match self.rds.describe(&id).await? {
            None => {
                match source {
                    ServerSource::Empty => {
                        self.rds.create_cluster(&id, &label, None, ADMIN_USER, admin_password).await?;
                    }
                    ServerSource::CloneOf(project) => {
                        self.live_of(project).await?;
                        self.rds.clone_cluster(&names::cluster(project), &id, &label).await?;
                    }
                    ServerSource::Snapshot(backup) => {
                        self.rds.restore_snapshot(&names::backup_snapshot(backup), &id, &label).await?;
                    }
                }
                tracing::info!(cluster = %id, source = ?source, "creating the DB cluster");
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            // A replacement an earlier job left (it failed before its
            // swap): not this job's data; it goes, and this job's is made.
            Some(found) if job.is_some() && found.tag(JOB_TAG).is_some_and(|by| Some(by) != job) => {
                tracing::warn!(cluster = %id, left_by = ?found.tag(JOB_TAG), "removing a replacement another job left");
                self.remove_cluster(&id, None).await?;
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            Some(found) => self.ready(&id, found, &label).await,
        }
    }

    async fn swap_now(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        let live = names::cluster(owner.resource_id);
        let next = names::replacement(owner.resource_id);
        let old = names::retired(owner.resource_id);
        let label = Self::label(owner, None);
        match (self.rds.describe(&live).await?, self.rds.describe(&next).await?) {
            // Swapped: this job's replacement answers under the live identifier.
            (Some(l), None) if l.tag(JOB_TAG) == Some(job) => self.ready(&live, l, &label).await,
            (Some(_), None) => Err(ProviderError::Permanent("the replacement server is gone".into())),
            (None, Some(n)) => {
                n.state.ready("replacement cluster")?;
                self.rds.rename_cluster(&next, &live).await?;
                tracing::info!(from = %next, to = %live, "renaming the replacement to the live identifier");
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            (Some(l), Some(n)) => {
                n.state.ready("replacement cluster")?;
                // An old one a previous swap left goes first: its name is needed.
                if !self.remove_cluster(&old, None).await? {
                    return Err(ProviderError::NotYet(CHECK_AGAIN));
                }
                l.state.ready("database cluster")?;
                self.rds.rename_cluster(&live, &old).await?;
                tracing::info!(from = %live, to = %old, "setting the live cluster aside");
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            // Between two renames, RDS may show neither name for a moment.
            (None, None) if self.rds.describe(&old).await?.is_some() => Err(ProviderError::NotYet(CHECK_AGAIN)),
            (None, None) => Err(ProviderError::Permanent("the server and its replacement are both gone".into())),
        }
    }

    async fn revert_now(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        let live = names::cluster(owner.resource_id);
        let next = names::replacement(owner.resource_id);
        let old = names::retired(owner.resource_id);
        let label = Self::label(owner, None);
        let (l, n, o) =
            (self.rds.describe(&live).await?, self.rds.describe(&next).await?, self.rds.describe(&old).await?);
        let not_yet = Err(ProviderError::NotYet(CHECK_AGAIN));
        match (l, n, o) {
            // The swap finished: this job's server goes back aside, under
            // the replacement's name (which must be free first).
            (Some(l), n, Some(_)) if l.tag(JOB_TAG) == Some(job) => {
                if n.is_some() {
                    self.remove_cluster(&next, None).await?;
                    return not_yet;
                }
                l.state.ready("database cluster")?;
                self.rds.rename_cluster(&live, &next).await?;
                tracing::info!(from = %live, to = %next, "setting the job's server aside again");
                not_yet
            }
            // The one set aside takes the live identifier back.
            (None, _, Some(o)) => {
                o.state.ready("previous cluster")?;
                self.rds.rename_cluster(&old, &live).await?;
                tracing::info!(from = %old, to = %live, "putting the previous server back");
                not_yet
            }
            // The live one is the previous server: the replacement goes.
            (Some(_), Some(_), _) => {
                self.remove_cluster(&next, None).await?;
                not_yet
            }
            (Some(l), None, _) => self.ready(&live, l, &label).await,
            (None, Some(n), None) => {
                n.state.ready("replacement cluster")?;
                self.rds.rename_cluster(&next, &live).await?;
                not_yet
            }
            (None, None, None) => Err(ProviderError::Permanent("the server is gone".into())),
        }
    }

    /// The live cluster of `resource`, to clone or snapshot: `NotYet` while
    /// a swap has it under another name.
    async fn live_of(&self, resource: &str) -> ProviderResult<()> {
        if self.rds.describe(&names::cluster(resource)).await?.is_some() {
            return Ok(());
        }
        for id in [names::retired(resource), names::replacement(resource)] {
            if self.rds.describe(&id).await?.is_some() {
                return Err(ProviderError::NotYet(CHECK_AGAIN));
            }
        }
        Err(ProviderError::Permanent("the project's database server does not exist".into()))
    }

    async fn remove_spares_now(&self, owner: ServerOwner<'_>) -> ProviderResult<()> {
        let r = owner.resource_id;
        let next = self.remove_cluster(&names::replacement(r), None).await?;
        let old = self.remove_cluster(&names::retired(r), None).await?;
        if next && old {
            Ok(())
        } else {
            Err(ProviderError::NotYet(CHECK_AGAIN))
        }
    }

    async fn remove_now(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()> {
        let r = owner.resource_id;
        let last = final_snapshot.then(|| names::final_snapshot(r));
        let mut gone = true;
        for (id, snapshot) in
            [(names::replacement(r), None), (names::retired(r), None), (names::cluster(r), last.as_deref())]
        {
            gone &= self.remove_cluster(&id, snapshot).await?;
        }
        if gone {
            Ok(())
        } else {
            Err(ProviderError::NotYet(CHECK_AGAIN))
        }
    }

    async fn snapshot_now(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()> {
        let id = names::backup_snapshot(backup_id);
        match self.rds.snapshot(&id).await? {
            State::Absent => {
                self.live_of(owner.resource_id).await?;
                let label = Label { resource: backup_id.to_string(), ..Self::label(owner, None) };
                self.rds.create_snapshot(&names::cluster(owner.resource_id), &id, &label).await?;
                tracing::info!(snapshot = %id, "taking the cluster snapshot");
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            other => other.ready("cluster snapshot").map(drop),
        }
    }

    async fn admin_now(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>> {
        let address = self.resolver.resolve(host, PORT).await.map_err(|e| {
            tracing::warn!(host, error = %e, "could not resolve a cluster endpoint");
            ProviderError::Retryable("the database server's address could not be resolved; retrying".into())
        })?;
        let mut provider = PgProvider::connect_admin(
            host,
            address,
            ADMIN_USER,
            admin_password,
            self.tls.clone(),
            RESUME_TIMEOUT,
            &self.region,
        )
        .await?;
        provider.set_work_dir(self.work_dir.clone());
        provider.set_egress_policy(self.egress);
        Ok(Arc::new(provider))
    }
}

/// Every "not yet" asks for the deployment's `check_again`.
#[async_trait]
impl DedicatedServers for AuroraServers {
    async fn make(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String> {
        self.paced(self.make_now(owner, slot, source, admin_password).await)
    }

    async fn swap(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.paced(self.swap_now(owner, job).await)
    }

    async fn revert(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.paced(self.revert_now(owner, job).await)
    }

    async fn remove_spares(&self, owner: ServerOwner<'_>) -> ProviderResult<()> {
        self.paced(self.remove_spares_now(owner).await)
    }

    async fn remove(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()> {
        self.paced(self.remove_now(owner, final_snapshot).await)
    }

    async fn admin(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>> {
        self.admin_now(host, admin_password).await
    }

    async fn snapshot(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()> {
        self.paced(self.snapshot_now(owner, backup_id).await)
    }
}

/// The snapshots of a deployment's clusters, for the sweeper: the RDS
/// client alone, none of the servers' SQL.
pub struct AuroraSnapshots {
    rds: Rds,
}

impl AuroraSnapshots {
    pub fn new(rds: Rds) -> AuroraSnapshots {
        AuroraSnapshots { rds }
    }
}

#[async_trait]
impl ServerSnapshots for AuroraSnapshots {
    /// The manual snapshots CapyDB made in this environment (its
    /// `capydb:managed` and `capydb:environment` tags).
    async fn snapshots(&self) -> ProviderResult<Vec<ServerSnapshot>> {
        let environment = &self.rds.settings().environment;
        let found = self.rds.list_snapshots(names::PREFIX).await?;
        Ok(found
            .into_iter()
            .filter(|s| {
                let tag = |k: &str| s.tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                tag("capydb:managed") == Some("true") && tag("capydb:environment") == Some(environment.as_str())
            })
            .map(|s| ServerSnapshot {
                backup_id: names::resource_of(&s.id).filter(|r| r.starts_with("bkp_")),
                final_of: s.id.strip_suffix("-final").and_then(names::resource_of),
                created_at: s.created_epoch_seconds.and_then(|secs| chrono::DateTime::from_timestamp(secs, 0)),
                id: s.id,
            })
            .collect())
    }

    async fn delete_snapshot(&self, id: &str) -> ProviderResult<()> {
        if !id.starts_with(names::PREFIX) {
            return Err(ProviderError::Permanent(format!("{id} is not a snapshot CapyDB made")));
        }
        self.rds.delete_snapshot(id).await
    }
}
