//! The one error type of the domain layer. Adapters translate driver and SDK
//! errors into it; the API layer maps each variant to exactly one HTTP status.
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// 400: the request is malformed or breaks a rule about its own content.
    #[error("{0}")]
    Invalid(String),
    /// 401: no credential, or one that is malformed, unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a valid credential that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource visible to this credential.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource is busy (a lifecycle job runs) or not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// 503: a dependency (store, queue, database server) is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure. The message is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl DomainError {
    pub fn not_found(what: &str, id: &str) -> Self {
        DomainError::NotFound(format!("{what} {id} not found"))
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        DomainError::Invalid(msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        DomainError::Internal(msg.to_string())
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
