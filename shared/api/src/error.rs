//! `ApiError`: every failure leaves the API as `{"error": "..."}` with one
//! status per `DomainError` variant. Internal details are logged, never sent.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use capydb_domain::DomainError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A human-readable message. Never contains SQL, stack traces or secrets.
    pub error: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::Invalid(_) => StatusCode::BAD_REQUEST,
            DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
            DomainError::NotFound(_) => StatusCode::NOT_FOUND,
            DomainError::Conflict(_) => StatusCode::CONFLICT,
            DomainError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service temporarily unavailable; retry shortly",
                );
            }
            DomainError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, crate::bodies::Json(ErrorBody { error: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
