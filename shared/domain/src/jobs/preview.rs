//! `create_preview`, `reset_preview` and `delete_preview`: a preview's role
//! and database, made as a copy of the project's (`clone`) or empty.
//!
//! On the shared server the copy is a database made from the project's. In
//! a dedicated deployment a preview has a server of its own: a clone is a
//! copy-on-write clone of the project's server (the project's database and
//! role in it, the role given the preview's password), an empty preview a
//! new server; a reset builds a replacement server and swaps it in under
//! the same host, so the connection string stays the same.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::ids::PreviewId;
use crate::model::{EventType, Job, JobSpec, PreviewMode, PreviewState, ProjectState};
use crate::ports::{ResourceWrite, ServerSource, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateServer,
    SwapServer,
    CreateRole,
    CopyData,
    VerifyConnection,
    RemoveRetired,
    DropDatabase,
    DropRole,
    RemoveServer,
}

pub const CREATE: &[Step] = &[Step::CreateRole, Step::CopyData, Step::VerifyConnection];
pub const RESET: &[Step] = &[Step::CopyData, Step::VerifyConnection];
pub const DELETE: &[Step] = &[Step::DropDatabase, Step::DropRole];
/// What a creation past its deadline undoes.
pub const UNDO: &[Step] = &[Step::DropDatabase, Step::DropRole];

pub const CREATE_DEDICATED: &[Step] = &[Step::CreateServer, Step::CreateRole, Step::CopyData, Step::VerifyConnection];
/// The replacement is made ready (the preview's password, its database)
/// before it takes the preview's place, so the preview's connection string
/// never meets the project's password.
pub const RESET_DEDICATED: &[Step] = &[
    Step::CreateServer,
    Step::CreateRole,
    Step::CopyData,
    Step::SwapServer,
    Step::VerifyConnection,
    Step::RemoveRetired,
];
pub const DELETE_DEDICATED: &[Step] = &[Step::RemoveServer];
pub const UNDO_DEDICATED: &[Step] = &[Step::RemoveServer];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateServer => "create_server",
            Step::SwapServer => "swap_server",
            Step::CreateRole => "create_role",
            Step::CopyData => "copy_data",
            Step::VerifyConnection => "verify_connection",
            Step::RemoveRetired => "remove_old_server",
            Step::DropDatabase => "drop_database",
            Step::DropRole => "drop_role",
            Step::RemoveServer => "remove_server",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::CreateServer => "the preview's database server could not be made",
            Step::SwapServer => "the new server could not take the preview's place",
            Step::CreateRole => "the preview's role could not be created",
            Step::CopyData => "the preview's data could not be made",
            Step::VerifyConnection => super::VERIFY_PURPOSE,
            Step::RemoveRetired => "the preview's previous server could not be removed",
            Step::DropDatabase => "the database could not be dropped",
            Step::DropRole => "the role could not be dropped",
            Step::RemoveServer => "the preview's database server could not be removed",
        }
    }
}

pub(super) async fn run(app: &App, job: &Job, id: &PreviewId, step: Step) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    let preview = app.job_preview(id).await?;
    let deleting = matches!(job.spec, JobSpec::DeletePreview { .. });
    let resetting = matches!(job.spec, JobSpec::ResetPreview { .. });
    if !deleting && matches!(project.state, ProjectState::Deleting | ProjectState::Deleted) {
        return Err(StepError::Permanent(format!("project {} is being deleted", project.id)));
    }
    let owner = super::preview_owner(&preview);
    let source = match preview.mode {
        PreviewMode::Clone => ServerSource::CloneOf(&project.id),
        PreviewMode::Empty => ServerSource::Empty,
    };
    // A dedicated reset prepares the replacement before the swap.
    let dedicated = app.settings.hosting == crate::ports::Hosting::Dedicated;
    let on_replacement = dedicated && resetting && matches!(step, Step::CreateRole | Step::CopyData);
    let db = || async {
        if on_replacement {
            app.replacement_database(&project, owner, &job.id, source).await
        } else {
            app.preview_database(&project, &preview).await
        }
    };
    match step {
        Step::CreateServer => {
            let admin = app.admin_password(&project).await?;
            let slot = if resetting { Slot::Replacement(&job.id) } else { Slot::Live };
            let host = app.servers()?.make(owner, slot, source, &admin).await?;
            if !resetting {
                app.record_preview_host(&preview, host).await?;
            }
        }
        Step::SwapServer => {
            let host = app.servers()?.swap(owner, &job.id).await?;
            app.record_preview_host(&preview, host).await?;
        }
        Step::CreateRole => {
            // On a clone's own server the role is there with the project's
            // password: this sets the preview's.
            let password = app.secrets.open(&preview.password_sealed).await?;
            db().await?.ensure_role(&preview.role_name, &password).await?;
        }
        Step::CopyData => {
            let db = db().await?;
            match (preview.mode, app.settings.hosting) {
                (PreviewMode::Clone, crate::ports::Hosting::Shared) => {
                    let how = db
                        .clone_database(
                            &project.database_name,
                            &project.role_name,
                            &preview.database_name,
                            &preview.role_name,
                        )
                        .await?;
                    tracing::info!(strategy = ?how, "cloned the project's database");
                }
                (PreviewMode::Clone, crate::ports::Hosting::Dedicated) => {
                    tracing::info!("the preview's server is a clone of the project's: its data is there");
                }
                (PreviewMode::Empty, hosting) => {
                    // A reset on the shared server empties the database in
                    // place; a dedicated one has a new server already.
                    if resetting && hosting == crate::ports::Hosting::Shared {
                        db.drop_database(&preview.database_name).await?;
                    }
                    db.ensure_database(&preview.database_name, &preview.role_name).await?;
                }
            }
        }
        Step::VerifyConnection => {
            let password = app.secrets.open(&preview.password_sealed).await?;
            let db = app.preview_database(&project, &preview).await?;
            db.check_connection(&preview.database_name, &preview.role_name, &password).await?;
        }
        Step::RemoveRetired => app.servers()?.remove_spares(owner).await?,
        Step::DropDatabase => {
            app.preview_database(&project, &preview).await?.drop_database(&preview.database_name).await?
        }
        Step::DropRole => app.preview_database(&project, &preview).await?.drop_role(&preview.role_name).await?,
        Step::RemoveServer => app.servers()?.remove(owner, false).await?,
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
