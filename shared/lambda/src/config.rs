//! The functions' configuration, from the environment `infra/template.yaml` sets.
use std::path::PathBuf;

pub use capydb_aurora::AuroraSettings;
use capydb_domain::app::QuotaSettings;
use capydb_domain::ports::Hosting;
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
    /// Where projects' and previews' databases live.
    pub databases: Databases,
    /// Days a deleted project's final snapshot is kept (Aurora); 0 keeps it.
    pub final_snapshot_retention_days: u32,
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

/// The deployment's database provider (`CAPYDB_DATABASE_PROVIDER`, the
/// template's `DatabaseProvider`).
#[derive(Debug, Clone, PartialEq)]
pub enum Databases {
    /// `postgres-server`: every database on one PostgreSQL server.
    Server {
        /// `postgres://user@host:port/db`, without the password.
        admin_url: String,
        /// SSM SecureString parameter holding the admin password.
        password_param: Option<String>,
    },
    /// `aurora`: an Aurora PostgreSQL cluster per project and per preview.
    Aurora(AuroraSettings),
}

impl Databases {
    pub fn hosting(&self) -> Hosting {
        match self {
            Databases::Server { .. } => Hosting::Shared,
            Databases::Aurora(_) => Hosting::Dedicated,
        }
    }

    fn from_vars(vars: &impl Fn(&str) -> Option<String>) -> Result<Databases, String> {
        let get = |name: &str| vars(name).filter(|v| !v.trim().is_empty());
        let need = |name: &str| get(name).ok_or_else(|| format!("{name} is not set"));
        match get("CAPYDB_DATABASE_PROVIDER").as_deref().map(str::trim) {
            None | Some("postgres-server") => {
                let admin_url = need("CAPYDB_PG_ADMIN_URL")?;
                if url::Url::parse(&admin_url).ok().and_then(|u| u.password().map(str::to_string)).is_some() {
                    return Err("CAPYDB_PG_ADMIN_URL must not hold the password; put it in the SSM parameter \
                                CAPYDB_PG_ADMIN_PASSWORD_PARAM names"
                        .into());
                }
                Ok(Databases::Server { admin_url, password_param: get("CAPYDB_PG_ADMIN_PASSWORD_PARAM") })
            }
            Some("aurora") => {
                let capacity = |name: &str, default: f64| match get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|n| (0.0..=256.0).contains(n) && (n * 2.0).fract() == 0.0)
                        .ok_or_else(|| {
                            format!("{name} must be Aurora capacity units from 0 to 256 in steps of 0.5, not {v:?}")
                        }),
                };
                let settings = AuroraSettings {
                    engine_version: need("CAPYDB_AURORA_ENGINE_VERSION")?,
                    min_capacity: capacity("CAPYDB_AURORA_MIN_ACU", 0.0)?,
                    max_capacity: capacity("CAPYDB_AURORA_MAX_ACU", 4.0)?,
                    preview_max_capacity: capacity("CAPYDB_AURORA_PREVIEW_MAX_ACU", 2.0)?,
                    seconds_until_auto_pause: match get("CAPYDB_AURORA_AUTO_PAUSE_SECONDS") {
                        None => 300,
                        Some(v) => v.trim().parse().ok().filter(|n| (300..=86_400).contains(n)).ok_or_else(|| {
                            format!("CAPYDB_AURORA_AUTO_PAUSE_SECONDS must be 300 to 86400, not {v:?}")
                        })?,
                    },
                    subnet_group: need("CAPYDB_AURORA_SUBNET_GROUP")?,
                    security_group_ids: need("CAPYDB_AURORA_SECURITY_GROUP_IDS")?
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    kms_key_id: get("CAPYDB_AURORA_KMS_KEY_ID"),
                    environment: get("CAPYDB_ENVIRONMENT").unwrap_or_else(|| "prod".into()),
                    check_again: capydb_aurora::CHECK_AGAIN,
                };
                if settings.max_capacity < settings.min_capacity.max(0.5) {
                    return Err("CAPYDB_AURORA_MAX_ACU must be at least CAPYDB_AURORA_MIN_ACU, and at least 0.5".into());
                }
                Ok(Databases::Aurora(settings))
            }
            Some(other) => Err(format!("CAPYDB_DATABASE_PROVIDER must be postgres-server or aurora, not {other:?}")),
        }
    }
}

