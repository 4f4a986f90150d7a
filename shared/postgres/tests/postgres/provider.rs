//! `PgProvider` against a real server: the `DatabaseProvider` contract,
//! isolation between tenants, and how failures are classified.
use capydb_domain::ports::{DatabaseEndpoint, DatabaseProvider, ProviderError};
use capydb_postgres::PgProvider;
use tokio_postgres::NoTls;

use crate::helpers::{dead_port, TestCluster};

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn assert_permanent<T: std::fmt::Debug>(result: Result<T, ProviderError>, what: &str) {
    assert!(matches!(result, Err(ProviderError::Permanent(_))), "{what}: expected a permanent error, got {result:?}");
}

fn assert_retryable<T: std::fmt::Debug>(result: Result<T, ProviderError>, what: &str) {
    assert!(matches!(result, Err(ProviderError::Retryable(_))), "{what}: expected a retryable error, got {result:?}");
}

#[tokio::test]
async fn provisions_a_role_and_database_that_accept_connections() {
    let t = TestCluster::start().await;
    let p = t.provider().await;

    p.ensure_role("prj_a_owner", "pw-a").await.expect("ensure_role");
    p.ensure_database("prj_a", "prj_a_owner").await.expect("ensure_database");
    p.check_connection("prj_a", "prj_a_owner", "pw-a").await.expect("the owner connects with its password");
    assert!(p.role_exists("prj_a_owner").await.unwrap());
    assert!(p.database_exists("prj_a").await.unwrap());
    assert!(!p.database_exists("prj_b").await.unwrap());

    assert_eq!(p.endpoint().region(), "local");
    let versions = p.endpoint().pg_versions();
    assert!(versions.len() == 1 && versions[0].parse::<u32>().is_ok_and(|v| v >= 13), "{versions:?}");

    let info = p.endpoint().connection_info("prj_a", "prj_a_owner", "pw-a");
    assert_eq!(
        (
            info.role.as_str(),
            info.host.as_str(),
            info.port,
            info.database.as_str(),
            info.user.as_str(),
            info.sslmode.as_str()
        ),
        ("owner", "127.0.0.1", t.cluster.port(), "prj_a", "prj_a_owner", "disable")
    );
    let (client, connection) =
        tokio_postgres::connect(&info.uri, NoTls).await.expect("a client connects with the handed-out URI");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE notes (id int); INSERT INTO notes VALUES (1)")
        .await
        .expect("the owner can create tables in the public schema of its database");
}

#[tokio::test]
async fn every_operation_is_idempotent() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    for round in 0..2 {
        p.ensure_role("prj_i_owner", "pw").await.unwrap_or_else(|e| panic!("ensure_role, round {round}: {e}"));
        p.ensure_database("prj_i", "prj_i_owner")
            .await
            .unwrap_or_else(|e| panic!("ensure_database, round {round}: {e}"));
        p.check_connection("prj_i", "prj_i_owner", "pw")
            .await
            .unwrap_or_else(|e| panic!("check_connection, round {round}: {e}"));
    }
    for round in 0..2 {
        p.drop_database("prj_i").await.unwrap_or_else(|e| panic!("drop_database, round {round}: {e}"));
        p.drop_role("prj_i_owner").await.unwrap_or_else(|e| panic!("drop_role, round {round}: {e}"));
    }
    assert!(!p.database_exists("prj_i").await.unwrap());
    assert!(!p.role_exists("prj_i_owner").await.unwrap());
}

#[tokio::test]
async fn wrong_passwords_are_permanent() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    p.ensure_role("prj_w_owner", "right").await.unwrap();
    p.ensure_database("prj_w", "prj_w_owner").await.unwrap();
    let result = p.check_connection("prj_w", "prj_w_owner", "wrong").await;
    if let Err(ProviderError::Permanent(message)) = &result {
        assert!(!message.contains("wrong") && !message.contains("right"), "the message quotes a password: {message}");
    }
    assert_permanent(result, "check_connection with a wrong password");

    let bad_admin = t.cluster.admin_url().replace("capydb_admin:", "capydb_admin:x");
    assert_permanent(PgProvider::connect(&bad_admin, "local").await, "connect with a wrong admin password");
}

