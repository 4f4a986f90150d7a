//! `restore` and `import`: data copied into the project from a backup or
//! another server, or from a backup into a new preview.
//!
//! Over the project, a safety backup is taken first, a scratch database is
//! filled and only then swapped in, so a failure before the swap leaves the
//! project's data as it was.
use super::{Ending, StepError, StepOutcome};
use crate::app::App;
use crate::ids::{BackupId, ImportId, PreviewId, RestoreId};
use crate::model::{Backup, BackupState, EventType, Job, OperationState, PreviewState, Project, RestoreInto, Sealed};
use crate::ports::{Hosting, ResourceWrite, ServerSource, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// In a dedicated deployment: a new preview's own server, or the
    /// server that will take the project's place, made from the backup's
    /// snapshot.
    CreateServer,
    /// The preview's role, or the project's safety backup.
    Prepare,
    CopyData,
    SwapDatabase,
    /// The server made from the backup takes the project's identifier.
    SwapServer,
    /// The project's current password on the server made from the backup
    /// (the backup holds the one it had then).
    SetPassword,
    VerifyConnection,
    /// The project's previous server, or a replacement never swapped in.
    RemoveSpares,
    /// Undoing: a new preview's server.
    RemoveServer,
    /// Undoing: the project's previous server back in its place.
    RevertServer,
}

pub const PLAN: &[Step] = &[Step::Prepare, Step::CopyData, Step::SwapDatabase, Step::VerifyConnection];
/// Into a new preview in a dedicated deployment: its server, made from the
/// backup's snapshot, first.
pub const INTO_OWN_SERVER: &[Step] =
    &[Step::CreateServer, Step::Prepare, Step::CopyData, Step::SwapDatabase, Step::VerifyConnection];
/// Over the project in a dedicated deployment: the safety snapshot, a server
/// made from the backup's snapshot, swapped in under the project's host.
pub const OVER_OWN_SERVER: &[Step] = &[
    Step::Prepare,
    Step::CreateServer,
    Step::SetPassword,
    Step::SwapServer,
    Step::VerifyConnection,
    Step::RemoveSpares,
];
/// What undoes a restore in a dedicated deployment that fails or passes its
/// deadline: a new preview's server goes; over the project, the swap is
/// turned back (the project's server as it was takes its place again) and
/// the server made from the backup goes.
pub const UNDO_INTO_OWN_SERVER: &[Step] = &[Step::RemoveServer];
pub const UNDO_OVER_OWN_SERVER: &[Step] = &[Step::RevertServer];

/// Where the data comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Backup { restore: &'a RestoreId, backup: &'a BackupId },
    Server { import: &'a ImportId, url: &'a Sealed },
}

/// Where it goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Project { safety_backup: &'a BackupId },
    Preview(&'a PreviewId),
}

impl<'a> Target<'a> {
    pub fn of(into: &'a RestoreInto) -> Self {
        match into {
            RestoreInto::Project { safety_backup } => Target::Project { safety_backup },
            RestoreInto::Preview(id) => Target::Preview(id),
        }
    }
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateServer => "create_server",
            Step::Prepare => "prepare",
            Step::CopyData => "copy_data",
            Step::SwapDatabase => "swap_database",
            Step::SwapServer => "swap_server",
            Step::SetPassword => "set_password",
            Step::VerifyConnection => "verify_connection",
            Step::RemoveSpares => "remove_spare_servers",
            Step::RemoveServer => "remove_server",
            Step::RevertServer => "revert_server",
        }
    }

    pub fn purpose(self, source: Source<'_>, target: Target<'_>) -> &'static str {
        match (self, source, target) {
            (Step::CreateServer, _, Target::Preview(_)) => "the preview's database server could not be made",
            (Step::CreateServer, _, Target::Project { .. }) => "a server could not be made from the backup",
            (Step::Prepare, _, Target::Preview(_)) => "the preview's role could not be created",
            (Step::Prepare, Source::Backup { .. }, _) => "the safety backup before the restore could not be taken",
            (Step::Prepare, Source::Server { .. }, _) => "the safety backup before the import could not be taken",
            (Step::CopyData, Source::Backup { .. }, _) => "the backup could not be restored",
            (Step::CopyData, Source::Server { .. }, _) => "the source database could not be imported",
            (Step::SwapDatabase, _, _) => "the new copy could not take the project's place",
            (Step::SwapServer, _, _) => "the restored server could not take the project's place",
            (Step::SetPassword, _, _) => "the project's password could not be set on the restored server",
            (Step::VerifyConnection, _, _) => super::VERIFY_PURPOSE,
            (Step::RemoveSpares, _, _) => "the project's previous server could not be removed",
            (Step::RemoveServer, _, _) => "the preview's database server could not be removed",
            (Step::RevertServer, _, _) => "the project's previous server could not be put back",
        }
    }
}

