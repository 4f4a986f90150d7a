//! The webhook sender: the target's host is resolved through the egress
//! policy, every address it resolves to is checked, the connection goes to
//! those checked addresses (there is no second lookup an attacker's DNS could
//! answer differently), redirects are never followed, proxies from the
//! environment are ignored, and each request has a deadline.
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::ports::{WebhookRequest, WebhookResponse, WebhookSendError, WebhookSender};
use capydb_domain::webhooks::RESPONSE_KEEP_BYTES;

use crate::policy::{url_target, EgressError, EgressPolicy};

/// The `WebhookSender` of both shapes, under the process's egress policy
/// (capydb-local lets a developer point a webhook at their own machine by
/// default; the deployed shape never does).
#[derive(Clone)]
pub struct HttpWebhookSender {
    client: reqwest::Client,
    policy: EgressPolicy,
}

impl HttpWebhookSender {
    pub fn new(policy: EgressPolicy) -> Result<Self, String> {
        let client = crate::client::guarded_client(policy, "webhooks", &[b"h2", b"http/1.1"])?
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(HttpWebhookSender { client, policy })
    }
}

/// The innermost error's message, and whether the guard raised it.
fn describe(e: reqwest::Error) -> WebhookSendError {
    match crate::client::refusal(&e) {
        Some(EgressError::Refused(m)) => return WebhookSendError::Refused(m.clone()),
        Some(EgressError::Unresolved(m)) => return WebhookSendError::Failed(m.clone()),
        None => {}
    }
    // reqwest's messages name the URL, which may hold a receiver's token.
    let e = &e.without_url();
    if e.is_timeout() {
        return WebhookSendError::Failed("timed out waiting for the endpoint".into());
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    WebhookSendError::Failed(message)
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.to_utc() - chrono::Utc::now()).to_std().ok()
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn send(&self, request: &WebhookRequest) -> Result<WebhookResponse, WebhookSendError> {
        let url = url::Url::parse(&request.url).map_err(|e| WebhookSendError::Failed(format!("bad url: {e}")))?;
        // The resolver judges names; a literal address is judged here.
        let (host, _) = url_target(&url).map_err(|e| WebhookSendError::Refused(e.to_string()))?;
        self.policy.check_host(&host).map_err(|e| WebhookSendError::Refused(e.to_string()))?;
        let mut builder = self.client.post(url).timeout(request.timeout).body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
        // Only the start of the body is kept; the rest is not even read.
        let mut body = Vec::new();
        while body.len() < RESPONSE_KEEP_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(RESPONSE_KEEP_BYTES);
        let mut body = String::from_utf8_lossy(&body).into_owned();
        if body.ends_with('\u{FFFD}') {
            // A character cut in half by the truncation.
            body.pop();
        }
        Ok(WebhookResponse { status, retry_after, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(600)).to_rfc2822().replace("+0000", "GMT");
        let d = retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(590) && d <= Duration::from_secs(600), "{d:?}");
        assert_eq!(retry_after("soon"), None);
    }

    fn request(url: &str) -> WebhookRequest {
        WebhookRequest { url: url.into(), headers: vec![], body: "{}".into(), timeout: Duration::from_secs(2) }
    }

    #[tokio::test]
    async fn private_targets_are_refused_before_anything_is_sent() {
        let sender = HttpWebhookSender::new(EgressPolicy::DENY_PRIVATE).unwrap();
        for url in
            ["http://127.0.0.1:9/", "http://2130706433/", "http://[::1]/", "http://localhost/", "http://a.localhost/"]
        {
            match sender.send(&request(url)).await {
                Err(WebhookSendError::Refused(why)) => assert!(why.contains("public addresses"), "{why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    /// A local receiver that redirects: the redirect comes back as the
    /// attempt's response (a failure), and is not followed.
    #[tokio::test]
    async fn redirects_are_not_followed_and_bodies_are_cut_at_1_kib() {
        use axum::routing::post;
        let app = axum::Router::new()
            .route("/redirect", post(|| async { (axum::http::StatusCode::FOUND, [("location", "/big")], "") }))
            .route("/big", post(|| async { "é".repeat(4000) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = HttpWebhookSender::new(EgressPolicy::ALLOW_PRIVATE).unwrap();
        let r = sender.send(&request(&format!("http://{addr}/redirect"))).await.unwrap();
        assert_eq!(r.status, 302);
        let r = sender.send(&request(&format!("http://{addr}/big"))).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.len() <= RESPONSE_KEEP_BYTES && r.body.len() >= RESPONSE_KEEP_BYTES - 1, "{}", r.body.len());
        assert!(r.body.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_failure_not_a_refusal() {
        let sender = HttpWebhookSender::new(EgressPolicy::ALLOW_PRIVATE).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match sender.send(&request(&format!("http://{addr}/"))).await {
            Err(WebhookSendError::Failed(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
