//! A provider wrapper that sleeps before each operation (hidden flag
//! `--debug-provider-delay-ms`): lets the crash tests SIGKILL the process
//! while a job is between two steps, deterministically.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::ports::{CloneResult, DatabaseProvider, ProviderResult};

pub struct SlowProvider {
    inner: Arc<dyn DatabaseProvider>,
    delay: Duration,
}

impl SlowProvider {
    pub fn new(inner: Arc<dyn DatabaseProvider>, delay: Duration) -> Self {
        SlowProvider { inner, delay }
    }
}

#[async_trait]
impl DatabaseProvider for SlowProvider {
    async fn ensure_role(&self, role: &str, password: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.ensure_role(role, password).await
    }
    async fn ensure_database(&self, database: &str, owner: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.ensure_database(database, owner).await
    }
    async fn clone_database(&self, source: &str, source_owner: &str, target: &str, owner: &str) -> CloneResult {
        tokio::time::sleep(self.delay).await;
        self.inner.clone_database(source, source_owner, target, owner).await
    }
    async fn dump_database(&self, database: &str, dest: &Path) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.dump_database(database, dest).await
    }
    async fn restore_database(&self, dump: &Path, target: &str, owner: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.restore_database(dump, target, owner).await
    }
    async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.import_database(source_url, target, owner).await
    }
    async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.replace_database(live, replacement).await
    }
    async fn check_connection(&self, database: &str, role: &str, password: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.check_connection(database, role, password).await
    }
    async fn drop_database(&self, database: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.drop_database(database).await
    }
    async fn drop_role(&self, role: &str) -> ProviderResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.drop_role(role).await
    }
    async fn database_exists(&self, database: &str) -> ProviderResult<bool> {
        self.inner.database_exists(database).await
    }
    async fn role_exists(&self, role: &str) -> ProviderResult<bool> {
        self.inner.role_exists(role).await
    }
    // Not slowed: the health check is no provider operation a test interrupts.
    async fn ping(&self) -> ProviderResult<()> {
        self.inner.ping().await
    }
}
