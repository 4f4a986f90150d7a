//! Jobs: starting them (resource + job + lock in one transaction, then a
//! queue message), reading them, and running them as resumable steps.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::{add, sub, App};
use crate::backups::{scratch_database, IMPORT_ID, RESTORE_ID, SAFETY_BACKUP_ID, SOURCE_BACKUP_ID, SOURCE_URL_SEALED};
use crate::error::{DomainError, DomainResult};
use crate::ids;
use crate::model::{
    Backup, BackupState, ConnectionInfo, Event, Job, JobKind, JobState, OperationState, Preview, PreviewMode,
    PreviewState, Project, ProjectState, ResourceRef, Timestamp,
};
use crate::ports::{Admission, Page, ProviderError, QuotaKind, ResourceWrite};
use crate::principal::Principal;
use crate::projects::NEW_PASSWORD_PARAM;
use crate::scopes::Scope;

/// Job parameter: ids of the previews a project deletion dropped.
const DROPPED_PREVIEWS: &str = "dropped_previews";

/// The body of a job queue message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobMessage {
    pub job_id: String,
}

pub(crate) struct StartedJob {
    pub job: Job,
}

/// What a step achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// Not finished yet (e.g. a cloud database still creating): run this step
    /// again after the delay, without counting an attempt as failed.
    Wait(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Retryable(m) => StepError::Retryable(m),
            ProviderError::Permanent(m) => StepError::Permanent(m),
        }
    }
}

/// What a job's `error` says when the store, the queue or the artifact store
/// failed: their own words (paths, SQL, SDK errors) are only logged.
const SERVICE_UNAVAILABLE: &str =
    "a CapyDB service was unavailable; the job is retried, contact support if it keeps failing";

impl From<DomainError> for StepError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Unavailable(m) | DomainError::Internal(m) => {
                // Inside the job's span: the entry carries the job id.
                tracing::warn!(error = %m, "a job step's store or service call failed");
                StepError::Retryable(SERVICE_UNAVAILABLE.into())
            }
            other => StepError::Permanent(other.to_string()),
        }
    }
}

/// What a step was doing, in a user's words: a failed job's `error` is
/// `<step>: <this>: <why; what to do>`, the cause coming from the step
/// (provider errors are written for users, see `ProviderError`).
fn step_purpose(kind: JobKind, step: &str, into_preview: bool) -> &'static str {
    match (kind, step) {
        (JobKind::Provision, "create_role") => "the project's role could not be created",
        (JobKind::Provision, "create_database") => "the project's database could not be created",
        (JobKind::DeleteProject, "drop_previews") => "the project's previews could not be deleted",
        (JobKind::DeleteProject | JobKind::DeletePreview, "drop_database") => "the database could not be dropped",
        (JobKind::DeleteProject | JobKind::DeletePreview, "drop_role") => "the role could not be dropped",
        (JobKind::RotateCredentials, "set_password") => "the new password could not be set",
        (JobKind::CreatePreview, "create_role") => "the preview's role could not be created",
        (JobKind::CreatePreview | JobKind::ResetPreview, "copy_data") => "the preview's data could not be made",
        (JobKind::CreateBackup, "dump") => "the backup could not be taken",
        (JobKind::Restore | JobKind::Import, "prepare") if into_preview => "the preview's role could not be created",
        (JobKind::Restore, "prepare") => "the safety backup before the restore could not be taken",
        (JobKind::Import, "prepare") => "the safety backup before the import could not be taken",
        (JobKind::Restore, "copy_data") => "the backup could not be restored",
        (JobKind::Import, "copy_data") => "the source database could not be imported",
        (JobKind::Restore | JobKind::Import, "swap_database") => "the new copy could not take the project's place",
        (_, "verify_connection") => "the database did not accept its owner's connection",
        _ => "the step failed",
    }
}

/// What the worker should do with the queue message that carried a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The job is finished (or gone): delete the message.
    Done,
    /// Make the message visible again after this delay.
    RetryAfter(Duration),
    /// The message could not be handled (the store is unavailable, a record
    /// is unreadable): like `RetryAfter`, but it counts toward the queue's
    /// dead-letter limit, so a message that always fails ends there.
    Failed(Duration),
}

