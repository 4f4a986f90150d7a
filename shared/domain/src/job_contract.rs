//! The job state machine's contract, run by each store adapter crate on its
//! own store and queues (`shared/embedded/tests/jobs.rs` on SQLite,
//! `shared/aws/tests/jobs.rs` on DynamoDB and SQS) with the in-memory
//! [`FakeProvider`]: every kind of job completes; completes after retryable
//! failures; fails on a permanent error with its step and cause; fails when
//! its retries run out; waits without spending attempts; fails with the
//! reason when its message dead-letters; and jobs stored before the typed
//! job model (the fixture [`STORED_JOBS_V1`]) still run to completion.
//! A clock the suite moves stands in for time, so backoffs and waits take none.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::fakes::{fill, stored_jobs_v1, FakeProvider, ManualClock, StoredJob};
use crate::jobs::{Disposition, JobMessage};
use crate::model::*;
use crate::ports::{Clock, DatabaseProvider, DedicatedServers, Hosting, Page, ProviderError, ServerSnapshots};
use crate::principal::Principal;
use crate::{App, JobSettings, Settings};

/// Every suite of this module, in turn.
pub async fn run_job_contract(rigs: &dyn JobRigs) {
    every_kind_completes(rigs).await;
    every_kind_completes_after_retryable_failures(rigs).await;
    every_kind_fails_on_a_permanent_error_with_its_step_and_cause(rigs).await;
    every_kind_fails_when_retries_run_out(rigs).await;
    every_kind_waits_without_spending_attempts_then_completes(rigs).await;
    a_job_waiting_past_its_deadline_fails_and_removes_what_it_made(rigs).await;
    every_kind_fails_with_the_reason_when_its_message_dead_letters(rigs).await;
    jobs_stored_before_the_typed_model_run_to_completion(rigs).await;
    dedicated::run_dedicated_contract(rigs).await;
}

mod dedicated;

/// What the suites need from the adapters under test.
#[async_trait]
pub trait JobRigs: Send + Sync {
    /// A new `App` on fresh adapters under test (store, queues, secret box,
    /// artifacts), with the suite's provider (as the endpoint too), clock
    /// and settings, and no webhook sender.
    async fn app(&self, provider: Arc<FakeProvider>, clock: Arc<dyn Clock>, settings: Settings) -> App;
    /// Rewrites the stored job `job_id` of the `App` made last: its kind,
    /// resource, step and parameters as the raw record holds them, taken
    /// from `old` as is.
    async fn store_old_shape(&self, job_id: &str, old: &StoredJob);
}

const MAX_ATTEMPTS: u32 = 4;
/// Waits of 15 s, 30 s, 60 s, ... 300 s reach it in about ten checks.
const WAIT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The waits a step that keeps answering "not yet" gets: 15 s, doubling, at most 300 s.
fn growing_waits(n: usize) -> Vec<Duration> {
    (0..n).map(|i| Duration::from_secs((15u64 << i.min(16)).min(300))).collect()
}

struct Harness {
    app: App,
    provider: Arc<FakeProvider>,
    clock: Arc<ManualClock>,
    principal: Principal,
}

async fn harness(rigs: &dyn JobRigs) -> Harness {
    harness_on(rigs, None).await
}

/// A harness whose deployment gives each project and preview a server of
/// its own from `servers`, when given.
async fn harness_on(
    rigs: &dyn JobRigs,
    servers: Option<(Arc<dyn DedicatedServers>, Arc<dyn ServerSnapshots>)>,
) -> Harness {
    let provider = Arc::new(FakeProvider::new());
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let hosting = if servers.is_some() { Hosting::Dedicated } else { Hosting::Shared };
    let settings = Settings {
        jobs: JobSettings { max_attempts: MAX_ATTEMPTS, wait_deadline: WAIT_DEADLINE, ..JobSettings::default() },
        hosting,
        ..Settings::default()
    };
    let app = rigs.app(provider.clone(), clock.clone(), settings).await;
    let app = match servers {
        Some((servers, snapshots)) => App::new(crate::AppParts {
            servers: Some(servers),
            snapshots: Some(snapshots),
            ..crate::AppParts::clone(&app)
        }),
        None => app,
    };
    let (_, key) = app.bootstrap(None).await.unwrap().unwrap();
    let principal = app.authenticate_api_key(&key, None).await.unwrap();
    Harness { app, provider, clock, principal }
}

