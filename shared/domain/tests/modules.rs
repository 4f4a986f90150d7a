//! The domain's modules form layers: no module reaches, through `crate::`
//! paths, a module that reaches back to it. (Methods of `App` are written in
//! the module of their use case and called across modules; that is not a
//! dependency between the modules' items, and is not counted.)
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module (a `src/<name>.rs`, or a `src/<name>/` directory
/// whose files all count as that module) and the modules it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" {
            continue;
        }
        let files: Vec<_> = if path.is_dir() {
            std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect()
        } else {
            vec![path.clone()]
        };
        let deps: &mut BTreeSet<String> = graph.entry(name.clone()).or_default();
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            // Unit tests may reach anywhere.
            if file.file_stem().is_some_and(|s| s == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
            deps.extend(crate_paths(text).into_iter().filter(|d| *d != name));
        }
    }
    graph
}

/// The first segment of every `crate::` path in `text`, grouped imports
/// (`use crate::{a, b::c}`) included.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find("};").or_else(|| group.find('}')).unwrap_or(group.len());
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_segment(&item));
        } else {
            out.insert(first_segment(rest));
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

fn first_segment(path: &str) -> String {
    path.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// A path from `from` back to itself, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        for next in graph.get(path.last().unwrap()).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == from {
                return Some(longer);
            }
            if seen.insert(next.clone()) {
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_of_the_domain_depends_on_itself() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("jobs") && graph.contains_key("model"), "{graph:?}");
    let cycles: Vec<String> = graph.keys().filter_map(|m| cycle_through(&graph, m)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_grouped_imports_and_finds_cycles() {
    let deps = crate_paths("use crate::{app::App, model::{Job, Event}, ids};\nlet x = crate::jobs::plan;");
    assert_eq!(deps.into_iter().collect::<Vec<_>>(), ["app", "ids", "jobs", "model"]);
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a".to_string(), BTreeSet::from(["b".to_string()])), ("b".to_string(), BTreeSet::from(["a".to_string()]))]
            .into();
    assert_eq!(cycle_through(&graph, "a"), Some(vec!["a".into(), "b".into(), "a".into()]));
}
