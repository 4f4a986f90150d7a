//! `?limit=` and `?cursor=`: the bounds, refused cursors, and walking every
//! page by the `Link` header without a duplicate or a gap.
use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::*;

fn ids(list: &Value) -> Vec<String> {
    list.as_array().expect("a list is a bare array").iter().map(|x| x["id"].as_str().unwrap().to_string()).collect()
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(a: &Answer) -> Option<String> {
    let link = a.headers.get("link")?.to_str().unwrap().to_string();
    let target = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).map(|(t, _)| t.to_string());
    Some(target.unwrap_or_else(|| panic!("a Link header that is not rel=next: {link}")))
}

/// Creates `n` more API keys (the organization starts with one).
async fn mint_keys(api: &Api, n: usize) {
    let path = format!("/v1/organizations/{}/api-keys", api.org_id);
    for i in 0..n {
        let r = call("POST", &path).key(&api.key).json(json!({"name": format!("k{i}"), "scopes": ["projects:read"]}));
        r.send(&api.router).await.expect_status(201);
    }
}

#[tokio::test]
async fn limit_bounds_and_refused_query_parameters() {
    let api = api("limits").await;
    let base = format!("/v1/organizations/{}/api-keys", api.org_id);
    for q in ["limit=0", "limit=101", "limit=-1", "limit=abc", "limit=", "limit=1.5", "limit=99999999999999999999"] {
        let r = call("GET", format!("{base}?{q}")).key(&api.key).send(&api.router).await;
        r.expect_error(400, "limit must be an integer between 1 and 100");
    }
    for q in ["limit=1", "limit=100", "", "cursor="] {
        let r = call("GET", format!("{base}?{q}")).key(&api.key).send(&api.router).await;
        assert_eq!(ids(&r.expect_status(200)).len(), 1, "{q}");
    }
    for cursor in ["not-valid", "key%2F1", "%27", &"a".repeat(65), "x%20y"] {
        let r = call("GET", format!("{base}?cursor={cursor}")).key(&api.key).send(&api.router).await;
        r.expect_error(400, "cursor must be at most 64 letters, digits and '_'");
    }
    // The longest cursor is accepted (a bound past every id: an empty page).
    let r = call("GET", format!("{base}?cursor={}", "a".repeat(64))).key(&api.key).send(&api.router).await;
    r.expect_status(200);
    let r = call("GET", format!("{base}?limit=5&page=2")).key(&api.key).send(&api.router).await;
    r.expect_error(400, "unknown query parameter \"page\"");
}

/// Walks a list by its `Link` headers; every page but the last is full.
async fn walk(api: &Api, first: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut next = Some(format!("{first}?limit={limit}"));
    let mut pages = 0;
    while let Some(uri) = next {
        pages += 1;
        assert!(pages < 50, "the Link headers do not end");
        let r = call("GET", &uri).key(&api.key).send(&api.router).await;
        let page = ids(&r.expect_status(200));
        next = next_link(&r);
        if let Some(n) = &next {
            assert_eq!(page.len(), limit, "{uri}: a page with a next link is full");
            let path = first.split('?').next().unwrap();
            assert!(n.starts_with(&format!("{path}?limit={limit}&cursor=")), "{n} does not continue {path}");
            assert!(n.ends_with(page.last().unwrap()), "the cursor is not the page's last id: {n}");
        } else {
            assert!(!page.is_empty() || seen.is_empty(), "{uri}: a next link led to an empty page");
        }
        seen.extend(page);
    }
    seen
}

#[tokio::test]
async fn pages_cover_the_list_once_in_order() {
    let api = api("pages").await;
    mint_keys(&api, 7).await;
    let base = format!("/v1/organizations/{}/api-keys", api.org_id);
    let all = ids(&call("GET", format!("{base}?limit=100")).key(&api.key).send(&api.router).await.expect_status(200));
    assert_eq!(all.len(), 8);
    let set: HashSet<_> = all.iter().collect();
    assert_eq!(set.len(), 8, "duplicates in the full listing: {all:?}");
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(all, sorted, "not newest (greatest id) first");

    for limit in [1, 3, 4, 7, 8] {
        assert_eq!(walk(&api, &base, limit).await, all, "limit {limit}: pages differ from the full list");
    }
    // Under the long prefix the Link keeps the prefix.
    let long = format!("/api/capydb{base}");
    assert_eq!(walk(&api, &long, 3).await, all);
    // A list exactly one page long has no Link.
    let r = call("GET", format!("{base}?limit=8")).key(&api.key).send(&api.router).await;
    assert!(r.headers.get("link").is_none(), "a Link past the last item");
}

#[tokio::test]
async fn project_pages_have_no_duplicates_or_gaps() {
    let api = api("projects").await;
    for i in 0..5 {
        let r = call("POST", "/v1/projects").key(&api.key).json(json!({"name": format!("p{i}")}));
        r.send(&api.router).await.expect_status(202);
    }
    let all = ids(&call("GET", "/v1/projects?limit=100").key(&api.key).send(&api.router).await.expect_status(200));
    assert_eq!(all.len(), 5);
    assert_eq!(walk(&api, "/v1/projects", 2).await, all);
}
