//! `create_preview`, `reset_preview` and `delete_preview`: a preview's role
//! and database, made as a copy of the project's (`clone`) or empty.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::ids::PreviewId;
use crate::model::{EventType, Job, JobSpec, PreviewMode, PreviewState, ProjectState};
use crate::ports::ResourceWrite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateRole,
    CopyData,
    VerifyConnection,
    DropDatabase,
    DropRole,
}

pub const CREATE: &[Step] = &[Step::CreateRole, Step::CopyData, Step::VerifyConnection];
pub const RESET: &[Step] = &[Step::CopyData, Step::VerifyConnection];
pub const DELETE: &[Step] = &[Step::DropDatabase, Step::DropRole];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateRole => "create_role",
            Step::CopyData => "copy_data",
            Step::VerifyConnection => "verify_connection",
            Step::DropDatabase => "drop_database",
            Step::DropRole => "drop_role",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::CreateRole => "the preview's role could not be created",
            Step::CopyData => "the preview's data could not be made",
            Step::VerifyConnection => super::VERIFY_PURPOSE,
            Step::DropDatabase => "the database could not be dropped",
            Step::DropRole => "the role could not be dropped",
        }
    }
}

pub(super) async fn run(app: &App, job: &Job, id: &PreviewId, step: Step) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    let preview = app.job_preview(id).await?;
    let provider = app.database()?;
    let deleting = matches!(job.spec, JobSpec::DeletePreview { .. });
    if !deleting && matches!(project.state, ProjectState::Deleting | ProjectState::Deleted) {
        return Err(StepError::Permanent(format!("project {} is being deleted", project.id)));
    }
    match step {
        Step::CreateRole => {
            let password = app.secrets.open(&preview.password_sealed).await?;
            provider.ensure_role(&preview.role_name, &password).await?;
        }
        Step::CopyData => match preview.mode {
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
                if matches!(job.spec, JobSpec::ResetPreview { .. }) {
                    provider.drop_database(&preview.database_name).await?;
                }
                provider.ensure_database(&preview.database_name, &preview.role_name).await?;
            }
        },
        Step::VerifyConnection => {
            let password = app.secrets.open(&preview.password_sealed).await?;
            provider.check_connection(&preview.database_name, &preview.role_name, &password).await?;
        }
        Step::DropDatabase => provider.drop_database(&preview.database_name).await?,
        Step::DropRole => provider.drop_role(&preview.role_name).await?,
    }
    Ok(StepOutcome::Done)
}

/// Ready (or deleted) with `preview.ready` (or `preview.deleted`); or failed.
pub(super) async fn finish(app: &App, job: &Job, id: &PreviewId, ending: Ending) -> super::Effects {
    let mut preview = app.job_preview(id).await.map_err(StepError::into_internal)?;
    preview.updated_at = app.now();
    let (state, announce) = match (ending, &job.spec) {
        (Ending::Failed, _) => (PreviewState::Failed, EventType::JobFailed),
        (Ending::Completed, JobSpec::DeletePreview { .. }) => (PreviewState::Deleted, EventType::PreviewDeleted),
        (Ending::Completed, _) => (PreviewState::Ready, EventType::PreviewReady),
    };
    preview.state = state;
    let data = serde_json::json!({ "job": job, "preview": preview });
    let events = app.ending_events(job, ending, announce, data);
    Ok((ResourceWrite::Preview(preview), events))
}
