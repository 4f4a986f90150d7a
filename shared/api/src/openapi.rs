//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! domain types. `GET /v1/openapi.json` serves it; `openapi.json` at the repo
//! root is a committed copy that a test keeps in sync.
use axum::routing::get;
use axum::Router;

use crate::bodies::Json;
use capydb_domain::App;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, ServerBuilder};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::error::ErrorBody;

/// `?limit=&cursor=` of every list endpoint, with the bounds the
/// `Pagination` extractor enforces (the same constants).
pub struct PageParams;

impl IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        use crate::extract::{CURSOR_PATTERN, DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT};
        let limit = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_LIMIT))
            .default(Some(serde_json::json!(DEFAULT_LIMIT)));
        vec![
            ParameterBuilder::new()
                .name("limit")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(format!("Page size, 1..={MAX_LIMIT} (default {DEFAULT_LIMIT})")))
                .schema(Some(limit))
                .build(),
            ParameterBuilder::new()
                .name("cursor")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "Opaque cursor from the previous page's `Link: <...>; rel=\"next\"` header; empty means the first page",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(MAX_CURSOR))
                        .pattern(Some(CURSOR_PATTERN)),
                ))
                .build(),
        ]
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CapyDB control plane API",
        version = "1.0.0",
        description = "Organizations, projects (a PostgreSQL database each), per-pull-request preview databases, backups, restores, imports, API keys and the asynchronous jobs that provision, clone, back up, restore, rotate and delete databases. Errors are always `{\"error\": \"message\"}`; lists are bare JSON arrays, newest first, paginated with `?limit=&cursor=` and a `Link: <...>; rel=\"next\"` header; every response carries `X-Request-Id`. Requests are rate-limited per client address in one-minute windows: every response carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the window ends), and a request over the limit is answered `429` with `Retry-After`."
    ),
    paths(
        crate::me::me,
        crate::organizations::list_organizations,
        crate::organizations::get_organization,
        crate::organizations::update_organization,
        crate::organizations::list_api_keys,
        crate::organizations::create_api_key,
        crate::organizations::get_api_key,
        crate::organizations::revoke_api_key,
        crate::projects::list_projects,
        crate::projects::create_project,
        crate::projects::get_project,
        crate::projects::update_project,
        crate::projects::delete_project,
        crate::projects::project_connections,
        crate::projects::rotate_credentials,
        crate::projects::list_project_jobs,
        crate::previews::list_previews,
        crate::previews::create_preview,
        crate::previews::get_preview,
        crate::previews::update_preview,
        crate::previews::reset_preview,
        crate::previews::delete_preview,
        crate::previews::preview_connections,
        crate::backups::list_backups,
        crate::backups::create_backup,
        crate::backups::get_backup,
        crate::backups::delete_backup,
        crate::backups::create_restore,
        crate::backups::get_restore,
        crate::backups::create_import,
        crate::backups::get_import,
        crate::jobs::get_job,
        crate::webhooks::list_webhooks,
        crate::webhooks::create_webhook,
        crate::webhooks::get_webhook,
        crate::webhooks::update_webhook,
        crate::webhooks::delete_webhook,
        crate::webhooks::rotate_secret,
        crate::webhooks::ping_webhook,
        crate::webhooks::list_deliveries,
        crate::webhooks::redeliver,
        openapi_json,
        crate::health::health,
        crate::cli::start_login,
        crate::cli::approve_login,
        crate::cli::exchange_token,
        crate::cli::list_cli_sessions,
        crate::cli::revoke_cli_session,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "identity", description = "Who the calling credential is"),
        (name = "organizations", description = "The caller's organization"),
        (name = "api-keys", description = "Scoped, optionally project-restricted API keys"),
        (name = "projects", description = "Projects: a PostgreSQL database each"),
        (name = "previews", description = "Per-pull-request preview databases with a TTL"),
        (name = "backups", description = "Backups, restores and imports"),
        (name = "jobs", description = "Asynchronous lifecycle jobs"),
        (name = "webhooks", description = "Signed event deliveries (Standard Webhooks)"),
        (name = "meta", description = "This document and the health check"),
        (name = "cli", description = "CLI login (OAuth 2.0 device authorization grant, RFC 8628) and a person's CLI sessions. The three login endpoints have their own per-address rate limit, much stricter than the general one (10 requests a minute by default)"),
    )
)]
pub struct ApiDoc;

