//! Driver errors → `ProviderError`. The split decides whether a job retries a
//! step or fails at once, so it errs on `Retryable` only where waiting can help.
use std::error::Error as _;

use capydb_domain::ports::ProviderError;

/// Whether an error with this SQLSTATE can go away by itself.
pub(crate) fn sqlstate_is_retryable(code: &str, message: &str) -> bool {
    // 08: connection exceptions; 53: insufficient resources (too many
    // connections, disk full, out of memory).
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            // admin_shutdown, crash_shutdown, cannot_connect_now: a restart is under way.
            "57P01" | "57P02" | "57P03"
            // object_in_use ("source database template1 is being accessed by
            // other users"), lock_not_available (our lock_timeout).
            | "55006" | "55P03"
            // serialization_failure, deadlock_detected.
            | "40001" | "40P01"
        )
        // Two sessions changing the same catalog row at once (e.g. two GRANTs on
        // one database) lose the race with this internal error, not a 40001.
        || (code == "XX000" && message.contains("tuple concurrently updated"))
}

/// The session is gone, so the same call on a fresh connection may succeed.
pub(crate) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || io_cause(e)
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02")
        })
}

fn io_cause(e: &tokio_postgres::Error) -> bool {
    e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// `what` names the operation ("create role prj_x_owner"); the driver adds why.
/// Neither ever holds a password: statements carry only SCRAM verifiers and
/// the driver's messages do not quote its configuration.
pub(crate) fn from_pg(what: &str, e: &tokio_postgres::Error) -> ProviderError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let message = format!("{what}: {} (SQLSTATE {code})", db.message());
        return if sqlstate_is_retryable(code, db.message()) {
            ProviderError::Retryable(message)
        } else {
            ProviderError::Permanent(message)
        };
    }
    let message = match e.source() {
        Some(cause) => format!("{what}: {e}: {cause}"),
        None => format!("{what}: {e}"),
    };
    // Refused, reset, timed out, closed: the network or the server, not the request.
    if e.is_closed() || io_cause(e) {
        ProviderError::Retryable(message)
    } else {
        ProviderError::Permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates_are_retryable() {
        for code in ["08006", "08001", "53300", "53100", "57P01", "57P03", "55006", "55P03", "40001", "40P01"] {
            assert!(sqlstate_is_retryable(code, ""), "{code} should be retryable");
        }
        assert!(sqlstate_is_retryable("XX000", "tuple concurrently updated"));
    }

    #[test]
    fn request_errors_are_permanent() {
        // invalid_password, invalid_authorization_specification, insufficient_privilege,
        // undefined_object, dependent_objects_still_exist, other internal errors.
        for code in ["28P01", "28000", "42501", "42704", "2BP01", "3D000", "XX000"] {
            assert!(!sqlstate_is_retryable(code, "boom"), "{code} should be permanent");
        }
    }
}
