//! `middleware.http.wasm` with small WAT guests (tests/data/wasm), loaded by URL and run
//! through a real pipeline in front of a recording "app".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;

use super::super::{MiddlewareSpec, Pipeline};
use super::GUEST_TIME_LIMIT;

const WASM: &str = "middleware.http.wasm";

/// What the app behind the pipeline received.
#[derive(Clone, Debug, Default)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    /// What reached the app; `None` when a middleware answered first.
    seen: Option<Seen>,
}

fn guest_path(file: &str) -> String {
    format!("{}/tests/data/wasm/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn guest_url(file: &str) -> String {
    format!("file://{}", guest_path(file))
}

fn spec(name: &str, md: &[(&str, &str)]) -> MiddlewareSpec {
    MiddlewareSpec {
        name: name.to_owned(),
        component_type: WASM.to_owned(),
        metadata: md
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn guest(file: &str) -> Pipeline {
    pipeline(&[("url", &guest_url(file))])
}

fn pipeline(md: &[(&str, &str)]) -> Pipeline {
    Pipeline::build(&[spec("guest", md)]).unwrap_or_else(|e| panic!("{e}"))
}

fn build_err(md: &[(&str, &str)]) -> String {
    match Pipeline::build(&[spec("bad-guest", md)]) {
        Ok(p) => panic!("expected an error, built {p:?}"),
        Err(e) => {
            assert!(e.contains("'bad-guest'"), "{e}");
            e
        }
    }
}

/// A module written to a file of its own, by URL.
fn module_file(dir: &tempfile::TempDir, wat: &str) -> String {
    let path = dir.path().join("guest.wat");
    std::fs::write(&path, wat).unwrap();
    format!("file://{}", path.display())
}

/// Sends `req` through `p` to an app that records what it got and answers 200 "from the app".
async fn send(p: &Pipeline, req: http::Request<Body>) -> Answer {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let res = p
        .handle(req, |r: Request| async move {
            let (parts, body) = r.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            *record.lock().unwrap() = Some(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            (StatusCode::OK, [("x-app", "yes")], "from the app").into_response()
        })
        .await;
    let seen = seen.lock().unwrap().take();
    answer(res, seen).await
}

async fn answer(res: Response, seen: Option<Seen>) -> Answer {
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        seen,
    }
}

fn get(uri: &str) -> http::Request<Body> {
    http::Request::get(uri).body(Body::empty()).unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

// === request side ===

#[tokio::test]
async fn wasm_rewrites_the_request_uri() {
    let p = guest("rewrite.wat");
    let a = send(&p, get("/v1.0/hi?name=panda")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "from the app");
    assert_eq!(a.seen.unwrap().uri, "/v1.0/hello?name=teddy");
    // Anything else passes unchanged, and the instance serves request after request.
    for _ in 0..3 {
        let a = send(&p, get("/v1.0/hi?name=bear")).await;
        assert_eq!(a.seen.unwrap().uri, "/v1.0/hi?name=bear");
    }
}

#[tokio::test]
async fn wasm_loads_a_module_by_a_relative_file_url() {
    // Tests run in the crate's folder: relative paths are from the working directory.
    let p = pipeline(&[("url", "file://tests/data/wasm/rewrite.wat")]);
    let a = send(&p, get("/v1.0/hi?name=panda")).await;
    assert_eq!(a.seen.unwrap().uri, "/v1.0/hello?name=teddy");
}

#[tokio::test]
async fn wasm_changes_request_headers_and_method() {
    let p = guest("headers.wat");
    let req = http::Request::post("/things")
        .header("x-secret", "s3cret")
        .header("x-replaced", "old")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(Body::from("payload"))
        .unwrap();
    let a = send(&p, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.seen.unwrap();
    let h = &seen.headers;
    assert_eq!(header(h, "x-names"), "x-secret,x-replaced,x-multi");
    assert_eq!(header(h, "x-added"), "yes");
    assert_eq!(header(h, "x-replaced"), "new");
    assert_eq!(h.get_all("x-replaced").iter().count(), 1);
    assert!(h.get("x-secret").is_none(), "{h:?}");
    assert_eq!(header(h, "x-multi-count"), "2");
    assert_eq!(seen.method, "PATCH");
    // The body was not touched.
    assert_eq!(seen.body, "payload");
}

#[tokio::test]
async fn wasm_rewrites_the_request_body() {
    let p = guest("body.wat");
    let req = http::Request::post("/b")
        .header(header::CONTENT_LENGTH, "31")
        .body(Body::from("a body longer than seven bytes!"))
        .unwrap();
    let a = send(&p, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.seen.unwrap();
    assert_eq!(seen.body, "wasm saw: a body longer than seven bytes!");
    assert_eq!(header(&seen.headers, "content-length"), "41");
    // An empty body reads as EOF at once.
    let a = send(&p, http::Request::post("/b").body(Body::empty()).unwrap()).await;
    assert_eq!(a.seen.unwrap().body, "wasm saw: ");
}

#[tokio::test]
async fn wasm_request_body_read_is_consumed_unless_buffered() {
    // The guest reads 4 bytes and goes on; asking for buffer_request (1) first when `$ask`.
    let dir = tempfile::tempdir().unwrap();
    let peek = |ask: u32| {
        module_file(
            &dir,
            &format!(
                r#"(module
                     (import "http_handler" "enable_features"
                       (func $enable_features (param i32) (result i32)))
                     (import "http_handler" "read_body"
                       (func $read_body (param i32 i32 i32) (result i64)))
                     (memory (export "memory") 1)
                     (func (export "handle_request") (result i64)
                       (drop (call $enable_features (i32.const {ask})))
                       (drop (call $read_body (i32.const 0) (i32.const 0) (i32.const 4)))
                       (i64.const 1))
                     (func (export "handle_response") (param i32 i32)))"#
            ),
        )
    };
    let body = || {
        http::Request::post("/p")
            .body(Body::from("abcdefgh"))
            .unwrap()
    };
    let p = pipeline(&[("url", &peek(0))]);
    let seen = send(&p, body()).await.seen.unwrap();
    assert_eq!(seen.body, "efgh");
    assert_eq!(header(&seen.headers, "content-length"), "4");
    let p = pipeline(&[("url", &peek(1))]);
    assert_eq!(send(&p, body()).await.seen.unwrap().body, "abcdefgh");
}

#[tokio::test]
async fn wasm_request_body_over_the_limit_is_413() {
    let p = guest("body.wat").with_body_limit(16);
    let a = send(
        &p,
        http::Request::post("/b")
            .body(Body::from("x".repeat(100)))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.seen.is_none());
    // Small bodies still pass.
    let a = send(
        &p,
        http::Request::post("/b").body(Body::from("small")).unwrap(),
    )
    .await;
    assert_eq!(a.seen.unwrap().body, "wasm saw: small");
}

#[tokio::test]
async fn wasm_guest_answers_403_itself() {
    let p = guest("deny.wat");
    let a = send(&p, get("/private")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.body, "denied by wasm");
    assert_eq!(header(&a.headers, "content-type"), "text/plain");
    assert!(a.seen.is_none(), "the app must not be called");
    let req = http::Request::get("/private")
        .header("x-allow", "1")
        .body(Body::empty())
        .unwrap();
    let a = send(&p, req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.seen.unwrap().uri, "/private");
}

#[tokio::test]
async fn wasm_guest_reads_its_config() {
    let config = r#"{"environment":"production"}"#;
    let p = pipeline(&[("url", &guest_url("config.wat")), ("guestConfig", config)]);
    let a = send(&p, get("/")).await;
    assert_eq!(header(&a.seen.unwrap().headers, "x-guest-config"), config);
    // Without guestConfig the guest gets an empty one.
    let p = guest("config.wat");
    let a = send(&p, get("/")).await;
    assert_eq!(header(&a.seen.unwrap().headers, "x-guest-config"), "");
}

#[tokio::test]
async fn wasm_guest_built_for_wasi_runs() {
    let p = guest("wasi.wat");
    let a = send(&p, get("/")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(header(&a.seen.unwrap().headers, "x-wasi"), "ok");
}

// === response side ===

#[tokio::test]
async fn wasm_handle_response_changes_the_response() {
    let p = guest("response.wat");
    let a = send(&p, get("/r")).await;
    assert!(a.seen.is_some());
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(header(&a.headers, "x-ctx"), "7");
    assert_eq!(header(&a.headers, "x-app"), "yes");
    assert_eq!(a.body, "<from the app>");
}

#[tokio::test]
async fn wasm_response_side_sees_an_earlier_answer_of_a_later_middleware() {
    // The guest comes first; the router checker after it refuses the path; the guest's
    // handle_response still gets that response.
    let p = Pipeline::build(&[
        spec("guest", &[("url", &guest_url("response.wat"))]),
        MiddlewareSpec {
            name: "rc".to_owned(),
            component_type: "middleware.http.routerchecker".to_owned(),
            metadata: HashMap::from([("rule".to_owned(), "^/ok".to_owned())]),
        },
    ])
    .unwrap();
    let a = send(&p, get("/nope")).await;
    assert!(a.seen.is_none());
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(header(&a.headers, "x-ctx"), "7");
    assert_eq!(a.body, "<invalid router>");
}

#[tokio::test]
async fn wasm_guests_run_in_order_with_other_middleware() {
    // rewrite then deny: the rewritten request reaches the deny guest, which refuses it.
    let p = Pipeline::build(&[
        spec("rewrite", &[("url", &guest_url("rewrite.wat"))]),
        spec("deny", &[("url", &guest_url("deny.wat"))]),
    ])
    .unwrap();
    assert_eq!(p.names().collect::<Vec<_>>(), ["rewrite", "deny"]);
    let a = send(&p, get("/v1.0/hi?name=panda")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let req = http::Request::get("/v1.0/hi?name=panda")
        .header("x-allow", "1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&p, req).await.seen.unwrap().uri,
        "/v1.0/hello?name=teddy"
    );
}

// === limits ===

#[tokio::test]
async fn wasm_looping_guest_is_stopped_with_500() {
    let p = guest("loop.wat");
    let req = || {
        http::Request::get("/spin")
            .header("x-loop", "1")
            .body(Body::empty())
            .unwrap()
    };
    let started = Instant::now();
    let a = send(&p, req()).await;
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.seen.is_none());
    assert!(
        took >= GUEST_TIME_LIMIT - Duration::from_millis(100) && took < GUEST_TIME_LIMIT * 3,
        "stopped after {took:?}"
    );
    // The stopped instance is dropped; the middleware keeps serving.
    let a = send(&p, get("/fine")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.seen.unwrap().uri, "/fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_looping_guests_do_not_block_the_runtime() {
    let p = Arc::new(guest("loop.wat"));
    let spinning = {
        let p = p.clone();
        tokio::spawn(async move {
            let req = http::Request::get("/spin")
                .header("x-loop", "1")
                .body(Body::empty())
                .unwrap();
            send(&p, req).await.status
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While one guest spins, others are served at once.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(send(&p, get("/fine")).await.status, StatusCode::OK);
    }
    assert!(started.elapsed() < GUEST_TIME_LIMIT / 2);
    assert_eq!(spinning.await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn wasm_memory_hungry_guest_gets_500() {
    let p = guest("hungry.wat");
    let a = send(&p, get("/")).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.seen.is_none());
    // A module whose initial memory is over the limit does not start.
    let dir = tempfile::tempdir().unwrap();
    let pages = super::MEMORY_LIMIT / 65536 + 1;
    let url = module_file(
        &dir,
        &format!(
            r#"(module (memory (export "memory") {pages})
                 (func (export "handle_request") (result i64) (i64.const 1))
                 (func (export "handle_response") (param i32 i32)))"#
        ),
    );
    let e = build_err(&[("url", &url)]);
    assert!(e.contains("does not start"), "{e}");
}

#[tokio::test]
async fn wasm_abi_misuse_traps_with_500() {
    let dir = tempfile::tempdir().unwrap();
    // Reading far outside its memory.
    let url = module_file(
        &dir,
        r#"(module
             (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "handle_request") (result i64)
               (drop (call $get_uri (i32.const 65530) (i32.const 100))) (i64.const 1))
             (func (export "handle_response") (param i32 i32)))"#,
    );
    let a = send(&pipeline(&[("url", &url)]), get("/a/long/enough/uri")).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.seen.is_none());
    // Changing the request in handle_response, after it was handed on.
    let url = module_file(
        &dir,
        r#"(module
             (import "http_handler" "set_uri" (func $set_uri (param i32 i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "/late")
             (func (export "handle_request") (result i64) (i64.const 1))
             (func (export "handle_response") (param i32 i32)
               (call $set_uri (i32.const 0) (i32.const 5))))"#,
    );
    let a = send(&pipeline(&[("url", &url)]), get("/")).await;
    assert!(a.seen.is_some());
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
}

// === refused at build time ===

#[test]
fn wasm_refuses_modules_without_the_abi_exports() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "handle_request") (result i64) (i64.const 1)))"#,
            "does not export the function handle_response",
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "handle_response") (param i32 i32)))"#,
            "does not export the function handle_request",
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "handle_request") (result i32) (i32.const 1))
                 (func (export "handle_response") (param i32 i32)))"#,
            "handle_request is not () -> i64",
        ),
        (
            r#"(module (memory 1)
                 (func (export "handle_request") (result i64) (i64.const 1))
                 (func (export "handle_response") (param i32 i32)))"#,
            "does not export its memory",
        ),
        (
            r#"(module (import "env" "abort" (func))
                 (memory (export "memory") 1)
                 (func (export "handle_request") (result i64) (i64.const 1))
                 (func (export "handle_response") (param i32 i32)))"#,
            "imports env.abort",
        ),
        (
            r#"(module (import "http_handler" "no_such_function" (func))
                 (memory (export "memory") 1)
                 (func (export "handle_request") (result i64) (i64.const 1))
                 (func (export "handle_response") (param i32 i32)))"#,
            "cannot link",
        ),
        (
            r#"(module (import "http_handler" "get_uri" (func (param i64)))
                 (memory (export "memory") 1)
                 (func (export "handle_request") (result i64) (i64.const 1))
                 (func (export "handle_response") (param i32 i32)))"#,
            "cannot link",
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "_start") unreachable)
                 (func (export "handle_request") (result i64) (i64.const 1))
                 (func (export "handle_response") (param i32 i32)))"#,
            "does not start",
        ),
        ("\0asm not really", "not a valid Wasm module"),
    ];
    for (wat, want) in cases {
        let e = build_err(&[("url", &module_file(&dir, wat))]);
        assert!(e.contains(want), "want {want:?} in {e}");
    }
}

