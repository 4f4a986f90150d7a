//! Names and literals spliced into DDL text: `CREATE ROLE`, `CREATE DATABASE`
//! and friends take no bind parameters, so everything they name goes through here.
use capydb_domain::ports::{ProviderError, ProviderResult};

/// PostgreSQL truncates identifiers at 63 bytes (NAMEDATALEN - 1); refusing
/// longer names keeps two different names from meaning the same object.
const MAX_NAME_LEN: usize = 63;

/// Accepts `^[a-z_][a-z0-9_]{0,62}$`: names that never need quoting, so what
/// the control plane stores is exactly what the server shows.
pub(crate) fn validate_name(kind: &str, name: &str) -> ProviderResult<()> {
    let bytes = name.as_bytes();
    let valid = matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes.len() <= MAX_NAME_LEN
        && bytes.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(ProviderError::Permanent(format!(
            "invalid {kind} name {name:?}: use 1 to {MAX_NAME_LEN} characters from a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

/// Quoted even though `validate_name` already excludes everything that needs
/// it, so a future relaxation of the rule cannot open an injection.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that reads the same whatever `standard_conforming_strings`
/// is: with backslashes present it uses the `E'...'` form, like the server's own
/// `quote_literal`.
pub(crate) fn quote_literal(value: &str) -> ProviderResult<String> {
    if value.contains('\0') {
        return Err(ProviderError::Permanent("a value sent to PostgreSQL cannot contain a NUL character".into()));
    }
    let quoted = value.replace('\'', "''");
    Ok(if quoted.contains('\\') { format!("E'{}'", quoted.replace('\\', "\\\\")) } else { format!("'{quoted}'") })
}

/// Passwords PostgreSQL can store and a client can send: not empty (the server
/// would store "no password" instead) and without NUL (the wire protocol ends
/// strings at NUL).
pub(crate) fn validate_password(password: &str) -> ProviderResult<()> {
    if password.is_empty() {
        return Err(ProviderError::Permanent("the password must not be empty".into()));
    }
    if password.contains('\0') {
        return Err(ProviderError::Permanent("the password must not contain a NUL character".into()));
    }
    Ok(())
}

/// The `PASSWORD '...'` literal for a role: a SCRAM-SHA-256 verifier computed
/// here, so the plaintext never reaches the server, its statement log,
/// `pg_stat_activity`, or an error message that quotes the statement.
pub(crate) fn password_literal(password: &str) -> ProviderResult<String> {
    validate_password(password)?;
    quote_literal(&postgres_protocol::password::scram_sha_256(password.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_lowercase_identifier_rule() {
        for ok in ["a", "_", "prj_01jabc", "x9", &"a".repeat(63)] {
            assert!(validate_name("role", ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in ["", "9a", "A", "a-b", "a b", "a\"b", "é", "a;drop", &"a".repeat(64)] {
            assert!(
                matches!(validate_name("role", bad), Err(ProviderError::Permanent(_))),
                "{bad:?} should be rejected as permanent"
            );
        }
    }

    #[test]
    fn identifiers_double_embedded_quotes() {
        assert_eq!(quote_ident("abc"), "\"abc\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("abc").unwrap(), "'abc'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c").unwrap(), r"E'a\\b''c'");
        assert!(matches!(quote_literal("a\0b"), Err(ProviderError::Permanent(_))));
    }

    #[test]
    fn password_literal_carries_a_verifier_not_the_password() {
        let literal = password_literal("s3cret'pw").unwrap();
        assert!(literal.starts_with("'SCRAM-SHA-256$4096:"), "{literal}");
        assert!(!literal.contains("s3cret"));
        assert!(matches!(password_literal(""), Err(ProviderError::Permanent(_))));
        assert!(matches!(password_literal("a\0b"), Err(ProviderError::Permanent(_))));
    }
}
