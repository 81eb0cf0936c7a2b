//! Bounded-time fuzzing of the resource loader: `Resource::parse` on untrusted YAML must
//! return `Ok` or `Err` — never panic, never hang — and the typed accessors of what it
//! returns (`secret_scopes`, `rules`, `in_scope`…) must not panic either.
//!
//! Inputs come from a fixed seed so CI runs the same cases every time; set
//! `MECHA_FUZZ_SEED` (a number) to explore others and `MECHA_FUZZ_CASES` to run more.
//! Failures are not persisted to files.

// Test helpers may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use mecha_core::resource::Resource;
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
        .unwrap_or(0x6d65_6368_615f_7265)
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

/// Runs `body` on a thread and fails when it does not finish within [`HANG_LIMIT`], naming
/// the input that was being parsed.
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
            // The body panicked: re-raise its message.
            if let Err(e) = handle.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let input = CURRENT.lock().map(|s| s.clone()).unwrap_or_default();
            panic!(
                "{name} did not finish within {HANG_LIMIT:?} (seed {}); last input:\n{input:?}",
                seed()
            );
        }
    }
}

/// Parses `text` and exercises every accessor of the result. Returns the result so callers
/// can check more.
fn parse_and_use(text: &str) -> Result<Vec<Resource>, String> {
    if let Ok(mut c) = CURRENT.lock() {
        c.clear();
        c.push_str(text);
    }
    let out = Resource::parse(text, Path::new("fuzz.yaml"));
    match &out {
        Ok(resources) => {
            for r in resources {
                use_resource(r);
            }
        }
        Err(e) => {
            // The message names the file.
            assert!(e.to_string().contains("fuzz.yaml"), "{e}");
        }
    }
    out.map_err(|e| e.to_string())
}

fn use_resource(r: &Resource) {
    match r {
        Resource::Component(c) => {
            assert!(!c.name.trim().is_empty());
            assert!(!c.component_type.is_empty() && !c.version.is_empty());
            let _ = c.type_and_version();
            let _ = c.in_scope("app");
        }
        Resource::Configuration(c) => {
            if let Ok(scopes) = c.secret_scopes() {
                for s in scopes {
                    let _ = s.allows("secret");
                    let _ = s.allows("");
                }
            }
        }
        Resource::Subscription(s) => {
            assert!(!s.spec.pubsubname.trim().is_empty() && !s.spec.topic.trim().is_empty());
            assert!(!s.spec.rules().is_empty());
            let _ = s.spec.raw_payload();
        }
        Resource::Resiliency(r) | Resource::HttpEndpoint(r) => {
            assert!(r.spec.is_object());
            let _ = r.in_scope("app");
        }
        Resource::Other { .. } => {}
    }
}

// === strategies ===

/// YAML fragments: syntax, anchors and aliases, tags, directives, odd scalars and the field
/// names the loader looks at.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "-",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!!str ",
    "!!int ",
    "!!map ",
    "!!binary ",
    "!custom ",
    "!<tag:x> ",
    "---\n",
    "...\n",
    "'",
    "''",
    "\"",
    "\\u00",
    "\\x",
    "#",
    "|",
    "|-",
    ">",
    ">+",
    "? ",
    "~",
    "null",
    "true",
    "no",
    "0x1F",
    "0o17",
    "1e999",
    "-.inf",
    ".nan",
    "12345678901234567890123",
    "%YAML 1.2\n",
    "%TAG ! tag:x:\n",
    "apiVersion",
    "dapr.io/v1alpha1",
    "dapr.io/v2alpha1",
    "kind",
    "Component",
    "Configuration",
    "Subscription",
    "Resiliency",
    "HTTPEndpoint",
    "metadata",
    "name",
    "spec",
    "type",
    "version",
    "scopes",
    "secrets",
    "routes",
    "rules",
    "match",
    "path",
    "default",
    "pubsubname",
    "topic",
    "secretKeyRef",
    "envRef",
    "value",
    "storeName",
    "defaultAccess",
    "\u{feff}",
    "\u{0}",
    "\r\n",
    "é",
    "🦀",
];

fn yaml_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

/// A scalar of any JSON type, biased towards the shapes YAML treats specially.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9._/:-]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        prop::sample::select(&["", " ", "allow", "deny", "ALLOW", "true", "v1", "-", "null"][..])
            .prop_map(|s| Value::String(s.to_owned())),
    ]
}

