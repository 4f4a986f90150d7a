//! The API reference in `docs/api/`: one Markdown page per tag of
//! `openapi.json` and an index, rendered from the document alone, so the
//! pages cannot drift from the code that generates the document.
//! `cargo run -p capydb-apidocs` writes them; a test fails when the
//! committed pages differ from what this renders.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Example request bodies for the `curl` lines, by operation id: valid
/// against `capydb-local`, loopback addresses only.
fn example_body(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "updateOrganization" => r#"{"name": "Acme"}"#,
        "createApiKey" => r#"{"name": "ci", "scopes": ["projects:read", "projects:write"], "expires_in_days": 90}"#,
        "createProject" => r#"{"name": "shop"}"#,
        "updateProject" => r#"{"name": "shop-main"}"#,
        "createPreview" => r#"{"name": "pr-1234", "mode": "clone", "ttl_hours": 24}"#,
        "updatePreview" => r#"{"ttl_hours": 48}"#,
        "createBackup" => r#"{"name": "before the migration"}"#,
        "createRestore" => r#"{"backup_id": "'"$BACKUP_ID"'", "mode": "preview", "preview_name": "restored"}"#,
        "createImport" => r#"{"source_url": "'"$SOURCE_URL"'"}"#,
        "createWebhook" => r#"{"url": "http://127.0.0.1:9/capydb-hook", "events": ["preview.ready", "job.failed"]}"#,
        "updateWebhook" => r#"{"enabled": true}"#,
        "approveCliLogin" => r#"{"user_code": "'"$USER_CODE"'"}"#,
        "exchangeCliToken" => r#"{"device_code": "'"$DEVICE_CODE"'"}"#,
        _ => return None,
    })
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => v,
    }
}

fn ref_name(v: &Value) -> Option<&str> {
    v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/"))
}

/// A schema's type in a few words, linking named schemas (`[Job](#job)`).
fn type_of(v: &Value) -> String {
    if let Some(name) = ref_name(v) {
        return format!("[`{name}`](#{})", name.to_lowercase());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = v.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = alts.iter().map(type_of).collect();
            return parts.join(" or ");
        }
    }
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(|e| format!("`{}`", e.as_str().unwrap_or(&e.to_string()))).collect();
        return names.join(", ");
    }
    let ty = match v.get("type") {
        Some(Value::Array(types)) => {
            let types: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            types.join(" or ")
        }
        Some(Value::String(t)) => t.clone(),
        _ => "any".into(),
    };
    if ty.starts_with("array") {
        return format!("array of {}", type_of(&v["items"]));
    }
    match v.get("format").and_then(Value::as_str) {
        Some(f) => format!("{ty} ({f})"),
        None => ty,
    }
}

/// Bounds a schema states: lengths, ranges, patterns, item counts.
fn bounds(v: &Value) -> String {
    let mut out = Vec::new();
    for (key, words) in [
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minimum", "≥ {}"),
        ("maximum", "≤ {}"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("pattern", "matches `{}`"),
        ("default", "default `{}`"),
    ] {
        if let Some(x) = v.get(key) {
            let text = x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
            out.push(words.replace("{}", &text));
        }
    }
    out.join("; ")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ").trim().to_string()
}

/// The named schemas `v` refers to, directly or through its fields.
fn collect_refs(doc: &Value, v: &Value, seen: &mut BTreeSet<String>) {
    if let Some(name) = ref_name(v) {
        if seen.insert(name.to_string()) {
            collect_refs(doc, &doc["components"]["schemas"][name], seen);
        }
        return;
    }
    match v {
        Value::Object(map) => map.values().for_each(|x| collect_refs(doc, x, seen)),
        Value::Array(items) => items.iter().for_each(|x| collect_refs(doc, x, seen)),
        _ => {}
    }
}

fn schema_table(out: &mut String, doc: &Value, name: &str) {
    let s = &doc["components"]["schemas"][name];
    let _ = writeln!(out, "### `{name}`\n");
    if let Some(d) = s.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        let _ = writeln!(out, "{}\n", type_of(s));
        return;
    };
    let required: BTreeSet<&str> =
        s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    out.push_str("| field | type | required | description |\n| --- | --- | --- | --- |\n");
    for (field, p) in props {
        let mut desc = p.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        let b = bounds(p);
        if !b.is_empty() {
            desc = if desc.is_empty() { b } else { format!("{desc} ({b})") };
        }
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            cell(&type_of(p)),
            if required.contains(field.as_str()) { "yes" } else { "no" },
            cell(&desc)
        );
    }
    out.push('\n');
}

fn access_line(op: &Value) -> String {
    let a = &op["x-capydb-access"];
    match a["credential"].as_str() {
        Some("none") => "no credential".into(),
        Some("any") => "any credential".into(),
        Some("browser_session") => "a person's browser session (Clerk); not an API key or a CLI token".into(),
        Some("browser_session_or_cli_token") => "a person's browser session or CLI token; not an API key".into(),
        Some("api_key_or_session") => {
            let scope = a["scope"].as_str().unwrap_or("?");
            let admin = match &a["session_needs_admin"] {
                Value::Bool(true) => "; a session needs the organization admin role (`org:admin`)",
                Value::String(s) if s == "overwrite" => {
                    "; a session needs the organization admin role (`org:admin`) for `mode: overwrite`"
                }
                _ => "",
            };
            format!("scope `{scope}` (an API key holding it, or a session){admin}")
        }
        _ => "see the document".into(),
    }
}

