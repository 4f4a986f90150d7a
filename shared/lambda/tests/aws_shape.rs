//! The deployed shape on the AWS emulator: the table, queues, bus and rule
//! created from `infra/template.yaml`'s resource definitions (parsed), API
//! Gateway HTTP API events (built from the `events/` fixtures) fed to the
//! route-group functions' routers, the worker fed SQS batches read from the
//! emulator's jobs queue, the webhook-delivery handler fed from the webhook
//! queue that the EventBridge rule fills. Lambda's SQS event source mapping
//! is emulated as AWS documents it: failed records stay, the others are deleted.
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use capydb_aws::sdk::{dynamodb, sqs, ssm};
use capydb_aws::testkit::{self, QueuePair, Template};
use capydb_domain::App;
use capydb_lambda::events::aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use capydb_lambda::{self as lambda, Config};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[path = "../../../tests/tests/e2e/support.rs"]
mod support;

use support::*;

/// One app per function role, as deployed: the API functions' (no database
/// management, no webhook egress), the webhooks functions', the worker's.
struct Deployed {
    api: App,
    webhooks_app: App,
    worker: App,
    /// The sweeper's app, where a test runs it.
    sweeper: Option<App>,
    config: Config,
    template: Template,
    sqs: sqs::Client,
    dynamodb: dynamodb::Client,
    jobs: QueuePair,
    webhooks: QueuePair,
    key: String,
    org_id: String,
}

/// Creates the stack's stateful resources on moto and the app the functions build.
async fn deploy(job_max_attempts: u32) -> Deployed {
    deploy_with(job_max_attempts, 6000, Default::default()).await
}

async fn deploy_with(job_max_attempts: u32, rate_limit_per_minute: u32, clerk: capydb_clerk::ClerkConfig) -> Deployed {
    let sdk = testkit::sdk_config().await;
    let template = Template::load();
    let dynamodb = dynamodb::Client::new(&sdk);
    let sqs = sqs::Client::new(&sdk);
    let table = testkit::unique("capydb");
    testkit::create_table(&dynamodb, &template, &table).await;
    let jobs = testkit::create_queue_pair(&sqs, &template, "JobsQueue", None).await;
    let webhooks = testkit::create_queue_pair(&sqs, &template, "WebhookQueue", None).await;
    let bus =
        testkit::create_bus_and_rule(&capydb_aws::sdk::eventbridge::Client::new(&sdk), &template, &webhooks.arn).await;
    let kms_key = testkit::create_key(&capydb_aws::sdk::kms::Client::new(&sdk)).await;

    // The admin URL without its password, which lives in SSM as in production.
    let mut admin = url::Url::parse(&shared_postgres_url()).expect("admin url");
    let password = admin.password().expect("the test cluster has an admin password").to_string();
    admin.set_password(None).expect("strip the password");
    let param = format!("/capydb/{}/pg-admin-password", testkit::unique("t"));
    ssm::Client::new(&sdk)
        .put_parameter()
        .name(&param)
        .value(password)
        .r#type(ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("store the admin password");

    let config = Config {
        table,
        jobs_queue_url: jobs.url.clone(),
        jobs_dead_letter_url: Some(jobs.dead_letter_url.clone()),
        webhook_queue_url: webhooks.url.clone(),
        webhook_dead_letter_url: Some(webhooks.dead_letter_url.clone()),
        event_bus: bus,
        kms_key_id: kms_key,
        databases: capydb_lambda::config::Databases::Server {
            admin_url: admin.to_string(),
            password_param: Some(param),
        },
        pg_version: "15".into(),
        final_snapshot_retention_days: 30,
        artifact_dir: temp_dir("aws-artifacts"),
        jobs_max_receives: jobs.max_receives,
        allow_private_egress: true,
        region: "us-east-1".into(),
        job_max_attempts,
        rate_limit_per_minute,
        cli_login_rate_limit_per_minute: 10,
        cli_verification_url: None,
        quotas: capydb_domain::app::QuotaSettings::default(),
        clerk,
    };
    let sdk = capydb_aws::client::SdkCell::ready(sdk);
    let api = lambda::app(&config, &sdk, lambda::Role::api(&config).expect("api role"));
    let webhooks_app = lambda::app(&config, &sdk, lambda::Role::webhooks(&config).expect("webhooks role"));
    let worker = lambda::app(&config, &sdk, lambda::Role::server_worker(&config, &sdk).expect("worker role"));
    let wrong = lambda::Role::aurora_worker(&config, &sdk).err().expect("the aurora worker refuses postgres-server");
    assert!(wrong.contains("`worker`"), "{wrong}");
    let app = api.clone();
    let (org, key) =
        capydb_domain::organizations::create_organization(app.store.as_ref(), app.now(), "aws shape", None)
            .await
            .expect("bootstrap an organization");
    Deployed {
        api,
        webhooks_app,
        worker,
        sweeper: None,
        config,
        template,
        sqs,
        dynamodb,
        jobs,
        webhooks,
        key,
        org_id: org.id,
    }
}