fn body(job_id: &str) -> String {
    serde_json::to_string(&JobMessage { job_id: job_id.into() }).unwrap()
}

/// What the runs of a job's message answered.
#[derive(Debug, Default)]
struct Runs {
    waits: Vec<Duration>,
    retries: usize,
}

impl Harness {
    fn req<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    async fn job(&self, id: &str) -> Job {
        self.app.store.get_job(id).await.unwrap().unwrap()
    }

    /// Runs the job's message until it is done, moving the clock over every
    /// wait and backoff it asks for.
    async fn run(&self, job_id: &str) -> Runs {
        let mut runs = Runs::default();
        for _ in 0..50 {
            match self.app.run_job_message(&body(job_id), "worker-1").await {
                Disposition::Done => return runs,
                Disposition::RetryAfter(d) => {
                    let job = self.job(job_id).await;
                    if job.error.as_deref().is_some_and(|e| e.starts_with("retrying after")) {
                        runs.retries += 1;
                    } else {
                        runs.waits.push(d);
                    }
                    // Just past the moment the job may run again.
                    self.clock.advance(chrono::Duration::from_std(d).unwrap() + chrono::Duration::milliseconds(1));
                }
                Disposition::Failed(d) => panic!("the store is local; a run cannot fail to run ({d:?})"),
            }
        }
        panic!("job {job_id} did not finish in 50 runs");
    }

    async fn ready_project(&self) -> Project {
        let pj = self.app.create_project(&self.principal, Self::req(json!({ "name": "shop" }))).await.unwrap();
        self.run(&pj.job.id).await;
        let project = self.app.store.get_project(&pj.project.id).await.unwrap().unwrap();
        assert_eq!(project.state, ProjectState::Ready);
        self.provider.write(&project.database_name, "rows of the project");
        project
    }

    async fn ready_preview(&self, project: &Project, mode: &str) -> Preview {
        let req = Self::req(json!({ "name": format!("pr-{mode}"), "mode": mode }));
        let pj = self.app.create_preview(&self.principal, &project.id, req).await.unwrap();
        self.run(&pj.job.id).await;
        let preview = self.app.store.get_preview(&pj.preview.id).await.unwrap().unwrap();
        assert_eq!(preview.state, PreviewState::Ready);
        preview
    }

    async fn completed_backup(&self, project: &Project) -> Backup {
        let bj = self.app.create_backup(&self.principal, &project.id, Self::req(json!({}))).await.unwrap();
        self.run(&bj.job.id).await;
        let backup = self.app.store.get_backup(&bj.backup.id).await.unwrap().unwrap();
        assert_eq!(backup.state, BackupState::Completed);
        backup
    }

    async fn events_of(&self, job_id: &str) -> Vec<EventType> {
        let org = self.principal.org_id().to_string();
        let mut all = self.app.store.list_events(&org, &Page::first(1000)).await.unwrap();
        all.reverse();
        all.into_iter()
            .filter(|e| e.data.get("job").and_then(|j| j.get("id")).and_then(|v| v.as_str()) == Some(job_id))
            .map(|e| e.kind)
            .collect()
    }
}

/// Each kind: how to start it (after whatever it needs exists), the provider
/// operation one of its steps calls, and how its resource ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Provision,
    DeleteProject,
    Rotate,
    ClonePreview,
    EmptyPreview,
    ResetPreview,
    DeletePreview,
    Backup,
    RestoreOverwrite,
    RestoreToPreview,
    Import,
}

const KINDS: [Kind; 11] = [
    Kind::Provision,
    Kind::DeleteProject,
    Kind::Rotate,
    Kind::ClonePreview,
    Kind::EmptyPreview,
    Kind::ResetPreview,
    Kind::DeletePreview,
    Kind::Backup,
    Kind::RestoreOverwrite,
    Kind::RestoreToPreview,
    Kind::Import,
];

/// A started job and where to look for its resource.
struct Started {
    job_id: String,
    project_id: String,
    preview_id: Option<String>,
    backup_id: Option<String>,
    /// The project's sealed password before the job (rotation).
    password_before: Option<String>,
}

