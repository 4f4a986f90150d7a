//! `/v1/me`: who the credential is.
use axum::routing::get;
use axum::{Json, Router};
use capydb_domain::App;

use crate::bodies::PrincipalBody;
use crate::extract::Auth;

pub fn router() -> Router<App> {
    Router::new().route("/v1/me", get(me))
}

/// The calling credential: its kind, organization, scopes and project restriction.
#[utoipa::path(get, path = "/v1/me", tag = "identity", operation_id = "getMe",
    responses((status = 200, body = PrincipalBody)))]
pub async fn me(Auth(p): Auth) -> Json<PrincipalBody> {
    Json(PrincipalBody { principal: p.view() })
}
