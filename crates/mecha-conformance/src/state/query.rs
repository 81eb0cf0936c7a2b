//! The query API, for stores declaring QUERY_API.
//!
//! Each check writes five JSON documents under a fresh key prefix, plus decoys outside it
//! whose keys would match a prefix test done with an unescaped `LIKE` (wildcards `_` and `%`,
//! case folding), a prefix cut one character short, or one measured in bytes (it holds `é`).

use bytes::Bytes;
use mecha_core::state::{Query, QueryResponse, StateStore};
use serde_json::json;

use super::{Check, fresh_key};

/// Documents `d1`…`d5` under the prefix, as `(name, JSON)`.
const DOCS: [(&str, &str); 5] = [
    (
        "d1",
        r#"{"city":"Seattle","n":1,"person":{"org":"Dev","id":1036}}"#,
    ),
    (
        "d2",
        r#"{"city":"Portland","n":2,"person":{"org":"Finance","id":1037}}"#,
    ),
    (
        "d3",
        r#"{"city":"Seattle","n":3,"person":{"org":"Finance","id":1038}}"#,
    ),
    (
        "d4",
        r#"{"city":"Austin","n":4,"person":{"org":"Dev","id":1039}}"#,
    ),
    (
        "d5",
        r#"{"city":"Boston","n":5,"person":{"org":"Ops","id":1040}}"#,
    ),
];

/// Writes the documents and decoys; returns the key prefix.
async fn seed(c: &Check, store: &dyn StateStore) -> String {
    let prefix = format!("{}_%é||", fresh_key("Query"));
    for (name, doc) in DOCS {
        c.set(store, &format!("{prefix}{name}"), doc).await;
    }
    let cut = &prefix[..prefix.len() - 1];
    let decoys = [
        format!("{cut}d9"),
        prefix.replacen("_%", "x%", 1) + "d9",
        prefix.replacen("_%", "_x", 1) + "d9",
        prefix.to_lowercase() + "d9",
    ];
    for key in decoys {
        c.set(store, &key, DOCS[0].1).await;
    }
    prefix
}

/// Runs `body` under `prefix` and returns the response.
async fn run(
    c: &Check,
    store: &dyn StateStore,
    prefix: &str,
    body: serde_json::Value,
) -> QueryResponse {
    let mut query = Query::parse(body.to_string().as_bytes())
        .unwrap_or_else(|e| c.fail(format!("the suite's query {body} does not parse: {e}")));
    query.key_prefix = prefix.to_owned();
    c.ok(store.query(&query).await, &format!("query {body}"))
}

/// The document names of a response, prefix stripped, in order.
fn names(prefix: &str, res: &QueryResponse) -> Vec<String> {
    res.results
        .iter()
        .map(|r| r.key.strip_prefix(prefix).unwrap_or(&r.key).to_owned())
        .collect()
}

/// EQ (also on a nested field), IN, AND, OR, GT, GTE, LT and LTE MUST select exactly the
/// matching documents.
pub async fn query_filters(store: &dyn StateStore) {
    let c = Check::new("query_filters");
    let prefix = seed(&c, store).await;
    let cases = [
        (json!({"EQ": {"city": "Seattle"}}), vec!["d1", "d3"]),
        (json!({"EQ": {"person.org": "Dev"}}), vec!["d1", "d4"]),
        (
            json!({"IN": {"city": ["Portland", "Boston", "Nowhere"]}}),
            vec!["d2", "d5"],
        ),
        (
            json!({"AND": [{"EQ": {"person.org": "Finance"}}, {"EQ": {"city": "Seattle"}}]}),
            vec!["d3"],
        ),
        (
            json!({"OR": [{"EQ": {"city": "Austin"}}, {"EQ": {"n": 1}}]}),
            vec!["d1", "d4"],
        ),
        (
            json!({"OR": [{"EQ": {"person.org": "Ops"}}, {"AND": [{"EQ": {"person.org": "Finance"}}, {"IN": {"city": ["Portland"]}}]}]}),
            vec!["d2", "d5"],
        ),
        (json!({"GT": {"n": 3}}), vec!["d4", "d5"]),
        (json!({"GTE": {"n": 3}}), vec!["d3", "d4", "d5"]),
        (json!({"LT": {"n": 2}}), vec!["d1"]),
        (json!({"LTE": {"n": 2}}), vec!["d1", "d2"]),
        (json!({"EQ": {"city": "Nowhere"}}), vec![]),
    ];
    for (filter, want) in cases {
        let res = run(&c, store, &prefix, json!({ "filter": filter })).await;
        let mut got = names(&prefix, &res);
        got.sort();
        c.eq(
            got,
            want.iter().map(|s| s.to_string()).collect(),
            &format!("filter {filter}"),
        );
    }
}

