//! Driver and tool errors → `ProviderError`. The split decides whether a job
//! retries a step or fails at once, so it errs on `Retryable` only where
//! waiting can help. The message is what API users read (a job's `error`):
//! one sentence per [`Cause`], saying what went wrong in general terms and
//! what to do. The raw text (the server's or a tool's words, which quote our
//! cluster's address and port, statements, paths) goes to the log only,
//! inside the job's span, so the entry carries the job id.
use std::error::Error as _;
use std::fmt::Display;

use capydb_domain::ports::ProviderError;

/// Why an operation failed, as far as a user can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Our server: refused, reset or closed the connection.
    Unreachable,
    /// Our server refused a login.
    LoginRefused,
    /// Our server's disk is full.
    DiskFull,
    /// Our server is out of connections or memory.
    OutOfResources,
    /// Our server is starting up or shutting down.
    Restarting,
    TimedOut,
    /// Waited too long on a lock another session holds.
    Locked,
    /// Lost a race with another operation on the same object.
    Concurrent,
    /// A database or role the operation needs is gone.
    Missing,
    /// The server refused a statement for another reason.
    Refused,
    /// pg_dump failed against our server for another reason.
    DumpFailed,
    /// pg_restore failed for another reason.
    LoadFailed,
    /// The backup's archive is missing or unreadable.
    BadArchive,
    /// CapyDB's own disk (dumps, staging) is full.
    LocalDiskFull,
    /// Something on CapyDB's side: missing tools, a work dir it cannot make.
    Internal,
    /// Connecting or logging in to an import source failed, however: one
    /// message, so an import cannot tell an open port from a closed one.
    SourceUnreachable,
    /// The import source is, or now resolves to, an address the egress policy refuses.
    SourceNotPublic,
    /// The import source runs a newer major version than our pg_dump.
    SourceTooNew,
    /// The import source's user may not read everything.
    SourcePermission,
    /// A table of the import source stayed locked past pg_dump's wait.
    SourceLocked,
    /// The import source failed in another way once connected.
    SourceReadFailed,
}

