//! Command-line arguments of `capydb-local`.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Relative to the working directory; `bash local/run` runs everything from
/// the repository's root, so its data is `<repo>/.capydb` for every subcommand.
pub const DEFAULT_DATA_DIR: &str = "./.capydb";

#[derive(Debug, Parser)]
#[command(
    name = "capydb-local",
    version,
    about = "The CapyDB control plane in one process: API, job worker and sweeper on SQLite and PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (the default).
    Serve(ServeArgs),
    /// Manage API keys directly in the data dir.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage organizations directly in the data dir.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// FOR DEVELOPMENT ONLY: sign a session token for a user and role with
    /// the data dir's development key; a server accepts it only when started
    /// with `--dev-sessions`.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Delete the data dir and its private PostgreSQL cluster (wherever it
    /// lives), after stopping the cluster; capydb-local must not be running.
    /// The next start begins afresh and prints a new API key.
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "CAPYDB_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization with an admin API key; prints CAPYDB_ORG_ID and CAPYDB_API_KEY.
    Create(OrgsCreateArgs),
}

#[derive(Debug, Args)]
pub struct OrgsCreateArgs {
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "CAPYDB_DATA_DIR")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the API listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8787", env = "CAPYDB_LISTEN")]
    pub listen: SocketAddr,
    /// Where metadata, the secret key and the private PostgreSQL cluster live
    /// (as root, the cluster lives in /var/lib/capydb/clusters/<hash> instead:
    /// the data dir is 0700 and the cluster runs as the `postgres` user).
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "CAPYDB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Use this PostgreSQL server (a superuser URL) instead of a private cluster.
    #[arg(long, env = "CAPYDB_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Concurrent job workers (0 runs the API alone; jobs wait in the queue).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Seconds between sweeps (expired previews, stuck-job re-drive).
    #[arg(long, default_value_t = 60)]
    pub sweep_interval: u64,
    /// Milliseconds a job waits before its first retry (doubling, capped at 60 s).
    #[arg(long, default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Runs of a job before a retryable error fails it.
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    /// Refuse outbound connections a caller aims (webhook URLs, import
    /// sources) at hosts that are, or resolve to, loopback, private,
    /// link-local or metadata addresses, when they are created and again when
    /// they connect (the deployed shape always does). By default
    /// capydb-local allows them, so a webhook or an import can point at your
    /// own machine. `--deny-private-webhooks` is the flag's former name.
    #[arg(
        long,
        alias = "deny-private-webhooks",
        env = "CAPYDB_DENY_PRIVATE_EGRESS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub deny_private_egress: bool,
    /// Concurrent webhook deliveries.
    #[arg(long, default_value_t = 8)]
    pub webhook_workers: usize,
    /// FOR DEVELOPMENT ONLY: accept the session tokens `capydb-local
    /// sessions create` signs with this data dir's development key. Not
    /// with a Clerk configuration (`CAPYDB_CLERK_*`).
    #[arg(long, env = "CAPYDB_DEV_SESSIONS", value_parser = clap::builder::BoolishValueParser::new())]
    pub dev_sessions: bool,
    /// Requests per minute allowed from one client address (429 beyond,
    /// with `Retry-After`); 0 turns rate limiting off.
    #[arg(long, default_value_t = 6000, env = "CAPYDB_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: u32,
    /// Requests per minute allowed from one client address to the CLI
    /// login endpoints (`/v1/cli/login`, `.../approve`, `.../token`), which
    /// count only there; 0 turns that limit off.
    #[arg(long, default_value_t = 10, env = "CAPYDB_CLI_LOGIN_RATE_LIMIT_PER_MINUTE")]
    pub cli_login_rate_limit_per_minute: u32,
    /// The page where a person approves a CLI login (a dashboard's); by
    /// default the CLI is shown this server's `POST /v1/cli/login/approve`.
    #[arg(long, env = "CAPYDB_CLI_VERIFICATION_URL")]
    pub cli_verification_url: Option<String>,
    /// Most projects (not deleted) per organization [default: 100].
    #[arg(long, env = "CAPYDB_MAX_PROJECTS")]
    pub max_projects: Option<u32>,
    /// Most previews (not deleted) per project [default: 50].
    #[arg(long, env = "CAPYDB_MAX_PREVIEWS_PER_PROJECT")]
    pub max_previews_per_project: Option<u32>,
    /// Most backups (not deleted, safety backups included) per project [default: 200].
    #[arg(long, env = "CAPYDB_MAX_BACKUPS_PER_PROJECT")]
    pub max_backups_per_project: Option<u32>,
    /// Most webhook endpoints per organization [default: 25].
    #[arg(long, env = "CAPYDB_MAX_WEBHOOKS")]
    pub max_webhooks: Option<u32>,
    /// Test hook: sleep this long before every database-provider operation,
    /// so tests can interrupt a job between its steps.
    #[arg(long, default_value_t = 0, hide = true)]
    pub debug_provider_delay_ms: u64,
    /// Test hook: the webhook retry delays in milliseconds, comma-separated,
    /// instead of 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    #[arg(long, value_delimiter = ',', hide = true)]
    pub debug_webhook_retry_ms: Option<Vec<u64>>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Print a development session token (a JWT) on stdout.
    Create(SessionsCreateArgs),
}

#[derive(Debug, Args)]
pub struct SessionsCreateArgs {
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "CAPYDB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The organization, as a Clerk organization id; its CapyDB organization
    /// is made on the token's first use.
    #[arg(long, default_value = "org_dev")]
    pub org: String,
    /// `admin` (org:admin) or `member`.
    #[arg(long, default_value = "admin", value_parser = ["admin", "member"])]
    pub role: String,
    /// The user id the token names.
    #[arg(long, default_value = "user_dev")]
    pub user: String,
    /// Minutes the token is valid.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub ttl_minutes: u32,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint an API key and print its plaintext on stdout.
    Create(KeysCreateArgs),
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "CAPYDB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Comma-separated scopes, e.g. `projects:read,jobs:read`, or `*` for all.
    #[arg(long)]
    pub scopes: String,
    /// Restrict the key to this project.
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long, default_value = "command-line key")]
    pub name: String,
    #[arg(long)]
    pub expires_in_days: Option<u32>,
    /// The organization (defaults to the only one).
    #[arg(long)]
    pub org: Option<String>,
}