impl Kind {
    /// A provider operation one of the kind's steps calls, and the step's name.
    fn operation(self) -> (&'static str, &'static str) {
        match self {
            Kind::Provision => ("ensure_database", "create_database"),
            Kind::DeleteProject => ("drop_database", "drop_previews"),
            Kind::Rotate => ("check_connection", "verify_connection"),
            Kind::ClonePreview => ("clone_database", "copy_data"),
            Kind::EmptyPreview => ("ensure_database", "copy_data"),
            Kind::ResetPreview => ("clone_database", "copy_data"),
            Kind::DeletePreview => ("drop_role", "drop_role"),
            Kind::Backup => ("dump_database", "dump"),
            Kind::RestoreOverwrite => ("replace_database", "swap_database"),
            Kind::RestoreToPreview => ("restore_database", "copy_data"),
            Kind::Import => ("import_database", "copy_data"),
        }
    }

    /// Sets up what the job needs and starts it (the provider's plan is set
    /// by the caller after this, so setup jobs run clean).
    async fn start(self, h: &Harness) -> Started {
        let p = &h.principal;
        if self == Kind::Provision {
            let pj = h.app.create_project(p, Harness::req(json!({ "name": "fresh" }))).await.unwrap();
            return Started {
                job_id: pj.job.id,
                project_id: pj.project.id,
                preview_id: None,
                backup_id: None,
                password_before: None,
            };
        }
        let project = h.ready_project().await;
        let mut s = Started {
            job_id: String::new(),
            project_id: project.id.clone(),
            preview_id: None,
            backup_id: None,
            password_before: Some(project.password_sealed.clone()),
        };
        match self {
            Kind::Provision => unreachable!(),
            Kind::DeleteProject => {
                let preview = h.ready_preview(&project, "empty").await;
                s.preview_id = Some(preview.id);
                s.job_id = h.app.delete_project(p, &project.id).await.unwrap().job.id;
            }
            Kind::Rotate => s.job_id = h.app.rotate_credentials(p, &project.id).await.unwrap().job.id,
            Kind::ClonePreview | Kind::EmptyPreview => {
                let mode = if self == Kind::ClonePreview { "clone" } else { "empty" };
                let req = Harness::req(json!({ "name": "pr-1", "mode": mode }));
                let pj = h.app.create_preview(p, &project.id, req).await.unwrap();
                s.preview_id = Some(pj.preview.id);
                s.job_id = pj.job.id;
            }
            Kind::ResetPreview => {
                let preview = h.ready_preview(&project, "clone").await;
                s.job_id = h.app.reset_preview(p, &preview.id).await.unwrap().job.id;
                s.preview_id = Some(preview.id);
            }
            Kind::DeletePreview => {
                let preview = h.ready_preview(&project, "empty").await;
                s.job_id = h.app.delete_preview(p, &preview.id).await.unwrap().job.id;
                s.preview_id = Some(preview.id);
            }
            Kind::Backup => {
                let bj = h.app.create_backup(p, &project.id, Harness::req(json!({ "name": "b" }))).await.unwrap();
                s.backup_id = Some(bj.backup.id);
                s.job_id = bj.job.id;
            }
            Kind::RestoreOverwrite | Kind::RestoreToPreview => {
                let backup = h.completed_backup(&project).await;
                h.provider.write(&project.database_name, "rows written after the backup");
                let mode = if self == Kind::RestoreOverwrite { "overwrite" } else { "preview" };
                let req = Harness::req(json!({ "backup_id": backup.id, "mode": mode }));
                let rj = h.app.create_restore(p, &project.id, req).await.unwrap();
                s.preview_id = rj.preview.map(|pv| pv.id);
                s.backup_id = Some(backup.id);
                s.job_id = rj.job.id;
            }
            Kind::Import => {
                let req = Harness::req(json!({ "source_url": "postgres://u:secret@127.0.0.1:5999/src" }));
                s.job_id = h.app.create_import(p, &project.id, req).await.unwrap().job.id;
            }
        }
        s
    }

