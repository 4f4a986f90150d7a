//! The functions' configuration, from the environment `infra/template.yaml` sets.
use std::path::PathBuf;

use capydb_domain::app::QuotaSettings;
use capydb_egress::EgressPolicy;

/// The functions' configuration, from the environment `infra/template.yaml` sets.
#[derive(Debug, Clone)]
pub struct Config {
    pub table: String,
    pub jobs_queue_url: String,
    pub jobs_dead_letter_url: Option<String>,
    pub webhook_queue_url: String,
    pub webhook_dead_letter_url: Option<String>,
    pub event_bus: String,
    pub kms_key_id: String,
    /// `postgres://user@host:port/db`, without the password.
    pub pg_admin_url: String,
    /// SSM SecureString parameter holding the admin password.
    pub pg_admin_password_param: Option<String>,
    pub pg_version: String,
    pub artifact_dir: PathBuf,
    /// Receives of a job message before SQS moves it to the dead-letter
    /// queue (the redrive policy's maxReceiveCount).
    pub jobs_max_receives: u32,
    /// Outbound connections a caller aims (webhooks, imports) to private
    /// addresses: never when deployed (`from_env` always denies); the
    /// Lambda-shape tests set it to deliver to a receiver on 127.0.0.1.
    pub allow_private_egress: bool,
    pub region: String,
    /// Runs of a job before a retryable step error fails it.
    pub job_max_attempts: u32,
    /// Requests per minute from one client address; 0 is no limit.
    pub rate_limit_per_minute: u32,
    /// Requests per minute from one address to the CLI login endpoints.
    pub cli_login_rate_limit_per_minute: u32,
    /// The page where a person approves a CLI login; unset: the API's own
    /// `POST /v1/cli/login/approve`.
    pub cli_verification_url: Option<String>,
    /// Per-organization and per-project limits (`CAPYDB_MAX_*`).
    pub quotas: QuotaSettings,
    /// Browser sessions (`CAPYDB_CLERK_*`); off when neither a key nor a
    /// JWKS URL is set.
    pub clerk: capydb_clerk::ClerkConfig,
}

pub(crate) fn var(name: &str) -> Result<String, String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| format!("{name} is not set"))
}

pub(crate) fn opt_var(name: &str) -> Option<String> {
    var(name).ok()
}

/// The limits from `CAPYDB_MAX_*` (read through `vars`), each its default
/// when unset. A value that does not parse stops the start-up: a typo must
/// not lift a limit unnoticed.
fn quotas_from(vars: impl Fn(&str) -> Option<String>) -> Result<QuotaSettings, String> {
    let number = |name: &str, default: u32| match vars(name).filter(|v| !v.trim().is_empty()) {
        Some(v) => v.trim().parse().map_err(|_| format!("{name} must be a whole number, not {v:?}")),
        None => Ok(default),
    };
    let d = QuotaSettings::default();
    Ok(QuotaSettings {
        projects: number("CAPYDB_MAX_PROJECTS", d.projects)?,
        previews_per_project: number("CAPYDB_MAX_PREVIEWS_PER_PROJECT", d.previews_per_project)?,
        backups_per_project: number("CAPYDB_MAX_BACKUPS_PER_PROJECT", d.backups_per_project)?,
        webhooks: number("CAPYDB_MAX_WEBHOOKS", d.webhooks)?,
    })
}

impl Config {
    /// The egress policy of every function.
    pub fn egress(&self) -> EgressPolicy {
        EgressPolicy { allow_private: self.allow_private_egress }
    }