/// Sorting MUST order by each key in turn, ascending by default or descending.
pub async fn query_sort(store: &dyn StateStore) {
    let c = Check::new("query_sort");
    let prefix = seed(&c, store).await;
    let cases = [
        (json!([{"key": "n"}]), ["d1", "d2", "d3", "d4", "d5"]),
        (
            json!([{"key": "n", "order": "ASC"}]),
            ["d1", "d2", "d3", "d4", "d5"],
        ),
        (
            json!([{"key": "n", "order": "DESC"}]),
            ["d5", "d4", "d3", "d2", "d1"],
        ),
        (
            json!([{"key": "city"}, {"key": "n", "order": "DESC"}]),
            ["d4", "d5", "d2", "d3", "d1"],
        ),
        (
            json!([{"key": "person.id", "order": "DESC"}]),
            ["d5", "d4", "d3", "d2", "d1"],
        ),
    ];
    for (sort, want) in cases {
        let res = run(&c, store, &prefix, json!({ "sort": sort })).await;
        c.eq(
            names(&prefix, &res),
            want.map(str::to_owned).to_vec(),
            &format!("sort {sort}"),
        );
    }
}

/// With a limit, pages MUST hold at most that many results, each page's token MUST lead to
/// the next, the last page MUST have no token, and together the pages MUST hold every match
/// once, in order.
pub async fn query_paging(store: &dyn StateStore) {
    let c = Check::new("query_paging");
    let prefix = seed(&c, store).await;
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        if page > DOCS.len() {
            c.fail(format!(
                "more than {} pages of at most 2 results for 5 documents",
                DOCS.len()
            ));
        }
        let mut body = json!({ "sort": [{"key": "n"}], "page": {"limit": 2} });
        if let Some(t) = &token {
            body["page"]["token"] = json!(t);
        }
        let res = run(&c, store, &prefix, body).await;
        if res.results.len() > 2 {
            c.fail(format!(
                "page {page} holds {} results with limit 2",
                res.results.len()
            ));
        }
        all.extend(names(&prefix, &res));
        token = res.token.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    c.eq(
        all,
        DOCS.map(|(n, _)| n.to_owned()).to_vec(),
        "the results of every page",
    );
}

/// Only keys under the prefix MUST be returned, with their stored bytes and (for ETAG
/// stores) their ETags.
pub async fn query_key_prefix(store: &dyn StateStore) {
    let c = Check::new("query_key_prefix");
    let prefix = seed(&c, store).await;
    let res = run(&c, store, &prefix, json!({})).await;
    let mut got: Vec<_> = res
        .results
        .iter()
        .map(|r| (r.key.clone(), r.data.clone()))
        .collect();
    got.sort();
    let want: Vec<_> = DOCS
        .iter()
        .map(|(n, d)| (format!("{prefix}{n}"), Bytes::from_static(d.as_bytes())))
        .collect();
    c.eq(got, want, "keys and values of a query without filter");
    let etags = store
        .features()
        .contains(&mecha_core::component::Feature::Etag);
    for r in res.results.iter().filter(|_| etags) {
        let want = c.etag(store, &r.key).await;
        c.eq(r.etag.clone(), Some(want), &format!("etag of {}", r.key));
    }
}
