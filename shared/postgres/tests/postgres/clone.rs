//! `PgProvider::clone_database` against a real server: both strategies, who
//! owns what afterwards, isolation of the copy, and failures.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capydb_domain::ports::{CloneStrategy, DatabaseEndpoint, DatabaseProvider, ProviderError};
use capydb_postgres::PgProvider;
use tokio_postgres::{Client, NoTls};

use crate::helpers::TestCluster;

pub const PW: &str = "pw";

pub async fn connect(p: &PgProvider, database: &str, role: &str) -> Client {
    let uri = p.endpoint().connection_info(database, role, PW).uri;
    let (client, connection) =
        tokio_postgres::connect(&uri, NoTls).await.unwrap_or_else(|e| panic!("{role} connects to {database}: {e}"));
    tokio::spawn(connection);
    client
}

pub async fn admin(t: &TestCluster, database: &str) -> Client {
    let mut config: tokio_postgres::Config = t.cluster.admin_url().parse().unwrap();
    config.dbname(database);
    let (client, connection) = config.connect(NoTls).await.expect("the admin connects");
    tokio::spawn(connection);
    client
}

/// Roles for a source project (`prj_s`) and the clone (`prj_c`), and a source
/// database with a table (SERIAL), a schema, a view and a function, all
/// created by the source's owner, holding `rows` rows.
async fn source_project(t: &TestCluster, rows: i64) -> PgProvider {
    let p = t.provider().await;
    for role in ["prj_s_owner", "prj_c_owner"] {
        p.ensure_role(role, PW).await.unwrap();
    }
    p.ensure_database("prj_s", "prj_s_owner").await.unwrap();
    let c = connect(&p, "prj_s", "prj_s_owner").await;
    c.batch_execute(&format!(
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO items (name) SELECT 'item ' || i FROM generate_series(1, {rows}) i;
         CREATE SCHEMA app;
         CREATE TABLE app.settings (key text PRIMARY KEY, value text);
         INSERT INTO app.settings VALUES ('theme', 'dark');
         CREATE VIEW item_names AS SELECT name FROM items;
         CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM items';"
    ))
    .await
    .expect("the source owner fills its database");
    drop(c);
    wait_until_idle(t, "prj_s").await;
    p
}

/// A closed session stays in pg_stat_activity until its backend has exited.
pub async fn wait_until_idle(t: &TestCluster, database: &str) {
    let a = admin(t, "postgres").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 =
            a.query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&database]).await.unwrap().get(0);
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{database} still has {n} sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

pub async fn db_owner(t: &TestCluster, database: &str) -> String {
    admin(t, "postgres")
        .await
        .query_one("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", &[&database])
        .await
        .unwrap()
        .get(0)
}

pub fn assert_permanent<T: std::fmt::Debug>(result: Result<T, ProviderError>, what: &str) -> String {
    match result {
        Err(ProviderError::Permanent(m)) => m,
        other => panic!("{what}: expected a permanent error, got {other:?}"),
    }
}

/// The ownership rules of a finished clone of prj_s (prj_s_owner) into prj_c (prj_c_owner).
async fn assert_handed_over(t: &TestCluster, p: &PgProvider) {
    assert_eq!(db_owner(t, "prj_s").await, "prj_s_owner", "the source changed hands");
    assert_eq!(db_owner(t, "prj_c").await, "prj_c_owner");
    assert_permanent(p.check_connection("prj_s", "prj_c_owner", PW).await, "the clone's owner on the source");
    assert_permanent(p.check_connection("prj_c", "prj_s_owner", PW).await, "the source's owner on the clone");
    p.check_connection("prj_s", "prj_s_owner", PW).await.expect("the source's owner still connects to the source");

    let a = admin(t, "prj_c").await;
    let foreign = count(
        &a,
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname IN ('public', 'app') AND c.relowner <> 'prj_c_owner'::regrole)
              + (SELECT count(*) FROM pg_proc WHERE proname = 'item_count' AND proowner <> 'prj_c_owner'::regrole)
              + (SELECT count(*) FROM pg_namespace WHERE nspname = 'app' AND nspowner <> 'prj_c_owner'::regrole)",
    )
    .await;
    assert_eq!(foreign, 0, "objects in the clone not owned by its owner");

    let c = connect(p, "prj_c", "prj_c_owner").await;
    c.batch_execute(
        "INSERT INTO items (name) VALUES ('added in the clone');
         ALTER TABLE items ADD COLUMN note text;
         UPDATE app.settings SET value = 'light';
         CREATE TABLE clone_only (id int)",
    )
    .await
    .expect("the clone's owner writes, alters and creates in the clone");
    assert!(count(&c, "SELECT item_count()").await > 0);
    assert!(count(&c, "SELECT count(*) FROM item_names").await > 0);
}

