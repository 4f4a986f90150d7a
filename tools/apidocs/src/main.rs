//! `cargo run -p capydb-apidocs`: writes `docs/api/` from `openapi.json`
//! (both at the workspace root), removing pages of tags that are gone.
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("openapi.json")).unwrap_or_else(|e| {
        eprintln!("capydb-apidocs: cannot read openapi.json: {e}");
        std::process::exit(1)
    });
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        eprintln!("capydb-apidocs: openapi.json is not JSON: {e}");
        std::process::exit(1)
    });
    let dir = root.join("docs/api");
    std::fs::create_dir_all(&dir).expect("create docs/api");
    let pages = capydb_apidocs::render(&doc);
    for entry in std::fs::read_dir(&dir).expect("read docs/api").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && !pages.contains_key(&name) {
            std::fs::remove_file(entry.path()).expect("remove a stale page");
        }
    }
    for (name, text) in &pages {
        std::fs::write(dir.join(name), text).expect("write a page");
    }
    println!("capydb-apidocs: wrote {} pages to docs/api/", pages.len());
}
