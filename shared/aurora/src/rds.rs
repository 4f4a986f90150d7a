//! The RDS calls the Aurora provider is made of. Each one either starts an
//! operation or reads where one stands, and returns at once: nothing here
//! waits for a cluster. Creating calls are idempotent (they look first, and
//! a cluster, instance or snapshot that exists under the derived identifier
//! counts as made), and deleting calls succeed when the thing is already
//! gone, so a step that runs again after a crash carries on from where it
//! was. (Looking first is not only for speed: moto answers a second
//! CreateDBCluster by replacing the cluster, where RDS refuses it.)
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{ServerlessV2ScalingConfiguration, Tag};
use aws_sdk_rds::Client;
use capydb_domain::ports::{ProviderError, ProviderResult};

/// The engine every cluster runs.
pub const ENGINE: &str = "aurora-postgresql";
/// The instance class of Aurora Serverless v2.
pub const SERVERLESS: &str = "db.serverless";
/// How long a step waits before it looks at an operation again (the job
/// runtime grows the delay from there: 15 s, 30 s, 60 s … 300 s).
pub const CHECK_AGAIN: std::time::Duration = std::time::Duration::from_secs(15);

/// How clusters are made: the deployment's choices (template parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraSettings {
    /// An Aurora PostgreSQL version with Serverless v2, e.g. `16.4`.
    pub engine_version: String,
    /// Aurora capacity units a project's cluster scales between; a minimum
    /// of 0 lets it pause when idle (it resumes on the next connection).
    pub min_capacity: f64,
    pub max_capacity: f64,
    /// The most a preview's cluster may scale to (its minimum is the project's).
    pub preview_max_capacity: f64,
    /// Seconds of idleness before a cluster with a minimum of 0 pauses.
    pub seconds_until_auto_pause: i32,
    /// The DB subnet group (the VPC's private subnets) clusters are made in.
    pub subnet_group: String,
    /// Security groups that admit the worker's connections.
    pub security_group_ids: Vec<String>,
    /// The KMS key clusters are encrypted with; `None` for RDS's own key.
    /// Either way storage is encrypted.
    pub kms_key_id: Option<String>,
    /// The `environment` tag, e.g. `prod`.
    pub environment: String,
    /// How long a step waits before it looks again at a cluster being made
    /// ([`CHECK_AGAIN`]; the job runtime grows it from there).
    pub check_again: std::time::Duration,
}

/// What a cluster, instance or snapshot is for: its tags (every one carries
/// `capydb:managed`, the tag the IAM policy lets the worker modify and
/// delete by) and, for a cluster, its protection and capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub organization: String,
    pub project: String,
    /// The project, preview or backup id it was made for.
    pub resource: String,
    pub purpose: Purpose,
    /// The job that made it, for a replacement: a later job finding one an
    /// earlier job left knows it is not its own.
    pub job: Option<String>,
}

/// A project's cluster, or a preview's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Deletion protection on; the project's capacity.
    Project,
    /// No deletion protection; capped at the preview capacity.
    Preview,
}

/// The tag naming the job that made a replacement cluster.
pub const JOB_TAG: &str = "capydb:job";
/// The tag naming the cluster a clone was made from.
pub const SOURCE_CLUSTER_TAG: &str = "capydb:source-cluster";
/// The tag naming the snapshot a cluster was restored from.
pub const SOURCE_SNAPSHOT_TAG: &str = "capydb:source-snapshot";

/// A cluster snapshot CapyDB made, as `list_snapshots` finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotFacts {
    pub id: String,
    pub state: State,
    pub tags: Vec<(String, String)>,
    /// Seconds since the Unix epoch.
    pub created_epoch_seconds: Option<i64>,
}

/// What `describe` tells of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub state: State,
    /// `DbClusterResourceId`: never changes, renamed or not.
    pub resource_id: String,
    /// Its instances, as RDS lists them.
    pub members: Vec<String>,
    pub deletion_protection: bool,
    pub tags: Vec<(String, String)>,
}

impl Cluster {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Where an operation on a cluster, instance or snapshot stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing under that identifier.
    Absent,
    /// Being created, modified, renamed, backed up…: the RDS status.
    Busy(String),
    /// Ready; for a cluster, its writer endpoint's host.
    Available { endpoint: Option<String> },
    /// Being deleted.
    Deleting,
    /// In a state no wait will end (`cloning-failed`, `incompatible-…`,
    /// `inaccessible-encryption-credentials`, `failed`…).
    Broken(String),
}

