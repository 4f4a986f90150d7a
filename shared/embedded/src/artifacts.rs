//! `FileArtifactStore`: backup artifacts as files under the data dir.
//!
//! A producer writes into `staging/<key>`; `put` hashes it while
//! copying it to `artifacts/<key>.tmp`, fsyncs, and renames it to
//! `artifacts/<key>`, so an artifact under its key is always whole. A failed
//! write (disk full) removes the partial file and reports the error.
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use capydb_domain::ports::{ArtifactInfo, ArtifactStore};
use capydb_domain::{DomainError, DomainResult};
use sha2::{Digest, Sha256};

pub struct FileArtifactStore {
    root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DomainError {
    DomainError::Internal(format!("could not {what} {}: {e}", path.display()))
}

/// Keys are resource ids; anything else could escape the directory.
fn check_key(key: &str) -> DomainResult<()> {
    if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(DomainError::internal(format!("invalid artifact key {key:?}")));
    }
    Ok(())
}

impl FileArtifactStore {
    pub fn open(root: &Path) -> DomainResult<FileArtifactStore> {
        for dir in [root.join("artifacts"), root.join("staging")] {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| io_err("create", &dir, e))?;
        }
        Ok(FileArtifactStore { root: root.to_path_buf() })
    }

    fn artifact(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(key)
    }
}

fn copy_hashing(from: &Path, to: &Path) -> DomainResult<ArtifactInfo> {
    let mut src = File::open(from).map_err(|e| io_err("open", from, e))?;
    let mut dst = File::create(to).map_err(|e| io_err("create", to, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| io_err("read", from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| io_err("write", to, e))?;
        size += n as u64;
    }
    dst.sync_all().map_err(|e| io_err("sync", to, e))?;
    Ok(ArtifactInfo { size_bytes: size, sha256: hex::encode(hasher.finalize()) })
}

#[async_trait]
impl ArtifactStore for FileArtifactStore {
    /// One staging path per key: a retry after a crash overwrites what the
    /// interrupted attempt left instead of leaking it.
    async fn staging_path(&self, key: &str) -> DomainResult<PathBuf> {
        check_key(key)?;
        Ok(self.root.join("staging").join(key))
    }

    async fn put(&self, key: &str, staged: &Path) -> DomainResult<ArtifactInfo> {
        check_key(key)?;
        let tmp = self.root.join("artifacts").join(format!("{key}.tmp"));
        let dest = self.artifact(key);
        let (staged_c, tmp_c, dest_c) = (staged.to_path_buf(), tmp.clone(), dest.clone());
        let result = tokio::task::spawn_blocking(move || {
            let info = copy_hashing(&staged_c, &tmp_c)?;
            fs::rename(&tmp_c, &dest_c).map_err(|e| io_err("rename", &tmp_c, e))?;
            Ok(info)
        })
        .await
        .map_err(|e| DomainError::internal(format!("artifact write task failed: {e}")))?;
        let _ = fs::remove_file(staged);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    async fn fetch(&self, key: &str) -> DomainResult<PathBuf> {
        check_key(key)?;
        let path = self.artifact(key);
        if !path.exists() {
            return Err(DomainError::NotFound(format!("the artifact of {key} is missing")));
        }
        Ok(path)
    }

    async fn delete(&self, key: &str) -> DomainResult<()> {
        check_key(key)?;
        match fs::remove_file(self.artifact(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &self.artifact(key), e)),
        }
    }
}
