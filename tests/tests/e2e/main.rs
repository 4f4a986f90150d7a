//! One end-to-end test binary (zero2prod style): `helpers` starts the app.
mod helpers;
mod support;

mod api_docs;
mod auth;
mod backups;
mod cli_login;
mod conventions;
mod crash;
mod failures;
mod idempotency;
mod limits;
mod local_start;
mod previews;
mod projects;
mod readme;
mod sessions;
mod sweeper;
mod webhooks;
