//! Extractors whose rejections are `ApiError`s, so malformed bodies, bad
//! query strings and missing credentials answer `{"error": ...}` like
//! everything else (never axum's plain-text rejections).
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use capydb_domain::identity::SessionCaller;
use capydb_domain::ports::Page;
use capydb_domain::principal::Principal;
use capydb_domain::App;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON object body (`Content-Type: application/json`), unknown fields
/// refused (the types say `deny_unknown_fields`).
pub struct ApiJson<T>(pub T);

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    content_type.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let essence = v.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers().get(header::CONTENT_TYPE));
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request("could not read the request body")
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("a JSON request body is required"));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be JSON, sent with \"Content-Type: application/json\"",
            ));
        }
        // serde's derive would read a struct from an array too (`["x"]`
        // would fill the first field): only an object is a body here.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = match deserialize_body(&mut de) {
            // serde_json reports some wrong types as syntax errors ("expected
            // value" for a number where an enum's string belongs): when the
            // body is valid JSON, read it again from its value, which
            // classifies the error as data and names the field. That read
            // only words the refusal: it never accepts what the first refused.
            Err(syntax) if syntax.1 => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) => match serde_path_to_error::deserialize::<_, T>(v) {
                    Err(e) => Err(data_error(e.path().to_string(), &e.into_inner())),
                    Ok(_) => Err(syntax.0),
                },
                Err(_) => Err(syntax.0),
            },
            other => other.map_err(|e| e.0),
        }?;
        de.end().map_err(|_| ApiError::bad_request("malformed JSON: trailing characters after the body"))?;
        Ok(ApiJson(value))
    }
}

/// The body as `T`, or the error and whether it is one of syntax.
fn deserialize_body<T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<T, (ApiError, bool)> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        use serde_json::error::Category;
        let path = e.path().to_string();
        let e = e.into_inner();
        match e.classify() {
            Category::Data => (data_error(path, &e), false),
            Category::Syntax | Category::Eof | Category::Io => {
                (ApiError::bad_request(format!("malformed JSON: {e}")), true)
            }
        }
    })
}

/// A body that is JSON but not the request's shape: the field named first.
fn data_error(path: String, e: &serde_json::Error) -> ApiError {
    let what = strip_position(e);
    // A field's own check says "must ...": name the field first.
    let msg = match path.as_str() {
        "." | "" => what,
        p if what.starts_with("must ") => format!("{p} {what}"),
        p => format!("{p}: {what}"),
    };
    ApiError::bad_request(format!("invalid request body: {msg}"))
}

/// serde's data errors end with "at line 1 column 42"; drop that position.
/// The message may quote a scalar the caller sent (e.g. "invalid type:
/// string \"x\", expected u32"); it goes back to that caller only and is
/// never logged.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The authenticated caller. Missing or bad credentials: 401.
pub struct Auth(pub Principal);

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        if let Some(Authenticated(p)) = parts.extensions.remove::<Authenticated>() {
            return Ok(Auth(p));
        }
        // Boxed: the lookups' state is most of a handler's future, which
        // would otherwise be copied whole at each of its awaits.
        Box::pin(authenticate(parts, app)).await.map(Auth)
    }
}

/// A principal a layer before the handler already authenticated (the
/// `Idempotency-Key` layer must know the credential); `Auth` takes it.
#[derive(Clone)]
pub struct Authenticated(pub Principal);

/// The request's credential, checked. A session with no active
/// organization is `403` here: only `GET /v1/me` ([`caller`]) answers it.
pub async fn authenticate(parts: &Parts, app: &App) -> Result<Principal, ApiError> {
    match caller(parts, app).await? {
        SessionCaller::Principal(p) => Ok(p),
        SessionCaller::NoOrganization { .. } => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this session has no active organization: choose one (Clerk's organization switcher) and retry; \
             without one only GET /v1/me answers",
        )),
    }
}

