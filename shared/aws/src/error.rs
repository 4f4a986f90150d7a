//! SDK errors as `DomainError`, one rule for every service: transport
//! failures, timeouts and the service's own "try again" codes are
//! `Unavailable` (the caller may retry); a request the SDK could not build,
//! and every other service error, is `Internal`.
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use capydb_domain::DomainError;

/// How one service's errors read.
pub(crate) struct Service {
    /// For the log line, e.g. `DynamoDB`.
    pub name: &'static str,
    /// For the caller, e.g. `the metadata store`.
    pub noun: &'static str,
    /// Whether a service error code means "try again later".
    pub retryable: fn(&str) -> bool,
}

pub(crate) const DYNAMODB: Service = Service {
    name: "DynamoDB",
    noun: "the metadata store",
    retryable: |c| {
        [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "InternalServerError",
            "ServiceUnavailable",
            "TransactionConflictException",
            "TransactionInProgressException",
        ]
        .contains(&c)
    },
};

pub(crate) const SQS: Service = Service {
    name: "SQS",
    noun: "the queue",
    retryable: |c| c.contains("Throttl") || c.contains("InternalError") || c.contains("ServiceUnavailable"),
};

pub(crate) const KMS: Service = Service {
    name: "KMS",
    noun: "the key service",
    retryable: |c| {
        ["ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException"]
            .contains(&c)
    },
};

pub(crate) const SECRETS_MANAGER: Service = Service {
    name: "Secrets Manager",
    noun: "Secrets Manager",
    retryable: |c| ["InternalServiceError", "ThrottlingException"].contains(&c),
};

pub(crate) fn sdk_error<E, R>(service: &Service, what: &str, e: &SdkError<E, R>) -> DomainError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let transient = match e {
        SdkError::ServiceError(_) => e.code().is_some_and(service.retryable),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    let msg = format!("{what}: {}", DisplayErrorContext(e));
    if transient {
        tracing::warn!(error = %msg, "{} unavailable", service.name);
        DomainError::Unavailable(format!("{what}: {} is unavailable; retry later", service.noun))
    } else {
        DomainError::Internal(msg)
    }
}
