//! `dump_database`, `restore_database`, `import_database` and
//! `replace_database` against a real server: contents and ownership after a
//! round trip, failures that leave nothing behind, passwords that never reach
//! an error, and every state an interrupted swap can leave.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capydb_domain::ports::{DatabaseEndpoint, DatabaseProvider};
use capydb_postgres::PgProvider;
use tokio_postgres::NoTls;

use crate::clone::{admin, assert_permanent, connect, count, db_owner, wait_until_idle, PW};
use crate::helpers::{dead_port, TestCluster};

/// `database`, owned by `owner` (created with `PW`), with a table of `rows`
/// rows named `<label> <i>`, a schema with a table, a view and a function.
async fn project(t: &TestCluster, p: &PgProvider, database: &str, owner: &str, label: &str, rows: i64) {
    p.ensure_role(owner, PW).await.unwrap();
    p.ensure_database(database, owner).await.unwrap();
    let c = connect(p, database, owner).await;
    c.batch_execute(&format!(
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO items (name) SELECT '{label} ' || i FROM generate_series(1, {rows}) i;
         CREATE SCHEMA app;
         CREATE TABLE app.settings (key text PRIMARY KEY, value text);
         INSERT INTO app.settings VALUES ('label', '{label}');
         CREATE VIEW item_names AS SELECT name FROM items;
         CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM items';"
    ))
    .await
    .expect("the owner fills its database");
    drop(c);
    wait_until_idle(t, database).await;
}

/// The label `project` stored in `database`, read as `owner`.
async fn label_of(p: &PgProvider, database: &str, owner: &str) -> String {
    connect(p, database, owner)
        .await
        .query_one("SELECT value FROM app.settings WHERE key = 'label'", &[])
        .await
        .unwrap()
        .get(0)
}

/// Every object of `project` in `database` is `owner`'s, `owner` can write and
/// change the schema, and nobody else may connect.
async fn assert_owned_by(t: &TestCluster, p: &PgProvider, database: &str, owner: &str, outsider: &str) {
    assert_eq!(db_owner(t, database).await, owner);
    assert_permanent(p.check_connection(database, outsider, PW).await, "another tenant's role connects");
    let a = admin(t, database).await;
    let foreign = count(
        &a,
        &format!(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname IN ('public', 'app') AND c.relowner <> '{owner}'::regrole)
                  + (SELECT count(*) FROM pg_proc WHERE proname = 'item_count' AND proowner <> '{owner}'::regrole)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'app' AND nspowner <> '{owner}'::regrole)"
        ),
    )
    .await;
    assert_eq!(foreign, 0, "objects in {database} not owned by {owner}");
    drop(a);
    let c = connect(p, database, owner).await;
    c.batch_execute(
        "INSERT INTO items (name) VALUES ('added');
         ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;
         UPDATE app.settings SET value = value;
         CREATE TABLE IF NOT EXISTS owner_made (id int)",
    )
    .await
    .unwrap_or_else(|e| panic!("{owner} writes and alters {database}: {e}"));
    assert!(count(&c, "SELECT item_count()").await > 0);
    drop(c);
    wait_until_idle(t, database).await;
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_dump_restores_into_a_new_database_for_another_owner() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestCluster::start().await;
    let p = t.provider().await;
    project(&t, &p, "prj_s", "prj_s_owner", "source", 10_000).await;
    p.ensure_role("prj_r_owner", PW).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bkp_1.dump");

    // A client in the middle of a transaction is not disturbed by the dump.
    let holder = connect(&p, "prj_s", "prj_s_owner").await;
    holder.batch_execute("BEGIN; INSERT INTO items (name) VALUES ('uncommitted')").await.unwrap();
    let started = Instant::now();
    p.dump_database("prj_s", &dest).await.expect("dump");
    let dumped = started.elapsed();
    holder.batch_execute("COMMIT").await.expect("the open transaction commits after the dump");
    assert_eq!(files_in(dir.path()), ["bkp_1.dump"], "only the dump is left");
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);

    let started = Instant::now();
    p.restore_database(&dest, "prj_r", "prj_r_owner").await.expect("restore");
    let restored = started.elapsed();
    eprintln!("10k rows: dump {dumped:?} ({} bytes), restore {restored:?}", std::fs::metadata(&dest).unwrap().len());
    let c = connect(&p, "prj_r", "prj_r_owner").await;
    assert_eq!(count(&c, "SELECT count(*) FROM items").await, 10_000);
    assert_eq!(count(&c, "SELECT count(*) FROM items WHERE name = 'uncommitted'").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM item_names").await, 10_000);
    assert_eq!(label_of(&p, "prj_r", "prj_r_owner").await, "source");
    drop(c);
    wait_until_idle(&t, "prj_r").await;
    assert_owned_by(&t, &p, "prj_r", "prj_r_owner", "prj_s_owner").await;
    assert_eq!(db_owner(&t, "prj_s").await, "prj_s_owner", "the source changed hands");

    // Again, with a client connected to the target: made afresh.
    let _client = connect(&p, "prj_r", "prj_r_owner").await;
    p.restore_database(&dest, "prj_r", "prj_r_owner").await.expect("restore again");
    let c = connect(&p, "prj_r", "prj_r_owner").await;
    assert_eq!(count(&c, "SELECT count(*) FROM items").await, 10_000);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_tables WHERE tablename = 'owner_made'").await, 0);

    // And a second dump replaces the first.
    p.dump_database("prj_r", &dest).await.expect("dump onto an existing file");
    assert_eq!(files_in(dir.path()), ["bkp_1.dump"]);
}

