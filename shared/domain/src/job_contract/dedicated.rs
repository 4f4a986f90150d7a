//! The job contract of a deployment that gives each project and preview a
//! server of its own ([`Hosting::Dedicated`]), on the in-memory
//! [`FakeServers`]: where every kind's data ends up, what each server
//! admits, what a deleted project leaves; waits on servers that take
//! their time ([`SlowServers`]), and a job past its deadline removing the
//! server it made before it fails.
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{growing_waits, harness_on, Harness, JobRigs};
use crate::fakes::{FakeProvider, FakeServers, SlowServers};
use crate::model::*;
use crate::ports::{DatabaseProvider, DedicatedServers, ProviderError, ServerSnapshots};

pub async fn run_dedicated_contract(rigs: &dyn JobRigs) {
    every_project_and_preview_lives_on_a_server_of_its_own(rigs).await;
    waits_on_a_slow_server_grow_and_the_job_completes(rigs).await;
    a_server_still_not_made_past_the_deadline_is_removed_before_the_job_fails(rigs).await;
    a_server_that_cannot_be_removed_in_time_fails_the_job_saying_so(rigs).await;
    a_server_half_made_by_a_failed_job_is_removed_before_it_fails(rigs).await;
    a_restore_over_the_project_that_fails_after_its_swap_puts_the_projects_server_back(rigs).await;
    every_server_step_whose_answer_is_lost_is_run_again_to_the_same_end(rigs).await;
}

/// A harness on `servers`, with `snapshots` for the sweep.
async fn dedicated(rigs: &dyn JobRigs, servers: Arc<dyn DedicatedServers>, snapshots: &Arc<FakeServers>) -> Harness {
    harness_on(rigs, Some((servers, snapshots.clone() as Arc<dyn ServerSnapshots>))).await
}

impl Harness {
    async fn project(&self, id: &str) -> Project {
        self.app.store.get_project(id).await.unwrap().unwrap()
    }

    async fn preview(&self, id: &str) -> Preview {
        self.app.store.get_preview(id).await.unwrap().unwrap()
    }

    async fn password(&self, sealed: &str) -> String {
        self.app.secrets.open(sealed).await.unwrap()
    }
}

/// Whether `role` gets into `database` on `server` with `password`.
async fn admits(server: &FakeProvider, database: &str, role: &str, password: &str) -> bool {
    match server.check_connection(database, role, password).await {
        Ok(()) => true,
        Err(ProviderError::Permanent(_)) => false,
        Err(e) => panic!("a fake server answers at once: {e}"),
    }
}