/// Who the request's credential is: an API key (by either header) or, for a
/// bearer token shaped like a JWT, a browser session.
pub async fn caller(parts: &Parts, app: &App) -> Result<SessionCaller, ApiError> {
    let presented = credential(parts)?;
    if parts.headers.get(header::AUTHORIZATION).is_some() && looks_like_jwt(presented) {
        return Ok(app.authenticate_session(presented).await?);
    }
    if presented.starts_with(capydb_domain::cli_login::CLI_PREFIX) {
        return Ok(SessionCaller::Principal(
            app.authenticate_cli_token(presented, request_ip(&parts.extensions)).await?,
        ));
    }
    Ok(SessionCaller::Principal(app.authenticate_api_key(presented, request_ip(&parts.extensions)).await?))
}

/// Three base64url parts whose header is a JSON object (`eyJ` is `{"`):
/// never an API key, which has its own prefix and no dot.
fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

fn credential(parts: &Parts) -> Result<&str, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <API key>\""))?;
        return Ok(token.trim());
    }
    if let Some(v) = parts.headers.get("x-api-key") {
        return v.to_str().map(str::trim).map_err(|_| unauthorized("malformed X-API-Key header"));
    }
    Err(unauthorized("missing credential: send \"Authorization: Bearer <API key>\" or \"X-API-Key: <API key>\""))
}

/// The caller's address as the entry point knows it, when it is not the TCP
/// peer: a Lambda behind API Gateway puts `requestContext.http.sourceIp` here.
#[derive(Debug, Clone)]
pub struct ClientIp(pub std::net::IpAddr);

/// The caller's address: what the entry point put in [`ClientIp`], else the TCP peer.
pub fn request_ip(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    if let Some(ip) = extensions.get::<ClientIp>() {
        return Some(ip.0);
    }
    if let Some(peer) = crate::serve::current_peer() {
        return Some(peer.ip());
    }
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip())
}

/// `?limit=` (1..=100, default 50) and `?cursor=` of list endpoints.
pub struct Pagination {
    pub page: Page,
}

impl Pagination {
    /// The page to ask the store for: one item more than the caller wants,
    /// to learn whether a next page exists without a second read.
    pub fn overfetch(&self) -> Page {
        Page { limit: self.page.limit + 1, before: self.page.before.clone() }
    }
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut page = Page::first(DEFAULT_LIMIT);
        for (k, v) in url_pairs(parts.uri.query().unwrap_or("")) {
            match k.as_str() {
                "limit" => {
                    page.limit = v.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be an integer between 1 and {MAX_LIMIT}"))
                    })?;
                }
                // An empty cursor is no cursor: the first page.
                "cursor" if v.is_empty() => page.before = None,
                "cursor" => page.before = Some(decode_cursor(&v)?),
                other => return Err(ApiError::bad_request(format!("unknown query parameter {other:?}"))),
            }
        }
        Ok(Pagination { page })
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The longest cursor: ids are shorter.
pub const MAX_CURSOR: usize = 64;
/// What a cursor may hold (the OpenAPI document states the same).
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_]*$";

/// A cursor is the last id of the page: the next page is everything
/// older. Any id-shaped string is a valid bound, so every cursor the
/// document allows is one the server accepts.
pub fn encode_cursor(last_id: &str) -> String {
    last_id.to_string()
}

fn decode_cursor(c: &str) -> Result<String, ApiError> {
    if c.len() > MAX_CURSOR || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::bad_request(format!(
            "cursor must be at most {MAX_CURSOR} letters, digits and '_': the id in a Link header this API sent"
        )));
    }
    Ok(c.to_string())
}

/// Path parameters whose rejection is an `ApiError`: a segment that is not
/// UTF-8 once percent-decoded (`/v1/projects/%FF`) answers `{"error"}`,
/// never axum's plain text.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) if e.status().is_client_error() => {
                Err(ApiError::bad_request("malformed URL: every path segment must be valid UTF-8 once percent-decoded"))
            }
            Err(e) => Err(ApiError::from(capydb_domain::DomainError::internal(format!("path extraction: {e}")))),
        }
    }
}
