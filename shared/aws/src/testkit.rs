//! For tests (feature `testkit`): a moto server (the AWS emulator, from
//! PyPI) started once per test process on 127.0.0.1, SDK clients pointed at
//! it, and the table, queues, bus and rule created from the resource
//! definitions of `infra/template.yaml` — parsed, not retyped, so the tests
//! run against what would be deployed.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

/// The emulator's endpoint, e.g. `http://127.0.0.1:41234`.
///
/// `CAPYDB_TEST_AWS_ENDPOINT` points the tests at a running emulator;
/// otherwise one is started, and dies with the test process: the
/// `CAPYDB_TEST_MOTO` executable, or by default moto's server from the
/// workspace's `.venv-ci` (which `.ci/run` installs) through
/// `shared/aws/testkit/moto_server.py`, which makes moto's DynamoDB writes
/// atomic with respect to each other as DynamoDB's are (moto rolls a failed
/// transaction back by restoring a copy of the table, losing what other
/// requests wrote meanwhile).
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(e) = std::env::var("CAPYDB_TEST_AWS_ENDPOINT") {
            return e;
        }
        let (moto, script) = match std::env::var_os("CAPYDB_TEST_MOTO") {
            Some(m) => (PathBuf::from(m), None),
            None => (
                workspace_root().join(".venv-ci/bin/python"),
                Some(workspace_root().join("shared/aws/testkit/moto_server.py")),
            ),
        };
        // The default needs moto installed in that virtualenv, not only its Python.
        let installed = moto.exists() && (script.is_none() || workspace_root().join(".venv-ci/bin/moto_server").exists());
        assert!(
            installed,
            "the AWS adapter tests need moto: run `.ci/run` once, or `python3 -m venv .venv-ci && \
             .venv-ci/bin/pip install 'moto[server]'`, or set CAPYDB_TEST_MOTO / CAPYDB_TEST_AWS_ENDPOINT (looked for {})",
            moto.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let (tx, rx) = std::sync::mpsc::channel();
        // The child is tied to this thread by PR_SET_PDEATHSIG, so the thread
        // lives as long as the process: moto dies with the tests, even on a panic.
        std::thread::spawn(move || {
            let mut cmd = Command::new(&moto);
            cmd.args(script).args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let ok = child.is_ok();
            tx.send(child.map(|_| ()).map_err(|e| e.to_string())).ok();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        rx.recv().expect("moto thread").expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on 127.0.0.1:{port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        format!("http://127.0.0.1:{port}")
    })
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// SDK configuration for the emulator: static test credentials, us-east-1.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "capydb-testkit"))
        .load()
        .await
}

/// A name no other test of this run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", capydb_domain::ids::new_id("t").replace('_', "-"))
}

/// `infra/template.yaml`'s resources, as JSON values.
pub struct Template {
    resources: Value,
}

impl Template {
    pub fn load() -> Template {
        let path = workspace_root().join("infra/template.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        Template { resources: doc["Resources"].clone() }
    }

    /// The `Properties` of a resource, checking its type.
    pub fn properties(&self, logical_id: &str, kind: &str) -> &Value {
        let r = &self.resources[logical_id];
        assert_eq!(r["Type"].as_str(), Some(kind), "infra/template.yaml: {logical_id} must be a {kind}");
        &r["Properties"]
    }

    pub fn resource(&self, logical_id: &str) -> &Value {
        &self.resources[logical_id]
    }

    /// Logical ids of the resources of a type.
    pub fn of_type(&self, kind: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .resources
            .as_object()
            .map(|m| m.iter().filter(|(_, r)| r["Type"] == kind).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

fn key_schema(v: &Value) -> Vec<KeySchemaElement> {
    v.as_array()
        .expect("KeySchema")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().expect("AttributeName"))
                .key_type(KeyType::from(k["KeyType"].as_str().expect("KeyType")))
                .build()
                .expect("key schema")
        })
        .collect()
}

/// Creates the template's `Table` under `name`.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, template: &Template, name: &str) {
    let p = template.properties("Table", "AWS::DynamoDB::Table");
    let attrs = p["AttributeDefinitions"]
        .as_array()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().expect("AttributeName"))
                .attribute_type(ScalarAttributeType::from(a["AttributeType"].as_str().expect("AttributeType")))
                .build()
                .expect("attribute definition")
        })
        .collect();
    let gsis = p["GlobalSecondaryIndexes"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|g| {
                    GlobalSecondaryIndex::builder()
                        .index_name(g["IndexName"].as_str().expect("IndexName"))
                        .set_key_schema(Some(key_schema(&g["KeySchema"])))
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::from(
                                    g["Projection"]["ProjectionType"].as_str().expect("ProjectionType"),
                                ))
                                .build(),
                        )
                        .build()
                        .expect("gsi")
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"), "the table is on-demand");
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attrs))
        .set_key_schema(Some(key_schema(&p["KeySchema"])))
        .set_global_secondary_indexes(Some(gsis))
        .send()
        .await
        .expect("create the table");
}