    pub fn from_env() -> Result<Config, String> {
        let pg_admin_url = var("CAPYDB_PG_ADMIN_URL")?;
        if url::Url::parse(&pg_admin_url).ok().and_then(|u| u.password().map(str::to_string)).is_some() {
            return Err("CAPYDB_PG_ADMIN_URL must not hold the password; put it in the SSM parameter \
                        CAPYDB_PG_ADMIN_PASSWORD_PARAM names"
                .into());
        }
        let jobs_max_receives = match opt_var("CAPYDB_JOBS_MAX_RECEIVES") {
            Some(v) => v.parse().map_err(|_| format!("CAPYDB_JOBS_MAX_RECEIVES must be a number, not {v:?}"))?,
            None => 5,
        };
        Ok(Config {
            table: var("CAPYDB_TABLE")?,
            jobs_queue_url: var("CAPYDB_JOBS_QUEUE_URL")?,
            jobs_dead_letter_url: opt_var("CAPYDB_JOBS_DLQ_URL"),
            webhook_queue_url: var("CAPYDB_WEBHOOK_QUEUE_URL")?,
            webhook_dead_letter_url: opt_var("CAPYDB_WEBHOOK_DLQ_URL"),
            event_bus: var("CAPYDB_EVENT_BUS")?,
            kms_key_id: var("CAPYDB_KMS_KEY_ID")?,
            pg_admin_url,
            pg_admin_password_param: opt_var("CAPYDB_PG_ADMIN_PASSWORD_PARAM"),
            pg_version: opt_var("CAPYDB_PG_VERSION").unwrap_or_else(|| "15".into()),
            artifact_dir: PathBuf::from(opt_var("CAPYDB_ARTIFACT_DIR").unwrap_or_else(|| "/mnt/artifacts".into())),
            jobs_max_receives,
            // No variable turns this on: a deployed function always denies.
            allow_private_egress: false,
            region: opt_var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            job_max_attempts: match opt_var("CAPYDB_JOB_MAX_ATTEMPTS") {
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("CAPYDB_JOB_MAX_ATTEMPTS must be a positive number, not {v:?}"))?,
                None => capydb_domain::JobSettings::default().max_attempts,
            },
            rate_limit_per_minute: match opt_var("CAPYDB_RATE_LIMIT_PER_MINUTE") {
                Some(v) => {
                    v.parse().map_err(|_| format!("CAPYDB_RATE_LIMIT_PER_MINUTE must be a number, not {v:?}"))?
                }
                None => capydb_domain::RateLimitSettings::default().limit,
            },
            cli_login_rate_limit_per_minute: match opt_var("CAPYDB_CLI_LOGIN_RATE_LIMIT_PER_MINUTE") {
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("CAPYDB_CLI_LOGIN_RATE_LIMIT_PER_MINUTE must be a number, not {v:?}"))?,
                None => capydb_domain::CliLoginSettings::default().rate_limit.limit,
            },
            cli_verification_url: opt_var("CAPYDB_CLI_VERIFICATION_URL"),
            quotas: quotas_from(|name| std::env::var(name).ok())?,
            clerk: capydb_clerk::ClerkConfig::from_env()?,
        })
    }
}

/// The bootstrap function's configuration: the table, the secret that
/// receives the admin key, and the stack's KMS key. It reads nothing else,
/// so it runs without the queue, bus and PostgreSQL settings.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub table: String,
    /// `<stack>/bootstrap-api-key`; the template grants access to it alone.
    pub secret_name: String,
    /// Encrypts the secret; Secrets Manager's own key when unset.
    pub kms_key_id: Option<String>,
}

impl BootstrapConfig {
    pub fn from_env() -> Result<BootstrapConfig, String> {
        Ok(BootstrapConfig {
            table: var("CAPYDB_TABLE")?,
            secret_name: var("CAPYDB_BOOTSTRAP_SECRET_NAME")?,
            kms_key_id: opt_var("CAPYDB_KMS_KEY_ID"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_default_when_unset_and_refuse_what_does_not_parse() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(quotas_from(env(&[])), Ok(QuotaSettings::default()), "unset: the defaults");
        let set = quotas_from(env(&[
            ("CAPYDB_MAX_PROJECTS", "3"),
            ("CAPYDB_MAX_PREVIEWS_PER_PROJECT", " 4 "),
            ("CAPYDB_MAX_BACKUPS_PER_PROJECT", "5"),
            ("CAPYDB_MAX_WEBHOOKS", ""),
        ]));
        let d = QuotaSettings::default();
        assert_eq!(
            set,
            Ok(QuotaSettings { projects: 3, previews_per_project: 4, backups_per_project: 5, webhooks: d.webhooks }),
            "each variable sets its own limit; an empty one is unset"
        );
        for name in [
            "CAPYDB_MAX_PROJECTS",
            "CAPYDB_MAX_PREVIEWS_PER_PROJECT",
            "CAPYDB_MAX_BACKUPS_PER_PROJECT",
            "CAPYDB_MAX_WEBHOOKS",
        ] {
            let bad = move |n: &str| (n == name).then(|| "ten".to_string());
            let e = quotas_from(bad).expect_err("an unparsable limit must stop the start-up");
            assert!(e.contains(name) && e.contains("ten"), "the error must name the variable and value: {e}");
        }
        let negative = quotas_from(|n: &str| (n == "CAPYDB_MAX_WEBHOOKS").then(|| "-1".to_string()));
        assert!(negative.is_err(), "a negative limit is not a limit");
    }
}