/// Who may call an operation: the `x-capydb-access` of each operation in
/// the document (and the API reference's "Access" line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential.
    Public,
    /// Any valid credential.
    AnyCredential,
    /// An API key holding the scope, or a session (which holds every scope);
    /// `admin`: a session needs the organization admin role.
    Scope { scope: &'static str, admin: Admin },
    /// A person's browser session (Clerk), not an API key or a CLI token.
    BrowserSession,
    /// A person's browser session or CLI token, not an API key.
    PersonSession,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Never,
    Always,
    /// Only for `mode: overwrite` (a restore over the project).
    OverwriteOnly,
}

/// Every operation's access, by operation id: checked against the document
/// (every operation has one) and against the router (a key lacking the
/// scope gets `403` naming it, `shared/api/tests/router/scopes.rs`).
pub const ACCESS: &[(&str, Access)] = {
    use Access::*;
    use Admin::*;
    const fn s(scope: &'static str) -> Access {
        Scope { scope, admin: Never }
    }
    const fn admin(scope: &'static str) -> Access {
        Scope { scope, admin: Always }
    }
    &[
        ("getMe", AnyCredential),
        ("listOrganizations", s("organizations:read")),
        ("getOrganization", s("organizations:read")),
        ("updateOrganization", s("organizations:write")),
        ("listApiKeys", s("api_keys:read")),
        ("createApiKey", admin("api_keys:write")),
        ("getApiKey", s("api_keys:read")),
        ("revokeApiKey", admin("api_keys:write")),
        ("listProjects", s("projects:read")),
        ("createProject", admin("projects:write")),
        ("getProject", s("projects:read")),
        ("updateProject", s("projects:write")),
        ("deleteProject", admin("projects:write")),
        ("getProjectConnections", s("credentials:read")),
        ("rotateProjectCredentials", s("projects:write")),
        ("listProjectJobs", s("jobs:read")),
        ("listPreviews", s("projects:read")),
        ("createPreview", s("projects:write")),
        ("getPreview", s("projects:read")),
        ("updatePreview", s("projects:write")),
        ("resetPreview", s("projects:write")),
        ("deletePreview", s("projects:write")),
        ("getPreviewConnections", s("credentials:read")),
        ("listBackups", s("backups:read")),
        ("createBackup", s("backups:write")),
        ("getBackup", s("backups:read")),
        ("deleteBackup", s("backups:write")),
        ("createRestore", Scope { scope: "backups:write", admin: OverwriteOnly }),
        ("getRestore", s("backups:read")),
        ("createImport", s("projects:write")),
        ("getImport", s("projects:read")),
        ("getJob", s("jobs:read")),
        ("listWebhooks", s("organizations:read")),
        ("createWebhook", s("organizations:write")),
        ("getWebhook", s("organizations:read")),
        ("updateWebhook", s("organizations:write")),
        ("deleteWebhook", s("organizations:write")),
        ("rotateWebhookSecret", s("organizations:write")),
        ("pingWebhook", s("organizations:write")),
        ("listWebhookDeliveries", s("organizations:read")),
        ("redeliverWebhook", s("organizations:write")),
        ("getOpenApi", Public),
        ("getHealth", Public),
        ("startCliLogin", Public),
        ("approveCliLogin", BrowserSession),
        ("exchangeCliToken", Public),
        ("listCliSessions", PersonSession),
        ("revokeCliSession", PersonSession),
    ]
};

/// An operation's access as the document's `x-capydb-access` says it.
fn access_json(access: Access) -> serde_json::Value {
    use serde_json::json;
    match access {
        Access::Public => json!({"credential": "none"}),
        Access::AnyCredential => json!({"credential": "any"}),
        Access::Scope { scope, admin } => json!({
            "credential": "api_key_or_session",
            "scope": scope,
            "session_needs_admin": match admin {
                Admin::Never => json!(false),
                Admin::Always => json!(true),
                Admin::OverwriteOnly => json!("overwrite"),
            },
        }),
        Access::BrowserSession => json!({"credential": "browser_session"}),
        Access::PersonSession => json!({"credential": "browser_session_or_cli_token"}),
    }
}

