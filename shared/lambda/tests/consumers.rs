//! One contract for both queue consumers: `capydb-local`'s consumer loop on
//! the SQLite queue, and the functions' SQS batch handler on SQS (moto, with
//! the template's redrive policy), fed as Lambda's event source mapping
//! feeds it (records from a receive; the records it does not report as
//! failures are deleted). Both settle through the domain's one runtime, so
//! both must:
//! - fail a job whose message dead-letters, with the reason in its `error`;
//! - never count a planned wait toward the dead-letter limit.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capydb_aws::client::SdkCell;
use capydb_aws::sdk::{dynamodb, sqs};
use capydb_aws::testkit::{self, Template};
use capydb_aws::SqsQueue;
use capydb_domain::jobs::{Disposition, JobMessage};
use capydb_domain::model::{Job, JobSpec, JobState, Project, ProjectState};
use capydb_domain::ports::{Admission, JobQueue, ResourceWrite};
use capydb_domain::runtime::{Consumer, JobHandler, MessageHandler};
use capydb_domain::App;
use capydb_embedded::SqliteQueue;
use capydb_lambda::events::aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use capydb_lambda::{Config, Role};

/// The dead-letter limit of every queue here.
const MAX_RECEIVES: u32 = 3;

/// Which consumer carries the messages.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `capydb_domain::runtime::Consumer`, as `capydb-local` spawns it.
    Local,
    /// `capydb_lambda::sqs_batch`, as the worker function runs it.
    Lambda,
}

/// A queue of the shape's kind with a dead-letter limit of `MAX_RECEIVES`.
async fn queue(shape: Shape) -> Arc<dyn JobQueue> {
    match shape {
        Shape::Local => {
            let dir = std::env::temp_dir().join(capydb_domain::ids::new_id("consumers"));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Arc::new(SqliteQueue::open(&dir.join("q.db"), "jobs", MAX_RECEIVES).expect("sqlite queue"))
        }
        Shape::Lambda => {
            let sdk = testkit::sdk_config().await;
            let client = sqs::Client::new(&sdk);
            let pair = testkit::create_queue_pair(&client, &Template::load(), "JobsQueue", Some(MAX_RECEIVES)).await;
            assert_eq!(pair.max_receives, MAX_RECEIVES);
            let cell = capydb_aws::client::ClientCell::ready(client);
            Arc::new(SqsQueue::new(cell, &pair.url, Some(pair.dead_letter_url)))
        }
    }
}

/// Delivers what `queue` has visible to `handler` once, the way the shape
/// does; answers how many messages were delivered.
async fn deliver(shape: Shape, queue: &Arc<dyn JobQueue>, handler: Arc<dyn MessageHandler>) -> usize {
    match shape {
        Shape::Local => {
            let consumer = Consumer {
                queue: Arc::clone(queue),
                handler,
                visibility: Duration::from_secs(30),
                max_receives: Some(MAX_RECEIVES),
                name: "test",
            };
            let mut n = 0;
            while consumer.poll_once().await {
                n += 1;
            }
            n
        }
        Shape::Lambda => {
            let messages = queue.receive(10, Duration::from_secs(30)).await.expect("receive");
            let mut event = SqsEvent::default();
            for (i, m) in messages.iter().enumerate() {
                let mut record = SqsMessage::default();
                record.message_id = Some(i.to_string());
                record.receipt_handle = Some(m.receipt.clone());
                record.body = Some(m.body.clone());
                record.attributes.insert("ApproximateReceiveCount".into(), m.receive_count.to_string());
                event.records.push(record);
            }
            let response = capydb_lambda::sqs_batch(Arc::clone(queue), handler, Some(MAX_RECEIVES), event).await;
            // Lambda deletes the records not reported as failures.
            for (i, m) in messages.iter().enumerate() {
                if !response.batch_item_failures.iter().any(|f| f.item_identifier == i.to_string()) {
                    queue.delete(&m.receipt).await.expect("delete");
                }
            }
            messages.len()
        }
    }
}

/// The functions' app on moto (store, bus), for a job to fail.
async fn app() -> App {
    let sdk = testkit::sdk_config().await;
    let table = testkit::unique("consumers");
    testkit::create_table(&dynamodb::Client::new(&sdk), &Template::load(), &table).await;
    let config = Config {
        table,
        jobs_queue_url: "http://127.0.0.1:9/jobs".into(),
        jobs_dead_letter_url: None,
        webhook_queue_url: "http://127.0.0.1:9/webhooks".into(),
        webhook_dead_letter_url: None,
        event_bus: "default".into(),
        kms_key_id: "unused".into(),
        databases: capydb_lambda::config::Databases::Server {
            admin_url: "postgres://capydb_admin@127.0.0.1:9/postgres".into(),
            password_param: None,
        },
        pg_version: "15".into(),
        final_snapshot_retention_days: 30,
        artifact_dir: std::env::temp_dir(),
        jobs_max_receives: MAX_RECEIVES,
        allow_private_egress: false,
        region: "us-east-1".into(),
        job_max_attempts: 3,
        rate_limit_per_minute: 0,
        cli_login_rate_limit_per_minute: 0,
        cli_verification_url: None,
        quotas: capydb_domain::app::QuotaSettings::default(),
        clerk: Default::default(),
    };
    capydb_lambda::app(&config, &SdkCell::ready(sdk), Role::api(&config).expect("the API role"))
}

