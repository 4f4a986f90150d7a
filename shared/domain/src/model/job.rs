//! A job as stored and shown: what it is for (`JobSpec`, typed per kind),
//! where it stands (state, step, attempt, lease) and what the API shows of
//! it (`kind`, `resource`).
//!
//! The stores keep a job's specification as its kind, its resource and a
//! JSON object of parameters, the shape jobs have had since the first
//! release: [`JobSpec::params`] writes exactly that shape and
//! [`JobSpec::decode`] reads it back, so rows, items and queued messages
//! written by earlier versions keep running, and earlier versions can read
//! what this one writes.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{BackupId, ImportId, PreviewId, ProjectId, RestoreId};

text_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
    pub enum JobKind {
        Provision => "provision",
        DeleteProject => "delete_project",
        RotateCredentials => "rotate_credentials",
        CreatePreview => "create_preview",
        ResetPreview => "reset_preview",
        DeletePreview => "delete_preview",
        CreateBackup => "create_backup",
        Restore => "restore",
        Import => "import",
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

text_enum! {
    /// What a job acts on, as the API names it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
    pub enum ResourceKind {
        Project => "project",
        Preview => "preview",
        Backup => "backup",
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResourceRef {
    /// `project`, `preview` or `backup`.
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    pub id: String,
}

/// A value sealed by the secret box (`SecretBox::seal`). Its `Debug` never
/// shows it: a sealed value is still a secret's envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(String);

impl Sealed {
    pub fn new(sealed: String) -> Self {
        Sealed(sealed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreInto {
    /// Over the project's own database, after a safety backup.
    Project { safety_backup: BackupId },
    /// Into a new preview of the project.
    Preview(PreviewId),
}

/// What a job is for, with each kind's own parameters. The project a job
/// belongs to is the job's `project_id`; everything else it needs is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    Provision,
    /// `dropped_previews` is progress, not a parameter: the previews the
    /// first step has deleted so far, each announced when the job completes.
    DeleteProject {
        dropped_previews: Vec<PreviewId>,
    },
    RotateCredentials {
        new_password: Sealed,
    },
    CreatePreview {
        preview: PreviewId,
    },
    ResetPreview {
        preview: PreviewId,
    },
    DeletePreview {
        preview: PreviewId,
    },
    CreateBackup {
        backup: BackupId,
    },
    Restore {
        restore: RestoreId,
        source: BackupId,
        into: RestoreInto,
    },
    Import {
        import: ImportId,
        source_url: Sealed,
        safety_backup: BackupId,
    },
}

/// The stored parameter names (see the module's comment).
const NEW_PASSWORD: &str = "new_password_sealed";
const DROPPED_PREVIEWS: &str = "dropped_previews";
const RESTORE_ID: &str = "restore_id";
const SOURCE_BACKUP_ID: &str = "backup_id";
const SAFETY_BACKUP_ID: &str = "safety_backup_id";
const IMPORT_ID: &str = "import_id";
const SOURCE_URL: &str = "source_url_sealed";

/// The stored parameters, every one optional: which are required depends on
/// the kind, and `decode` says which is missing.
#[derive(Default, Deserialize)]
#[serde(default)]
struct StoredParams {
    new_password_sealed: Option<String>,
    dropped_previews: Vec<String>,
    restore_id: Option<String>,
    backup_id: Option<String>,
    safety_backup_id: Option<String>,
    import_id: Option<String>,
    source_url_sealed: Option<String>,
}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Provision => JobKind::Provision,
            JobSpec::DeleteProject { .. } => JobKind::DeleteProject,
            JobSpec::RotateCredentials { .. } => JobKind::RotateCredentials,
            JobSpec::CreatePreview { .. } => JobKind::CreatePreview,
            JobSpec::ResetPreview { .. } => JobKind::ResetPreview,
            JobSpec::DeletePreview { .. } => JobKind::DeletePreview,
            JobSpec::CreateBackup { .. } => JobKind::CreateBackup,
            JobSpec::Restore { .. } => JobKind::Restore,
            JobSpec::Import { .. } => JobKind::Import,
        }
    }

    /// What the job acts on, as the API shows it.
    pub fn resource(&self, project: &ProjectId) -> ResourceRef {
        let (kind, id) = match self {
            JobSpec::Provision
            | JobSpec::DeleteProject { .. }
            | JobSpec::RotateCredentials { .. }
            | JobSpec::Import { .. }
            | JobSpec::Restore { into: RestoreInto::Project { .. }, .. } => (ResourceKind::Project, project.as_str()),
            JobSpec::CreatePreview { preview }
            | JobSpec::ResetPreview { preview }
            | JobSpec::DeletePreview { preview }
            | JobSpec::Restore { into: RestoreInto::Preview(preview), .. } => (ResourceKind::Preview, preview.as_str()),
            JobSpec::CreateBackup { backup } => (ResourceKind::Backup, backup.as_str()),
        };
        ResourceRef { kind, id: id.to_string() }
    }

    /// The preview the job acts on, if it acts on one.
    pub fn preview(&self) -> Option<&PreviewId> {
        match self {
            JobSpec::CreatePreview { preview }
            | JobSpec::ResetPreview { preview }
            | JobSpec::DeletePreview { preview }
            | JobSpec::Restore { into: RestoreInto::Preview(preview), .. } => Some(preview),
            _ => None,
        }
    }

    /// The parameters as stored: a JSON object, or `null` for a kind with
    /// none (the target is the stored resource).
    pub fn params(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            JobSpec::Provision
            | JobSpec::CreatePreview { .. }
            | JobSpec::ResetPreview { .. }
            | JobSpec::DeletePreview { .. }
            | JobSpec::CreateBackup { .. } => serde_json::Value::Null,
            JobSpec::DeleteProject { dropped_previews } if dropped_previews.is_empty() => serde_json::Value::Null,
            JobSpec::DeleteProject { dropped_previews } => json!({ DROPPED_PREVIEWS: dropped_previews }),
            JobSpec::RotateCredentials { new_password } => json!({ NEW_PASSWORD: new_password.as_str() }),
            JobSpec::Restore { restore, source, into: RestoreInto::Project { safety_backup } } => {
                json!({ RESTORE_ID: restore, SOURCE_BACKUP_ID: source, SAFETY_BACKUP_ID: safety_backup })
            }
            JobSpec::Restore { restore, source, into: RestoreInto::Preview(_) } => {
                json!({ RESTORE_ID: restore, SOURCE_BACKUP_ID: source })
            }
            JobSpec::Import { import, source_url, safety_backup } => {
                json!({ IMPORT_ID: import, SAFETY_BACKUP_ID: safety_backup, SOURCE_URL: source_url.as_str() })
            }
        }
    }

    /// Reads a stored specification back: its kind, resource and parameters
    /// (see [`JobSpec::params`]). An error names what is missing or wrong;
    /// a store reports it as an unreadable record.
    pub fn decode(kind: JobKind, resource: &ResourceRef, params: &serde_json::Value) -> Result<JobSpec, String> {
        let p: StoredParams = if params.is_null() {
            StoredParams::default()
        } else {
            serde_json::from_value(params.clone()).map_err(|e| format!("{} job parameters: {e}", kind.as_str()))?
        };
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty()).ok_or_else(|| format!("{} job has no {name}", kind.as_str()))
        };
        let on = |expected: ResourceKind| {
            if resource.kind == expected {
                Ok(resource.id.clone())
            } else {
                Err(format!("{} job acts on a {}, not a {}", kind.as_str(), expected, resource.kind))
            }
        };
        Ok(match kind {
            JobKind::Provision => {
                on(ResourceKind::Project)?;
                JobSpec::Provision
            }
            JobKind::DeleteProject => {
                on(ResourceKind::Project)?;
                JobSpec::DeleteProject {
                    dropped_previews: p.dropped_previews.into_iter().map(PreviewId::from).collect(),
                }
            }
            JobKind::RotateCredentials => {
                on(ResourceKind::Project)?;
                JobSpec::RotateCredentials { new_password: Sealed(need(p.new_password_sealed, NEW_PASSWORD)?) }
            }
            JobKind::CreatePreview => JobSpec::CreatePreview { preview: on(ResourceKind::Preview)?.into() },
            JobKind::ResetPreview => JobSpec::ResetPreview { preview: on(ResourceKind::Preview)?.into() },
            JobKind::DeletePreview => JobSpec::DeletePreview { preview: on(ResourceKind::Preview)?.into() },
            JobKind::CreateBackup => JobSpec::CreateBackup { backup: on(ResourceKind::Backup)?.into() },
            JobKind::Restore => {
                let into = match resource.kind {
                    ResourceKind::Preview => RestoreInto::Preview(resource.id.clone().into()),
                    _ => {
                        on(ResourceKind::Project)?;
                        RestoreInto::Project { safety_backup: need(p.safety_backup_id, SAFETY_BACKUP_ID)?.into() }
                    }
                };
                JobSpec::Restore {
                    restore: need(p.restore_id, RESTORE_ID)?.into(),
                    source: need(p.backup_id, SOURCE_BACKUP_ID)?.into(),
                    into,
                }
            }
            JobKind::Import => {
                on(ResourceKind::Project)?;
                JobSpec::Import {
                    import: need(p.import_id, IMPORT_ID)?.into(),
                    source_url: Sealed(need(p.source_url_sealed, SOURCE_URL)?),
                    safety_backup: need(p.safety_backup_id, SAFETY_BACKUP_ID)?.into(),
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Job {
    /// `job_...`
    pub id: String,
    // Follows from `spec`; kept as a field for the API's view and the stores.
    pub kind: JobKind,
    pub state: JobState,
    pub organization_id: String,
    pub project_id: Option<String>,
    /// What the job acts on.
    pub resource: ResourceRef,
    /// How many times a worker has started running this job.
    pub attempt: u32,
    /// Index of the next step to run (steps before it are done).
    #[serde(skip)]
    #[schema(ignore)]
    pub step: u32,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::serialize_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the job failed, in words fit for the caller.
    pub error: Option<String>,
    /// Optimistic-concurrency version, bumped by every write.
    #[serde(skip)]
    #[schema(ignore)]
    pub version: u64,
    #[serde(skip)]
    #[schema(ignore)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// What the job is for (sealed values inside are never shown).
    #[serde(skip)]
    #[schema(ignore)]
    pub spec: JobSpec,
    /// Set while the job waits for an operation that is not finished yet (a
    /// cloud database still being created): the job stays `running`.
    pub waiting: Option<JobWait>,
}

/// The step a running job waits on, since when, and when it looks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct JobWait {
    /// The step's name, e.g. `create_database`.
    pub step: String,
    /// When the step first answered "not yet".
    #[serde(serialize_with = "crate::ts::serialize")]
    pub since: DateTime<Utc>,
    /// How many times it has been checked and found not finished.
    pub checks: u32,
    /// When it is checked again.
    #[serde(serialize_with = "crate::ts::serialize")]
    pub next_check_at: DateTime<Utc>,
}

impl JobWait {
    /// As the stores keep it: one JSON text with the times in nanoseconds,
    /// so they round-trip exactly.
    pub fn encode(&self) -> String {
        let nanos = |t: &DateTime<Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX);
        serde_json::json!({
            "step": self.step,
            "since": nanos(&self.since),
            "checks": self.checks,
            "next_check_at": nanos(&self.next_check_at),
        })
        .to_string()
    }

    pub fn decode(text: &str) -> Result<JobWait, String> {
        #[derive(Deserialize)]
        struct Stored {
            step: String,
            since: i64,
            checks: u32,
            next_check_at: i64,
        }
        let s: Stored = serde_json::from_str(text).map_err(|e| format!("a job's wait does not decode: {e}"))?;
        Ok(JobWait {
            step: s.step,
            since: DateTime::from_timestamp_nanos(s.since),
            checks: s.checks,
            next_check_at: DateTime::from_timestamp_nanos(s.next_check_at),
        })
    }
}

impl Job {
    /// A new `queued` job of a project: its kind and resource follow from `spec`.
    pub fn queued(id: String, spec: JobSpec, organization_id: &str, project: &ProjectId, now: DateTime<Utc>) -> Job {
        Job {
            id,
            kind: spec.kind(),
            state: JobState::Queued,
            organization_id: organization_id.to_string(),
            project_id: Some(project.to_string()),
            resource: spec.resource(project),
            attempt: 0,
            step: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            error: None,
            version: 0,
            lease_owner: None,
            lease_expires_at: None,
            spec,
            waiting: None,
        }
    }

    /// The project the job belongs to (every job has one; an old record
    /// without it acts on its project directly).
    pub fn project(&self) -> ProjectId {
        ProjectId::from(self.project_id.as_deref().unwrap_or(&self.resource.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(kind: ResourceKind, id: &str) -> ResourceRef {
        ResourceRef { kind, id: id.into() }
    }

    /// Jobs as an earlier version stored them: (kind, resource, params).
    fn fixtures() -> Vec<(JobKind, ResourceRef, serde_json::Value, JobSpec)> {
        use ResourceKind::*;
        vec![
            (JobKind::Provision, r(Project, "prj_1"), json!(null), JobSpec::Provision),
            (
                JobKind::DeleteProject,
                r(Project, "prj_1"),
                json!(null),
                JobSpec::DeleteProject { dropped_previews: vec![] },
            ),
            (
                JobKind::DeleteProject,
                r(Project, "prj_1"),
                json!({ "dropped_previews": ["pvw_1", "pvw_2"] }),
                JobSpec::DeleteProject { dropped_previews: vec!["pvw_1".into(), "pvw_2".into()] },
            ),
            (
                JobKind::RotateCredentials,
                r(Project, "prj_1"),
                json!({ "new_password_sealed": "v1:abc" }),
                JobSpec::RotateCredentials { new_password: Sealed::new("v1:abc".into()) },
            ),
            (
                JobKind::CreatePreview,
                r(Preview, "pvw_1"),
                json!(null),
                JobSpec::CreatePreview { preview: "pvw_1".into() },
            ),
            (
                JobKind::ResetPreview,
                r(Preview, "pvw_1"),
                json!(null),
                JobSpec::ResetPreview { preview: "pvw_1".into() },
            ),
            (
                JobKind::DeletePreview,
                r(Preview, "pvw_1"),
                json!(null),
                JobSpec::DeletePreview { preview: "pvw_1".into() },
            ),
            (JobKind::CreateBackup, r(Backup, "bkp_1"), json!(null), JobSpec::CreateBackup { backup: "bkp_1".into() }),
            (
                JobKind::Restore,
                r(Project, "prj_1"),
                json!({ "restore_id": "rst_1", "backup_id": "bkp_1", "safety_backup_id": "bkp_2" }),
                JobSpec::Restore {
                    restore: "rst_1".into(),
                    source: "bkp_1".into(),
                    into: RestoreInto::Project { safety_backup: "bkp_2".into() },
                },
            ),
            (
                JobKind::Restore,
                r(Preview, "pvw_1"),
                json!({ "restore_id": "rst_1", "backup_id": "bkp_1" }),
                JobSpec::Restore {
                    restore: "rst_1".into(),
                    source: "bkp_1".into(),
                    into: RestoreInto::Preview("pvw_1".into()),
                },
            ),
            (
                JobKind::Import,
                r(Project, "prj_1"),
                json!({ "import_id": "imp_1", "safety_backup_id": "bkp_2", "source_url_sealed": "v1:url" }),
                JobSpec::Import {
                    import: "imp_1".into(),
                    source_url: Sealed::new("v1:url".into()),
                    safety_backup: "bkp_2".into(),
                },
            ),
        ]
    }

    #[test]
    fn jobs_stored_by_earlier_versions_decode_and_encode_to_the_same_shape() {
        for (kind, resource, params, spec) in fixtures() {
            let decoded = JobSpec::decode(kind, &resource, &params).unwrap();
            assert_eq!(decoded, spec, "{kind:?} {params}");
            assert_eq!(decoded.kind(), kind);
            assert_eq!(decoded.resource(&"prj_1".into()), resource, "{kind:?}");
            assert_eq!(decoded.params(), params, "{kind:?}: the stored shape does not change");
        }
        // Every kind has a fixture.
        let kinds: std::collections::HashSet<JobKind> = fixtures().iter().map(|f| f.0).collect();
        assert_eq!(kinds.len(), 9);
    }

    #[test]
    fn a_missing_parameter_is_an_error_never_an_empty_value() {
        let project = r(ResourceKind::Project, "prj_1");
        for (kind, params, missing) in [
            (JobKind::RotateCredentials, json!({}), "new_password_sealed"),
            (JobKind::RotateCredentials, json!({ "new_password_sealed": "" }), "new_password_sealed"),
            (JobKind::Restore, json!({ "restore_id": "rst_1", "backup_id": "bkp_1" }), "safety_backup_id"),
            (JobKind::Restore, json!({ "backup_id": "bkp_1", "safety_backup_id": "b" }), "restore_id"),
            (JobKind::Import, json!({ "import_id": "imp_1", "safety_backup_id": "b" }), "source_url_sealed"),
        ] {
            let e = JobSpec::decode(kind, &project, &params).unwrap_err();
            assert!(e.contains(missing), "{kind:?}: {e}");
        }
        let e = JobSpec::decode(JobKind::CreatePreview, &project, &json!(null)).unwrap_err();
        assert!(e.contains("preview"), "{e}");
        let e =
            JobSpec::decode(JobKind::RotateCredentials, &project, &json!({ "new_password_sealed": 7 })).unwrap_err();
        assert!(e.contains("rotate_credentials"), "{e}");
    }

    #[test]
    fn sealed_values_never_show_in_debug() {
        let spec = JobSpec::RotateCredentials { new_password: Sealed::new("v1:secret-envelope".into()) };
        assert!(!format!("{spec:?}").contains("secret-envelope"));
    }
}
