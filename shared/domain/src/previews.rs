//! Preview databases: per-pull-request copies (or empty databases) of a
//! project with their own role and password and a TTL.
use chrono::Duration as ChronoDuration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{random_password, App};
use crate::error::{DomainError, DomainResult};
use crate::fields::{PreviewName, TtlHours};
use crate::ids;
use crate::ids::PreviewId;
use crate::jobs::StartedJob;
use crate::model::{ConnectionInfo, EventType, Job, JobSpec, Preview, PreviewMode, PreviewState, Project};
use crate::ports::{Hosting, Page, QuotaKind, ResourceWrite};
use crate::principal::Principal;
use crate::scopes::Scope;

/// When a request gives no `ttl_hours`.
pub const DEFAULT_TTL_HOURS: u32 = 72;

impl PreviewState {
    /// The states whose previews the sweeper deletes once `expires_at` has
    /// passed: not one a job is working on, not one already gone. Every
    /// store lists expired previews by this rule (`Preview::is_expired`).
    pub const EXPIRING: [PreviewState; 2] = [PreviewState::Ready, PreviewState::Failed];

    pub fn can_expire(self) -> bool {
        Self::EXPIRING.contains(&self)
    }
}

impl Preview {
    /// In an expiring state with `expires_at <= now`: the sweeper deletes it.
    pub fn is_expired(&self, now: crate::model::Timestamp) -> bool {
        self.state.can_expire() && self.expires_at <= now
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePreview {
    /// Unique among the project's live previews, e.g. `pr-42`.
    #[schema(inline)]
    pub name: PreviewName,
    pub mode: PreviewMode,
    /// Hours until the sweeper deletes it (default 72).
    #[schema(inline)]
    pub ttl_hours: Option<TtlHours>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePreview {
    /// New TTL in hours, counted from now.
    #[schema(inline)]
    pub ttl_hours: TtlHours,
}

/// `202` answer of a preview lifecycle action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewJob {
    pub preview: Preview,
    pub job: Job,
}

/// The duration of a stored TTL (checked when it was set).
pub(crate) fn ttl_duration(ttl: TtlHours) -> ChronoDuration {
    ChronoDuration::hours(i64::from(ttl.get()))
}

impl App {
    /// Loads a live preview the principal may see (its project's rules apply).
    async fn visible_preview(&self, p: &Principal, preview_id: &str) -> DomainResult<Preview> {
        let preview = self
            .store
            .get_preview(preview_id)
            .await?
            .filter(|pv| pv.state != PreviewState::Deleted)
            .ok_or_else(|| DomainError::not_found("preview", preview_id))?;
        p.check_project(&preview.organization_id, Some(&preview.project_id), "preview", preview_id)?;
        Ok(preview)
    }

    fn preview_job(&self, spec: fn(PreviewId) -> JobSpec, preview: &Preview) -> Job {
        let spec = spec(PreviewId::from(preview.id.as_str()));
        self.queued_job(spec, (&preview.organization_id, &preview.project_id))
    }

    /// A new preview record (state `creating`) with its own role and password.
    pub(crate) async fn new_preview(
        &self,
        project: &Project,
        name: PreviewName,
        mode: PreviewMode,
        ttl_hours: Option<TtlHours>,
    ) -> DomainResult<Preview> {
        let ttl_hours = match ttl_hours {
            Some(t) => t,
            None => TtlHours::parse("ttl_hours", DEFAULT_TTL_HOURS)?,
        };
        let ttl = ttl_duration(ttl_hours);
        let name = name.into_inner();
        let ttl_hours = ttl_hours.get();
        let now = self.now();
        let id = ids::new_id(ids::PREVIEW);
        // A clone on a server of its own holds the project's database and
        // role under their names; its role gets the preview's password.
        let (database_name, role_name) = match (self.settings.hosting, mode) {
            (Hosting::Dedicated, PreviewMode::Clone) => (project.database_name.clone(), project.role_name.clone()),
            _ => (id.clone(), format!("{id}_owner")),
        };
        Ok(Preview {
            database_name,
            role_name,
            id,
            organization_id: project.organization_id.clone(),
            project_id: project.id.clone(),
            name,
            mode,
            state: PreviewState::Creating,
            ttl_hours,
            expires_at: now + ttl,
            created_at: now,
            updated_at: now,
            password_sealed: self.secrets.seal(&random_password()).await?,
            server_host: None,
        })
    }

    pub async fn create_preview(
        &self,
        p: &Principal,
        project_id: &str,
        req: CreatePreview,
    ) -> DomainResult<PreviewJob> {
        p.require(Scope::ProjectsWrite)?;
        let project = self.visible_project(p, project_id).await?;
        // Input errors (400) come before state errors (409).
        let preview = self.new_preview(&project, req.name, req.mode, req.ttl_hours).await?;
        project.require_ready("previews can be created")?;
        let job = self.preview_job(|preview| JobSpec::CreatePreview { preview }, &preview);
        let admission = self.inside_project(&project.id, Some(QuotaKind::Previews));
        let StartedJob { job } = self.start_job(job, ResourceWrite::Preview(preview.clone()), admission).await?;
        Ok(PreviewJob { preview, job })
    }

    pub async fn list_previews(&self, p: &Principal, project_id: &str, page: &Page) -> DomainResult<Vec<Preview>> {
        p.require(Scope::ProjectsRead)?;
        self.visible_project(p, project_id).await?;
        self.store.list_previews(project_id, page).await
    }

    pub async fn get_preview(&self, p: &Principal, preview_id: &str) -> DomainResult<Preview> {
        p.require(Scope::ProjectsRead)?;
        self.visible_preview(p, preview_id).await
    }

    /// Extends (or shortens) the TTL, counted from now.
    pub async fn update_preview(&self, p: &Principal, preview_id: &str, req: UpdatePreview) -> DomainResult<Preview> {
        p.require(Scope::ProjectsWrite)?;
        let ttl = ttl_duration(req.ttl_hours);
        let mut preview = self.visible_preview(p, preview_id).await?;
        if preview.state == PreviewState::Deleting {
            return Err(DomainError::Conflict(format!("preview {} is being deleted", preview.id)));
        }
        let now = self.now();
        preview.ttl_hours = req.ttl_hours.get();
        preview.expires_at = now + ttl;
        preview.updated_at = now;
        self.store.update_preview(&preview).await?;
        Ok(preview)
    }

    /// Replaces the contents with a fresh clone of the project (or empties an
    /// empty-mode preview); same connection string; the TTL restarts.
    pub async fn reset_preview(&self, p: &Principal, preview_id: &str) -> DomainResult<PreviewJob> {
        p.require(Scope::ProjectsWrite)?;
        let mut preview = self.visible_preview(p, preview_id).await?;
        if !matches!(preview.state, PreviewState::Ready | PreviewState::Failed) {
            return Err(DomainError::Conflict(format!(
                "preview {} is {}; it can be reset once it is ready",
                preview.id,
                preview.state.as_str()
            )));
        }
        let project = self.visible_project(p, &preview.project_id).await?;
        project.require_ready("previews can be reset")?;
        let now = self.now();
        preview.state = PreviewState::Resetting;
        preview.expires_at = now + ttl_duration(TtlHours::parse("ttl_hours", preview.ttl_hours)?);
        preview.updated_at = now;
        let job = self.preview_job(|preview| JobSpec::ResetPreview { preview }, &preview);
        let admission = self.inside_project(&preview.project_id, None);
        let StartedJob { job } = self.start_job(job, ResourceWrite::Preview(preview.clone()), admission).await?;
        Ok(PreviewJob { preview, job })
    }

    pub async fn delete_preview(&self, p: &Principal, preview_id: &str) -> DomainResult<PreviewJob> {
        p.require(Scope::ProjectsWrite)?;
        let preview = self.visible_preview(p, preview_id).await?;
        self.start_preview_deletion(preview, &[]).await
    }

    async fn start_preview_deletion(
        &self,
        mut preview: Preview,
        events: &[crate::model::Event],
    ) -> DomainResult<PreviewJob> {
        preview.state = PreviewState::Deleting;
        preview.updated_at = self.now();
        let job = self.preview_job(|preview| JobSpec::DeletePreview { preview }, &preview);
        let admission = self.inside_project(&preview.project_id, None);
        let StartedJob { job } =
            self.start_job_with_events(job, ResourceWrite::Preview(preview.clone()), events, admission).await?;
        Ok(PreviewJob { preview, job })
    }

    pub async fn preview_connections(&self, p: &Principal, preview_id: &str) -> DomainResult<Vec<ConnectionInfo>> {
        p.require(Scope::CredentialsRead)?;
        let preview = self.visible_preview(p, preview_id).await?;
        if preview.state != PreviewState::Ready {
            return Err(DomainError::Conflict(format!(
                "preview {} is {}; connections are available once it is ready",
                preview.id,
                preview.state.as_str()
            )));
        }
        self.owner_connection(
            preview.server_host.as_deref(),
            &preview.database_name,
            &preview.role_name,
            &preview.password_sealed,
        )
        .await
    }

    /// The sweeper's part for previews: every expired one gets a
    /// `preview.expired` event and a delete job, in one transaction. A preview
    /// whose TTL was extended is no longer expired and is left alone; one
    /// with a job running is retried at the next sweep.
    pub async fn expire_previews(&self) -> DomainResult<usize> {
        let now = self.now();
        let mut started = 0;
        for preview in self.store.list_expired_previews(now, 100).await? {
            let expired = crate::model::Event {
                id: ids::new_id(ids::EVENT),
                kind: EventType::PreviewExpired,
                organization_id: preview.organization_id.clone(),
                project_id: Some(preview.project_id.clone()),
                created_at: now,
                data: serde_json::json!({ "preview": preview }),
                published_at: None,
            };
            match self.start_preview_deletion(preview, &[expired]).await {
                Ok(pj) => {
                    tracing::info!(preview_id = %pj.preview.id, job_id = %pj.job.id, "preview expired; deleting it");
                    started += 1;
                }
                Err(DomainError::Conflict(m)) => tracing::info!(reason = %m, "expired preview is busy; next sweep"),
                Err(e) => return Err(e),
            }
        }
        Ok(started)
    }
}
