//! CapyDB's HTTP API: one axum router per route group, the credential
//! extractor, `ApiError` → `{"error": ...}`, and the generated OpenAPI
//! document. The same routers run in `capydb-local` and in the Lambdas.
pub mod backups;
pub mod bodies;
pub mod error;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod list;
pub mod me;
pub mod middleware;
pub mod openapi;
pub mod organizations;
pub mod previews;
pub mod projects;
pub mod serve;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use capydb_domain::App;

use crate::error::ApiError;

/// Route groups by name, so each function of the serverless bundle can mount its own.
pub fn group(name: &str) -> Option<Router<App>> {
    Some(match name {
        "identity" => me::router(),
        "organizations" => organizations::router(),
        "projects" => projects::router(),
        "previews" => previews::router(),
        "backups" => backups::router(),
        "jobs" => jobs::router(),
        "webhooks" => webhooks::router(),
        "openapi" => openapi::router(),
        "health" => health::router(),
        _ => return None,
    })
}

pub const GROUPS: [&str; 9] =
    ["identity", "organizations", "projects", "previews", "backups", "jobs", "webhooks", "openapi", "health"];

/// Every route group on one router, answering on `/v1/...` and `/api/capydb/v1/...`.
pub fn router(app: App) -> Router {
    let mut routes = Router::new();
    for g in GROUPS {
        routes = routes.merge(group(g).unwrap_or_default());
    }
    finish(routes, app)
}

/// Adds the conventions every deployed shape shares: both path prefixes, the
/// body limit, JSON 404/405 answers and the request context.
pub fn finish(routes: Router<App>, app: App) -> Router {
    let routes = routes.method_not_allowed_fallback(method_not_allowed);
    let routes =
        Router::new().merge(routes.clone()).nest("/api/capydb", routes).fallback(not_found).with_state(app.clone());
    // Around the whole router, once: `Router::layer` wraps every route
    // instead, which costs each request a boxed service clone and a boxed
    // future per layer.
    let edge = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(app, middleware::edge))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .service(routes);
    Router::new().fallback_service(edge)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route; see /v1/openapi.json")
}
