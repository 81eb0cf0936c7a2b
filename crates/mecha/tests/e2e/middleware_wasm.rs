//! `middleware.http.wasm` on the real binary: a guest loaded from a `file://` URL on the
//! `httpPipeline` rewrites an invocation path before the sidecar forwards it to the app. In a
//! build without the `middleware-wasm` feature, the sidecar refuses such a pipeline and says
//! how to build one that has it.

use std::time::Duration;

use mecha_test_support::MechaProcess;

use crate::MECHA;
use crate::invoke::Mesh;

/// Rewrites `/v1.0/invoke/wasm-app/method/hi?name=panda`, and `/v1.0/hi?name=panda` (a path
/// no API route serves), to `/v1.0/invoke/wasm-app/method/hello?name=teddy`, and hands its
/// guest configuration on in the request header `x-guest-config`.
const GUEST: &str = r#"
(module
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (import "http_handler" "set_uri" (func $set_uri (param i32 i32)))
  (import "http_handler" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "http_handler" "set_header_value"
    (func $set_header_value (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/v1.0/invoke/wasm-app/method/hi?name=panda")      ;; 42
  (data (i32.const 64) "/v1.0/invoke/wasm-app/method/hello?name=teddy")  ;; 45
  (data (i32.const 128) "x-guest-config")                                ;; 14
  (data (i32.const 192) "/v1.0/hi?name=panda")                           ;; 19

  (func $same (param $a i32) (param $b i32) (param $n i32) (result i32)
    (loop $each
      (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
      (if (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b)))
        (then (return (i32.const 0))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $each))
    (unreachable))

  (func (export "handle_request") (result i64)
    (local $len i32)
    (local.set $len (call $get_uri (i32.const 1024) (i32.const 512)))
    (if (i32.eq (local.get $len) (i32.const 42))
      (then
        (if (call $same (i32.const 1024) (i32.const 0) (i32.const 42))
          (then (call $set_uri (i32.const 64) (i32.const 45))))))
    (if (i32.eq (local.get $len) (i32.const 19))
      (then
        (if (call $same (i32.const 1024) (i32.const 192) (i32.const 19))
          (then (call $set_uri (i32.const 64) (i32.const 45))))))
    (local.set $len (call $get_config (i32.const 2048) (i32.const 1024)))
    (if (i32.le_u (local.get $len) (i32.const 1024))
      (then
        (call $set_header_value (i32.const 0) (i32.const 128) (i32.const 14)
          (i32.const 2048) (local.get $len))))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
"#;

/// A component file for the guest at `url`, and a Configuration putting it on the
/// `httpPipeline`.
fn write_resources(mesh: &Mesh, dir: &tempfile::TempDir, url: &str) -> String {
    mesh.resources.write(
        "wasm.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: rewrite\nspec:\n  type: middleware.http.wasm\n  version: v1\n  metadata:\n  - name: url\n    value: \"{url}\"\n  - name: guestConfig\n    value: '{{\"environment\":\"production\"}}'\n"
        ),
    );
    let pipelines = dir.path().join("pipelines.yaml");
    std::fs::write(
        &pipelines,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: pipelines\nspec:\n  httpPipeline:\n    handlers:\n    - name: rewrite\n      type: middleware.http.wasm\n",
    )
    .unwrap();
    pipelines.display().to_string()
}

#[cfg(feature = "middleware-wasm")]
#[tokio::test]
async fn wasm_middleware_rewrites_the_invoked_path() {
    use reqwest::StatusCode;
    use serde_json::Value;

    let mesh = Mesh::new();
    let dir = tempfile::tempdir().unwrap();
    let guest = dir.path().join("rewrite.wat");
    std::fs::write(&guest, GUEST).unwrap();
    let pipelines = write_resources(&mesh, &dir, &format!("file://{}", guest.display()));
    let (port, echo) = crate::invoke::echo_app("wasm").await;
    let p = mesh
        .sidecar("wasm-app", Some(port), &["--config", &pipelines])
        .await;
    assert!(p.log().contains("Wasm middleware loaded"), "{}", p.log());
    let c = reqwest::Client::new();
    let url = |m: &str| format!("{}/v1.0/invoke/wasm-app/method/{m}", p.http_url());

    let r = c.get(url("hi?name=panda")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", p.log());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/hello", "{v}");
    assert_eq!(v["query"], "name=teddy", "{v}");
    assert_eq!(
        v["headers"]["x-guest-config"], r#"{"environment":"production"}"#,
        "{v}"
    );
    assert_eq!(echo.hits("/hi"), 0);
    assert_eq!(echo.hits("/hello"), 1);

    // The pipeline runs before routing: the rewritten path picks the route.
    let r = c
        .get(format!("{}/v1.0/hi?name=panda", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", p.log());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/hello", "{v}");
    assert_eq!(echo.hits("/hello"), 2);

    // Other paths go through unchanged, with a body.
    let r = c
        .post(url("other?name=panda"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/other", "{v}");
    assert_eq!(v["query"], "name=panda", "{v}");
    assert_eq!(v["body"], "payload", "{v}");
}

#[cfg(feature = "middleware-wasm")]
#[tokio::test]
async fn wasm_middleware_with_an_unreadable_module_stops_the_sidecar() {
    let mesh = Mesh::new();
    let dir = tempfile::tempdir().unwrap();
    let pipelines = write_resources(&mesh, &dir, "file:///no/such/guest.wasm");
    let mut p = sidecar_without_app(&mesh, &pipelines);
    let status = p.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("'rewrite'") && log.contains("cannot read /no/such/guest.wasm"),
        "{log}"
    );
}

#[cfg(not(feature = "middleware-wasm"))]
#[tokio::test]
async fn wasm_middleware_needs_the_feature() {
    let mesh = Mesh::new();
    let dir = tempfile::tempdir().unwrap();
    let guest = dir.path().join("rewrite.wat");
    std::fs::write(&guest, GUEST).unwrap();
    let pipelines = write_resources(&mesh, &dir, &format!("file://{}", guest.display()));
    let mut p = sidecar_without_app(&mesh, &pipelines);
    let status = p.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("'rewrite'")
            && log.contains("cargo build --release --features middleware-wasm"),
        "{log}"
    );
}

fn sidecar_without_app(mesh: &Mesh, pipelines: &str) -> MechaProcess {
    MechaProcess::builder(MECHA)
        .app_id("wasm-app")
        .resources(mesh.resources.path())
        .args(["--config", &mesh.config(), "--config", pipelines])
        .spawn()
}