/// The deployed shape with `DatabaseProvider=aurora`: the same stack, its
/// worker making clusters through moto's RDS API, each cluster stood in for
/// by a local PostgreSQL server (`StandIns`, the worker's resolver). Waits
/// are a second or two instead of 15 s and more, so a job takes seconds.
async fn deploy_aurora() -> (Deployed, std::sync::Arc<capydb_aurora::standin::StandIns>) {
    let mut aws = deploy(capydb_domain::JobSettings::default().max_attempts).await;
    let sdk = testkit::sdk_config().await;
    aws.config.databases =
        capydb_lambda::config::Databases::Aurora(capydb_aurora::standin::settings(Duration::from_secs(1)));
    aws.config.pg_version = "16".into();
    let rds = capydb_aurora::aws_sdk_rds::Client::new(&sdk);
    let stand_ins = std::sync::Arc::new(capydb_aurora::standin::StandIns::new(rds, temp_dir("aurora-standins")));
    let sdk = capydb_aws::client::SdkCell::ready(sdk);
    let quick = |app: App| {
        let jobs = capydb_domain::JobSettings {
            wait_first: Duration::from_secs(1),
            wait_cap: Duration::from_secs(2),
            ..app.settings.jobs.clone()
        };
        let settings = capydb_domain::Settings { jobs, ..app.settings.clone() };
        App::new(capydb_domain::AppParts { settings, ..capydb_domain::AppParts::clone(&app) })
    };
    let config = &aws.config;
    aws.api = quick(lambda::app(config, &sdk, lambda::Role::api(config).expect("api role")));
    aws.webhooks_app = quick(lambda::app(config, &sdk, lambda::Role::webhooks(config).expect("webhooks role")));
    // The worker's clusters resolved to the stand-ins (plaintext: they speak
    // no TLS), which keep what each backup's snapshot holds as it completes.
    let mut worker = lambda::Role::aurora_worker(config, &sdk).expect("worker role");
    // Each worker binary runs only its own provider, and says which to deploy.
    let wrong = lambda::Role::server_worker(config, &sdk).err().expect("the postgres-server worker refuses aurora");
    assert!(wrong.contains("worker-aurora"), "{wrong}");
    let servers = lambda::providers::LazyServers::of(config, &sdk, stand_ins.clone()).expect("servers").without_tls();
    worker.servers = Some(std::sync::Arc::new(capydb_aurora::standin::Capturing {
        inner: std::sync::Arc::new(servers),
        stand_ins: stand_ins.clone(),
    }));
    aws.worker = quick(lambda::app(config, &sdk, worker));
    aws.sweeper = Some(lambda::app(config, &sdk, lambda::Role::sweeper(config, &sdk).expect("sweeper role")));
    (aws, stand_ins)
}

fn events_dir() -> PathBuf {
    workspace_root().join("events")
}

/// The function `infra/template.yaml` routes `method path` to (matching
/// `{param}` segments), by its `BuildProperties.Binary`.
fn function_for(template: &Template, method: &str, path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    for id in template.of_type("AWS::Serverless::Function") {
        let f = template.resource(&id);
        let events = f["Properties"]["Events"].as_object().cloned().unwrap_or_default();
        for e in events.values().filter(|e| e["Type"] == "HttpApi") {
            let (m, p) =
                (e["Properties"]["Method"].as_str().unwrap_or(""), e["Properties"]["Path"].as_str().unwrap_or(""));
            let psegs: Vec<&str> = p.split('/').collect();
            let matches = m.eq_ignore_ascii_case(method)
                && psegs.len() == segs.len()
                && psegs.iter().zip(&segs).all(|(a, b)| a.starts_with('{') || a == b);
            if matches {
                return f["Metadata"]["BuildProperties"]["Binary"].as_str().expect("Binary").to_string();
            }
        }
    }
    panic!("infra/template.yaml routes no function for {method} {path}");
}

