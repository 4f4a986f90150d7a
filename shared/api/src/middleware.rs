//! Cross-cutting layers: the request id on every response and log line, and
//! one log line per request (method, path, status, latency — never headers,
//! bodies or query strings, which may hold credentials).
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

/// A caller's request id is echoed when it is sane (1..=128 characters of
/// `[A-Za-z0-9._:-]`); otherwise one is generated.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| capydb_domain::ids::new_id(capydb_domain::ids::REQUEST));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The span holds only the request id (every line inside it shows it);
    // method, path, status and latency go on the one closing line.
    let span = tracing::info_span!("request", request_id = id.as_str());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    span.in_scope(|| {
        let latency_us = started.elapsed().as_micros() as u64;
        let method = method.as_str();
        if status >= 500 {
            tracing::error!(method, path, status, latency_us, "request finished");
        } else {
            tracing::info!(method, path, status, latency_us, "request finished");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}
