//! The HTTP API against the real binary: routes, bodies, status and error codes.

use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, component, eventually, in_memory_store};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::MECHA;

async fn sidecar_with(resources: &ResourcesDir) -> MechaProcess {
    MechaProcess::builder(MECHA)
        .resources(resources.path())
        .start()
        .await
}

async fn in_memory() -> (MechaProcess, ResourcesDir) {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    (sidecar_with(&res).await, res)
}

async fn error_code(r: Response) -> (StatusCode, String, Value) {
    let status = r.status();
    let body: Value = r.json().await.expect("error body is JSON");
    (
        status,
        body["errorCode"].as_str().unwrap_or_default().to_owned(),
        body,
    )
}

fn state_url(p: &MechaProcess, rest: &str) -> String {
    format!("{}/v1.0/state/statestore{rest}", p.http_url())
}

#[tokio::test]
async fn health_endpoints_answer_204() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        let r = c
            .get(format!("{}{path}", p.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
    }
    let r = c
        .get(format!("{}/v1.0/healthz?appid=other", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, "ERR_HEALTH_APPID_NOT_MATCH");
}

#[tokio::test]
async fn save_and_get_every_json_type_verbatim() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    let values = [
        ("obj", json!({"n": 1, "s": "x"})),
        ("arr", json!([1, 2, 3])),
        ("str", json!("hello")),
        ("num", json!(42.5)),
        ("bool", json!(true)),
        ("null", Value::Null),
    ];
    let items: Vec<Value> = values
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let r = c.post(state_url(&p, "")).json(&items).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for (k, v) in &values {
        let r = c.get(state_url(&p, &format!("/{k}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert!(r.headers().get("etag").is_some(), "{k} has an ETag header");
        let body = r.bytes().await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), *v, "{k}");
    }
    // A JSON string is stored with its quotes, as Dapr does.
    let r = c.get(state_url(&p, "/str")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "\"hello\"");
    // PUT works like POST, and an empty list is accepted.
    let r = c
        .put(state_url(&p, ""))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.get(state_url(&p, "/absent")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn etags_guard_saves_and_deletes() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    c.post(state_url(&p, ""))
        .json(&json!([{"key": "k", "value": 1}]))
        .send()
        .await
        .unwrap();
    let etag = c.get(state_url(&p, "/k")).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!etag.is_empty());

    let stale = json!([{"key": "k", "value": 2, "etag": "999999"}]);
    let (status, code, _) =
        error_code(c.post(state_url(&p, "")).json(&stale).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "ERR_STATE_SAVE")
    );
    let foreign = json!([{"key": "k", "value": 2, "etag": "not-one-of-ours"}]);
    let (status, code, _) = error_code(
        c.post(state_url(&p, ""))
            .json(&foreign)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "ERR_STATE_SAVE")
    );
    // Last-write explicitly ignores the ETag.
    let lw = json!([{"key": "k", "value": 3, "etag": "999999", "options": {"concurrency": "last-write"}}]);
    assert_eq!(
        c.post(state_url(&p, ""))
            .json(&lw)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    // First-write without an ETag on an existing key fails.
    let fw = json!([{"key": "k", "value": 4, "options": {"concurrency": "first-write"}}]);
    let (status, _, _) =
        error_code(c.post(state_url(&p, "")).json(&fw).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let etag = c.get(state_url(&p, "/k")).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let ok = json!([{"key": "k", "value": 5, "etag": etag}]);
    assert_eq!(
        c.post(state_url(&p, ""))
            .json(&ok)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    let r = c
        .delete(state_url(&p, "/k"))
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "ERR_STATE_DELETE")
    );
    let etag = c.get(state_url(&p, "/k")).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = c
        .delete(state_url(&p, "/k"))
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(state_url(&p, "/k")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // Deleting an absent key without an ETag succeeds.
    assert_eq!(
        c.delete(state_url(&p, "/k")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn bulk_get_returns_data_etag_and_missing_keys() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    c.post(state_url(&p, ""))
        .json(&json!([{"key": "a", "value": {"x": 1}}, {"key": "b", "value": "s"}]))
        .send()
        .await
        .unwrap();
    let r = c
        .post(state_url(&p, "/bulk"))
        .json(&json!({"keys": ["a", "missing", "b"], "parallelism": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let items: Value = r.json().await.unwrap();
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["data"], json!({"x": 1}));
    assert!(items[0]["etag"].is_string());
    assert_eq!(items[1], json!({"key": "missing"}));
    assert_eq!(items[2]["data"], "s");
}

#[tokio::test]
async fn transactions_apply_in_order_or_not_at_all() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": "t1", "value": 1}},
        {"operation": "upsert", "request": {"key": "t2", "value": 2}},
        {"operation": "delete", "request": {"key": "t2"}},
        {"operation": "upsert", "request": {"key": "t3", "value": 3}},
    ]});
    let r = c
        .post(state_url(&p, "/transaction"))
        .json(&tx)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(state_url(&p, "/t1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(
        c.get(state_url(&p, "/t2")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    let failing = json!({"operations": [
        {"operation": "upsert", "request": {"key": "t1", "value": 100}},
        {"operation": "delete", "request": {"key": "t3", "etag": "424242"}},
    ]});
    let (status, code, _) = error_code(
        c.post(state_url(&p, "/transaction"))
            .json(&failing)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_TRANSACTION")
    );
    assert_eq!(
        c.get(state_url(&p, "/t1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(
        c.get(state_url(&p, "/t3"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "3"
    );

    let bad_op =
        json!({"operations": [{"operation": "merge", "request": {"key": "t1", "value": 1}}]});
    let (status, code, _) = error_code(
        c.post(state_url(&p, "/transaction"))
            .json(&bad_op)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    );
}

#[tokio::test]
async fn query_filters_sorts_and_pages() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    let docs: Vec<Value> = (0..5)
        .map(|i| json!({"key": format!("q{i}"), "value": {"n": i, "city": if i % 2 == 0 {"A"} else {"B"}}}))
        .collect();
    c.post(state_url(&p, "")).json(&docs).send().await.unwrap();
    let url = format!("{}/v1.0-alpha1/state/statestore/query", p.http_url());
    let q = json!({"filter": {"EQ": {"city": "A"}}, "sort": [{"key": "n", "order": "DESC"}], "page": {"limit": 2}});
    let r = c.post(&url).json(&q).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let keys: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["q4", "q2"]);
    let token = body["token"].as_str().unwrap().to_owned();
    let q = json!({"filter": {"EQ": {"city": "A"}}, "sort": [{"key": "n", "order": "DESC"}], "page": {"limit": 2, "token": token}});
    let body: Value = c
        .post(&url)
        .json(&q)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["results"][0]["key"], "q0");
    assert!(body.get("token").is_none());
    let none = json!({"filter": {"EQ": {"city": "Z"}}});
    assert_eq!(
        c.post(&url).json(&none).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let bad = json!({"filter": {"LIKE": {"city": "A"}}});
    let (status, code, _) = error_code(c.post(&url).json(&bad).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST")
    );
}

#[tokio::test]
async fn ttl_expires_values_and_rejects_bad_ttls() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    let items = json!([{"key": "ttl", "value": 1, "metadata": {"ttlInSeconds": "1"}}]);
    assert_eq!(
        c.post(state_url(&p, ""))
            .json(&items)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = c.get(state_url(&p, "/ttl")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("metadata.ttlExpireTime").is_some());
    eventually!(
        Duration::from_secs(5),
        c.get(state_url(&p, "/ttl")).send().await.unwrap().status() == StatusCode::NO_CONTENT,
        "the value did not expire"
    );
    for bad in ["abc", "-5", "1.5"] {
        let items = json!([{"key": "ttl", "value": 1, "metadata": {"ttlInSeconds": bad}}]);
        let (status, code, _) =
            error_code(c.post(state_url(&p, "")).json(&items).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "ERR_STATE_SAVE"),
            "{bad}"
        );
    }
    // Also accepted as a query parameter on GET-style metadata.
    let r = c
        .get(state_url(
            &p,
            "/ttl?metadata.partitionKey=x&consistency=strong",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let (p, _r) = in_memory().await;
    let c = Client::new();
    let cases: &[(&str, &str)] = &[
        ("{not json", "ERR_MALFORMED_REQUEST"),
        (r#"{"key":"a"}"#, "ERR_MALFORMED_REQUEST"),
        (r#"[{"key":5,"value":1}]"#, "ERR_MALFORMED_REQUEST"),
        (r#"[{"value":1}]"#, "ERR_MALFORMED_REQUEST"),
        (r#"[{"key":"a||b","value":1}]"#, "ERR_MALFORMED_REQUEST"),
        (
            r#"[{"key":"ok","value":1},{"key":"","value":1}]"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"[{"key":"ok","value":1,"options":{"concurrency":"sometimes"}}]"#,
            "ERR_MALFORMED_REQUEST",
        ),
    ];
    for (body, want) in cases {
        let r = c
            .post(state_url(&p, ""))
            .header("content-type", "application/json")
            .body(*body)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, *want),
            "{body}"
        );
    }
    // The valid first item of a refused request was not saved.
    assert_eq!(
        c.get(state_url(&p, "/ok")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    let r = c
        .get(format!("{}/v1.0/state/nostore/k", p.http_url()))
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND")
    );
    assert_eq!(body["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");

    let r = c
        .get(format!("{}/v1.0/unknown/path", p.http_url()))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "ERR_DIRECT_INVOKE")
    );
}

#[tokio::test]
async fn no_store_configured_is_500() {
    let res = ResourcesDir::new();
    let p = sidecar_with(&res).await;
    let r = Client::new().get(state_url(&p, "/k")).send().await.unwrap();
    let (status, code, body) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_STORE_NOT_CONFIGURED"
        )
    );
    assert_eq!(body["details"][0]["reason"], "DAPR_STATE_NOT_CONFIGURED");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_save_nothing() {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--dapr-http-max-request-size", "1"])
        .start()
        .await;
    let big = "x".repeat(1_100_000);
    let body = json!([{"key": "small", "value": 1}, {"key": "big", "value": big}]);
    let c = Client::new();
    let (status, code, _) =
        error_code(c.post(state_url(&p, "")).json(&body).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "ERR_BODY_TOO_LARGE")
    );
    assert_eq!(
        c.get(state_url(&p, "/small"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    // Just under the limit is fine.
    let fits = json!([{"key": "fits", "value": "y".repeat(1_000_000)}]);
    assert_eq!(
        c.post(state_url(&p, ""))
            .json(&fits)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn metadata_lists_components_and_takes_attributes() {
    let res = ResourcesDir::new().with(
        "store.yaml",
        &component(
            "statestore",
            "state.in-memory",
            &[("actorStateStore", "true")],
        ),
    );
    let p = sidecar_with(&res).await;
    let c = Client::new();
    let r = c
        .put(format!("{}/v1.0/metadata/owner", p.http_url()))
        .body("team-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let m: Value = c
        .get(format!("{}/v1.0/metadata", p.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["id"], "test-app");
    assert!(m["runtimeVersion"].is_string());
    assert_eq!(m["extended"]["owner"], "team-a");
    let comp = &m["components"][0];
    assert_eq!(
        (
            comp["name"].as_str(),
            comp["type"].as_str(),
            comp["version"].as_str()
        ),
        (Some("statestore"), Some("state.in-memory"), Some("v1"))
    );
    let caps: Vec<&str> = comp["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for want in ["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API", "ACTOR"] {
        assert!(caps.contains(&want), "{want} missing from {caps:?}");
    }
}

#[tokio::test]
async fn api_token_is_required_except_for_health() {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .env("DAPR_API_TOKEN", "s3cret")
        .start()
        .await;
    let c = Client::new();
    let r = c.get(state_url(&p, "/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(state_url(&p, "/k"))
        .header("dapr-api-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(state_url(&p, "/k"))
        .header("dapr-api-token", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(format!("{}/v1.0/healthz", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(format!("{}/v1.0/metadata", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let (p, _r) = in_memory().await;
    let c = Client::builder().http2_prior_knowledge().build().unwrap();
    let r = c
        .post(state_url(&p, ""))
        .json(&json!([{"key": "h2", "value": 2}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(state_url(&p, "/h2"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "2"
    );
}

#[tokio::test]
async fn key_prefixes_isolate_apps_on_a_shared_sqlite_file() {
    let db = tempfile::tempdir().unwrap();
    let file = db.path().join("shared.db").display().to_string();
    let res = ResourcesDir::new()
        .with(
            "a.yaml",
            &component("statestore", "state.sqlite", &[("connectionString", &file)]),
        )
        .with(
            "b.yaml",
            &component(
                "shared",
                "state.sqlite",
                &[("connectionString", &file), ("keyPrefix", "name")],
            ),
        );
    let a = MechaProcess::builder(MECHA)
        .app_id("app-a")
        .resources(res.path())
        .start()
        .await;
    let b = MechaProcess::builder(MECHA)
        .app_id("app-b")
        .resources(res.path())
        .start()
        .await;
    let c = Client::new();
    c.post(state_url(&a, ""))
        .json(&json!([{"key": "k", "value": "from-a"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get(state_url(&a, "/k"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "\"from-a\""
    );
    assert_eq!(
        c.get(state_url(&b, "/k")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let shared = |p: &MechaProcess| format!("{}/v1.0/state/shared", p.http_url());
    c.post(shared(&a))
        .json(&json!([{"key": "s", "value": "both"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get(format!("{}/s", shared(&b)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "\"both\""
    );
}
