//! Logs go to stderr (stdout carries only the bootstrap lines): text by
//! default, JSON when `CAPYDB_LOG_FORMAT=json`, filtered by `RUST_LOG`.
use tracing_subscriber::EnvFilter;

pub fn init() {
    // Driver internals log statements at debug level; statements can carry
    // passwords (ALTER ROLE ... PASSWORD), so they stay off unless asked for.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let json = std::env::var("CAPYDB_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
}