#[tokio::test]
async fn failed_dumps_and_restores_are_permanent_and_leave_nothing() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    project(&t, &p, "prj_s", "prj_s_owner", "source", 100).await;
    p.ensure_role("prj_r_owner", PW).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let dest = dir.path().join("missing.dump");
    let m = assert_permanent(p.dump_database("prj_none", &dest).await, "dump of a missing database");
    assert!(m.contains("prj_none") && m.contains("does not exist"), "{m}");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
    assert_permanent(p.dump_database("prj_s", &dir.path().join("no/such/dir/x.dump")).await, "no such dir");
    assert_permanent(p.dump_database("postgres", &dest).await, "the admin database");
    assert!(files_in(dir.path()).is_empty());

    // Garbage, a missing file and a truncated dump: each drops the target
    // (left by an earlier attempt) and leaves nothing.
    let garbage = dir.path().join("garbage.dump");
    std::fs::write(&garbage, b"this is not a dump\n".repeat(100)).unwrap();
    let good = dir.path().join("good.dump");
    p.dump_database("prj_s", &good).await.unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    const UNREADABLE: &str = "the backup's archive is missing or unreadable";
    for (file, expect) in [
        (&garbage, UNREADABLE),
        (&dir.path().join("absent.dump"), UNREADABLE),
        // Caught by the table-of-contents check or by the restore itself.
        (&truncated, "could not be loaded"),
    ] {
        p.ensure_database("prj_r", "prj_r_owner").await.unwrap();
        let m = assert_permanent(p.restore_database(file, "prj_r", "prj_r_owner").await, "a bad dump");
        assert!(m.contains(expect) || m.contains(UNREADABLE), "{}: {m}", file.display());
        assert!(!m.contains(&*dir.path().to_string_lossy()), "{}: the message quotes a path: {m}", file.display());
        assert!(!p.database_exists("prj_r").await.unwrap(), "{}: the target was left behind", file.display());
    }
    let m = assert_permanent(p.restore_database(&good, "prj_r", "no_such_role").await, "a missing owner");
    assert!(m.contains("no_such_role"), "{m}");
    assert!(!p.database_exists("prj_r").await.unwrap());
    // The good dump still restores.
    p.restore_database(&good, "prj_r", "prj_r_owner").await.expect("restore");
}