/// Any JSON value, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A mapping key: one the loader reads, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(
            &[
                "name", "value", "type", "version", "metadata", "spec", "scopes", "secrets",
                "storeName", "defaultAccess", "allowedSecrets", "deniedSecrets", "secretKeyRef",
                "envRef", "key", "ignoreErrors", "initTimeout", "route", "routes", "rules",
                "match", "path", "default", "pubsubname", "pubsubName", "topic",
                "deadLetterTopic", "bulkSubscribe", "enabled", "maxMessagesCount",
                "maxAwaitDurationMs", "policies", "targets", "baseUrl", "headers",
                "namespace", "auth", "secretStore",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_.-]{0,8}",
        1 => any::<String>(),
    ]
}

/// Either a value of the expected shape or a random one.
fn or_random(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![3 => good, 1 => value()].boxed()
}

fn name() -> impl Strategy<Value = Value> {
    "[a-z][a-z0-9-]{0,10}".prop_map(Value::String)
}

fn metadata_item() -> impl Strategy<Value = Value> {
    let plain = (name(), scalar()).prop_map(|(n, v)| obj(&[("name", n), ("value", v)]));
    let secret = (name(), or_random(name()), or_random(name())).prop_map(|(n, s, k)| {
        obj(&[
            ("name", n),
            ("secretKeyRef", obj(&[("name", s), ("key", k)])),
        ])
    });
    let env = (name(), or_random(name())).prop_map(|(n, e)| obj(&[("name", n), ("envRef", e)]));
    or_random(prop_oneof![plain, secret, env])
}

fn component_spec() -> impl Strategy<Value = Value> {
    (
        or_random("(state|pubsub|bindings|secretstores)\\.[a-z-]{1,8}".prop_map(Value::String)),
        or_random(Just(Value::from("v1"))),
        or_random(prop::collection::vec(metadata_item(), 0..4).prop_map(Value::Array)),
        or_random(any::<bool>().prop_map(Value::Bool)),
        or_random("[0-9]{1,3}(ms|s|m)".prop_map(Value::String)),
    )
        .prop_map(|(t, v, m, i, it)| {
            obj(&[
                ("type", t),
                ("version", v),
                ("metadata", m),
                ("ignoreErrors", i),
                ("initTimeout", it),
            ])
        })
}

fn secret_scope() -> impl Strategy<Value = Value> {
    let list = || or_random(prop::collection::vec(scalar(), 0..4).prop_map(Value::Array));
    (
        or_random(name()),
        or_random(
            prop::sample::select(&["allow", "deny", "Allow", "DENY", "", "maybe"][..])
                .prop_map(Value::from),
        ),
        list(),
        list(),
    )
        .prop_map(|(s, d, a, dn)| {
            obj(&[
                ("storeName", s),
                ("defaultAccess", d),
                ("allowedSecrets", a),
                ("deniedSecrets", dn),
            ])
        })
}

fn configuration_spec() -> impl Strategy<Value = Value> {
    (
        or_random(prop::collection::vec(or_random(secret_scope()), 0..4).prop_map(Value::Array)),
        prop::collection::btree_map(key(), value(), 0..3),
    )
        .prop_map(|(scopes, extra)| {
            let mut spec: Map<String, Value> = extra.into_iter().collect();
            spec.insert("secrets".into(), obj(&[("scopes", scopes)]));
            Value::Object(spec)
        })
}

fn cel_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("event.type == \"widget\"".to_owned()),
        Just("event.data.price > 100".to_owned()),
        "[a-z. =<>!&|()\"0-9]{0,30}",
    ]
}

