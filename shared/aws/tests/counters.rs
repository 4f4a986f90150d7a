//! What the store contract cannot see, on moto: a table written by a
//! version from before quota counters. Its records exist without a counter,
//! and the store must start each counter from them, not from zero.
use capydb_aws::dynamo::item::Item;
use capydb_aws::dynamo::records;
use capydb_aws::testkit::{self, Template};
use capydb_aws::DynamoStore;
use capydb_domain::ids::{self, new_id};
use capydb_domain::model::*;
use capydb_domain::ports::{Admission, QuotaClaim, QuotaKind, ResourceWrite, Store};
use capydb_domain::DomainError;
use chrono::Utc;

struct Table {
    client: aws_sdk_dynamodb::Client,
    name: String,
    store: DynamoStore,
}

async fn table() -> Table {
    let config = testkit::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let name = testkit::unique("capydb-counters");
    testkit::create_table(&client, &Template::load(), &name).await;
    Table { store: DynamoStore::new(client.clone(), name.clone()), client, name }
}

impl Table {
    /// Writes an item the way a version without counters did: a plain put.
    async fn put_uncounted(&self, item: Item) {
        self.client.put_item().table_name(&self.name).set_item(Some(item)).send().await.expect("put an item");
    }
}

fn project(org_id: &str, state: ProjectState) -> Project {
    let id = new_id(ids::PROJECT);
    Project {
        database_name: format!("db_{id}"),
        role_name: format!("role_{id}"),
        id,
        organization_id: org_id.into(),
        name: "from before counters".into(),
        region: "local".into(),
        pg_version: "16".into(),
        state,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        password_sealed: "v1:sealed".into(),
        server_host: None,
        admin_password_sealed: None,
    }
}

fn backup(org_id: &str, project_id: &str) -> Backup {
    Backup {
        id: new_id(ids::BACKUP),
        organization_id: org_id.into(),
        project_id: project_id.into(),
        name: "nightly".into(),
        kind: BackupKind::Manual,
        state: BackupState::Completed,
        size_bytes: Some(1),
        sha256: None,
        created_at: Utc::now(),
        completed_at: Some(Utc::now()),
    }
}

fn job(org_id: &str, project_id: &str, spec: JobSpec) -> Job {
    let mut j = Job::queued(new_id(ids::JOB), spec, org_id, &project_id.into(), Utc::now());
    j.version = 1;
    j
}

fn webhook(org_id: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        id: new_id(ids::WEBHOOK),
        organization_id: org_id.into(),
        url: "https://hooks.example.com/capydb".into(),
        events: vec!["project.ready".into()],
        project_id: None,
        description: None,
        enabled: true,
        disabled_reason: None,
        failing_since: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        secret_sealed: "sealed-secret".into(),
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
    }
}

async fn create_project(store: &DynamoStore, p: &Project, limit: u32) -> Result<Option<String>, DomainError> {
    let j = job(&p.organization_id, &p.id, JobSpec::Provision);
    let admission = Admission {
        quota: Some(QuotaClaim { kind: QuotaKind::Projects, owner: p.organization_id.clone(), limit }),
        ..Admission::default()
    };
    store.begin_job(&j, &ResourceWrite::Project(p.clone()), &[], &admission).await
}

#[tokio::test]
async fn a_counter_missing_after_an_upgrade_starts_from_what_exists() {
    // GIVEN an organization whose records a version without counters wrote:
    // two live projects, a deleted one and a webhook endpoint.
    let t = table().await;
    let org = new_id(ids::ORG);
    for state in [ProjectState::Ready, ProjectState::Failed, ProjectState::Deleted] {
        t.put_uncounted(records::project_item(&project(&org, state))).await;
    }
    t.put_uncounted(records::webhook_item(&webhook(&org)).expect("webhook item")).await;

    // WHEN its usage is read, THEN the live ones count, the deleted one not.
    let usage = t.store.usage(&org).await.expect("usage");
    assert_eq!((usage.projects, usage.webhooks), (2, 1), "the counters start from the records that exist");

    // AND a limit of 3 admits exactly one more project.
    assert_eq!(create_project(&t.store, &project(&org, ProjectState::Provisioning), 3).await, Ok(None));
    match create_project(&t.store, &project(&org, ProjectState::Provisioning), 3).await {
        Err(DomainError::Forbidden(m)) => assert!(m.contains("3 in use"), "the refusal counts the old records: {m}"),
        other => panic!("a fourth project over a limit of 3 must be Forbidden, got {other:?}"),
    }
    // AND an endpoint over a limit of 1 is refused: the old one counts.
    let claim = QuotaClaim { kind: QuotaKind::Webhooks, owner: org.clone(), limit: 1 };
    assert!(
        matches!(t.store.insert_webhook(&webhook(&org), Some(&claim), None).await, Err(DomainError::Forbidden(_))),
        "the endpoint written before counters must count against the limit"
    );
}

#[tokio::test]
async fn a_deletion_before_its_counter_started_frees_exactly_one_place() {
    // GIVEN two backups a version without counters wrote.
    let t = table().await;
    let (org, prj) = (new_id(ids::ORG), new_id(ids::PROJECT));
    let old = [backup(&org, &prj), backup(&org, &prj)];
    for b in &old {
        t.put_uncounted(records::backup_item(b)).await;
    }

    // WHEN one is deleted first (the counter starts at 2, then drops to 1),
    // and deleted again.
    let deleted = Backup { state: BackupState::Deleted, ..old[0].clone() };
    t.store.put_backup(&deleted).await.expect("put_backup (deleted)");
    t.store.put_backup(&deleted).await.expect("put_backup (deleted again)");

    // THEN a limit of 2 admits exactly one more.
    let claim = QuotaClaim { kind: QuotaKind::Backups, owner: prj.clone(), limit: 2 };
    let admission = Admission { quota: Some(claim), ..Admission::default() };
    let create = |b: Backup| {
        let j = job(&org, &prj, JobSpec::CreateBackup { backup: b.id.as_str().into() });
        let admission = admission.clone();
        let store = &t.store;
        async move { store.begin_job(&j, &ResourceWrite::Backup(b), &[], &admission).await }
    };
    assert_eq!(create(backup(&org, &prj)).await, Ok(None), "one place was freed");
    match create(backup(&org, &prj)).await {
        Err(DomainError::Forbidden(m)) => assert!(m.contains("2 in use"), "{m}"),
        other => panic!("a third live backup over a limit of 2 must be Forbidden, got {other:?}"),
    }
}
