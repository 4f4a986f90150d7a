//! The route-group functions: API Gateway HTTP API events through the
//! routers of `capydb_api`'s registry ([`capydb_api::FUNCTIONS`]).
use capydb_api::Group;
use capydb_domain::App;

use crate::wiring::Role;
use crate::{start, Error};

/// The router of the named route groups, as a function serves it. The
/// caller's address comes from API Gateway's request context (there is no
/// TCP peer to ask), for the keys' `last_used_ip`.
pub fn routes(app: App, groups: &[Group]) -> axum::Router {
    capydb_api::finish(capydb_api::routes(groups), app).layer(axum::middleware::map_request(source_ip))
}

async fn source_ip(mut req: axum::extract::Request) -> axum::extract::Request {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok()),
        _ => None,
    };
    if let Some(ip) = ip {
        req.extensions_mut().insert(capydb_api::extract::ClientIp(ip));
    }
    req
}

/// `main` of a route-group function: serves its groups' routes from API
/// Gateway HTTP API events.
pub async fn serve_api(groups: &[Group]) -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::api(c)).await?;
    let t = std::time::Instant::now();
    let router = routes(app, groups);
    tracing::debug!(routes_us = t.elapsed().as_micros() as u64, "routes built");
    lambda_http::run(router).await
}

/// `serve_api` for the backups function, which also answers `/v1/health`
/// (the one API function that reaches the database server).
pub async fn serve_backups_api(groups: &[Group]) -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::api_with_database(c)).await?;
    lambda_http::run(routes(app, groups)).await
}

/// `serve_api` for the webhooks function, which checks webhook targets.
pub async fn serve_webhooks_api(groups: &[Group]) -> Result<(), Error> {
    let (_, app) = start(|c, _| Role::webhooks(c)).await?;
    lambda_http::run(routes(app, groups)).await
}