#[tokio::test]
async fn a_database_is_imported_from_a_url_and_bad_sources_are_permanent() {
    const SECRET: &str = "Imp0rt-s3cret";
    let t = TestCluster::start().await;
    let mut p = t.provider().await;
    let work = tempfile::tempdir().unwrap();
    p.set_work_dir(work.path().to_path_buf());
    // The source: any database on any server, here one owned by a role with
    // its own password on the same server.
    project(&t, &p, "ext_src", "ext_user", "imported", 5_000).await;
    p.ensure_role("ext_user", SECRET).await.unwrap();
    p.ensure_role("prj_i_owner", PW).await.unwrap();
    let port = t.cluster.port();
    let url = |user: &str, password: &str, port: u16, db: &str| {
        format!("postgresql://{user}:{password}@127.0.0.1:{port}/{db}?sslmode=disable")
    };

    let started = Instant::now();
    p.import_database(&url("ext_user", SECRET, port, "ext_src"), "prj_i", "prj_i_owner").await.expect("import");
    eprintln!("5k rows imported in {:?}", started.elapsed());
    let c = connect(&p, "prj_i", "prj_i_owner").await;
    assert_eq!(count(&c, "SELECT count(*) FROM items").await, 5_000);
    assert_eq!(label_of(&p, "prj_i", "prj_i_owner").await, "imported");
    drop(c);
    wait_until_idle(&t, "prj_i").await;
    assert_owned_by(&t, &p, "prj_i", "prj_i_owner", "ext_user").await;
    assert!(files_in(work.path()).is_empty(), "the import's dump was left behind: {:?}", files_in(work.path()));
    // Default sslmode (prefer) against a server without TLS works too.
    p.import_database(&format!("postgres://ext_user:{SECRET}@127.0.0.1:{port}/ext_src"), "prj_i", "prj_i_owner")
        .await
        .expect("import with the default sslmode");

    let wrong = "Wr0ng-pa55word";
    let m = assert_permanent(
        p.import_database(&url("ext_user", wrong, port, "ext_src"), "prj_i", "prj_i_owner").await,
        "a wrong password",
    );
    assert!(m.starts_with(COULD_NOT_CONNECT), "{m}");
    assert!(!m.contains(wrong) && !m.contains(SECRET), "the message quotes a password: {m}");
    assert!(!p.database_exists("prj_i").await.unwrap(), "a failed import left its target");

    let m = assert_permanent(
        p.import_database(&url("ext_user", SECRET, port, "ext_none"), "prj_i", "prj_i_owner").await,
        "a missing database",
    );
    assert!(m.starts_with(COULD_NOT_CONNECT) && !m.contains(SECRET), "{m}");

    let started = Instant::now();
    let m = assert_permanent(
        p.import_database(&url("ext_user", SECRET, dead_port(), "ext_src"), "prj_i", "prj_i_owner").await,
        "an unreachable server",
    );
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(m.starts_with(COULD_NOT_CONNECT) && !m.contains(SECRET), "{m}");

    for bad in [
        format!("mysql://ext_user:{SECRET}@127.0.0.1:{port}/ext_src"),
        format!("postgres://ext_user:{SECRET}@127.0.0.1:{port}/"),
        format!("postgres://ext_user:{SECRET}@/ext_src"),
        format!("postgres://ext_user:{SECRET}@%2Ftmp/ext_src"),
    ] {
        let m = assert_permanent(p.import_database(&bad, "prj_i", "prj_i_owner").await, "a bad URL");
        assert!(m.starts_with("source_url") && !m.contains(SECRET), "{m}");
    }
    assert!(files_in(work.path()).is_empty(), "{:?}", files_in(work.path()));
}

/// What every import whose source cannot be reached or logged in to says.
const COULD_NOT_CONNECT: &str = "could not connect to the import source or log in";

/// Accepts connections on 127.0.0.1 and answers each with `reply` (nothing:
/// closes at once), like a service that is not PostgreSQL; counts them.
async fn listener(reply: &'static [u8]) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = socket.write_all(reply).await;
        }
    });
    (port, accepted)
}

/// An import is no port scanner: with private sources allowed (capydb-local's
/// default), a closed port, a port that accepts and closes, and one where an
/// HTTP server answers all give the same error. Loopback only.
#[tokio::test]
async fn imports_from_a_closed_port_and_from_a_service_that_is_not_postgres_fail_alike() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    p.ensure_role("prj_i_owner", PW).await.unwrap();
    let (silent, silent_hits) = listener(b"").await;
    let (http, http_hits) = listener(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
    let mut errors = Vec::new();
    for port in [dead_port(), silent, http] {
        let url = format!("postgres://u:p@127.0.0.1:{port}/x");
        errors.push(p.import_database(&url, "prj_i", "prj_i_owner").await.expect_err("no PostgreSQL there"));
    }
    assert!(silent_hits.load(Ordering::SeqCst) > 0 && http_hits.load(Ordering::SeqCst) > 0, "both were tried");
    assert!(
        matches!(&errors[0], capydb_domain::ports::ProviderError::Permanent(m) if m.starts_with(COULD_NOT_CONNECT)),
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| *e == errors[0]), "the errors tell the ports apart: {errors:?}");
    assert!(!p.database_exists("prj_i").await.unwrap());
}

