//! The bootstrap function's handler on moto (started by the testkit on
//! 127.0.0.1): the table comes from `infra/template.yaml`, the secret's
//! name from the function's environment there, and the event from
//! `events/bootstrap.first-run.json`.
use capydb_aws::sdk::{dynamodb, secretsmanager};
use capydb_aws::secretsmanager::SecretsManager;
use capydb_aws::testkit::{self, Template};
use capydb_aws::DynamoStore;
use capydb_domain::apikey;
use capydb_domain::scopes::Scope;
use capydb_lambda::bootstrap::{Bootstrap, BootstrapError, Bootstrapped};
use capydb_lambda::{self as lambda, Config, Role};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};

/// One deployed stack's worth of AWS: its table, its KMS key and the name of
/// its bootstrap secret, with clients to look behind the handler's back.
struct Stack {
    sdk: capydb_aws::sdk::aws_config::SdkConfig,
    dynamodb: dynamodb::Client,
    secrets: secretsmanager::Client,
    table: String,
    kms_key: String,
    secret_name: String,
}

impl Stack {
    async fn new() -> Stack {
        logs();
        let sdk = testkit::sdk_config().await;
        let template = Template::load();
        let dynamodb = dynamodb::Client::new(&sdk);
        let table = testkit::unique("capydb-boot");
        testkit::create_table(&dynamodb, &template, &table).await;
        let kms_key = testkit::create_key(&capydb_aws::sdk::kms::Client::new(&sdk)).await;
        let stack_name = testkit::unique("stack");
        let secret_name = template.properties("BootstrapFunction", "AWS::Serverless::Function")["Environment"]
            ["Variables"]["CAPYDB_BOOTSTRAP_SECRET_NAME"]["Fn::Sub"]
            .as_str()
            .expect("BootstrapFunction sets CAPYDB_BOOTSTRAP_SECRET_NAME with Fn::Sub")
            .replace("${AWS::StackName}", &stack_name);
        assert!(!secret_name.contains("${"), "the secret's name uses no other substitution: {secret_name}");
        let secrets = secretsmanager::Client::new(&sdk);
        Stack { sdk, dynamodb, secrets, table, kms_key, secret_name }
    }

    /// The handler as the function builds it, on this stack.
    fn bootstrap(&self) -> Bootstrap {
        Bootstrap::new(
            DynamoStore::new(self.dynamodb.clone(), &self.table),
            SecretsManager::new(self.secrets.clone()),
            &self.secret_name,
            Some(self.kms_key.clone()),
        )
    }

    async fn run(&self, event: Value) -> Result<Bootstrapped, BootstrapError> {
        self.bootstrap().handle(event).await
    }