/// Adds what every operation shares: the security schemes, and the error
/// responses each kind of operation can answer, so none is undeclared.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.servers = Some(vec![ServerBuilder::new()
            .url("/api/capydb")
            .description(Some("also served without the prefix"))
            .build()]);
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("capy_live_... or capy_cli_...")
                    .description(Some(
                        "An API key (`capy_live_...`), or a CLI token (`capy_cli_...`, from the CLI login) that acts \
                         as the approving person's session in the organization it was approved for",
                    ))
                    .build(),
            ),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A Clerk session token (RS256). The token's active organization is the one acted in; \
                         a session holds every scope there, and project create/delete, overwrite restores and \
                         API-key create/revoke need the organization admin role (`org:admin`).",
                    ))
                    .build(),
            ),
        );
        // Rules between fields have no derive attribute: say them here, from
        // the constants the checks read.
        let not_null = |fields: &[&str]| -> serde_json::Map<String, serde_json::Value> {
            fields.iter().map(|f| (f.to_string(), serde_json::json!({"not": {"type": "null"}}))).collect()
        };
        let expiry = capydb_domain::api_keys::EXCLUSIVE_EXPIRY;
        add_keyword(
            components,
            "CreateApiKey",
            "not",
            serde_json::json!({"required": expiry, "properties": not_null(&expiry)}),
        );
        let preview_only = capydb_domain::backups::PREVIEW_MODE_ONLY;
        let absent: serde_json::Map<String, serde_json::Value> =
            preview_only.iter().map(|f| (f.to_string(), serde_json::json!({"type": "null"}))).collect();
        // One keyword per schema: utoipa keeps these in a HashMap, whose order
        // would change from run to run, and the committed document with it.
        let rule = serde_json::json!({
            "if": {"required": ["mode"], "properties": {"mode": {"const": "overwrite"}}},
            "then": {"properties": absent},
        });
        add_keyword(components, "CreateRestore", "allOf", serde_json::json!([rule]));
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = path.ends_with("/openapi.json") || path.ends_with("/health");
            // No credential, but a body to check.
            let anonymous = path.ends_with(crate::cli::LOGIN) || path.ends_with(crate::cli::TOKEN);
            if let (false, false, Some(post)) = (public, anonymous, &mut item.post) {
                declare_idempotency(post, path);
            }
            for op in
                [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put].into_iter().flatten()
            {
                let id = op.operation_id.clone().unwrap_or_default();
                if let Some((_, access)) = ACCESS.iter().find(|(op_id, _)| *op_id == id) {
                    op.extensions
                        .get_or_insert_with(Default::default)
                        .insert("x-capydb-access".into(), access_json(*access));
                }
            }
            for (changes, op) in [
                (false, &mut item.get),
                (true, &mut item.post),
                (true, &mut item.patch),
                (true, &mut item.delete),
                (true, &mut item.put),
            ] {
                if let Some(op) = op {
                    declare_errors(op, path, public, anonymous, changes);
                }
            }
        }
    }
}

/// Adds a JSON Schema keyword utoipa has no builder for (`not`, `if`,
/// `then`) to a component schema: its extensions are flattened into the
/// schema object, which is where such a keyword goes.
fn add_keyword(components: &mut utoipa::openapi::Components, schema: &str, key: &str, value: serde_json::Value) {
    if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o))) =
        components.schemas.get_mut(schema)
    {
        o.extensions.get_or_insert_with(Default::default).insert(key.into(), value);
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))
        .description(Some(description))
        .build()
}

/// `429`, which any operation can answer (the limit counts every request
/// from one address, authenticated or not).
fn rate_limited_response() -> utoipa::openapi::Response {
    let mut r =
        error_response("Too many requests from this address in the current window; retry after `Retry-After` seconds");
    r.headers.insert("Retry-After".into(), integer_header("Seconds until the window ends"));
    r.headers.insert("RateLimit-Limit".into(), integer_header("Requests allowed per window"));
    r.headers.insert("RateLimit-Remaining".into(), integer_header("Requests left in this window (0 here)"));
    r.headers.insert("RateLimit-Reset".into(), integer_header("Seconds until the window ends"));
    r
}

