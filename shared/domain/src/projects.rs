//! Projects: one PostgreSQL database and owner role each, created, rotated and
//! deleted by jobs.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{random_password, App};
use crate::error::{DomainError, DomainResult};
use crate::fields::Name;
use crate::ids;
use crate::jobs::StartedJob;
use crate::model::{ConnectionInfo, Job, JobSpec, Project, ProjectState, Sealed};
use crate::ports::{Admission, Hosting, Page, QuotaKind, ResourceWrite};
use crate::principal::Principal;
use crate::scopes::Scope;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    #[schema(inline)]
    pub name: Name<64>,
    /// Defaults to the provider's region (`local` for capydb-local).
    pub region: Option<String>,
    /// PostgreSQL major version; defaults to the newest the provider offers.
    pub pg_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    #[schema(inline)]
    pub name: Option<Name<64>>,
}

/// `202` answer of a project lifecycle action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectJob {
    pub project: Project,
    pub job: Job,
}

impl Project {
    /// 409 unless the project is ready: "project prj_... is provisioning; <action> once it is ready".
    pub fn require_ready(&self, action: &str) -> DomainResult<()> {
        if self.state != ProjectState::Ready {
            return Err(DomainError::Conflict(format!(
                "project {} is {}; {action} once it is ready",
                self.id,
                self.state.as_str()
            )));
        }
        Ok(())
    }
}

impl App {
    /// Loads a live (not deleted) project the principal may see.
    pub(crate) async fn visible_project(&self, p: &Principal, project_id: &str) -> DomainResult<Project> {
        let project = self
            .store
            .get_project(project_id)
            .await?
            .filter(|pr| pr.state != ProjectState::Deleted)
            .ok_or_else(|| DomainError::not_found("project", project_id))?;
        p.check_project(&project.organization_id, Some(&project.id), "project", project_id)?;
        Ok(project)
    }

    pub async fn create_project(&self, p: &Principal, req: CreateProject) -> DomainResult<ProjectJob> {
        p.require(Scope::ProjectsWrite)?;
        if p.project_id.is_some() {
            return Err(DomainError::Forbidden("a project-scoped credential cannot create projects".into()));
        }
        p.require_admin("create a project")?;
        let name = req.name.into_inner();
        let region = self.endpoint.region();
        if let Some(r) = &req.region {
            if *r != region {
                return Err(DomainError::invalid(format!(
                    "region {r:?} is not available; available regions: {region}"
                )));
            }
        }
        let versions = self.endpoint.pg_versions();
        let pg_version = match req.pg_version {
            Some(v) if versions.contains(&v) => v,
            Some(v) => {
                return Err(DomainError::invalid(format!(
                    "pg_version {v:?} is not available; available versions: {}",
                    versions.join(", ")
                )))
            }
            None => versions
                .last()
                .cloned()
                .ok_or_else(|| DomainError::Unavailable("the database provider offers no PostgreSQL version".into()))?,
        };
        let now = self.now();
        let id = ids::new_id(ids::PROJECT);
        let project = Project {
            database_name: id.clone(),
            role_name: format!("{id}_owner"),
            id,
            organization_id: p.org_id().to_string(),
            name,
            region,
            pg_version,
            state: ProjectState::Provisioning,
            created_at: now,
            updated_at: now,
            password_sealed: self.secrets.seal(&random_password()).await?,
            server_host: None,
            admin_password_sealed: match self.settings.hosting {
                Hosting::Shared => None,
                Hosting::Dedicated => Some(self.secrets.seal(&random_password()).await?),
            },
        };
        let job = self.new_job(JobSpec::Provision, &project);
        let admission = Admission {
            quota: Some(self.settings.quotas.claim(QuotaKind::Projects, &project.organization_id)),
            ..Admission::default()
        };
        let job = self.start_job(job, ResourceWrite::Project(project.clone()), admission).await?;
        Ok(ProjectJob { project, job: job.job })
    }

    pub async fn get_project(&self, p: &Principal, project_id: &str) -> DomainResult<Project> {
        p.require(Scope::ProjectsRead)?;
        self.visible_project(p, project_id).await
    }

    pub async fn list_projects(&self, p: &Principal, page: &Page) -> DomainResult<Vec<Project>> {
        p.require(Scope::ProjectsRead)?;
        match &p.project_id {
            Some(only) => {
                let mine = self.store.get_project(only).await?.filter(|pr| pr.state != ProjectState::Deleted);
                Ok(mine.into_iter().filter(|pr| page.before.as_deref().is_none_or(|b| pr.id.as_str() < b)).collect())
            }
            None => self.store.list_projects(p.org_id(), page).await,
        }
    }

    pub async fn update_project(&self, p: &Principal, project_id: &str, req: UpdateProject) -> DomainResult<Project> {
        p.require(Scope::ProjectsWrite)?;
        let mut project = self.visible_project(p, project_id).await?;
        if project.state == ProjectState::Deleting {
            return Err(DomainError::Conflict(format!("project {} is being deleted", project.id)));
        }
        if let Some(name) = req.name {
            project.name = name.into_inner();
            project.updated_at = self.now();
            self.store.update_project(&project).await?;
        }
        Ok(project)
    }

    pub async fn delete_project(&self, p: &Principal, project_id: &str) -> DomainResult<ProjectJob> {
        p.require(Scope::ProjectsWrite)?;
        p.require_admin("delete a project")?;
        let mut project = self.visible_project(p, project_id).await?;
        // Its previews and backups go with it: a job inside it (a backup, a
        // preview's) must finish first, and none can start once this did.
        let admission = Admission { project_unheld: Some(project.id.clone()), ..Admission::default() };
        project.state = ProjectState::Deleting;
        project.updated_at = self.now();
        let job = self.new_job(JobSpec::DeleteProject { dropped_previews: Vec::new() }, &project);
        let StartedJob { job } = self.start_job(job, ResourceWrite::Project(project.clone()), admission).await?;
        Ok(ProjectJob { project, job })
    }

    pub async fn project_connections(&self, p: &Principal, project_id: &str) -> DomainResult<Vec<ConnectionInfo>> {
        p.require(Scope::CredentialsRead)?;
        let project = self.visible_project(p, project_id).await?;
        project.require_ready("connections are available")?;
        self.owner_connection(
            project.server_host.as_deref(),
            &project.database_name,
            &project.role_name,
            &project.password_sealed,
        )
        .await
    }

    pub async fn rotate_credentials(&self, p: &Principal, project_id: &str) -> DomainResult<ProjectJob> {
        p.require(Scope::ProjectsWrite)?;
        let project = self.visible_project(p, project_id).await?;
        project.require_ready("credentials can be rotated")?;
        let sealed = self.secrets.seal(&random_password()).await?;
        let job = self.new_job(JobSpec::RotateCredentials { new_password: Sealed::new(sealed) }, &project);
        let StartedJob { job } = self.start_job(job, ResourceWrite::Nothing, Admission::default()).await?;
        Ok(ProjectJob { project, job })
    }

    pub(crate) fn new_job(&self, spec: JobSpec, project: &Project) -> Job {
        self.queued_job(spec, (&project.organization_id, &project.id))
    }
}
