//! The sweep: the periodic catch-up of every shape (`capydb-local`'s sweeper
//! loop, the `sweeper` function every minute).
use serde::Serialize;

use crate::app::{add, App};
use crate::error::{DomainError, DomainResult};
use crate::model::{BackupState, ProjectState};

/// What one sweep did, and the errors of the parts that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Expired previews whose deletion started.
    pub expired_previews: usize,
    /// Jobs that were not moving and got a fresh queue message.
    pub redriven_jobs: usize,
    /// Events written but not yet published, published now.
    pub republished_events: usize,
    /// Webhook deliveries due for a retry, queued.
    pub webhook_retries: usize,
    /// Expired `Idempotency-Key` records and device logins deleted (the
    /// SQLite store; DynamoDB's TTL does this deployed).
    pub expired_records: usize,
    /// Snapshots no longer kept, deleted (a dedicated deployment's).
    pub deleted_snapshots: usize,
    /// `<part>: <error>` of each part that failed.
    pub errors: Vec<String>,
}

impl SweepReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl App {
    /// Deletes the snapshots a dedicated deployment no longer keeps: a
    /// backup's once the backup is deleted or failed, a deleted project's
    /// final one, and its backups', once `final_snapshot_retention` has
    /// passed since they were taken (never, when it is zero). A snapshot whose backup or project this store does not know
    /// is left alone: it may be another stack's.
    pub async fn prune_snapshots(&self) -> DomainResult<usize> {
        let Some(servers) = &self.snapshots else {
            return Ok(0);
        };
        let unavailable = |e: crate::ports::ProviderError| DomainError::Unavailable(e.to_string());
        let retention = self.settings.final_snapshot_retention;
        let now = self.now();
        // Past the retention, measured from when it was taken.
        let expired = |snapshot: &crate::ports::ServerSnapshot| {
            !retention.is_zero() && snapshot.created_at.is_some_and(|t| add(t, retention) <= now)
        };
        let mut deleted = 0;
        for snapshot in servers.snapshots().await.map_err(unavailable)? {
            let mut gone_backup = None;
            let gone = if let Some(id) = &snapshot.backup_id {
                match self.store.get_backup(id).await? {
                    Some(b) if matches!(b.state, BackupState::Deleted | BackupState::Failed) => true,
                    // A deleted project's backups follow its final snapshot's retention.
                    Some(b) if expired(&snapshot) => {
                        let project = self.store.get_project(&b.project_id).await?;
                        let over = project.is_some_and(|p| p.state == ProjectState::Deleted);
                        if over {
                            gone_backup = Some(b);
                        }
                        over
                    }
                    _ => false,
                }
            } else if let Some(id) = &snapshot.final_of {
                let project = self.store.get_project(id).await?;
                expired(&snapshot) && project.is_some_and(|p| p.state == ProjectState::Deleted)
            } else {
                false
            };
            if !gone {
                continue;
            }
            // One that cannot go now (still being taken) waits for the next sweep.
            if let Err(e) = servers.delete_snapshot(&snapshot.id).await {
                tracing::warn!(snapshot = %snapshot.id, error = %e, "could not delete a snapshot no longer kept");
                continue;
            }
            if let Some(mut backup) = gone_backup {
                backup.state = BackupState::Deleted;
                self.store.put_backup(&backup).await?;
            }
            tracing::info!(snapshot = %snapshot.id, "deleted a snapshot no longer kept");
            deleted += 1;
        }
        Ok(deleted)
    }

    /// One sweep: expired previews, stuck jobs, unpublished events, due
    /// webhook retries. Each part runs even if another fails; the report
    /// says which did.
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let mut note = |what: &str, r: DomainResult<usize>| match r {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(part = what, error = %e, "sweep part failed");
                report.errors.push(format!("{what}: {e}"));
                0
            }
        };
        let expired_previews = note("expire previews", self.expire_previews().await);
        let redriven_jobs = note("re-drive stuck jobs", self.redrive_stuck_jobs(false).await);
        let republished_events = note("republish events", self.republish_events().await);
        let webhook_retries = note("send due webhook retries", self.send_due_deliveries().await);
        let now = self.now();
        let expired_keys =
            note("delete expired idempotency records", self.store.sweep_idempotent(now).await.map(|n| n as usize));
        let expired_logins =
            note("delete expired device logins", self.logins.sweep_device_logins(now).await.map(|n| n as usize));
        report.expired_previews = expired_previews;
        report.redriven_jobs = redriven_jobs;
        report.republished_events = republished_events;
        report.webhook_retries = webhook_retries;
        report.expired_records = expired_keys + expired_logins;
        report.deleted_snapshots = note("delete snapshots no longer kept", self.prune_snapshots().await);
        let done = expired_previews + redriven_jobs + republished_events + webhook_retries;
        if done + report.expired_records + report.deleted_snapshots > 0 {
            tracing::info!(
                expired_previews,
                redriven_jobs,
                republished_events,
                webhook_retries,
                expired_records = report.expired_records,
                deleted_snapshots = report.deleted_snapshots,
                failed_parts = report.errors.len(),
                "sweep done"
            );
        } else {
            tracing::debug!(failed_parts = report.errors.len(), "sweep done; nothing to do");
        }
        report
    }
}
