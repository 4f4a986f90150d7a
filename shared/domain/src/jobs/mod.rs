//! Jobs: starting them (resource + job + lock in one transaction, then a
//! queue message), reading them, and running them as resumable steps.
//!
//! A job's specification (`JobSpec`) says what it is for; each kind's module
//! here holds its steps (an enum, in order), what each step does, and what
//! the job's end writes and announces, completed or failed. This module runs
//! any of them: lease, steps, retries with backoff, waits, completion and
//! failure, and the dead-letter and sweeper repairs.
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::{add, sub, App};
use crate::error::{DomainError, DomainResult};
use crate::ids::{self, BackupId, PreviewId, ProjectId, RestoreId};
use crate::model::{
    Backup, ConnectionInfo, Event, EventType, Job, JobSpec, JobState, Preview, Project, ProjectState, RestoreInto,
    Sealed, Timestamp,
};
use crate::ports::{Admission, DatabaseProvider, Hosting, Page, ProviderError, QuotaKind, ResourceWrite, ServerOwner};
use crate::principal::Principal;
use crate::scopes::Scope;

mod backup;
mod copy_in;
mod delete_project;
mod preview;
mod provision;
mod rotate;

#[cfg(test)]
mod tests;

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
    /// Not an error: the provider's operation is under way (see
    /// `ProviderError::NotYet`); the step becomes `StepOutcome::Wait`.
    #[error("not finished yet; check again in {0:?}")]
    NotYet(Duration),
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Retryable(m) => StepError::Retryable(m),
            ProviderError::Permanent(m) => StepError::Permanent(m),
            ProviderError::NotYet(d) => StepError::NotYet(d),
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
const VERIFY_PURPOSE: &str = "the database did not accept its owner's connection";
const UNDO_PURPOSE: &str = "what the job made could not be removed";

/// Where a job's undo plan starts in its step index: a creating job past
/// its deadline goes on at `UNDO_FROM + i`, the `i`-th step of what removes
/// what it made, then fails. (The index is stored; a plan never gets near it.)
const UNDO_FROM: u32 = 1 << 16;

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

impl StepError {
    /// A step error met while ending a job (its resource is gone, the store
    /// failed): the ending is retried, or the job failed alone.
    fn into_internal(self) -> DomainError {
        DomainError::Internal(self.to_string())
    }
}

fn json_error(e: serde_json::Error) -> DomainError {
    DomainError::Internal(format!("could not serialize an event's data: {e}"))
}

/// What a job's end writes and announces.
type Effects = DomainResult<(ResourceWrite, Vec<Event>)>;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Completed,
    Failed,
}

/// One step of a job's plan, with what the job's specification gives it.
#[derive(Debug, Clone, Copy)]
pub enum Task<'a> {
    Provision(provision::Step),
    DeleteProject(delete_project::Step),
    Rotate(&'a Sealed, rotate::Step),
    Preview(&'a PreviewId, preview::Step),
    Backup(&'a BackupId, backup::Step),
    CopyIn(copy_in::Source<'a>, copy_in::Target<'a>, copy_in::Step),
}

/// Where a restore or import reads and writes.
fn copy_in_ends<'a>(
    restore: &'a RestoreId,
    source: &'a BackupId,
    into: &'a RestoreInto,
) -> (copy_in::Source<'a>, copy_in::Target<'a>) {
    (copy_in::Source::Backup { restore, backup: source }, copy_in::Target::of(into))
}

/// The plan of a deployment that shares one server, or of one that gives
/// each project and preview its own.
fn plan<S>(hosting: Hosting, shared: &'static [S], dedicated: &'static [S]) -> &'static [S] {
    match hosting {
        Hosting::Shared => shared,
        Hosting::Dedicated => dedicated,
    }
}