    /// The resource after the job completed, and the events it announced.
    async fn check_completed(self, h: &Harness, s: &Started) {
        let project = h.app.store.get_project(&s.project_id).await.unwrap().unwrap();
        let preview = match &s.preview_id {
            Some(id) => h.app.store.get_preview(id).await.unwrap(),
            None => None,
        };
        let events = h.events_of(&s.job_id).await;
        use EventType::*;
        match self {
            Kind::Provision => {
                assert_eq!(project.state, ProjectState::Ready);
                assert!(h.provider.database(&project.database_name).is_some());
                assert_eq!(events, [JobCompleted, ProjectReady]);
            }
            Kind::DeleteProject => {
                assert_eq!(project.state, ProjectState::Deleted);
                assert_eq!(preview.unwrap().state, PreviewState::Deleted);
                assert!(h.provider.database(&project.database_name).is_none());
                assert_eq!(events, [JobCompleted, ProjectDeleted, PreviewDeleted]);
            }
            Kind::Rotate => {
                assert_ne!(Some(&project.password_sealed), s.password_before.as_ref(), "the new password is stored");
                let password = h.app.secrets.open(&project.password_sealed).await.unwrap();
                assert_eq!(h.provider.role_password(&project.role_name), Some(password));
                assert_eq!(events, [JobCompleted, CredentialsRotated]);
            }
            Kind::ClonePreview | Kind::ResetPreview => {
                let preview = preview.unwrap();
                assert_eq!(preview.state, PreviewState::Ready);
                let (owner, content) = h.provider.database(&preview.database_name).unwrap();
                assert_eq!((owner.as_str(), content.as_str()), (preview.role_name.as_str(), "rows of the project"));
                assert_eq!(events, [JobCompleted, PreviewReady]);
            }
            Kind::EmptyPreview => {
                let preview = preview.unwrap();
                assert_eq!(preview.state, PreviewState::Ready);
                assert_eq!(h.provider.database(&preview.database_name).unwrap().1, "");
                assert_eq!(events, [JobCompleted, PreviewReady]);
            }
            Kind::DeletePreview => {
                let preview = preview.unwrap();
                assert_eq!(preview.state, PreviewState::Deleted);
                assert!(h.provider.role_password(&preview.role_name).is_none());
                assert_eq!(events, [JobCompleted, PreviewDeleted]);
            }
            Kind::Backup => {
                let backup = h.app.store.get_backup(s.backup_id.as_ref().unwrap()).await.unwrap().unwrap();
                assert_eq!(backup.state, BackupState::Completed);
                assert_eq!(backup.size_bytes, Some("rows of the project".len() as u64));
                assert_eq!(events, [JobCompleted, BackupCompleted]);
            }
            Kind::RestoreOverwrite => {
                assert_eq!(h.provider.database(&project.database_name).unwrap().1, "rows of the project");
                assert_eq!(events, [BackupCompleted, JobCompleted, RestoreCompleted], "the safety backup first");
            }
            Kind::RestoreToPreview => {
                let preview = preview.unwrap();
                assert_eq!(preview.state, PreviewState::Ready);
                assert_eq!(h.provider.database(&preview.database_name).unwrap().1, "rows of the project");
                assert_eq!(events, [JobCompleted, RestoreCompleted, PreviewReady]);
            }
            Kind::Import => {
                assert!(h.provider.database(&project.database_name).unwrap().1.starts_with("imported"));
                assert_eq!(events, [BackupCompleted, JobCompleted, ImportCompleted]);
            }
        }
    }

    /// The resource after the job failed.
    async fn check_failed(self, h: &Harness, s: &Started) {
        let project = h.app.store.get_project(&s.project_id).await.unwrap().unwrap();
        let preview = match &s.preview_id {
            Some(id) => h.app.store.get_preview(id).await.unwrap(),
            None => None,
        };
        assert_eq!(h.events_of(&s.job_id).await.last(), Some(&EventType::JobFailed), "{self:?}");
        match self {
            Kind::Provision | Kind::DeleteProject => assert_eq!(project.state, ProjectState::Failed),
            Kind::Rotate => {
                assert_eq!(Some(&project.password_sealed), s.password_before.as_ref(), "the old password is kept");
                let old = h.app.secrets.open(&project.password_sealed).await.unwrap();
                assert_eq!(h.provider.role_password(&project.role_name), Some(old), "and set back on the server");
                assert_eq!(project.state, ProjectState::Ready);
            }
            Kind::ClonePreview | Kind::EmptyPreview | Kind::ResetPreview | Kind::DeletePreview => {
                assert_eq!(preview.unwrap().state, PreviewState::Failed)
            }
            Kind::Backup => {
                let backup = h.app.store.get_backup(s.backup_id.as_ref().unwrap()).await.unwrap().unwrap();
                assert_eq!(backup.state, BackupState::Failed);
            }
            Kind::RestoreOverwrite | Kind::Import => {
                assert_eq!(project.state, ProjectState::Ready);
                assert_eq!(
                    h.provider.database(&project.database_name).unwrap().1,
                    if self == Kind::Import { "rows of the project" } else { "rows written after the backup" },
                    "the project's data is as it was"
                );
                let scratch =
                    format!("{}_{}", project.database_name, if self == Kind::Import { "import" } else { "restore" });
                assert!(h.provider.database(&scratch).is_none(), "the scratch database is dropped");
            }
            Kind::RestoreToPreview => assert_eq!(preview.unwrap().state, PreviewState::Failed),
        }
    }
}

