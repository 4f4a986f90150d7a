//! CapyDB's HTTP API: one axum router per route group, the credential
//! extractor, `ApiError` → `{"error": ...}`, and the generated OpenAPI
//! document. The same routers run in `capydb-local` and in the Lambdas.
pub mod backups;
pub mod bodies;
pub mod cli;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
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

/// A route group's router.
pub type Group = fn() -> Router<App>;

/// The route groups of each API function of the serverless bundle (package
/// name = function name = binary name; `infra/template.yaml` routes to
/// them). Each function's `main.rs` names its own slice, so its binary
/// links only those routers; [`router`] mounts them all.
pub mod functions {
    use super::*;
    pub const IDENTITY: &[Group] = &[me::router, organizations::router, cli::router];
    pub const PROJECTS: &[Group] = &[projects::router];
    pub const PREVIEWS: &[Group] = &[previews::router];
    /// With the health check: the one API function that reaches the database server.
    pub const BACKUPS: &[Group] = &[backups::router, health::router];
    pub const JOBS: &[Group] = &[jobs::router];
    pub const WEBHOOKS: &[Group] = &[webhooks::router];
    pub const OPENAPI: &[Group] = &[openapi::router];
}

/// Every API function by name with its route groups: the one registry of
/// route groups, for `capydb-local` (all of them), the functions, tests and tools.
pub const FUNCTIONS: &[(&str, &[Group])] = &[
    ("identity", functions::IDENTITY),
    ("projects", functions::PROJECTS),
    ("previews", functions::PREVIEWS),
    ("backups", functions::BACKUPS),
    ("jobs", functions::JOBS),
    ("webhooks", functions::WEBHOOKS),
    ("openapi", functions::OPENAPI),
];

/// The route groups of an API function.
pub fn groups_of(function: &str) -> Option<&'static [Group]> {
    FUNCTIONS.iter().find(|(f, _)| *f == function).map(|(_, g)| *g)
}

/// The route groups on one router, without the shared conventions.
pub fn routes(groups: &[Group]) -> Router<App> {
    groups.iter().fold(Router::new(), |routes, g| routes.merge(g()))
}

/// Every route group on one router, answering on `/v1/...` and `/api/capydb/v1/...`.
pub fn router(app: App) -> Router {
    let all = FUNCTIONS.iter().flat_map(|(_, groups)| groups.iter()).fold(Router::new(), |routes, g| routes.merge(g()));
    finish(all, app)
}

/// Adds the conventions every deployed shape shares: both path prefixes, the
/// body limit, JSON 404/405 answers and the request context.
pub fn finish(routes: Router<App>, app: App) -> Router {
    let routes = routes.method_not_allowed_fallback(method_not_allowed);
    // One layer (the edge over the body limit) around each route's service
    // and the fallback: a request passes one router lookup and one boxed
    // route on its way to the handler.
    let edge = tower::ServiceBuilder::new()
        .layer(middleware::EdgeLayer(app.clone()))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES));
    Router::new().merge(routes.clone()).nest("/api/capydb", routes).fallback(not_found).layer(edge).with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route; see /v1/openapi.json")
}