#[tokio::test]
async fn an_idle_source_is_copied_from_its_template_and_handed_to_the_new_owner() {
    let t = TestCluster::start().await;
    let p = source_project(&t, 1000).await;

    let strategy = p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await.expect("clone");
    assert_eq!(strategy, CloneStrategy::Template);
    let c = connect(&p, "prj_c", "prj_c_owner").await;
    assert_eq!(count(&c, "SELECT count(*) FROM items").await, 1000);
    assert_handed_over(&t, &p).await;

    // The copies are independent from here on.
    let s = connect(&p, "prj_s", "prj_s_owner").await;
    s.batch_execute("INSERT INTO items (name) VALUES ('after the clone')").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM items WHERE name = 'after the clone'").await, 0);
    assert_eq!(count(&s, "SELECT count(*) FROM items WHERE name = 'added in the clone'").await, 0);
    assert_eq!(count(&s, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'").await, 0);
}

#[tokio::test]
async fn a_busy_source_is_dumped_without_stalling_its_clients() {
    let t = TestCluster::start().await;
    let p = source_project(&t, 200_000).await;

    // A client in the middle of a transaction, with an uncommitted row.
    let holder = connect(&p, "prj_s", "prj_s_owner").await;
    holder.batch_execute("BEGIN; INSERT INTO items (name) VALUES ('uncommitted')").await.unwrap();
    // And a steady stream of small reads and writes.
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (stop, c) = (Arc::clone(&stop), connect(&p, "prj_s", "prj_s_owner").await);
        tokio::spawn(async move {
            let (mut max, mut n) = (Duration::ZERO, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                c.batch_execute("INSERT INTO items (name) VALUES ('stream')").await.expect("a stream insert");
                c.query_one("SELECT name FROM items WHERE id = 42", &[]).await.expect("a stream read");
                max = max.max(started.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (max, n)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let strategy = p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await.expect("clone");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (max, n) = streamer.await.unwrap();
    eprintln!("busy clone took {took:?}; {n} stream rounds during it, slowest {max:?}");
    assert_eq!(strategy, CloneStrategy::DumpRestore);
    assert!(max < Duration::from_secs(1), "a source client waited {max:?}");
    assert!(n > 10, "the stream barely ran ({n} rounds)");
    holder.batch_execute("COMMIT").await.expect("the open transaction commits after the clone");

    let c = connect(&p, "prj_c", "prj_c_owner").await;
    assert!(count(&c, "SELECT count(*) FROM items WHERE name LIKE 'item %'").await == 200_000);
    assert_eq!(count(&c, "SELECT count(*) FROM items WHERE name = 'uncommitted'").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM app.settings").await, 1);
    assert_handed_over(&t, &p).await;
}

#[tokio::test]
async fn cloning_again_replaces_the_earlier_copy() {
    let t = TestCluster::start().await;
    let p = source_project(&t, 100).await;
    // Left over by an interrupted attempt.
    p.ensure_database("prj_c", "prj_c_owner").await.unwrap();
    connect(&p, "prj_c", "prj_c_owner").await.batch_execute("CREATE TABLE leftover (x int)").await.unwrap();

    for round in 0..2 {
        let strategy = p
            .clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner")
            .await
            .unwrap_or_else(|e| panic!("clone, round {round}: {e}"));
        assert_eq!(strategy, CloneStrategy::Template);
        let c = connect(&p, "prj_c", "prj_c_owner").await;
        assert_eq!(count(&c, "SELECT count(*) FROM items").await, 100, "round {round}");
        assert_eq!(count(&c, "SELECT count(*) FROM pg_tables WHERE tablename IN ('leftover', 'clone_only')").await, 0);
        assert_handed_over(&t, &p).await;
        drop(c);
        wait_until_idle(&t, "prj_c").await;
    }
    // And with a client on the source: the dump path replaces it as well.
    let _client = connect(&p, "prj_s", "prj_s_owner").await;
    assert_eq!(
        p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await.unwrap(),
        CloneStrategy::DumpRestore
    );
    let c = connect(&p, "prj_c", "prj_c_owner").await;
    assert_eq!(count(&c, "SELECT count(*) FROM pg_tables WHERE tablename = 'clone_only'").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM items").await, 100);
}

#[tokio::test]
async fn a_missing_source_or_owner_is_permanent_and_leaves_nothing() {
    let t = TestCluster::start().await;
    let p = source_project(&t, 10).await;
    let m = assert_permanent(p.clone_database("prj_none", "prj_s_owner", "prj_c", "prj_c_owner").await, "no source");
    assert!(m.contains("prj_none") && m.contains("does not exist"), "{m}");
    let m = assert_permanent(p.clone_database("prj_s", "prj_s_owner", "prj_c", "no_such_role").await, "no owner");
    assert!(m.contains("no_such_role"), "{m}");
    let m = assert_permanent(p.clone_database("prj_s", "prj_c_owner", "prj_c", "prj_c_owner").await, "wrong owner");
    assert!(m.contains("owned by prj_s_owner"), "{m}");
    assert_permanent(p.clone_database("prj_s", "prj_s_owner", "prj_s", "prj_s_owner").await, "onto itself");
    assert_permanent(p.clone_database("prj_s", "prj_s_owner", "postgres", "prj_c_owner").await, "reserved target");
    assert!(!p.database_exists("prj_c").await.unwrap());
}

#[tokio::test]
async fn a_failing_restore_is_permanent_and_leaves_no_target_or_dump() {
    let t = TestCluster::start().await;
    let mut p = source_project(&t, 10).await;
    let work = tempfile::tempdir().unwrap();
    p.set_work_dir(work.path().to_path_buf());
    // An extension only a superuser may create: the new owner cannot restore it.
    admin(&t, "prj_s").await.batch_execute("CREATE EXTENSION pageinspect").await.unwrap();
    let _client = connect(&p, "prj_s", "prj_s_owner").await;

    let m = assert_permanent(p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await, "restore");
    // pg_restore's words (naming the extension) are logged, not returned.
    assert!(m.contains("could not be loaded") && !m.contains("pageinspect"), "{m}");
    assert!(!m.contains(t.cluster.admin_url().split(['@', ':']).nth(2).unwrap()), "the message quotes the password");
    assert!(!p.database_exists("prj_c").await.unwrap(), "the half-restored clone was left behind");
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "the dump was left behind");
}

#[tokio::test]
async fn clients_connecting_during_a_clone_are_never_refused() {
    let t = TestCluster::start().await;
    // ~45 MB, so the copy takes a noticeable moment.
    let p = source_project(&t, 600_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = Arc::clone(&stop);
        let uri = p.endpoint().connection_info("prj_s", "prj_s_owner", PW).uri;
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (c, connection) = tokio_postgres::connect(&uri, NoTls).await.expect("a client connects");
                tokio::spawn(connection);
                c.simple_query("SELECT 1").await.expect("a client queries");
                slowest = slowest.max(started.elapsed());
                drop(c);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            slowest
        })
    };
    let started = Instant::now();
    let strategy = p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await.expect("clone");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let slowest = prober.await.unwrap();
    eprintln!("clone with connecting clients: {strategy:?} in {took:?}; slowest connection {slowest:?}");
    let c = connect(&p, "prj_c", "prj_c_owner").await;
    assert_eq!(count(&c, "SELECT count(*) FROM items").await, 600_000);
    assert_handed_over(&t, &p).await;
}

#[tokio::test]
async fn a_busy_clone_streams_large_tables_of_any_shape_and_keeps_everything_else() {
    let t = TestCluster::start().await;
    let mut p = source_project(&t, 10).await;
    // ~25 MB, so it is streamed (split into page ranges in that mode); user-defined
    // types (text COPY), a generated column, a dropped one, a name to quote.
    let c = connect(&p, "prj_s", "prj_s_owner").await;
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN positive AS int CHECK (VALUE > 0);
         CREATE SCHEMA \"Odd.Schema\";
         CREATE TABLE \"Odd.Schema\".\"Big \"\"T\"\"\" (
             id bigint PRIMARY KEY, gone int, moods mood[], n positive, payload text,
             twice bigint GENERATED ALWAYS AS (id * 2) STORED, f float8, iv interval, d date);
         INSERT INTO \"Odd.Schema\".\"Big \"\"T\"\"\" (id, gone, moods, n, payload, f, iv, d)
             SELECT i, i, ARRAY['ok', 'happy']::mood[], i, repeat('x', 200),
                    i * 1.0001, interval '-1 day -2 hours' * (i % 3), date '2020-01-01' + i % 12
               FROM generate_series(1, 100000) i;
         CREATE TABLE refs (id bigint PRIMARY KEY, rel regclass, payload text);
         INSERT INTO refs SELECT i, 'items'::regclass, repeat('y', 150) FROM generate_series(1, 60000) i;
         ALTER TABLE \"Odd.Schema\".\"Big \"\"T\"\"\" DROP COLUMN gone;
         CREATE SEQUENCE counter;
         SELECT setval('counter', 4242);
         CREATE MATERIALIZED VIEW item_stats AS SELECT count(*) AS n FROM items;
         SELECT lo_from_bytea(0, 'a large object');",
    )
    .await
    .expect("the source owner adds a large table");
    let size = count(&c, "SELECT pg_relation_size('\"Odd.Schema\".\"Big \"\"T\"\"\"')").await;
    assert!(size > 20 << 20, "the table is too small to be split: {size}");
    assert!(count(&c, "SELECT pg_relation_size('refs')").await > 8 << 20, "refs is streamed too");
    // The tenant owns the source database and sets how its values print;
    // the clone's sessions must not take that (dates day-first, the
    // interval sign standard-style, floats to 1 digit, regclass unqualified).
    c.batch_execute(
        "ALTER DATABASE prj_s SET DateStyle = 'SQL, DMY';
         ALTER DATABASE prj_s SET IntervalStyle = 'sql_standard';
         ALTER DATABASE prj_s SET extra_float_digits = -15;
         ALTER DATABASE prj_s SET search_path = public;",
    )
    .await
    .expect("the owner sets its database's formats");

    // Both ways a busy clone can stream a table: page ranges over workers,
    // and whole tables loaded frozen (the default on 2 CPUs). The second
    // clone replaces the first.
    for page_ranges in [true, false] {
        p.set_page_range_streams(page_ranges);
        let strategy = p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await.expect("clone");
        assert_eq!(strategy, CloneStrategy::DumpRestore);
        let d = connect(&p, "prj_c", "prj_c_owner").await;
        let check = "SELECT (count(*) + sum(id) + sum(twice) + sum(n) + sum(length(payload)) \
                             + sum(array_length(moods, 1)) + count(DISTINCT moods[2]) \
                             + sum(f * 10000)::bigint + sum(extract(epoch FROM iv))::bigint \
                             + sum((d - date '2000-01-01') * id))::bigint \
                       FROM \"Odd.Schema\".\"Big \"\"T\"\"\"";
        assert_eq!(count(&d, check).await, count(&c, check).await);
        assert_eq!(
            count(&d, "SELECT count(*) FILTER (WHERE rel = 'public.items'::regclass) FROM refs").await,
            60_000,
            "regclass values name the target's own table"
        );
        assert_eq!(count(&d, "SELECT count(*) FROM \"Odd.Schema\".\"Big \"\"T\"\"\"").await, 100_000);
        assert_eq!(count(&d, "SELECT last_value FROM counter").await, 4242);
        assert_eq!(count(&d, "SELECT n FROM item_stats").await, 10);
        assert_eq!(count(&d, "SELECT count(*) FROM pg_largeobject_metadata").await, 1);
        assert_eq!(
            count(
                &d,
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'Odd.Schema' AND c.relowner <> 'prj_c_owner'::regrole"
            )
            .await,
            0
        );
        d.batch_execute("INSERT INTO \"Odd.Schema\".\"Big \"\"T\"\"\" (id, n) VALUES (1, 1)")
            .await
            .expect_err("the primary key came along");
        assert_handed_over(&t, &p).await;
        // Frozen as loaded, or left for the hint bits and a later VACUUM.
        let a = admin(&t, "prj_c").await;
        a.batch_execute("CREATE EXTENSION pg_visibility").await.expect("pg_visibility");
        let (pages, frozen) = {
            let row = a
                .query_one(
                    "SELECT pg_relation_size('\"Odd.Schema\".\"Big \"\"T\"\"\"') / 8192, all_frozen
                       FROM pg_visibility_map_summary('\"Odd.Schema\".\"Big \"\"T\"\"\"')",
                    &[],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, i64>(1))
        };
        if page_ranges {
            assert_eq!(frozen, 0, "page-range streams do not freeze");
        } else {
            // COPY FREEZE marks each page it fills in one go; the last,
            // partly filled page is left to VACUUM.
            assert!(
                frozen >= pages - 1 && pages > 3000,
                "a whole-table stream loads its pages frozen: {frozen} of {pages}"
            );
        }
    }
}

#[tokio::test]
async fn a_busy_clone_keeps_partitioned_tables_whole_hash_partitions_on_an_enum_included() {
    let t = TestCluster::start().await;
    let mut p = source_project(&t, 10).await;
    let c = connect(&p, "prj_s", "prj_s_owner").await;
    // A range-partitioned table with one large (streamed) partition and a
    // small one, and a hash-partitioned table on an enum: pg_dump loads
    // those through the partition root, and as enum OIDs differ in the
    // target, rows may land in another partition than at the source.
    c.batch_execute(
        "CREATE TABLE events (id bigint, payload text) PARTITION BY RANGE (id);
         CREATE TABLE events_old PARTITION OF events FOR VALUES FROM (0) TO (100000);
         CREATE TABLE events_new PARTITION OF events FOR VALUES FROM (100000) TO (MAXVALUE);
         INSERT INTO events SELECT i, repeat('e', 200) FROM generate_series(1, 100500) i;
         CREATE TYPE colour AS ENUM ('red', 'green', 'blue', 'cyan', 'magenta');
         CREATE TABLE paint (c colour, id bigint, payload text) PARTITION BY HASH (c);
         CREATE TABLE paint_0 PARTITION OF paint FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE paint_1 PARTITION OF paint FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         INSERT INTO paint SELECT (enum_range(NULL::colour))[1 + i % 5], i, repeat('p', 200)
           FROM generate_series(1, 160000) i;",
    )
    .await
    .expect("partitioned tables");
    assert!(count(&c, "SELECT pg_relation_size('events_old')").await > 8 << 20, "events_old is streamed");
    let paint = "SELECT greatest(pg_relation_size('paint_0'), pg_relation_size('paint_1'))";
    assert!(count(&c, paint).await > 8 << 20, "the larger paint partition is streamed");
    let check = "SELECT ((SELECT count(*) + sum(id) + sum(length(payload)) FROM events)
                      + (SELECT count(*) + sum(id * (c::text = 'blue')::int) + sum(length(payload)) FROM paint))::bigint";
    let want = count(&c, check).await;
    for page_ranges in [true, false] {
        p.set_page_range_streams(page_ranges);
        let strategy = p.clone_database("prj_s", "prj_s_owner", "prj_c", "prj_c_owner").await.expect("clone");
        assert_eq!(strategy, CloneStrategy::DumpRestore);
        let d = connect(&p, "prj_c", "prj_c_owner").await;
        assert_eq!(count(&d, check).await, want, "page ranges: {page_ranges}");
        assert_eq!(count(&d, "SELECT count(*) FROM events_old").await, 99_999);
        assert_eq!(count(&d, "SELECT count(*) FROM paint").await, 160_000);
        // Found through the target's own hashing of its own enum.
        assert_eq!(count(&d, "SELECT count(*) FROM paint WHERE c = 'blue'").await, 32_000);
        assert_handed_over(&t, &p).await;
    }
}
