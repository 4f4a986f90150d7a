//! The job state machine's contract (`capydb_domain::job_contract`) on the
//! DynamoDB store, SQS queues, the EventBridge bus and the KMS secret box,
//! all on moto (started by the testkit on 127.0.0.1). Jobs stored by the code
//! before the typed job model are written attribute for attribute as it
//! wrote them, and their SQS message runs them to completion.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use capydb_aws::dynamo::records::{job_pk, JOB_SK};
use capydb_aws::testkit::{self, Template};
use capydb_aws::{DynamoStore, EventBridgeBus, KmsSecretBox, SqsQueue};
use capydb_domain::fakes::{AnyWhere, FakeProvider, StoredJob};
use capydb_domain::job_contract::{run_job_contract, JobRigs};
use capydb_domain::ports::{
    ArtifactStore, Clock, DatabaseEndpoint, DatabaseProvider, Egress, EventBus, JobQueue, RateLimiter, SecretBox, Store,
};
use capydb_domain::{App, AppParts, Settings};
use capydb_embedded::{FileArtifactStore, MemoryRateLimiter};

/// One table per `App` (each bootstraps its own organization); the queues,
/// bus and key are shared.
struct AwsRigs {
    config: aws_config::SdkConfig,
    template: Template,
    jobs: testkit::QueuePair,
    webhooks: testkit::QueuePair,
    bus: String,
    key: String,
    /// Tables made so far, and the artifact dirs to remove.
    tables: Mutex<Vec<String>>,
    dirs: Mutex<Vec<PathBuf>>,
}

impl Drop for AwsRigs {
    fn drop(&mut self) {
        for dir in self.dirs.lock().unwrap().iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[async_trait]
impl JobRigs for AwsRigs {
    async fn app(&self, provider: Arc<FakeProvider>, clock: Arc<dyn Clock>, settings: Settings) -> App {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.config);
        let table = testkit::unique("capydb-jobs");
        testkit::create_table(&dynamodb, &self.template, &table).await;
        self.tables.lock().unwrap().push(table.clone());
        let dir = std::env::temp_dir().join(capydb_domain::ids::new_id("aws-jobs-test"));
        self.dirs.lock().unwrap().push(dir.clone());
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let store = Arc::new(DynamoStore::new(dynamodb.clone(), table.clone()));
        App::new(AppParts {
            store: store.clone() as Arc<dyn Store>,
            logins: store as Arc<dyn capydb_domain::ports::LoginStore>,
            queue: Arc::new(SqsQueue::new(sqs.clone(), self.jobs.url.clone(), Some(self.jobs.dead_letter_url.clone())))
                as Arc<dyn JobQueue>,
            webhook_queue: Arc::new(SqsQueue::new(
                sqs,
                self.webhooks.url.clone(),
                Some(self.webhooks.dead_letter_url.clone()),
            )) as Arc<dyn JobQueue>,
            bus: Arc::new(EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&self.config), self.bus.clone()))
                as Arc<dyn EventBus>,
            webhook_sender: None,
            egress: Arc::new(AnyWhere) as Arc<dyn Egress>,
            endpoint: provider.clone() as Arc<dyn DatabaseEndpoint>,
            provider: Some(provider as Arc<dyn DatabaseProvider>),
            servers: None,
            snapshots: None,
            probe: None,
            secrets: Arc::new(KmsSecretBox::new(aws_sdk_kms::Client::new(&self.config), self.key.clone()))
                as Arc<dyn SecretBox>,
            artifacts: Arc::new(FileArtifactStore::open(&dir).unwrap()) as Arc<dyn ArtifactStore>,
            rate_limiter: Arc::new(MemoryRateLimiter::new()) as Arc<dyn RateLimiter>,
            sessions: None,
            clock,
            settings,
        })
    }

    /// The item's attributes as the code before the typed job model wrote them.
    async fn store_old_shape(&self, job_id: &str, old: &StoredJob) {
        let table = self.tables.lock().unwrap().last().unwrap().clone();
        let s = |v: &str| AttributeValue::S(v.to_string());
        aws_sdk_dynamodb::Client::new(&self.config)
            .update_item()
            .table_name(table)
            .key("pk", s(&job_pk(job_id)))
            .key("sk", s(JOB_SK))
            .update_expression("SET kind = :k, resource_kind = :rk, resource_id = :ri, step = :st, params = :p")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":k", s(&old.kind))
            .expression_attribute_values(":rk", s(&old.resource_kind))
            .expression_attribute_values(":ri", s(&old.resource_id))
            .expression_attribute_values(":st", AttributeValue::N(old.step.to_string()))
            .expression_attribute_values(":p", s(&old.params))
            .send()
            .await
            .expect("the job's item");
    }
}

#[tokio::test]
async fn the_job_state_machine_keeps_its_contract_on_dynamodb_and_sqs() {
    let config = testkit::sdk_config().await;
    let template = Template::load();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let jobs = testkit::create_queue_pair(&sqs, &template, "JobsQueue", None).await;
    let webhooks = testkit::create_queue_pair(&sqs, &template, "WebhookQueue", None).await;
    let bus = testkit::create_bus_and_rule(&aws_sdk_eventbridge::Client::new(&config), &template, &webhooks.arn).await;
    let key = testkit::create_key(&aws_sdk_kms::Client::new(&config)).await;
    let rigs = AwsRigs {
        config,
        template,
        jobs,
        webhooks,
        bus,
        key,
        tables: Mutex::new(Vec::new()),
        dirs: Mutex::new(Vec::new()),
    };
    run_job_contract(&rigs).await;
}
