//! Cross-cutting layers: the request id on every response and log line, one
//! log line per request (method, path, status, latency — never headers,
//! bodies or query strings, which may hold credentials), and the rate limit
//! per client address.
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

/// The headers this layer writes on every response, as `HeaderName`s: a
/// `&str` name is parsed and checked again at every insert.
mod names {
    use axum::http::HeaderName;
    pub const REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID);
    pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static(super::RATELIMIT_LIMIT);
    pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static(super::RATELIMIT_REMAINING);
    pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static(super::RATELIMIT_RESET);
}

tokio::task_local! {
    /// The request id of the request this task serves, as the header value
    /// the response carries (one buffer, shared).
    static CURRENT_REQUEST: HeaderValue;
}

/// Whether each request gets a `tracing` span (`request{request_id=...}`).
static REQUEST_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the per-request span off, for an entry point whose log format
/// names the request itself from [`current_request_id`] (capydb-local's
/// text lines): the span is the largest cost logging adds to a request.
/// Formats that read spans (JSON, the Lambdas') keep it on, the default.
pub fn set_request_spans(on: bool) {
    REQUEST_SPANS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `f` as the task serving request `id` (what the edge does for each
/// request; for tests of log formats).
pub async fn scope_request_id<F: std::future::Future>(id: &str, f: F) -> F::Output {
    CURRENT_REQUEST.scope(HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("req_invalid")), f).await
}

/// Calls `f` with the id of the request this task serves, if it serves one.
pub fn current_request_id<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    // Request ids are checked (`sane`) or generated: always visible ASCII.
    CURRENT_REQUEST.try_with(|id| f(id.to_str().unwrap_or("?"))).ok()
}

/// A caller's request id is echoed when it is sane (1..=128 characters of
/// `[A-Za-z0-9._:-]`); otherwise one is generated.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The edge every request passes, outermost first: the request context (the
/// request id on the response and in the span every line of the request
/// logs in, one `request finished` line), then the rate limit, then
/// [`json_errors`] over what the router answers.
///
/// A `tower` layer written out rather than `axum::middleware::from_fn`,
/// which costs every request a clone of the inner service, a boxed copy of
/// it and a boxed future: here the inner service is called as it is and the
/// one future boxed once. `finish` applies it with the body limit as one
/// layer, so each route's service is wrapped once.
#[derive(Clone)]
pub struct EdgeLayer(pub capydb_domain::App);

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge { app: self.0.clone(), inner }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    app: capydb_domain::App,
    inner: S,
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// One future per request, boxed once, with the layers' steps in it
    /// rather than one `async fn` per layer: each nested `async fn` keeps
    /// its own copy of the request beside its callee's future, and every
    /// future is copied whole into its caller's at each await
    /// (bench/api-throughput.sh: with five such layers a request's future
    /// was 3.8 KB and the copies 6% of the server's CPU).
    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was polled ready answers; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        let id = request_id(&req);
        let scoped_id = id.clone();
        // The span holds only the request id (every line inside it shows
        // it); method, path, status and latency go on the one closing line.
        let span = if REQUEST_SPANS.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info_span!("request", request_id = id.to_str().unwrap_or("?"))
        } else {
            tracing::Span::none()
        };
        let served = async move {
            let method = req.method().clone();
            // A clone of the URI shares its bytes: no copy of the path per request.
            let uri = req.uri().clone();
            let started = Instant::now();
            let (cli, ip) = (is_cli_login(uri.path()), crate::extract::request_ip(req.extensions()));
            let mut res = match rate_limit(&app, cli, ip).await {
                Limit::Exceeded(res) => res,
                Limit::Counted(counted) => {
                    // What the router answers, as JSON errors, through the
                    // `Idempotency-Key` rules when the request has a key
                    // (boxed: its state is ten times a plain request's).
                    let routed = move |req| async move {
                        json_errors(inner.call(req).await.unwrap_or_else(|never| match never {}))
                    };
                    let mut res = if crate::idempotency::applies(&req) {
                        Box::pin(crate::idempotency::keyed(&app, req, routed)).await
                    } else {
                        routed(req).await
                    };
                    if let Some(counted) = counted {
                        counted.write(res.headers_mut());
                    }
                    res
                }
            };
            let status = res.status().as_u16();
            let latency_us = started.elapsed().as_micros() as u64;
            let (method, path) = (method.as_str(), uri.path());
            if status >= 500 {
                tracing::error!(method, path, status, latency_us, "request finished");
            } else {
                tracing::info!(method, path, status, latency_us, "request finished");
            }
            res.headers_mut().insert(names::REQUEST_ID, id);
            Ok(res)
        };
        // Every line the request logs is inside its span (with spans off,
        // the task's request id names the request).
        Box::pin(CURRENT_REQUEST.scope(scoped_id, served.instrument(span)))
    }
}

/// Every 4xx and 5xx leaves as `{"error": ...}` JSON: the handlers' own
/// errors already are; this catches what axum or a layer answers in plain
/// text (a rejection this API has no extractor of its own for).
/// A plain function over the response (a `MapResponseLayer`), not an async
/// middleware: on every request's path, it costs a status check.
pub fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    let message = format!("{reason}; see /v1/openapi.json");
    let mut json = axum::response::IntoResponse::into_response(crate::error::ApiError::new(status, message));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    // `(Option<HeaderName>, _)` pairs replace a name's values (plain pairs would append a second Content-Type).
    parts.headers.extend(json.headers_mut().drain());
    Response::from_parts(parts, json.into_body())
}