impl State {
    fn of(status: &str, endpoint: Option<&str>) -> State {
        match status {
            "available" => State::Available { endpoint: endpoint.map(str::to_string) },
            "deleting" => State::Deleting,
            s if s == "failed"
                || s.ends_with("-failed")
                || s.starts_with("incompatible")
                || s.starts_with("inaccessible-encryption-credentials")
                || s == "storage-full" =>
            {
                State::Broken(s.to_string())
            }
            s => State::Busy(s.to_string()),
        }
    }

    /// `Ok(endpoint)` when available; otherwise what a step answers:
    /// `NotYet` while busy, permanent when absent or broken.
    pub fn ready(self, what: &str) -> ProviderResult<Option<String>> {
        match self {
            State::Available { endpoint } => Ok(endpoint),
            State::Busy(_) => Err(ProviderError::NotYet(CHECK_AGAIN)),
            State::Absent => Err(ProviderError::Permanent(format!("the {what} does not exist"))),
            State::Deleting => Err(ProviderError::Permanent(format!("the {what} is being deleted"))),
            State::Broken(status) => Err(ProviderError::Permanent(format!(
                "the {what} is in state {status}, which no wait ends; see the RDS console"
            ))),
        }
    }
}

/// Where and how every new cluster is placed, whichever call makes it
/// (create, clone, restore): the subnet group and security groups, the KMS
/// key, deletion protection for projects, the capacity and the tags.
trait Placed: Sized {
    fn placed(self, rds: &Rds, label: &Label) -> Self;
}

macro_rules! placed {
    ($($builder:ty),*) => {$(
        impl Placed for $builder {
            fn placed(self, rds: &Rds, label: &Label) -> Self {
                let s = &rds.settings;
                self.db_subnet_group_name(&s.subnet_group)
                    .set_vpc_security_group_ids(Some(s.security_group_ids.clone()))
                    .set_kms_key_id(s.kms_key_id.clone())
                    .deletion_protection(label.purpose == Purpose::Project)
                    .serverless_v2_scaling_configuration(rds.scaling(label.purpose))
                    .copy_tags_to_snapshot(true)
                    .set_tags(Some(rds.tags(label)))
            }
        }
    )*};
}

placed!(
    aws_sdk_rds::operation::create_db_cluster::builders::CreateDBClusterFluentBuilder,
    aws_sdk_rds::operation::restore_db_cluster_to_point_in_time::builders::RestoreDBClusterToPointInTimeFluentBuilder,
    aws_sdk_rds::operation::restore_db_cluster_from_snapshot::builders::RestoreDBClusterFromSnapshotFluentBuilder
);

/// The RDS client and the deployment's settings.
#[derive(Clone)]
pub struct Rds {
    client: Client,
    settings: AuroraSettings,
}

impl Rds {
    pub fn new(client: Client, settings: AuroraSettings) -> Rds {
        Rds { client, settings }
    }

    pub fn settings(&self) -> &AuroraSettings {
        &self.settings
    }

    fn tags(&self, label: &Label) -> Vec<Tag> {
        [
            ("capydb:managed", "true"),
            ("capydb:organization", label.organization.as_str()),
            ("capydb:project", label.project.as_str()),
            ("capydb:resource", label.resource.as_str()),
            ("capydb:environment", self.settings.environment.as_str()),
        ]
        .into_iter()
        .chain(label.job.as_deref().map(|job| (JOB_TAG, job)))
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
    }

    fn scaling(&self, purpose: Purpose) -> ServerlessV2ScalingConfiguration {
        let max = match purpose {
            Purpose::Project => self.settings.max_capacity,
            Purpose::Preview => self.settings.preview_max_capacity.max(self.settings.min_capacity),
        };
        let mut b =
            ServerlessV2ScalingConfiguration::builder().min_capacity(self.settings.min_capacity).max_capacity(max);
        if self.settings.min_capacity == 0.0 {
            b = b.seconds_until_auto_pause(self.settings.seconds_until_auto_pause);
        }
        b.build()
    }

