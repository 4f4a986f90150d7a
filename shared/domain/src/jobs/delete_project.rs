//! `delete_project`: its previews, then its database and role; in a
//! dedicated deployment, its previews' servers, then its own (leaving a
//! final snapshot).
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::ids::PreviewId;
use crate::model::{EventType, Job, JobSpec, PreviewState, Project, ProjectState};
use crate::ports::{Hosting, Page, ProviderError};

/// The steps' names are the stored ones (`drop_previews`, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    DropPreviews,
    DropDatabase,
    DropRole,
    DropServer,
}

pub const PLAN: &[Step] = &[Step::DropPreviews, Step::DropDatabase, Step::DropRole];
pub const DEDICATED: &[Step] = &[Step::DropPreviews, Step::DropServer];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::DropPreviews => "drop_previews",
            Step::DropDatabase => "drop_database",
            Step::DropRole => "drop_role",
            Step::DropServer => "remove_server",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Step::DropPreviews => "the project's previews could not be deleted",
            Step::DropDatabase => "the database could not be dropped",
            Step::DropRole => "the role could not be dropped",
            Step::DropServer => "the project's database server could not be removed",
        }
    }
}

pub(super) async fn run(app: &App, job: &mut Job, step: Step) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    match step {
        Step::DropPreviews => drop_previews(app, job, &project).await?,
        Step::DropDatabase => app.project_database(&project).await?.drop_database(&project.database_name).await?,
        Step::DropRole => app.project_database(&project).await?.drop_role(&project.role_name).await?,
        Step::DropServer => app.servers()?.remove(super::project_owner(&project), true).await?,
    }
    Ok(StepOutcome::Done)
}

/// A project's previews go before the project: each database and role is
/// dropped and the preview marked deleted. Their ids are kept in the job's
/// specification so its completion can announce each `preview.deleted`.
async fn drop_previews(app: &App, job: &mut Job, project: &Project) -> Result<(), StepError> {
    loop {
        let batch = app.store.list_previews(&project.id, &Page::first(100)).await?;
        if batch.is_empty() {
            return Ok(());
        }
        // Every preview's server is asked to go before the step waits on
        // any: they are removed side by side, not one after another.
        let mut waiting = None;
        for mut preview in batch.clone() {
            match app.settings.hosting {
                Hosting::Shared => {
                    let db = app.preview_database(project, &preview).await?;
                    db.drop_database(&preview.database_name).await?;
                    db.drop_role(&preview.role_name).await?;
                }
                Hosting::Dedicated => match app.servers()?.remove(super::preview_owner(&preview), false).await {
                    Ok(()) => {}
                    Err(ProviderError::NotYet(d)) => {
                        waiting = Some(d);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
            }
            preview.state = PreviewState::Deleted;
            preview.updated_at = app.now();
            app.store.update_preview(&preview).await?;
            if let JobSpec::DeleteProject { dropped_previews } = &mut job.spec {
                dropped_previews.push(PreviewId::from(preview.id.clone()));
            }
        }
        if let Some(d) = waiting {
            return Err(StepError::NotYet(d));
        }
    }
}

/// Deleted, `project.deleted` and a `preview.deleted` per preview dropped; or failed.
pub(super) async fn finish(app: &App, job: &Job, dropped: &[PreviewId], ending: Ending) -> super::Effects {
    let (write, mut events) = app.project_ending(job, ending, ProjectState::Deleted, EventType::ProjectDeleted).await?;
    if ending == Ending::Completed {
        for id in dropped {
            if let Some(preview) = app.store.get_preview(id.as_str()).await? {
                let data = serde_json::json!({ "job": job, "preview": preview });
                events.push(app.job_event(EventType::PreviewDeleted, job, data));
            }
        }
    }
    Ok((write, events))
}