pub async fn every_project_and_preview_lives_on_a_server_of_its_own(rigs: &dyn JobRigs) {
    let servers = Arc::new(FakeServers::new());
    let h = dedicated(rigs, servers.clone(), &servers).await;
    let p = &h.principal;

    // A project: its server, then its role and database there; none on a shared server.
    let project = h.ready_project_on_its_server(&servers).await;
    let host = FakeServers::host_of(&project.id);
    assert_eq!(project.server_host.as_deref(), Some(host.as_str()), "the project's host is recorded");
    assert!(h.provider.database(&project.database_name).is_none(), "nothing is made on a shared server");
    let own = servers.server(&project.id).expect("the project's server");
    let project_password = h.password(&project.password_sealed).await;
    assert!(admits(&own, &project.database_name, &project.role_name, &project_password).await);
    let conn = h.app.project_connections(p, &project.id).await.unwrap();
    assert_eq!((conn[0].host.as_str(), conn[0].user.as_str()), (host.as_str(), project.role_name.as_str()));
    own.write(&project.database_name, "rows of the project");

    // A clone: a copy of the project's server; the same database and role, the preview's password.
    let clone = h.ready_preview(&project, "clone").await;
    assert_eq!(
        (clone.database_name.as_str(), clone.role_name.as_str()),
        (project.database_name.as_str(), project.role_name.as_str())
    );
    let clone_host = FakeServers::host_of(&clone.id);
    assert_eq!(clone.server_host.as_deref(), Some(clone_host.as_str()));
    let clone_server = servers.server(&clone.id).expect("the clone's server");
    assert_eq!(clone_server.database(&clone.database_name).unwrap().1, "rows of the project");
    let clone_password = h.password(&clone.password_sealed).await;
    assert!(admits(&clone_server, &clone.database_name, &clone.role_name, &clone_password).await);
    assert!(
        !admits(&clone_server, &clone.database_name, &clone.role_name, &project_password).await,
        "the project's password does not open the preview"
    );
    assert!(
        admits(&own, &project.database_name, &project.role_name, &project_password).await,
        "the project's own server keeps the project's password"
    );
    let conn = h.app.preview_connections(p, &clone.id).await.unwrap();
    assert_eq!((conn[0].host.as_str(), conn[0].password.as_str()), (clone_host.as_str(), clone_password.as_str()));

    // A reset: a fresh clone swapped in under the same host; the old server goes.
    clone_server.write(&clone.database_name, "rows written on the preview");
    own.write(&project.database_name, "newer rows of the project");
    let job = h.app.reset_preview(p, &clone.id).await.unwrap().job;
    h.run(&job.id).await;
    let reset = h.preview(&clone.id).await;
    assert_eq!((reset.state, reset.server_host.as_deref()), (PreviewState::Ready, Some(clone_host.as_str())));
    let swapped = servers.server(&clone.id).unwrap();
    assert!(!Arc::ptr_eq(&swapped, &clone_server), "a new server took the preview's place");
    assert_eq!(swapped.database(&clone.database_name).unwrap().1, "newer rows of the project");
    assert!(admits(&swapped, &clone.database_name, &clone.role_name, &clone_password).await);
    assert_eq!(servers.count(), 2, "the replaced server is removed");

    // An empty preview: a new server with an empty database of its own name.
    let empty = h.ready_preview(&project, "empty").await;
    let empty_server = servers.server(&empty.id).expect("the empty preview's server");
    assert_eq!(empty_server.database(&empty.database_name), Some((empty.role_name.clone(), String::new())));
    assert!(empty_server.database(&project.database_name).is_none());

    // Rotation, a backup and a restore into a preview run on the project's server.
    let job = h.app.rotate_credentials(p, &project.id).await.unwrap().job;
    h.run(&job.id).await;
    let rotated = h.project(&project.id).await;
    let new_password = h.password(&rotated.password_sealed).await;
    assert!(admits(&own, &project.database_name, &project.role_name, &new_password).await);
    assert!(!admits(&own, &project.database_name, &project.role_name, &project_password).await);
    // A backup is a snapshot of the project's server, no file.
    let backup = h.completed_backup(&rotated).await;
    assert_eq!((backup.size_bytes, backup.sha256.as_deref()), (None, None));
    let snapshot = servers.snapshot_of(&backup.id).expect("the backup's snapshot");
    assert_eq!(snapshot.database(&project.database_name).unwrap().1, "newer rows of the project");
    own.write(&project.database_name, "rows after the backup");

    // Restored into a preview: a server made from the snapshot, as it was then.
    let req = Harness::req(json!({ "backup_id": backup.id, "mode": "preview" }));
    let rj = h.app.create_restore(p, &project.id, req).await.unwrap();
    h.run(&rj.job.id).await;
    let restored = h.preview(&rj.preview.unwrap().id).await;
    assert_eq!(restored.state, PreviewState::Ready, "{:?}", h.job(&rj.job.id).await.error);
    let restored_server = servers.server(&restored.id).expect("the restored preview's server");
    assert_eq!(restored_server.database(&restored.database_name).unwrap().1, "newer rows of the project");
    let restored_password = h.password(&restored.password_sealed).await;
    assert!(admits(&restored_server, &restored.database_name, &restored.role_name, &restored_password).await);

    // Restored over the project: a safety snapshot first, then a server made
    // from the backup swapped in under the same host, with today's password.
    let servers_before = servers.count();
    let req = Harness::req(json!({ "backup_id": backup.id, "mode": "overwrite" }));
    let rj = h.app.create_restore(p, &project.id, req).await.unwrap();
    h.run(&rj.job.id).await;
    assert_eq!(h.job(&rj.job.id).await.state, JobState::Completed, "{:?}", h.job(&rj.job.id).await.error);
    let after = h.project(&project.id).await;
    assert_eq!(after.server_host.as_deref(), Some(host.as_str()), "the connection string is kept");
    let replaced = servers.server(&project.id).unwrap();
    assert!(!Arc::ptr_eq(&replaced, &own), "a server made from the backup took the project's place");
    assert_eq!(replaced.database(&project.database_name).unwrap().1, "newer rows of the project");
    assert!(admits(&replaced, &project.database_name, &project.role_name, &new_password).await, "today's password");
    assert_eq!(servers.count(), servers_before, "the previous server is removed");
    let safety = h.app.store.get_restore(&rj.restore.id).await.unwrap().unwrap().safety_backup_id.unwrap();
    let kept = servers.snapshot_of(&safety).expect("the safety snapshot");
    assert_eq!(kept.database(&project.database_name).unwrap().1, "rows after the backup", "what was overwritten");
    // A deleted backup's snapshot goes at the next sweep; a kept one stays.
    h.app.delete_backup(p, &backup.id).await.unwrap();
    let sweep = h.app.sweep().await;
    assert_eq!((sweep.deleted_snapshots, sweep.errors.clone()), (1, vec![]));
    assert!(servers.snapshot_of(&backup.id).is_none(), "the deleted backup's snapshot is gone");
    assert!(servers.snapshot_of(&safety).is_some(), "the safety backup's is kept");

    // Deleting a preview removes its server; deleting the project removes
    // every server, the project's leaving a final snapshot.
    let job = h.app.delete_preview(p, &empty.id).await.unwrap().job;
    h.run(&job.id).await;
    assert_eq!(h.preview(&empty.id).await.state, PreviewState::Deleted);
    assert!(servers.server(&empty.id).is_none());
    let job = h.app.delete_project(p, &project.id).await.unwrap().job;
    h.run(&job.id).await;
    assert_eq!(h.project(&project.id).await.state, ProjectState::Deleted, "{:?}", h.job(&job.id).await.error);
    assert_eq!(h.preview(&clone.id).await.state, PreviewState::Deleted);
    assert_eq!(servers.count(), 0, "every server is removed");
    assert_eq!(servers.final_snapshots(), vec![project.id.clone()], "only the project's leaves a snapshot");

    // The final snapshot, and the deleted project's backups, are kept 30
    // days (the default retention), then go.
    h.clock.advance(chrono::Duration::days(29));
    assert_eq!(h.app.sweep().await.deleted_snapshots, 0);
    assert_eq!(servers.final_snapshots(), vec![project.id.clone()]);
    assert!(servers.snapshot_of(&safety).is_some());
    h.clock.advance(chrono::Duration::days(2));
    assert_eq!(h.app.sweep().await.deleted_snapshots, 2, "the final one and the safety backup's");
    assert!(servers.final_snapshots().is_empty(), "past its retention");
    assert!(servers.snapshot_of(&safety).is_none());
    let safety = h.app.store.get_backup(&safety).await.unwrap().unwrap();
    assert_eq!(safety.state, BackupState::Deleted, "its backup says so");
}