    /// Where the cluster `id` stands.
    pub async fn cluster(&self, id: &str) -> ProviderResult<State> {
        Ok(self.describe(id).await?.map(|c| c.state).unwrap_or(State::Absent))
    }

    /// The cluster `id`, if there is one.
    pub async fn describe(&self, id: &str) -> ProviderResult<Option<Cluster>> {
        match self.client.describe_db_clusters().db_cluster_identifier(id).send().await {
            Ok(out) => Ok(out.db_clusters().first().map(|c| Cluster {
                state: State::of(c.status().unwrap_or("unknown"), c.endpoint()),
                resource_id: c.db_cluster_resource_id().unwrap_or_default().to_string(),
                members: c
                    .db_cluster_members()
                    .iter()
                    .filter_map(|m| m.db_instance_identifier())
                    .map(str::to_string)
                    .collect(),
                deletion_protection: c.deletion_protection().unwrap_or(false),
                tags: c
                    .tag_list()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                    .collect(),
            })),
            Err(e) if code(&e) == Some("DBClusterNotFoundFault") => Ok(None),
            Err(e) => Err(classify("describe a DB cluster", e)),
        }
    }

    /// Where the instance `id` stands.
    pub async fn instance(&self, id: &str) -> ProviderResult<State> {
        match self.client.describe_db_instances().db_instance_identifier(id).send().await {
            Ok(out) => Ok(out
                .db_instances()
                .first()
                .map(|i| State::of(i.db_instance_status().unwrap_or("unknown"), None))
                .unwrap_or(State::Absent)),
            Err(e) if code(&e) == Some("DBInstanceNotFound") || code(&e) == Some("DBInstanceNotFoundFault") => {
                Ok(State::Absent)
            }
            Err(e) => Err(classify("describe a DB instance", e)),
        }
    }

    /// Where the cluster snapshot `id` stands.
    pub async fn snapshot(&self, id: &str) -> ProviderResult<State> {
        match self.client.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(id).send().await {
            Ok(out) => Ok(out
                .db_cluster_snapshots()
                .first()
                .map(|s| State::of(s.status().unwrap_or("unknown"), None))
                .unwrap_or(State::Absent)),
            Err(e) if code(&e) == Some("DBClusterSnapshotNotFoundFault") => Ok(State::Absent),
            Err(e) => Err(classify("describe a DB cluster snapshot", e)),
        }
    }

    /// Starts making an empty encrypted Serverless v2 cluster `id` whose
    /// administrator is `admin_user` / `admin_password` (and whose first
    /// database is `database`, when one is named).
    pub async fn create_cluster(
        &self,
        id: &str,
        label: &Label,
        database: Option<&str>,
        admin_user: &str,
        admin_password: &str,
    ) -> ProviderResult<()> {
        if self.cluster(id).await? != State::Absent {
            return Ok(());
        }
        let s = &self.settings;
        let sent = self
            .client
            .create_db_cluster()
            .db_cluster_identifier(id)
            .engine(ENGINE)
            .engine_version(&s.engine_version)
            .master_username(admin_user)
            .master_user_password(admin_password)
            .set_database_name(database.map(str::to_string))
            .storage_encrypted(true)
            .placed(self, label)
            .send()
            .await;
        answered(sent, &["DBClusterAlreadyExistsFault"], "create a DB cluster")
    }

    /// Starts making `cluster`'s Serverless v2 writer instance `id`
    /// ([`names::writer`](crate::names::writer) of the cluster).
    pub async fn create_writer(&self, id: &str, cluster: &str, label: &Label) -> ProviderResult<()> {
        if self.instance(id).await? != State::Absent {
            return Ok(());
        }
        let sent = self
            .client
            .create_db_instance()
            .db_instance_identifier(id)
            .db_cluster_identifier(cluster)
            .engine(ENGINE)
            .db_instance_class(SERVERLESS)
            .set_tags(Some(self.tags(label)))
            .send()
            .await;
        answered(sent, &["DBInstanceAlreadyExists"], "create a DB instance")
    }