impl Cause {
    /// The sentence a user reads; never any text from outside this crate.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Cause::Unreachable => "the database server could not be reached; retry, or contact support if it persists",
            Cause::LoginRefused => "the database server refused the login; contact support if it persists",
            Cause::DiskFull => {
                "the database server is out of disk space; delete data, previews or backups, or contact support"
            }
            Cause::OutOfResources => {
                "the database server is out of connections or memory; retry later, or contact support if it persists"
            }
            Cause::Restarting => "the database server is restarting; retry in a minute",
            Cause::TimedOut => "the database server did not answer in time; retry, or contact support if it persists",
            Cause::Locked => {
                "the database is locked by another session (a long transaction or a schema change); retry once it ends"
            }
            Cause::Concurrent => "another operation on the same database ran at the same time; retry",
            Cause::Missing => "a database or role it needs no longer exists on the server; contact support",
            Cause::Refused => "the database server refused the operation; retry, or contact support if it persists",
            Cause::DumpFailed => "the database server refused the dump; retry, or contact support if it persists",
            Cause::LoadFailed => {
                "the data could not be loaded into the new database; retry, or contact support if it persists"
            }
            Cause::BadArchive => {
                "the backup's archive is missing or unreadable; use another backup, or contact support"
            }
            Cause::LocalDiskFull => {
                "CapyDB ran out of disk space for the copy; retry later, or contact support if it persists"
            }
            Cause::Internal => "CapyDB hit an internal error; contact support",
            Cause::SourceUnreachable => {
                "could not connect to the import source or log in; check the URL, that the server accepts \
                 connections from CapyDB, and the credentials"
            }
            Cause::SourceNotPublic => {
                "the import source is, or resolves to, a non-public address; CapyDB only connects to public addresses"
            }
            Cause::SourceTooNew => {
                "the import source runs a newer major version of PostgreSQL than CapyDB; import from a server of \
                 the same major version or older"
            }
            Cause::SourcePermission => {
                "the import source's user may not read all of the database; grant it read access to every schema, \
                 table and sequence, or import as the database's owner"
            }
            Cause::SourceLocked => {
                "a table of the import source stayed locked by another session; retry once the lock is released"
            }
            Cause::SourceReadFailed => {
                "the import source could not be read completely; retry, or contact support if it persists"
            }
        }
    }

    /// Whether waiting can help, for causes read from a tool's output (the
    /// driver's errors are split by `sqlstate_is_retryable`).
    fn retryable(self) -> bool {
        matches!(
            self,
            Cause::Unreachable
                | Cause::OutOfResources
                | Cause::Restarting
                | Cause::TimedOut
                | Cause::Locked
                | Cause::Concurrent
                | Cause::SourceLocked
        )
    }

    /// What a pg_dump or pg_restore run against our own server says went
    /// wrong (its messages are in English: `tool_command` sets LC_MESSAGES).
    pub(crate) fn of_tool_output(tool: &str, stderr: &str) -> Cause {
        let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
        if has(&["No space left on device", "could not extend file"]) {
            // The server's own words come after ERROR/FATAL; otherwise the tool
            // itself could not write its file, on our disk.
            if has(&["ERROR:", "FATAL:"]) {
                Cause::DiskFull
            } else {
                Cause::LocalDiskFull
            }
        } else if has(&["could not obtain lock", "lock timeout", "canceling statement due to statement timeout"]) {
            Cause::Locked
        } else if has(&["too many clients", "remaining connection slots", "out of memory"]) {
            Cause::OutOfResources
        } else if has(&["the database system is", "terminating connection due to administrator command"]) {
            Cause::Restarting
        } else if has(&["password authentication failed", "no pg_hba.conf entry", "authentication failed"]) {
            Cause::LoginRefused
        } else if has(&["Connection refused", "could not connect", "server closed the connection", "timeout expired"])
            || connection_failed(stderr)
        {
            Cause::Unreachable
        } else if has(&["server version mismatch"]) {
            // Our own server is newer than the tools found next to it.
            Cause::Internal
        } else if tool == "pg_restore" {
            Cause::LoadFailed
        } else {
            Cause::DumpFailed
        }
    }

    /// What an import source's pg_dump says went wrong. Anything that may
    /// have happened before pg_dump was connected and logged in is
    /// `SourceUnreachable`, whatever the words: a refused port, a filtered
    /// one, a service that is not PostgreSQL, a failed login or a missing
    /// database all read the same, so an import is no port scanner. Only
    /// what a logged-in session can see is told apart.
    pub(crate) fn of_source_dump(stderr: &str) -> Cause {
        let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
        if connection_failed(stderr) || has(&["could not translate host name", "could not connect"]) {
            Cause::SourceUnreachable
        } else if has(&["server version mismatch"]) {
            Cause::SourceTooNew
        } else if has(&["could not obtain lock", "lock timeout", "canceling statement due to statement timeout"]) {
            Cause::SourceLocked
        } else if has(&["No space left on device"]) && !has(&["ERROR:", "FATAL:"]) {
            Cause::LocalDiskFull
        } else if has(&["permission denied"]) {
            Cause::SourcePermission
        } else if has(&["query failed:", "ERROR:"]) {
            Cause::SourceReadFailed
        } else {
            Cause::SourceUnreachable
        }
    }

    /// What a SQLSTATE means to a user (the retry split is `sqlstate_is_retryable`).
    pub(crate) fn of_sqlstate(code: &str, message: &str) -> Cause {
        match code {
            "53100" => Cause::DiskFull,
            "55P03" => Cause::Locked,
            "57014" => Cause::TimedOut,
            "57P01" | "57P02" | "57P03" => Cause::Restarting,
            "55006" | "40001" | "40P01" => Cause::Concurrent,
            "XX000" if message.contains("tuple concurrently updated") => Cause::Concurrent,
            "3D000" | "42704" => Cause::Missing,
            c if c.starts_with("28") => Cause::LoginRefused,
            c if c.starts_with("08") => Cause::Unreachable,
            c if c.starts_with("53") => Cause::OutOfResources,
            _ => Cause::Refused,
        }
    }
}

/// libpq's words for a connection that failed or broke: `connection to
/// server at "h" (addr), port N failed: ...`, `connection to server on socket
/// ... failed`, `connection to server was lost`.
fn connection_failed(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        line.find("connection to server")
            .is_some_and(|i| line[i..].contains(" failed") || line[i..].contains("was lost"))
    })
}

