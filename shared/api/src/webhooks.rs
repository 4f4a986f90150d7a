//! `/v1/organizations/{org_id}/webhooks...`: endpoints, their secrets and their deliveries.
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::bodies::Json;
use capydb_domain::model::{Delivery, WebhookEndpoint};
use capydb_domain::webhooks::{CreateWebhook, UpdateWebhook, WebhookWithSecret};
use capydb_domain::App;

use crate::bodies::{DeliveryBody, WebhookBody};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth, Pagination};
use crate::list::ListResponse;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/organizations/{org_id}/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/v1/organizations/{org_id}/webhooks/{webhook_id}",
            get(get_webhook).patch(update_webhook).delete(delete_webhook),
        )
        .route("/v1/organizations/{org_id}/webhooks/{webhook_id}/rotate-secret", post(rotate_secret))
        .route("/v1/organizations/{org_id}/webhooks/{webhook_id}/ping", post(ping_webhook))
        .route("/v1/organizations/{org_id}/webhooks/{webhook_id}/deliveries", get(list_deliveries))
        .route("/v1/organizations/{org_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", post(redeliver))
}

/// Webhook endpoints of the organization, newest first. Secrets are never listed.
#[utoipa::path(get, path = "/v1/organizations/{org_id}/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    params(("org_id" = String, Path, description = "`org_...`"), crate::openapi::PageParams),
    responses((status = 200, body = [WebhookEndpoint])))]
pub async fn list_webhooks(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(org_id): ApiPath<String>,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<WebhookEndpoint>> {
    let hooks = app.list_webhooks(&p, &org_id, &pg.overfetch()).await?;
    Ok(ListResponse::new(hooks, pg.page.limit, &uri))
}

/// Subscribes a URL to events. The signing secret is in this response only.
#[utoipa::path(post, path = "/v1/organizations/{org_id}/webhooks", tag = "webhooks", operation_id = "createWebhook",
    params(("org_id" = String, Path, description = "`org_...`")),
    request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret)))]
pub async fn create_webhook(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(org_id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookWithSecret>)> {
    let created = app.create_webhook(&p, &org_id, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}", tag = "webhooks", operation_id = "getWebhook",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`")),
    responses((status = 200, body = WebhookBody)))]
pub async fn get_webhook(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = app.get_webhook(&p, &org_id, &webhook_id).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// Changes the URL, events, project filter, description, or enables/disables the endpoint.
#[utoipa::path(patch, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}", tag = "webhooks", operation_id = "updateWebhook",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`")),
    request_body = UpdateWebhook,
    responses((status = 200, body = WebhookBody)))]
pub async fn update_webhook(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = app.update_webhook(&p, &org_id, &webhook_id, req).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// Deletes the endpoint and its delivery history; pending deliveries are not sent.
#[utoipa::path(delete, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_webhook(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    app.delete_webhook(&p, &org_id, &webhook_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown once. The previous one keeps signing (a second
/// `v1,` signature in `webhook-signature`) for 24 hours.
#[utoipa::path(post, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`")),
    responses((status = 200, body = WebhookWithSecret)))]
pub async fn rotate_secret(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<WebhookWithSecret>> {
    Ok(Json(app.rotate_webhook_secret(&p, &org_id, &webhook_id).await?))
}

/// Sends a `webhook.ping` event to this endpoint only.
#[utoipa::path(post, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}/ping", tag = "webhooks", operation_id = "pingWebhook",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`")),
    responses((status = 202, body = DeliveryBody)))]
pub async fn ping_webhook(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryBody>)> {
    let delivery = app.ping_webhook(&p, &org_id, &webhook_id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryBody { delivery })))
}

/// Deliveries to this endpoint, newest first, each with every attempt
/// (status, latency, first 1 KiB of the response).
#[utoipa::path(get, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`"),
        crate::openapi::PageParams),
    responses((status = 200, body = [Delivery])))]
pub async fn list_deliveries(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id)): ApiPath<(String, String)>,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<Delivery>> {
    let deliveries = app.list_deliveries(&p, &org_id, &webhook_id, &pg.overfetch()).await?;
    Ok(ListResponse::new(deliveries, pg.page.limit, &uri))
}

/// Sends a finished delivery again (same `webhook-id` and body), with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/organizations/{org_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    tag = "webhooks", operation_id = "redeliverWebhook",
    params(("org_id" = String, Path, description = "`org_...`"), ("webhook_id" = String, Path, description = "`whk_...`"),
        ("delivery_id" = String, Path, description = "`dlv_...`")),
    responses((status = 202, body = DeliveryBody)))]
pub async fn redeliver(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath((org_id, webhook_id, delivery_id)): ApiPath<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryBody>)> {
    let delivery = app.redeliver(&p, &org_id, &webhook_id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryBody { delivery })))
}