/// Step `index` of the job's plan, `None` past the last. A step is
/// idempotent: running it again after a crash finds what the previous run
/// made and carries on. Indexes from [`UNDO_FROM`] are the undo plan's.
pub fn task(spec: &JobSpec, hosting: Hosting, index: usize) -> Option<Task<'_>> {
    if let Some(undoing) = index.checked_sub(UNDO_FROM as usize) {
        return undo_task(spec, hosting, undoing);
    }
    Some(match spec {
        JobSpec::Provision => Task::Provision(*plan(hosting, provision::PLAN, provision::DEDICATED).get(index)?),
        JobSpec::DeleteProject { .. } => {
            Task::DeleteProject(*plan(hosting, delete_project::PLAN, delete_project::DEDICATED).get(index)?)
        }
        JobSpec::RotateCredentials { new_password } => Task::Rotate(new_password, *rotate::PLAN.get(index)?),
        JobSpec::CreatePreview { preview: id } => {
            Task::Preview(id, *plan(hosting, preview::CREATE, preview::CREATE_DEDICATED).get(index)?)
        }
        JobSpec::ResetPreview { preview: id } => {
            Task::Preview(id, *plan(hosting, preview::RESET, preview::RESET_DEDICATED).get(index)?)
        }
        JobSpec::DeletePreview { preview: id } => {
            Task::Preview(id, *plan(hosting, preview::DELETE, preview::DELETE_DEDICATED).get(index)?)
        }
        JobSpec::CreateBackup { backup: id } => {
            Task::Backup(id, *plan(hosting, backup::PLAN, backup::DEDICATED).get(index)?)
        }
        JobSpec::Restore { restore, source, into } => {
            let (source, target) = copy_in_ends(restore, source, into);
            let steps = match target {
                copy_in::Target::Preview(_) => plan(hosting, copy_in::PLAN, copy_in::INTO_OWN_SERVER),
                copy_in::Target::Project { .. } => plan(hosting, copy_in::PLAN, copy_in::OVER_OWN_SERVER),
            };
            Task::CopyIn(source, target, *steps.get(index)?)
        }
        JobSpec::Import { import, source_url, safety_backup } => Task::CopyIn(
            copy_in::Source::Server { import, url: source_url },
            copy_in::Target::Project { safety_backup },
            *copy_in::PLAN.get(index)?,
        ),
    })
}

/// Step `index` of what removes what a creating job made, when it is past
/// its deadline: `None` past the last, and for kinds that make nothing to remove.
fn undo_task(spec: &JobSpec, hosting: Hosting, index: usize) -> Option<Task<'_>> {
    Some(match spec {
        JobSpec::Provision => Task::Provision(*plan(hosting, provision::UNDO, provision::UNDO_DEDICATED).get(index)?),
        JobSpec::CreatePreview { preview: id } => {
            Task::Preview(id, *plan(hosting, preview::UNDO, preview::UNDO_DEDICATED).get(index)?)
        }
        JobSpec::Restore { restore, source, into } => {
            let (source, target) = copy_in_ends(restore, source, into);
            let steps = match target {
                copy_in::Target::Preview(_) => plan(hosting, &[], copy_in::UNDO_INTO_OWN_SERVER),
                copy_in::Target::Project { .. } => plan(hosting, &[], copy_in::UNDO_OVER_OWN_SERVER),
            };
            Task::CopyIn(source, target, *steps.get(index)?)
        }
        _ => return None,
    })
}

/// The names of a job's steps, in order.
pub fn step_names(spec: &JobSpec, hosting: Hosting) -> Vec<&'static str> {
    (0..).map_while(|i| task(spec, hosting, i)).map(Task::name).collect()
}

/// Whose server `project`'s is.
pub(crate) fn project_owner(project: &Project) -> ServerOwner<'_> {
    ServerOwner { organization_id: &project.organization_id, project_id: &project.id, resource_id: &project.id }
}

/// Whose server `preview`'s is.
pub(crate) fn preview_owner(preview: &Preview) -> ServerOwner<'_> {
    ServerOwner { organization_id: &preview.organization_id, project_id: &preview.project_id, resource_id: &preview.id }
}