    /// Starts making `target` a copy-on-write clone of `source` as of its
    /// latest restorable time: pages are shared until either side writes.
    pub async fn clone_cluster(&self, source: &str, target: &str, label: &Label) -> ProviderResult<()> {
        if self.cluster(target).await? != State::Absent {
            return Ok(());
        }
        let sent = self
            .client
            .restore_db_cluster_to_point_in_time()
            .source_db_cluster_identifier(source)
            .db_cluster_identifier(target)
            .restore_type("copy-on-write")
            .use_latest_restorable_time(true)
            .placed(self, label)
            .tags(Tag::builder().key(SOURCE_CLUSTER_TAG).value(source).build())
            .send()
            .await;
        answered(sent, &["DBClusterAlreadyExistsFault"], "clone a DB cluster")
    }

    /// Starts making `target` from the cluster snapshot `snapshot`.
    pub async fn restore_snapshot(&self, snapshot: &str, target: &str, label: &Label) -> ProviderResult<()> {
        if self.cluster(target).await? != State::Absent {
            return Ok(());
        }
        let s = &self.settings;
        let sent = self
            .client
            .restore_db_cluster_from_snapshot()
            .snapshot_identifier(snapshot)
            .db_cluster_identifier(target)
            .engine(ENGINE)
            .engine_version(&s.engine_version)
            .placed(self, label)
            .tags(Tag::builder().key(SOURCE_SNAPSHOT_TAG).value(snapshot).build())
            .send()
            .await;
        answered(sent, &["DBClusterAlreadyExistsFault"], "restore a DB cluster snapshot")
    }

    /// Starts a manual snapshot `snapshot` of `cluster`.
    pub async fn create_snapshot(&self, cluster: &str, snapshot: &str, label: &Label) -> ProviderResult<()> {
        if self.snapshot(snapshot).await? != State::Absent {
            return Ok(());
        }
        let sent = self
            .client
            .create_db_cluster_snapshot()
            .db_cluster_identifier(cluster)
            .db_cluster_snapshot_identifier(snapshot)
            .set_tags(Some(self.tags(label)))
            .send()
            .await;
        answered(sent, &["DBClusterSnapshotAlreadyExistsFault"], "snapshot a DB cluster")
    }

    /// The manual cluster snapshots whose identifier starts with `prefix`,
    /// with their tags.
    pub async fn list_snapshots(&self, prefix: &str) -> ProviderResult<Vec<SnapshotFacts>> {
        let mut found = Vec::new();
        let mut pages = self.client.describe_db_cluster_snapshots().snapshot_type("manual").into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("list DB cluster snapshots", e))?;
            for s in page.db_cluster_snapshots() {
                let id = s.db_cluster_snapshot_identifier().unwrap_or_default();
                if !id.starts_with(prefix) {
                    continue;
                }
                found.push(SnapshotFacts {
                    id: id.to_string(),
                    state: State::of(s.status().unwrap_or("unknown"), None),
                    tags: s
                        .tag_list()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                        .collect(),
                    created_epoch_seconds: s.snapshot_create_time().map(|t| t.secs()),
                });
            }
        }
        Ok(found)
    }

    pub async fn delete_snapshot(&self, snapshot: &str) -> ProviderResult<()> {
        if matches!(self.snapshot(snapshot).await?, State::Absent | State::Deleting) {
            return Ok(());
        }
        let sent = self.client.delete_db_cluster_snapshot().db_cluster_snapshot_identifier(snapshot).send().await;
        answered(sent, &["DBClusterSnapshotNotFoundFault"], "delete a DB cluster snapshot")
    }

    /// Gives `from` the identifier `to` (and so the endpoint that goes with
    /// it): how a replacement takes a live cluster's place.
    pub async fn rename_cluster(&self, from: &str, to: &str) -> ProviderResult<()> {
        let sent = self
            .client
            .modify_db_cluster()
            .db_cluster_identifier(from)
            .new_db_cluster_identifier(to)
            .apply_immediately(true)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // A rename an earlier call made that RDS shows late (the source
            // gone, or the target there): look again.
            Err(e) if matches!(code(&e), Some("DBClusterNotFoundFault" | "DBClusterAlreadyExistsFault")) => {
                tracing::info!(from, to, code = ?code(&e), "a rename RDS has not shown yet; looking again");
                Err(ProviderError::NotYet(CHECK_AGAIN))
            }
            Err(e) => Err(classify("rename a DB cluster", e)),
        }
    }

    /// Sets the administrator's password (applied at once; the cluster is
    /// `resetting-master-credentials` meanwhile).
    pub async fn set_admin_password(&self, cluster: &str, password: &str) -> ProviderResult<()> {
        let sent = self
            .client
            .modify_db_cluster()
            .db_cluster_identifier(cluster)
            .master_user_password(password)
            .apply_immediately(true)
            .send()
            .await;
        sent.map(drop).map_err(|e| classify("set a DB cluster's password", e))
    }

    /// Turns deletion protection off, before a project's cluster is deleted.
    pub async fn allow_deletion(&self, cluster: &str) -> ProviderResult<()> {
        if matches!(self.cluster(cluster).await?, State::Absent | State::Deleting) {
            return Ok(());
        }
        let sent = self
            .client
            .modify_db_cluster()
            .db_cluster_identifier(cluster)
            .deletion_protection(false)
            .apply_immediately(true)
            .send()
            .await;
        answered(sent, &["DBClusterNotFoundFault"], "turn a DB cluster's deletion protection off")
    }

    /// Starts deleting the instance `id`; done if it is gone or going.
    pub async fn delete_instance(&self, id: &str) -> ProviderResult<()> {
        if matches!(self.instance(id).await?, State::Absent | State::Deleting) {
            return Ok(());
        }
        let sent = self.client.delete_db_instance().db_instance_identifier(id).send().await;
        // A busy instance (InvalidDBInstanceState) is NotYet: the step
        // looks again, and finds it deleting or still to delete.
        answered(sent, &["DBInstanceNotFound", "DBInstanceNotFoundFault"], "delete a DB instance")
    }

    /// Starts deleting the cluster `id` (its instances must be gone),
    /// leaving the snapshot `final_snapshot` when one is named; done if it
    /// is gone or going.
    pub async fn delete_cluster(&self, id: &str, final_snapshot: Option<&str>) -> ProviderResult<()> {
        if matches!(self.cluster(id).await?, State::Absent | State::Deleting) {
            return Ok(());
        }
        let sent = self
            .client
            .delete_db_cluster()
            .db_cluster_identifier(id)
            .skip_final_snapshot(final_snapshot.is_none())
            .set_final_db_snapshot_identifier(final_snapshot.map(str::to_string))
            .send()
            .await;
        answered(sent, &["DBClusterNotFoundFault"], "delete a DB cluster")
    }
}

fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// A call's answer: done now, or done already, as the error codes
/// `already` say (a create's "already exists", a delete's "not found").
fn answered<T, E, R>(sent: Result<T, SdkError<E, R>>, already: &[&str], what: &str) -> ProviderResult<()>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(()),
        Err(e) if code(&e).is_some_and(|c| already.contains(&c)) => Ok(()),
        Err(e) => Err(classify(what, e)),
    }
}

/// What an RDS error means for the step that met it. The message goes to
/// the API user (the end of a failed job's `error`): it names the limit or
/// the setting to change, never an identifier or RDS's own text, which are
/// logged here.
pub fn classify<E, R>(what: &str, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &e {
        SdkError::ServiceError(s) => (s.err().code().unwrap_or("unknown"), s.err().message().unwrap_or("")),
        // No answer (connection, timeout, a response that did not parse):
        // the SDK already retried; the job retries later.
        _ => {
            tracing::warn!(error = %aws_sdk_rds::error::DisplayErrorContext(&e), "RDS: could not {what}");
            return ProviderError::Retryable("the RDS API did not answer; the job retries".into());
        }
    };
    tracing::warn!(code, message, "RDS: could not {what}");
    classify_code(code, message)
}

/// [`classify`] by the error's code and message.
pub fn classify_code(code: &str, message: &str) -> ProviderError {
    let permanent = |m: &str| ProviderError::Permanent(m.to_string());
    match code {
        "DBClusterQuotaExceededFault" => permanent(
            "the AWS account's quota of Aurora DB clusters is reached (one per project and per preview): \
             delete unused previews or projects, or ask AWS for a higher \"DB clusters\" quota",
        ),
        "InstanceQuotaExceeded" | "InstanceQuotaExceededFault" => permanent(
            "the AWS account's quota of DB instances is reached (one per project and per preview): \
             delete unused previews or projects, or ask AWS for a higher \"DB instances\" quota",
        ),
        "StorageQuotaExceeded" | "StorageQuotaExceededFault" => permanent(
            "the AWS account's quota of RDS storage is reached: delete unused previews, projects or backups, \
             or ask AWS for a higher \"Total storage\" quota",
        ),
        "SnapshotQuotaExceeded" | "SnapshotQuotaExceededFault" => permanent(
            "the AWS account's quota of manual DB cluster snapshots is reached: delete old backups, \
             or ask AWS for a higher \"Manual DB cluster snapshots\" quota",
        ),
        "KMSKeyNotAccessibleFault" => permanent(
            "the KMS key the clusters are encrypted with cannot be used: check the key's policy and that it is enabled",
        ),
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            permanent("the worker may not make this RDS call: check its IAM policy in infra/template.yaml")
        }
        "DBSubnetGroupNotFoundFault"
        | "DBSubnetGroupDoesNotCoverEnoughAZs"
        | "InvalidSubnet"
        | "InvalidVPCNetworkStateFault" => {
            permanent("the configured DB subnet group cannot hold a cluster: check the AuroraSubnetGroup parameter")
        }
        // An engine version without Serverless v2 is refused when the
        // db.serverless writer is made (or with the scaling configuration).
        "InvalidParameterCombination" | "InvalidParameterValue" | "InvalidParameterValueException"
            if message.to_ascii_lowercase().contains("serverless") =>
        {
            permanent(
                "the configured Aurora PostgreSQL engine version does not support Serverless v2: \
                 choose one that does (the AuroraEngineVersion parameter)",
            )
        }
        "InvalidParameterCombination" | "InvalidParameterValue" | "InvalidParameterValueException" => {
            permanent("the RDS API refused the cluster's settings: check the Aurora parameters of the deployment")
        }
        // Busy with another operation (a backup, a modification): not an
        // error, the step looks again later.
        "InvalidDBClusterStateFault" | "InvalidDBInstanceState" | "InvalidDBClusterSnapshotStateFault" => {
            ProviderError::NotYet(CHECK_AGAIN)
        }
        c if c.contains("Throttl") || c == "RequestLimitExceeded" || c == "TooManyRequestsException" => {
            ProviderError::Retryable("the RDS API is throttling requests; the job retries with backoff".into())
        }
        c if c.contains("InternalFailure") || c.contains("ServiceUnavailable") || c.contains("InternalError") => {
            ProviderError::Retryable("the RDS API failed; the job retries".into())
        }
        _ => permanent("the RDS API refused the request; the worker's log has its answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_waited_on_or_given_up() {
        assert_eq!(State::of("available", Some("h")), State::Available { endpoint: Some("h".into()) });
        for busy in ["creating", "modifying", "backing-up", "renaming", "resetting-master-credentials", "starting"] {
            assert_eq!(State::of(busy, None), State::Busy(busy.into()));
            assert_eq!(State::of(busy, None).ready("cluster"), Err(ProviderError::NotYet(CHECK_AGAIN)));
        }
        for broken in ["cloning-failed", "migration-failed", "incompatible-parameters", "failed", "storage-full"] {
            assert!(matches!(State::of(broken, None), State::Broken(_)), "{broken}");
            assert!(matches!(State::of(broken, None).ready("cluster"), Err(ProviderError::Permanent(_))));
        }
        assert_eq!(State::of("deleting", None), State::Deleting);
    }

    #[test]
    fn limits_are_permanent_with_what_to_do_and_throttling_retries() {
        let p = |c: &str, m: &str| match classify_code(c, m) {
            ProviderError::Permanent(m) => m,
            other => panic!("{c}: {other:?}"),
        };
        assert!(p("DBClusterQuotaExceededFault", "").contains("quota of Aurora DB clusters"));
        assert!(p("StorageQuotaExceeded", "").contains("storage"));
        assert!(p("InvalidParameterCombination", "The engine version 13.7 doesn't support Serverless v2")
            .contains("does not support Serverless v2"));
        assert!(p("InvalidParameterValue", "bad port").contains("refused the cluster's settings"));
        assert!(matches!(classify_code("ThrottlingException", ""), ProviderError::Retryable(_)));
        assert!(matches!(classify_code("Throttling", ""), ProviderError::Retryable(_)));
        assert_eq!(classify_code("InvalidDBClusterStateFault", ""), ProviderError::NotYet(CHECK_AGAIN));
        // RDS's own words never reach the user.
        assert!(!p("SomethingNew", "cluster capydb-prj-x at 10.0.0.1").contains("10.0.0.1"));
    }
}