#[tokio::test]
async fn changing_the_password_retires_the_old_one() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    p.ensure_role("prj_r_owner", "old-password").await.unwrap();
    p.ensure_database("prj_r", "prj_r_owner").await.unwrap();
    p.ensure_role("prj_r_owner", "new-password").await.expect("ensure_role on an existing role sets its password");
    assert_permanent(p.check_connection("prj_r", "prj_r_owner", "old-password").await, "the old password");
    p.check_connection("prj_r", "prj_r_owner", "new-password").await.expect("the new password works");
}

#[tokio::test]
async fn passwords_with_quotes_backslashes_and_unicode_work() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    let password = r#"it's a \'; DROP ROLE capydb_admin; -- "ü" \\"#;
    p.ensure_role("prj_q_owner", password).await.expect("ensure_role with special characters");
    p.ensure_database("prj_q", "prj_q_owner").await.unwrap();
    p.check_connection("prj_q", "prj_q_owner", password).await.expect("the same password connects");
    let (client, connection) =
        tokio_postgres::connect(&p.endpoint().connection_info("prj_q", "prj_q_owner", password).uri, NoTls)
            .await
            .expect("the percent-encoded URI carries the password intact");
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_role_cannot_connect_to_another_projects_database() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    for (db, role) in [("prj_x", "prj_x_owner"), ("prj_y", "prj_y_owner")] {
        p.ensure_role(role, "pw").await.unwrap();
        p.ensure_database(db, role).await.unwrap();
    }
    assert_permanent(p.check_connection("prj_y", "prj_x_owner", "pw").await, "x's role on y's database");
    assert_permanent(p.check_connection("prj_x", "prj_y_owner", "pw").await, "y's role on x's database");
    p.check_connection("prj_x", "prj_x_owner", "pw").await.unwrap();
}

#[tokio::test]
async fn drop_removes_database_and_role_even_with_open_sessions() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    p.ensure_role("prj_d_owner", "pw").await.unwrap();
    p.ensure_database("prj_d", "prj_d_owner").await.unwrap();
    let (client, connection) =
        tokio_postgres::connect(&p.endpoint().connection_info("prj_d", "prj_d_owner", "pw").uri, NoTls).await.unwrap();
    let session = tokio::spawn(connection);

    p.drop_database("prj_d").await.expect("drop_database ends open sessions");
    p.drop_role("prj_d_owner").await.expect("drop_role");
    assert!(!p.database_exists("prj_d").await.unwrap());
    assert!(!p.role_exists("prj_d_owner").await.unwrap());
    assert!(client.simple_query("SELECT 1").await.is_err(), "the tenant's session was ended");
    drop(client);
    let _ = session.await;

    p.drop_database("prj_d").await.expect("a second drop_database is fine");
    p.drop_role("prj_d_owner").await.expect("a second drop_role is fine");
}

#[tokio::test]
async fn invalid_and_reserved_names_are_permanent() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    assert_permanent(p.ensure_role("Prj_Owner", "pw").await, "uppercase role");
    assert_permanent(p.ensure_role("a\"; DROP ROLE x; --", "pw").await, "role with quotes");
    assert_permanent(p.ensure_role(&"r".repeat(64), "pw").await, "role of 64 characters");
    assert_permanent(p.ensure_database("1db", "prj_owner").await, "database starting with a digit");
    assert_permanent(p.check_connection("db-x", "prj_owner", "pw").await, "database with a dash");
    assert_permanent(p.ensure_role("prj_n_owner", "").await, "empty password");
    assert_permanent(p.ensure_role("prj_n_owner", "a\0b").await, "password with NUL");
    assert_permanent(p.ensure_role("capydb_admin", "pw").await, "the admin role");
    assert_permanent(p.drop_role("capydb_admin").await, "dropping the admin role");
    assert_permanent(p.drop_database("postgres").await, "dropping the admin database");
    assert_permanent(p.drop_database("template1").await, "dropping a template");
    assert_permanent(p.ensure_database("prj_n", "no_such_role").await, "an owner that does not exist");
}