impl Harness {
    async fn ready_project_on_its_server(&self, servers: &FakeServers) -> Project {
        let pj = self.app.create_project(&self.principal, Self::req(json!({ "name": "shop" }))).await.unwrap();
        assert!(pj.project.admin_password_sealed.is_some(), "a dedicated project has an admin password");
        self.run(&pj.job.id).await;
        let project = self.project(&pj.project.id).await;
        assert_eq!(project.state, ProjectState::Ready, "{:?}", self.job(&pj.job.id).await.error);
        assert!(servers.server(&project.id).is_some());
        project
    }
}

pub async fn waits_on_a_slow_server_grow_and_the_job_completes(rigs: &dyn JobRigs) {
    let servers = Arc::new(FakeServers::new());
    let slow = Arc::new(SlowServers::new(servers.clone(), 4, Duration::from_secs(15)));
    let h = dedicated(rigs, slow, &servers).await;
    let pj = h.app.create_project(&h.principal, Harness::req(json!({ "name": "slow" }))).await.unwrap();
    let first = h.app.run_job_message(&super::body(&pj.job.id), "worker-1").await;
    assert_eq!(first, crate::jobs::Disposition::RetryAfter(Duration::from_secs(15)), "the worker is not held");
    let job = h.job(&pj.job.id).await;
    let wait = job.waiting.clone().expect("the job shows its wait");
    assert_eq!((job.state, wait.step.as_str(), wait.checks), (JobState::Running, "create_server", 1));
    h.clock.advance(chrono::Duration::seconds(16));
    let runs = h.run(&pj.job.id).await;
    assert_eq!(runs.waits, growing_waits(4)[1..], "waits grow: 30 s, 60 s, 120 s");
    let job = h.job(&pj.job.id).await;
    assert_eq!((job.state, job.attempt, job.waiting), (JobState::Completed, 1, None));
    let project = h.project(&pj.project.id).await;
    assert_eq!(project.server_host, Some(FakeServers::host_of(&project.id)));

    // A clone waits on its server the same way.
    let req = Harness::req(json!({ "name": "pr-slow", "mode": "clone" }));
    let pv = h.app.create_preview(&h.principal, &project.id, req).await.unwrap();
    let runs = h.run(&pv.job.id).await;
    assert_eq!(runs.waits, growing_waits(4));
    assert_eq!(h.preview(&pv.preview.id).await.state, PreviewState::Ready);
}

