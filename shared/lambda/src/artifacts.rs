//! The backup artifacts of the functions that mount the file system.
use std::path::PathBuf;

use async_trait::async_trait;
use capydb_domain::ports::{ArtifactInfo, ArtifactStore};
use capydb_domain::{DomainError, DomainResult};
use capydb_embedded::FileArtifactStore;
use tokio::sync::OnceCell;

/// The backup artifacts on the EFS mount, opened on first use: only the
/// functions that mount it (worker, backups) ever touch it.
pub struct LazyArtifacts {
    dir: PathBuf,
    store: OnceCell<FileArtifactStore>,
}

impl LazyArtifacts {
    pub fn new(dir: PathBuf) -> LazyArtifacts {
        LazyArtifacts { dir, store: OnceCell::new() }
    }

    async fn get(&self) -> DomainResult<&FileArtifactStore> {
        self.store
            .get_or_try_init(|| async {
                FileArtifactStore::open(&self.dir).map_err(|e| {
                    DomainError::Unavailable(format!(
                        "the backup store {} is not reachable from this function: {e}",
                        self.dir.display()
                    ))
                })
            })
            .await
    }
}

#[async_trait]
impl ArtifactStore for LazyArtifacts {
    async fn staging_path(&self, key: &str) -> DomainResult<PathBuf> {
        self.get().await?.staging_path(key).await
    }
    async fn put(&self, key: &str, staged: &std::path::Path) -> DomainResult<ArtifactInfo> {
        self.get().await?.put(key, staged).await
    }
    async fn fetch(&self, key: &str) -> DomainResult<PathBuf> {
        self.get().await?.fetch(key).await
    }
    async fn delete(&self, key: &str) -> DomainResult<()> {
        self.get().await?.delete(key).await
    }
}
