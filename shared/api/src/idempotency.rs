//! `Idempotency-Key` on POST: a retried request with the same key, from the
//! same credential, gets the first answer again (status, body, `Location`,
//! `Content-Type`) with `Idempotent-Replayed: true`, and never runs twice.
//! Another request under a used key is `422`; one whose first is still
//! running is `409`; other methods ignore the header. The rules are in
//! `capydb_domain::idempotency`; this reads the request and writes the
//! answer.
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use capydb_domain::idempotency::{self, Begun};
use capydb_domain::ports::StoredAnswer;
use capydb_domain::App;

use crate::error::ApiError;
use crate::extract::{self, Authenticated, MAX_BODY_BYTES};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Whether `req` goes through [`keyed`]: a POST with an `Idempotency-Key`.
/// Other methods ignore the header.
pub fn applies(req: &Request) -> bool {
    req.method() == Method::POST && req.headers().contains_key(IDEMPOTENCY_KEY)
}

/// Runs `next` for `req`, or answers for it, per its `Idempotency-Key`.
pub async fn keyed<F, Fut>(app: &App, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY) else {
        return next(req).await;
    };
    let key = match raw.to_str() {
        Ok(k) => k.to_string(),
        Err(_) => return bad("the Idempotency-Key header may only hold visible ASCII characters".into()),
    };
    if let Some(why) = idempotency::invalid_key(&key) {
        return bad(why);
    }
    let (mut parts, body) = req.into_parts();
    // A request that does not authenticate keeps no record: its handler
    // answers it (401) as it would without the header.
    let principal = match extract::authenticate(&parts, app).await {
        Ok(p) => p,
        Err(_) => return next(Request::from_parts(parts, body)).await,
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
            .into_response()
        }
    };
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let fingerprint = idempotency::fingerprint(parts.method.as_str(), target, &bytes);
    let credential = principal.credential_id();
    // The handler's `Auth` takes this principal instead of authenticating again.
    parts.extensions.insert(Authenticated(principal));
    let held = match app.begin_idempotent_request(&credential, &key, fingerprint).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Begun::InFlight) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still in progress; retry once it has been answered",
            )
            .into_response()
        }
        Ok(Begun::Mismatch) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was already used for a different request (method, path or body); \
                 use a new key for a new request",
            )
            .into_response()
        }
        Ok(Begun::Replay(answer)) => return replay(answer),
        Ok(Begun::Recover(held, made)) => {
            let Some(Authenticated(principal)) = parts.extensions.get::<Authenticated>() else {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            };
            return match app.recover_idempotent_request(&held, principal, &made).await {
                Ok(answer) => replay(answer),
                Err(e) => {
                    let _ = app.release_idempotent_request(&held).await;
                    ApiError::from(e).into_response()
                }
            };
        }
        Ok(Begun::Run(held)) => held,
    };
    // A job the handler starts is written into the key's record with it.
    let res = idempotency::holding(held.clone(), next(Request::from_parts(parts, Body::from(bytes)))).await;
    let (res_parts, res_body) = res.into_parts();
    let body = match axum::body::to_bytes(res_body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "could not read the answer to store for an Idempotency-Key");
            let _ = app.release_idempotent_request(&held).await;
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let text = |name| res_parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_string);
    let answer = StoredAnswer {
        status: res_parts.status.as_u16(),
        content_type: text(header::CONTENT_TYPE),
        location: text(header::LOCATION),
        body: body.to_vec(),
    };
    if let Err(e) = app.finish_idempotent_request(&held, answer).await {
        // The answer goes out; a retry may find the key held until the lease ends.
        tracing::warn!(error = %e, "could not store the answer of an Idempotency-Key");
    }
    Response::from_parts(res_parts, Body::from(body))
}

fn bad(message: String) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, message).into_response()
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut res = Response::new(Body::from(answer.body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    for (name, value) in [(header::CONTENT_TYPE, answer.content_type), (header::LOCATION, answer.location)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}
