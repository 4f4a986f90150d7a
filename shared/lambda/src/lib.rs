//! What every function of the serverless bundle shares, one module per
//! concern: configuration from the environment ([`config`]), logging
//! ([`logging`]), the SDK's TLS ([`tls`]), the `App` on the AWS adapters per
//! function role ([`wiring`], with the lazily connected [`providers`] and
//! [`artifacts`]), the route-group functions ([`http`]), the SQS batch
//! handlers ([`sqs`]), the sweeper ([`sweeper`]) and the bootstrap function
//! ([`bootstrap`]). Each `functions/<name>/src/main.rs` is one call in here.
//!
//! Start-up makes no network call (cold starts stay close to a bare
//! `lambda_runtime` binary's): SDK clients connect on first use, and the
//! PostgreSQL admin connection, with its password from SSM, is opened by the
//! first job step that needs it.
use std::sync::Arc;

use capydb_aws::client::SdkCell;
use capydb_domain::App;

pub mod artifacts;
pub mod bootstrap;
pub mod config;
pub mod http;
pub mod logging;
pub mod providers;
pub mod sqs;
pub mod sweeper;
pub mod tls;
pub mod wiring;

pub use bootstrap::run_bootstrap;
pub use config::{BootstrapConfig, Config};
pub use http::{routes, serve_api, serve_backups_api, serve_webhooks_api};
pub use lambda_runtime::Error;
pub use logging::init_tracing;
pub use sqs::{run_webhook_delivery, run_worker, sqs_batch, webhook_batch, worker_batch};
pub use sweeper::{run_sweeper, sweep};
pub use tls::sdk_config;
pub use wiring::{app, Role};

/// The route groups of each API function, from `capydb_api`'s one registry.
pub use capydb_api::functions;

/// The Lambda crates at the versions and features this crate uses, for
/// tests and tools that build events.
pub mod events {
    pub use aws_lambda_events;
    pub use lambda_http;
}

/// The config and app a function starts with; `role` picks the
/// function-specific adapters.
pub async fn start(role: fn(&Config, &Arc<SdkCell>) -> Result<Role, String>) -> Result<(Config, App), Error> {
    let t0 = std::time::Instant::now();
    init_tracing();
    let t1 = std::time::Instant::now();
    let config = Config::from_env()?;
    let sdk = SdkCell::lazy(|| async { sdk_config().await.map_err(|e| e.to_string()) });
    let role = role(&config, &sdk)?;
    let app = app(&config, &sdk, role);
    let us = |a: std::time::Instant, b: std::time::Instant| (b - a).as_micros() as u64;
    tracing::debug!(tracing_us = us(t0, t1), app_us = us(t1, std::time::Instant::now()), "start-up phases");
    Ok((config, app))
}
