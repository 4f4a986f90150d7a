//! `/v1/me`: who the credential is.
use axum::routing::get;
use axum::Router;

use crate::bodies::Json;
use capydb_domain::App;

use axum::extract::State;
use capydb_domain::identity::SessionCaller;
use capydb_domain::principal::PrincipalView;

use crate::bodies::PrincipalBody;
use crate::error::ApiError;

pub fn router() -> Router<App> {
    Router::new().route("/v1/me", get(me))
}

/// The calling credential: its kind (an API key or a browser session), its
/// organization, scopes and project restriction, and a session's user and
/// role. A session with no active organization answers too, with a null
/// organization and no scopes.
#[utoipa::path(get, path = "/v1/me", tag = "identity", operation_id = "getMe",
    responses((status = 200, body = PrincipalBody)))]
pub async fn me(State(app): State<App>, parts: axum::http::request::Parts) -> Result<Json<PrincipalBody>, ApiError> {
    let principal = match crate::extract::caller(&parts, &app).await? {
        SessionCaller::Principal(p) => p.view(),
        SessionCaller::NoOrganization { user_id } => PrincipalView::session_without_organization(user_id),
    };
    Ok(Json(PrincipalBody { principal }))
}