/// An I/O error on CapyDB's side (a work dir, a dump file): a full disk is
/// told apart, anything else is ours to fix.
pub(crate) fn io_failure(what: &str, e: &std::io::Error) -> ProviderError {
    let cause = if e.raw_os_error() == Some(libc::ENOSPC) { Cause::LocalDiskFull } else { Cause::Internal };
    failure_as(false, cause, what, e)
}

/// `text` with credentials masked where they stand as credentials: the
/// password in any URL's userinfo (`scheme://user:SECRET@`), the value of a
/// conninfo `password=` key, and `secret` where it stands as a word of its
/// own (a server sent it in cleartext may echo it). Never inside a longer
/// word: with the password `p`, `port 9 failed` stays as it is (masking every
/// `p` would mangle the text and show where the secret's letters are).
pub(crate) fn mask_credentials(text: &str, secret: Option<&str>) -> String {
    const MASK: &str = "********";
    let mut spans: Vec<(usize, usize)> = Vec::new();
    // URL userinfo: after `://`, up to the last `@` of the authority.
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '?' | '#'))
            .map_or(text.len(), |j| start + j);
        let authority = &text[start..end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                spans.push((start + colon + 1, start + at));
            }
        }
        from = end.max(start);
    }
    // conninfo `password=value` or `password='quoted value'`.
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = if text[start..].starts_with('\'') {
            let mut escaped = false;
            let close = text[start + 1..].char_indices().find(|&(_, c)| {
                let close = c == '\'' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            });
            close.map_or(text.len(), |(j, _)| start + 1 + j + 1)
        } else {
            text[start..].find(char::is_whitespace).map_or(text.len(), |j| start + j)
        };
        spans.push((start, end));
        from = end.max(start + 1).min(text.len());
    }
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        for (i, _) in text.match_indices(secret) {
            let end = i + secret.len();
            if !word(text[..i].chars().next_back()) && !word(text[end..].chars().next()) {
                spans.push((i, end));
            }
        }
    }
    spans.retain(|(a, b)| a < b);
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (a, b) in spans {
        if b <= at {
            continue;
        }
        out.push_str(&text[at..a.max(at)]);
        out.push_str(MASK);
        at = b;
    }
    out.push_str(&text[at..]);
    out
}

/// The error a user reads for `cause`, its retryability decided by `retryable`;
/// the detail is logged. `what` names the operation in our own words.
pub(crate) fn failure_as(retryable: bool, cause: Cause, what: &str, detail: &dyn Display) -> ProviderError {
    tracing::warn!(operation = what, cause = ?cause, retryable, error = %detail, "database operation failed");
    if retryable {
        ProviderError::Retryable(cause.message().to_string())
    } else {
        ProviderError::Permanent(cause.message().to_string())
    }
}

/// `failure_as`, retryable when the cause can pass by itself.
pub(crate) fn failure(cause: Cause, what: &str, detail: &dyn Display) -> ProviderError {
    failure_as(cause.retryable(), cause, what, detail)
}

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