pub async fn a_server_still_not_made_past_the_deadline_is_removed_before_the_job_fails(rigs: &dyn JobRigs) {
    let servers = Arc::new(FakeServers::new());
    let never = Arc::new(SlowServers::new(servers.clone(), 1000, Duration::from_secs(15)).removing_after(2));
    let h = dedicated(rigs, never, &servers).await;
    let pj = h.app.create_project(&h.principal, Harness::req(json!({ "name": "never" }))).await.unwrap();
    let runs = h.run(&pj.job.id).await;
    let job = h.job(&pj.job.id).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.starts_with("create_server: ") && error.contains("past the job's deadline of 30 min"), "{error}");
    assert_eq!(servers.count(), 0, "the half-made server is removed");
    assert!(servers.final_snapshots().is_empty(), "a half-made server leaves no snapshot");
    assert!(runs.waits.len() > 3, "removing it waited too: {:?}", runs.waits);
    assert_eq!(h.project(&pj.project.id).await.state, ProjectState::Failed);
}

pub async fn a_server_that_cannot_be_removed_in_time_fails_the_job_saying_so(rigs: &dyn JobRigs) {
    let servers = Arc::new(FakeServers::new());
    let stuck = Arc::new(SlowServers::new(servers.clone(), 10_000, Duration::from_secs(300)));
    let h = dedicated(rigs, stuck, &servers).await;
    let project = h.app.create_project(&h.principal, Harness::req(json!({ "name": "stuck" }))).await.unwrap();
    h.run(&project.job.id).await;
    let job = h.job(&project.job.id).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.contains("past the job's deadline") && error.contains("delete the resource"), "{error}");
}

pub async fn a_server_half_made_by_a_failed_job_is_removed_before_it_fails(rigs: &dyn JobRigs) {
    let quota = "the AWS account's quota of DB instances is reached; raise it (Service Quotas, Amazon RDS) or delete \
                 unused instances, then retry";
    let servers = Arc::new(FakeServers::new());
    let failing = SlowServers::new(servers.clone(), 0, Duration::from_secs(15))
        .failing_make(ProviderError::Permanent(quota.into()))
        .removing_after(1);
    let h = dedicated(rigs, Arc::new(failing), &servers).await;
    let pj = h.app.create_project(&h.principal, Harness::req(json!({ "name": "over-quota" }))).await.unwrap();
    let runs = h.run(&pj.job.id).await;
    let job = h.job(&pj.job.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some(format!("create_server: the project's database server could not be made: {quota}").as_str()),
        "the cause, in words a user can act on"
    );
    assert_eq!(runs.waits.len(), 1, "removing it waited once");
    assert_eq!(servers.count(), 0, "what it made is removed");
    assert_eq!(h.project(&pj.project.id).await.state, ProjectState::Failed);
}

