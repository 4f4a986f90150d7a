//! `provision`: a new project's role and database, ready once its owner
//! has logged in.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::model::{EventType, Job, ProjectState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateRole,
    CreateDatabase,
    VerifyConnection,
}

pub const PLAN: &[Step] = &[Step::CreateRole, Step::CreateDatabase, Step::VerifyConnection];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateRole => "create_role",
            Step::CreateDatabase => "create_database",
            Step::VerifyConnection => "verify_connection",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::CreateRole => "the project's role could not be created",
            Step::CreateDatabase => "the project's database could not be created",
            Step::VerifyConnection => super::VERIFY_PURPOSE,
        }
    }
}

pub(super) async fn run(app: &App, job: &Job, step: Step) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    match step {
        Step::CreateRole => {
            let password = app.secrets.open(&project.password_sealed).await?;
            app.database()?.ensure_role(&project.role_name, &password).await?;
        }
        Step::CreateDatabase => app.database()?.ensure_database(&project.database_name, &project.role_name).await?,
        Step::VerifyConnection => {
            let password = app.secrets.open(&project.password_sealed).await?;
            app.database()?.check_connection(&project.database_name, &project.role_name, &password).await?;
        }
    }
    Ok(StepOutcome::Done)
}

/// Ready and `project.ready`, or failed.
pub(super) async fn finish(app: &App, job: &Job, ending: Ending) -> super::Effects {
    app.project_ending(job, ending, ProjectState::Ready, EventType::ProjectReady).await
}