/// Every POST takes `Idempotency-Key`: its parameter, the replay header on
/// its successful answers, and the `409` and `422` it can bring.
fn declare_idempotency(op: &mut Operation, path: &str) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    let max = capydb_domain::idempotency::MAX_KEY_LEN;
    let param = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(format!(
            "Makes a retry safe: the same key from the same credential within 24 h answers the first answer again \
             (same status, body and `Location`, plus `Idempotent-Replayed: true`) and runs nothing. 1 to {max} visible \
             ASCII characters; a UUID per logical request is typical."
        )))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .min_length(Some(1))
                .max_length(Some(max))
                // Visible ASCII, as `invalid_key` checks.
                .pattern(Some("^[!-~]+$")),
        ))
        .build();
    op.parameters.get_or_insert_with(Vec::new).push(param);
    let replayed = utoipa::openapi::header::HeaderBuilder::new()
        .schema(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(["true"])),
        )
        .description(Some(
            "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`",
        ))
        .build();
    for (code, response) in op.responses.responses.iter_mut() {
        if let (true, utoipa::openapi::RefOr::T(r)) = (code.starts_with('2'), response) {
            r.headers.insert("Idempotent-Replayed".into(), replayed.clone());
        }
    }
    let is_lifecycle = op.responses.responses.contains_key("202");
    let conflict = if is_lifecycle || path.contains('{') {
        "A lifecycle job is already running for this resource (named in the message), the resource is not in a state that allows this, or a request with the same `Idempotency-Key` is still in progress"
    } else {
        "A request with the same `Idempotency-Key` is still in progress"
    };
    op.responses.responses.entry("409".into()).or_insert_with(|| error_response(conflict).into());
    op.responses.responses.entry("400".into()).or_insert_with(|| {
        error_response("Malformed JSON, an unknown field, an invalid value, or an invalid `Idempotency-Key` header")
            .into()
    });
    op.responses.responses.entry("422".into()).or_insert_with(|| {
        error_response("The `Idempotency-Key` was already used for a different request (method, path or body)").into()
    });
}

/// `changes`: the operation changes something (not a GET).
/// `anonymous`: the operation takes no credential (the CLI login's start and poll).
fn declare_errors(op: &mut Operation, path: &str, public: bool, anonymous: bool, changes: bool) {
    let has_body = op.request_body.is_some();
    let has_query =
        op.parameters.iter().flatten().any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
    let is_lifecycle = op.responses.responses.contains_key("202");
    let mut add = |code: &str, description: &str| {
        op.responses.responses.entry(code.to_string()).or_insert_with(|| error_response(description).into());
    };
    if anonymous {
        if has_body {
            add("400", "Malformed JSON, an unknown field, or an invalid value");
            add("413", "Request body larger than 64 KiB");
            add("415", "The body is not sent as `Content-Type: application/json`");
        }
        add("503", "A dependency is briefly unavailable; retry");
    }
    if !public && !anonymous {
        if has_body || has_query {
            add("400", "Malformed JSON, an unknown field, or an invalid value");
        }
        add("401", "Missing, malformed, unknown, expired or revoked credential");
        add(
            "403",
            "The credential lacks the scope named in the message, is restricted to another project, needs the admin role, is not a person's session where one is needed (CLI login and sessions), or an organization limit (named with its current usage) is reached",
        );
        if path.contains('{') {
            add("404", "No such resource in the caller's organization");
        }
        if is_lifecycle || path.ends_with("/connections") || (changes && path.contains('{')) {
            add("409", "A lifecycle job is already running for this resource (named in the message), or the resource is not in a state that allows this (not ready yet, being deleted)");
        }
        if has_body {
            add("413", "Request body larger than 64 KiB");
            add("415", "The body is not sent as `Content-Type: application/json`");
        }
        add("503", "A dependency is briefly unavailable; retry");
    }
    add("500", "Internal error (details are logged, never returned)");
    op.responses.responses.entry("429".to_string()).or_insert_with(|| rate_limited_response().into());
    if !public && !anonymous {
        op.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ]);
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the committed `openapi.json` holds it.
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

pub fn router() -> Router<App> {
    Router::new().route("/v1/openapi.json", get(openapi_json))
}

/// This OpenAPI 3.1 document. No authentication.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", operation_id = "getOpenApi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(serde_json::to_value(document()).unwrap_or_default())
}
