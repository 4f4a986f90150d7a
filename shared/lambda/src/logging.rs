//! The functions' logging. The filter is `RUST_LOG`'s whole list of
//! directives (`info,capydb_domain=debug`), parsed by tracing-subscriber's
//! `Targets` (no regex engine: EnvFilter's is ~1 MB of every function);
//! when `RUST_LOG` is unset, Lambda's advanced logging controls decide:
//! `AWS_LAMBDA_LOG_LEVEL` (`TRACE` … `FATAL`) and `AWS_LAMBDA_LOG_FORMAT`
//! (`JSON`: JSON lines, CloudWatch's default for the stack; `Text`: plain lines).
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How a function's log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// The logging a function's environment asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub filter: Targets,
    pub format: Format,
    /// What was wrong with the variables, logged once logging is up.
    pub warnings: Vec<String>,
}

/// Lambda's level names: its own `FATAL` is tracing's `ERROR`.
fn lambda_level(level: &str) -> Option<LevelFilter> {
    match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(LevelFilter::TRACE),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "INFO" => Some(LevelFilter::INFO),
        "WARN" => Some(LevelFilter::WARN),
        "ERROR" | "FATAL" => Some(LevelFilter::ERROR),
        _ => None,
    }
}

/// The logging of the environment `vars` reads. A variable that does not
/// parse falls back to the default (`info`, JSON) with a warning: a typo in
/// a log setting must not stop a function.
pub fn log_settings(vars: impl Fn(&str) -> Option<String>) -> LogSettings {
    let set = |name: &str| vars(name).filter(|v| !v.trim().is_empty());
    let mut warnings = Vec::new();
    let default = Targets::new().with_default(LevelFilter::INFO);
    let filter = match (set("RUST_LOG"), set("AWS_LAMBDA_LOG_LEVEL")) {
        (Some(directives), _) => directives.parse::<Targets>().unwrap_or_else(|e| {
            warnings.push(format!("RUST_LOG={directives:?} is not a filter ({e}); logging at info"));
            default
        }),
        (None, Some(level)) => match lambda_level(&level) {
            Some(level) => Targets::new().with_default(level),
            None => {
                warnings.push(format!("AWS_LAMBDA_LOG_LEVEL={level:?} is not a level; logging at info"));
                default
            }
        },
        (None, None) => default,
    };
    let format = match set("AWS_LAMBDA_LOG_FORMAT") {
        None => Format::Json,
        Some(f) if f.trim().eq_ignore_ascii_case("json") => Format::Json,
        Some(f) if f.trim().eq_ignore_ascii_case("text") => Format::Text,
        Some(f) => {
            warnings.push(format!("AWS_LAMBDA_LOG_FORMAT={f:?} is neither JSON nor Text; logging JSON"));
            Format::Json
        }
    };
    LogSettings { filter, format, warnings }
}

/// Logs as the environment says (see the module's documentation), without
/// timestamps: CloudWatch stamps every line.
pub fn init_tracing() {
    let settings = log_settings(|name| std::env::var(name).ok());
    let registry = tracing_subscriber::registry().with(settings.filter);
    let result = match settings.format {
        Format::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false).without_time()).try_init()
        }
        Format::Text => registry.with(tracing_subscriber::fmt::layer().with_ansi(false).without_time()).try_init(),
    };
    if result.is_ok() {
        for warning in settings.warnings {
            tracing::warn!("{warning}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    fn enabled(s: &LogSettings, target: &str, level: tracing::Level) -> bool {
        s.filter.would_enable(target, &level)
    }

    #[test]
    fn rust_log_is_read_whole_not_just_its_first_directive() {
        use tracing::Level;
        let s = log_settings(env(&[("RUST_LOG", "info,capydb_domain=debug,aws_smithy_runtime=warn")]));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(enabled(&s, "capydb_domain::jobs", Level::DEBUG), "the per-target directive counts");
        assert!(!enabled(&s, "capydb_domain::jobs", Level::TRACE));
        assert!(enabled(&s, "capydb_api", Level::INFO));
        assert!(!enabled(&s, "capydb_api", Level::DEBUG), "the default level is the first directive's");
        assert!(!enabled(&s, "aws_smithy_runtime::client", Level::INFO), "a quieter target stays quieter");
        assert_eq!(s.format, Format::Json);
    }

    #[test]
    fn rust_log_wins_over_lambdas_level_which_applies_when_it_is_unset() {
        use tracing::Level;
        let s = log_settings(env(&[("RUST_LOG", "warn"), ("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]));
        assert!(!enabled(&s, "capydb_domain", Level::INFO), "RUST_LOG is set: it decides");
        let s = log_settings(env(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]));
        assert!(enabled(&s, "capydb_domain", Level::DEBUG));
        assert!(!enabled(&s, "capydb_domain", Level::TRACE));
        let s = log_settings(env(&[("RUST_LOG", " "), ("AWS_LAMBDA_LOG_LEVEL", "fatal")]));
        assert!(enabled(&s, "x", Level::ERROR) && !enabled(&s, "x", Level::WARN), "FATAL is tracing's ERROR");
        let s = log_settings(env(&[]));
        assert!(enabled(&s, "x", Level::INFO) && !enabled(&s, "x", Level::DEBUG), "unset: info");
    }

    #[test]
    fn lambdas_log_format_picks_json_or_text() {
        assert_eq!(log_settings(env(&[])).format, Format::Json);
        assert_eq!(log_settings(env(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")])).format, Format::Json);
        assert_eq!(log_settings(env(&[("AWS_LAMBDA_LOG_FORMAT", "Text")])).format, Format::Text);
        let s = log_settings(env(&[("AWS_LAMBDA_LOG_FORMAT", "xml")]));
        assert_eq!(s.format, Format::Json);
        assert!(s.warnings[0].contains("xml"), "{:?}", s.warnings);
    }

    #[test]
    fn what_does_not_parse_falls_back_to_info_with_a_warning() {
        use tracing::Level;
        let s = log_settings(env(&[("RUST_LOG", "capydb=loud")]));
        assert!(enabled(&s, "capydb", Level::INFO) && !enabled(&s, "capydb", Level::DEBUG));
        assert!(s.warnings[0].contains("RUST_LOG"), "{:?}", s.warnings);
        let s = log_settings(env(&[("AWS_LAMBDA_LOG_LEVEL", "chatty")]));
        assert!(enabled(&s, "x", Level::INFO) && !enabled(&s, "x", Level::DEBUG));
        assert!(s.warnings[0].contains("AWS_LAMBDA_LOG_LEVEL"), "{:?}", s.warnings);
    }
}
