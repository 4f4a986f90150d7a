//! `/v1/organizations...`: the caller's organization and its API keys.
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::bodies::Json;
use capydb_domain::api_keys::{CreateApiKey, CreatedApiKey};
use capydb_domain::model::{ApiKey, Organization};
use capydb_domain::organizations::UpdateOrganization;
use capydb_domain::App;

use crate::bodies::{ApiKeyBody, OrganizationBody};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth, Pagination};
use crate::list::ListResponse;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/organizations", get(list_organizations))
        .route("/v1/organizations/{org_id}", get(get_organization).patch(update_organization))
        .route("/v1/organizations/{org_id}/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/organizations/{org_id}/api-keys/{key_id}", get(get_api_key).delete(revoke_api_key))
}

/// The organizations this credential acts in (exactly one).
#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", operation_id = "listOrganizations",
    params(crate::openapi::PageParams),
    responses((status = 200, body = [Organization])))]
pub async fn list_organizations(
    State(app): State<App>,
    Auth(p): Auth,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<Organization>> {
    let orgs = app.list_organizations(&p).await?;
    let orgs = orgs.into_iter().filter(|o| pg.page.before.as_deref().is_none_or(|b| o.id.as_str() < b)).collect();
    Ok(ListResponse::new(orgs, pg.page.limit, &uri))
}

#[utoipa::path(get, path = "/v1/organizations/{org_id}", tag = "organizations", operation_id = "getOrganization",
    params(("org_id" = String, Path, description = "`org_...`")),
    responses((status = 200, body = OrganizationBody)))]
pub async fn get_organization(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(org_id): ApiPath<String>,
) -> ApiResult<Json<OrganizationBody>> {
    let organization = app.get_organization(&p, &org_id).await?;
    Ok(Json(OrganizationBody { organization }))
}

#[utoipa::path(patch, path = "/v1/organizations/{org_id}", tag = "organizations", operation_id = "updateOrganization",
    params(("org_id" = String, Path, description = "`org_...`")),
    request_body = UpdateOrganization,
    responses((status = 200, body = OrganizationBody)))]
pub async fn update_organization(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(org_id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateOrganization>,
) -> ApiResult<Json<OrganizationBody>> {
    let organization = app.update_organization(&p, &org_id, req).await?;
    Ok(Json(OrganizationBody { organization }))
}

/// API keys of the organization, newest first. No secrets: prefix and last four characters only.
#[utoipa::path(get, path = "/v1/organizations/{org_id}/api-keys", tag = "api-keys", operation_id = "listApiKeys",
    params(("org_id" = String, Path, description = "`org_...`"), crate::openapi::PageParams),
    responses((status = 200, body = [ApiKey])))]
pub async fn list_api_keys(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(org_id): ApiPath<String>,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<ApiKey>> {
    let keys = app.list_api_keys(&p, &org_id, &pg.overfetch()).await?;
    Ok(ListResponse::new(keys, pg.page.limit, &uri))
}

/// Creates a key. The plaintext is in this response only; only its SHA-256 is stored.
#[utoipa::path(post, path = "/v1/organizations/{org_id}/api-keys", tag = "api-keys", operation_id = "createApiKey",
    params(("org_id" = String, Path, description = "`org_...`")),
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey)))]
pub async fn create_api_key(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(org_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let created = app.create_api_key(&p, &org_id, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/organizations/{org_id}/api-keys/{key_id}", tag = "api-keys", operation_id = "getApiKey",
    params(("org_id" = String, Path, description = "`org_...`"), ("key_id" = String, Path, description = "`key_...`")),
    responses((status = 200, body = ApiKeyBody)))]
pub async fn get_api_key(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKeyBody>> {
    let api_key = app.get_api_key(&p, &org_id, &key_id).await?;
    Ok(Json(ApiKeyBody { api_key }))
}

/// Revokes a key at once: its next request is refused. Answers the revoked key.
#[utoipa::path(delete, path = "/v1/organizations/{org_id}/api-keys/{key_id}", tag = "api-keys", operation_id = "revokeApiKey",
    params(("org_id" = String, Path, description = "`org_...`"), ("key_id" = String, Path, description = "`key_...`")),
    responses((status = 200, body = ApiKeyBody)))]
pub async fn revoke_api_key(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKeyBody>> {
    let api_key = app.revoke_api_key(&p, &org_id, &key_id).await?;
    Ok(Json(ApiKeyBody { api_key }))
}