pub async fn a_restore_over_the_project_that_fails_after_its_swap_puts_the_projects_server_back(rigs: &dyn JobRigs) {
    let servers = Arc::new(FakeServers::new());
    let h = dedicated(rigs, servers.clone(), &servers).await;
    let project = h.ready_project_on_its_server(&servers).await;
    let own = servers.server(&project.id).unwrap();
    own.write(&project.database_name, "rows of the backup");
    let backup = h.completed_backup(&project).await;
    own.write(&project.database_name, "rows of today");

    // The swap happens, then its answer is lost: the job fails at swap_server.
    servers.fail_after("swap", ProviderError::Permanent("the RDS API refused the request".into()));
    let req = Harness::req(json!({ "backup_id": backup.id, "mode": "overwrite" }));
    let rj = h.app.create_restore(&h.principal, &project.id, req).await.unwrap();
    h.run(&rj.job.id).await;
    let job = h.job(&rj.job.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.as_deref().unwrap_or_default().starts_with("swap_server: "), "{:?}", job.error);
    let live = servers.server(&project.id).expect("the project has a server");
    assert!(Arc::ptr_eq(&live, &own), "the project's own server is back in its place");
    assert_eq!(live.database(&project.database_name).unwrap().1, "rows of today", "nothing overwritten");
    assert_eq!(servers.count(), 1, "the server made from the backup is removed");
    let after = h.project(&project.id).await;
    assert_eq!(after.server_host, project.server_host, "the connection string is the project's");
    let password = h.password(&after.password_sealed).await;
    assert!(admits(&live, &project.database_name, &project.role_name, &password).await);
}

/// Each operation on servers does its work, then its answer is lost (the
/// worker died between the two): the step runs again, finds what it made,
/// and every job ends as it would have: nothing made twice, nothing lost.
pub async fn every_server_step_whose_answer_is_lost_is_run_again_to_the_same_end(rigs: &dyn JobRigs) {
    let lost = || ProviderError::Retryable("the connection was reset".into());
    let servers = Arc::new(FakeServers::new());
    let h = dedicated(rigs, servers.clone(), &servers).await;
    let p = &h.principal;

    servers.fail_after("make", lost());
    let project = h.ready_project_on_its_server(&servers).await;
    let own = servers.server(&project.id).unwrap();
    own.write(&project.database_name, "rows of the project");

    servers.fail_after("make", lost());
    let clone = h.ready_preview(&project, "clone").await;
    let reset = h.app.reset_preview(p, &clone.id).await.unwrap().job;
    servers.fail_after("swap", lost());
    h.run(&reset.id).await;
    assert_eq!(h.job(&reset.id).await.state, JobState::Completed, "{:?}", h.job(&reset.id).await.error);
    servers.fail_after("remove_spares", lost());
    let again = h.app.reset_preview(p, &clone.id).await.unwrap().job;
    h.run(&again.id).await;
    assert_eq!(h.job(&again.id).await.state, JobState::Completed);
    let preview_server = servers.server(&clone.id).unwrap();
    assert_eq!(preview_server.database(&clone.database_name).unwrap().1, "rows of the project");
    let password = h.password(&clone.password_sealed).await;
    assert!(admits(&preview_server, &clone.database_name, &clone.role_name, &password).await);

    servers.fail_after("snapshot", lost());
    let backup = h.completed_backup(&project).await;
    servers.fail_after("make", lost());
    let req = Harness::req(json!({ "backup_id": backup.id, "mode": "overwrite" }));
    let rj = h.app.create_restore(p, &project.id, req).await.unwrap();
    h.run(&rj.job.id).await;
    assert_eq!(h.job(&rj.job.id).await.state, JobState::Completed, "{:?}", h.job(&rj.job.id).await.error);
    assert_eq!(servers.count(), 2, "the project's server and the preview's, no more");

    servers.fail_after("remove", lost());
    let job = h.app.delete_project(p, &project.id).await.unwrap().job;
    h.run(&job.id).await;
    assert_eq!(h.job(&job.id).await.state, JobState::Completed, "{:?}", h.job(&job.id).await.error);
    assert_eq!(servers.count(), 0);
    assert_eq!(servers.final_snapshots(), vec![project.id.clone()], "one final snapshot");
    assert!(!servers.calls().is_empty());
}
