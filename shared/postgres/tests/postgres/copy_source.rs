//! `SourceSession`, the stream clone's reading side, against a real server:
//! the bytes it hands over are the driver's, byte for byte, in any batch
//! size; each login method; errors that leave the session usable; and the
//! failures a clone must retry (server gone, session killed) against those
//! it must not (wrong password, missing table).
use std::str::FromStr;
use std::time::Duration;

use capydb_domain::ports::ProviderError;
use capydb_postgres::copy_source::{SourceError, SourceSession};
use futures_util::StreamExt;
use tokio_postgres::{Config, NoTls};

use crate::helpers::{dead_port, TestCluster};

const TIMEOUT: Duration = Duration::from_secs(10);

fn admin_config(t: &TestCluster) -> Config {
    Config::from_str(&t.cluster.admin_url()).expect("the admin URL parses")
}

async fn driver(config: &Config) -> tokio_postgres::Client {
    let (client, conn) = config.connect(NoTls).await.expect("the driver connects");
    tokio::spawn(conn);
    client
}

async fn drain(session: &mut SourceSession, sql: &str, at_least: usize) -> Result<Vec<u8>, SourceError> {
    let mut copy = session.copy_out(sql).await?;
    let mut all = Vec::new();
    while let Some(batch) = copy.next_batch(at_least).await? {
        assert!(!batch.is_empty(), "a batch is never empty");
        all.extend_from_slice(&batch);
    }
    Ok(all)
}

#[tokio::test]
async fn copy_out_hands_over_the_drivers_bytes_in_any_batch_size_and_the_session_goes_on() {
    let t = TestCluster::start().await;
    let config = admin_config(&t);
    let admin = driver(&config).await;
    admin
        .batch_execute(
            "CREATE TABLE t (id int, name text, tags text[], at timestamptz);
             INSERT INTO t SELECT i, repeat(chr(65 + i % 26), i % 300), ARRAY['a', i::text], now()
               FROM generate_series(1, 20000) i;
             INSERT INTO t VALUES (0, NULL, NULL, NULL), (-1, E'tab\\there\\nnewline', '{}', NULL);",
        )
        .await
        .expect("a table to copy");

    let mut session = SourceSession::connect(&config, TIMEOUT).await.expect("SourceSession logs in (SCRAM)");
    for format in ["binary", "text"] {
        let sql = format!("COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT {format})");
        let mut expected = Vec::new();
        let rows = admin.copy_out(sql.as_str()).await.expect("the driver's COPY");
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.next().await {
            expected.extend_from_slice(&row.expect("a row"));
        }
        assert!(expected.len() > 1 << 20, "enough data to span many reads: {}", expected.len());
        // Batches smaller than a row, about a read, and larger than the whole.
        for at_least in [1, 100, 256 * 1024, 64 << 20] {
            let got = drain(&mut session, &sql, at_least).await.expect("our COPY");
            assert!(
                got == expected,
                "{format} COPY in batches of {at_least}: {} bytes, want {}",
                got.len(),
                expected.len()
            );
        }
    }
    // An empty result, then statements: the session is ready after each COPY.
    assert!(drain(&mut session, "COPY (SELECT 1 WHERE false) TO STDOUT", 10).await.expect("empty COPY").is_empty());
    session.execute("BEGIN; SELECT count(*) FROM t; COMMIT").await.expect("statements after COPY");
}

#[tokio::test]
async fn errors_are_classified_and_leave_the_session_usable() {
    let t = TestCluster::start().await;
    let config = admin_config(&t);
    let mut session = SourceSession::connect(&config, TIMEOUT).await.expect("login");

    let missing = drain(&mut session, "COPY (SELECT * FROM nowhere) TO STDOUT", 10).await.expect_err("no such table");
    assert!(matches!(&missing, SourceError::Db { code, .. } if code == "42P01"), "{missing:?}");
    assert!(
        matches!(missing.into_provider("copy"), ProviderError::Permanent(m) if !m.contains("nowhere") && !m.contains("42P01"))
    );

    // An error in the middle of the data (division by zero at row 5000).
    let mid = drain(&mut session, "COPY (SELECT 1 / (5000 - i) FROM generate_series(1, 10000) i) TO STDOUT", 1)
        .await
        .expect_err("an error mid-COPY");
    assert!(matches!(&mid, SourceError::Db { code, .. } if code == "22012"), "{mid:?}");

    let bad = session.execute("SELECT 1; SELECT nonsense(").await.expect_err("a syntax error");
    assert!(matches!(&bad, SourceError::Db { code, .. } if code == "42601"), "{bad:?}");
    session.execute("SELECT 1").await.expect("the session is usable after each error");
    assert_eq!(drain(&mut session, "COPY (SELECT 42) TO STDOUT", 1).await.expect("COPY after errors"), b"42\n");
}

