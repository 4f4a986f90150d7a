//! `SecretBox` with AES-256-GCM and a key in a local file readable only by
//! its owner.
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use capydb_domain::ports::SecretBox;
use capydb_domain::{DomainError, DomainResult};
use rand::rngs::OsRng;
use rand::RngCore;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// GCM's authentication tag, appended to the ciphertext.
const TAG_LEN: usize = 16;
/// Names the format (and, by extension, the key file) so a later format or
/// key rotation can tell old sealed texts apart.
const VERSION_PREFIX: &str = "v1:";
const OPEN_FAILED: &str = "sealed secret could not be opened";

/// Seals secrets with AES-256-GCM under a 32-byte key kept in a file of mode
/// `0600`. Sealed text is `v1:` + base64(nonce ‖ ciphertext ‖ tag), with a
/// random 96-bit nonce per seal.
pub struct KeyFileSecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for KeyFileSecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFileSecretBox { .. }")
    }
}

impl KeyFileSecretBox {
    /// Loads the key at `path`, or creates it with a fresh random key when the
    /// file does not exist. Refuses a file that is not exactly 32 bytes or
    /// whose mode gives group or others any access.
    pub fn open_or_create(path: &Path) -> DomainResult<Self> {
        let key = match read_key(path) {
            Err(KeyFileError::Missing) => match create_key(path) {
                Ok(key) => key,
                // Someone else created it between our read and our link.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key(path).map_err(|e| e.into_domain(path))?,
                Err(e) => {
                    return Err(DomainError::Internal(format!("could not create key file {}: {e}", path.display())))
                }
            },
            other => other.map_err(|e| e.into_domain(path))?,
        };
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| DomainError::internal("AES-256 key has the wrong length"))?;
        Ok(KeyFileSecretBox { cipher })
    }
}

enum KeyFileError {
    Missing,
    Io(std::io::Error),
    Invalid(String),
}

impl KeyFileError {
    fn into_domain(self, path: &Path) -> DomainError {
        let path = path.display();
        match self {
            KeyFileError::Missing => DomainError::Internal(format!("key file {path} does not exist")),
            KeyFileError::Io(e) => DomainError::Internal(format!("could not read key file {path}: {e}")),
            KeyFileError::Invalid(why) => DomainError::Internal(format!("refusing key file {path}: {why}")),
        }
    }
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], KeyFileError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(KeyFileError::Missing),
        Err(e) => return Err(KeyFileError::Io(e)),
    };
    // Checked on the open handle, so the file cannot be swapped in between.
    let meta = file.metadata().map_err(KeyFileError::Io)?;
    if !meta.is_file() {
        return Err(KeyFileError::Invalid("it is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Invalid(format!(
            "its mode {mode:04o} gives group or others access; run chmod 600 on it"
        )));
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyFileError::Invalid(format!("it holds {} bytes, a key has {KEY_LEN}", meta.len())));
    }
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key).map_err(KeyFileError::Io)?;
    Ok(key)
}

/// Writes a new random key to a private temporary file and hard-links it to
/// `path`, so the key file appears complete or not at all (a crash or a
/// concurrent `open_or_create` never sees a short file), and an existing key
/// is never overwritten (`link` fails with `AlreadyExists`).
fn create_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        fs::hard_link(&tmp, path)?;
        // Make the new directory entry durable too: losing the key loses
        // every secret sealed with it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result.map(|()| key)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{:016x}", OsRng.next_u64()));
    path.with_file_name(name)
}

#[async_trait]
impl SecretBox for KeyFileSecretBox {
    async fn seal(&self, plaintext: &str) -> DomainResult<String> {
        Ok(format!("{VERSION_PREFIX}{}", BASE64.encode(aead_seal(&self.cipher, plaintext.as_bytes())?)))
    }

    async fn open(&self, sealed: &str) -> DomainResult<String> {
        let failed = || DomainError::internal(OPEN_FAILED);
        let raw = sealed.strip_prefix(VERSION_PREFIX).and_then(|b64| BASE64.decode(b64).ok()).ok_or_else(failed)?;
        let plaintext = aead_open(&self.cipher, &raw).ok_or_else(failed)?;
        String::from_utf8(plaintext).map_err(|_| failed())
    }
}

/// AES-256-GCM with a fresh random nonce: `nonce ‖ ciphertext ‖ tag`. Shared
/// with the KMS secret box, which seals under a data key KMS hands out.
pub fn aead_seal(cipher: &Aes256Gcm, plaintext: &[u8]) -> DomainResult<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| DomainError::internal("secret could not be sealed"))?;
    let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&ciphertext);
    Ok(raw)
}

/// Opens what [`aead_seal`] made; `None` when it was tampered with,
/// truncated, or sealed under another key.
pub fn aead_open(cipher: &Aes256Gcm, raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
    cipher.decrypt(Nonce::from_slice(nonce), ciphertext).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("capydb-secret-{:016x}", OsRng.next_u64()));
            fs::create_dir(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn creates_a_private_32_byte_key_file_and_reuses_it() {
        let dir = TempDir::new();
        let path = dir.0.join("secret.key");
        let first = KeyFileSecretBox::open_or_create(&path).expect("create");
        let meta = fs::metadata(&path).expect("key file exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "key file must be created with mode 0600");
        assert_eq!(meta.len(), 32);
        let leftovers = fs::read_dir(&dir.0).expect("read dir").count();
        assert_eq!(leftovers, 1, "the temporary file must be removed");

        let sealed = first.seal("hunter2").await.expect("seal");
        assert!(sealed.starts_with("v1:"), "{sealed}");
        let second = KeyFileSecretBox::open_or_create(&path).expect("reopen");
        assert_eq!(second.open(&sealed).await.expect("open with the reloaded key"), "hunter2");
    }

    #[test]
    fn refuses_a_key_file_others_can_read() {
        let dir = TempDir::new();
        let path = dir.0.join("secret.key");
        KeyFileSecretBox::open_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = KeyFileSecretBox::open_or_create(&path).expect_err("0644 must be refused");
        assert!(matches!(&err, DomainError::Internal(m) if m.contains("0644") && m.contains("chmod 600")), "{err:?}");
    }

    #[test]
    fn refuses_a_key_file_of_the_wrong_size() {
        let dir = TempDir::new();
        let path = dir.0.join("secret.key");
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("create");
        f.write_all(b"too short").expect("write");
        let err = KeyFileSecretBox::open_or_create(&path).expect_err("a 9-byte key must be refused");
        assert!(matches!(&err, DomainError::Internal(m) if m.contains("9 bytes")), "{err:?}");
    }

    #[tokio::test]
    async fn a_foreign_key_cannot_open_and_says_so() {
        let dir = TempDir::new();
        let a = KeyFileSecretBox::open_or_create(&dir.0.join("a.key")).expect("a");
        let b = KeyFileSecretBox::open_or_create(&dir.0.join("b.key")).expect("b");
        let sealed = a.seal("s3cret").await.expect("seal");
        assert_eq!(b.open(&sealed).await, Err(DomainError::Internal(OPEN_FAILED.into())));
        for garbage in ["", "v1:", "v1:!!!", "v2:AAAA", "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            assert_eq!(a.open(garbage).await, Err(DomainError::Internal(OPEN_FAILED.into())), "{garbage:?}");
        }
    }
}
