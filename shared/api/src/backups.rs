//! `/v1/backups/...`, `/v1/restores/...`, `/v1/imports/...` and a project's
//! `/backups`, `/restores`, `/imports`.
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::bodies::Json;
use capydb_domain::backups::{BackupJob, CreateBackup, CreateImport, CreateRestore, ImportJob, RestoreJob};
use capydb_domain::model::Backup;
use capydb_domain::App;

use crate::bodies::{BackupBody, ImportBody, RestoreBody};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth, Pagination};
use crate::list::ListResponse;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/projects/{project_id}/backups", get(list_backups).post(create_backup))
        .route("/v1/backups/{backup_id}", get(get_backup).delete(delete_backup))
        .route("/v1/projects/{project_id}/restores", post(create_restore))
        .route("/v1/restores/{restore_id}", get(get_restore))
        .route("/v1/projects/{project_id}/imports", post(create_import))
        .route("/v1/imports/{import_id}", get(get_import))
}

/// Backups of the project (manual and automatic safety backups), newest first.
#[utoipa::path(get, path = "/v1/projects/{project_id}/backups", tag = "backups", operation_id = "listBackups",
    params(("project_id" = String, Path, description = "`prj_...`"), crate::openapi::PageParams),
    responses((status = 200, body = [Backup])))]
pub async fn list_backups(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<Backup>> {
    let backups = app.list_backups(&p, &project_id, &pg.overfetch()).await?;
    Ok(ListResponse::new(backups, pg.page.limit, &uri))
}

/// Takes a backup (a `create_backup` job): a `pg_dump` custom-format artifact
/// whose size and SHA-256 are recorded.
#[utoipa::path(post, path = "/v1/projects/{project_id}/backups", tag = "backups", operation_id = "createBackup",
    params(("project_id" = String, Path, description = "`prj_...`")),
    request_body = CreateBackup,
    responses((status = 202, body = BackupJob)))]
pub async fn create_backup(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateBackup>,
) -> ApiResult<(StatusCode, Json<BackupJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.create_backup(&p, &project_id, req).await?)))
}

#[utoipa::path(get, path = "/v1/backups/{backup_id}", tag = "backups", operation_id = "getBackup",
    params(("backup_id" = String, Path, description = "`bkp_...`")),
    responses((status = 200, body = BackupBody)))]
pub async fn get_backup(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(backup_id): ApiPath<String>,
) -> ApiResult<Json<BackupBody>> {
    Ok(Json(BackupBody { backup: app.get_backup(&p, &backup_id).await? }))
}

/// Deletes the backup's artifact; answers the backup, now `deleted`.
#[utoipa::path(delete, path = "/v1/backups/{backup_id}", tag = "backups", operation_id = "deleteBackup",
    params(("backup_id" = String, Path, description = "`bkp_...`")),
    responses((status = 200, body = BackupBody), (status = 409, description = "The backup is still being created", body = crate::error::ErrorBody)))]
pub async fn delete_backup(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(backup_id): ApiPath<String>,
) -> ApiResult<Json<BackupBody>> {
    Ok(Json(BackupBody { backup: app.delete_backup(&p, &backup_id).await? }))
}

/// Restores a completed backup (a `restore` job): `overwrite` replaces the
/// project's data in place, keeping its connection string, after an automatic
/// safety backup; `preview` restores into a new preview database.
#[utoipa::path(post, path = "/v1/projects/{project_id}/restores", tag = "backups", operation_id = "createRestore",
    params(("project_id" = String, Path, description = "`prj_...`")),
    request_body = CreateRestore,
    responses((status = 202, body = RestoreJob)))]
pub async fn create_restore(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateRestore>,
) -> ApiResult<(StatusCode, Json<RestoreJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.create_restore(&p, &project_id, req).await?)))
}

#[utoipa::path(get, path = "/v1/restores/{restore_id}", tag = "backups", operation_id = "getRestore",
    params(("restore_id" = String, Path, description = "`rst_...`")),
    responses((status = 200, body = RestoreBody)))]
pub async fn get_restore(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(restore_id): ApiPath<String>,
) -> ApiResult<Json<RestoreBody>> {
    Ok(Json(RestoreBody { restore: app.get_restore(&p, &restore_id).await? }))
}

/// Copies a reachable PostgreSQL database into the project (an `import` job),
/// replacing its data after an automatic safety backup. The source URL's
/// password is never stored in clear, logged or echoed.
#[utoipa::path(post, path = "/v1/projects/{project_id}/imports", tag = "backups", operation_id = "createImport",
    params(("project_id" = String, Path, description = "`prj_...`")),
    request_body = CreateImport,
    responses((status = 202, body = ImportJob)))]
pub async fn create_import(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateImport>,
) -> ApiResult<(StatusCode, Json<ImportJob>)> {
    Ok((StatusCode::ACCEPTED, Json(app.create_import(&p, &project_id, req).await?)))
}

#[utoipa::path(get, path = "/v1/imports/{import_id}", tag = "backups", operation_id = "getImport",
    params(("import_id" = String, Path, description = "`imp_...`")),
    responses((status = 200, body = ImportBody)))]
pub async fn get_import(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(import_id): ApiPath<String>,
) -> ApiResult<Json<ImportBody>> {
    Ok(Json(ImportBody { import: app.get_import(&p, &import_id).await? }))
}
