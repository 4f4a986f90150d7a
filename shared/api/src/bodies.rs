//! Response envelopes: a single resource is wrapped by its type name; and
//! [`Json`], the responder every JSON answer is written by.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use capydb_domain::model::{ApiKey, Backup, Delivery, Import, Job, Preview, Project, Restore, WebhookEndpoint};
use capydb_domain::organizations::OrganizationDetails;
use capydb_domain::principal::PrincipalView;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct PrincipalBody {
    pub principal: PrincipalView,
}

#[derive(Serialize, ToSchema)]
pub struct OrganizationBody {
    pub organization: OrganizationDetails,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyBody {
    pub api_key: ApiKey,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectBody {
    pub project: Project,
}

#[derive(Serialize, ToSchema)]
pub struct JobBody {
    pub job: Job,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewBody {
    pub preview: Preview,
}

#[derive(Serialize, ToSchema)]
pub struct BackupBody {
    pub backup: Backup,
}

#[derive(Serialize, ToSchema)]
pub struct RestoreBody {
    pub restore: Restore,
}

#[derive(Serialize, ToSchema)]
pub struct ImportBody {
    pub import: Import,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookBody {
    pub webhook: WebhookEndpoint,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryBody {
    pub delivery: Delivery,
}

/// A JSON answer, as `axum::Json` writes it but into a buffer sized for a
/// resource (most answers are 300 bytes to a few KB) rather than 128 bytes
/// grown two or three times: on `GET /v1/projects/{id}` the regrowing was
/// about 1% of the server's CPU (bench/api-throughput.sh).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// The buffer a JSON answer starts with.
const JSON_CAPACITY: usize = 1024;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut buf = Vec::with_capacity(JSON_CAPACITY);
        match serde_json::to_writer(&mut buf, &self.0) {
            Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], buf).into_response(),
            // As axum::Json: a value that cannot be serialized is a bug of ours.
            Err(e) => {
                tracing::error!(error = %e, "could not serialize a response");
                crate::error::ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}
