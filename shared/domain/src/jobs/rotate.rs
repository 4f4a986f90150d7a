//! `rotate_credentials`: the project's role gets the new password; the
//! stored one changes only once a login with it has succeeded.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::model::{EventType, Job, Sealed};
use crate::ports::{ProviderError, ResourceWrite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SetPassword,
    VerifyConnection,
}

pub const PLAN: &[Step] = &[Step::SetPassword, Step::VerifyConnection];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::SetPassword => "set_password",
            Step::VerifyConnection => "verify_connection",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::SetPassword => "the new password could not be set",
            Step::VerifyConnection => super::VERIFY_PURPOSE,
        }
    }
}

pub(super) async fn run(app: &App, job: &Job, new_password: &Sealed, step: Step) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    let password = app.secrets.open(new_password.as_str()).await?;
    let db = app.project_database(&project).await?;
    match step {
        Step::SetPassword => db.ensure_role(&project.role_name, &password).await?,
        Step::VerifyConnection => {
            db.check_connection(&project.database_name, &project.role_name, &password).await?;
            // And the old password no longer gets in (unless the stored one
            // is the new one already: this rotation was recorded, and runs again).
            let old = app.secrets.open(&project.password_sealed).await?;
            if old == password {
                return Ok(StepOutcome::Done);
            }
            match db.check_connection(&project.database_name, &project.role_name, &old).await {
                Err(ProviderError::Permanent(_)) => {}
                Err(e) => return Err(e.into()),
                Ok(()) => {
                    return Err(StepError::Permanent(
                        "the previous password is still accepted; rotate again, or contact support".into(),
                    ))
                }
            }
        }
    }
    Ok(StepOutcome::Done)
}

/// After a failure past the first step the new password may be set on the
/// server already: the old one goes back, so the stored credentials keep
/// working. Best effort; what fails is logged.
pub(super) async fn undo(app: &App, job: &Job) {
    if job.step == 0 {
        return;
    }
    let restored = match app.job_project(job).await {
        Ok(project) => match app.secrets.open(&project.password_sealed).await {
            Ok(old) => match app.project_database(&project).await {
                Ok(db) => db.ensure_role(&project.role_name, &old).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = restored {
        tracing::error!(error = %e, "could not restore the previous password after a failed rotation");
    }
}

/// The new sealed password becomes the project's, and `credentials.rotated`.
pub(super) async fn finish(app: &App, job: &Job, new_password: &Sealed, ending: Ending) -> super::Effects {
    let mut project = app.job_project(job).await.map_err(StepError::into_internal)?;
    let completed = ending == Ending::Completed;
    if completed {
        project.updated_at = app.now();
        project.password_sealed = new_password.as_str().to_string();
    }
    let data = serde_json::json!({ "job": job, "project": project });
    let events = app.ending_events(job, ending, EventType::CredentialsRotated, data);
    // A failed rotation leaves the project as it was (`undo`).
    Ok((if completed { ResourceWrite::Project(project) } else { ResourceWrite::Nothing }, events))
}
