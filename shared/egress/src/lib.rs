//! Outbound connections a caller can aim (webhook URLs, import sources, later
//! a JWKS URL), all behind one egress policy ([`EgressPolicy`]): what the
//! guard refuses ([`guard::non_public_reason`]), the names refused before any
//! lookup, how a `postgres://` URL says where libpq connects ([`pg`]), and
//! the webhook HTTP client that connects only to addresses the policy checked
//! (feature `http`, on by default).
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "get")]
mod get;
pub mod guard;
pub mod pg;
mod policy;
#[cfg(feature = "http")]
mod webhook;

#[cfg(feature = "http")]
pub use client::{guarded_client, refusal};
#[cfg(feature = "get")]
pub use get::{Fetched, GuardedGet};
pub use policy::{url_target, EgressError, EgressPolicy};
#[cfg(feature = "http")]
pub use webhook::HttpWebhookSender;