/// `<bucket>:<address>`, the limiter's key for one client address in one
/// bucket (`ip`, the general one; `cli`, the CLI login's), formatted on the
/// stack: no allocation per request.
struct RateKey {
    buf: [u8; 64],
    len: usize,
}

impl RateKey {
    fn of(bucket: &str, ip: std::net::IpAddr) -> Self {
        use std::io::Write;
        let mut buf = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // The longest address (IPv6 with an embedded IPv4) is 45 bytes.
        let _ = write!(cursor, "{bucket}:{ip}");
        let len = cursor.position() as usize;
        RateKey { buf, len }
    }

    fn as_str(&self) -> &str {
        // Only ASCII was written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("ip:?")
    }
}

pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
pub const RATELIMIT_RESET: &str = "ratelimit-reset";

/// The caller's `X-Request-Id` when sane (a clone of its header value
/// shares its bytes), else a new one; either way the one buffer serves the
/// response header and the log lines.
fn request_id(req: &Request) -> HeaderValue {
    match req.headers().get(names::REQUEST_ID).filter(|v| v.to_str().is_ok_and(sane)) {
        Some(v) => v.clone(),
        // Request ids need no order among themselves: `new_id_at` skips
        // the lock `new_id` takes to keep ids of one millisecond ascending.
        None => {
            let fresh = capydb_domain::ids::new_id_at(
                capydb_domain::ids::REQUEST,
                chrono::Utc::now().timestamp_millis() as u64,
            );
            HeaderValue::from_maybe_shared(axum::body::Bytes::from(fresh))
                .unwrap_or(HeaderValue::from_static("req_invalid"))
        }
    }
}

/// What the rate limit decided for a request.
enum Limit {
    /// Over the limit: the `429` to answer, its headers set.
    Exceeded(Response),
    /// Counted (the headers its response gets), or not counted: no client
    /// address, the limit off, or the counters unreachable.
    Counted(Option<Counted>),
}

struct Counted {
    limit: u64,
    count: u64,
    /// Seconds until the window ends.
    reset: u64,
}

impl Counted {
    fn write(&self, h: &mut axum::http::HeaderMap) {
        h.insert(names::RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        h.insert(names::RATELIMIT_REMAINING, HeaderValue::from(self.limit.saturating_sub(self.count)));
        h.insert(names::RATELIMIT_RESET, HeaderValue::from(self.reset));
    }
}

/// Counts the request against its client address (fixed windows, see
/// `RateLimitSettings`): over the limit it is answered `429` with
/// `Retry-After`; every response carries `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the window
/// ends). When the counters cannot be reached the request goes through:
/// an outage of the limiter must not become an outage of the API.
/// `cli`: the request is one of the CLI login endpoints'; `ip`: its client
/// address, when known.
async fn rate_limit(app: &capydb_domain::App, cli: bool, ip: Option<std::net::IpAddr>) -> Limit {
    let (settings, bucket, whom) = if cli {
        (&app.settings.cli_login.rate_limit, "cli", "from one address to the CLI login endpoints")
    } else {
        (&app.settings.rate_limit, "ip", "from one address")
    };
    let (Some(ip), true) = (ip, settings.limit > 0) else {
        return Limit::Counted(None);
    };
    let now = app.now();
    let window = match app.rate_limiter.hit(RateKey::of(bucket, ip).as_str(), settings.window, now).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; the request goes through");
            return Limit::Counted(None);
        }
    };
    let limit = u64::from(settings.limit);
    let reset_ms = (window.resets_at - now).num_milliseconds().max(0) as u64;
    let counted = Counted { limit, count: window.count, reset: reset_ms.div_ceil(1000).max(1) };
    if counted.count <= limit {
        return Limit::Counted(Some(counted));
    }
    let msg = format!(
        "rate limit exceeded: at most {limit} requests per {} s {whom}; retry after {} s",
        settings.window.as_secs().max(1),
        counted.reset
    );
    let mut r = axum::response::IntoResponse::into_response(crate::error::ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        msg,
    ));
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(counted.reset));
    counted.write(r.headers_mut());
    Limit::Exceeded(r)
}

/// The three CLI login endpoints, under either prefix: they count in their
/// own, stricter bucket and not in the general one.
pub fn is_cli_login(path: &str) -> bool {
    let path = path.strip_prefix("/api/capydb").unwrap_or(path);
    matches!(path, crate::cli::LOGIN | crate::cli::APPROVE | crate::cli::TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_keys_name_the_address() {
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(RateKey::of("ip", v4).as_str(), "ip:127.0.0.1");
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        assert_eq!(RateKey::of("cli", v6).as_str(), format!("cli:{v6}"));
    }

    #[test]
    fn the_cli_login_bucket_holds_the_three_login_endpoints_only() {
        for p in ["/v1/cli/login", "/v1/cli/login/approve", "/v1/cli/login/token", "/api/capydb/v1/cli/login/token"] {
            assert!(is_cli_login(p), "{p}");
        }
        for p in ["/v1/cli/sessions", "/v1/cli/login/", "/v1/me", "/v1/cli/login/tokens", "/x/v1/cli/login"] {
            assert!(!is_cli_login(p), "{p}");
        }
    }
}