#[tokio::test]
async fn concurrent_ensures_of_the_same_names_both_succeed() {
    let t = TestCluster::start().await;
    let (a, b) = (t.provider().await, t.provider().await);
    for i in 0..5 {
        let (db, role) = (format!("prj_c{i}"), format!("prj_c{i}_owner"));
        let (ra, rb) = tokio::join!(a.ensure_role(&role, "pw"), b.ensure_role(&role, "pw"));
        ra.unwrap_or_else(|e| panic!("first concurrent ensure_role {role}: {e}"));
        rb.unwrap_or_else(|e| panic!("second concurrent ensure_role {role}: {e}"));
        let (ra, rb) = tokio::join!(a.ensure_database(&db, &role), b.ensure_database(&db, &role));
        ra.unwrap_or_else(|e| panic!("first concurrent ensure_database {db}: {e}"));
        rb.unwrap_or_else(|e| panic!("second concurrent ensure_database {db}: {e}"));
        a.check_connection(&db, &role, "pw").await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let url = format!("postgres://capydb_admin:secret@127.0.0.1:{}/postgres", dead_port());
    let result = PgProvider::connect(&url, "local").await;
    if let Err(ProviderError::Retryable(message)) = &result {
        assert!(!message.contains("secret"), "the message quotes the admin password: {message}");
    }
    assert_retryable(result, "connect to a dead port");
}

/// The health check of a function without the admin password: the probe
/// gets an answer from a running server, and none from a stopped one.
#[tokio::test]
async fn the_wire_probe_tells_a_running_server_from_a_stopped_one() {
    use capydb_domain::ports::DatabaseProbe;
    let t = TestCluster::start().await;
    let endpoint = capydb_postgres::ClientEndpoint::of_admin_url(&t.cluster.admin_url(), "local", "15").unwrap();
    endpoint.probe().probe().await.expect("a running server answers");
    t.cluster.stop().await.expect("stop");
    assert_retryable(endpoint.probe().probe().await, "probe a stopped server");
}

#[tokio::test]
async fn operations_on_a_stopped_server_are_retryable() {
    let t = TestCluster::start().await;
    let p = t.provider().await;
    p.ensure_role("prj_s_owner", "pw").await.unwrap();
    p.ensure_database("prj_s", "prj_s_owner").await.unwrap();
    t.cluster.stop().await.expect("stop");
    assert_retryable(p.check_connection("prj_s", "prj_s_owner", "pw").await, "check_connection");
    assert_retryable(p.ensure_role("prj_s_owner", "pw").await, "ensure_role");
    assert_retryable(p.drop_database("prj_s").await, "drop_database");
}

#[tokio::test]
async fn the_admin_connection_survives_a_server_restart() {
    let mut t = TestCluster::start().await;
    let p = t.provider().await;
    p.ensure_role("prj_t_owner", "pw").await.unwrap();
    let port = t.cluster.port();
    t.cluster.stop().await.expect("stop");
    assert_eq!(t.restart().await.port(), port, "the cluster comes back on its stored port");
    p.ensure_database("prj_t", "prj_t_owner").await.expect("the provider reconnects by itself");
    p.check_connection("prj_t", "prj_t_owner", "pw").await.unwrap();
}

/// A provider told where the server's host resolves to connects there, for
/// its admin sessions, its logins and its tools alike: the host's name is
/// only a name. Here the address is a relay on 127.0.0.2 to the server, and
/// the name is `localhost` (127.0.0.1), where nothing listens on the
/// relay's port: whatever went by the name would fail.
#[tokio::test]
async fn a_provider_given_the_address_goes_there_for_everything() {
    let t = TestCluster::start().await;
    let admin = url::Url::parse(&t.cluster.admin_url()).unwrap();
    let password = admin.password().unwrap().to_string();
    let address = relay(t.cluster.port()).await;
    let named = format!("postgres://capydb_admin:{password}@localhost:{}/postgres", dead_port());
    let p = PgProvider::connect_at(&named, address, "local").await.expect("connects at the address");
    const PW: &str = "Passw0rdAtAnAddressPassw0rd12345";
    p.ensure_role("prj_at_owner", PW).await.unwrap();
    p.ensure_database("prj_at", "prj_at_owner").await.unwrap();
    p.check_connection("prj_at", "prj_at_owner", PW).await.expect("the owner logs in at the address");
    let dump = tempfile::NamedTempFile::new().unwrap();
    p.dump_database("prj_at", dump.path()).await.expect("pg_dump goes to the address");
    assert!(std::fs::metadata(dump.path()).unwrap().len() > 0);

    let by_parts =
        PgProvider::connect_admin("localhost", address, "capydb_admin", &password, None, TIMEOUT, "local").await;
    by_parts.expect("the admin by parts").check_connection("prj_at", "prj_at_owner", PW).await.unwrap();
}

/// A TCP relay listening on 127.0.0.2 to 127.0.0.1:`port`.
async fn relay(port: u16) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("127.0.0.2 is loopback");
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    address
}