pub async fn every_kind_completes(rigs: &dyn JobRigs) {
    for kind in KINDS {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let runs = h.run(&s.job_id).await;
        let job = h.job(&s.job_id).await;
        assert_eq!((job.state, job.error.as_deref(), job.attempt), (JobState::Completed, None, 1), "{kind:?}");
        assert_eq!((runs.retries, runs.waits.len()), (0, 0), "{kind:?}");
        kind.check_completed(&h, &s).await;
    }
}

pub async fn every_kind_completes_after_retryable_failures(rigs: &dyn JobRigs) {
    for kind in KINDS {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let (op, _) = kind.operation();
        let transient = || ProviderError::Retryable("the server is restarting; retry".into());
        h.provider.plan(op, [transient(), transient()]);
        let runs = h.run(&s.job_id).await;
        let job = h.job(&s.job_id).await;
        assert_eq!((job.state, job.error.as_deref()), (JobState::Completed, None), "{kind:?}");
        assert_eq!((runs.retries, job.attempt), (2, 3), "{kind:?}: two retries, three attempts");
        kind.check_completed(&h, &s).await;
    }
}

pub async fn every_kind_fails_on_a_permanent_error_with_its_step_and_cause(rigs: &dyn JobRigs) {
    for kind in KINDS {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let (op, step) = kind.operation();
        h.provider.plan(op, [ProviderError::Permanent("the disk is full; free space and retry".into())]);
        let runs = h.run(&s.job_id).await;
        let job = h.job(&s.job_id).await;
        assert_eq!((job.state, job.attempt, runs.retries), (JobState::Failed, 1, 0), "{kind:?}");
        let error = job.error.unwrap();
        assert!(
            error.starts_with(&format!("{step}: ")) && error.ends_with(": the disk is full; free space and retry"),
            "{kind:?}: {error}"
        );
        kind.check_failed(&h, &s).await;
    }
}

pub async fn every_kind_fails_when_retries_run_out(rigs: &dyn JobRigs) {
    for kind in KINDS {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let (op, _) = kind.operation();
        h.provider.plan(op, (0..MAX_ATTEMPTS).map(|_| ProviderError::Retryable("the server is busy".into())));
        let runs = h.run(&s.job_id).await;
        let job = h.job(&s.job_id).await;
        assert_eq!((job.state, job.attempt), (JobState::Failed, MAX_ATTEMPTS), "{kind:?}");
        assert_eq!(runs.retries, MAX_ATTEMPTS as usize - 1, "{kind:?}");
        assert!(job.error.unwrap().ends_with("the server is busy"), "{kind:?}");
        kind.check_failed(&h, &s).await;
    }
}

pub async fn every_kind_waits_without_spending_attempts_then_completes(rigs: &dyn JobRigs) {
    for kind in KINDS {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let (op, _) = kind.operation();
        let wait = Duration::from_secs(15);
        // More waits than attempts: waiting must never count as one.
        h.provider.plan(op, (0..MAX_ATTEMPTS + 2).map(|_| ProviderError::NotYet(wait)));
        let calls_before = h.provider.count(op);
        let runs = h.run(&s.job_id).await;
        let job = h.job(&s.job_id).await;
        assert_eq!((job.state, job.error.as_deref()), (JobState::Completed, None), "{kind:?}");
        assert_eq!(runs.waits, growing_waits(MAX_ATTEMPTS as usize + 2), "{kind:?}: waits grow, at most 300 s");
        assert_eq!(job.waiting, None, "{kind:?}: a finished job waits on nothing");
        assert_eq!((runs.retries, job.attempt), (0, 1), "{kind:?}: waits are not attempts");
        assert!(h.provider.count(op) >= calls_before + MAX_ATTEMPTS as usize + 3, "{kind:?}: the step ran again");
        kind.check_completed(&h, &s).await;
    }
}

