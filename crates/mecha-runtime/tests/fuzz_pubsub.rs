//! Bounded-time fuzzing of the pub/sub event handling: building the CloudEvent envelope from
//! untrusted bytes and content types, reading events back (`is_expired`, `data_bytes`), and
//! compiling and evaluating routing rules (CEL) written by users over events sent by anyone.
//! None of it may panic or hang.
//!
//! Inputs come from a fixed seed so CI runs the same cases every time; set
//! `MECHA_FUZZ_SEED` (a number) to explore others and `MECHA_FUZZ_CASES` to run more.
//! Failures are not persisted to files.

// Test helpers may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use mecha_runtime::pubsub::cloudevent::{self, CLOUDEVENT_CONTENT_TYPE, Context};
use mecha_runtime::pubsub::routing::Router;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};

/// The input being tried, shown when a case hangs.
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// The longest one test may run before it counts as a hang.
const HANG_LIMIT: Duration = Duration::from_secs(60);

fn seed() -> u64 {
    std::env::var("MECHA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d65_6368_615f_7073)
}

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("MECHA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 10_000,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed().to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn remember(input: &dyn std::fmt::Debug) {
    if let Ok(mut c) = CURRENT.lock() {
        *c = format!("{input:?}");
    }
}

/// Runs `body` on a thread and fails when it does not finish within [`HANG_LIMIT`], naming
/// the input that was being tried.
fn bounded(name: &str, body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            body();
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = handle.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let input = CURRENT.lock().map(|s| s.clone()).unwrap_or_default();
            panic!(
                "{name} did not finish within {HANG_LIMIT:?} (seed {}); last input:\n{input}",
                seed()
            );
        }
    }
}

fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

// === strategies ===

fn content_type() -> impl Strategy<Value = Option<String>> {
    let known = prop::sample::select(
        &[
            "application/cloudevents+json",
            "Application/CloudEvents+JSON; charset=utf-8",
            " application/cloudevents+json ",
            "application/json",
            "application/json; charset=utf-8",
            "text/json",
            "application/vnd.api+json",
            "text/plain",
            "application/octet-stream",
            "application/x-protobuf",
            "image/png",
            "audio/ogg",
            "video/mp4",
            "application/grpc",
            "",
            " ",
            ";",
            "+json",
            "application/cloudevents+json;",
            ";application/cloudevents+json",
        ][..],
    )
    .prop_map(str::to_owned);
    prop_oneof![
        1 => Just(None),
        4 => known.prop_map(Some),
        2 => any::<String>().prop_map(Some),
        1 => "[a-zA-Z/+;= -]{0,30}".prop_map(Some),
    ]
}

/// A scalar of any JSON type.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(
            &[
                "",
                "widget",
                "1.0",
                "com.dapr.event.sent",
                "2000-01-01T00:00:00Z",
                "2999-12-31T23:59:59.999Z",
                "9999-99-99T99:99:99Z",
                "+275760-09-13T00:00:00Z",
                "1970-01-01T00:00:00+25:00",
                "aGVsbG8=",
                "!!!",
                "====",
                "a",
            ][..]
        )
        .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(
            &[
                "id", "source", "type", "specversion", "datacontenttype", "data",
                "data_base64", "topic", "pubsubname", "time", "expiration", "subject",
                "traceparent", "traceid", "tracestate", "price", "items", "name",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => "[a-z_][a-z0-9_]{0,6}",
        1 => any::<String>(),
    ]
}

/// A CloudEvent-like map: the usual fields with values of any type.
fn event() -> impl Strategy<Value = Map<String, Value>> {
    let base64 = prop::collection::vec(any::<u8>(), 0..32)
        .prop_map(|b| Value::from(base64::engine::general_purpose::STANDARD.encode(b)));
    (
        prop::collection::btree_map(field(), value(), 0..8),
        prop::option::of(prop_oneof![base64, scalar()]),
        prop::option::of(scalar()),
    )
        .prop_map(|(m, b64, exp)| {
            let mut m: Map<String, Value> = m.into_iter().collect();
            if let Some(b) = b64 {
                m.insert("data_base64".into(), b);
            }
            if let Some(e) = exp {
                m.insert("expiration".into(), e);
            }
            m
        })
}