#[test]
fn wasm_refuses_urls_it_cannot_read() {
    let e = build_err(&[]);
    assert!(e.contains("missing required metadata field url"), "{e}");
    let e = build_err(&[("url", "oci://registry/guest:1")]);
    assert!(e.contains("scheme oci is not supported"), "{e}");
    let e = build_err(&[("url", "router.wasm")]);
    assert!(e.contains("not a file://, http:// or https:// URL"), "{e}");
    let e = build_err(&[("url", "file:///no/such/dir/guest.wasm")]);
    assert!(e.contains("cannot read /no/such/dir/guest.wasm"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_loads_a_module_over_http() {
    let wat = std::fs::read(guest_path("rewrite.wat")).unwrap();
    let app = axum::Router::new()
        .route(
            "/guests/rewrite.wasm",
            axum::routing::get(move || async move { wat.clone() }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "/guests/rewrite.wasm")],
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for path in ["/guests/rewrite.wasm", "/moved"] {
        let url = format!("http://{addr}{path}");
        let p = tokio::task::spawn_blocking(move || pipeline(&[("url", &url)]))
            .await
            .unwrap();
        let a = send(&p, get("/v1.0/hi?name=panda")).await;
        assert_eq!(a.seen.unwrap().uri, "/v1.0/hello?name=teddy");
    }
    let url = format!("http://{addr}/missing.wasm");
    let e = tokio::task::spawn_blocking(move || build_err(&[("url", &url)]))
        .await
        .unwrap();
    assert!(e.contains("answered 404"), "{e}");
}
