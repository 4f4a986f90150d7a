//! `/v1/projects...`: projects, their connections, credential rotation and jobs.
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::bodies::Json;
use capydb_domain::model::{ConnectionInfo, Job, Project};
use capydb_domain::projects::{CreateProject, ProjectJob, UpdateProject};
use capydb_domain::App;

use crate::bodies::ProjectBody;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth, Pagination};
use crate::list::ListResponse;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/projects/{project_id}", get(get_project).patch(update_project).delete(delete_project))
        .route("/v1/projects/{project_id}/connections", get(project_connections))
        .route("/v1/projects/{project_id}/credentials/rotate", post(rotate_credentials))
        .route("/v1/projects/{project_id}/jobs", get(list_project_jobs))
}

/// Projects of the organization, newest first. A project-scoped key sees its one project.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", operation_id = "listProjects",
    params(crate::openapi::PageParams),
    responses((status = 200, body = [Project])))]
pub async fn list_projects(
    State(app): State<App>,
    Auth(p): Auth,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<Project>> {
    let projects = app.list_projects(&p, &pg.overfetch()).await?;
    Ok(ListResponse::new(projects, pg.page.limit, &uri))
}

/// Creates a project: answers at once with the project (`provisioning`) and its
/// `provision` job; the job completes once a real connection with the issued
/// credentials succeeded.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", operation_id = "createProject",
    request_body = CreateProject,
    responses((status = 202, body = ProjectJob)))]
pub async fn create_project(
    State(app): State<App>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<ProjectJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.create_project(&p, req).await?)))
}

#[utoipa::path(get, path = "/v1/projects/{project_id}", tag = "projects", operation_id = "getProject",
    params(("project_id" = String, Path, description = "`prj_...`")),
    responses((status = 200, body = ProjectBody)))]
pub async fn get_project(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
) -> ApiResult<Json<ProjectBody>> {
    Ok(Json(ProjectBody { project: app.get_project(&p, &project_id).await? }))
}

#[utoipa::path(patch, path = "/v1/projects/{project_id}", tag = "projects", operation_id = "updateProject",
    params(("project_id" = String, Path, description = "`prj_...`")),
    request_body = UpdateProject,
    responses((status = 200, body = ProjectBody)))]
pub async fn update_project(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateProject>,
) -> ApiResult<Json<ProjectBody>> {
    Ok(Json(ProjectBody { project: app.update_project(&p, &project_id, req).await? }))
}

/// Deletes the project's database and role (a `delete_project` job).
#[utoipa::path(delete, path = "/v1/projects/{project_id}", tag = "projects", operation_id = "deleteProject",
    params(("project_id" = String, Path, description = "`prj_...`")),
    responses((status = 202, body = ProjectJob)))]
pub async fn delete_project(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<ProjectJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.delete_project(&p, &project_id).await?)))
}

/// Connection details with the password. `409` until the project is ready.
#[utoipa::path(get, path = "/v1/projects/{project_id}/connections", tag = "projects", operation_id = "getProjectConnections",
    params(("project_id" = String, Path, description = "`prj_...`")),
    responses((status = 200, body = [ConnectionInfo])))]
pub async fn project_connections(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
) -> ApiResult<Json<Vec<ConnectionInfo>>> {
    Ok(Json(app.project_connections(&p, &project_id).await?))
}

/// Gives the owner role a new password (a `rotate_credentials` job). Once the
/// job completes the old password no longer connects.
#[utoipa::path(post, path = "/v1/projects/{project_id}/credentials/rotate", tag = "projects", operation_id = "rotateProjectCredentials",
    params(("project_id" = String, Path, description = "`prj_...`")),
    responses((status = 202, body = ProjectJob)))]
pub async fn rotate_credentials(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<ProjectJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.rotate_credentials(&p, &project_id).await?)))
}

/// Jobs of the project, newest first.
#[utoipa::path(get, path = "/v1/projects/{project_id}/jobs", tag = "jobs", operation_id = "listProjectJobs",
    params(("project_id" = String, Path, description = "`prj_...`"), crate::openapi::PageParams),
    responses((status = 200, body = [Job])))]
pub async fn list_project_jobs(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<Job>> {
    let jobs = app.list_project_jobs(&p, &project_id, &pg.overfetch()).await?;
    Ok(ListResponse::new(jobs, pg.page.limit, &uri))
}
