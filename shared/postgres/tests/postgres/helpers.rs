use std::path::{Path, PathBuf};

use async_trait::async_trait;
use capydb_domain::ports::SecretBox;
use capydb_domain::{DomainError, DomainResult};
use capydb_postgres::{LocalCluster, PgProvider};
use tempfile::TempDir;

/// Reversible and visibly not the plaintext, which is all these tests need.
pub struct XorBox;

const KEY: u8 = 0x5a;

#[async_trait]
impl SecretBox for XorBox {
    async fn seal(&self, plaintext: &str) -> DomainResult<String> {
        Ok(hex::encode(plaintext.bytes().map(|b| b ^ KEY).collect::<Vec<_>>()))
    }
    async fn open(&self, sealed: &str) -> DomainResult<String> {
        let bytes = hex::decode(sealed).map_err(DomainError::internal)?;
        String::from_utf8(bytes.into_iter().map(|b| b ^ KEY).collect()).map_err(DomainError::internal)
    }
}

/// Stops and deletes the cluster of a data dir when dropped, also when the
/// test panics, so no server outlives its test, and no relocated cluster
/// (as root it lives outside the temp dir) outlives its data dir.
pub struct DestroyOnDrop(pub LocalCluster);

impl Drop for DestroyOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.destroy() {
            eprintln!("could not remove the test cluster in {}: {e}", self.0.data_dir().display());
        }
    }
}

/// A started cluster in its own temp dir. Fields drop in order: the server
/// stops before its directory is removed.
pub struct TestCluster {
    _destroy: DestroyOnDrop,
    pub cluster: LocalCluster,
    pub dir: PathBuf,
    _tmp: TempDir,
}

impl TestCluster {
    pub async fn start() -> TestCluster {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().join("capydb");
        let cluster = LocalCluster::ensure_started(&dir, &XorBox).await.expect("the local cluster starts");
        TestCluster { _destroy: DestroyOnDrop(cluster.clone()), cluster, dir, _tmp: tmp }
    }

    /// `ensure_started` again on the same dir, as a restarted capydb-local would.
    pub async fn restart(&mut self) -> &LocalCluster {
        self.cluster = LocalCluster::ensure_started(&self.dir, &XorBox).await.expect("the local cluster starts again");
        &self.cluster
    }

    /// A provider that may import from this machine, as capydb-local's is by default.
    pub async fn provider(&self) -> PgProvider {
        let mut p =
            PgProvider::connect(&self.cluster.admin_url(), "local").await.expect("the provider connects as admin");
        p.set_egress_policy(capydb_egress::EgressPolicy::ALLOW_PRIVATE);
        p
    }
}

pub fn postmaster_pid(data_dir: &Path) -> i32 {
    let text =
        std::fs::read_to_string(data_dir.join("postmaster.pid")).expect("postmaster.pid exists while the server runs");
    text.lines().next().and_then(|l| l.trim().parse().ok()).expect("postmaster.pid starts with the pid")
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