/// `16.4` → `16`: the major version projects are created with.
pub fn major_of(engine_version: &str) -> String {
    engine_version.split('.').next().unwrap_or(engine_version).to_string()
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
        let databases = Databases::from_vars(&|name| std::env::var(name).ok())?;
        let pg_version = match &databases {
            Databases::Aurora(aurora) => major_of(&aurora.engine_version),
            Databases::Server { .. } => opt_var("CAPYDB_PG_VERSION").unwrap_or_else(|| "15".into()),
        };
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
            databases,
            final_snapshot_retention_days: match opt_var("CAPYDB_FINAL_SNAPSHOT_RETENTION_DAYS") {
                Some(v) => v.trim().parse().map_err(|_| {
                    format!("CAPYDB_FINAL_SNAPSHOT_RETENTION_DAYS must be a whole number of days, not {v:?}")
                })?,
                None => 30,
            },
            pg_version,
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

    #[test]
    fn the_database_provider_is_postgres_server_unless_aurora_is_asked_with_what_it_needs() {
        let env = |pairs: Vec<(&'static str, &'static str)>| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let server = Databases::from_vars(&env(vec![("CAPYDB_PG_ADMIN_URL", "postgres://a@db:5432/postgres")]));
        assert_eq!(
            server,
            Ok(Databases::Server { admin_url: "postgres://a@db:5432/postgres".into(), password_param: None })
        );
        assert_eq!(server.unwrap().hosting(), Hosting::Shared);
        let with_password = Databases::from_vars(&env(vec![("CAPYDB_PG_ADMIN_URL", "postgres://a:pw@db/postgres")]));
        assert!(with_password.unwrap_err().contains("must not hold the password"));

        let aurora = vec![
            ("CAPYDB_DATABASE_PROVIDER", "aurora"),
            ("CAPYDB_AURORA_ENGINE_VERSION", "16.4"),
            ("CAPYDB_AURORA_SUBNET_GROUP", "private"),
            ("CAPYDB_AURORA_SECURITY_GROUP_IDS", "sg-1, sg-2"),
            ("CAPYDB_AURORA_MAX_ACU", "8"),
        ];
        let Ok(Databases::Aurora(a)) = Databases::from_vars(&env(aurora.clone())) else { panic!("aurora") };
        assert_eq!((a.min_capacity, a.max_capacity, a.preview_max_capacity), (0.0, 8.0, 2.0));
        assert_eq!(a.security_group_ids, ["sg-1", "sg-2"]);
        assert_eq!((a.seconds_until_auto_pause, a.kms_key_id, a.environment.as_str()), (300, None, "prod"));
        assert_eq!(major_of(&a.engine_version), "16");
        // No admin URL is needed, and what Aurora needs is named when missing.
        for missing in
            ["CAPYDB_AURORA_ENGINE_VERSION", "CAPYDB_AURORA_SUBNET_GROUP", "CAPYDB_AURORA_SECURITY_GROUP_IDS"]
        {
            let without: Vec<_> = aurora.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = Databases::from_vars(&env(without)).unwrap_err();
            assert!(e.contains(missing), "{e}");
        }
        for (name, bad) in [
            ("CAPYDB_AURORA_MAX_ACU", "0.3"),
            ("CAPYDB_AURORA_MIN_ACU", "-1"),
            ("CAPYDB_AURORA_AUTO_PAUSE_SECONDS", "10"),
        ] {
            let mut vars: Vec<_> = aurora.iter().copied().filter(|(k, _)| *k != name).collect();
            vars.push((name, bad));
            let e = Databases::from_vars(&env(vars)).unwrap_err();
            assert!(e.contains(name) && e.contains(bad), "{e}");
        }
        let mut low = aurora.clone();
        low.push(("CAPYDB_AURORA_MIN_ACU", "16"));
        assert!(Databases::from_vars(&env(low)).unwrap_err().contains("at least CAPYDB_AURORA_MIN_ACU"));
        let e = Databases::from_vars(&env(vec![("CAPYDB_DATABASE_PROVIDER", "rds")])).unwrap_err();
        assert!(e.contains("postgres-server or aurora"), "{e}");
    }
}