/// A server that speaks TLS with a certificate for `localhost` signed by a
/// test CA: the provider given that CA goes over TLS for its sessions, its
/// logins and its tools (verify-full); given another CA, or another name,
/// it does not connect at all.
#[tokio::test]
async fn a_provider_with_tls_verifies_the_server_and_uses_it_everywhere() {
    use std::os::unix::fs::MetadataExt;
    let t = TestCluster::start().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = make_ca(certs.path(), "ca");
    let other_ca = make_ca(certs.path(), "other");
    // The server's key and certificate, owned by the server's user.
    let data = t.cluster.data_dir();
    let owner = std::fs::metadata(data).unwrap();
    issue(certs.path(), "ca", &data.join("server.key"), &data.join("server.crt"));
    for f in ["server.key", "server.crt"] {
        std::os::unix::fs::chown(data.join(f), Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (admin, connection) = tokio_postgres::connect(&t.cluster.admin_url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    // And nothing but TLS from now on (this session stays as it is).
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    let tls_only: String = rules
        .lines()
        .map(|l| l.strip_prefix("host ").map_or(l.to_string(), |rest| format!("hostssl {rest}")) + "\n")
        .collect();
    assert!(tls_only.contains("hostssl"), "{rules}");
    std::fs::write(&hba, tls_only).unwrap();
    for statement in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        admin.simple_query(statement).await.unwrap();
    }
    let url = url::Url::parse(&t.cluster.admin_url()).unwrap();
    let password = url.password().unwrap().to_string();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], t.cluster.port()));
    let connect = |host: &'static str, pem: Vec<u8>| {
        let password = password.clone();
        async move {
            let tls = capydb_postgres::PgTls::trusting(&pem).expect("a CA");
            PgProvider::connect_admin(host, address, "capydb_admin", &password, Some(tls), TIMEOUT, "local").await
        }
    };

    let p = connect("localhost", ca.clone()).await.expect("TLS to the server the CA vouches for");
    const PW: &str = "Passw0rdOverTlsPassw0rdOverTls12";
    p.ensure_role("prj_tls_owner", PW).await.unwrap();
    p.ensure_database("prj_tls", "prj_tls_owner").await.unwrap();
    p.check_connection("prj_tls", "prj_tls_owner", PW).await.expect("the owner logs in over TLS");
    let dump = tempfile::NamedTempFile::new().unwrap();
    p.dump_database("prj_tls", dump.path()).await.expect("pg_dump over TLS, verify-full");
    let over_tls: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'capydb'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(over_tls >= 1, "the provider's admin session is over TLS");

    assert!(connect("localhost", other_ca).await.is_err(), "a certificate another CA signed is refused");
    // Another name, with nothing to resolve (an address): refused, and no
    // lookup leaves the machine even if `hostaddr` stopped being used.
    assert!(connect("127.0.0.1", ca).await.is_err(), "a certificate for another name is refused");
}

