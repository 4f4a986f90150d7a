//! The RDS operations against moto's RDS API (started by the testkit on
//! 127.0.0.1): every call twice (what a step that runs again does), the
//! states a step waits on, the identifier swap, and deleting what is gone.
use capydb_aurora::{names, Label, Purpose, Rds, State};
use capydb_aws::testkit;
use capydb_domain::ports::ProviderError;

async fn rds() -> (Rds, aws_sdk_rds::Client) {
    // RDS's answers are logged (never told to users): shown when a test fails.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let client = aws_sdk_rds::Client::new(&testkit::sdk_config().await);
    let settings = capydb_aurora::standin::settings(capydb_aurora::CHECK_AGAIN);
    (Rds::new(client.clone(), settings), client)
}

/// A resource id no other test of this run uses, shaped like the real ones.
fn resource(kind: &str) -> String {
    let unique = testkit::unique("x").to_ascii_lowercase();
    let tail: String = unique.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let tail = format!("{tail:0>26}");
    format!("{kind}_{}", &tail[tail.len() - 26..])
}

fn label(project: &str, resource: &str, purpose: Purpose) -> Label {
    Label {
        organization: "org_01jdz8x9m2k4q6r8t0v2w4y6a8".into(),
        project: project.into(),
        resource: resource.into(),
        purpose,
        job: None,
    }
}

/// Reads until `available`, as a waiting step would; moto answers a new
/// cluster `creating` once.
async fn until_available(rds: &Rds, cluster: &str) -> Option<String> {
    for _ in 0..5 {
        match rds.cluster(cluster).await.expect("describe") {
            State::Available { endpoint } => return endpoint,
            State::Busy(_) => continue,
            other => panic!("{cluster}: {other:?}"),
        }
    }
    panic!("{cluster} never became available")
}

/// The cluster's immutable resource id: which cluster holds an identifier.
async fn resource_id(client: &aws_sdk_rds::Client, cluster: &str) -> String {
    let out = client.describe_db_clusters().db_cluster_identifier(cluster).send().await.expect("describe");
    out.db_clusters()[0].db_cluster_resource_id().expect("resource id").to_string()
}

#[tokio::test]
async fn a_project_cluster_is_made_once_tagged_protected_and_encrypted() {
    let (rds, client) = rds().await;
    let project = resource("prj");
    let cluster = names::cluster(&project);
    assert_eq!(rds.cluster(&cluster).await.unwrap(), State::Absent);
    for _ in 0..2 {
        rds.create_cluster(
            &cluster,
            &label(&project, &project, Purpose::Project),
            Some("app"),
            "capydb_admin",
            "pw-1-aaaaaaaa",
        )
        .await
        .expect("create cluster (again)");
    }
    let endpoint = until_available(&rds, &cluster).await.expect("an endpoint");
    assert!(endpoint.starts_with(&cluster), "{endpoint}");
    let writer = names::writer(&resource_id(&client, &cluster).await);
    for _ in 0..2 {
        let label = label(&project, &project, Purpose::Project);
        rds.create_writer(&writer, &cluster, &label).await.expect("create writer (again)");
    }
    assert!(matches!(rds.instance(&writer).await.unwrap(), State::Available { .. } | State::Busy(_)));
    let described = rds.describe(&cluster).await.unwrap().expect("the cluster");
    assert_eq!((described.members.clone(), described.deletion_protection), (vec![writer.clone()], true));
    assert_eq!(described.tag("capydb:resource"), Some(project.as_str()));

    let out = client.describe_db_clusters().db_cluster_identifier(&cluster).send().await.unwrap();
    let c = &out.db_clusters()[0];
    assert_eq!(c.engine(), Some("aurora-postgresql"));
    assert_eq!(c.deletion_protection(), Some(true));
    assert_eq!(c.storage_encrypted(), Some(true));
    let scaling = c.serverless_v2_scaling_configuration().expect("serverless v2");
    assert_eq!((scaling.min_capacity(), scaling.max_capacity()), (Some(0.0), Some(8.0)));
    let tags: Vec<(String, String)> = c
        .tag_list()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect();
    for (k, v) in [("capydb:managed", "true"), ("capydb:project", project.as_str()), ("capydb:environment", "test")] {
        assert!(tags.contains(&(k.to_string(), v.to_string())), "{k}={v} not in {tags:?}");
    }
    let instances = client.describe_db_instances().db_instance_identifier(&writer).send().await.unwrap();
    assert_eq!(instances.db_instances()[0].db_instance_class(), Some("db.serverless"));
    assert_eq!(instances.db_instances()[0].db_cluster_identifier(), Some(cluster.as_str()));
}