/// A queue and its dead-letter queue, as created from the template.
pub struct QueuePair {
    pub url: String,
    pub dead_letter_url: String,
    pub arn: String,
    /// The redrive policy's maxReceiveCount as created.
    pub max_receives: u32,
}

fn queue_attributes(p: &Value) -> Vec<(QueueAttributeName, String)> {
    let mut out = Vec::new();
    for (prop, attr) in [
        ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
        ("MessageRetentionPeriod", QueueAttributeName::MessageRetentionPeriod),
        ("DelaySeconds", QueueAttributeName::DelaySeconds),
        ("ReceiveMessageWaitTimeSeconds", QueueAttributeName::ReceiveMessageWaitTimeSeconds),
    ] {
        match &p[prop] {
            Value::Number(n) => out.push((attr, n.to_string())),
            Value::String(s) => out.push((attr, s.clone())),
            _ => {}
        }
    }
    out
}

/// Creates the template's queue `logical_id` (and the dead-letter queue its
/// redrive policy names) under fresh names. `max_receives` overrides the
/// template's maxReceiveCount (the queue contract asks for its own).
pub async fn create_queue_pair(
    client: &aws_sdk_sqs::Client,
    template: &Template,
    logical_id: &str,
    max_receives: Option<u32>,
) -> QueuePair {
    let p = template.properties(logical_id, "AWS::SQS::Queue");
    let redrive = &p["RedrivePolicy"];
    let dlq_id = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{logical_id}: RedrivePolicy.deadLetterTargetArn must be Fn::GetAtt [<dlq>, Arn]"));
    let template_max = redrive["maxReceiveCount"].as_u64().expect("maxReceiveCount") as u32;
    let dlq_props = template.properties(dlq_id, "AWS::SQS::Queue");

    let create = |name: String, attrs: Vec<(QueueAttributeName, String)>| async move {
        let mut req = client.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k, v);
        }
        req.send().await.expect("create a queue").queue_url().expect("queue url").to_string()
    };
    let dead_letter_url = create(unique(dlq_id), queue_attributes(dlq_props)).await;
    let dlq_arn = crate::sqs::arn_of(client, &dead_letter_url).await.expect("dlq arn");
    let max = max_receives.unwrap_or(template_max);
    let mut attrs = queue_attributes(p);
    attrs.push((
        QueueAttributeName::RedrivePolicy,
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max }).to_string(),
    ));
    let url = create(unique(logical_id), attrs).await;
    let arn = crate::sqs::arn_of(client, &url).await.expect("queue arn");
    QueuePair { url, dead_letter_url, arn, max_receives: max }
}

/// Creates the template's event bus and its rule under fresh names, the
/// rule targeting `target_queue_arn` (the webhook queue). Returns the bus name.
pub async fn create_bus_and_rule(
    client: &aws_sdk_eventbridge::Client,
    template: &Template,
    target_queue_arn: &str,
) -> String {
    let bus = unique("capydb-bus");
    template.properties("EventBus", "AWS::Events::EventBus");
    client.create_event_bus().name(&bus).send().await.expect("create the bus");
    let rules = template.of_type("AWS::Events::Rule");
    let rule_id = rules
        .iter()
        .find(|id| template.properties(id, "AWS::Events::Rule")["EventBusName"] != Value::Null)
        .expect("a rule on the CapyDB bus");
    let p = template.properties(rule_id, "AWS::Events::Rule");
    let pattern = p["EventPattern"].to_string();
    let rule = unique(rule_id);
    client
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(pattern)
        .state(aws_sdk_eventbridge::types::RuleState::Enabled)
        .send()
        .await
        .expect("create the rule");
    let targets = p["Targets"].as_array().expect("the rule's Targets");
    assert_eq!(targets.len(), 1, "the rule has one target, the webhook queue");
    let t = &targets[0];
    assert_eq!(t["Arn"]["Fn::GetAtt"][0].as_str(), Some("WebhookQueue"), "the rule targets the webhook queue");
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id(t["Id"].as_str().expect("target Id"))
        .arn(target_queue_arn)
        .build()
        .expect("target");
    client.put_targets().rule(&rule).event_bus_name(&bus).targets(target).send().await.expect("put the target");
    bus
}

/// A KMS key for the secret box.
pub async fn create_key(client: &aws_sdk_kms::Client) -> String {
    let out = client.create_key().description("capydb tests").send().await.expect("create a KMS key");
    out.key_metadata().expect("key metadata").key_id().to_string()
}