    /// The secret's current value and version, as an operator would read them.
    async fn secret(&self) -> Option<(String, String)> {
        match self.secrets.get_secret_value().secret_id(&self.secret_name).send().await {
            Ok(out) => Some((
                out.secret_string().expect("a string secret").to_string(),
                out.version_id().expect("a version").to_string(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
            Err(e) => panic!("read the secret: {e:?}"),
        }
    }

    async fn secret_arn(&self) -> String {
        let out =
            self.secrets.describe_secret().secret_id(&self.secret_name).send().await.expect("describe the secret");
        out.arn().expect("an ARN").to_string()
    }

    /// The ids of the organizations in the table (a scan: tests only).
    async fn organizations(&self) -> Vec<String> {
        let out = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :org")
            .expression_attribute_values(":org", dynamodb::types::AttributeValue::S("ORG".into()))
            .send()
            .await
            .expect("scan the table");
        assert!(out.last_evaluated_key().is_none(), "a test table fits in one scan page");
        let mut ids: Vec<String> =
            out.items().iter().map(|i| i["id"].as_s().expect("an organization's id").clone()).collect();
        ids.sort();
        ids
    }

    /// The app the API functions run, on this stack's table: a key that
    /// authenticates here is one the deployed API accepts.
    fn api_app(&self) -> capydb_domain::App {
        let config = Config {
            table: self.table.clone(),
            jobs_queue_url: "http://127.0.0.1:9/jobs".into(),
            jobs_dead_letter_url: None,
            webhook_queue_url: "http://127.0.0.1:9/webhooks".into(),
            webhook_dead_letter_url: None,
            event_bus: "unused".into(),
            kms_key_id: self.kms_key.clone(),
            databases: capydb_lambda::config::Databases::Server {
                admin_url: "postgres://capydb_admin@127.0.0.1:9/postgres".into(),
                password_param: None,
            },
            pg_version: "15".into(),
            final_snapshot_retention_days: 30,
            artifact_dir: std::env::temp_dir(),
            jobs_max_receives: 5,
            allow_private_egress: false,
            region: "us-east-1".into(),
            job_max_attempts: 3,
            rate_limit_per_minute: 0,
            cli_login_rate_limit_per_minute: 0,
            cli_verification_url: None,
            quotas: capydb_domain::app::QuotaSettings::default(),
            clerk: Default::default(),
        };
        let sdk = capydb_aws::client::SdkCell::ready(self.sdk.clone());
        lambda::app(&config, &sdk, Role::api(&config).expect("the API role"))
    }
}

/// The fixture the README tells operators to send.
fn first_run_event() -> Value {
    let path = testkit::workspace_root().join("events/bootstrap.first-run.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

#[tokio::test]
async fn first_run_creates_the_organization_and_keeps_its_key_only_in_the_secret() {
    // GIVEN a freshly deployed stack
    let stack = Stack::new().await;
    let event = first_run_event();

    // WHEN the operator invokes the function with the fixture
    let out = stack.run(event.clone()).await.expect("the first run succeeds");

    // THEN the answer names the organization and the secret, and not the key
    let answer = serde_json::to_value(&out).expect("the answer serializes");
    assert_eq!(
        answer.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["api_key_secret_arn".to_string(), "organization_id".to_string()]),
        "the answer has exactly these two fields: {answer}"
    );
    assert!(out.organization_id.starts_with("org_"), "{answer}");
    assert!(out.api_key_secret_arn.starts_with("arn:aws:secretsmanager:us-east-1:"), "{answer}");
    assert!(out.api_key_secret_arn.contains(&stack.secret_name), "{answer}");
    let (key, _) = stack.secret().await.expect("the secret exists");
    assert!(!answer.to_string().contains(&key), "the answer must not hold the key: {answer}");
    assert!(!answer.to_string().contains(apikey::LIVE_PREFIX), "{answer}");

    // ... and the secret's key authenticates, as an admin of that organization
    let principal = stack.api_app().authenticate_api_key(&key, None).await.expect("the stored key authenticates");
    assert_eq!(principal.org_id(), out.organization_id);
    assert_eq!(principal.organization.name, event["organization_name"].as_str().expect("the fixture's name"));
    assert!(Scope::ALL.iter().all(|s| principal.has(*s)), "the key holds every scope: {:?}", principal.scopes);
    assert_eq!(stack.organizations().await, [out.organization_id.as_str()]);
}

#[tokio::test]
async fn the_secret_is_encrypted_with_the_stacks_kms_key() {
    let stack = Stack::new().await;
    let out = stack.run(first_run_event()).await.expect("the first run succeeds");
    let described =
        stack.secrets.describe_secret().secret_id(&out.api_key_secret_arn).send().await.expect("describe the secret");
    assert_eq!(described.kms_key_id(), Some(stack.kms_key.as_str()));
}

#[tokio::test]
async fn a_second_run_is_refused_names_the_organization_and_changes_nothing() {
    // GIVEN a bootstrapped stack
    let stack = Stack::new().await;
    let first = stack.run(first_run_event()).await.expect("the first run succeeds");
    let secret_before = stack.secret().await.expect("the secret exists");

    // WHEN the function is invoked again, even with another name
    let second = stack.run(json!({"organization_name": "Someone else"})).await;

    // THEN it refuses, saying which organization exists and where its key is
    let Err(BootstrapError::AlreadyBootstrapped { organization_id, message }) = second else {
        panic!("a second run must be refused as AlreadyBootstrapped, got {second:?}");
    };
    assert_eq!(organization_id, first.organization_id);
    assert!(message.contains(&first.organization_id), "the refusal names the organization: {message}");
    assert!(message.contains("Acme"), "... by its name too: {message}");
    assert!(message.contains(&first.api_key_secret_arn), "the refusal says where the key is: {message}");
    assert!(!message.contains(&secret_before.0), "the refusal must not hold the key: {message}");
    // ... and nothing changed: one organization, the same secret value and version
    assert_eq!(stack.organizations().await, [first.organization_id]);
    assert_eq!(stack.secret().await, Some(secret_before), "the secret is untouched");
}

#[tokio::test]
async fn a_run_after_a_crash_between_the_secret_and_the_organization_finishes_with_the_stored_key() {
    // GIVEN a run that stored its key in the secret and stopped before DynamoDB
    let stack = Stack::new().await;
    let orphan = apikey::generate(apikey::LIVE_PREFIX);
    stack
        .secrets
        .create_secret()
        .name(&stack.secret_name)
        .secret_string(&orphan)
        .kms_key_id(&stack.kms_key)
        .send()
        .await
        .expect("store the crashed run's key");
    let before = stack.secret().await.expect("the secret exists");
    assert!(stack.organizations().await.is_empty());

    // WHEN the operator runs it again
    let out = stack.run(first_run_event()).await.expect("the run after a crash succeeds");

    // THEN the organization is created with the key already in the secret,
    // which is left as it was
    assert_eq!(stack.secret().await, Some(before), "the stored key is used, not replaced");
    let principal = stack.api_app().authenticate_api_key(&orphan, None).await.expect("the stored key authenticates");
    assert_eq!(principal.org_id(), out.organization_id);
    assert_eq!(stack.organizations().await, [out.organization_id]);
}

#[tokio::test]
async fn two_concurrent_first_runs_create_one_organization_whose_key_is_in_the_secret() {
    // GIVEN a fresh stack, WHEN two operators invoke the function at once
    let stack = Stack::new().await;
    let (a, b) = (stack.bootstrap(), stack.bootstrap());
    let (ra, rb) = tokio::join!(a.handle(first_run_event()), b.handle(first_run_event()));

    // THEN one succeeds and the other is refused, naming the winner's organization
    let (won, refused) = match (ra, rb) {
        (Ok(w), Err(r)) | (Err(r), Ok(w)) => (w, r),
        other => panic!("exactly one of two concurrent runs must succeed, got {other:?}"),
    };
    match refused {
        BootstrapError::AlreadyBootstrapped { organization_id, .. } => {
            assert_eq!(organization_id, won.organization_id)
        }
        other => panic!("the other run must be refused as AlreadyBootstrapped, got {other:?}"),
    }
    // ... and the one organization's key is the one in the secret
    assert_eq!(stack.organizations().await, [won.organization_id.as_str()]);
    let (key, _) = stack.secret().await.expect("the secret exists");
    let principal = stack.api_app().authenticate_api_key(&key, None).await.expect("the stored key authenticates");
    assert_eq!(principal.org_id(), won.organization_id);
}

#[tokio::test]
async fn an_invalid_event_is_refused_before_anything_is_written() {
    let stack = Stack::new().await;
    for event in [
        json!({"organization_name": "   "}),
        json!({"organization_name": "x".repeat(101)}),
        json!({"organization_name": "line\nbreak"}),
        json!({}),
        json!({"organization_name": "Acme", "admin_key": "capy_live_..."}),
        json!("Acme"),
    ] {
        let r = stack.run(event.clone()).await;
        assert!(matches!(r, Err(BootstrapError::InvalidRequest(_))), "{event} must be an InvalidRequest: {r:?}");
    }
    let r = stack.run(json!({"organization_name": ""})).await;
    let Err(e) = r else { panic!("an empty name is refused") };
    assert!(e.to_string().contains("organization_name"), "the message names the field: {e}");
    assert_eq!(stack.secret().await, None, "no secret is written for an invalid event");
    assert!(stack.organizations().await.is_empty());
}

#[tokio::test]
async fn a_secret_that_holds_no_api_key_is_left_alone() {
    // GIVEN a secret of that name that the bootstrap did not write
    let stack = Stack::new().await;
    stack
        .secrets
        .create_secret()
        .name(&stack.secret_name)
        .secret_string(r#"{"password":"hunter2-not-a-key"}"#)
        .send()
        .await
        .expect("create an unrelated secret");
    let before = stack.secret().await;

    // WHEN the function runs, THEN it creates nothing and says why
    let r = stack.run(first_run_event()).await;
    let Err(BootstrapError::SecretInTheWay(message)) = r else {
        panic!("a foreign secret must stop the run as SecretInTheWay, got {r:?}");
    };
    assert!(message.contains(&stack.secret_name), "{message}");
    assert!(!message.contains("hunter2"), "the message must not show the secret's value: {message}");
    assert_eq!(stack.secret().await, before, "the secret is untouched");
    assert!(stack.organizations().await.is_empty());
}

#[tokio::test]
async fn a_refusal_says_so_when_the_secret_is_gone() {
    let stack = Stack::new().await;
    let first = stack.run(first_run_event()).await.expect("the first run succeeds");
    stack
        .secrets
        .delete_secret()
        .secret_id(&stack.secret_name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete the secret");

    let r = stack.run(first_run_event()).await;
    let Err(BootstrapError::AlreadyBootstrapped { organization_id, message }) = r else {
        panic!("a run after the secret was deleted is still refused, got {r:?}");
    };
    assert_eq!(organization_id, first.organization_id);
    assert!(message.contains("no longer exists"), "{message}");
    assert_eq!(stack.secret().await, None, "no secret is written by a refused run");
}

/// Everything logged through `tracing` in this test binary, as the
/// function's JSON lines, at the most verbose level (the SDK's and the
/// runtime's lines included). Installed globally by the first `Stack`: a
/// per-test default subscriber misses lines when tests run in parallel,
/// because tracing caches each log site's interest process-wide.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        logs
    })
}

#[tokio::test]
async fn the_key_never_appears_in_the_logs_even_at_trace_level() {
    // GIVEN a first run, a run that reuses a stored key and a refused run
    let stack = Stack::new().await;
    let orphan = apikey::generate(apikey::LIVE_PREFIX);
    stack.secrets.create_secret().name(&stack.secret_name).secret_string(&orphan).send().await.expect("store a key");
    stack.run(first_run_event()).await.expect("the run after a crash succeeds");
    let refused = stack.run(first_run_event()).await;
    assert!(matches!(refused, Err(BootstrapError::AlreadyBootstrapped { .. })), "{refused:?}");
    let fresh = Stack::new().await;
    fresh.run(first_run_event()).await.expect("the first run succeeds");
    let (fresh_key, _) = fresh.secret().await.expect("the secret exists");

    // THEN no log line holds either key. (The prefix `capy_live_` does
    // appear: the SDK logs DynamoDB answers at TRACE, and a key's record
    // holds its prefix and last four characters, which are not secret.)
    let text = String::from_utf8_lossy(&logs().0.lock().expect("the log buffer")).to_string();
    assert!(text.contains(&format!("\"secret_arn\":\"{}", fresh.secret_arn().await)), "the capture works");
    for key in [&orphan, &fresh_key] {
        assert!(!text.contains(key.as_str()), "a key was logged");
    }
}