/// The scratch database a restore or import over the project fills before the swap.
pub(super) fn scratch_database(project: &Project, source: Source<'_>) -> String {
    let suffix = match source {
        Source::Server { .. } => "import",
        Source::Backup { .. } => "restore",
    };
    format!("{}_{suffix}", project.database_name)
}

/// Where a copy reads, and where it writes.
pub type Ends<'a> = (Source<'a>, Target<'a>);

pub(super) async fn run(
    app: &App,
    job: &Job,
    (source, target): Ends<'_>,
    step: Step,
) -> Result<StepOutcome, StepError> {
    let project = app.job_project(job).await?;
    let dedicated = app.settings.hosting == Hosting::Dedicated;
    // The steps on servers rather than in them.
    match (step, target) {
        (Step::CreateServer, Target::Preview(id)) => {
            let preview = app.job_preview(id).await?;
            let admin = app.admin_password(&project).await?;
            let from = match source {
                Source::Backup { backup, .. } => {
                    completed(app, backup).await?;
                    ServerSource::Snapshot(backup.as_str())
                }
                Source::Server { .. } => ServerSource::Empty,
            };
            let host = app.servers()?.make(super::preview_owner(&preview), Slot::Live, from, &admin).await?;
            app.record_preview_host(&preview, host).await?;
            return Ok(StepOutcome::Done);
        }
        (Step::CreateServer, Target::Project { .. }) => {
            let backup = server_backup(source)?;
            completed(app, backup).await?;
            let admin = app.admin_password(&project).await?;
            let owner = super::project_owner(&project);
            let from = ServerSource::Snapshot(backup.as_str());
            app.servers()?.make(owner, Slot::Replacement(&job.id), from, &admin).await?;
            return Ok(StepOutcome::Done);
        }
        (Step::SwapServer, _) => {
            let host = app.servers()?.swap(super::project_owner(&project), &job.id).await?;
            app.record_project_host(&project, host).await?;
            return Ok(StepOutcome::Done);
        }
        (Step::RemoveSpares, _) => {
            app.servers()?.remove_spares(super::project_owner(&project)).await?;
            return Ok(StepOutcome::Done);
        }
        (Step::RevertServer, _) => {
            let host = app.servers()?.revert(super::project_owner(&project), &job.id).await?;
            app.record_project_host(&project, host).await?;
            return Ok(StepOutcome::Done);
        }
        // The server made from the backup, before it takes the project's
        // place: the project's current password (the backup has the one it had then).
        (Step::SetPassword, Target::Project { .. }) if dedicated => {
            let backup = server_backup(source)?;
            let owner = super::project_owner(&project);
            let from = ServerSource::Snapshot(backup.as_str());
            let db = app.replacement_database(&project, owner, &job.id, from).await?;
            let password = app.secrets.open(&project.password_sealed).await?;
            db.ensure_role(&project.role_name, &password).await?;
            return Ok(StepOutcome::Done);
        }
        (Step::RemoveServer, Target::Preview(id)) => {
            let preview = app.job_preview(id).await?;
            app.servers()?.remove(super::preview_owner(&preview), false).await?;
            return Ok(StepOutcome::Done);
        }
        _ => {}
    }
    let provider = match target {
        Target::Preview(id) => app.preview_database(&project, &app.job_preview(id).await?).await?,
        Target::Project { .. } => app.project_database(&project).await?,
    };
    match (step, target) {
        // On servers (above); a project never removes its own server here.
        (Step::CreateServer | Step::SwapServer | Step::RemoveSpares | Step::RemoveServer | Step::RevertServer, _) => {}
        (Step::SetPassword, _) => {
            let password = app.secrets.open(&project.password_sealed).await?;
            provider.ensure_role(&project.role_name, &password).await?;
        }
        // The server was made from the backup's snapshot: its data is there.
        (Step::CopyData, _) if dedicated && matches!(source, Source::Backup { .. }) => {}
        (Step::Prepare, Target::Preview(id)) => {
            let preview = app.job_preview(id).await?;
            let password = app.secrets.open(&preview.password_sealed).await?;
            provider.ensure_role(&preview.role_name, &password).await?;
        }
        (Step::Prepare, Target::Project { safety_backup }) => {
            // The safety backup: nothing is overwritten before it is stored.
            let safety = app.job_backup(safety_backup).await?;
            if safety.state != BackupState::Completed {
                let mut safety = super::backup::take(app, &project, safety).await?;
                safety.state = BackupState::Completed;
                safety.completed_at = Some(app.now());
                app.store.put_backup(&safety).await?;
            }
        }
        (Step::CopyData, _) => {
            let (database, owner) = match target {
                Target::Preview(id) => {
                    let preview = app.job_preview(id).await?;
                    (preview.database_name, preview.role_name)
                }
                Target::Project { .. } => (scratch_database(&project, source), project.role_name.clone()),
            };
            match source {
                Source::Backup { backup, .. } => {
                    let backup = completed(app, backup).await?;
                    let dump = app.artifacts.fetch(&backup.id).await?;
                    provider.restore_database(&dump, &database, &owner).await?;
                }
                Source::Server { url, .. } => {
                    let url = app.secrets.open(url.as_str()).await?;
                    provider.import_database(&url, &database, &owner).await?;
                }
            }
        }
        (Step::SwapDatabase, Target::Preview(_)) => {}
        (Step::SwapDatabase, Target::Project { .. }) => {
            provider.replace_database(&project.database_name, &scratch_database(&project, source)).await?;
        }
        (Step::VerifyConnection, _) => {
            let (database, role, sealed) = match target {
                Target::Preview(id) => {
                    let pv = app.job_preview(id).await?;
                    (pv.database_name, pv.role_name, pv.password_sealed)
                }
                Target::Project { .. } => (project.database_name, project.role_name, project.password_sealed),
            };
            let password = app.secrets.open(&sealed).await?;
            provider.check_connection(&database, &role, &password).await?;
        }
    }
    Ok(StepOutcome::Done)
}

