//! `provision`: a new project's role and database (on a server of its own
//! first, in a dedicated deployment), ready once its owner has logged in.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::model::{EventType, Job, ProjectState};
use crate::ports::{ServerSource, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateServer,
    CreateRole,
    CreateDatabase,
    VerifyConnection,
    /// Undoing: what a job past its deadline made goes.
    DropDatabase,
    DropRole,
    RemoveServer,
}

pub const PLAN: &[Step] = &[Step::CreateRole, Step::CreateDatabase, Step::VerifyConnection];
pub const DEDICATED: &[Step] = &[Step::CreateServer, Step::CreateRole, Step::CreateDatabase, Step::VerifyConnection];
pub const UNDO: &[Step] = &[Step::DropDatabase, Step::DropRole];
pub const UNDO_DEDICATED: &[Step] = &[Step::RemoveServer];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateServer => "create_server",
            Step::CreateRole => "create_role",
            Step::CreateDatabase => "create_database",
            Step::VerifyConnection => "verify_connection",
            Step::DropDatabase => "drop_database",
            Step::DropRole => "drop_role",
            Step::RemoveServer => "remove_server",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::CreateServer => "the project's database server could not be made",
            Step::CreateRole => "the project's role could not be created",
            Step::CreateDatabase => "the project's database could not be created",
            Step::VerifyConnection => super::VERIFY_PURPOSE,
            Step::DropDatabase | Step::DropRole | Step::RemoveServer => super::UNDO_PURPOSE,
        }
    }
}

pub(super) async fn run(app: &App, job: &Job, step: Step) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    let owner = super::project_owner(&project);
    match step {
        Step::CreateServer => {
            let admin = app.admin_password(&project).await?;
            let host = app.servers()?.make(owner, Slot::Live, ServerSource::Empty, &admin).await?;
            app.record_project_host(&project, host).await?;
        }
        Step::CreateRole => {
            let password = app.secrets.open(&project.password_sealed).await?;
            app.project_database(&project).await?.ensure_role(&project.role_name, &password).await?;
        }
        Step::CreateDatabase => {
            let db = app.project_database(&project).await?;
            db.ensure_database(&project.database_name, &project.role_name).await?
        }
        Step::VerifyConnection => {
            let password = app.secrets.open(&project.password_sealed).await?;
            let db = app.project_database(&project).await?;
            db.check_connection(&project.database_name, &project.role_name, &password).await?;
        }
        Step::DropDatabase => app.project_database(&project).await?.drop_database(&project.database_name).await?,
        Step::DropRole => app.project_database(&project).await?.drop_role(&project.role_name).await?,
        // A half-made server: nothing in it to keep.
        Step::RemoveServer => app.servers()?.remove(owner, false).await?,
    }
    Ok(StepOutcome::Done)
}

/// Ready and `project.ready`, or failed.
pub(super) async fn finish(app: &App, job: &Job, ending: Ending) -> super::Effects {
    app.project_ending(job, ending, ProjectState::Ready, EventType::ProjectReady).await
}
