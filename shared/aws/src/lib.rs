//! CapyDB on AWS: the adapters of the domain's ports (DynamoDB store, SQS
//! queue, EventBridge bus, KMS secret box, DynamoDB rate-limit counters) and
//! the Lambda glue the functions of the serverless bundle share.
//!
//! SDK errors are translated into `DomainError` here and nowhere else.
pub mod dynamo;

pub use dynamo::DynamoStore;
pub mod eventbridge;
pub mod kms;
pub mod sqs;

pub use eventbridge::EventBridgeBus;
pub use kms::KmsSecretBox;
pub use sqs::SqsQueue;
#[cfg(feature = "testkit")]
pub mod testkit;