impl Deployed {
    /// Sends one API Gateway HTTP API (payload 2.0) event through the router
    /// of the function the template routes it to. The event is the
    /// `events/projects.create.json` fixture with this request's method,
    /// path, credential and body.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, body) = self.call_from(None, &[], method, path, body).await;
        (status, body)
    }

    /// `call`, from another client address than the fixture's and with more
    /// headers, answering the headers too.
    async fn call_from(
        &self,
        source_ip: Option<&str>,
        headers: &[(&str, &str)],
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, http::HeaderMap, Value) {
        let mut event: Value =
            serde_json::from_slice(&std::fs::read(events_dir().join("projects.create.json")).expect("fixture"))
                .expect("fixture JSON");
        let route = format!("{method} {path}");
        event["routeKey"] = json!(route);
        event["rawPath"] = json!(path);
        event["requestContext"]["routeKey"] = json!(route);
        event["requestContext"]["http"]["method"] = json!(method);
        event["requestContext"]["http"]["path"] = json!(path);
        event["headers"]["authorization"] = json!(format!("Bearer {}", self.key));
        for (k, v) in headers {
            event["headers"][*k] = json!(v);
        }
        event["pathParameters"] = json!({});
        if let Some(ip) = source_ip {
            event["requestContext"]["http"]["sourceIp"] = json!(ip);
        }
        match body {
            Some(b) => event["body"] = json!(b.to_string()),
            None => {
                event.as_object_mut().unwrap().remove("body");
            }
        }
        let request =
            capydb_lambda::events::lambda_http::request::from_str(&event.to_string()).expect("a valid API GW event");
        let function = function_for(&self.template, method, path);
        let groups = capydb_api::groups_of(&function).expect("an API function");
        // The webhooks function alone checks webhook targets (and so has the egress client).
        let app = if function == "webhooks" { &self.webhooks_app } else { &self.api };
        let response = lambda::routes(app.clone(), groups).oneshot(request).await.expect("router");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Reads up to 10 messages of `queue` as Lambda's event source mapping
    /// would and builds the SQS event it hands the function.
    async fn poll(&self, queue: &QueuePair) -> Option<SqsEvent> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .message_system_attribute_names(sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let records: Vec<Value> = out
            .messages()
            .iter()
            .map(|m| {
                let attrs: HashMap<String, String> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attrs,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue.arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        if records.is_empty() {
            return None;
        }
        Some(serde_json::from_value(json!({ "Records": records })).expect("an SQS event"))
    }

    /// What the event source mapping does with the function's answer:
    /// deletes every record not reported as failed.
    async fn settle(&self, queue: &QueuePair, event: &SqsEvent, response: &SqsBatchResponse) -> usize {
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        for r in &event.records {
            if !failed.contains(&r.message_id.as_deref().unwrap_or_default()) {
                self.sqs
                    .delete_message()
                    .queue_url(&queue.url)
                    .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        failed.len()
    }

    /// One worker invocation, if the jobs queue has messages.
    async fn run_worker(&self) -> Option<SqsBatchResponse> {
        let event = self.poll(&self.jobs).await?;
        let response = lambda::worker_batch(self.worker.clone(), self.config.jobs_max_receives, event.clone()).await;
        self.settle(&self.jobs, &event, &response).await;
        Some(response)
    }

    /// One webhook-delivery invocation, if the webhook queue has messages.
    async fn run_webhook_delivery(&self) -> Option<SqsBatchResponse> {
        let event = self.poll(&self.webhooks).await?;
        let response = lambda::webhook_batch(self.webhooks_app.clone(), event.clone()).await;
        self.settle(&self.webhooks, &event, &response).await;
        Some(response)
    }

    async fn job_state(&self, job_id: &str) -> Value {
        let (status, job) = self.call("GET", &format!("/v1/jobs/{job_id}"), None).await;
        assert_eq!(status, 200, "GET /v1/jobs/{job_id}: {job}");
        job
    }

    /// Runs the worker until the job is terminal.
    async fn finish(&self, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let job = self.job_state(job_id).await;
            if matches!(job["job"]["state"].as_str(), Some("completed" | "failed")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} did not finish: {job}");
            if self.run_worker().await.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_project_goes_from_post_to_a_real_database_and_a_signed_webhook_on_the_aws_shape() {
    let aws = deploy(capydb_domain::JobSettings::default().max_attempts).await;
    let receiver = Receiver::start().await;

    // A webhook endpoint, through the webhooks function.
    let (status, created) = aws
        .call(
            "POST",
            &format!("/v1/organizations/{}/webhooks", aws.org_id),
            Some(json!({ "url": receiver.url("hook"), "events": ["*"] })),
        )
        .await;
    assert_eq!(status, 201, "create the webhook endpoint: {created}");
    let secret = created["secret"].as_str().expect("the secret, once").to_string();

    // POST /v1/projects through the projects function: 202 and a queued job.
    let (status, body) = aws.call("POST", "/v1/projects", Some(json!({ "name": "aws-shape" }))).await;
    assert_eq!(status, 202, "create the project: {body}");
    let project_id = body["project"]["id"].as_str().expect("project id").to_string();
    let job_id = body["job"]["id"].as_str().expect("job id").to_string();

    let job = aws.finish(&job_id).await;
    assert_eq!(job["job"]["state"], "completed", "the provision job: {job}");

    // A real database: the connection string the API hands out works.
    let (status, conn) = aws.call("GET", &format!("/v1/projects/{project_id}/connections"), None).await;
    assert_eq!(status, 200, "connections: {conn}");
    let uri = conn[0]["uri"].as_str().unwrap_or_else(|| panic!("a connection URI in {conn}")).to_string();
    let (client, connection) =
        tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.expect("connect as the project");
    tokio::spawn(connection);
    let one: i32 = client.query_one("SELECT 1", &[]).await.expect("SELECT 1").get(0);
    assert_eq!(one, 1);

    // The events went out on EventBridge; the rule filled the webhook queue;
    // webhook-delivery fans them out and sends them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !receiver.got_any("hook", "project.ready") {
        assert!(Instant::now() < deadline, "project.ready never arrived at the receiver");
        if aws.run_webhook_delivery().await.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let got = receiver.wait("hook", "project.ready", |g| g.iter().any(|r| event_type(r) == "project.ready")).await;
    let ready = got.iter().find(|r| event_type(r) == "project.ready").expect("project.ready");
    let payload: Value = serde_json::from_str(&ready.body).expect("JSON payload");
    assert_eq!(payload["data"]["project"]["id"], project_id.as_str());
    assert!(!ready.body.contains(&uri), "a webhook must not carry the connection string");
    // Verified by the standardwebhooks package, not by our own code.
    let tampered = Received { body: ready.body.replace("ready", "READY"), ..ready.clone() };
    assert_eq!(verify_independently(&[(&secret, ready, true), (&secret, &tampered, false)]), 1);

    // The key's last use is recorded with the caller's address from API
    // Gateway's request context (the fixture's sourceIp), not a TCP peer.
    let (status, keys) = aws.call("GET", &format!("/v1/organizations/{}/api-keys", aws.org_id), None).await;
    assert_eq!(status, 200, "list keys: {keys}");
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(events_dir().join("projects.create.json")).unwrap()).unwrap();
    let source_ip = fixture["requestContext"]["http"]["sourceIp"].as_str().expect("the fixture's sourceIp");
    let listed = keys["data"].as_array().or(keys.as_array()).cloned().unwrap_or_default();
    assert!(
        listed.iter().any(|k| k["last_used_ip"] == source_ip),
        "the key's last_used_ip is the caller's sourceIp {source_ip}: {keys}"
    );
}

/// A database `name` on the tests' PostgreSQL server, owned by a role of
/// the same name, with a table `orders (id int)` filled by `rows`: its URL.
async fn source_database(name: &str, rows: &str) -> String {
    let admin = shared_postgres_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("the test server");
    tokio::spawn(connection);
    let name = format!(
        "{name}_{}",
        testkit::unique("s").to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let password = "Imp0rtSourcePassw0rdImp0rtSource";
    client.batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'")).await.expect("the source's role");
    client.batch_execute(&format!("CREATE DATABASE {name} OWNER {name}")).await.expect("the source database");
    let port = url::Url::parse(&admin).unwrap().port().unwrap_or(5432);
    let source = format!("postgres://{name}:{password}@127.0.0.1:{port}/{name}");
    let (owner, connection) =
        tokio_postgres::connect(&source, tokio_postgres::NoTls).await.expect("the source's owner");
    tokio::spawn(connection);
    owner.batch_execute(&format!("CREATE TABLE orders (id int); {rows}")).await.expect("the source's rows");
    source
}

/// Logs in with a connection the API handed out, at the server standing in
/// for its cluster (the host is the cluster's endpoint; the stand-in is on
/// 127.0.0.1).
async fn connect_through(
    stand_ins: &capydb_aurora::standin::StandIns,
    conn: &Value,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let host = conn["host"].as_str().expect("a host");
    let address = capydb_aurora::Resolve::resolve(stand_ins, host, 5432).await.expect("a stand-in for the cluster");
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(address.port())
        .user(conn["user"].as_str().expect("a user"))
        .password(conn["password"].as_str().expect("a password"))
        .dbname(conn["database"].as_str().expect("a database"));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn a_project_and_a_clone_preview_get_aurora_clusters_of_their_own_on_the_aws_shape() {
    let (aws, stand_ins) = deploy_aurora().await;
    let rds = capydb_aurora::aws_sdk_rds::Client::new(&testkit::sdk_config().await);

    // The project: a cluster, its writer, then its role and database; ready
    // once its owner logged in.
    let (status, body) = aws.call("POST", "/v1/projects", Some(json!({ "name": "on-aurora" }))).await;
    assert_eq!(status, 202, "create the project: {body}");
    assert_eq!(body["project"]["pg_version"], "16", "the engine's major version");
    let project_id = body["project"]["id"].as_str().expect("project id").to_string();
    let job = aws.finish(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the provision job: {job}");
    let cluster = capydb_aurora::names::cluster(&project_id);
    let described = rds.describe_db_clusters().db_cluster_identifier(&cluster).send().await.expect("its cluster");
    assert_eq!(described.db_clusters()[0].deletion_protection(), Some(true));

    let (status, conn) = aws.call("GET", &format!("/v1/projects/{project_id}/connections"), None).await;
    assert_eq!(status, 200, "connections: {conn}");
    let project_conn = conn[0].clone();
    let host = project_conn["host"].as_str().unwrap().to_string();
    assert!(host.starts_with(&format!("{cluster}.")) && host.ends_with(".rds.amazonaws.com"), "{host}");
    assert_eq!((project_conn["port"].as_u64(), project_conn["sslmode"].as_str()), (Some(5432), Some("require")));
    let client = connect_through(&stand_ins, &project_conn).await.expect("the project's connection works");
    client.batch_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (42)").await.unwrap();

    // A clone preview: a copy-on-write clone of the project's cluster, the
    // project's database and role in it with the preview's password.
    let path = format!("/v1/projects/{project_id}/preview-databases");
    let (status, body) = aws.call("POST", &path, Some(json!({ "name": "pr-7", "mode": "clone" }))).await;
    assert_eq!(status, 202, "create the preview: {body}");
    let preview_id = body["preview"]["id"].as_str().expect("preview id").to_string();
    let job = aws.finish(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the preview job: {job}");
    let (status, conn) = aws.call("GET", &format!("/v1/preview-databases/{preview_id}/connections"), None).await;
    assert_eq!(status, 200, "preview connections: {conn}");
    let preview_conn = conn[0].clone();
    let preview_host = preview_conn["host"].as_str().unwrap();
    assert!(preview_host.starts_with(&format!("{}.", capydb_aurora::names::cluster(&preview_id))), "{preview_host}");
    assert_eq!(preview_conn["user"], project_conn["user"], "the project's role, in the clone");
    assert_ne!(preview_conn["password"], project_conn["password"], "with the preview's own password");
    let preview = connect_through(&stand_ins, &preview_conn).await.expect("the preview's connection works");
    let id: i32 = preview.query_one("SELECT id FROM orders", &[]).await.expect("the project's rows").get(0);
    assert_eq!(id, 42);
    let mut stale = preview_conn.clone();
    stale["password"] = project_conn["password"].clone();
    assert!(connect_through(&stand_ins, &stale).await.is_err(), "the project's password does not open the preview");

    // A backup is a cluster snapshot; restored into a preview, a cluster
    // made from it holds the data as it was then.
    let (status, body) = aws.call("POST", &format!("/v1/projects/{project_id}/backups"), Some(json!({}))).await;
    assert_eq!(status, 202, "create a backup: {body}");
    let backup_id = body["backup"]["id"].as_str().expect("backup id").to_string();
    let job = aws.finish(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the backup job: {job}");
    let (_, backup) = aws.call("GET", &format!("/v1/backups/{backup_id}"), None).await;
    let backup = &backup["backup"];
    assert_eq!((backup["state"].as_str(), &backup["size_bytes"]), (Some("completed"), &Value::Null), "{backup}");
    let snapshot = capydb_aurora::names::backup_snapshot(&backup_id);
    assert!(rds.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(&snapshot).send().await.is_ok());
    client.batch_execute("INSERT INTO orders VALUES (43)").await.unwrap();
    let body = json!({ "backup_id": backup_id, "mode": "preview", "preview_name": "from-backup" });
    let (status, restored) = aws.call("POST", &format!("/v1/projects/{project_id}/restores"), Some(body)).await;
    assert_eq!(status, 202, "restore into a preview: {restored}");
    let job = aws.finish(restored["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the restore job: {job}");
    let restored_id = restored["preview"]["id"].as_str().expect("the new preview").to_string();
    let (_, conn) = aws.call("GET", &format!("/v1/preview-databases/{restored_id}/connections"), None).await;
    let restored_db = connect_through(&stand_ins, &conn[0]).await.expect("the restored preview's connection works");
    let ids: Vec<i32> =
        restored_db.query("SELECT id FROM orders ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [42], "the data as of the backup");

    // Rotation: the new password works on the project's cluster, the old one no longer.
    let (status, body) = aws.call("POST", &format!("/v1/projects/{project_id}/credentials/rotate"), None).await;
    assert_eq!(status, 202, "rotate: {body}");
    let job = aws.finish(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the rotation: {job}");
    let (_, conn) = aws.call("GET", &format!("/v1/projects/{project_id}/connections"), None).await;
    let rotated = conn[0].clone();
    assert_ne!(rotated["password"], project_conn["password"]);
    connect_through(&stand_ins, &rotated).await.expect("the new password");
    assert!(connect_through(&stand_ins, &project_conn).await.is_err(), "the old password is refused");

    // Restored over the project: a cluster made from the backup's snapshot
    // takes the project's identifier (a safety snapshot first); the rotated
    // password is the one that works on it.
    let body = json!({ "backup_id": backup_id, "mode": "overwrite" });
    let (status, over) = aws.call("POST", &format!("/v1/projects/{project_id}/restores"), Some(body)).await;
    assert_eq!(status, 202, "restore over the project: {over}");
    let job = aws.finish(over["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the overwrite restore: {job}");
    let (_, conn) = aws.call("GET", &format!("/v1/projects/{project_id}/connections"), None).await;
    let after = conn[0].clone();
    assert!(after["host"].as_str().unwrap().starts_with(&format!("{cluster}.")), "{after}");
    let overwritten = connect_through(&stand_ins, &after).await.expect("today's password on the restored cluster");
    let ids: Vec<i32> =
        overwritten.query("SELECT id FROM orders ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [42], "the project's data as of the backup");
    for spare in [capydb_aurora::names::replacement(&project_id), capydb_aurora::names::retired(&project_id)] {
        let found = rds.describe_db_clusters().db_cluster_identifier(&spare).send().await;
        assert!(found.is_err(), "{spare} is removed");
    }
    let safety = over["restore"]["safety_backup_id"].as_str().expect("a safety backup").to_string();
    let safety_snapshot = capydb_aurora::names::backup_snapshot(&safety);
    assert!(rds.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(&safety_snapshot).send().await.is_ok());

    // An import over the project: pg_dump of another server, pg_restore
    // into a scratch database on the project's cluster (as its master
    // user, not a superuser), swapped in under the project's name.
    let source = source_database("aurora_import_src", "INSERT INTO orders VALUES (7), (8)").await;
    let (status, import) =
        aws.call("POST", &format!("/v1/projects/{project_id}/imports"), Some(json!({ "source_url": source }))).await;
    assert_eq!(status, 202, "import: {import}");
    let job = aws.finish(import["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the import: {job}");
    let imported = connect_through(&stand_ins, &after).await.expect("the project's connection after the import");
    let ids: Vec<i32> =
        imported.query("SELECT id FROM orders ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [7, 8], "the imported data");

    // A deleted backup's snapshot goes at the sweeper's next run.
    let (status, body) = aws.call("DELETE", &format!("/v1/backups/{backup_id}"), None).await;
    assert_eq!(status, 200, "delete the backup: {body}");
    let report = lambda::sweep(aws.sweeper.as_ref().expect("the sweeper")).await.expect("a clean sweep");
    assert_eq!(report.deleted_snapshots, 1, "{report:?}");
    assert!(rds.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(&snapshot).send().await.is_err());

    // Deleting the preview removes its cluster; deleting the project
    // removes its own, leaving a final snapshot.
    let (status, body) = aws.call("DELETE", &format!("/v1/preview-databases/{preview_id}"), None).await;
    assert_eq!(status, 202, "delete the preview: {body}");
    let job = aws.finish(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the preview's deletion: {job}");
    let gone =
        rds.describe_db_clusters().db_cluster_identifier(capydb_aurora::names::cluster(&preview_id)).send().await;
    assert!(gone.is_err(), "the preview's cluster is gone");
    let (status, body) = aws.call("DELETE", &format!("/v1/projects/{project_id}"), None).await;
    assert_eq!(status, 202, "delete the project: {body}");
    let job = aws.finish(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "completed", "the project's deletion: {job}");
    assert!(rds.describe_db_clusters().db_cluster_identifier(&cluster).send().await.is_err(), "its cluster is gone");
    let last = capydb_aurora::names::final_snapshot(&project_id);
    let snapshot = rds.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(&last).send().await;
    assert!(snapshot.is_ok(), "the project's final snapshot is kept");

    // No shared server to ask about.
    let (status, health) = aws.call("GET", "/v1/health", None).await;
    assert_eq!((status, health["database"].as_str()), (200, Some("not_applicable")), "{health}");
}

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_queue_and_its_job_failed_while_its_batch_succeeds() {
    // One run per job before a retryable error fails it, so the poison
    // message fails on every delivery instead of backing off first.
    let aws = deploy(1).await;
    let (s1, good) = aws.call("POST", "/v1/projects", Some(json!({ "name": "healthy" }))).await;
    let (s2, bad) = aws.call("POST", "/v1/projects", Some(json!({ "name": "poison" }))).await;
    assert_eq!((s1, s2), (202, 202), "{good} {bad}");
    let good_job = good["job"]["id"].as_str().unwrap().to_string();
    let bad_job = bad["job"]["id"].as_str().unwrap().to_string();
    let bad_project = bad["project"]["id"].as_str().unwrap().to_string();

    // The poison: the project's record as a newer release might write it,
    // with a state this code does not know. Every run of its job fails to
    // read it, and so does failing the job normally.
    aws.dynamodb
        .update_item()
        .table_name(&aws.config.table)
        .key("pk", dynamodb::types::AttributeValue::S(format!("PRJ#{bad_project}")))
        .key("sk", dynamodb::types::AttributeValue::S("PRJ".into()))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "state")
        .expression_attribute_values(":s", dynamodb::types::AttributeValue::S("hibernating".into()))
        .send()
        .await
        .expect("corrupt the project");

    // Both messages in one batch (as the event source mapping may batch
    // them): the healthy one succeeds, only the poison is reported failed.
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.len() < 2 {
        assert!(Instant::now() < deadline, "the jobs queue never delivered both messages");
        if let Some(event) = aws.poll(&aws.jobs).await {
            records.extend(event.records);
        }
    }
    let mut event = SqsEvent::default();
    event.records = records;
    let response = lambda::worker_batch(aws.worker.clone(), aws.config.jobs_max_receives, event.clone()).await;
    aws.settle(&aws.jobs, &event, &response).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    let poison_id = event
        .records
        .iter()
        .find(|r| r.body.as_deref().unwrap_or_default().contains(&bad_job))
        .and_then(|r| r.message_id.as_deref())
        .expect("the poison message was in the batch");
    assert_eq!(failed, [poison_id], "only the poison message fails its batch");
    assert_eq!(aws.finish(&good_job).await["job"]["state"], "completed", "the healthy job completes");

    // The poison keeps failing until SQS gives up on it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dead = aws
            .sqs
            .receive_message()
            .queue_url(&aws.jobs.dead_letter_url)
            .visibility_timeout(0)
            .send()
            .await
            .expect("peek at the DLQ");
        if let Some(m) = dead.messages().first() {
            assert!(m.body().unwrap_or_default().contains(&bad_job), "the poison message is the dead letter");
            break;
        }
        assert!(Instant::now() < deadline, "the poison message never reached the dead-letter queue");
        if aws.run_worker().await.is_none() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let job = aws.job_state(&bad_job).await;
    assert_eq!(job["job"]["state"], "failed", "the poison's job is failed, not left running: {job}");
    assert!(
        job["job"]["error"].as_str().unwrap_or_default().contains("dead-letter"),
        "the job says why it failed: {job}"
    );
}

#[tokio::test]
async fn the_rate_limit_counts_each_source_ip_in_dynamodb_across_functions() {
    let aws = deploy_with(capydb_domain::JobSettings::default().max_attempts, 3, Default::default()).await;
    // Distinct addresses per run: the counters live in the (shared) emulator.
    let ip = format!("198.51.100.{}", 1 + std::process::id() % 250);
    let other = format!("203.0.113.{}", 1 + std::process::id() % 250);
    // Three requests through two different functions share one counter...
    let mut remaining = Vec::new();
    for (method, path) in [("GET", "/v1/me".to_string()), ("GET", "/v1/projects".into()), ("GET", "/v1/me".into())] {
        let (status, headers, body) = aws.call_from(Some(&ip), &[], method, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(headers["ratelimit-limit"], "3");
        remaining.push(headers["ratelimit-remaining"].to_str().unwrap().to_string());
    }
    let (status, headers, body) = aws.call_from(Some(&ip), &[], "GET", "/v1/me", None).await;
    if remaining != ["2", "1", "0"] {
        // The minute ended during the three requests; the counting itself is
        // covered by the rate-limiter contract. Nothing more to check here.
        return;
    }
    assert_eq!(status, 429, "the fourth request in the minute is refused: {body}");
    assert!(headers.contains_key("retry-after"));
    assert!(body["error"].as_str().unwrap_or_default().contains("rate limit"), "{body}");
    // ... and another address has its own.
    let (status, _, _) = aws.call_from(Some(&other), &[], "GET", "/v1/me", None).await;
    assert_eq!(status, 200, "another address is not limited by the first one's requests");
}

/// Ten parallel retries of one create with one `Idempotency-Key`, through
/// the projects function on DynamoDB: one project and one job; every
/// answer is the first one replayed or `409` while it ran.
#[tokio::test]
async fn ten_parallel_creates_with_one_idempotency_key_make_one_project_on_dynamodb() {
    let aws = deploy(capydb_domain::JobSettings::default().max_attempts).await;
    let key = format!("aws-idem-{}", std::process::id());
    let headers = [("idempotency-key", key.as_str())];
    let body = json!({"name": "idem"});
    let answers = capydb_domain::contract::futures_join_all(
        (0..10).map(|_| aws.call_from(None, &headers, "POST", "/v1/projects", Some(body.clone()))),
    )
    .await;
    let first: Vec<_> =
        answers.iter().filter(|(s, h, _)| *s == 202 && !h.contains_key("idempotent-replayed")).collect();
    assert_eq!(first.len(), 1, "one request ran: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    let first_body = &first[0].2;
    for (status, _, body) in &answers {
        match status {
            202 => assert_eq!(body, first_body, "a replay is the first answer"),
            409 => assert!(body["error"].as_str().unwrap_or_default().contains("still in progress"), "{body}"),
            other => panic!("unexpected HTTP {other}: {body}"),
        }
    }
    let (status, projects) = aws.call("GET", "/v1/projects", None).await;
    assert_eq!(status, 200);
    let named: Vec<&Value> = projects.as_array().unwrap().iter().filter(|p| p["name"] == "idem").collect();
    assert_eq!(named.len(), 1, "one project: {projects}");
    let (status, _, again) = aws.call_from(None, &headers, "POST", "/v1/projects", Some(body)).await;
    assert_eq!((status, &again), (202, first_body), "later, a replay still");
}

/// The CLI login on DynamoDB through the identity function: start,
/// approve with a Clerk session, exchange once, use, revoke.
#[tokio::test]
async fn the_cli_login_runs_on_dynamodb_through_the_identity_function() {
    let key = capydb_clerk::testkit::TestKey::generate();
    let clerk = capydb_clerk::ClerkConfig { jwt_key_pem: Some(key.public_pem.clone()), ..Default::default() };
    let aws = deploy_with(capydb_domain::JobSettings::default().max_attempts, 6000, clerk).await;
    // The CLI bucket's counters live in the (shared) emulator: an address of this run.
    let ip = format!("192.0.2.{}", 1 + std::process::id() % 250);
    let cli = |method: &'static str, path: String, auth: Option<String>, body: Option<Value>| {
        let (aws, ip) = (&aws, ip.clone());
        async move {
            let auth = auth.map(|a| format!("Bearer {a}"));
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
            aws.call_from(Some(&ip), &headers, method, &path, body).await
        }
    };
    let (status, headers, login) = cli("POST", "/v1/cli/login".into(), None, None).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(headers["ratelimit-limit"], "10", "the CLI login's own bucket");
    assert!(login["verification_uri"].as_str().unwrap().ends_with("/v1/cli/login/approve"), "{login}");
    let now = chrono::Utc::now().timestamp();
    let admin = key.sign(
        None,
        &json!({"sub": "user_aws", "iat": now - 5, "nbf": now - 5, "exp": now + 600,
                "org_id": "org_clerk_aws", "org_role": "org:admin"}),
    );
    let (status, _, approved) =
        cli("POST", "/v1/cli/login/approve".into(), Some(admin), Some(json!({"user_code": login["user_code"]}))).await;
    assert_eq!((status, approved["status"].as_str()), (200, Some("approved")), "{approved}");
    let device = json!({"device_code": login["device_code"]});
    let (status, _, token) = cli("POST", "/v1/cli/login/token".into(), None, Some(device.clone())).await;
    assert_eq!(status, 200, "{token}");
    let (status, _, again) = cli("POST", "/v1/cli/login/token".into(), None, Some(device)).await;
    assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")), "exchanged once: {again}");
    let token_value = token["token"].as_str().unwrap().to_string();
    let (status, _, me) = cli("GET", "/v1/me".into(), Some(token_value.clone()), None).await;
    assert_eq!((status, me["principal"]["kind"].as_str()), (200, Some("cli_session")), "{me}");
    let id = token["cli_session"]["id"].as_str().unwrap();
    let (status, _, listed) = cli("GET", "/v1/cli/sessions".into(), Some(token_value.clone()), None).await;
    assert_eq!((status, listed[0]["id"].as_str()), (200, Some(id)), "{listed}");
    let (status, _, revoked) = cli("DELETE", format!("/v1/cli/sessions/{id}"), Some(token_value.clone()), None).await;
    assert_eq!(status, 200, "{revoked}");
    let (status, _, me) = cli("GET", "/v1/me".into(), Some(token_value), None).await;
    assert_eq!(status, 401, "revoked: {me}");
}

#[tokio::test]
async fn every_template_route_reaches_a_handler_of_its_function() {
    // Each HttpApi route of infra/template.yaml, sent through its function's
    // router, must reach a handler (a 401 without credentials), never the
    // router's 404: the template and the routers agree.
    let template = Template::load();
    let app = in_memory_app().await;
    let mut seen = 0;
    for id in template.of_type("AWS::Serverless::Function") {
        let f = template.resource(&id);
        let binary = f["Metadata"]["BuildProperties"]["Binary"].as_str().expect("Binary").to_string();
        let Some(groups) = capydb_api::groups_of(&binary) else { continue };
        let events = f["Properties"]["Events"].as_object().cloned().unwrap_or_default();
        for e in events.values().filter(|e| e["Type"] == "HttpApi") {
            let (method, path) =
                (e["Properties"]["Method"].as_str().unwrap(), e["Properties"]["Path"].as_str().unwrap());
            if path == "$default" {
                continue;
            }
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x_1".to_string() } else { s.to_string() })
                .collect::<Vec<_>>()
                .join("/");
            let req = http::Request::builder().method(method).uri(&concrete).body(axum::body::Body::empty()).unwrap();
            let resp = lambda::routes(app.clone(), groups).oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            // The document and the health check need no credential.
            match path {
                "/v1/openapi.json" => assert_eq!(status, 200, "{method} {path} on function {binary}"),
                // The CLI login's start and poll take no credential: reached, they answer (the
                // start fails on this emulator without a table, the poll refuses an empty body).
                "/v1/cli/login" | "/v1/cli/login/token" => {
                    assert!(!matches!(status, 401 | 404 | 405), "{method} {path} on function {binary}: {status}")
                }
                "/v1/health" => assert!(matches!(status, 200 | 503), "{method} {path} on function {binary}: {status}"),
                _ => assert_eq!(status, 401, "{method} {path} on function {binary}"),
            }
            seen += 1;
        }
    }
    assert!(seen >= 41, "every API operation is routed ({seen})");
}

/// The functions' app on an emulator whose resources do not exist, for
/// routing checks that never reach a port (the health check's answer may be 503).
async fn in_memory_app() -> App {
    let config = Config {
        table: testkit::unique("no-such-table"),
        jobs_queue_url: "http://127.0.0.1:9/jobs".into(),
        jobs_dead_letter_url: None,
        webhook_queue_url: "http://127.0.0.1:9/webhooks".into(),
        webhook_dead_letter_url: None,
        event_bus: "unused".into(),
        kms_key_id: "unused".into(),
        databases: capydb_lambda::config::Databases::Server {
            admin_url: "postgres://capydb_admin@127.0.0.1:9/postgres".into(),
            password_param: None,
        },
        pg_version: "15".into(),
        final_snapshot_retention_days: 30,
        artifact_dir: temp_dir("aws-routes"),
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
    let sdk = capydb_aws::client::SdkCell::ready(testkit::sdk_config().await);
    lambda::app(&config, &sdk, lambda::Role::server_worker(&config, &sdk).expect("the worker role"))
}