/// The backup a server over the project is made from (an import has none:
/// it copies into the project's own server).
fn server_backup<'a>(source: Source<'a>) -> Result<&'a BackupId, StepError> {
    match source {
        Source::Backup { backup, .. } => Ok(backup),
        Source::Server { .. } => Err(StepError::Permanent("an import makes no server".into())),
    }
}

/// The backup `id`, which must be complete to be restored.
async fn completed(app: &App, id: &BackupId) -> Result<Backup, StepError> {
    let backup = app.job_backup(id).await?;
    if backup.state != BackupState::Completed {
        return Err(StepError::Permanent(format!("backup {} is {}", backup.id, backup.state.as_str())));
    }
    Ok(backup)
}

/// The restore or import record's end, the safety backup's, the preview's,
/// and their events.
pub(super) async fn finish(app: &App, job: &Job, (source, target): Ends<'_>, ending: Ending) -> super::Effects {
    let now = app.now();
    let ok = ending == Ending::Completed;
    let mut writes = Vec::new();
    let mut events = Vec::new();
    let mut data = serde_json::json!({ "job": job });
    let project = app.job_project(job).await.map_err(StepError::into_internal)?;
    if let Target::Project { safety_backup } = target {
        if !ok {
            // Whatever the copy left behind before the swap goes.
            let dropped = match app.project_database(&project).await {
                Ok(db) => db.drop_database(&scratch_database(&project, source)).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = dropped {
                tracing::warn!(error = %e, "could not drop the scratch database");
            }
        }
        if let Some(mut safety) = app.store.get_backup(safety_backup.as_str()).await? {
            if safety.state == BackupState::Completed {
                let d = serde_json::json!({ "job": job, "backup": safety });
                events.push(app.job_event(EventType::BackupCompleted, job, d));
            } else {
                safety.state = BackupState::Failed;
                writes.push(ResourceWrite::Backup(safety));
            }
        }
    }
    let state = if ok { OperationState::Completed } else { OperationState::Failed };
    // The restore's or the import's record ends with the job.
    macro_rules! end_record {
        ($found:expr, $key:literal, $write:path) => {
            if let Some(mut record) = $found {
                record.state = state;
                record.finished_at = Some(now);
                data[$key] = serde_json::to_value(&record).map_err(super::json_error)?;
                writes.push($write(record));
            }
        };
    }
    let announce = match source {
        Source::Backup { restore, .. } => {
            end_record!(app.store.get_restore(restore.as_str()).await?, "restore", ResourceWrite::Restore);
            EventType::RestoreCompleted
        }
        Source::Server { import, .. } => {
            end_record!(app.store.get_import(import.as_str()).await?, "import", ResourceWrite::Import);
            EventType::ImportCompleted
        }
    };
    if let Target::Preview(id) = target {
        let mut preview = app.job_preview(id).await.map_err(StepError::into_internal)?;
        preview.state = if ok { PreviewState::Ready } else { PreviewState::Failed };
        preview.updated_at = now;
        data["preview"] = serde_json::to_value(&preview).map_err(super::json_error)?;
        writes.push(ResourceWrite::Preview(preview));
    }
    if ok {
        events.push(app.job_event(EventType::JobCompleted, job, data.clone()));
        events.push(app.job_event(announce, job, data.clone()));
        if let Target::Preview(_) = target {
            events.push(app.job_event(EventType::PreviewReady, job, data));
        }
    } else {
        events.push(app.job_event(EventType::JobFailed, job, data));
    }
    Ok((ResourceWrite::All(writes), events))
}