/// A step that never finishes: the job shows what it waits on, the checks
/// come further apart, and past the job's deadline it fails with a reason,
/// after removing the database and role a creating job made.
pub async fn a_job_waiting_past_its_deadline_fails_and_removes_what_it_made(rigs: &dyn JobRigs) {
    for kind in [Kind::Provision, Kind::EmptyPreview, Kind::Backup] {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let (op, step) = kind.operation();
        // A provider asking for a short wait gets the schedule's longer one.
        h.provider.plan(op, (0..100).map(|_| ProviderError::NotYet(Duration::from_secs(1))));
        let started = h.clock.now();
        let first = h.app.run_job_message(&body(&s.job_id), "worker-1").await;
        assert_eq!(first, Disposition::RetryAfter(Duration::from_secs(15)), "{kind:?}");
        let job = h.job(&s.job_id).await;
        assert_eq!(job.state, JobState::Running, "{kind:?}: a waiting job is running");
        let wait = job.waiting.clone().unwrap_or_else(|| panic!("{kind:?}: the job shows its wait"));
        assert_eq!((wait.step.as_str(), wait.checks), (step, 1), "{kind:?}");
        assert_eq!((wait.since, wait.next_check_at), (started, started + chrono::Duration::seconds(15)), "{kind:?}");
        h.clock.advance(chrono::Duration::seconds(16));
        let runs = h.run(&s.job_id).await;
        let waits = growing_waits(runs.waits.len() + 1);
        assert_eq!(runs.waits, waits[1..], "{kind:?}: waits grow to 300 s");
        let job = h.job(&s.job_id).await;
        assert_eq!((job.state, job.waiting.as_ref()), (JobState::Failed, None), "{kind:?}");
        let error = job.error.clone().unwrap_or_default();
        assert!(
            error.starts_with(&format!("{step}: ")) && error.contains("past the job's deadline of 30 min"),
            "{kind:?}: {error}"
        );
        assert!(h.clock.now() >= started + chrono::Duration::minutes(30), "{kind:?}: not before the deadline");
        kind.check_failed(&h, &s).await;
        let made = match kind {
            Kind::Provision => {
                let p = h.app.store.get_project(&s.project_id).await.unwrap().unwrap();
                Some((p.database_name, p.role_name))
            }
            Kind::EmptyPreview => {
                let p = h.app.store.get_preview(s.preview_id.as_ref().unwrap()).await.unwrap().unwrap();
                Some((p.database_name, p.role_name))
            }
            _ => None,
        };
        if let Some((database, role)) = made {
            assert!(h.provider.database(&database).is_none(), "{kind:?}: the database is removed");
            assert!(h.provider.role_password(&role).is_none(), "{kind:?}: and its role");
        }
    }
}

pub async fn every_kind_fails_with_the_reason_when_its_message_dead_letters(rigs: &dyn JobRigs) {
    for kind in KINDS {
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let (op, _) = kind.operation();
        h.provider.plan(op, [ProviderError::Retryable("the server is busy".into())]);
        // One run, which backs off; then the queue gives up on the message.
        assert!(matches!(h.app.run_job_message(&body(&s.job_id), "worker-1").await, Disposition::RetryAfter(_)));
        let why = "its queue message failed 5 times and was moved to the dead-letter queue";
        assert!(h.app.abandon_job_message(&body(&s.job_id), why).await.unwrap(), "{kind:?}");
        let job = h.job(&s.job_id).await;
        assert_eq!(job.state, JobState::Failed, "{kind:?}");
        assert_eq!(job.error.as_deref(), Some(format!("the job could not be run: {why}").as_str()), "{kind:?}");
        kind.check_failed(&h, &s).await;
        // A later delivery of the same message changes nothing.
        assert_eq!(h.app.run_job_message(&body(&s.job_id), "worker-2").await, Disposition::Done);
        assert!(!h.app.abandon_job_message(&body(&s.job_id), why).await.unwrap());
        assert_eq!(h.job(&s.job_id).await, job, "{kind:?}");
    }
}

