//! A small guarded GET for what the API functions fetch (a JWKS), on the
//! hyper and rustls the AWS SDK already links: the API functions stay
//! within their size budget without reqwest, which only the webhook
//! functions carry. Same guard as [`guarded_client`](crate::guarded_client):
//! names resolve through the egress policy and only checked addresses are
//! connected to, literal addresses are checked before the request, TLS is
//! rustls on aws-lc-rs with the webpki roots, redirects are not followed,
//! proxies from the environment are not used.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::policy::{url_target, EgressError, EgressPolicy};

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedDns>>;

/// GETs URLs under the egress policy.
pub struct GuardedGet {
    client: Client<Connector, Empty<Bytes>>,
    policy: EgressPolicy,
}

/// What a GET answered: the status and at most `max_bytes` of the body.
pub struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
}

impl GuardedGet {
    pub fn new(policy: EgressPolicy) -> Result<Self, String> {
        let tls = tls_config("the guarded GET", &[])?;
        let mut http = HttpConnector::new_with_resolver(GuardedDns { policy });
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(1).build(https);
        Ok(GuardedGet { client, policy })
    }

    /// GETs `url` with `Accept: accept`. An error is a sentence for a log
    /// and the caller: the guard's own refusal when it refused.
    pub async fn get(&self, url: &url::Url, accept: &str, max_bytes: usize) -> Result<Fetched, String> {
        // The resolver judges names; a literal address is judged here.
        let (host, _) = url_target(url).map_err(|e| e.to_string())?;
        self.policy.check_host(&host).map_err(|e| e.to_string())?;
        let request = hyper::Request::get(url.as_str())
            .header(hyper::header::ACCEPT, accept)
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self.client.request(request).await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the answer broke off: {e}"))?;
            if let Some(chunk) = frame.data_ref() {
                out.extend_from_slice(chunk);
                if out.len() > max_bytes {
                    return Err(format!("the answer is larger than {max_bytes} bytes"));
                }
            }
        }
        Ok(Fetched { status, body: out })
    }
}

/// rustls on aws-lc-rs with the webpki roots, offering `alpn`: the TLS of
/// every guarded client (`what` names it in errors).
pub(crate) fn tls_config(what: &str, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS for {what}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tls)
}

/// The guard's own error in `e`'s chain of causes, when it refused (or
/// could not resolve) the target.
pub(crate) fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<EgressError>() {
            return Some(refused);
        }
        source = s.source();
    }
    None
}

/// The guard's message when it refused, else the chain of causes.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(EgressError::Refused(m) | EgressError::Unresolved(m)) = refusal_in(e) {
        return m.clone();
    }
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Resolves through the policy: the connector connects only to the
/// addresses it answers, which it has checked.
#[derive(Clone)]
struct GuardedDns {
    policy: EgressPolicy,
}

impl tower_service::Service<Name> for GuardedDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = EgressError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, EgressError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), EgressError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move { policy.resolve(name.as_str(), 0).await.map(Vec::into_iter) })
    }
}
