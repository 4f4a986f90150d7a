//! The committed `docs/api/` is what `capydb-apidocs` renders from the
//! committed `openapi.json`: a changed document without regenerated pages
//! fails here, saying how to regenerate.
use std::path::Path;

#[test]
fn docs_api_matches_openapi_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("openapi.json")).unwrap()).unwrap();
    let pages = capydb_apidocs::render(&doc);
    let mut stale = Vec::new();
    for (name, text) in &pages {
        if std::fs::read_to_string(root.join("docs/api").join(name)).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.clone());
        }
    }
    for entry in std::fs::read_dir(root.join("docs/api")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && !pages.contains_key(&name) {
            stale.push(format!("{name} (no such tag any more)"));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/api is out of date with openapi.json ({}): run `cargo run -p capydb-apidocs` and commit it",
        stale.join(", ")
    );
}

#[test]
fn every_operation_has_a_page_entry_with_its_access_and_an_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("openapi.json")).unwrap()).unwrap();
    let pages = capydb_apidocs::render(&doc);
    let all: String = pages.values().cloned().collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let heading = format!("## `{} {path}`", method.to_uppercase());
            let at = all.find(&heading).unwrap_or_else(|| panic!("no entry for {heading}"));
            let entry = &all[at..];
            let entry = &entry[..entry[3..].find("\n## ").map_or(entry.len(), |e| e + 3)];
            assert!(entry.contains("**Access:**"), "{heading}: no access line");
            assert!(entry.contains("```sh\ncurl "), "{heading}: no example");
            assert!(!entry.contains("see the document"), "{heading}: its access is not stated");
            let _ = op;
        }
    }
}
