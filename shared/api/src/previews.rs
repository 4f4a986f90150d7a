//! `/v1/preview-databases/...` and a project's `/preview-databases`.
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::bodies::Json;
use capydb_domain::model::{ConnectionInfo, Preview};
use capydb_domain::previews::{CreatePreview, PreviewJob, UpdatePreview};
use capydb_domain::App;

use crate::bodies::PreviewBody;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth, Pagination};
use crate::list::ListResponse;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/projects/{project_id}/preview-databases", get(list_previews).post(create_preview))
        .route("/v1/preview-databases/{preview_id}", get(get_preview).patch(update_preview).delete(delete_preview))
        .route("/v1/preview-databases/{preview_id}/reset", post(reset_preview))
        .route("/v1/preview-databases/{preview_id}/connections", get(preview_connections))
}

/// Live previews of the project, newest first.
#[utoipa::path(get, path = "/v1/projects/{project_id}/preview-databases", tag = "previews", operation_id = "listPreviews",
    params(("project_id" = String, Path, description = "`prj_...`"), crate::openapi::PageParams),
    responses((status = 200, body = [Preview])))]
pub async fn list_previews(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<Preview>> {
    let previews = app.list_previews(&p, &project_id, &pg.overfetch()).await?;
    Ok(ListResponse::new(previews, pg.page.limit, &uri))
}

/// Creates a preview database (a `create_preview` job): a clone of the
/// project's data and schema at this moment, or an empty database, with its
/// own role and password, deleted once `ttl_hours` pass.
#[utoipa::path(post, path = "/v1/projects/{project_id}/preview-databases", tag = "previews", operation_id = "createPreview",
    params(("project_id" = String, Path, description = "`prj_...`")),
    request_body = CreatePreview,
    responses((status = 202, body = PreviewJob)))]
pub async fn create_preview(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreatePreview>,
) -> ApiResult<(StatusCode, Json<PreviewJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.create_preview(&p, &project_id, req).await?)))
}

#[utoipa::path(get, path = "/v1/preview-databases/{preview_id}", tag = "previews", operation_id = "getPreview",
    params(("preview_id" = String, Path, description = "`pvw_...`")),
    responses((status = 200, body = PreviewBody)))]
pub async fn get_preview(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(preview_id): ApiPath<String>,
) -> ApiResult<Json<PreviewBody>> {
    Ok(Json(PreviewBody { preview: app.get_preview(&p, &preview_id).await? }))
}

/// Sets a new TTL counted from now (extends or shortens it).
#[utoipa::path(patch, path = "/v1/preview-databases/{preview_id}", tag = "previews", operation_id = "updatePreview",
    params(("preview_id" = String, Path, description = "`pvw_...`")),
    request_body = UpdatePreview,
    responses((status = 200, body = PreviewBody)))]
pub async fn update_preview(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(preview_id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdatePreview>,
) -> ApiResult<Json<PreviewBody>> {
    Ok(Json(PreviewBody { preview: app.update_preview(&p, &preview_id, req).await? }))
}

/// Replaces the contents with a fresh clone of the project (a `reset_preview`
/// job); the connection string stays the same and the TTL restarts.
#[utoipa::path(post, path = "/v1/preview-databases/{preview_id}/reset", tag = "previews", operation_id = "resetPreview",
    params(("preview_id" = String, Path, description = "`pvw_...`")),
    responses((status = 202, body = PreviewJob)))]
pub async fn reset_preview(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(preview_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<PreviewJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.reset_preview(&p, &preview_id).await?)))
}

/// Deletes the preview's database and role (a `delete_preview` job).
#[utoipa::path(delete, path = "/v1/preview-databases/{preview_id}", tag = "previews", operation_id = "deletePreview",
    params(("preview_id" = String, Path, description = "`pvw_...`")),
    responses((status = 202, body = PreviewJob)))]
pub async fn delete_preview(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(preview_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<PreviewJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.delete_preview(&p, &preview_id).await?)))
}

/// Connection details of the preview's own role. `409` until it is ready.
#[utoipa::path(get, path = "/v1/preview-databases/{preview_id}/connections", tag = "previews", operation_id = "getPreviewConnections",
    params(("preview_id" = String, Path, description = "`pvw_...`")),
    responses((status = 200, body = [ConnectionInfo])))]
pub async fn preview_connections(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(preview_id): ApiPath<String>,
) -> ApiResult<Json<Vec<ConnectionInfo>>> {
    Ok(Json(app.preview_connections(&p, &preview_id).await?))
}