/// Under the policy that denies private targets (deployed, and capydb-local
/// with --deny-private-egress), an import is checked again as it connects:
/// a loopback source is refused and nothing connects to it.
#[tokio::test]
async fn a_denying_policy_refuses_a_private_source_at_connect_time_without_connecting() {
    let t = TestCluster::start().await;
    let mut p = t.provider().await;
    p.set_egress_policy(capydb_egress::EgressPolicy::DENY_PRIVATE);
    p.ensure_role("prj_i_owner", PW).await.unwrap();
    let (port, hits) = listener(b"").await;
    for host in ["127.0.0.1", "localhost", "2130706433", "[::ffff:127.0.0.1]"] {
        let url = format!("postgres://u:p@{host}:{port}/x");
        let m = assert_permanent(p.import_database(&url, "prj_i", "prj_i_owner").await, host);
        assert!(m.contains("only connects to public addresses"), "{host}: {m}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a refused source was connected to");
}

/// `prj_l` (owner `prj_l_owner`, label `A`) and `prj_l_restore` restored
/// from a dump of `prj_b` (label `B`) for the same owner, as a restore job
/// prepares them.
async fn swap_setup(t: &TestCluster) -> PgProvider {
    let p = t.provider().await;
    project(t, &p, "prj_l", "prj_l_owner", "A", 100).await;
    project(t, &p, "prj_b", "prj_b_owner", "B", 200).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("b.dump");
    p.dump_database("prj_b", &dump).await.unwrap();
    p.restore_database(&dump, "prj_l_restore", "prj_l_owner").await.unwrap();
    p
}

/// `prj_l` holds B for its original owner, and nothing else of the swap is left.
async fn assert_swapped(t: &TestCluster, p: &PgProvider) {
    assert_eq!(label_of(p, "prj_l", "prj_l_owner").await, "B");
    assert_eq!(
        count(&connect(p, "prj_l", "prj_l_owner").await, "SELECT count(*) FROM items WHERE name LIKE 'B %'").await,
        200
    );
    for gone in ["prj_l_restore", "prj_l_prev"] {
        assert!(!p.database_exists(gone).await.unwrap(), "{gone} is left");
    }
    wait_until_idle(t, "prj_l").await;
    assert_owned_by(t, p, "prj_l", "prj_l_owner", "prj_b_owner").await;
}

#[tokio::test]
async fn replace_swaps_under_the_live_name_and_again_is_a_no_op() {
    let t = TestCluster::start().await;
    let p = swap_setup(&t).await;
    let client = connect(&p, "prj_l", "prj_l_owner").await;
    assert_eq!(count(&client, "SELECT count(*) FROM items").await, 100);

    let started = Instant::now();
    p.replace_database("prj_l", "prj_l_restore").await.expect("replace");
    eprintln!("swap took {:?}", started.elapsed());
    // The connected client was cut off (an overwrite), and reconnecting
    // with the same connection string finds the new data.
    assert!(client.simple_query("SELECT 1").await.is_err(), "the client of the old database is still connected");
    p.check_connection("prj_l", "prj_l_owner", PW).await.expect("the project's credentials still connect");
    assert_swapped(&t, &p).await;

    p.replace_database("prj_l", "prj_l_restore").await.expect("replace again");
    assert_swapped(&t, &p).await;
}

#[tokio::test]
async fn replace_finishes_every_interrupted_state() {
    let t = TestCluster::start().await;
    let p = swap_setup(&t).await;
    let a = admin(&t, "postgres").await;

    // Stopped between the two renames: live parked, replacement not moved yet.
    a.batch_execute("ALTER DATABASE prj_l RENAME TO prj_l_prev").await.unwrap();
    p.replace_database("prj_l", "prj_l_restore").await.expect("finish after the first rename");
    assert_swapped(&t, &p).await;

    // Stopped before the drop: both renamed, old data still parked.
    project(&t, &p, "prj_l_restore", "prj_l_owner", "C", 300).await;
    a.batch_execute("ALTER DATABASE prj_l RENAME TO prj_l_prev; ALTER DATABASE prj_l_restore RENAME TO prj_l")
        .await
        .unwrap();
    p.replace_database("prj_l", "prj_l_restore").await.expect("finish after both renames");
    assert_eq!(label_of(&p, "prj_l", "prj_l_owner").await, "C");
    assert!(!p.database_exists("prj_l_prev").await.unwrap());

    // A parked copy left by an earlier swap, and a new replacement.
    a.batch_execute("CREATE DATABASE prj_l_prev").await.unwrap();
    project(&t, &p, "prj_l_restore", "prj_l_owner", "D", 10).await;
    p.replace_database("prj_l", "prj_l_restore").await.expect("replace with a stale parked copy");
    assert_eq!(label_of(&p, "prj_l", "prj_l_owner").await, "D");
    assert!(!p.database_exists("prj_l_prev").await.unwrap());
    assert!(!p.database_exists("prj_l_restore").await.unwrap());

    // States no swap leaves.
    let m = assert_permanent(p.replace_database("prj_x", "prj_x_restore").await, "neither exists");
    assert!(m.contains("neither prj_x nor prj_x_restore exists"), "{m}");
    p.ensure_database("prj_y_restore", "prj_l_owner").await.unwrap();
    let m = assert_permanent(p.replace_database("prj_y", "prj_y_restore").await, "no live database");
    assert!(m.contains("prj_y does not exist"), "{m}");
    assert!(p.database_exists("prj_y_restore").await.unwrap(), "the replacement was touched");
    assert_permanent(p.replace_database("prj_l", "prj_l").await, "onto itself");
    assert_permanent(p.replace_database("prj_l", "prj_l_prev").await, "with the parking name");
    assert_permanent(p.replace_database(&format!("p{}", "x".repeat(59)), "prj_l_restore").await, "name too long");
    assert_permanent(p.replace_database("postgres", "prj_l").await, "the admin database");
    assert_eq!(label_of(&p, "prj_l", "prj_l_owner").await, "D");
}

#[tokio::test]
async fn clients_that_keep_reconnecting_do_not_stop_a_swap() {
    let t = TestCluster::start().await;
    let p = swap_setup(&t).await;
    let stop = Arc::new(AtomicBool::new(false));
    let uri = p.endpoint().connection_info("prj_l", "prj_l_owner", PW).uri;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, uri) = (Arc::clone(&stop), uri.clone());
        tasks.push(tokio::spawn(async move {
            let (mut errors, mut seen_b) = (0u32, false);
            while !stop.load(Ordering::Relaxed) {
                let round = async {
                    let (c, connection) = tokio_postgres::connect(&uri, NoTls).await?;
                    tokio::spawn(connection);
                    let row = c.query_one("SELECT value FROM app.settings WHERE key = 'label'", &[]).await?;
                    Ok::<String, tokio_postgres::Error>(row.get(0))
                };
                match round.await {
                    Ok(label) => seen_b |= label == "B",
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (errors, seen_b)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    p.replace_database("prj_l", "prj_l_restore").await.expect("replace under reconnecting clients");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let (errors, seen_b) = task.await.unwrap();
        eprintln!("swap under reconnecting clients took {took:?}; a client saw {errors} errors");
        assert!(seen_b, "a client never saw the new data");
    }
    assert_swapped(&t, &p).await;
}

#[tokio::test]
async fn bad_names_are_permanent_before_anything_runs() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("x.dump");
    for result in [
        p.dump_database("Bad-Name", &dump).await,
        p.restore_database(&dump, "template1", "prj_x_owner").await,
        p.restore_database(&dump, "prj_x", "Bad Role").await,
        p.import_database("postgres://u:p@127.0.0.1:1/d", "prj-x", "prj_x_owner").await,
    ] {
        assert_permanent(result, "a bad name");
    }
    assert!(files_in(dir.path()).is_empty());
}
