//! `create_backup`: a dump of the project's database, stored as the
//! backup's artifact with its size and digest; in a dedicated deployment,
//! a snapshot of the project's server.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::error::DomainError;
use crate::ids::BackupId;
use crate::model::{Backup, BackupState, EventType, Job, Project};
use crate::ports::{Hosting, ResourceWrite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Dump,
    Snapshot,
}

pub const PLAN: &[Step] = &[Step::Dump];
pub const DEDICATED: &[Step] = &[Step::Snapshot];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Dump => "dump",
            Step::Snapshot => "snapshot",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::Dump | Step::Snapshot => "the backup could not be taken",
        }
    }
}

pub(super) async fn run(app: &App, job: &Job, id: &BackupId, step: Step) -> Result<StepOutcome, StepError> {
    match step {
        Step::Dump | Step::Snapshot => {
            let project = app.job_project(job).await?;
            let backup = app.job_backup(id).await?;
            let backup = take(app, &project, backup).await?;
            app.store.put_backup(&backup).await?;
        }
    }
    Ok(StepOutcome::Done)
}

/// Dumps the project into the artifact store under `backup`'s id and
/// records size and digest; the backup is complete once this returns. In a
/// dedicated deployment, snapshots the project's server ("not yet" until the
/// snapshot is complete); a snapshot has no file to measure or digest.
pub(super) async fn take(app: &App, project: &Project, mut backup: Backup) -> Result<Backup, StepError> {
    if app.settings.hosting == Hosting::Dedicated {
        app.servers()?.snapshot(super::project_owner(project), &backup.id).await?;
        backup.size_bytes = None;
        backup.sha256 = None;
        return Ok(backup);
    }
    let staged = app.artifacts.staging_path(&backup.id).await?;
    app.project_database(project).await?.dump_database(&project.database_name, &staged).await?;
    let info = app.artifacts.put(&backup.id, &staged).await.map_err(|e| match e {
        // A failed artifact write (disk full) will not heal by itself soon.
        DomainError::Internal(m) | DomainError::Unavailable(m) => {
            tracing::error!(backup_id = %backup.id, error = %m, "could not store a backup's artifact");
            StepError::Permanent(
                "CapyDB could not store the backup file (its disk may be full); retry later, or contact support \
                 if it persists"
                    .into(),
            )
        }
        other => StepError::from(other),
    })?;
    backup.size_bytes = Some(info.size_bytes);
    backup.sha256 = Some(info.sha256);
    Ok(backup)
}

/// Completed with `backup.completed`; or failed, its artifact removed.
pub(super) async fn finish(app: &App, job: &Job, id: &BackupId, ending: Ending) -> super::Effects {
    let mut backup = app.job_backup(id).await.map_err(StepError::into_internal)?;
    match ending {
        Ending::Completed => {
            backup.state = BackupState::Completed;
            backup.completed_at = Some(app.now());
        }
        Ending::Failed => {
            backup.state = BackupState::Failed;
            if let Err(e) = app.artifacts.delete(&backup.id).await {
                tracing::warn!(error = %e, "could not remove a failed backup's artifact");
            }
        }
    }
    let data = serde_json::json!({ "job": job, "backup": backup });
    let events = app.ending_events(job, ending, EventType::BackupCompleted, data);
    Ok((ResourceWrite::All(vec![ResourceWrite::Backup(backup)]), events))
}