/// A job as the code before the typed job model stored it (the fixture of
/// the domain's testkit, column for column), with the message that carried
/// it, runs to completion: the row is rewritten in the old shape under a job
/// the use case started, and the old message is the only one on the queue.
pub async fn jobs_stored_before_the_typed_model_run_to_completion(rigs: &dyn JobRigs) {
    let (message, stored) = stored_jobs_v1();
    assert_eq!(stored.len(), 9);
    for old in stored {
        let kind = match (old.kind.as_str(), old.resource_kind.as_str()) {
            ("provision", _) => Kind::Provision,
            ("rotate_credentials", _) => Kind::Rotate,
            ("create_preview", _) => Kind::ClonePreview,
            ("delete_preview", _) => Kind::DeletePreview,
            ("create_backup", _) => Kind::Backup,
            ("restore", "project") => Kind::RestoreOverwrite,
            ("restore", _) => Kind::RestoreToPreview,
            ("import", _) => Kind::Import,
            ("delete_project", _) => Kind::DeleteProject,
            other => panic!("no kind for {other:?}"),
        };
        let h = harness(rigs).await;
        let s = kind.start(&h).await;
        let job = h.job(&s.job_id).await;
        // The ids and sealed values of the records the use case made.
        let mut values = vec![("JOB", s.job_id.clone()), ("PROJECT", s.project_id.clone())];
        values.extend(s.preview_id.clone().map(|v| ("PREVIEW", v)));
        match &job.spec {
            JobSpec::RotateCredentials { new_password } => {
                values.push(("NEW_PASSWORD_SEALED", new_password.as_str().into()))
            }
            JobSpec::CreateBackup { backup } => values.push(("BACKUP", backup.to_string())),
            JobSpec::Restore { restore, source, into } => {
                values.push(("RESTORE", restore.to_string()));
                values.push(("SOURCE_BACKUP", source.to_string()));
                if let RestoreInto::Project { safety_backup } = into {
                    values.push(("SAFETY_BACKUP", safety_backup.to_string()));
                }
            }
            JobSpec::Import { import, source_url, safety_backup } => {
                values.push(("IMPORT", import.to_string()));
                values.push(("SOURCE_URL_SEALED", source_url.as_str().into()));
                values.push(("SAFETY_BACKUP", safety_backup.to_string()));
            }
            _ => {}
        }
        let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let params = fill(&old.params, &values);
        assert!(!params.contains('$'), "{kind:?}: every placeholder has a value: {params}");
        let filled = StoredJob { resource_id: fill(&old.resource_id, &values), params: params.clone(), ..old.clone() };
        rigs.store_old_shape(&s.job_id, &filled).await;
        if old.kind == "delete_project" {
            // Its first step ran before the old process stopped.
            let preview = h.app.store.get_preview(s.preview_id.as_ref().unwrap()).await.unwrap().unwrap();
            h.provider.drop_database(&preview.database_name).await.unwrap();
            h.provider.drop_role(&preview.role_name).await.unwrap();
        }
        // The old message carries the job; the queue may hold others (the
        // use case's own, earlier rigs'), each run as a worker would.
        h.app.queue.send(&fill(&message, &values), Duration::ZERO).await.unwrap();
        for _ in 0..200 {
            if h.job(&s.job_id).await.state.is_terminal() {
                break;
            }
            for m in h.app.queue.receive(10, Duration::from_secs(60)).await.unwrap() {
                match h.app.run_job_message(&m.body, "worker-1").await {
                    Disposition::Done => h.app.queue.delete(&m.receipt).await.unwrap(),
                    other => panic!("{kind:?}: {other:?}"),
                }
            }
        }
        let job = h.job(&s.job_id).await;
        assert_eq!(
            (job.state, job.error.as_deref()),
            (JobState::Completed, None),
            "{kind:?} ({} {})",
            old.kind,
            old.params
        );
        let old_params: serde_json::Value = serde_json::from_str(&params).unwrap();
        assert_eq!(job.spec.params(), old_params, "{kind:?}: written back in the same shape");
        if old.kind != "delete_project" {
            kind.check_completed(&h, &s).await;
        } else {
            let events = h.events_of(&s.job_id).await;
            assert_eq!(events, [EventType::JobCompleted, EventType::ProjectDeleted, EventType::PreviewDeleted]);
        }
    }
}