#[tokio::test]
async fn every_password_method_logs_in_and_a_wrong_password_is_permanent() {
    let t = TestCluster::start().await;
    let config = admin_config(&t);
    let admin = driver(&config).await;
    admin
        .batch_execute(
            "SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
             CREATE ROLE plain_user LOGIN PASSWORD 'plain-secret';",
        )
        .await
        .expect("roles for md5 and cleartext logins");
    // First match wins: these two roles use md5 and cleartext, the rest of
    // the cluster keeps its SCRAM rules.
    let hba = t.cluster.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all md5_user 127.0.0.1/32 md5\nhost all plain_user 127.0.0.1/32 password\n{rules}"),
    )
    .expect("write pg_hba.conf");
    admin.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (user, password) in [("md5_user", "md5-secret"), ("plain_user", "plain-secret")] {
        let mut c = config.clone();
        c.user(user).password(password);
        let mut session = SourceSession::connect(&c, TIMEOUT).await.unwrap_or_else(|e| panic!("{user} logs in: {e:?}"));
        assert_eq!(
            drain(&mut session, "COPY (SELECT current_user) TO STDOUT", 1).await.unwrap(),
            format!("{user}\n").as_bytes()
        );
    }
    for user in ["md5_user", "plain_user", "capydb_admin"] {
        let mut c = config.clone();
        c.user(user).password("wrong");
        let e =
            SourceSession::connect(&c, TIMEOUT).await.err().unwrap_or_else(|| panic!("{user} with a wrong password"));
        assert!(matches!(&e, SourceError::Db { code, .. } if code == "28P01"), "{user}: {e:?}");
        assert!(matches!(e.into_provider("connect"), ProviderError::Permanent(_)));
    }
}

#[tokio::test]
async fn a_gone_server_or_a_killed_session_is_retryable() {
    let t = TestCluster::start().await;
    let config = admin_config(&t);
    let dead = Config::from_str(&format!("postgres://capydb_admin:x@127.0.0.1:{}/postgres", dead_port())).unwrap();
    let e = SourceSession::connect(&dead, TIMEOUT).await.err().expect("nothing listens there");
    assert!(matches!(e.into_provider("connect"), ProviderError::Retryable(_)));

    let mut session = SourceSession::connect(&config, TIMEOUT).await.expect("login");
    let pid = drain(&mut session, "COPY (SELECT pg_backend_pid()) TO STDOUT", 1).await.unwrap();
    let pid: i32 = String::from_utf8(pid).unwrap().trim().parse().expect("a pid");
    // The server sends CopyOutResponse with the first rows, so the killer
    // is on its way before the COPY starts.
    let admin = driver(&config).await;
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate the reader");
        assert!(row.get::<_, bool>(0), "the reader's backend was signalled");
    });
    let mut copy = session
        .copy_out(
            "COPY (SELECT i, pg_sleep(CASE WHEN i = 100 THEN 30 ELSE 0 END) FROM generate_series(1, 1000) i) TO STDOUT",
        )
        .await
        .expect("COPY starts");
    let e = loop {
        match copy.next_batch(1).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the COPY ended normally"),
            Err(e) => break e,
        }
    };
    killer.await.unwrap();
    // The server's own reason (57P01, admin_shutdown), not just a closed socket.
    assert!(matches!(&e, SourceError::Db { code, .. } if code == "57P01"), "{e:?}");
    assert!(matches!(e.into_provider("copy"), ProviderError::Retryable(_)), "a killed session is retryable");
}
