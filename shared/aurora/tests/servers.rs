//! `AuroraServers` against moto's RDS API, with local PostgreSQL servers
//! standing in for the clusters (`StandIns`, the resolver the servers are
//! given): every operation is driven the way the job runtime drives it,
//! call after call until it stops answering "not yet", and every call is
//! made twice (a step run again after a crash between any two calls), so
//! nothing an earlier call made is made again. "Ready" is a real login.
use std::sync::Arc;
use std::time::Duration;

use capydb_aurora::standin::StandIns;
use capydb_aurora::{names, AuroraServers, Rds, State, JOB_TAG};
use capydb_aws::testkit;
use capydb_domain::ports::{
    DatabaseProvider, DedicatedServers, ProviderError, ServerOwner, ServerSnapshots, ServerSource, Slot,
};

const ORG: &str = "org_01jdz8x9m2k4q6r8t0v2w4y6a8";
const ADMIN: &str = "Adm1nPassw0rdAdm1nPassw0rd123456";

struct Rig {
    servers: AuroraServers,
    rds: Rds,
    client: aws_sdk_rds::Client,
    stand_ins: Arc<StandIns>,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn rig() -> Rig {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let client = aws_sdk_rds::Client::new(&testkit::sdk_config().await);
    let settings = capydb_aurora::standin::settings(capydb_aurora::CHECK_AGAIN);
    let dir = std::env::temp_dir().join(testkit::unique("aurora-standins"));
    let stand_ins = Arc::new(StandIns::new(client.clone(), dir.clone()));
    let rds = Rds::new(client.clone(), settings);
    let servers = AuroraServers::new(rds.clone(), stand_ins.clone(), "us-east-1");
    Rig { servers, rds, client, stand_ins, _dir: tempdir::Dir(dir) }
}

/// A resource id no other test of this run uses, shaped like the real ones.
fn resource(kind: &str) -> String {
    let unique = testkit::unique("x").to_ascii_lowercase();
    let tail: String = unique.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let tail = format!("{tail:0>26}");
    format!("{kind}_{}", &tail[tail.len() - 26..])
}

fn owner<'a>(project: &'a str, resource: &'a str) -> ServerOwner<'a> {
    ServerOwner { organization_id: ORG, project_id: project, resource_id: resource }
}

/// Calls `op` the way the job runtime does until it is done: each time it
/// answers "not yet" the runtime calls again later; here it is also called
/// a second time at once, as a step that runs again after a crash would.
/// Answers what it ended with and how many "not yet" it took.
async fn drive<T, F, Fut>(what: &str, mut op: F) -> (T, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut waits = 0;
    for _ in 0..40 {
        match op().await {
            Ok(v) => return (v, waits),
            Err(ProviderError::NotYet(d)) => {
                assert!(d >= Duration::from_secs(15), "{what}: asks for {d:?}");
                waits += 1;
                match op().await {
                    Ok(v) => return (v, waits),
                    Err(ProviderError::NotYet(_)) => waits += 1,
                    Err(e) => panic!("{what} (run again): {e}"),
                }
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what} never finished");
}

async fn project_server(r: &Rig, project: &str) -> String {
    let (host, waits) = drive("make the project's server", || {
        r.servers.make(owner(project, project), Slot::Live, ServerSource::Empty, ADMIN)
    })
    .await;
    assert!(waits >= 2, "the cluster, then its writer: {waits} waits");
    host
}

async fn login(db: &dyn DatabaseProvider, database: &str, role: &str, password: &str) -> Result<(), ProviderError> {
    db.check_connection(database, role, password).await
}

/// Rows in the owner's table, read over the owner's login through the stand-in.
async fn rows(r: &Rig, host: &str, database: &str, role: &str, password: &str) -> Vec<String> {
    let address = capydb_aurora::Resolve::resolve(&*r.stand_ins, host, 5432).await.unwrap();
    let url = format!("postgres://{role}:{password}@127.0.0.1:{}/{database}", address.port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("the owner logs in");
    tokio::spawn(conn);
    client.simple_query("CREATE TABLE IF NOT EXISTS notes (t text)").await.unwrap();
    let rows = client.query("SELECT t FROM notes ORDER BY t", &[]).await.unwrap();
    rows.iter().map(|row| row.get::<_, String>(0)).collect()
}

async fn write(r: &Rig, host: &str, database: &str, role: &str, password: &str, text: &str) {
    rows(r, host, database, role, password).await;
    let address = capydb_aurora::Resolve::resolve(&*r.stand_ins, host, 5432).await.unwrap();
    let url = format!("postgres://{role}:{password}@127.0.0.1:{}/{database}", address.port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute("INSERT INTO notes VALUES ($1)", &[&text]).await.unwrap();
}

/// Deletes the automated snapshots moto made of the cluster `id` (see their use).
async fn forget_automated_snapshots(r: &Rig, id: &str) {
    let out = r.client.describe_db_cluster_snapshots().db_cluster_identifier(id).send().await.unwrap();
    for s in out.db_cluster_snapshots() {
        let name = s.db_cluster_snapshot_identifier().unwrap_or_default();
        if name.starts_with("rds:") {
            r.client.delete_db_cluster_snapshot().db_cluster_snapshot_identifier(name).send().await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_project_server_is_made_once_and_ready_means_its_owner_logs_in() {
    let r = rig().await;
    let project = resource("prj");
    let host = project_server(&r, &project).await;
    let cluster = names::cluster(&project);
    assert!(host.starts_with(&format!("{cluster}.")), "{host}");
    // Made: asking again answers at once, the same host, and nothing new.
    for _ in 0..2 {
        let again = r.servers.make(owner(&project, &project), Slot::Live, ServerSource::Empty, ADMIN).await;
        assert_eq!(again.as_deref(), Ok(host.as_str()));
    }
    let described = r.rds.describe(&cluster).await.unwrap().unwrap();
    assert_eq!(described.members, vec![names::writer(&described.resource_id)], "one writer");
    assert!(described.deletion_protection, "a project's cluster is protected");
    assert_eq!(described.tag("capydb:resource"), Some(project.as_str()));

    // The SQL of the provision runs on it, and a real login proves it.
    let db = r.servers.admin(&host, ADMIN).await.expect("the admin logs in");
    for _ in 0..2 {
        db.ensure_role("shop_owner", "0wnerPassw0rd0wnerPassw0rd123456").await.unwrap();
        db.ensure_database("shop", "shop_owner").await.unwrap();
    }
    login(&*db, "shop", "shop_owner", "0wnerPassw0rd0wnerPassw0rd123456").await.expect("the owner logs in");
    let wrong = login(&*db, "shop", "shop_owner", "n0tThePassw0rdn0tThePassw0rd1234").await;
    assert!(matches!(wrong, Err(ProviderError::Permanent(_))), "{wrong:?}");
    assert_eq!(r.stand_ins.count().await, 1);
}

#[tokio::test]
async fn a_clone_holds_the_projects_data_and_a_reset_swaps_in_a_fresh_one_under_the_same_name() {
    let r = rig().await;
    let (project, preview) = (resource("prj"), resource("pvw"));
    let (owner_pw, preview_pw) = ("0wnerPassw0rd0wnerPassw0rd123456", "Prev1ewPassw0rdPrev1ewPassw0rd12");
    let project_host = project_server(&r, &project).await;
    let db = r.servers.admin(&project_host, ADMIN).await.unwrap();
    db.ensure_role("shop_owner", owner_pw).await.unwrap();
    db.ensure_database("shop", "shop_owner").await.unwrap();
    write(&r, &project_host, "shop", "shop_owner", owner_pw, "before the clone").await;

    // The clone: the project's database and role, then the preview's password.
    let (host, waits) = drive("clone the project's server", || {
        r.servers.make(owner(&project, &preview), Slot::Live, ServerSource::CloneOf(&project), ADMIN)
    })
    .await;
    assert!(waits >= 2, "{waits}");
    let cluster = names::cluster(&preview);
    let described = r.rds.describe(&cluster).await.unwrap().unwrap();
    assert!(!described.deletion_protection, "a preview's cluster is not protected");
    assert_eq!(described.tag(capydb_aurora::SOURCE_CLUSTER_TAG), Some(names::cluster(&project).as_str()));
    let clone = r.servers.admin(&host, ADMIN).await.expect("the project's admin password opens the clone");
    clone.ensure_role("shop_owner", preview_pw).await.unwrap();
    login(&*clone, "shop", "shop_owner", preview_pw).await.expect("the preview's password");
    assert!(login(&*clone, "shop", "shop_owner", owner_pw).await.is_err(), "not the project's");
    login(&*db, "shop", "shop_owner", owner_pw).await.expect("the project keeps its password");
    assert_eq!(rows(&r, &host, "shop", "shop_owner", preview_pw).await, ["before the clone"]);
    write(&r, &host, "shop", "shop_owner", preview_pw, "written on the preview").await;
    write(&r, &project_host, "shop", "shop_owner", owner_pw, "after the clone").await;
    assert_eq!(rows(&r, &project_host, "shop", "shop_owner", owner_pw).await, ["after the clone", "before the clone"]);

    // A reset by job 1: a replacement, the swap, the old one removed.
    let live_before = described.resource_id.clone();
    let job = "job_01jdz8x9m2k4q6r8t0v2w4y6r1";
    drive("build the replacement", || {
        r.servers.make(owner(&project, &preview), Slot::Replacement(job), ServerSource::CloneOf(&project), ADMIN)
    })
    .await;
    let next = r.rds.describe(&names::replacement(&preview)).await.unwrap().unwrap();
    assert_eq!(next.tag(JOB_TAG), Some(job));
    let (swapped, waits) = drive("swap", || r.servers.swap(owner(&project, &preview), job)).await;
    assert!(waits >= 2, "two renames: {waits}");
    assert!(swapped.starts_with(&format!("{cluster}.")), "the live identifier's host: {swapped}");
    let live = r.rds.describe(&cluster).await.unwrap().unwrap();
    assert_eq!(live.resource_id, next.resource_id, "the replacement holds the live identifier");
    let old = r.rds.describe(&names::retired(&preview)).await.unwrap().unwrap();
    assert_eq!(old.resource_id, live_before, "the old one is set aside");
    let reset = r.servers.admin(&swapped, ADMIN).await.unwrap();
    reset.ensure_role("shop_owner", preview_pw).await.unwrap();
    assert_eq!(
        rows(&r, &swapped, "shop", "shop_owner", preview_pw).await,
        ["after the clone", "before the clone"],
        "the project's data as of the reset, without what the preview wrote"
    );
    drive("remove the old one", || r.servers.remove_spares(owner(&project, &preview))).await;
    assert!(matches!(r.rds.cluster(&names::retired(&preview)).await.unwrap(), State::Absent));
    // Swapping again is done already.
    assert_eq!(r.servers.swap(owner(&project, &preview), job).await.as_deref(), Ok(swapped.as_str()));

    // A replacement left by a job that failed is not taken by the next.
    // (moto makes an automated snapshot named after a new cluster's
    // identifier and the minute, and refuses a second cluster under the
    // same identifier in the same minute: its snapshots go, as the minutes
    // between two real jobs would make them differ.)
    forget_automated_snapshots(&r, &names::replacement(&preview)).await;
    let failed = "job_01jdz8x9m2k4q6r8t0v2w4y6r2";
    let started = r.servers.make(owner(&project, &preview), Slot::Replacement(failed), ServerSource::Empty, ADMIN);
    let started = started.await;
    assert!(matches!(started, Err(ProviderError::NotYet(_))), "{started:?}");
    let left = r.rds.describe(&names::replacement(&preview)).await.unwrap().unwrap().resource_id;
    forget_automated_snapshots(&r, &names::replacement(&preview)).await;
    let next_job = "job_01jdz8x9m2k4q6r8t0v2w4y6r3";
    drive("build a replacement where another job's was", || {
        r.servers.make(owner(&project, &preview), Slot::Replacement(next_job), ServerSource::Empty, ADMIN)
    })
    .await;
    let ours = r.rds.describe(&names::replacement(&preview)).await.unwrap().unwrap();
    assert_ne!(ours.resource_id, left);
    assert_eq!(ours.tag(JOB_TAG), Some(next_job));

    // Removing the preview removes all of it: no final snapshot.
    drive("remove the preview", || r.servers.remove(owner(&project, &preview), false)).await;
    for id in [cluster.clone(), names::replacement(&preview), names::retired(&preview)] {
        assert!(matches!(r.rds.cluster(&id).await.unwrap(), State::Absent), "{id}");
    }
    assert!(matches!(r.rds.snapshot(&names::final_snapshot(&preview)).await.unwrap(), State::Absent));
}

#[tokio::test]
async fn a_removed_project_leaves_a_final_snapshot_and_removing_again_is_done() {
    let r = rig().await;
    let project = resource("prj");
    let host = project_server(&r, &project).await;
    let cluster = names::cluster(&project);
    let writer = names::writer(&r.rds.describe(&cluster).await.unwrap().unwrap().resource_id);
    drive("remove the project", || r.servers.remove(owner(&project, &project), true)).await;
    assert!(matches!(r.rds.cluster(&cluster).await.unwrap(), State::Absent));
    assert!(matches!(r.rds.instance(&writer).await.unwrap(), State::Absent), "its writer too");
    assert!(matches!(
        r.rds.snapshot(&names::final_snapshot(&project)).await.unwrap(),
        State::Available { .. } | State::Busy(_)
    ));
    assert_eq!(r.servers.remove(owner(&project, &project), true).await, Ok(()));
    // Its endpoint now leads nowhere: the admin call fails, and says so in general terms.
    match r.servers.admin(&host, ADMIN).await {
        Err(ProviderError::Retryable(m)) => assert!(!m.contains(&host), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a removed server's admin logged in"),
    }
}

#[tokio::test]
async fn a_backup_is_a_snapshot_that_restores_into_a_server_of_its_own_as_it_was() {
    let r = rig().await;
    let (project, preview) = (resource("prj"), resource("pvw"));
    let backup = resource("bkp");
    let owner_pw = "0wnerPassw0rd0wnerPassw0rd123456";
    let host = project_server(&r, &project).await;
    let db = r.servers.admin(&host, ADMIN).await.unwrap();
    db.ensure_role("shop_owner", owner_pw).await.unwrap();
    db.ensure_database("shop", "shop_owner").await.unwrap();
    write(&r, &host, "shop", "shop_owner", owner_pw, "before the backup").await;

    // Through `Capturing`, so the stand-in keeps what the snapshot holds.
    let servers = capydb_aurora::standin::Capturing {
        inner: Arc::new(AuroraServers::new(r.rds.clone(), r.stand_ins.clone(), "us-east-1")),
        stand_ins: r.stand_ins.clone(),
    };
    let (_, waits) = drive("snapshot", || servers.snapshot(owner(&project, &project), &backup)).await;
    assert!(waits >= 1, "{waits}");
    assert_eq!(servers.snapshot(owner(&project, &project), &backup).await, Ok(()), "taken: done at once");
    write(&r, &host, "shop", "shop_owner", owner_pw, "after the backup").await;

    let snapshots = capydb_aurora::AuroraSnapshots::new(r.rds.clone());
    let listed = snapshots.snapshots().await.unwrap();
    let snapshot = names::backup_snapshot(&backup);
    let ours = listed.iter().find(|s| s.id == snapshot).expect("the backup's snapshot is listed");
    assert_eq!((ours.backup_id.as_deref(), ours.final_of.as_deref()), (Some(backup.as_str()), None));
    assert!(ours.created_at.is_some());

    let (restored, _) = drive("restore into a preview's server", || {
        servers.make(owner(&project, &preview), Slot::Live, ServerSource::Snapshot(&backup), ADMIN)
    })
    .await;
    let described = r.rds.describe(&names::cluster(&preview)).await.unwrap().unwrap();
    assert_eq!(described.tag(capydb_aurora::SOURCE_SNAPSHOT_TAG), Some(snapshot.as_str()));
    assert_eq!(rows(&r, &restored, "shop", "shop_owner", owner_pw).await, ["before the backup"], "as it was then");

    // Deleting a snapshot twice is done; a project's removal leaves its final one.
    for _ in 0..2 {
        snapshots.delete_snapshot(&snapshot).await.expect("delete (again)");
    }
    drive("remove the preview", || servers.remove(owner(&project, &preview), false)).await;
    drive("remove the project", || servers.remove(owner(&project, &project), true)).await;
    let listed = snapshots.snapshots().await.unwrap();
    assert!(!listed.iter().any(|s| s.id == snapshot), "the deleted one is gone");
    let last = listed.iter().find(|s| s.final_of.as_deref() == Some(project.as_str())).expect("the final one");
    assert_eq!(last.id, names::final_snapshot(&project));
    let refused = snapshots.delete_snapshot("someone-elses-snapshot").await;
    assert!(matches!(refused, Err(ProviderError::Permanent(_))), "{refused:?}");
}

#[tokio::test]
async fn a_swap_is_turned_back_whether_it_finished_or_stopped_half_way() {
    let r = rig().await;
    let project = resource("prj");
    project_server(&r, &project).await;
    let cluster = names::cluster(&project);
    let original = r.rds.describe(&cluster).await.unwrap().unwrap().resource_id;
    let o = owner(&project, &project);

    // Finished: the job's server is live, the original set aside.
    let job = "job_01jdz8x9m2k4q6r8t0v2w4y6v1";
    drive("build", || r.servers.make(o, Slot::Replacement(job), ServerSource::Empty, ADMIN)).await;
    drive("swap", || r.servers.swap(o, job)).await;
    assert_ne!(r.rds.describe(&cluster).await.unwrap().unwrap().resource_id, original);
    let (host, _) = drive("revert a finished swap", || r.servers.revert(o, job)).await;
    assert!(host.starts_with(&format!("{cluster}.")), "{host}");
    assert_eq!(r.rds.describe(&cluster).await.unwrap().unwrap().resource_id, original, "the original is back");
    for spare in [names::replacement(&project), names::retired(&project)] {
        assert!(r.rds.describe(&spare).await.unwrap().is_none(), "{spare} is gone");
    }

    // Half-way: the original renamed aside, the job's not yet in its place.
    forget_automated_snapshots(&r, &names::replacement(&project)).await;
    let job = "job_01jdz8x9m2k4q6r8t0v2w4y6v2";
    drive("build", || r.servers.make(o, Slot::Replacement(job), ServerSource::Empty, ADMIN)).await;
    let first = r.servers.swap(o, job).await;
    assert!(matches!(first, Err(ProviderError::NotYet(_))), "{first:?}");
    assert!(r.rds.describe(&cluster).await.unwrap().is_none(), "the live identifier is free, mid-swap");
    drive("revert a swap half-way", || r.servers.revert(o, job)).await;
    assert_eq!(r.rds.describe(&cluster).await.unwrap().unwrap().resource_id, original, "the original is back");
    assert!(r.rds.describe(&names::replacement(&project)).await.unwrap().is_none());
    // And a revert with nothing to turn back is done at once.
    assert!(r.servers.revert(o, job).await.is_ok());
    drive("remove the project", || r.servers.remove(o, false)).await;
}
