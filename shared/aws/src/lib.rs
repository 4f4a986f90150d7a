//! CapyDB on AWS: the adapters of the domain's ports (DynamoDB store, SQS
//! queue, EventBridge bus, KMS secret box, DynamoDB rate-limit counters) and
//! the Secrets Manager client the bootstrap keeps its key with. The Lambda
//! glue that wires them into functions is `capydb-lambda` (shared/lambda).
//!
//! SDK errors are translated into `DomainError` here and nowhere else.
pub mod client;
pub mod dynamo;
mod error;

pub use dynamo::DynamoStore;
pub mod eventbridge;
pub mod kms;
pub mod ratelimit;
pub mod secretsmanager;
pub mod sqs;

pub use eventbridge::EventBridgeBus;
pub use kms::KmsSecretBox;
pub use ratelimit::DynamoRateLimiter;
pub use sqs::SqsQueue;
#[cfg(feature = "testkit")]
pub mod testkit;

/// The SDK crates at the versions and features this crate uses,
/// for tests and tools that drive the adapters directly.
pub mod sdk {
    pub use aws_config;
    pub use aws_sdk_dynamodb as dynamodb;
    pub use aws_sdk_eventbridge as eventbridge;
    pub use aws_sdk_kms as kms;
    pub use aws_sdk_secretsmanager as secretsmanager;
    pub use aws_sdk_sqs as sqs;
    pub use aws_sdk_ssm as ssm;
}
