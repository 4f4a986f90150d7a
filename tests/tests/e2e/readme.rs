//! The README's walk-through is the fixture: every ```sh block between
//! "## A walk through the API with curl" and "### Conventions" runs, in
//! order and verbatim, in one `bash -u -o pipefail` against a fresh
//! capydb-local, with the three lines it printed exported as the README
//! tells a reader to. Each block must exit 0; a failure names the block.
use std::time::Duration;

use crate::helpers::*;

const START: &str = "## A walk through the API with curl";
const END: &str = "### Conventions";

fn walkthrough_blocks(readme: &str) -> Vec<String> {
    let start = readme.find(START).expect("the README has its walk-through heading");
    let end = start + readme[start..].find(END).expect("the walk-through ends at the Conventions heading");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block in the walk-through");
    blocks
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let readme = read_file(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")));
    let blocks = walkthrough_blocks(&readme);
    assert!(blocks.len() >= 10, "the walk-through lost its blocks: {}", blocks.len());
    let app = TestApp::spawn().await;
    let printed = |name: &str| -> String {
        app.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("capydb-local printed no {name}: {}", app.stdout))
            .to_string()
    };
    // Each block runs in a brace group, so `local`, functions and variables
    // carry over; its status goes to a file descriptor of its own.
    let mut script = String::new();
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '>>> block {i}'\n{{\n{b}\n}}\necho \"<<< block {i} rc=$?\" >&3\n"));
    }
    let status_file = temp_dir("readme").join("status");
    let run = tokio::process::Command::new("bash")
        .args(["-u", "-o", "pipefail", "-c", &format!("exec 3>{}\n{script}", status_file.display())])
        .env("CAPYDB_BASE", printed("CAPYDB_BASE"))
        .env("CAPYDB_ORG_ID", printed("CAPYDB_ORG_ID"))
        .env("CAPYDB_API_KEY", printed("CAPYDB_API_KEY"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the walk-through finished within 10 minutes")
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let statuses = std::fs::read_to_string(&status_file).unwrap_or_default();
    let finished: Vec<(usize, i32)> = statuses
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("<<< block ")?;
            let (n, rc) = rest.split_once(" rc=")?;
            Some((n.parse().ok()?, rc.parse().ok()?))
        })
        .collect();
    let failed = finished.iter().find(|(_, rc)| *rc != 0).map(|(n, _)| *n).or_else(|| {
        // A block that ended the shell (`exit`, `set -u` on an unset name).
        (finished.len() < blocks.len()).then_some(finished.len())
    });
    if let Some(n) = failed {
        panic!(
            "README walk-through block {n} failed:\n--- block {n} ---\n{}--- output ---\n{}\n--- errors ---\n{}",
            blocks[n],
            tail(&stdout, 3000),
            tail(&stderr, 3000)
        );
    }
    assert_eq!(finished.len(), blocks.len(), "every block ran");
    // Nothing secret was printed on the way.
    assert!(!stdout.contains(&printed("CAPYDB_API_KEY")), "the walk-through printed the API key");
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[test]
fn blocks_are_extracted_in_order_and_only_sh_ones() {
    let md = format!("intro\n```sh\nnot this\n```\n{START}\n```text\nno\n```\n```sh\na\nb\n```\nx\n```sh\nc\n```\n{END}\n```sh\nafter\n```\n");
    assert_eq!(walkthrough_blocks(&md), ["a\nb\n", "c\n"]);
}
