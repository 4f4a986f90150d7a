//! Router tests: the real `capydb_api::router` over the SQLite adapters in a
//! temporary directory, driven with `tower::ServiceExt::oneshot` (no socket,
//! no traffic). They pin down the HTTP conventions every route group shares:
//! extraction, JSON errors, pagination and authentication.
mod auth;
mod errors;
mod extraction;
mod helpers;
mod idempotency;
mod pagination;
mod scopes;
mod webhooks;