/// `what` names the operation ("create role prj_x_owner"); the driver adds
/// why, which is logged. Neither ever holds a password: statements carry only
/// SCRAM verifiers and the driver's messages do not quote its configuration.
pub(crate) fn from_pg(what: &str, e: &tokio_postgres::Error) -> ProviderError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let detail = format!("{} (SQLSTATE {code})", db.message());
        let retryable = sqlstate_is_retryable(code, db.message());
        return failure_as(retryable, Cause::of_sqlstate(code, db.message()), what, &detail);
    }
    let detail = match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    // Refused, reset, timed out, closed: the network or the server, not the request.
    if e.is_closed() || io_cause(e) {
        failure_as(true, Cause::Unreachable, what, &detail)
    } else {
        failure_as(false, Cause::Refused, what, &detail)
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

    /// A failed operation's message quotes nothing of what the server or a
    /// tool said: not the cluster's address and port, not a statement.
    #[test]
    fn user_messages_carry_no_address_statement_or_tool_output() {
        let stderr = "pg_dump: error: query failed: ERROR:  could not extend file \"base/16384/16385\": \
                      No space left on device\npg_dump: detail: Query was: SELECT pg_catalog.pg_get_viewdef('1'::oid)\n\
                      connection to server at \"10.1.2.3\", port 54321";
        let cause = Cause::of_tool_output("pg_dump", stderr);
        assert_eq!(cause, Cause::DiskFull);
        for cause in [cause, Cause::DumpFailed, Cause::SourceUnreachable, Cause::of_sqlstate("42601", "")] {
            let m = cause.message();
            for leak in ["10.1.2.3", "54321", "SELECT", "pg_dump:", "base/16384", "Query was"] {
                assert!(!m.contains(leak), "{m:?} quotes {leak:?}");
            }
            assert!(m.contains(';'), "{m:?} says what to do after a ';'");
        }
    }

    #[test]
    fn tool_failures_are_told_apart_by_what_a_user_can_do() {
        let cases = [
            ("pg_dump: error: could not write to output file: No space left on device", Cause::LocalDiskFull),
            ("pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout", Cause::Locked),
            (
                "pg_dump: error: connection to server at \"127.0.0.1\", port 5 failed: Connection refused",
                Cause::Unreachable,
            ),
            (
                "pg_dump: error: connection to server at \"h\", port 5 failed: FATAL:  sorry, too many clients already",
                Cause::OutOfResources,
            ),
            (
                "pg_dump: error: connection to server failed: FATAL:  the database system is shutting down",
                Cause::Restarting,
            ),
            (
                "pg_dump: error: connection to server failed: FATAL:  password authentication failed for user \"a\"",
                Cause::LoginRefused,
            ),
            ("pg_dump: error: query failed: ERROR:  permission denied for table t", Cause::DumpFailed),
        ];
        for (stderr, cause) in cases {
            assert_eq!(Cause::of_tool_output("pg_dump", stderr), cause, "{stderr}");
        }
        assert_eq!(
            Cause::of_tool_output("pg_restore", "pg_restore: error: could not execute query"),
            Cause::LoadFailed
        );
    }

    /// Everything before a login reads the same, whatever listened on the port.
    #[test]
    fn import_source_failures_before_login_all_read_the_same() {
        for stderr in [
            "pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused",
            "pg_dump: error: connection to server at \"h\" (1.2.3.4), port 5432 failed: timeout expired",
            "pg_dump: error: connection to server at \"h\", port 80 failed: server closed the connection unexpectedly",
            "pg_dump: error: connection to server at \"h\", port 22 failed: received invalid response to SSL negotiation: S",
            "pg_dump: error: connection to server at \"h\", port 5432 failed: FATAL:  password authentication failed",
            "pg_dump: error: connection to server at \"h\", port 5432 failed: FATAL:  database \"x\" does not exist",
            "something no version of pg_dump says",
            "",
        ] {
            assert_eq!(Cause::of_source_dump(stderr), Cause::SourceUnreachable, "{stderr}");
        }
        assert_eq!(
            Cause::of_source_dump("pg_dump: error: aborting because of server version mismatch"),
            Cause::SourceTooNew
        );
        assert_eq!(
            Cause::of_source_dump("pg_dump: error: query failed: ERROR:  permission denied for table t"),
            Cause::SourcePermission
        );
    }

    #[test]
    fn credentials_are_masked_where_they_stand_as_credentials_only() {
        let text =
            "connection to server at \"h\", port 9 failed: FATAL:  password authentication failed for user \"u\"";
        assert_eq!(mask_credentials(text, Some("p")), text, "a one-letter password mangles nothing");
        assert_eq!(
            mask_credentials("could not connect to postgres://u:p@h:5/d?sslmode=x", Some("p")),
            "could not connect to postgres://u:********@h:5/d?sslmode=x"
        );
        assert_eq!(mask_credentials("postgres://u:p%40x@h/d", None), "postgres://u:********@h/d");
        assert_eq!(mask_credentials("host=h password=p port=9", Some("p")), "host=h password=******** port=9");
        assert_eq!(mask_credentials("PASSWORD='a \\'b' x", None), "PASSWORD=******** x");
        // A server that echoes the password as a word of its own.
        assert_eq!(mask_credentials("FATAL:  p is not allowed", Some("p")), "FATAL:  ******** is not allowed");
        assert_eq!(mask_credentials("bad \"s3cret!\" here", Some("s3cret!")), "bad \"********\" here");
        assert_eq!(mask_credentials("no secrets here", Some("")), "no secrets here");
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
