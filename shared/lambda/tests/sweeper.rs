//! The sweeper function's one sweep (`App::sweep`, the same as
//! `capydb-local`'s loop) on moto: every part runs even when the others
//! fail, and the invocation fails when any part did.
use capydb_aws::client::SdkCell;
use capydb_aws::sdk::dynamodb;
use capydb_aws::testkit::{self, Template};
use capydb_domain::App;
use capydb_lambda::{Config, Role};

async fn app(table: String) -> App {
    let sdk = testkit::sdk_config().await;
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
    // The sweeper's own role.
    capydb_lambda::app(&config, &SdkCell::ready(sdk), Role::api(&config).expect("the API role"))
}

#[tokio::test]
async fn a_sweep_with_nothing_to_do_succeeds() {
    let sdk = testkit::sdk_config().await;
    let table = testkit::unique("sweep");
    testkit::create_table(&dynamodb::Client::new(&sdk), &Template::load(), &table).await;
    let report = capydb_lambda::sweep(&app(table).await).await.expect("nothing failed");
    assert_eq!(report, capydb_domain::sweep::SweepReport::default());
}

#[tokio::test]
async fn every_part_runs_when_the_others_fail_and_the_invocation_fails() {
    // No such table: each part's first store call fails.
    let app = app(testkit::unique("no-such-table")).await;
    let report = app.sweep().await;
    let parts: Vec<&str> = report.errors.iter().filter_map(|e| e.split(':').next()).collect();
    assert_eq!(
        parts,
        ["expire previews", "re-drive stuck jobs", "republish events", "send due webhook retries"],
        "each part ran and reported its own failure"
    );
    let failed = capydb_lambda::sweep(&app).await.expect_err("a failed part fails the invocation");
    assert!(failed.contains("expire previews") && failed.contains("send due webhook retries"), "{failed}");
}