#[tokio::test]
async fn a_preview_is_a_copy_on_write_clone_and_snapshots_restore_into_new_clusters() {
    let (rds, client) = rds().await;
    let project = resource("prj");
    let source = names::cluster(&project);
    rds.create_cluster(
        &source,
        &label(&project, &project, Purpose::Project),
        Some("app"),
        "capydb_admin",
        "pw-1-aaaaaaaa",
    )
    .await
    .unwrap();
    until_available(&rds, &source).await;

    let preview = resource("pvw");
    let target = names::cluster(&preview);
    for _ in 0..2 {
        rds.clone_cluster(&source, &target, &label(&project, &preview, Purpose::Preview)).await.expect("clone (again)");
    }
    until_available(&rds, &target).await;
    let out = client.describe_db_clusters().db_cluster_identifier(&target).send().await.unwrap();
    assert_eq!(out.db_clusters()[0].deletion_protection(), Some(false), "previews are not protected");
    assert_ne!(resource_id(&client, &source).await, resource_id(&client, &target).await);

    let backup = resource("bkp");
    let snapshot = names::backup_snapshot(&backup);
    assert_eq!(rds.snapshot(&snapshot).await.unwrap(), State::Absent);
    for _ in 0..2 {
        rds.create_snapshot(&source, &snapshot, &label(&project, &backup, Purpose::Project))
            .await
            .expect("snapshot (again)");
    }
    assert!(matches!(rds.snapshot(&snapshot).await.unwrap(), State::Available { .. } | State::Busy(_)));

    let restored = names::cluster(&resource("pvw"));
    for _ in 0..2 {
        rds.restore_snapshot(&snapshot, &restored, &label(&project, &backup, Purpose::Preview))
            .await
            .expect("restore (again)");
    }
    until_available(&rds, &restored).await;

    for _ in 0..2 {
        rds.delete_snapshot(&snapshot).await.expect("delete snapshot (again)");
    }
    assert_eq!(rds.snapshot(&snapshot).await.unwrap(), State::Absent);
}

/// A replacement takes the live identifier (and so its endpoint): the live
/// cluster is renamed aside, the replacement renamed into its place, the
/// old one deleted. Each rename, run again after it happened, is refused as
/// the cluster it names is gone: the provider decides from `cluster()`
/// which renames are left, as the test does here.
#[tokio::test]
async fn a_replacement_takes_the_live_identifier() {
    let (rds, client) = rds().await;
    let preview = resource("pvw");
    let (live, next, old) = (names::cluster(&preview), names::replacement(&preview), names::retired(&preview));
    let o = label("prj_01jdz8x9m2k4q6r8t0v2w4y6a8", &preview, Purpose::Preview);
    rds.create_cluster(&live, &o, Some("app"), "capydb_admin", "pw-1-aaaaaaaa").await.unwrap();
    rds.create_cluster(&next, &o, Some("app"), "capydb_admin", "pw-2-bbbbbbbb").await.unwrap();
    until_available(&rds, &live).await;
    until_available(&rds, &next).await;
    let (live_id, next_id) = (resource_id(&client, &live).await, resource_id(&client, &next).await);

    rds.rename_cluster(&live, &old).await.expect("live aside");
    until_available(&rds, &old).await;
    assert_eq!(rds.cluster(&live).await.unwrap(), State::Absent);
    rds.rename_cluster(&next, &live).await.expect("replacement in");
    until_available(&rds, &live).await;
    assert_eq!(resource_id(&client, &live).await, next_id, "the live identifier holds the replacement");
    assert_eq!(resource_id(&client, &old).await, live_id);
    assert_eq!(rds.cluster(&next).await.unwrap(), State::Absent);
    // Renaming what is no longer there is an error a step must not make.
    assert!(matches!(rds.rename_cluster(&next, &live).await, Err(ProviderError::Permanent(_))));

    for _ in 0..2 {
        rds.delete_cluster(&old, None).await.expect("delete old (again)");
    }
    assert!(matches!(rds.cluster(&old).await.unwrap(), State::Absent | State::Deleting));
}

#[tokio::test]
async fn a_project_cluster_is_deleted_after_its_protection_is_off_and_leaves_a_final_snapshot() {
    let (rds, client) = rds().await;
    let project = resource("prj");
    let cluster = names::cluster(&project);
    rds.create_cluster(
        &cluster,
        &label(&project, &project, Purpose::Project),
        Some("app"),
        "capydb_admin",
        "pw-1-aaaaaaaa",
    )
    .await
    .unwrap();
    let writer = names::writer(&resource_id(&client, &cluster).await);
    rds.create_writer(&writer, &cluster, &label(&project, &project, Purpose::Project)).await.unwrap();
    until_available(&rds, &cluster).await;
    rds.set_admin_password(&cluster, "pw-2-bbbbbbbb").await.expect("new password");

    // Protected: refused, and said so.
    rds.delete_instance(&writer).await.expect("delete writer");
    let refused = rds.delete_cluster(&cluster, Some(&names::final_snapshot(&project))).await;
    assert!(matches!(refused, Err(ProviderError::Permanent(_))), "{refused:?}");

    for _ in 0..2 {
        rds.allow_deletion(&cluster).await.expect("protection off (again)");
        rds.delete_instance(&writer).await.expect("delete writer (again)");
        rds.delete_cluster(&cluster, Some(&names::final_snapshot(&project))).await.expect("delete (again)");
    }
    assert!(matches!(rds.cluster(&cluster).await.unwrap(), State::Absent | State::Deleting));
    assert!(matches!(
        rds.snapshot(&names::final_snapshot(&project)).await.unwrap(),
        State::Available { .. } | State::Busy(_)
    ));
    // Deleting what is gone is done.
    rds.allow_deletion(&cluster).await.expect("protection off, cluster gone");
}

#[tokio::test]
async fn asking_about_or_using_what_does_not_exist() {
    let (rds, _) = rds().await;
    let missing = names::cluster(&resource("prj"));
    assert_eq!(rds.cluster(&missing).await.unwrap(), State::Absent);
    assert_eq!(rds.instance(&names::writer("cluster-NOSUCHCLUSTER")).await.unwrap(), State::Absent);
    assert!(
        matches!(State::Absent.ready("project's cluster"), Err(ProviderError::Permanent(m)) if m.contains("does not exist"))
    );
    let snap = rds
        .create_snapshot(&missing, &names::backup_snapshot(&resource("bkp")), &label("p", "bkp", Purpose::Project))
        .await;
    assert!(matches!(snap, Err(ProviderError::Permanent(_))), "{snap:?}");
}
