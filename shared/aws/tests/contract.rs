//! The domain's port contract suites, unchanged, against the AWS adapters on
//! moto (started by the testkit on 127.0.0.1), next to the SQLite runs in
//! `shared/embedded/tests`. Tables, queues and the bus come from
//! `infra/template.yaml`'s resource definitions.
use std::time::Duration;

use capydb_aws::testkit::{self, Template};
use capydb_aws::{DynamoStore, EventBridgeBus, KmsSecretBox, SqsQueue};
use capydb_domain::contract;
use capydb_domain::ports::JobQueue;

#[tokio::test]
async fn dynamodb_store_passes_the_store_contract() {
    let config = testkit::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = testkit::unique("capydb");
    testkit::create_table(&client, &Template::load(), &table).await;
    let store = DynamoStore::new(client, table);
    contract::run_store_contract(&store).await;
    // Again, on the now non-empty table: the suite must not depend on an empty one.
    contract::run_store_contract(&store).await;
}

#[tokio::test]
async fn dynamodb_store_passes_the_login_store_contract() {
    let config = testkit::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = testkit::unique("capydb-logins");
    testkit::create_table(&client, &Template::load(), &table).await;
    let store = DynamoStore::new(client, table);
    contract::run_login_store_contract(&store, &store).await;
    contract::run_login_store_contract(&store, &store).await;
}

#[tokio::test]
async fn sqs_queue_passes_the_queue_contract() {
    let config = testkit::sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&config);
    let template = Template::load();
    let make = |max: u32| {
        let (client, template) = (client.clone(), &template);
        async move {
            let pair = testkit::create_queue_pair(&client, template, "JobsQueue", Some(max)).await;
            Box::new(SqsQueue::new(client, pair.url, Some(pair.dead_letter_url))) as Box<dyn JobQueue>
        }
    };
    contract::run_queue_contract(make, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn kms_secret_box_passes_the_secret_box_contract() {
    let config = testkit::sdk_config().await;
    let client = aws_sdk_kms::Client::new(&config);
    let key = testkit::create_key(&client).await;
    contract::secret_box_contract(&KmsSecretBox::new(client, key)).await;
}

#[tokio::test]
async fn eventbridge_bus_passes_the_event_bus_contract() {
    let config = testkit::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let template = Template::load();
    let webhooks = testkit::create_queue_pair(&sqs, &template, "WebhookQueue", None).await;
    let bus = testkit::create_bus_and_rule(&aws_sdk_eventbridge::Client::new(&config), &template, &webhooks.arn).await;
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), bus);
    let queue = SqsQueue::new(sqs, webhooks.url, Some(webhooks.dead_letter_url));
    contract::event_bus_contract(&bus, &queue, capydb_aws::eventbridge::unwrap_envelope, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dynamodb_rate_limiter_passes_the_rate_limiter_contract() {
    let config = testkit::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = testkit::unique("capydb-rate");
    testkit::create_table(&client, &Template::load(), &table).await;
    contract::rate_limiter_contract(&capydb_aws::DynamoRateLimiter::new(client, table)).await;
}