/// Makes `job` the failed job to store (a new version, no lease) and answers
/// the version it replaces.
fn mark_failed(job: &mut Job, error: &str, now: Timestamp) -> u64 {
    let expected = job.version;
    job.version += 1;
    job.state = JobState::Failed;
    job.finished_at = Some(now);
    job.error = Some(error.to_string());
    job.lease_owner = None;
    job.lease_expires_at = None;
    expected
}

/// The steps of each job kind, in order. A step is idempotent: running it
/// again after a crash finds what the previous run made and carries on.
pub fn steps(kind: JobKind) -> &'static [&'static str] {
    match kind {
        JobKind::Provision => &["create_role", "create_database", "verify_connection"],
        JobKind::DeleteProject => &["drop_previews", "drop_database", "drop_role"],
        JobKind::RotateCredentials => &["set_password", "verify_connection"],
        JobKind::CreatePreview => &["create_role", "copy_data", "verify_connection"],
        JobKind::ResetPreview => &["copy_data", "verify_connection"],
        JobKind::DeletePreview => &["drop_database", "drop_role"],
        JobKind::CreateBackup => &["dump"],
        JobKind::Restore | JobKind::Import => &["prepare", "copy_data", "swap_database", "verify_connection"],
    }
}

impl App {
    /// The admission of a job inside `project_id` (a preview, a backup): it
    /// holds the project until it finishes (see [`Admission`]), and counts
    /// one more of `quota` when it adds a resource.
    pub(crate) fn inside_project(&self, project_id: &str, quota: Option<QuotaKind>) -> Admission {
        Admission {
            hold_project: Some(project_id.to_string()),
            quota: quota.map(|k| self.settings.quotas.claim(k, project_id)),
            ..Admission::default()
        }
    }

    /// Writes the resource, the job and the lock, then enqueues the job. A
    /// lost enqueue is repaired by the sweeper, which re-drives stale queued jobs.
    pub(crate) async fn start_job(
        &self,
        job: Job,
        write: ResourceWrite,
        admission: Admission,
    ) -> DomainResult<StartedJob> {
        self.start_job_with_events(job, write, &[], admission).await
    }

    pub(crate) async fn start_job_with_events(
        &self,
        job: Job,
        write: ResourceWrite,
        events: &[Event],
        admission: Admission,
    ) -> DomainResult<StartedJob> {
        if let Some(running) = self.store.begin_job(&job, &write, events, &admission).await? {
            return Err(DomainError::Conflict(format!(
                "{} {} has a lifecycle job in progress: {running}; wait for it to finish",
                job.resource.kind, job.resource.id
            )));
        }
        tracing::info!(job_id = %job.id, kind = job.kind.as_str(), resource = %job.resource.id, "job queued");
        self.publish_events(events).await;
        self.enqueue(&job.id, Duration::ZERO).await;
        Ok(StartedJob { job })
    }

    async fn enqueue(&self, job_id: &str, delay: Duration) {
        let body = serde_json::to_string(&JobMessage { job_id: job_id.to_string() }).unwrap_or_default();
        if let Err(e) = self.queue.send(&body, delay).await {
            tracing::error!(job_id, error = %e, "could not enqueue job; the sweeper will re-drive it");
        }
    }

    /// A new `queued` job of a project's resource.
    pub(crate) fn queued_job(
        &self,
        kind: JobKind,
        (organization_id, project_id): (&str, &str),
        resource: ResourceRef,
        params: serde_json::Value,
    ) -> Job {
        Job {
            id: ids::new_id(ids::JOB),
            kind,
            state: JobState::Queued,
            organization_id: organization_id.to_string(),
            project_id: Some(project_id.to_string()),
            resource,
            attempt: 0,
            step: 0,
            created_at: self.now(),
            started_at: None,
            finished_at: None,
            error: None,
            version: 0,
            lease_owner: None,
            lease_expires_at: None,
            params,
        }
    }

    /// The owner-role connection details of a database, for `/connections`.
    pub(crate) async fn owner_connection(
        &self,
        database: &str,
        role: &str,
        password_sealed: &str,
    ) -> DomainResult<Vec<ConnectionInfo>> {
        let password = self.secrets.open(password_sealed).await?;
        let mut info = self.endpoint.connection_info(database, role, &password);
        info.role = "owner".into();
        Ok(vec![info])
    }

    pub async fn get_job(&self, p: &Principal, job_id: &str) -> DomainResult<Job> {
        p.require(Scope::JobsRead)?;
        let job = self.store.get_job(job_id).await?.ok_or_else(|| DomainError::not_found("job", job_id))?;
        p.check_project(&job.organization_id, job.project_id.as_deref(), "job", job_id)?;
        Ok(job)
    }

