//! `/v1/health`: no credential; `200` when the store, the queue and the
//! database server all answer, else `503`. Each is `ok` or `unavailable`.
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::bodies::Json;
use capydb_domain::health::{Check, Health};
use capydb_domain::App;

pub fn router() -> Router<App> {
    Router::new().route("/v1/health", get(health))
}

/// Whether this server reaches its metadata store, its job queue and its
/// database server. No credential needed; it says nothing more than `ok` or
/// `unavailable` for each.
#[utoipa::path(get, path = "/v1/health", tag = "meta", operation_id = "getHealth",
    responses(
        (status = 200, body = Health, description = "Every dependency answers"),
        (status = 503, body = Health, description = "At least one dependency does not answer"),
    ))]
pub async fn health(State(app): State<App>) -> (StatusCode, Json<Health>) {
    let h = app.health().await;
    let status = if h.status == Check::Ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(h))
}