fn subscription_spec() -> impl Strategy<Value = Value> {
    let rule = (
        or_random(cel_ish().prop_map(Value::String)),
        or_random(name()),
    )
        .prop_map(|(m, p)| obj(&[("match", m), ("path", p)]));
    let routes = (
        or_random(prop::collection::vec(or_random(rule), 0..4).prop_map(Value::Array)),
        or_random(name()),
    )
        .prop_map(|(r, d)| obj(&[("rules", r), ("default", d)]));
    let bulk = (scalar(), scalar(), scalar()).prop_map(|(e, m, a)| {
        obj(&[
            ("enabled", e),
            ("maxMessagesCount", m),
            ("maxAwaitDurationMs", a),
        ])
    });
    (
        or_random(name()),
        or_random(name()),
        or_random(name()),
        or_random(routes),
        or_random(name()),
        or_random(
            prop::collection::btree_map(key(), scalar(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ),
        or_random(bulk),
    )
        .prop_map(|(ps, t, r, rs, dl, md, b)| {
            obj(&[
                ("pubsubname", ps),
                ("topic", t),
                ("route", r),
                ("routes", rs),
                ("deadLetterTopic", dl),
                ("metadata", md),
                ("bulkSubscribe", b),
            ])
        })
}

/// A resource document: a plausible one of some kind, then fields dropped, replaced or added
/// at random.
fn document() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        prop::sample::select(
            &[
                "Component",
                "Configuration",
                "Subscription",
                "Resiliency",
                "HTTPEndpoint",
                "",
                "component",
                "Other",
            ][..]
        )
        .prop_map(Value::from),
        value(),
    ];
    let api_version = prop_oneof![
        prop::sample::select(&["dapr.io/v1alpha1", "dapr.io/v2alpha1", "dapr.io/", "v1", ""][..])
            .prop_map(Value::from),
        value(),
    ];
    let spec = prop_oneof![
        component_spec().boxed(),
        configuration_spec().boxed(),
        subscription_spec().boxed(),
        prop::collection::btree_map(key(), value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
        value().boxed(),
    ];
    let metadata = or_random(
        (or_random(name()), or_random(name()))
            .prop_map(|(n, ns)| obj(&[("name", n), ("namespace", ns)])),
    );
    let scopes = or_random(prop::collection::vec(scalar(), 0..3).prop_map(Value::Array));
    let auth = or_random(or_random(name()).prop_map(|s| obj(&[("secretStore", s)])));
    (
        api_version,
        kind,
        metadata,
        spec,
        scopes,
        auth,
        // Which top-level fields to drop.
        prop::collection::vec(any::<bool>(), 6),
        prop::collection::btree_map(key(), value(), 0..2),
    )
        .prop_map(|(a, k, m, s, sc, au, drop, extra)| {
            let mut doc: Map<String, Value> = extra.into_iter().collect();
            for (i, (field, v)) in [
                ("apiVersion", a),
                ("kind", k),
                ("metadata", m),
                ("spec", s),
                ("scopes", sc),
                ("auth", au),
            ]
            .into_iter()
            .enumerate()
            {
                // Keep the identifying fields more often than not.
                if !drop[i] || i < 2 && drop[(i + 3) % 6] {
                    doc.insert(field.to_owned(), v);
                }
            }
            Value::Object(doc)
        })
}

fn obj(fields: &[(&str, Value)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

// === YAML emission ===

/// How one document is written out.
#[derive(Clone, Copy, Debug)]
enum Style {
    /// Block style with plain scalars where safe.
    Block,
    /// JSON, which YAML 1.2 reads as flow style.
    Json,
}

fn emit(doc: &Value, style: Style) -> String {
    match style {
        Style::Json => flow(doc),
        Style::Block => {
            let mut out = String::new();
            block(doc, 0, &mut out);
            out
        }
    }
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&quote(k));
                out.push(':');
                nested(v, indent, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&pad);
                out.push('-');
                nested(v, indent, out);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Array(_) | Value::Object(_) => flow(v),
        other => other.to_string(),
    }
}

/// Flow style (JSON-like), every string double-quoted.
fn flow(v: &Value) -> String {
    match v {
        Value::String(s) => double_quoted(s),
        Value::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", double_quoted(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A plain scalar when it is obviously a string, a double-quoted one otherwise.
fn quote(s: &str) -> String {
    const SPECIAL: &[&str] = &["null", "true", "false", "yes", "no", "on", "off", "y", "n"];
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !SPECIAL.iter().any(|w| s.eq_ignore_ascii_case(w));
    if plain {
        s.to_owned()
    } else {
        double_quoted(s)
    }
}

/// A YAML double-quoted scalar in printable ASCII: everything else is escaped.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A mutation of the emitted text: cut, duplicated, or with a fragment spliced in.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    Truncate(prop::sample::Index),
    Splice(prop::sample::Index, &'static str),
    Duplicate(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        2 => (any::<prop::sample::Index>(), prop::sample::select(TOKENS))
            .prop_map(|(i, t)| Mutation::Splice(i, t)),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn mutate(text: &str, m: &Mutation) -> String {
    let boundary = |i: &prop::sample::Index| {
        let mut at = i.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match m {
        Mutation::None => text.to_owned(),
        Mutation::Truncate(i) => text[..boundary(i)].to_owned(),
        Mutation::Splice(i, t) => {
            let at = boundary(i);
            format!("{}{t}{}", &text[..at], &text[at..])
        }
        Mutation::Duplicate(a, b) => {
            let (a, b) = (boundary(a), boundary(b));
            let (lo, hi) = (a.min(b), a.max(b));
            format!("{}{}", &text[..hi], &text[lo..])
        }
    }
}

// === tests ===

#[test]
fn arbitrary_text_never_panics() {
    bounded("arbitrary_text_never_panics", || {
        let strategy = prop_oneof![any::<String>(), yaml_soup()];
        runner(1500)
            .run(&strategy, |text| {
                let _ = parse_and_use(&text);
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn mutated_resource_documents_never_panic() {
    bounded("mutated_resource_documents_never_panic", || {
        let docs = prop::collection::vec(
            (
                document(),
                prop_oneof![Just(Style::Block), Just(Style::Json)],
            ),
            1..4,
        );
        runner(600)
            .run(&(docs, mutation()), |(docs, m)| {
                let text = docs
                    .iter()
                    .map(|(d, s)| emit(d, *s))
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                let _ = parse_and_use(&mutate(&text, &m));
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn well_formed_documents_load_as_their_kind() {
    bounded("well_formed_documents_load_as_their_kind", || {
        let strategy = (
            name(),
            "(state|pubsub)\\.[a-z-]{1,8}",
            prop::collection::vec(metadata_item(), 0..4),
            prop_oneof![Just(Style::Block), Just(Style::Json)],
        );
        runner(300)
            .run(&strategy, |(n, t, md, style)| {
                let md: Vec<Value> = md
                    .into_iter()
                    .filter(|m| {
                        m.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| !n.is_empty())
                            && m.get("secretKeyRef").is_none_or(|r| {
                                r.is_null() || r.get("name").is_some_and(Value::is_string)
                            })
                    })
                    .collect();
                let doc = obj(&[
                    ("apiVersion", "dapr.io/v1alpha1".into()),
                    ("kind", "Component".into()),
                    ("metadata", obj(&[("name", n.clone())])),
                    (
                        "spec",
                        obj(&[
                            ("type", t.clone().into()),
                            ("version", "v1".into()),
                            ("metadata", Value::Array(md.clone())),
                        ]),
                    ),
                ]);
                let text = emit(&doc, style);
                let parsed = parse_and_use(&text)
                    .map_err(|e| TestCaseError::fail(format!("{e}\nfor:\n{text}")))?;
                prop_assert_eq!(parsed.len(), 1);
                let Resource::Component(c) = &parsed[0] else {
                    return Err(TestCaseError::fail(format!("not a component: {parsed:?}")));
                };
                prop_assert_eq!(Some(c.name.as_str()), n.as_str());
                prop_assert_eq!(&c.component_type, &t);
                prop_assert_eq!(c.metadata.len(), md.len());
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn configuration_secret_scopes_never_panic() {
    bounded("configuration_secret_scopes_never_panic", || {
        let strategy = (
            configuration_spec(),
            prop_oneof![Just(Style::Block), Just(Style::Json)],
        );
        runner(500)
            .run(&strategy, |(spec, style)| {
                let doc = obj(&[
                    ("apiVersion", "dapr.io/v1alpha1".into()),
                    ("kind", "Configuration".into()),
                    ("metadata", obj(&[("name", "cfg".into())])),
                    ("spec", spec),
                ]);
                let text = emit(&doc, style);
                let parsed = parse_and_use(&text)
                    .map_err(|e| TestCaseError::fail(format!("{e}\nfor:\n{text}")))?;
                // A Configuration is always kept; its spec is read lazily.
                prop_assert!(matches!(parsed.as_slice(), [Resource::Configuration(_)]));
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn hostile_yaml_is_refused_in_bounded_time() {
    bounded("hostile_yaml_is_refused_in_bounded_time", || {
        // Deep nesting, alias expansion and huge scalars: parsed or refused, quickly.
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            laughs.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let inputs = [
            "[".repeat(100_000),
            "{a: ".repeat(50_000),
            "- ".repeat(50_000),
            format!("kind: Component\nspec:\n{}", "  a:\n".repeat(10_000)),
            laughs,
            format!("kind: \"{}\"", "x".repeat(5_000_000)),
            format!("spec: {}", "9".repeat(100_000)),
            "---\n".repeat(100_000),
            "&a [*a]".to_owned(),
            "a: &a\n  b: *a\n".to_owned(),
            "<<: *nope".to_owned(),
        ];
        for text in inputs {
            let started = std::time::Instant::now();
            let _ = parse_and_use(&text);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "took {:?} on {:?}…",
                started.elapsed(),
                &text[..text.len().min(80)]
            );
        }
    });
}
