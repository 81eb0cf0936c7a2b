//! The query API pushed down into SQL: every query must give exactly what the reference
//! evaluator of `mecha-core` gives over the same documents, page by page.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mecha_core::state::{Query, QueryResponse, SetRequest, StateStore};
use serde_json::{Value, json};

use super::state::store;
use crate::{drop_tables, fresh_table, url};

const PREFIX: &str = "app||";

/// JSON documents of mixed shapes and types, by key under [`PREFIX`].
const DOCS: [(&str, &str); 8] = [
    (
        "a",
        r#"{"n":10,"s":"b","person":{"org":"Dev"},"flag":true}"#,
    ),
    (
        "b",
        r#"{"n":9,"s":"a","person":{"org":"Ops"},"flag":false}"#,
    ),
    ("c", r#"{"n":"10","s":"B","person":{"org":"Dev"}}"#),
    (
        "d",
        r#"{"n":2.5,"s":"é","person":{"org":"Fin"},"list":[1,2]}"#,
    ),
    ("e", r#"{"s":null,"person":{}}"#),
    ("f", "[1, 2, 3]"),
    ("g", r#""just a string""#),
    ("j", r#"{ "n" : 1e2 , "s" : "z" }"#),
];

async fn seed(s: &dyn StateStore) {
    let set = |key: &str, value: Bytes| SetRequest {
        key: key.to_owned(),
        value,
        ..SetRequest::default()
    };
    for (k, v) in DOCS {
        s.set(&set(
            &format!("{PREFIX}{k}"),
            Bytes::from_static(v.as_bytes()),
        ))
        .await
        .unwrap();
    }
    // Never returned: bytes that are not JSON, an expired value, a key outside the prefix.
    s.set(&set(&format!("{PREFIX}h"), Bytes::from_static(b"not json")))
        .await
        .unwrap();
    let expiring = SetRequest {
        ttl: Some(Duration::from_millis(200)),
        ..set(&format!("{PREFIX}i"), Bytes::from_static(br#"{"n":1}"#))
    };
    s.set(&expiring).await.unwrap();
    s.set(&set("other||a", Bytes::from_static(br#"{"n":10}"#)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
}

fn parse(body: &Value) -> Query {
    let mut q = Query::parse(body.to_string().as_bytes()).unwrap();
    q.key_prefix = PREFIX.to_owned();
    q
}

/// The reference answer of `mecha-core`'s evaluator.
fn reference(q: &Query) -> QueryResponse {
    let rows = DOCS.iter().map(|(k, v)| {
        (
            format!("{PREFIX}{k}"),
            Bytes::from_static(v.as_bytes()),
            None,
        )
    });
    q.evaluate(rows).unwrap()
}

fn keys_and_data(r: &QueryResponse) -> Vec<(String, Bytes)> {
    r.results
        .iter()
        .map(|r| (r.key.clone(), r.data.clone()))
        .collect()
}

/// Runs `body` on the store and the reference, and checks they agree on every page.
async fn agree(s: &dyn StateStore, body: Value) -> Vec<String> {
    let mut q = parse(&body);
    let mut all = Vec::new();
    for _ in 0..20 {
        let got = s
            .query(&q)
            .await
            .unwrap_or_else(|e| panic!("query {body}: {e}"));
        let want = reference(&q);
        assert_eq!(keys_and_data(&got), keys_and_data(&want), "query {body}");
        assert_eq!(got.token, want.token, "token of query {body}");
        assert!(got.results.iter().all(|r| r.etag.is_some()));
        all.extend(got.results.iter().map(|r| r.key[PREFIX.len()..].to_owned()));
        match got.token {
            Some(t) => q.token = Some(t),
            None => return all,
        }
    }
    panic!("query {body}: more than 20 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_pushdown_matches_the_reference_evaluator() {
    let table = fresh_table("query");
    let s: Arc<dyn StateStore> = store(&url(), &table).await;
    seed(&*s).await;
    let f = |filter: Value| json!({ "filter": filter });
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({}), &["a", "b", "c", "d", "e", "f", "g", "j"]),
        (f(json!({"EQ": {"n": 10}})), &["a"]),
        (f(json!({"EQ": {"n": 10.0}})), &["a"]),
        (f(json!({"EQ": {"n": "10"}})), &["c"]),
        (f(json!({"EQ": {"n": 100}})), &["j"]),
        (f(json!({"EQ": {"s": null}})), &["e"]),
        (f(json!({"EQ": {"person": {}}})), &["e"]),
        (f(json!({"EQ": {"list.1": 2}})), &["d"]),
        (
            f(json!({"NEQ": {"person.org": "Dev"}})),
            &["b", "d", "e", "f", "g", "j"],
        ),
        (f(json!({"IN": {"n": [9, "10", 100]}})), &["b", "c", "j"]),
        (f(json!({"IN": {"person.org": []}})), &[]),
        // Numbers compare numerically ("10" is a string and never compares with 9).
        (f(json!({"GT": {"n": 9}})), &["a", "j"]),
        (f(json!({"GTE": {"n": 9}})), &["a", "b", "j"]),
        (f(json!({"LT": {"n": 10}})), &["b", "d"]),
        (f(json!({"LTE": {"n": 2.5}})), &["d"]),
        // Strings compare by code point: "B" < "a" < "b" < "z" < "é".
        (f(json!({"GT": {"n": "1"}})), &["c"]),
        (f(json!({"LT": {"s": "b"}})), &["b", "c"]),
        (f(json!({"GTE": {"s": "b"}})), &["a", "d", "j"]),
        (f(json!({"GT": {"flag": false}})), &[]),
        (
            f(json!({"AND": [{"EQ": {"person.org": "Dev"}}, {"GT": {"n": 5}}]})),
            &["a"],
        ),
        (
            f(json!({"OR": [{"EQ": {"s": "a"}},
                {"AND": [{"IN": {"person.org": ["Fin"]}}, {"LT": {"n": 3}}]}]})),
            &["b", "d"],
        ),
        (
            json!({"sort": [{"key": "n"}]}),
            &["e", "f", "g", "d", "b", "a", "j", "c"],
        ),
        (
            json!({"sort": [{"key": "n", "order": "DESC"}]}),
            &["c", "j", "a", "b", "d", "e", "f", "g"],
        ),
        (
            json!({"sort": [{"key": "s"}]}),
            &["f", "g", "e", "c", "b", "a", "j", "d"],
        ),
        (
            json!({"filter": {"EQ": {"person.org": "Dev"}}, "sort": [{"key": "flag", "order": "DESC"}]}),
            &["a", "c"],
        ),
        (
            json!({"sort": [{"key": "person.org"}, {"key": "n", "order": "DESC"}]}),
            &["j", "e", "f", "g", "c", "a", "d", "b"],
        ),
    ];
    for (body, want) in cases {
        assert_eq!(agree(&*s, body.clone()).await, want, "query {body}");
    }
    s.close().await;
    drop_tables(&[&table]).await;
}

#[tokio::test]
async fn query_pages_follow_tokens_to_the_end() {
    let table = fresh_table("pages");
    let s = store(&url(), &table).await;
    seed(&*s).await;
    for limit in [1, 2, 3, 4, 8, 9] {
        let body = json!({"sort": [{"key": "n"}], "page": {"limit": limit}});
        assert_eq!(
            agree(&*s, body).await,
            ["e", "f", "g", "d", "b", "a", "j", "c"],
            "limit {limit}"
        );
    }
    // A page that ends exactly at the last match has no token.
    let q = parse(&json!({"filter": {"EQ": {"person.org": "Dev"}}, "page": {"limit": 2}}));
    assert_eq!(s.query(&q).await.unwrap().token, None);
    let mut q = parse(&json!({"page": {"limit": 2}}));
    q.token = Some("x".into());
    assert!(s.query(&q).await.is_err(), "a token that is not an offset");
    s.close().await;
    drop_tables(&[&table]).await;
}

/// Values and paths reach the server only as parameters.
#[tokio::test]
async fn query_values_are_never_sql() {
    let table = fresh_table("inject");
    let s = store(&url(), &table).await;
    seed(&*s).await;
    let evil = format!("'; DROP TABLE \"{table}\"; --");
    for filter in [
        json!({"EQ": {"s": evil}}),
        json!({"EQ": {evil.clone(): 1}}),
        json!({"LT": {"s": evil}}),
        json!({"IN": {"s": [evil]}}),
    ] {
        let r = s.query(&parse(&json!({ "filter": filter }))).await.unwrap();
        assert!(r.results.is_empty(), "{filter}");
    }
    let r = s
        .query(&parse(&json!({"sort": [{"key": evil}]})))
        .await
        .unwrap();
    assert_eq!(r.results.len(), DOCS.len(), "the table is still there");
    s.close().await;
    drop_tables(&[&table]).await;
}
