//! The HTTP client every outbound request a caller aims goes through
//! (webhooks, a JWKS): names resolved through the egress policy so the
//! connection goes only to addresses it checked (there is no second lookup
//! an attacker's DNS could answer differently), rustls on aws-lc-rs with the
//! webpki roots, no redirects, no proxy from the environment. An address
//! given literally in a URL never reaches a resolver: callers check it with
//! [`EgressPolicy::check_host`] before each request.
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::policy::{EgressError, EgressPolicy};

/// A client builder with the guard's settings; `what` names the client in
/// errors, `alpn` the protocols offered over TLS.
pub fn guarded_client(policy: EgressPolicy, what: &str, alpn: &[&[u8]]) -> Result<reqwest::ClientBuilder, String> {
    let tls = crate::get::tls_config(what, alpn)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy })))
}

/// The guard's own message when a request failed because it refused (or
/// could not resolve) the target, else `None`.
pub fn refusal(e: &reqwest::Error) -> Option<&EgressError> {
    crate::get::refusal_in(e)
}

/// Resolves through the policy: reqwest connects only to the addresses it
/// answers, which it has checked.
struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            match policy.resolve(name.as_str(), 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}
