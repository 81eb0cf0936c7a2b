//! Bounded-time fuzzing of the HTTP API of the real binary: a few hundred random requests
//! (methods, paths built from the real route prefixes with odd and percent-encoded segments,
//! `metadata.*` query parameters, headers, invalid or extreme JSON bodies) over one keep-alive
//! connection pool. Every answer must be a well-formed HTTP response, error bodies in JSON
//! must carry an `errorCode`, and the sidecar must stay healthy and alive.
//!
//! Inputs come from a fixed seed so CI runs the same cases every time; set
//! `MECHA_FUZZ_SEED` (a number) to explore others and `MECHA_FUZZ_CASES` to run more.

use std::sync::Mutex;
use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, component, in_memory_store};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reqwest::{Client, Method};
use serde_json::Value;

use crate::MECHA;

/// The longest one request may take before it counts as a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn seed() -> u64 {
    std::env::var("MECHA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d65_6368_615f_6170)
}

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("MECHA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 20_000,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed().to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// One generated request.
#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

// === strategies ===

const PREFIXES: &[&str] = &[
    "/v1.0/state/statestore",
    "/v1.0/state/statestore/key",
    "/v1.0/publish/pubsub/orders",
    "/v1.0/bindings/missing",
    "/v1.0-alpha1/lock/statestore",
    "/v1.0-alpha1/unlock/statestore",
    "/v1.0/secrets/missing/key",
    "/v1.0/metadata/key",
    "/v1.0/state/missing",
    "/v1.0/state",
    "/v1.0-alpha1/state/statestore/query",
    "/v1.0/publish/pubsub",
    "/v1.0/publish/missing",
    "/v1.0/publish/bulk/pubsub",
    "/v1.0-alpha1/publish/bulk/pubsub",
    "/v1.0/invoke/test-app/method",
    "/v1.0/invoke/other-app/method",
    "/v1.0/invoke",
    "/v1.0/bindings",
    "/v1.0-alpha1/lock",
    "/v1.0-alpha1/unlock",
    "/v1.0/metadata",
    "/v1.0/secrets",
    "/v1.0/configuration",
    "/v1.0-alpha1/configuration",
    "/v1.0/healthz",
    "/v1.0",
    "/v1.0-alpha1",
    "",
];

const SEGMENTS: &[&str] = &[
    "statestore",
    "pubsub",
    "key",
    "orders",
    "bulk",
    "query",
    "subscribe",
    "unsubscribe",
    "method",
    "test-app",
    "other-app",
    "..",
    ".",
    "",
    "%2F",
    "%2f..%2f",
    "%00",
    "%ZZ",
    "%",
    "%E9",
    "%C3%A9",
    "%F0%9F%A6%80",
    "%FF%FE",
    "a%20b",
    "a+b",
    "||",
    "%7C%7C",
    "*",
    "{key}",
    "%7Bkey%7D",
    "outbound",
    "a;b=c",
    "~",
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(SEGMENTS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._~-]{1,12}",
        1 => prop::collection::vec(any::<u8>(), 1..12).prop_map(|b| percent(&b)),
    ]
}

fn percent(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(PREFIXES),
        prop_oneof![Just(Vec::new()), prop::collection::vec(segment(), 1..4)],
    )
        .prop_map(|(p, segs)| {
            let mut s = p.to_owned();
            for seg in segs {
                s.push('/');
                s.push_str(&seg);
            }
            if s.is_empty() { "/".to_owned() } else { s }
        })
        // Stopping the sidecar is not a parsing question.
        .prop_filter("not shutdown", |p| !p.contains("shutdown"))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => prop::sample::select(&[Method::GET, Method::POST, Method::PUT, Method::DELETE][..]),
        1 => prop::sample::select(
            &[Method::PATCH, Method::HEAD, Method::OPTIONS, Method::TRACE][..]
        ),
        1 => "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)),
    ]
}

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "0",
                "-1",
                "1e999999",
                "-1e999999",
                "123456789012345678901234567890",
                "18446744073709551616",
                "9223372036854775808",
                "-9223372036854775809",
                "1.5",
                "NaN",
                "Infinity",
                "0x10",
                "",
                " 5 ",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|i| i.to_string()),
    ]
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        prop::sample::select(
            &[
                "metadata.ttlInSeconds",
                "metadata.rawPayload",
                "metadata.contentType",
                "metadata.partitionKey",
                "metadata.",
                "metadata",
                "consistency",
                "concurrency",
                "appid",
                "raw",
            ][..]
        )
        .prop_map(str::to_owned),
        "metadata\\.[a-zA-Z]{0,8}",
        any::<String>(),
    ];
    let value = prop_oneof![
        number_text(),
        prop::sample::select(&["true", "false", "strong", "eventual", "first-write"][..])
            .prop_map(str::to_owned),
        any::<String>(),
    ];
    prop::collection::vec((key, value), 0..4)
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let content_type = prop::sample::select(
        &[
            "application/json",
            "application/json; charset=utf-8",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "text/plain",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
            ";;;",
            "application/",
        ][..],
    )
    .prop_map(|v| ("content-type".to_owned(), v.as_bytes().to_vec()));
    let app_id = prop::sample::select(&["test-app", "other-app", "", " ", "a.b", "x..y"][..])
        .prop_map(|v| ("dapr-app-id".to_owned(), v.as_bytes().to_vec()));
    let known = (
        prop::sample::select(
            &[
                "traceparent",
                "tracestate",
                "if-match",
                "dapr-api-token",
                "grpc-trace-bin",
                "accept",
                "accept-encoding",
                "expect",
                "transfer-encoding-x",
                "metadata.ttlInSeconds",
            ][..],
        ),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(k, v)| (k.to_owned(), v));
    let random = (
        "[a-z][a-z0-9-]{0,10}",
        prop::collection::vec(any::<u8>(), 0..20),
    );
    prop::collection::vec(prop_oneof![content_type, app_id, known, random], 0..4)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    let field = prop::sample::select(
        &[
            "key",
            "value",
            "etag",
            "options",
            "metadata",
            "concurrency",
            "consistency",
            "operations",
            "operation",
            "request",
            "keys",
            "parallelism",
            "filter",
            "sort",
            "page",
            "limit",
            "token",
            "resourceId",
            "lockOwner",
            "expiryInSeconds",
            "entryId",
            "event",
            "contentType",
            "data",
            "ttlInSeconds",
            "id",
            "type",
            "specversion",
        ][..],
    )
    .prop_map(str::to_owned);
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(field.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Some),
        4 => json_value().prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        // Valid JSON with a number no machine type holds, in place of a scalar.
        2 => (json_value(), number_text()).prop_map(|(v, n)| {
            let text = serde_json::to_string(&v).unwrap();
            Some(text.replacen("null", &n, 1).replacen("true", &n, 1).into_bytes())
        }),
        1 => (json_value(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let mut b = serde_json::to_vec(&v).unwrap();
            b.truncate(i.index(b.len() + 1));
            Some(b)
        }),
        1 => (1usize..3000).prop_map(|n| Some(format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes())),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (method(), path(), query(), headers(), body()).prop_map(
        |(method, path, query, headers, body)| Req {
            method,
            path,
            query,
            headers,
            body,
        },
    )
}