fn publish_metadata() -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop_oneof![
        prop::sample::select(
            &[
                "ttlInSeconds",
                "cloudevent.id",
                "cloudevent.source",
                "cloudevent.type",
                "cloudevent.traceparent",
                "cloudevent.tracestate",
                "cloudevent.subject",
                "cloudevent.data",
                "cloudevent.",
                "rawPayload",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let val = prop_oneof![
        "-?[0-9]{1,25}",
        Just(u64::MAX.to_string()),
        Just(i64::MAX.to_string()),
        any::<String>(),
    ];
    prop::collection::hash_map(key, val, 0..4)
}

/// A payload: random bytes, or JSON of any shape, or almost-JSON.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        event().prop_map(|e| serde_json::to_vec(&e).unwrap()),
        (event(), any::<prop::sample::Index>()).prop_map(|(e, i)| {
            let mut b = serde_json::to_vec(&e).unwrap();
            b.truncate(i.index(b.len() + 1));
            b
        }),
        prop::sample::select(
            &[
                "1e999999",
                "-0",
                "123456789012345678901234567890",
                "{\"a\":1}{",
                "[]",
                "null",
                "\"x\"",
                "{\"id\":null,\"source\":\"\"}",
                "\u{feff}{}",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// A CEL-ish expression over `event`: mostly well-formed with odd operands (overflowing
/// arithmetic, division by zero, type mismatches, deep member access, macros), sometimes
/// raw token soup.
fn cel_expr() -> impl Strategy<Value = String> {
    let member = prop::collection::vec(
        prop_oneof![
            field().prop_filter("identifier", |f| f
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')),
            Just("['data']".to_owned()),
            Just("[0]".to_owned()),
        ],
        0..4,
    )
    .prop_map(|path| {
        let mut s = "event".to_owned();
        for p in path {
            if p.starts_with('[') {
                s.push_str(&p);
            } else {
                s.push('.');
                s.push_str(&p);
            }
        }
        s
    });
    let literal = prop_oneof![
        prop::sample::select(
            &[
                "0",
                "1",
                "-1",
                "9223372036854775807",
                "-9223372036854775808",
                "18446744073709551615u",
                "0u",
                "1.5",
                "-0.0",
                "1e308",
                "true",
                "false",
                "null",
                "\"\"",
                "\"widget\"",
                "b\"\\xff\"",
                "'\\u00e9'",
                "r\"\\d+\"",
                "[]",
                "{}",
                "[1, \"a\", null]",
                "{\"k\": 1}",
                "duration(\"1s\")",
                "timestamp(\"2000-01-01T00:00:00Z\")",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|i| i.to_string()),
        "\"[a-z.*+?()\\[\\]]{0,8}\"",
    ];
    let atom = prop_oneof![member, literal];
    atom.prop_recursive(5, 40, 3, |inner| {
        let bin = prop::sample::select(
            &[
                "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&&", "||", "in",
            ][..],
        );
        let method = prop::sample::select(
            &[
                "size",
                "startsWith",
                "endsWith",
                "contains",
                "matches",
                "exists",
                "all",
                "map",
                "filter",
                "exists_one",
            ][..],
        );
        let func = prop::sample::select(
            &[
                "size",
                "has",
                "int",
                "uint",
                "double",
                "string",
                "bytes",
                "timestamp",
                "duration",
                "type",
                "dyn",
                "max",
                "min",
            ][..],
        );
        prop_oneof![
            (inner.clone(), bin, inner.clone()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("!{a}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("{c} ? {a} : {b}")),
            (inner.clone(), method, inner.clone()).prop_map(|(a, m, b)| match m {
                "exists" | "all" | "map" | "filter" | "exists_one" => format!("{a}.{m}(x, {b})"),
                "size" => format!("{a}.size()"),
                _ => format!("{a}.{m}({b})"),
            }),
            (func, prop::collection::vec(inner.clone(), 1..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            prop::collection::vec(inner, 0..3).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    })
}

fn cel_soup() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "event", ".", "data", "type", "(", ")", "[", "]", "{", "}", "\"", "'", "==", "!", "&&",
        "||", "?", ":", ",", "1", "-", "u", "b", "r", "\"\"\"", "'''", "\\", "has", "size", " ",
        "\n", "in", "e", "x", "0x", "é", "🦀",
    ];
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.concat())
}

fn rules() -> impl Strategy<Value = Vec<(String, String)>> {
    let expr = prop_oneof![
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        6 => cel_expr(),
        2 => cel_soup(),
        1 => any::<String>(),
    ];
    prop::collection::vec((expr, "/?[a-z]{0,6}"), 0..4)
}

// === tests ===

#[test]
fn envelope_never_panics_and_keeps_its_promises() {
    bounded("envelope_never_panics_and_keeps_its_promises", || {
        let strategy = (
            payload(),
            content_type(),
            publish_metadata(),
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
        );
        runner(2000)
            .run(&strategy, |(data, ct, md, tp, ts)| {
                remember(&(&data, &ct, &md, &tp, &ts));
                let ctx = Context {
                    app_id: "pub",
                    pubsub: "ps",
                    topic: "orders",
                    traceparent: tp.as_deref(),
                    tracestate: ts.as_deref(),
                    metadata: &md,
                };
                let out = cloudevent::envelope(&data, ct.as_deref(), &ctx);
                let is_ce = ct
                    .as_deref()
                    .is_some_and(|c| media_type(c) == CLOUDEVENT_CONTENT_TYPE);
                let is_object =
                    matches!(serde_json::from_slice::<Value>(&data), Ok(Value::Object(_)));
                if is_ce {
                    prop_assert_eq!(out.is_ok(), is_object, "{:?}", out);
                } else {
                    prop_assert!(out.is_ok(), "{:?}", out);
                }
                let Ok(out) = out else { return Ok(()) };
                let Ok(Value::Object(ce)) = serde_json::from_slice::<Value>(&out) else {
                    return Err(TestCaseError::fail("the envelope is not a JSON object"));
                };
                prop_assert_eq!(ce.get("topic"), Some(&Value::from("orders")));
                prop_assert_eq!(ce.get("pubsubname"), Some(&Value::from("ps")));
                for f in ["id", "source", "type", "specversion", "time"] {
                    prop_assert!(ce.contains_key(f), "no {} in {:?}", f, ce);
                }
                let ttl: Option<u64> = md
                    .get("ttlInSeconds")
                    .and_then(|t| t.trim().parse().ok())
                    .filter(|t| *t > 0);
                // Within a sane range (ten years) the event must not be born expired.
                if ttl.is_some_and(|t| t < 10 * 365 * 86_400) {
                    prop_assert!(
                        !cloudevent::is_expired(&ce),
                        "expired: {:?}",
                        ce.get("expiration")
                    );
                }
                if !is_ce && !ct.as_deref().is_some_and(cloudevent::is_json) {
                    // Text and binary payloads come back byte for byte.
                    prop_assert_eq!(cloudevent::data_bytes(&ce), data);
                }
                let _ = cloudevent::is_expired(&ce);
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn reading_events_never_panics() {
    bounded("reading_events_never_panics", || {
        runner(3000)
            .run(&event(), |ce| {
                remember(&ce);
                let expired = cloudevent::is_expired(&ce);
                if !matches!(ce.get("expiration"), Some(Value::String(_))) {
                    prop_assert!(!expired);
                }
                let bytes = cloudevent::data_bytes(&ce);
                if let Some(Value::String(s)) = ce.get("data")
                    && !matches!(ce.get("data_base64"), Some(Value::String(_)))
                {
                    prop_assert_eq!(bytes, s.as_bytes().to_vec());
                }
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn routing_rules_compile_or_fail_and_route_without_panicking() {
    bounded(
        "routing_rules_compile_or_fail_and_route_without_panicking",
        || {
            let strategy = (rules(), prop::collection::vec(event(), 1..4));
            runner(1500)
                .run(&strategy, |(rules, events)| {
                    remember(&(&rules, &events));
                    let Ok(router) = Router::new(&rules) else {
                        // Refused: some non-empty expression must be at fault.
                        prop_assert!(rules.iter().any(|(e, _)| !e.trim().is_empty()));
                        return Ok(());
                    };
                    let paths: Vec<&str> = router.paths().collect();
                    prop_assert_eq!(paths.len(), rules.len());
                    let first_default = rules.iter().position(|(e, _)| e.trim().is_empty());
                    for e in &events {
                        let routed = router.route(e);
                        if let Some(p) = routed {
                            prop_assert!(paths.contains(&p));
                        }
                        if first_default.is_some() {
                            prop_assert!(routed.is_some(), "a default route always matches");
                        }
                        if first_default == Some(0) {
                            prop_assert_eq!(routed, Some(rules[0].1.as_str()));
                        }
                    }
                    Ok(())
                })
                .unwrap();
        },
    );
}

#[test]
fn hostile_routing_expressions_are_handled_in_bounded_time() {
    bounded(
        "hostile_routing_expressions_are_handled_in_bounded_time",
        || {
            let big_list = format!("[{}]", vec!["1"; 10_000].join(","));
            let inputs = [
            "(".repeat(10) + "true" + &")".repeat(10),
            "!".repeat(10_000) + "true",
            "-".repeat(10_000) + "1",
            "event".to_owned() + &".a".repeat(1_000),
            "[".repeat(10),
            "true && ".repeat(5_000) + "true",
            "event.type == \"a\" || ".repeat(300) + "false",
            "1 + ".repeat(40) + "1",
            "9223372036854775807 + 1 > 0".to_owned(),
            "-9223372036854775808 - 1 < 0".to_owned(),
            "-9223372036854775808 / -1 == 0".to_owned(),
            "-9223372036854775808 % -1 == 0".to_owned(),
            "9223372036854775807 * 2 > 0".to_owned(),
            "18446744073709551615u + 1u > 0u".to_owned(),
            "0u - 1u > 0u".to_owned(),
            "1 / 0 == 0".to_owned(),
            "1 % 0 == 0".to_owned(),
            "event.data.price / 0 > 1".to_owned(),
            "int(1e308) > 0".to_owned(),
            "uint(-1) > 0u".to_owned(),
            "int(18446744073709551615u) > 0".to_owned(),
            "duration(\"9999999999999999999h\") > duration(\"1s\")".to_owned(),
            "timestamp(\"9999-12-31T23:59:59Z\") + duration(\"87600h\") > timestamp(\"2000-01-01T00:00:00Z\")".to_owned(),
            "\"a\".matches(\"(a*)*b\")".to_owned(),
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\".matches(\"(a+)+$\")".to_owned(),
            "\"x\".matches(\"[\")".to_owned(),
            format!("{big_list}.map(x, x * 2).size() > 0"),
            format!("{big_list}.exists(x, x == event.data.price)"),
            "size(event) >= 0".to_owned(),
            "event[\"data\"][0][\"x\"] == 1".to_owned(),
        ];
            let events = [
                Map::new(),
                serde_json::json!({"type": "widget", "data": {"price": 500, "items": [1, 2]}})
                    .as_object()
                    .cloned()
                    .unwrap(),
                serde_json::json!({"data": [{"x": 1}], "price": u64::MAX})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ];
            for expr in inputs {
                remember(&expr);
                let started = std::time::Instant::now();
                if let Ok(router) = Router::new(&[(expr.clone(), "/p".to_owned())]) {
                    for e in &events {
                        let _ = router.route(e);
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "took {:?} on {}…",
                    started.elapsed(),
                    &expr[..expr.len().min(80)]
                );
            }
        },
    );
}

/// Nesting in a routing rule is refused or compiled, never a crash: the sidecar compiles
/// rules on a runtime worker thread, whose stack is the default 2 MiB used here.
#[test]
fn deeply_nested_routing_expressions_do_not_overflow_the_stack() {
    let cases = [
        ("parentheses", "(".repeat(64) + "true" + &")".repeat(64)),
        ("lists", "[".repeat(64) + &"]".repeat(64)),
        ("unclosed brackets", "[".repeat(64)),
        ("an addition chain", "1 + ".repeat(200) + "1 > 0"),
        ("a member chain", "event".to_owned() + &".a".repeat(5_000)),
    ];
    for (what, expr) in cases {
        let handle = std::thread::Builder::new()
            .name(what.to_owned())
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                if let Ok(router) = Router::new(&[(expr, "/p".to_owned())]) {
                    let _ = router.route(&Map::new());
                }
            })
            .unwrap();
        assert!(handle.join().is_ok(), "{what}");
    }
}