    pub async fn list_project_jobs(&self, p: &Principal, project_id: &str, page: &Page) -> DomainResult<Vec<Job>> {
        p.require(Scope::JobsRead)?;
        self.visible_project(p, project_id).await?;
        self.store.list_project_jobs(project_id, page).await
    }

    /// Handles one queue message: takes the job's lease and runs its
    /// remaining steps. Safe to call twice for the same job, concurrently or not.
    pub async fn run_job_message(&self, body: &str, worker: &str) -> Disposition {
        let Ok(msg) = serde_json::from_str::<JobMessage>(body) else {
            tracing::error!("dropping a job message that is not JSON {{\"job_id\"}}");
            return Disposition::Done;
        };
        let span = tracing::info_span!("job", job_id = %msg.job_id);
        match tracing::Instrument::instrument(self.run_job(&msg.job_id, worker), span).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(job_id = %msg.job_id, error = %e, "job run interrupted; will retry");
                Disposition::Failed(self.settings.jobs.backoff_base)
            }
        }
    }

    async fn run_job(&self, job_id: &str, worker: &str) -> DomainResult<Disposition> {
        let Some(mut job) = self.store.get_job(job_id).await? else {
            tracing::warn!("job not found; dropping its message");
            return Ok(Disposition::Done);
        };
        if job.state.is_terminal() {
            return Ok(Disposition::Done);
        }
        let now = self.now();
        if let Some(until) = job.lease_expires_at.filter(|t| *t > now) {
            // Leased by a live worker, or backing off before its next attempt.
            return Ok(Disposition::RetryAfter((until - now).to_std().unwrap_or_default()));
        }
        let expected = job.version;
        job.version += 1;
        job.state = JobState::Running;
        job.attempt += 1;
        job.started_at.get_or_insert(now);
        job.lease_owner = Some(worker.to_string());
        job.lease_expires_at = Some(add(now, self.settings.jobs.lease));
        if !self.store.update_job(&job, expected).await? {
            return Ok(Disposition::RetryAfter(Duration::from_secs(1)));
        }
        tracing::info!(kind = job.kind.as_str(), attempt = job.attempt, step = job.step, "job running");

        let plan = steps(job.kind);
        while (job.step as usize) < plan.len() {
            let step = plan[job.step as usize];
            let result = self.run_step(&mut job, step).await;
            let now = self.now();
            let expected = job.version;
            job.version += 1;
            match result {
                Ok(StepOutcome::Done) => {
                    tracing::info!(step, "step done");
                    job.step += 1;
                    job.lease_expires_at = Some(add(now, self.settings.jobs.lease));
                    if !self.store.update_job(&job, expected).await? {
                        tracing::warn!(step, "lost the job lease; another worker carries on");
                        return Ok(Disposition::Done);
                    }
                }
                Ok(StepOutcome::Wait(delay)) => {
                    job.lease_owner = None;
                    job.lease_expires_at = Some(add(now, delay));
                    job.attempt -= 1;
                    self.store.update_job(&job, expected).await?;
                    return Ok(Disposition::RetryAfter(delay));
                }
                Err(StepError::Retryable(msg)) if job.attempt < self.settings.jobs.max_attempts => {
                    let delay = self.backoff(job.attempt);
                    tracing::warn!(job_id = %job.id, step, error = %msg, retry_in_ms = delay.as_millis() as u64, "step failed; will retry");
                    job.lease_owner = None;
                    job.lease_expires_at = Some(add(now, delay));
                    let purpose = step_purpose(job.kind, step, job.resource.kind == "preview");
                    job.error = Some(format!("retrying after: {step}: {purpose}: {msg}"));
                    self.store.update_job(&job, expected).await?;
                    return Ok(Disposition::RetryAfter(delay));
                }
                Err(StepError::Retryable(msg) | StepError::Permanent(msg)) => {
                    job.version = expected;
                    tracing::error!(job_id = %job.id, step, error = %msg, "job failed");
                    let purpose = step_purpose(job.kind, step, job.resource.kind == "preview");
                    if let Err(e) = self.fail_job(job.clone(), &format!("{step}: {purpose}: {msg}")).await {
                        // The failure could not be recorded (its resource is
                        // unreadable, the store is down): give the lease back
                        // so the message's next delivery retries at once, and
                        // let the error count toward the dead-letter limit.
                        job.version = expected + 1;
                        job.lease_owner = None;
                        job.lease_expires_at = None;
                        if let Err(e2) = self.store.update_job(&job, expected).await {
                            tracing::warn!(error = %e2, "could not release the lease of a job that failed to fail");
                        }
                        return Err(e);
                    }
                    return Ok(Disposition::Done);
                }
            }
        }
        self.complete_job(job).await?;
        Ok(Disposition::Done)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let s = &self.settings.jobs;
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        s.backoff_base.saturating_mul(factor).min(s.backoff_cap)
    }

    async fn job_project(&self, job: &Job) -> Result<Project, StepError> {
        let id = job.project_id.as_deref().unwrap_or(&job.resource.id);
        self.store.get_project(id).await?.ok_or_else(|| StepError::Permanent(format!("project {id} no longer exists")))
    }

    async fn job_preview(&self, job: &Job) -> Result<Preview, StepError> {
        let id = &job.resource.id;
        self.store.get_preview(id).await?.ok_or_else(|| StepError::Permanent(format!("preview {id} no longer exists")))
    }

    async fn new_password(&self, job: &Job) -> Result<String, StepError> {
        let sealed = job
            .params
            .get(NEW_PASSWORD_PARAM)
            .and_then(|v| v.as_str())
            .ok_or_else(|| StepError::Permanent("rotation job has no new password".into()))?;
        Ok(self.secrets.open(sealed).await?)
    }

    async fn run_step(&self, job: &mut Job, step: &str) -> Result<StepOutcome, StepError> {
        let project = self.job_project(job).await?;
        let provider = self.database()?;
        match job.kind {
            JobKind::Provision | JobKind::DeleteProject | JobKind::RotateCredentials => match (job.kind, step) {
                (JobKind::Provision, "create_role") => {
                    let password = self.secrets.open(&project.password_sealed).await?;
                    provider.ensure_role(&project.role_name, &password).await?;
                }
                (JobKind::Provision, "create_database") => {
                    provider.ensure_database(&project.database_name, &project.role_name).await?;
                }
                (JobKind::Provision, "verify_connection") => {
                    let password = self.secrets.open(&project.password_sealed).await?;
                    provider.check_connection(&project.database_name, &project.role_name, &password).await?;
                }
                (JobKind::DeleteProject, "drop_previews") => self.drop_project_previews(job, &project).await?,
                (JobKind::DeleteProject, "drop_database") => provider.drop_database(&project.database_name).await?,
                (JobKind::DeleteProject, "drop_role") => provider.drop_role(&project.role_name).await?,
                (JobKind::RotateCredentials, "set_password") => {
                    let password = self.new_password(job).await?;
                    provider.ensure_role(&project.role_name, &password).await?;
                }
                (JobKind::RotateCredentials, "verify_connection") => {
                    let password = self.new_password(job).await?;
                    provider.check_connection(&project.database_name, &project.role_name, &password).await?;
                }
                (kind, step) => return Err(StepError::Permanent(format!("{} has no step {step}", kind.as_str()))),
            },
            JobKind::CreateBackup | JobKind::Restore | JobKind::Import => {
                self.run_data_step(job, &project, step).await?
            }
            JobKind::CreatePreview | JobKind::ResetPreview | JobKind::DeletePreview => {
                let preview = self.job_preview(job).await?;
                if job.kind != JobKind::DeletePreview
                    && matches!(project.state, ProjectState::Deleting | ProjectState::Deleted)
                {
                    return Err(StepError::Permanent(format!("project {} is being deleted", project.id)));
                }
                match (job.kind, step) {
                    (JobKind::CreatePreview, "create_role") => {
                        let password = self.secrets.open(&preview.password_sealed).await?;
                        provider.ensure_role(&preview.role_name, &password).await?;
                    }
                    (JobKind::CreatePreview | JobKind::ResetPreview, "copy_data") => match preview.mode {
                        PreviewMode::Clone => {
                            let how = provider
                                .clone_database(
                                    &project.database_name,
                                    &project.role_name,
                                    &preview.database_name,
                                    &preview.role_name,
                                )
                                .await?;
                            tracing::info!(strategy = ?how, "cloned the project's database");
                        }
                        PreviewMode::Empty => {
                            if job.kind == JobKind::ResetPreview {
                                provider.drop_database(&preview.database_name).await?;
                            }
                            provider.ensure_database(&preview.database_name, &preview.role_name).await?;
                        }
                    },
                    (JobKind::CreatePreview | JobKind::ResetPreview, "verify_connection") => {
                        let password = self.secrets.open(&preview.password_sealed).await?;
                        provider.check_connection(&preview.database_name, &preview.role_name, &password).await?;
                    }
                    (JobKind::DeletePreview, "drop_database") => provider.drop_database(&preview.database_name).await?,
                    (JobKind::DeletePreview, "drop_role") => provider.drop_role(&preview.role_name).await?,
                    (kind, step) => return Err(StepError::Permanent(format!("{} has no step {step}", kind.as_str()))),
                }
            }
        }
        Ok(StepOutcome::Done)
    }

    fn param<'a>(job: &'a Job, name: &str) -> Result<&'a str, StepError> {
        job.params
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| StepError::Permanent(format!("{} job has no {name}", job.kind.as_str())))
    }

    async fn job_backup(&self, id: &str) -> Result<Backup, StepError> {
        self.store.get_backup(id).await?.ok_or_else(|| StepError::Permanent(format!("backup {id} no longer exists")))
    }

    /// Dumps the project into the artifact store under `backup`'s id and
    /// records size and digest; the backup is complete once this returns.
    async fn take_backup(&self, project: &Project, mut backup: Backup) -> Result<Backup, StepError> {
        let staged = self.artifacts.staging_path(&backup.id).await?;
        self.database()?.dump_database(&project.database_name, &staged).await?;
        let info = self.artifacts.put(&backup.id, &staged).await.map_err(|e| match e {
            // A failed artifact write (disk full) will not heal by itself soon.
            DomainError::Internal(m) | DomainError::Unavailable(m) => {
                tracing::error!(backup_id = %backup.id, error = %m, "could not store a backup's artifact");
                StepError::Permanent(
                    "CapyDB could not store the backup file (its disk may be full); retry later, or contact \
                     support if it persists"
                        .into(),
                )
            }
            other => StepError::from(other),
        })?;
        backup.size_bytes = Some(info.size_bytes);
        backup.sha256 = Some(info.sha256);
        Ok(backup)
    }

    /// Steps of backups, restores and imports. A restore or import fills a
    /// scratch database first and only then swaps it in, so a failure before
    /// the swap leaves the project's data as it was.
    async fn run_data_step(&self, job: &mut Job, project: &Project, step: &str) -> Result<(), StepError> {
        let provider = self.database()?;
        let into_preview = job.resource.kind == "preview";
        match (job.kind, step) {
            (JobKind::CreateBackup, "dump") => {
                let backup = self.job_backup(&job.resource.id).await?;
                let backup = self.take_backup(project, backup).await?;
                self.store.put_backup(&backup).await?;
            }
            (JobKind::Restore | JobKind::Import, "prepare") => {
                if into_preview {
                    let preview = self.job_preview(job).await?;
                    let password = self.secrets.open(&preview.password_sealed).await?;
                    provider.ensure_role(&preview.role_name, &password).await?;
                } else {
                    // The safety backup: nothing is overwritten before it is stored.
                    let safety = self.job_backup(Self::param(job, SAFETY_BACKUP_ID)?).await?;
                    if safety.state != BackupState::Completed {
                        let mut safety = self.take_backup(project, safety).await?;
                        safety.state = BackupState::Completed;
                        safety.completed_at = Some(self.now());
                        self.store.put_backup(&safety).await?;
                    }
                }
            }
            (JobKind::Restore, "copy_data") => {
                let source = self.job_backup(Self::param(job, SOURCE_BACKUP_ID)?).await?;
                if source.state != BackupState::Completed {
                    return Err(StepError::Permanent(format!("backup {} is {}", source.id, source.state.as_str())));
                }
                let dump = self.artifacts.fetch(&source.id).await?;
                let (target, owner) = if into_preview {
                    let preview = self.job_preview(job).await?;
                    (preview.database_name, preview.role_name)
                } else {
                    (scratch_database(project, job.kind), project.role_name.clone())
                };
                provider.restore_database(&dump, &target, &owner).await?;
            }
            (JobKind::Import, "copy_data") => {
                let url = self.secrets.open(Self::param(job, SOURCE_URL_SEALED)?).await?;
                provider.import_database(&url, &scratch_database(project, job.kind), &project.role_name).await?;
            }
            (JobKind::Restore | JobKind::Import, "swap_database") => {
                if !into_preview {
                    provider.replace_database(&project.database_name, &scratch_database(project, job.kind)).await?;
                }
            }
            (JobKind::Restore | JobKind::Import, "verify_connection") => {
                let (db, role, sealed) = if into_preview {
                    let pv = self.job_preview(job).await?;
                    (pv.database_name, pv.role_name, pv.password_sealed)
                } else {
                    (project.database_name.clone(), project.role_name.clone(), project.password_sealed.clone())
                };
                let password = self.secrets.open(&sealed).await?;
                provider.check_connection(&db, &role, &password).await?;
            }
            (kind, step) => return Err(StepError::Permanent(format!("{} has no step {step}", kind.as_str()))),
        }
        Ok(())
    }

    /// Final writes and events of a backup, restore or import job.
    async fn finish_data_job(&self, job: &Job, ok: bool) -> DomainResult<(ResourceWrite, Vec<Event>)> {
        let now = self.now();
        let step_err = |e: StepError| DomainError::Internal(e.to_string());
        let job_event = if ok { "job.completed" } else { "job.failed" };
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let mut data = serde_json::json!({ "job": job });
        match job.kind {
            JobKind::CreateBackup => {
                let mut backup = self.job_backup(&job.resource.id).await.map_err(step_err)?;
                backup.state = if ok { BackupState::Completed } else { BackupState::Failed };
                if ok {
                    backup.completed_at = Some(now);
                } else if let Err(e) = self.artifacts.delete(&backup.id).await {
                    tracing::warn!(error = %e, "could not remove a failed backup's artifact");
                }
                data["backup"] = serde_json::to_value(&backup).unwrap_or_default();
                events.push(self.event(job_event, job, data.clone()));
                if ok {
                    events.push(self.event("backup.completed", job, data));
                }
                writes.push(ResourceWrite::Backup(backup));
            }
            JobKind::Restore | JobKind::Import => {
                let project = self.job_project(job).await.map_err(step_err)?;
                if !ok && job.resource.kind == "project" {
                    // Whatever the copy left behind before the swap goes.
                    if let Err(e) = self.database()?.drop_database(&scratch_database(&project, job.kind)).await {
                        tracing::warn!(error = %e, "could not drop the scratch database");
                    }
                }
                if let Some(id) = job.params.get(SAFETY_BACKUP_ID).and_then(|v| v.as_str()) {
                    if let Some(mut safety) = self.store.get_backup(id).await? {
                        if safety.state == BackupState::Completed {
                            let d = serde_json::json!({ "job": job, "backup": safety });
                            events.push(self.event("backup.completed", job, d));
                        } else {
                            safety.state = BackupState::Failed;
                            writes.push(ResourceWrite::Backup(safety));
                        }
                    }
                }
                let state = if ok { OperationState::Completed } else { OperationState::Failed };
                if job.kind == JobKind::Restore {
                    let id = job.params.get(RESTORE_ID).and_then(|v| v.as_str()).unwrap_or_default();
                    if let Some(mut r) = self.store.get_restore(id).await? {
                        r.state = state;
                        r.finished_at = Some(now);
                        data["restore"] = serde_json::to_value(&r).unwrap_or_default();
                        writes.push(ResourceWrite::Restore(r));
                    }
                } else {
                    let id = job.params.get(IMPORT_ID).and_then(|v| v.as_str()).unwrap_or_default();
                    if let Some(mut i) = self.store.get_import(id).await? {
                        i.state = state;
                        i.finished_at = Some(now);
                        data["import"] = serde_json::to_value(&i).unwrap_or_default();
                        writes.push(ResourceWrite::Import(i));
                    }
                }
                if job.resource.kind == "preview" {
                    let mut preview = self.job_preview(job).await.map_err(step_err)?;
                    preview.state = if ok { PreviewState::Ready } else { PreviewState::Failed };
                    preview.updated_at = now;
                    data["preview"] = serde_json::to_value(&preview).unwrap_or_default();
                    writes.push(ResourceWrite::Preview(preview));
                }
                events.push(self.event(job_event, job, data.clone()));
                if ok {
                    let kind = if job.kind == JobKind::Restore { "restore.completed" } else { "import.completed" };
                    events.push(self.event(kind, job, data.clone()));
                    if job.resource.kind == "preview" {
                        events.push(self.event("preview.ready", job, data));
                    }
                }
            }
            _ => return Err(DomainError::internal("finish_data_job called for another kind")),
        }
        Ok((ResourceWrite::All(writes), events))
    }

    /// A project's previews go before the project: each database and role is
    /// dropped and the preview marked deleted. The ids are kept in the job so
    /// its completion can announce each `preview.deleted`.
    async fn drop_project_previews(&self, job: &mut Job, project: &Project) -> Result<(), StepError> {
        loop {
            let batch = self.store.list_previews(&project.id, &Page::first(100)).await?;
            if batch.is_empty() {
                return Ok(());
            }
            if job.params.is_null() {
                job.params = serde_json::json!({});
            }
            for mut preview in batch {
                self.database()?.drop_database(&preview.database_name).await?;
                self.database()?.drop_role(&preview.role_name).await?;
                preview.state = PreviewState::Deleted;
                preview.updated_at = self.now();
                self.store.update_preview(&preview).await?;
                let dropped = job
                    .params
                    .as_object_mut()
                    .map(|o| o.entry(DROPPED_PREVIEWS).or_insert_with(|| serde_json::json!([])));
                if let Some(serde_json::Value::Array(ids)) = dropped {
                    ids.push(serde_json::Value::String(preview.id.clone()));
                }
            }
        }
    }

    fn event(&self, kind: &str, job: &Job, data: serde_json::Value) -> Event {
        Event {
            id: ids::new_id(ids::EVENT),
            kind: kind.to_string(),
            organization_id: job.organization_id.clone(),
            project_id: job.project_id.clone(),
            created_at: self.now(),
            data,
            published_at: None,
        }
    }

    async fn complete_job(&self, mut job: Job) -> DomainResult<()> {
        let now = self.now();
        let step_err = |e: StepError| DomainError::Internal(e.to_string());
        let expected = job.version;
        job.version += 1;
        job.state = JobState::Completed;
        job.finished_at = Some(now);
        job.error = None;
        job.lease_owner = None;
        job.lease_expires_at = None;
        let (write, events) = match job.kind {
            JobKind::Provision | JobKind::DeleteProject | JobKind::RotateCredentials => {
                let mut project = self.job_project(&job).await.map_err(step_err)?;
                project.updated_at = now;
                let kind = match job.kind {
                    JobKind::Provision => {
                        project.state = ProjectState::Ready;
                        "project.ready"
                    }
                    JobKind::DeleteProject => {
                        project.state = ProjectState::Deleted;
                        "project.deleted"
                    }
                    _ => {
                        project.password_sealed =
                            job.params[NEW_PASSWORD_PARAM].as_str().unwrap_or_default().to_string();
                        "credentials.rotated"
                    }
                };
                let data = serde_json::json!({ "job": job, "project": project });
                let mut events = vec![self.event("job.completed", &job, data.clone()), self.event(kind, &job, data)];
                for id in job.params.get(DROPPED_PREVIEWS).and_then(|v| v.as_array()).into_iter().flatten() {
                    if let Some(preview) = self.store.get_preview(id.as_str().unwrap_or_default()).await? {
                        events.push(self.event(
                            "preview.deleted",
                            &job,
                            serde_json::json!({ "job": job, "preview": preview }),
                        ));
                    }
                }
                (ResourceWrite::Project(project), events)
            }
            JobKind::CreateBackup | JobKind::Restore | JobKind::Import => self.finish_data_job(&job, true).await?,
            JobKind::CreatePreview | JobKind::ResetPreview | JobKind::DeletePreview => {
                let mut preview = self.job_preview(&job).await.map_err(step_err)?;
                preview.updated_at = now;
                let kind = if job.kind == JobKind::DeletePreview {
                    preview.state = PreviewState::Deleted;
                    "preview.deleted"
                } else {
                    preview.state = PreviewState::Ready;
                    "preview.ready"
                };
                let data = serde_json::json!({ "job": job, "preview": preview });
                (
                    ResourceWrite::Preview(preview),
                    vec![self.event("job.completed", &job, data.clone()), self.event(kind, &job, data)],
                )
            }
        };
        if self.store.finish_job(&job, expected, &write, &events).await? {
            tracing::info!("job completed");
            self.publish_events(&events).await;
        }
        Ok(())
    }

    async fn fail_job(&self, mut job: Job, error: &str) -> DomainResult<()> {
        let now = self.now();
        let step_err = |e: StepError| DomainError::Internal(e.to_string());
        if job.kind == JobKind::RotateCredentials && job.step > 0 {
            // The new password may be set on the server already: put the old
            // one back so the stored credentials keep working.
            let project = self.job_project(&job).await.map_err(step_err)?;
            let restored = match self.secrets.open(&project.password_sealed).await {
                Ok(old) => self.database()?.ensure_role(&project.role_name, &old).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = restored {
                tracing::error!(error = %e, "could not restore the previous password after a failed rotation");
            }
        }
        let expected = mark_failed(&mut job, error, now);
        let (write, data) = match job.kind {
            JobKind::Provision | JobKind::DeleteProject => {
                let mut project = self.job_project(&job).await.map_err(step_err)?;
                project.state = ProjectState::Failed;
                project.updated_at = now;
                let data = serde_json::json!({ "job": job, "project": project });
                (ResourceWrite::Project(project), data)
            }
            JobKind::RotateCredentials => {
                let project = self.job_project(&job).await.map_err(step_err)?;
                (ResourceWrite::Nothing, serde_json::json!({ "job": job, "project": project }))
            }
            JobKind::CreateBackup | JobKind::Restore | JobKind::Import => {
                let (write, events) = self.finish_data_job(&job, false).await?;
                if self.store.finish_job(&job, expected, &write, &events).await? {
                    self.publish_events(&events).await;
                }
                return Ok(());
            }
            JobKind::CreatePreview | JobKind::ResetPreview | JobKind::DeletePreview => {
                let mut preview = self.job_preview(&job).await.map_err(step_err)?;
                preview.state = PreviewState::Failed;
                preview.updated_at = now;
                let data = serde_json::json!({ "job": job, "preview": preview });
                (ResourceWrite::Preview(preview), data)
            }
        };
        let events = [self.event("job.failed", &job, data)];
        if self.store.finish_job(&job, expected, &write, &events).await? {
            self.publish_events(&events).await;
        }
        Ok(())
    }

    /// Fails the job of a message the queue gave up on (it reached the
    /// dead-letter queue): the job must not stay `running` forever. The
    /// resource is marked failed as a failed step would; when even that
    /// cannot be done (the resource is unreadable), the job alone is failed
    /// and its lock released. False when the job is unknown or already over.
    pub async fn abandon_job_message(&self, body: &str, why: &str) -> DomainResult<bool> {
        let Ok(msg) = serde_json::from_str::<JobMessage>(body) else {
            return Ok(false);
        };
        let Some(job) = self.store.get_job(&msg.job_id).await? else {
            return Ok(false);
        };
        if job.state.is_terminal() {
            return Ok(false);
        }
        tracing::error!(job_id = %job.id, reason = why, "abandoning a job whose message reached the dead-letter queue");
        let error = format!("the job could not be run: {why}");
        if let Err(e) = self.fail_job(job.clone(), &error).await {
            tracing::warn!(job_id = %job.id, error = %e, "failing the job's resource failed; failing the job alone");
            let mut failed = job;
            let expected = mark_failed(&mut failed, &error, self.now());
            let events = [self.event("job.failed", &failed, serde_json::json!({ "job": failed }))];
            if self.store.finish_job(&failed, expected, &ResourceWrite::Nothing, &events).await? {
                self.publish_events(&events).await;
            }
        }
        Ok(true)
    }

    /// Sends a fresh message for every job that is not moving: queued with
    /// no message seen for `stale_after`, or holding an expired lease.
    /// `everything` re-drives every unfinished job (start-up of a process
    /// that knows no other worker runs).
    pub async fn redrive_stuck_jobs(&self, everything: bool) -> DomainResult<usize> {
        let now = self.now();
        let stale_before: Timestamp = if everything {
            add(now, Duration::from_secs(365 * 24 * 3600))
        } else {
            sub(now, self.settings.jobs.stale_after)
        };
        let stuck = self.store.list_stuck_jobs(stale_before, 500).await?;
        for mut job in stuck.iter().cloned() {
            if everything && job.lease_owner.is_some() {
                let expected = job.version;
                job.version += 1;
                job.lease_owner = None;
                job.lease_expires_at = None;
                self.store.update_job(&job, expected).await?;
            }
            tracing::info!(job_id = %job.id, "re-driving job");
            self.enqueue(&job.id, Duration::ZERO).await;
        }
        Ok(stuck.len())
    }
}