/// A provisioning job, running, with its project, as a worker left it.
async fn running_job(app: &App) -> Job {
    let now = app.now();
    let project_id = capydb_domain::ids::new_id("prj");
    let project = Project {
        database_name: format!("db_{project_id}"),
        role_name: format!("role_{project_id}"),
        id: project_id.clone(),
        organization_id: "org_consumers".into(),
        name: "consumers".into(),
        region: "us-east-1".into(),
        pg_version: "15".into(),
        state: ProjectState::Provisioning,
        created_at: now,
        updated_at: now,
        password_sealed: "v1:unused".into(),
        server_host: None,
        admin_password_sealed: None,
    };
    let mut job = Job::queued(
        capydb_domain::ids::new_id("job"),
        JobSpec::Provision,
        &project.organization_id,
        &project_id.as_str().into(),
        now,
    );
    job.state = JobState::Running;
    job.attempt = 1;
    job.started_at = Some(now);
    job.version = 1;
    let running = app.store.begin_job(&job, &ResourceWrite::Project(project), &[], &Admission::default()).await;
    assert_eq!(running.expect("begin the job"), None, "no other job holds the project");
    job
}

/// A job handler whose every run fails (the store keeps failing, say).
struct AlwaysFails {
    job: JobHandler,
    runs: AtomicU32,
}

#[async_trait]
impl MessageHandler for AlwaysFails {
    async fn handle(&self, _body: &str) -> Disposition {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Disposition::Failed(Duration::ZERO)
    }
    async fn dead_lettered(&self, body: &str, why: &str) {
        self.job.dead_lettered(body, why).await
    }
}

/// Waits (a planned retry) `waits` times, then is done.
struct WaitsThenDone {
    waits: u32,
    runs: AtomicU32,
    told_dead: AtomicU32,
}

#[async_trait]
impl MessageHandler for WaitsThenDone {
    async fn handle(&self, _body: &str) -> Disposition {
        if self.runs.fetch_add(1, Ordering::SeqCst) < self.waits {
            Disposition::RetryAfter(Duration::ZERO)
        } else {
            Disposition::Done
        }
    }
    async fn dead_lettered(&self, _body: &str, _why: &str) {
        self.told_dead.fetch_add(1, Ordering::SeqCst);
    }
}

/// Delivers until nothing is left to deliver (a few empty rounds in a row,
/// for SQS's eventual consistency), at most `rounds` times.
async fn drain(shape: Shape, queue: &Arc<dyn JobQueue>, handler: Arc<dyn MessageHandler>, rounds: usize) {
    let mut empty = 0;
    for _ in 0..rounds {
        if deliver(shape, queue, Arc::clone(&handler)).await == 0 {
            empty += 1;
            if empty == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            empty = 0;
        }
    }
}

async fn a_dead_lettered_message_fails_its_job_with_the_reason(shape: Shape, app: &App) {
    let job = running_job(app).await;
    let queue = queue(shape).await;
    let body = serde_json::to_string(&JobMessage { job_id: job.id.clone() }).unwrap();
    queue.send(&body, Duration::ZERO).await.expect("send");
    let handler =
        Arc::new(AlwaysFails { job: JobHandler { app: app.clone(), worker: "test".into() }, runs: AtomicU32::new(0) });
    drain(shape, &queue, handler.clone(), 40).await;

    assert_eq!(handler.runs.load(Ordering::SeqCst), MAX_RECEIVES, "{shape:?}: received up to the limit, no more");
    assert_eq!(queue.dead_letters(10).await.expect("dead letters"), [body], "{shape:?}: the message is dead-lettered");
    let stored = app.store.get_job(&job.id).await.expect("read the job").expect("the job");
    assert_eq!(stored.state, JobState::Failed, "{shape:?}: a dead-lettered job must not stay running");
    let error = stored.error.unwrap_or_default();
    assert!(error.contains("dead-letter queue") && error.contains(&format!("failed {MAX_RECEIVES} times")), "{error}");
    let project = app.store.get_project(job.project_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(project.state, ProjectState::Failed, "{shape:?}: the resource fails with its job");
}

async fn planned_waits_never_count_toward_the_dead_letter_limit(shape: Shape) {
    let queue = queue(shape).await;
    queue.send("{\"job_id\":\"job_waits\"}", Duration::ZERO).await.expect("send");
    let waits = MAX_RECEIVES * 2;
    let handler = Arc::new(WaitsThenDone { waits, runs: AtomicU32::new(0), told_dead: AtomicU32::new(0) });
    drain(shape, &queue, handler.clone(), 60).await;

    assert_eq!(handler.runs.load(Ordering::SeqCst), waits + 1, "{shape:?}: every wait came back, then it was done");
    assert_eq!(handler.told_dead.load(Ordering::SeqCst), 0, "{shape:?}: nothing was dead-lettered");
    assert!(queue.dead_letters(10).await.expect("dead letters").is_empty(), "{shape:?}");
}

#[tokio::test]
async fn both_consumers_fail_a_dead_lettered_job_and_never_count_planned_waits() {
    let app = app().await;
    for shape in [Shape::Local, Shape::Lambda] {
        a_dead_lettered_message_fails_its_job_with_the_reason(shape, &app).await;
        planned_waits_never_count_toward_the_dead_letter_limit(shape).await;
    }
}
