//! The API key format: `capy_live_` + 32 base62 random characters + a 6-character
//! base62 CRC32 of everything before it. The checksum lets us refuse a mistyped
//! or truncated key before any store read; only the SHA-256 of a key is stored.
use rand::Rng;
use sha2::{Digest, Sha256};

pub const LIVE_PREFIX: &str = "capy_live_";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ascii")
}

/// A freshly generated key's plaintext. Shown to the caller once.
pub fn generate(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let mut body = String::with_capacity(prefix.len() + RANDOM_LEN + CHECKSUM_LEN);
    body.push_str(prefix);
    for _ in 0..RANDOM_LEN {
        body.push(BASE62[rng.gen_range(0..62)] as char);
    }
    let sum = checksum(&body);
    body.push_str(&sum);
    body
}

/// True when `key` has the prefix, only base62 characters, at least 30 random
/// characters and a matching checksum. Pure: no I/O.
pub fn is_well_formed(prefix: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else { return false };
    if rest.len() < 30 + CHECKSUM_LEN || rest.len() > 128 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, sum) = key.split_at(key.len() - CHECKSUM_LEN);
    checksum(body) == sum
}

/// Lowercase hex SHA-256: what the store keeps and looks keys up by.
pub fn hash(key: &str) -> String {
    // By hand: `hex::encode` goes a char at a time through an iterator, a
    // measurable share of an authenticated request.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in Sha256::digest(key.as_bytes()) {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The last four characters, shown in listings so a user can tell keys apart.
pub fn last4(key: &str) -> String {
    key[key.len().saturating_sub(4)..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed() {
        for _ in 0..100 {
            let k = generate(LIVE_PREFIX);
            assert!(is_well_formed(LIVE_PREFIX, &k), "{k}");
        }
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let k = generate(LIVE_PREFIX);
        let mut chars: Vec<char> = k.chars().collect();
        let i = LIVE_PREFIX.len() + 3;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let bad: String = chars.into_iter().collect();
        assert!(!is_well_formed(LIVE_PREFIX, &bad));
        assert!(!is_well_formed(LIVE_PREFIX, &k[..k.len() - 1]));
        assert!(!is_well_formed("capy_cli_", &k));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