fn placeholder(param: &str) -> String {
    match param {
        "org_id" => "$CAPYDB_ORG_ID".into(),
        p => format!("${}", p.to_uppercase()),
    }
}

/// The `curl` line of an operation, against `capydb-local` with the
/// variables its walk-through exports (and the ids the page names).
pub fn curl(path: &str, method: &str, op: &Value) -> String {
    let url: Vec<String> = path
        .split('/')
        .map(|seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) => placeholder(p),
            None => seg.to_string(),
        })
        .collect();
    let public = op["x-capydb-access"]["credential"] == "none";
    let mut line = format!("curl -sS -X {} \"$CAPYDB_BASE{}\"", method.to_uppercase(), url.join("/"));
    if !public {
        line.push_str(" \\\n  -H \"Authorization: Bearer $CAPYDB_API_KEY\"");
    }
    let id = op["operationId"].as_str().unwrap_or_default();
    if let Some(body) = example_body(id) {
        let _ = write!(line, " \\\n  -H 'Content-Type: application/json' -d '{body}'");
    } else if op.get("requestBody").is_some() {
        line.push_str(" \\\n  -H 'Content-Type: application/json' -d '{}'");
    }
    line
}

fn success(op: &Value) -> String {
    op["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(c, _)| c.clone())
        .find(|c| c.starts_with('2'))
        .unwrap_or_default()
}

/// Every page, by file name under `docs/api/`.
pub fn render(doc: &Value) -> BTreeMap<String, String> {
    let mut by_tag: BTreeMap<String, Vec<(String, String, &Value)>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                by_tag.entry(tag).or_default().push((path.clone(), method.to_string(), op));
            }
        }
    }
    let tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["name"].as_str().unwrap_or("").to_string(), t["description"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut pages = BTreeMap::new();
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let mut index = format!(
        "# {title}: reference\n\n<!-- Generated from openapi.json by `cargo run -p capydb-apidocs`; do not edit. -->\n\n\
         Generated from [`openapi.json`](../../openapi.json), the document the server serves at \
         `GET /v1/openapi.json`. The `curl` lines run against `capydb-local` with the variables its \
         walk-through exports (`CAPYDB_BASE`, `CAPYDB_API_KEY`, `CAPYDB_ORG_ID`) and the ids a page \
         names as `$PROJECT_ID` and so on. A static HTML rendering of the same document: \
         `bash docs/api/html.sh`.\n\n\
         Every error is `{{\"error\": \"message\"}}`; every response carries `X-Request-Id` and the \
         `RateLimit-*` headers; every POST takes an `Idempotency-Key`.\n\n\
         | tag | operations | what |\n| --- | --- | --- |\n"
    );
    for (tag, description) in &tags {
        let Some(ops) = by_tag.get(tag) else { continue };
        let _ = writeln!(index, "| [{tag}]({tag}.md) | {} | {} |", ops.len(), cell(description));
        let mut page = format!(
            "# {tag}\n\n<!-- Generated from openapi.json by `cargo run -p capydb-apidocs`; do not edit. -->\n\n{}\n\n",
            description
        );
        let mut refs = BTreeSet::new();
        for (path, method, op) in ops {
            let id = op["operationId"].as_str().unwrap_or_default();
            let _ = writeln!(page, "## `{} {path}`\n\n`{id}`\n", method.to_uppercase());
            if let Some(s) = op.get("summary").and_then(Value::as_str) {
                let _ = writeln!(page, "{}\n", s.trim());
            }
            if let Some(d) = op.get("description").and_then(Value::as_str) {
                let _ = writeln!(page, "{}\n", d.trim());
            }
            let _ = writeln!(page, "**Access:** {}.\n", access_line(op));
            if let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
                page.push_str("**Parameters**\n\n| name | in | type | required | description |\n| --- | --- | --- | --- | --- |\n");
                for p in params {
                    let mut desc = p["description"].as_str().unwrap_or("").to_string();
                    let b = bounds(&p["schema"]);
                    if !b.is_empty() {
                        desc = format!("{desc} ({b})");
                    }
                    let _ = writeln!(
                        page,
                        "| `{}` | {} | {} | {} | {} |",
                        p["name"].as_str().unwrap_or(""),
                        p["in"].as_str().unwrap_or(""),
                        cell(&type_of(&p["schema"])),
                        if p["required"] == true { "yes" } else { "no" },
                        cell(&desc)
                    );
                }
                page.push('\n');
            }
            if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
                let _ = writeln!(page, "**Request body:** {}\n", type_of(body));
                collect_refs(doc, body, &mut refs);
            }
            page.push_str("**Responses**\n\n| status | body | meaning |\n| --- | --- | --- |\n");
            for (code, r) in op["responses"].as_object().into_iter().flatten() {
                let r = resolve(doc, r);
                let schema = r.pointer("/content/application~1json/schema");
                if let Some(s) = schema {
                    collect_refs(doc, s, &mut refs);
                }
                let body = schema.map(type_of).unwrap_or_else(|| "—".into());
                let meaning = r["description"].as_str().filter(|d| !d.is_empty()).unwrap_or("success");
                let _ = writeln!(page, "| {code} | {} | {} |", cell(&body), cell(meaning));
            }
            let _ =
                writeln!(page, "\n**Example** (answers {}):\n\n```sh\n{}\n```\n", success(op), curl(path, method, op));
        }
        if !refs.is_empty() {
            page.push_str("## Schemas\n\n");
            for name in &refs {
                schema_table(&mut page, doc, name);
            }
        }
        pages.insert(format!("{tag}.md"), page);
    }
    pages.insert("README.md".into(), index);
    pages
}
