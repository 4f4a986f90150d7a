//! Backups (pg_dump artifacts), restores (into a new preview, or over the
//! project in place after a safety backup) and imports from another server.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::error::{DomainError, DomainResult};
use crate::fields::{Name, PreviewName, TtlHours};
use crate::ids;
use crate::jobs::StartedJob;
use crate::model::{
    Backup, BackupKind, BackupState, Import, Job, JobSpec, OperationState, Preview, PreviewMode, Project, Restore,
    RestoreInto, RestoreMode, Sealed,
};
use crate::ports::{Admission, QuotaKind};
use crate::ports::{Page, ResourceWrite};
use crate::principal::Principal;
use crate::scopes::Scope;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// Defaults to `backup-<time>`.
    #[schema(inline)]
    pub name: Option<Name<100>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackupJob {
    pub backup: Backup,
    pub job: Job,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRestore {
    /// A completed backup of this project.
    pub backup_id: String,
    pub mode: RestoreMode,
    /// Name of the new preview (`preview` mode); defaults to `restore-<backup id suffix>`.
    #[schema(inline)]
    pub preview_name: Option<PreviewName>,
    /// TTL in hours of the new preview (`preview` mode), default 72.
    #[schema(inline)]
    pub ttl_hours: Option<TtlHours>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestoreJob {
    pub restore: Restore,
    pub job: Job,
    /// The preview being created (`preview` mode).
    pub preview: Option<Preview>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImport {
    /// `postgres://user:password@host:port/database`. Its password is never stored or echoed.
    pub source_url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportJob {
    pub import: Import,
    pub job: Job,
}

/// Fields of a restore that only mode `preview` takes: the check in
/// `create_restore`, and the schema's `if`/`then` (added to the document
/// where it is built).
pub const PREVIEW_MODE_ONLY: [&str; 2] = ["preview_name", "ttl_hours"];

const SOURCE_URL_FORMAT: &str = "source_url must be postgres://user:password@host:port/database";

/// Checks a `postgres://` URL and answers it without its password.
pub fn redact_source_url(raw: &str) -> DomainResult<String> {
    let bad = || DomainError::invalid(SOURCE_URL_FORMAT);
    let url = url::Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad());
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let db = url.path().trim_start_matches('/');
    if db.is_empty() || url.username().is_empty() {
        return Err(bad());
    }
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("postgres://{}@{host}{port}/{db}", url.username()))
}

impl App {
    fn backup_record(&self, project: &Project, name: String, kind: BackupKind) -> Backup {
        Backup {
            id: ids::new_id(ids::BACKUP),
            organization_id: project.organization_id.clone(),
            project_id: project.id.clone(),
            name,
            kind,
            state: BackupState::Creating,
            size_bytes: None,
            sha256: None,
            created_at: self.now(),
            completed_at: None,
        }
    }

    fn operation_job(&self, spec: JobSpec, project: &Project) -> Job {
        self.queued_job(spec, (&project.organization_id, &project.id))
    }

    async fn ready_project(&self, p: &Principal, project_id: &str, action: &str) -> DomainResult<Project> {
        let project = self.visible_project(p, project_id).await?;
        project.require_ready(action)?;
        Ok(project)
    }

    pub async fn create_backup(&self, p: &Principal, project_id: &str, req: CreateBackup) -> DomainResult<BackupJob> {
        p.require(Scope::BackupsWrite)?;
        let project = self.ready_project(p, project_id, "it can be backed up").await?;
        let name = match req.name {
            Some(n) => n.into_inner(),
            None => format!("backup-{}", self.now().format("%Y%m%d-%H%M%S")),
        };
        let backup = self.backup_record(&project, name, BackupKind::Manual);
        let job = self.operation_job(JobSpec::CreateBackup { backup: backup.id.as_str().into() }, &project);
        let admission = self.inside_project(&project.id, Some(QuotaKind::Backups));
        let StartedJob { job } = self.start_job(job, ResourceWrite::Backup(backup.clone()), admission).await?;
        Ok(BackupJob { backup, job })
    }

    pub async fn list_backups(&self, p: &Principal, project_id: &str, page: &Page) -> DomainResult<Vec<Backup>> {
        p.require(Scope::BackupsRead)?;
        self.visible_project(p, project_id).await?;
        self.store.list_backups(project_id, page).await
    }

    async fn visible_backup(&self, p: &Principal, backup_id: &str) -> DomainResult<Backup> {
        let backup = self
            .store
            .get_backup(backup_id)
            .await?
            .filter(|b| b.state != BackupState::Deleted)
            .ok_or_else(|| DomainError::not_found("backup", backup_id))?;
        p.check_project(&backup.organization_id, Some(&backup.project_id), "backup", backup_id)?;
        Ok(backup)
    }

    pub async fn get_backup(&self, p: &Principal, backup_id: &str) -> DomainResult<Backup> {
        p.require(Scope::BackupsRead)?;
        self.visible_backup(p, backup_id).await
    }

    /// Deletes the artifact and marks the backup deleted.
    pub async fn delete_backup(&self, p: &Principal, backup_id: &str) -> DomainResult<Backup> {
        p.require(Scope::BackupsWrite)?;
        let mut backup = self.visible_backup(p, backup_id).await?;
        if backup.state == BackupState::Creating {
            return Err(DomainError::Conflict(format!("backup {} is still being created", backup.id)));
        }
        self.artifacts.delete(&backup.id).await?;
        backup.state = BackupState::Deleted;
        self.store.put_backup(&backup).await?;
        tracing::info!(backup_id = %backup.id, "backup deleted");
        Ok(backup)
    }

    pub async fn create_restore(
        &self,
        p: &Principal,
        project_id: &str,
        req: CreateRestore,
    ) -> DomainResult<RestoreJob> {
        p.require(Scope::BackupsWrite)?;
        let project = self.ready_project(p, project_id, "it can be restored").await?;
        let backup = self
            .store
            .get_backup(&req.backup_id)
            .await?
            .filter(|b| b.project_id == project.id && b.state != BackupState::Deleted)
            .ok_or_else(|| {
                DomainError::NotFound(format!("backup {} not found in project {}", req.backup_id, project.id))
            })?;
        if backup.state != BackupState::Completed {
            return Err(DomainError::Conflict(format!(
                "backup {} is {}; only a completed backup can be restored",
                backup.id,
                backup.state.as_str()
            )));
        }
        let now = self.now();
        let mut restore = Restore {
            id: ids::new_id(ids::RESTORE),
            organization_id: project.organization_id.clone(),
            project_id: project.id.clone(),
            backup_id: backup.id.clone(),
            mode: req.mode,
            state: OperationState::Running,
            preview_id: None,
            safety_backup_id: None,
            job_id: String::new(),
            created_at: now,
            finished_at: None,
        };
        match req.mode {
            RestoreMode::Overwrite => {
                if req.preview_name.is_some() || req.ttl_hours.is_some() {
                    let [a, b] = PREVIEW_MODE_ONLY;
                    return Err(DomainError::invalid(format!("{a} and {b} apply to mode \"preview\" only")));
                }
                p.require_admin("overwrite a project with a backup")?;
                let safety =
                    self.backup_record(&project, format!("safety before restore {}", restore.id), BackupKind::Safety);
                restore.safety_backup_id = Some(safety.id.clone());
                let spec = JobSpec::Restore {
                    restore: restore.id.as_str().into(),
                    source: backup.id.as_str().into(),
                    into: RestoreInto::Project { safety_backup: safety.id.as_str().into() },
                };
                let job = self.operation_job(spec, &project);
                restore.job_id = job.id.clone();
                let write =
                    ResourceWrite::All(vec![ResourceWrite::Backup(safety), ResourceWrite::Restore(restore.clone())]);
                // The project's lock keeps its deletion out; the safety backup counts.
                let admission = Admission {
                    quota: Some(self.settings.quotas.claim(QuotaKind::Backups, &project.id)),
                    ..Admission::default()
                };
                let StartedJob { job } = self.start_job(job, write, admission).await?;
                Ok(RestoreJob { restore, job, preview: None })
            }
            RestoreMode::Preview => {
                let name = match req.preview_name {
                    Some(n) => n,
                    None => {
                        PreviewName::parse(&format!("restore-{}", &backup.id[backup.id.len().saturating_sub(8)..]))?
                    }
                };
                let preview = self.new_preview(&project, name, PreviewMode::Clone, req.ttl_hours).await?;
                restore.preview_id = Some(preview.id.clone());
                let spec = JobSpec::Restore {
                    restore: restore.id.as_str().into(),
                    source: backup.id.as_str().into(),
                    into: RestoreInto::Preview(preview.id.as_str().into()),
                };
                let job = self.operation_job(spec, &project);
                restore.job_id = job.id.clone();
                let write = ResourceWrite::All(vec![
                    ResourceWrite::Preview(preview.clone()),
                    ResourceWrite::Restore(restore.clone()),
                ]);
                let admission = self.inside_project(&project.id, Some(QuotaKind::Previews));
                let StartedJob { job } = self.start_job(job, write, admission).await?;
                Ok(RestoreJob { restore, job, preview: Some(preview) })
            }
        }
    }

    pub async fn get_restore(&self, p: &Principal, restore_id: &str) -> DomainResult<Restore> {
        p.require(Scope::BackupsRead)?;
        let r =
            self.store.get_restore(restore_id).await?.ok_or_else(|| DomainError::not_found("restore", restore_id))?;
        p.check_project(&r.organization_id, Some(&r.project_id), "restore", restore_id)?;
        Ok(r)
    }

    /// Copies another PostgreSQL database into the project, replacing its
    /// data after a safety backup. The source URL is kept only sealed, in the
    /// job, and shown nowhere with its password.
    pub async fn create_import(&self, p: &Principal, project_id: &str, req: CreateImport) -> DomainResult<ImportJob> {
        p.require(Scope::ProjectsWrite)?;
        let source = redact_source_url(&req.source_url)?;
        let project = self.ready_project(p, project_id, "it can import").await?;
        // Checked here for a 400 now; the import checks again when it
        // connects, since the name may resolve elsewhere by then.
        let url = url::Url::parse(req.source_url.trim()).map_err(|_| DomainError::invalid(SOURCE_URL_FORMAT))?;
        self.egress.check_url(&url).await.map_err(|e| DomainError::invalid(format!("source_url refused: {e}")))?;
        let safety = self.backup_record(&project, "safety before import".into(), BackupKind::Safety);
        let mut import = Import {
            id: ids::new_id(ids::IMPORT),
            organization_id: project.organization_id.clone(),
            project_id: project.id.clone(),
            source,
            state: OperationState::Running,
            safety_backup_id: Some(safety.id.clone()),
            job_id: String::new(),
            created_at: self.now(),
            finished_at: None,
        };
        let sealed = self.secrets.seal(req.source_url.trim()).await?;
        let spec = JobSpec::Import {
            import: import.id.as_str().into(),
            source_url: Sealed::new(sealed),
            safety_backup: safety.id.as_str().into(),
        };
        let job = self.operation_job(spec, &project);
        import.job_id = job.id.clone();
        let write = ResourceWrite::All(vec![ResourceWrite::Backup(safety), ResourceWrite::Import(import.clone())]);
        let StartedJob { job } = self.start_job(job, write, Admission::default()).await?;
        Ok(ImportJob { import, job })
    }

    pub async fn get_import(&self, p: &Principal, import_id: &str) -> DomainResult<Import> {
        p.require(Scope::ProjectsRead)?;
        let i = self.store.get_import(import_id).await?.ok_or_else(|| DomainError::not_found("import", import_id))?;
        p.check_project(&i.organization_id, Some(&i.project_id), "import", import_id)?;
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_are_checked_and_redacted() {
        assert_eq!(
            redact_source_url("postgres://u:s3cret@db.example.com:6543/app").unwrap(),
            "postgres://u@db.example.com:6543/app"
        );
        assert_eq!(redact_source_url("postgresql://u:p@h/d?sslmode=require").unwrap(), "postgres://u@h/d");
        for bad in ["mysql://u:s3cret@h/d", "postgres://u:s3cret@h/", "postgres://h/d", "not a url", ""] {
            let e = redact_source_url(bad).unwrap_err();
            assert_eq!(e, DomainError::invalid("source_url must be postgres://user:password@host:port/database"));
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }
}
