//! `/v1/cli/...`: the CLI login (RFC 8628 device flow) and a person's CLI
//! sessions. The three login endpoints have their own, stricter per-address
//! rate limit (`middleware::is_cli_login`).
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::bodies::Json;
use capydb_domain::cli_login::{
    ApproveCliLogin, CliLoginDecision, CliSession, CliToken, CliTokenRequest, DeviceAuthorization, GrantRefusal,
};
use capydb_domain::App;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth, Pagination};
use crate::list::ListResponse;

// The paths as the rate limiter and the document's conventions match them
// (the router names them as literals, which the OpenAPI test walks).
pub const LOGIN: &str = "/v1/cli/login";
pub const APPROVE: &str = "/v1/cli/login/approve";
pub const TOKEN: &str = "/v1/cli/login/token";

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/cli/login", post(start_login))
        .route("/v1/cli/login/approve", post(approve_login))
        .route("/v1/cli/login/token", post(exchange_token))
        .route("/v1/cli/sessions", get(list_cli_sessions))
        .route("/v1/cli/sessions/{cli_session_id}", delete(revoke_cli_session))
}

/// A poll that got no token (RFC 8628 §3.5): `error` is one of
/// `authorization_pending`, `slow_down`, `expired_token`, `access_denied`,
/// `invalid_grant`; a malformed request has only `error`, a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceGrantError {
    pub error: String,
    /// What happened, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// With `slow_down`: the seconds to wait between polls from now on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct CliSessionBody {
    pub cli_session: CliSession,
}

/// Token answers must not be cached (RFC 6749 §5.1).
fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Where the person approves: the configured page, else this API's own
/// approve endpoint as the caller reached it (host, and the
/// `/api/capydb` prefix when the caller used it).
fn verification_uri(app: &App, headers: &HeaderMap, path: &str) -> String {
    if let Some(configured) = &app.settings.cli_login.verification_uri {
        return configured.clone();
    }
    let prefix = path.strip_suffix(LOGIN).unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
    match host {
        Some(host) => {
            let scheme = match headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
                Some("https") => "https",
                _ => "http",
            };
            format!("{scheme}://{host}{prefix}{APPROVE}")
        }
        None => format!("{prefix}{APPROVE}"),
    }
}

/// Starts a CLI login (RFC 8628 §3.1). No credential. Show `user_code` and
/// `verification_uri` to the person, then poll `POST /v1/cli/login/token`
/// every `interval` seconds until it answers a token or a final error.
#[utoipa::path(post, path = "/v1/cli/login", tag = "cli", operation_id = "startCliLogin",
    responses((status = 200, body = DeviceAuthorization)))]
pub async fn start_login(
    State(app): State<App>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Response> {
    let uri = verification_uri(&app, &headers, uri.path());
    let started = app.start_cli_login(&uri).await?;
    Ok(no_store(Json(started).into_response()))
}

/// Approves (or, with `"approve": false`, declines) the CLI login showing
/// `user_code`, as the signed-in person in their active organization. A
/// browser session is needed (not an API key or a CLI token); any role may
/// approve, and the CLI token carries that role.
#[utoipa::path(post, path = "/v1/cli/login/approve", tag = "cli", operation_id = "approveCliLogin",
    request_body = ApproveCliLogin,
    responses((status = 200, body = CliLoginDecision),
        (status = 404, description = "No CLI login is waiting for this code", body = crate::error::ErrorBody),
        (status = 409, description = "The login was already approved or declined", body = crate::error::ErrorBody)))]
pub async fn approve_login(
    State(app): State<App>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<ApproveCliLogin>,
) -> ApiResult<Json<CliLoginDecision>> {
    Ok(Json(app.approve_cli_login(&p, req).await?))
}

/// Polls a CLI login (RFC 8628 §3.4). No credential. `200` with the token
/// once approved (the device code then works no more); else `400` with the
/// reason in `error`.
#[utoipa::path(post, path = "/v1/cli/login/token", tag = "cli", operation_id = "exchangeCliToken",
    request_body = CliTokenRequest,
    responses((status = 200, body = CliToken),
        (status = 400, description = "No token (yet): `authorization_pending` (keep polling), `slow_down` (polled too fast; `interval` is the new one), `expired_token`, `access_denied` (declined), `invalid_grant` (unknown or already exchanged), or a malformed request", body = DeviceGrantError)))]
pub async fn exchange_token(State(app): State<App>, ApiJson(req): ApiJson<CliTokenRequest>) -> ApiResult<Response> {
    let answer = match app.poll_cli_login(req).await? {
        Ok(token) => Json(token).into_response(),
        Err(refusal) => {
            let interval = match refusal {
                GrantRefusal::SlowDown { interval } => Some(interval),
                _ => None,
            };
            let body = DeviceGrantError {
                error: refusal.code().into(),
                error_description: Some(refusal.description()),
                interval,
            };
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    };
    Ok(no_store(answer))
}

/// The calling person's CLI sessions in this organization, newest first
/// (no secrets). A browser session or a CLI token; not an API key.
#[utoipa::path(get, path = "/v1/cli/sessions", tag = "cli", operation_id = "listCliSessions",
    params(crate::openapi::PageParams),
    responses((status = 200, body = [CliSession])))]
pub async fn list_cli_sessions(
    State(app): State<App>,
    Auth(p): Auth,
    pg: Pagination,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<ListResponse<CliSession>> {
    let sessions = app.list_cli_sessions(&p, &pg.overfetch()).await?;
    Ok(ListResponse::new(sessions, pg.page.limit, &uri))
}

/// Revokes one of the calling person's CLI sessions: its token is `401`
/// from the next request on. Answers the revoked session.
#[utoipa::path(delete, path = "/v1/cli/sessions/{cli_session_id}", tag = "cli", operation_id = "revokeCliSession",
    params(("cli_session_id" = String, Path, description = "`cli_...`")),
    responses((status = 200, body = CliSessionBody)))]
pub async fn revoke_cli_session(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CliSessionBody>> {
    let cli_session = app.revoke_cli_session(&p, &id).await?;
    Ok(Json(CliSessionBody { cli_session }))
}