// === the test ===

/// What was seen, for the summary printed at the end.
#[derive(Default)]
struct Seen {
    by_status: std::collections::BTreeMap<u16, usize>,
    /// Error answers whose body is not JSON: (status, method, path, content type).
    non_json_errors: Vec<String>,
    /// 5xx answers: (status, method, path, errorCode).
    server_errors: Vec<String>,
}

async fn send(client: &Client, base: &str, r: &Req, seen: &Mutex<Seen>) -> Result<(), String> {
    let mut url = reqwest::Url::parse(&format!("{base}{}", r.path))
        .map_err(|e| format!("cannot build the URL: {e}"))?;
    if !r.query.is_empty() {
        url.query_pairs_mut().extend_pairs(r.query.iter());
    }
    let mut rb = client.request(r.method.clone(), url);
    for (k, v) in &r.headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(v),
        ) {
            rb = rb.header(name, value);
        }
    }
    if let Some(b) = &r.body {
        rb = rb.body(b.clone());
    }
    let res = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let res = rb.send().await?;
        let status = res.status();
        let ct = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = res.bytes().await?;
        Ok::<_, reqwest::Error>((status, ct, body))
    })
    .await
    .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    .map_err(|e| format!("not a well-formed HTTP answer: {e:?}"))?;
    let (status, ct, body) = res;
    let code = status.as_u16();
    if !(100..600).contains(&code) {
        return Err(format!("status {code}"));
    }
    let mut seen = seen.lock().map_err(|e| e.to_string())?;
    *seen.by_status.entry(code).or_default() += 1;
    if code >= 400 {
        let json = ct.contains("json") || body.first() == Some(&b'{');
        let mut error_code = String::new();
        if json && !body.is_empty() {
            let v: Value = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "a {code} answer announced as JSON does not parse: {e}: {:?}",
                    String::from_utf8_lossy(&body)
                )
            })?;
            error_code = v
                .get("errorCode")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| format!("a {code} JSON answer has no errorCode: {v}"))?
                .to_owned();
        } else if !(r.method == Method::HEAD && body.is_empty()) {
            seen.non_json_errors.push(format!(
                "{code} {} {} ({ct:?}, {:?})",
                r.method,
                r.path,
                String::from_utf8_lossy(&body[..body.len().min(80)])
            ));
        }
        if code >= 500 {
            seen.server_errors
                .push(format!("{code} {} {} {error_code}", r.method, r.path));
        }
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[test]
fn random_requests_get_well_formed_answers_and_the_sidecar_survives() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let resources = ResourcesDir::new()
        .with("store.yaml", &in_memory_store("statestore"))
        .with("ps.yaml", &component("pubsub", "pubsub.in-memory", &[]));
    let p: MechaProcess = rt.block_on(
        MechaProcess::builder(MECHA)
            .resources(resources.path())
            .start(),
    );
    let base = p.http_url();
    let client = Client::builder()
        .pool_max_idle_per_host(4)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let seen = Mutex::new(Seen::default());
    let outcome = runner(600).run(&request(), |r| {
        rt.block_on(send(&client, &base, &r, &seen))
            .map_err(TestCaseError::fail)
    });
    let log = p.log();
    if let Err(e) = outcome {
        panic!("{e}\n---- mecha log ----\n{log}");
    }
    let seen = seen.into_inner().unwrap();
    eprintln!("Answers by status: {:?}", seen.by_status);
    for e in &seen.non_json_errors {
        eprintln!("Error answer without a JSON body: {e}");
    }
    for e in &seen.server_errors {
        eprintln!("Server error: {e}");
    }

    let health = rt
        .block_on(async {
            client
                .get(format!("{base}/v1.0/healthz/outbound"))
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
        })
        .unwrap();
    assert_eq!(health.status().as_u16(), 204);
    assert!(alive(p.pid()), "the sidecar process is gone:\n{log}");
    assert!(!log.contains("panicked"), "the sidecar panicked:\n{log}");
}