/// A self-signed CA `<name>.crt` / `<name>.key` in `dir`; answers its PEM.
fn make_ca(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let crt = dir.join(format!("{name}.crt"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN=capydb test {name}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req");
    std::fs::read(crt).unwrap()
}

/// A key and a certificate for `localhost` signed by the CA `ca` in `dir`.
fn issue(dir: &std::path::Path, ca: &str, key: &std::path::Path, crt: &std::path::Path) {
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    std::fs::write(&ext, "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    let ok = |status: std::process::ExitStatus| assert!(status.success());
    ok(std::process::Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(&csr)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap());
    ok(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(dir.join(format!("{ca}.crt")))
        .arg("-CAkey")
        .arg(dir.join(format!("{ca}.key")))
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(crt)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap());
}

/// An admin that is not a superuser, as RDS's and Aurora's master user is
/// (`CREATEDB`, `CREATEROLE` and `pg_signal_backend`, what `rds_superuser`
/// gives): every operation of the contract works, its logins and copies too.
#[tokio::test]
async fn every_operation_works_with_an_admin_that_is_not_a_superuser() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let t = TestCluster::start().await;
    let (admin, connection) = tokio_postgres::connect(&t.cluster.admin_url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    const ADMIN_PW: &str = "RdsLikeAdminPassw0rdRdsLike12345";
    admin
        .batch_execute(&format!(
            "CREATE ROLE rds_like_admin LOGIN CREATEDB CREATEROLE PASSWORD '{ADMIN_PW}'; \
             GRANT pg_signal_backend TO rds_like_admin"
        ))
        .await
        .unwrap();
    let url = format!("postgres://rds_like_admin:{ADMIN_PW}@127.0.0.1:{}/postgres", t.cluster.port());
    let p = PgProvider::connect(&url, "local").await.expect("the admin that is not a superuser connects");
    const PW: &str = "0wnerPassw0rd0wnerPassw0rd123456";
    const NEW_PW: &str = "N3wOwnerPassw0rdN3wOwnerPassw012";
    for _ in 0..2 {
        p.ensure_role("prj_rds_owner", PW).await.expect("create, then alter, the role");
        p.ensure_database("prj_rds", "prj_rds_owner").await.expect("give it a database");
    }
    p.check_connection("prj_rds", "prj_rds_owner", PW).await.expect("the owner logs in");
    let owner_url = format!("postgres://prj_rds_owner:{PW}@127.0.0.1:{}/prj_rds", t.cluster.port());
    let (owner, connection) = tokio_postgres::connect(&owner_url, NoTls).await.unwrap();
    tokio::spawn(connection);
    owner.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')").await.unwrap();
    drop(owner);

    // A dump, restored as another role's database; a copy; a replacement.
    let dump = tempfile::NamedTempFile::new().unwrap();
    p.dump_database("prj_rds", dump.path()).await.expect("pg_dump as the admin");
    p.ensure_role("pvw_rds_owner", PW).await.unwrap();
    p.restore_database(dump.path(), "pvw_rds", "pvw_rds_owner").await.expect("pg_restore --role as the admin");
    p.check_connection("pvw_rds", "pvw_rds_owner", PW).await.unwrap();
    p.ensure_role("pvw_copy_owner", PW).await.unwrap();
    p.clone_database("prj_rds", "prj_rds_owner", "pvw_copy", "pvw_copy_owner").await.expect("a copy");
    p.check_connection("pvw_copy", "pvw_copy_owner", PW).await.unwrap();
    p.restore_database(dump.path(), "prj_rds_restore", "prj_rds_owner").await.unwrap();
    p.replace_database("prj_rds", "prj_rds_restore").await.expect("a replacement takes the name");
    let (owner, connection) = tokio_postgres::connect(&owner_url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let v: String = owner.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");

    // A new password (the old one refused), then everything goes, even with a session open.
    p.ensure_role("prj_rds_owner", NEW_PW).await.unwrap();
    p.check_connection("prj_rds", "prj_rds_owner", NEW_PW).await.unwrap();
    assert_permanent(p.check_connection("prj_rds", "prj_rds_owner", PW).await, "the old password");
    for (database, role) in [("prj_rds", "prj_rds_owner"), ("pvw_rds", "pvw_rds_owner"), ("pvw_copy", "pvw_copy_owner")]
    {
        p.drop_database(database).await.unwrap_or_else(|e| panic!("drop {database}: {e}"));
        p.drop_role(role).await.unwrap_or_else(|e| panic!("drop {role}: {e}"));
        assert!(!p.database_exists(database).await.unwrap() && !p.role_exists(role).await.unwrap());
    }
    drop(owner);
}
