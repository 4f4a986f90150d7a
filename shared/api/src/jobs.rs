//! `/v1/jobs/{job_id}`: poll a lifecycle job.
use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::bodies::Json;
use capydb_domain::App;

use crate::bodies::JobBody;
use crate::error::ApiResult;
use crate::extract::{ApiPath, Auth};

pub fn router() -> Router<App> {
    Router::new().route("/v1/jobs/{job_id}", get(get_job))
}

/// A job. `completed` means usable: for a database, a real connection with
/// the returned credentials has succeeded.
#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "jobs", operation_id = "getJob",
    params(("job_id" = String, Path, description = "`job_...`")),
    responses((status = 200, body = JobBody)))]
pub async fn get_job(
    State(app): State<App>,
    Auth(p): Auth,
    ApiPath(job_id): ApiPath<String>,
) -> ApiResult<Json<JobBody>> {
    Ok(Json(JobBody { job: app.get_job(&p, &job_id).await? }))
}