impl Task<'_> {
    pub fn name(self) -> &'static str {
        match self {
            Task::Provision(s) => s.name(),
            Task::DeleteProject(s) => s.name(),
            Task::Rotate(_, s) => s.name(),
            Task::Preview(_, s) => s.name(),
            Task::Backup(_, s) => s.name(),
            Task::CopyIn(_, _, s) => s.name(),
        }
    }

    /// A step that removes what the job no longer needs (the server a
    /// swap set aside) once the job's work is done: past the deadline it is
    /// left, not failed, and what it was removing goes with the next swap or
    /// the resource's deletion.
    fn is_cleanup(self) -> bool {
        matches!(self, Task::Preview(_, preview::Step::RemoveRetired) | Task::CopyIn(_, _, copy_in::Step::RemoveSpares))
    }

    /// What the step was doing, for the `error` of a job it failed.
    fn purpose(self) -> &'static str {
        match self {
            Task::Provision(s) => s.purpose(),
            Task::DeleteProject(s) => s.purpose(),
            Task::Rotate(_, s) => s.purpose(),
            Task::Preview(_, s) => s.purpose(),
            Task::Backup(_, s) => s.purpose(),
            Task::CopyIn(source, target, s) => s.purpose(source, target),
        }
    }
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
    job.waiting = None;
    expected
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
        let admission = Admission { idempotency: crate::scope::held(), ..admission };
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
        let body = match serde_json::to_string(&JobMessage { job_id: job_id.to_string() }) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(job_id, error = %e, "could not write a job message; the sweeper will re-drive it");
                return;
            }
        };
        if let Err(e) = self.queue.send(&body, delay).await {
            tracing::error!(job_id, error = %e, "could not enqueue job; the sweeper will re-drive it");
        }
    }

    /// A new `queued` job of `project` (organization, project id).
    pub(crate) fn queued_job(&self, spec: JobSpec, (organization_id, project_id): (&str, &str)) -> Job {
        Job::queued(ids::new_id(ids::JOB), spec, organization_id, &ProjectId::from(project_id), self.now())
    }

    /// The owner-role connection details of a database, for `/connections`.
    pub(crate) async fn owner_connection(
        &self,
        server_host: Option<&str>,
        database: &str,
        role: &str,
        password_sealed: &str,
    ) -> DomainResult<Vec<ConnectionInfo>> {
        let password = self.secrets.open(password_sealed).await?;
        let mut info = match (self.settings.hosting, server_host) {
            (Hosting::Shared, _) => self.endpoint.connection_info(database, role, &password),
            (Hosting::Dedicated, Some(host)) => self.endpoint.connection_info_on(host, database, role, &password),
            (Hosting::Dedicated, None) => {
                return Err(DomainError::Internal(format!("no server host is recorded for database {database}")))
            }
        };
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

        let hosting = self.settings.hosting;
        loop {
            let spec = job.spec.clone();
            let undoing = job.step >= UNDO_FROM;
            let Some(task) = task(&spec, hosting, job.step as usize) else { break };
            let result = self.run_task(&mut job, task).await;
            let now = self.now();
            let expected = job.version;
            job.version += 1;
            let name = task.name();
            match result {
                Ok(StepOutcome::Done) => {
                    tracing::info!(step = name, "step done");
                    let next = job.step + 1;
                    if !self.move_to(&mut job, expected, next, now).await? {
                        tracing::warn!(step = name, "lost the job lease; another worker carries on");
                        return Ok(Disposition::Done);
                    }
                }
                Ok(StepOutcome::Wait(asked)) | Err(StepError::NotYet(asked)) => {
                    let (since, checks) = match &job.waiting {
                        Some(w) if w.step == name => (w.since, w.checks),
                        _ => (now, 0),
                    };
                    let deadline = self.settings.jobs.wait_deadline;
                    // Undoing gets the deadline again for each of its steps.
                    let from = if undoing { since } else { job.started_at.unwrap_or(since) };
                    if now >= add(from, deadline) && task.is_cleanup() {
                        tracing::warn!(
                            job_id = %job.id,
                            step = name,
                            "a clean-up step is past the job's deadline; leaving it to the next swap or the deletion"
                        );
                        let next = job.step + 1;
                        if !self.move_to(&mut job, expected, next, now).await? {
                            return Ok(Disposition::Done);
                        }
                        continue;
                    }
                    if now >= add(from, deadline) {
                        let waited = (now - since).num_minutes();
                        if undoing {
                            job.version = expected;
                            let error = format!(
                                "{}; {name} still not finished after {waited} min: delete the resource to remove \
                                 what is left",
                                job.error.clone().unwrap_or_default()
                            );
                            tracing::error!(job_id = %job.id, step = name, "undoing a job took too long; failing it");
                            self.fail_job(job, &error).await?;
                            return Ok(Disposition::Done);
                        }
                        let error = format!(
                            "{name}: {}: still not finished after {waited} min, past the job's deadline of {} min; \
                             what the job made was removed, start it again",
                            task.purpose(),
                            deadline.as_secs() / 60
                        );
                        if undo_task(&spec, hosting, 0).is_none() {
                            job.version = expected;
                            tracing::error!(job_id = %job.id, step = name, "job past its deadline while waiting; failing it");
                            self.fail_job(job, &error).await?;
                            return Ok(Disposition::Done);
                        }
                        // What it made goes first (steps that may wait in
                        // turn); the job fails with this error after them.
                        tracing::error!(
                            job_id = %job.id,
                            step = name,
                            "job past its deadline while waiting; removing what it made, then failing it"
                        );
                        job.error = Some(error);
                        if !self.move_to(&mut job, expected, UNDO_FROM, now).await? {
                            return Ok(Disposition::Done);
                        }
                        continue;
                    }
                    let delay = self.wait_delay(checks).max(asked);
                    tracing::info!(
                        step = name,
                        checks = checks + 1,
                        wait_ms = delay.as_millis() as u64,
                        "step not finished; waiting"
                    );
                    job.waiting = Some(crate::model::JobWait {
                        step: name.to_string(),
                        since,
                        checks: checks + 1,
                        next_check_at: add(now, delay),
                    });
                    job.lease_owner = None;
                    job.lease_expires_at = Some(add(now, delay));
                    job.attempt -= 1;
                    self.store.update_job(&job, expected).await?;
                    return Ok(Disposition::RetryAfter(delay));
                }
                // Undoing gets as many attempts again.
                Err(StepError::Retryable(msg))
                    if job.attempt < self.settings.jobs.max_attempts
                        || (undoing && job.attempt < 2 * self.settings.jobs.max_attempts) =>
                {
                    let delay = self.backoff(job.attempt);
                    tracing::warn!(job_id = %job.id, step = name, error = %msg, retry_in_ms = delay.as_millis() as u64, "step failed; will retry");
                    job.lease_owner = None;
                    job.lease_expires_at = Some(add(now, delay));
                    let purpose = task.purpose();
                    // Undoing, the error stays the reason the job will fail.
                    if !undoing {
                        job.error = Some(format!("retrying after: {name}: {purpose}: {msg}"));
                    }
                    self.store.update_job(&job, expected).await?;
                    return Ok(Disposition::RetryAfter(delay));
                }
                // The job's work is done; what is left to remove goes later.
                Err(StepError::Retryable(msg) | StepError::Permanent(msg)) if task.is_cleanup() => {
                    tracing::warn!(job_id = %job.id, step = name, error = %msg, "a clean-up step failed; leaving it");
                    let next = job.step + 1;
                    if !self.move_to(&mut job, expected, next, now).await? {
                        return Ok(Disposition::Done);
                    }
                }
                Err(StepError::Retryable(msg) | StepError::Permanent(msg)) => {
                    job.version = expected;
                    tracing::error!(job_id = %job.id, step = name, error = %msg, "job failed");
                    let purpose = task.purpose();
                    let error = match (undoing, &job.error) {
                        (true, Some(reason)) => format!("{reason}; then {name}: {purpose}: {msg}"),
                        _ => format!("{name}: {purpose}: {msg}"),
                    };
                    // A server of its own that a creating job half-made costs
                    // money for nothing: it goes before the job fails.
                    if !undoing && hosting == Hosting::Dedicated && undo_task(&spec, hosting, 0).is_some() {
                        tracing::warn!(job_id = %job.id, step = name, "removing what the failed job made before it fails");
                        job.version = expected + 1;
                        job.error = Some(error);
                        if !self.move_to(&mut job, expected, UNDO_FROM, now).await? {
                            return Ok(Disposition::Done);
                        }
                        continue;
                    }
                    if let Err(e) = self.fail_job(job.clone(), &error).await {
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
        if job.step >= UNDO_FROM {
            // What it made is gone: the job fails with the reason it was undone.
            let error = job.error.clone().unwrap_or_else(|| "the job was undone".into());
            self.fail_job(job, &error).await?;
        } else {
            self.complete_job(job).await?;
        }
        Ok(Disposition::Done)
    }

    /// Moves the job to step `step` (the next one, or its undo plan's first)
    /// with a fresh lease and no wait, and stores it over version
    /// `expected`: false when another worker took the job meanwhile.
    async fn move_to(&self, job: &mut Job, expected: u64, step: u32, now: Timestamp) -> DomainResult<bool> {
        job.step = step;
        job.waiting = None;
        job.lease_expires_at = Some(add(now, self.settings.jobs.lease));
        self.store.update_job(job, expected).await
    }

    /// The wait after a step's `checks`-th "not yet" (0 for the first):
    /// `wait_first`, doubled each time, at most `wait_cap`.
    fn wait_delay(&self, checks: u32) -> Duration {
        let s = &self.settings.jobs;
        s.wait_first.saturating_mul(1u32 << checks.min(16)).min(s.wait_cap)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let s = &self.settings.jobs;
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        s.backoff_base.saturating_mul(factor).min(s.backoff_cap)
    }

    /// Runs one step of the job's plan: the kind's own module does the work.
    async fn run_task(&self, job: &mut Job, task: Task<'_>) -> Result<StepOutcome, StepError> {
        match task {
            Task::Provision(s) => provision::run(self, job, s).await,
            Task::DeleteProject(s) => delete_project::run(self, job, s).await,
            Task::Rotate(new_password, s) => rotate::run(self, job, new_password, s).await,
            Task::Preview(id, s) => preview::run(self, job, id, s).await,
            Task::Backup(id, s) => backup::run(self, job, id, s).await,
            Task::CopyIn(source, target, s) => copy_in::run(self, job, (source, target), s).await,
        }
    }

    /// What the job's end writes and announces, by kind.
    async fn ending(&self, job: &Job, ending: Ending) -> Effects {
        match &job.spec {
            JobSpec::Provision => provision::finish(self, job, ending).await,
            JobSpec::DeleteProject { dropped_previews } => {
                delete_project::finish(self, job, dropped_previews, ending).await
            }
            JobSpec::RotateCredentials { new_password } => rotate::finish(self, job, new_password, ending).await,
            JobSpec::CreatePreview { preview }
            | JobSpec::ResetPreview { preview }
            | JobSpec::DeletePreview { preview } => preview::finish(self, job, preview, ending).await,
            JobSpec::CreateBackup { backup } => backup::finish(self, job, backup, ending).await,
            JobSpec::Restore { restore, source, into } => {
                let (source, target) = copy_in_ends(restore, source, into);
                copy_in::finish(self, job, (source, target), ending).await
            }
            JobSpec::Import { import, source_url, safety_backup } => {
                let source = copy_in::Source::Server { import, url: source_url };
                copy_in::finish(self, job, (source, copy_in::Target::Project { safety_backup }), ending).await
            }
        }
    }

    pub(crate) async fn job_project(&self, job: &Job) -> Result<Project, StepError> {
        self.job_project_by_id(job.project().as_str()).await
    }

    async fn job_preview(&self, id: &PreviewId) -> Result<Preview, StepError> {
        self.store
            .get_preview(id.as_str())
            .await?
            .ok_or_else(|| StepError::Permanent(format!("preview {id} no longer exists")))
    }

    async fn job_backup(&self, id: &BackupId) -> Result<Backup, StepError> {
        self.store
            .get_backup(id.as_str())
            .await?
            .ok_or_else(|| StepError::Permanent(format!("backup {id} no longer exists")))
    }

    /// The admin password of `project`'s server and its previews' (a
    /// dedicated deployment's).
    pub(crate) async fn admin_password(&self, project: &Project) -> Result<String, StepError> {
        let sealed = project.admin_password_sealed.as_deref().ok_or_else(|| {
            StepError::Permanent(format!(
                "project {} was made on a shared server, which this deployment does not manage",
                project.id
            ))
        })?;
        Ok(self.secrets.open(sealed).await?)
    }

    /// Where SQL on `project`'s database runs: the shared server, or its own.
    pub(crate) async fn project_database(&self, project: &Project) -> Result<Arc<dyn DatabaseProvider>, StepError> {
        self.database_at(project, project.server_host.as_deref()).await
    }

    /// Where SQL on `preview`'s database runs: the shared server, or its own.
    pub(crate) async fn preview_database(
        &self,
        project: &Project,
        preview: &Preview,
    ) -> Result<Arc<dyn DatabaseProvider>, StepError> {
        self.database_at(project, preview.server_host.as_deref()).await
    }

    async fn database_at(&self, project: &Project, host: Option<&str>) -> Result<Arc<dyn DatabaseProvider>, StepError> {
        match self.settings.hosting {
            Hosting::Shared => Ok(self.provider.clone().ok_or_else(|| {
                DomainError::Internal("this function manages no database (it was wired without a provider)".into())
            })?),
            Hosting::Dedicated => {
                let host = host.ok_or_else(|| StepError::Permanent("its database server has not been made".into()))?;
                let admin = self.admin_password(project).await?;
                Ok(self.servers()?.admin(host, &admin).await?)
            }
        }
    }

    /// SQL on the replacement server `job` builds for `owner` (ready: the
    /// step that made it is done), before it is swapped in.
    pub(crate) async fn replacement_database(
        &self,
        project: &Project,
        owner: ServerOwner<'_>,
        job: &str,
        source: crate::ports::ServerSource<'_>,
    ) -> Result<Arc<dyn DatabaseProvider>, StepError> {
        let admin = self.admin_password(project).await?;
        let servers = self.servers()?;
        let host = servers.make(owner, crate::ports::Slot::Replacement(job), source, &admin).await?;
        Ok(servers.admin(&host, &admin).await?)
    }

    /// Records where `project`'s own server takes connections (read again
    /// first: only the host changes).
    pub(crate) async fn record_project_host(&self, project: &Project, host: String) -> Result<(), StepError> {
        if project.server_host.as_deref() == Some(host.as_str()) {
            return Ok(());
        }
        let mut fresh = self.job_project_by_id(&project.id).await?;
        fresh.server_host = Some(host);
        Ok(self.store.update_project(&fresh).await?)
    }

    /// Records where `preview`'s own server takes connections.
    pub(crate) async fn record_preview_host(&self, preview: &Preview, host: String) -> Result<(), StepError> {
        if preview.server_host.as_deref() == Some(host.as_str()) {
            return Ok(());
        }
        let mut fresh = self.job_preview(&PreviewId::from(preview.id.as_str())).await?;
        fresh.server_host = Some(host);
        Ok(self.store.update_preview(&fresh).await?)
    }

    async fn job_project_by_id(&self, id: &str) -> Result<Project, StepError> {
        self.store.get_project(id).await?.ok_or_else(|| StepError::Permanent(format!("project {id} no longer exists")))
    }

    /// An event of `job`'s organization and project.
    fn job_event(&self, kind: EventType, job: &Job, data: serde_json::Value) -> Event {
        Event {
            id: ids::new_id(ids::EVENT),
            kind,
            organization_id: job.organization_id.clone(),
            project_id: job.project_id.clone(),
            created_at: self.now(),
            data,
            published_at: None,
        }
    }

    /// The end of a job on the project itself: its state (`done` when
    /// completed, `failed` otherwise) and `announce`.
    async fn project_ending(&self, job: &Job, ending: Ending, done: ProjectState, announce: EventType) -> Effects {
        let mut project = self.job_project(job).await.map_err(StepError::into_internal)?;
        project.updated_at = self.now();
        project.state = if ending == Ending::Completed { done } else { ProjectState::Failed };
        let data = serde_json::json!({ "job": job, "project": project });
        Ok((ResourceWrite::Project(project), self.ending_events(job, ending, announce, data)))
    }

    /// The events of a job's end: `job.completed` and `announce` with the
    /// same data, or `job.failed` alone.
    fn ending_events(&self, job: &Job, ending: Ending, announce: EventType, data: serde_json::Value) -> Vec<Event> {
        match ending {
            Ending::Completed => {
                vec![self.job_event(EventType::JobCompleted, job, data.clone()), self.job_event(announce, job, data)]
            }
            Ending::Failed => vec![self.job_event(EventType::JobFailed, job, data)],
        }
    }

    async fn complete_job(&self, mut job: Job) -> DomainResult<()> {
        let expected = job.version;
        job.version += 1;
        job.state = JobState::Completed;
        job.finished_at = Some(self.now());
        job.error = None;
        job.lease_owner = None;
        job.lease_expires_at = None;
        job.waiting = None;
        let (write, events) = self.ending(&job, Ending::Completed).await?;
        if self.store.finish_job(&job, expected, &write, &events).await? {
            tracing::info!("job completed");
            self.publish_events(&events).await;
        }
        Ok(())
    }

    async fn fail_job(&self, mut job: Job, error: &str) -> DomainResult<()> {
        if let JobSpec::RotateCredentials { .. } = job.spec {
            rotate::undo(self, &job).await;
        }
        let expected = mark_failed(&mut job, error, self.now());
        let (write, events) = self.ending(&job, Ending::Failed).await?;
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
            let events = [self.job_event(EventType::JobFailed, &failed, serde_json::json!({ "job": failed }))];
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
