//! Service invocation through two real sidecars: the caller's sidecar resolves the callee
//! through the embedded SQLite name resolution (a private file per test), and the call,
//! headers, status and body pass through both hops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use mecha_test_support::{MechaProcess, ResourcesDir, eventually};
use reqwest::Client;
use serde_json::{Value, json};

use crate::MECHA;

/// A folder with a Configuration whose name resolution is a private SQLite file, plus any
/// other resources.
pub(crate) struct Mesh {
    dir: tempfile::TempDir,
    pub(crate) resources: ResourcesDir,
}

impl Mesh {
    pub(crate) fn new() -> Self {
        Self::with_spec("")
    }

    /// A mesh whose Configuration also has `extra_spec` (YAML lines indented under `spec:`).
    pub(crate) fn with_spec(extra_spec: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("names.db");
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: mesh\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: \"{}\"\n{extra_spec}",
                db.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            resources: ResourcesDir::new(),
        }
    }

    pub(crate) fn config(&self) -> String {
        self.dir.path().join("config.yaml").display().to_string()
    }

    /// A sidecar for `app_id`, with `--app-port` when `app_port` is given.
    pub(crate) async fn sidecar(
        &self,
        app_id: &str,
        app_port: Option<u16>,
        extra: &[&str],
    ) -> MechaProcess {
        let mut args = vec!["--config".to_owned(), self.config()];
        if let Some(p) = app_port {
            args.push("--app-port".into());
            args.push(p.to_string());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        MechaProcess::builder(MECHA)
            .app_id(app_id)
            .resources(self.resources.path())
            .args(args)
            .env("APP_API_TOKEN", "to-the-app")
            .start()
            .await
    }
}

/// Counters of the echo app, per path.
#[derive(Clone, Default)]
pub(crate) struct Echo {
    name: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Echo {
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// An HTTP app that echoes what it received as JSON (`replica`, `method`, `path`, `query`,
/// `headers`, `body`), with special paths: `/flaky` answers 503 twice then 200, `/slow`
/// sleeps 2 s, `/broken` always 500, `/status/{n}` answers n.
pub(crate) async fn echo_app(name: &str) -> (u16, Echo) {
    let echo = Echo {
        name: name.to_owned(),
        hits: Arc::default(),
    };
    async fn handle(State(e): State<Echo>, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let n = {
            let mut hits = e.hits.lock().unwrap();
            let n = hits.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        if path == "/sse" {
            let events = futures::stream::unfold(0u32, |i| async move {
                if i == 3 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                Some((
                    Ok::<_, std::convert::Infallible>(format!("data: event-{i}\n\n")),
                    i + 1,
                ))
            });
            return (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(events),
            )
                .into_response();
        }
        match path.as_str() {
            "/flaky" if n <= 2 => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
            "/broken" => return (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response(),
            _ => {}
        }
        if let Some(code) = path.strip_prefix("/status/") {
            let code = code.parse().unwrap_or(500);
            return (
                StatusCode::from_u16(code).unwrap(),
                [("x-from-app", "yes")],
                format!("status {code}"),
            )
                .into_response();
        }
        let method = req.method().to_string();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = axum::body::to_bytes(req.into_body(), 1 << 24)
            .await
            .unwrap();
        (
            [
                ("x-replica", e.name.as_str()),
                ("content-type", "application/json"),
            ],
            json!({
                "replica": e.name, "method": method, "path": path, "query": query,
                "headers": headers, "body": String::from_utf8_lossy(&body),
            })
            .to_string(),
        )
            .into_response()
    }
    let router = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .fallback(any(handle))
        .with_state(echo.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (port, echo)
}

/// Waits until `caller` can reach `target` (its registration is visible).
pub(crate) async fn wait_reachable(c: &Client, caller: &MechaProcess, target: &str) {
    eventually!(
        Duration::from_secs(15),
        c.get(format!(
            "{}/v1.0/invoke/{target}/method/ping",
            caller.http_url()
        ))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false),
        "{target} never became reachable from {}:\n{}",
        caller.app_id,
        caller.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_invocation_passes_method_path_headers_status_and_body() {
    let mesh = Mesh::new();
    let (port, _echo) = echo_app("b1").await;
    let b = mesh.sidecar("inv-b", Some(port), &[]).await;
    let a = mesh.sidecar("inv-a", None, &[]).await;
    let c = Client::new();
    wait_reachable(&c, &a, "inv-b").await;

    let r = c
        .put(format!(
            "{}/v1.0/invoke/inv-b/method/orders/42/items?x=1&y=two",
            a.http_url()
        ))
        .header("x-custom", "kept")
        .header("dapr-api-token", "must-not-pass")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-replica"], "b1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/orders/42/items");
    assert_eq!(v["query"], "x=1&y=two");
    assert_eq!(v["body"], "the body");
    let h = &v["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["dapr-caller-app-id"], "inv-a");
    assert_eq!(h["dapr-callee-app-id"], "inv-b");
    assert_eq!(
        h["dapr-api-token"], "to-the-app",
        "APP_API_TOKEN reaches the app, not the caller's token"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h["x-forwarded-host"].as_str().is_some());
    assert!(
        h["traceparent"]
            .as_str()
            .unwrap_or_default()
            .contains("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(
        h.get("mecha-invoke-kind").is_none(),
        "internal headers leak to the app"
    );

    // The callee's status, headers and body pass through.
    let r = c
        .get(format!(
            "{}/v1.0/invoke/inv-b/method/status/418",
            a.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(r.headers()["x-from-app"], "yes");
    assert_eq!(r.text().await.unwrap(), "status 418");

    // The dapr-app-id header form and the basic-auth form, on any path.
    let r = c
        .post(format!("{}/hello/world?q=1", a.http_url()))
        .header("dapr-app-id", "inv-b")
        .body("h")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["path"].as_str(), v["query"].as_str()),
        (Some("/hello/world"), Some("q=1"))
    );
    assert!(v["headers"].get("dapr-app-id").is_none());
    let r = c
        .get(format!("{}/via/basic", a.http_url()))
        .basic_auth("dapr-app-id", Some("inv-b"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/via/basic");
    assert!(v["headers"].get("authorization").is_none());

    // Calling yourself goes to your own app.
    let r = c
        .get(format!("{}/v1.0/invoke/inv-b/method/self", b.http_url()))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["dapr-caller-app-id"], "inv-b");

    // A large body streams through both hops unchanged.
    let big = "x".repeat(3 << 20);
    let r = c
        .post(format!("{}/v1.0/invoke/inv-b/method/big", a.http_url()))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body"].as_str().map(str::len), Some(big.len()));

    // The namespace form of the id.
    let r = c
        .get(format!(
            "{}/v1.0/invoke/inv-b.default/method/ns",
            a.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Server-sent events are flushed as they come, not buffered to the end.
    let started = Instant::now();
    let mut r = c
        .get(format!("{}/v1.0/invoke/inv-b/method/sse", a.http_url()))
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event-0"));
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "the first event waited for the whole stream: {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("event-2"));

    // Errors: unknown app id, no app id.
    let r = c
        .get(format!("{}/v1.0/invoke/nobody/method/x", a.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(v["message"].as_str().unwrap().contains("nobody"), "{v}");
    let r = c
        .get(format!("{}/not/an/api", a.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "ERR_DIRECT_INVOKE");

    // Both sidecars count what they did, with Dapr's metric names.
    let metrics = |p: &MechaProcess| {
        let url = format!("http://127.0.0.1:{}/metrics", p.metrics_port);
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let caller = metrics(&a).await;
    let sent = caller
        .lines()
        .find(|l| {
            l.starts_with("dapr_runtime_service_invocation_req_sent_total")
                && l.contains("dest_app_id=\"inv-b\"")
                && l.contains("/orders/42/items")
        })
        .unwrap_or_else(|| panic!("no req_sent line in:\n{caller}"));
    assert!(sent.ends_with(" 1"), "{sent}");
    assert!(
        caller.contains("dapr_http_server_request_count"),
        "{caller}"
    );
    let callee = metrics(&b).await;
    assert!(
        callee.lines().any(
            |l| l.starts_with("dapr_runtime_service_invocation_req_recv_total")
                && l.contains("src_app_id=\"inv-a\"")
        ),
        "{callee}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_over_replicas_and_recovery_when_one_dies() {
    let mesh = Mesh::new();
    let (p1, e1) = echo_app("r1").await;
    let (p2, e2) = echo_app("r2").await;
    let _b1 = mesh.sidecar("rr-b", Some(p1), &[]).await;
    let mut b2 = Some(mesh.sidecar("rr-b", Some(p2), &[]).await);
    let a = mesh.sidecar("rr-a", None, &[]).await;
    let c = Client::new();
    wait_reachable(&c, &a, "rr-b").await;
    // Both replicas registered: calls alternate.
    eventually!(
        Duration::from_secs(10),
        {
            for _ in 0..4 {
                c.get(format!("{}/v1.0/invoke/rr-b/method/spread", a.http_url()))
                    .send()
                    .await
                    .unwrap();
            }
            e1.hits("/spread") > 0 && e2.hits("/spread") > 0
        },
        "calls did not reach both replicas: {} / {}",
        e1.hits("/spread"),
        e2.hits("/spread")
    );
    let (h1, h2) = (e1.hits("/spread"), e2.hits("/spread"));
    assert!(h1.abs_diff(h2) <= 2, "round robin is uneven: {h1} / {h2}");

    // One replica's sidecar dies: every call still succeeds on the other.
    drop(b2.take());
    let before = e1.hits("/after");
    for _ in 0..10 {
        let r = c
            .get(format!("{}/v1.0/invoke/rr-b/method/after", a.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a call failed after one replica died"
        );
    }
    assert_eq!(e1.hits("/after") - before, 10);

    // It comes back: calls reach it again.
    let _b2 = mesh.sidecar("rr-b", Some(p2), &[]).await;
    eventually!(
        Duration::from_secs(15),
        {
            c.get(format!("{}/v1.0/invoke/rr-b/method/back", a.http_url()))
                .send()
                .await
                .unwrap();
            e2.hits("/back") > 0
        },
        "the restarted replica never got a call"
    );
}

const RESILIENCY: &str = "\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: policies
spec:
  policies:
    timeouts:
      short: 500ms
    retries:
      three:
        policy: constant
        duration: 50ms
        maxRetries: 3
        matching:
          httpStatusCodes: \"503\"
    circuitBreakers:
      breaker:
        maxRequests: 1
        timeout: 1s
        trip: consecutiveFailures > 4
  targets:
    apps:
      res-b:
        timeout: short
        retry: three
        circuitBreaker: breaker
";

#[tokio::test(flavor = "multi_thread")]
async fn resiliency_retries_times_out_and_breaks_the_circuit() {
    let mesh = Mesh::new();
    mesh.resources.write("resiliency.yaml", RESILIENCY);
    let (port, echo) = echo_app("b").await;
    let mut b = Some(mesh.sidecar("res-b", Some(port), &[]).await);
    let a = mesh.sidecar("res-a", None, &[]).await;
    let c = Client::new();
    wait_reachable(&c, &a, "res-b").await;
    let call = |path: &str| {
        let url = format!("{}/v1.0/invoke/res-b/method{path}", a.http_url());
        let c = c.clone();
        async move { c.get(url).send().await.unwrap() }
    };

    // 503 twice, then 200: the retry policy hides the failures.
    let r = call("/flaky").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(echo.hits("/flaky"), 3);

    // The app takes 2 s; every attempt times out after 500 ms (timeouts are retried, as in
    // Dapr), so the call fails well before the app could have answered three times.
    let started = Instant::now();
    let r = call("/slow").await;
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        took < Duration::from_millis(3000),
        "the timeout did not apply: {took:?}"
    );
    let v: Value = r.json().await.unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("timeout") || message.contains("deadline"),
        "{v}"
    );
    // The caller's timeout travels as a deadline: the callee's sidecar stops waiting too.
    eventually!(
        Duration::from_secs(5),
        b.as_ref().unwrap().log().contains("deadline"),
        "the callee did not apply the caller's deadline:\n{}",
        b.as_ref().unwrap().log()
    );

    // The callee's sidecar goes away: failures trip the breaker, which then fails fast.
    drop(b.take());
    for _ in 0..3 {
        let r = call("/down").await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let r = call("/down").await;
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("circuit breaker is open"),
        "the breaker did not open: {v}"
    );
    // It comes back; after the breaker's timeout a trial call closes it again.
    let _b = mesh.sidecar("res-b", Some(port), &[]).await;
    eventually!(
        Duration::from_secs(15),
        call("/again").await.status() == StatusCode::OK,
        "the breaker did not close after the callee came back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_endpoints_and_url_ids_reach_external_services() {
    let (port, _echo) = echo_app("external").await;
    let mesh = Mesh::new();
    mesh.resources.write(
        "endpoint.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: ext\nspec:\n  baseUrl: http://127.0.0.1:{port}\n  headers:\n  - name: x-api-key\n    value: k1\n"
        ),
    );
    let a = mesh.sidecar("ext-caller", None, &[]).await;
    let c = Client::new();
    let v: Value = c
        .post(format!(
            "{}/v1.0/invoke/ext/method/things/1?a=b",
            a.http_url()
        ))
        .body("payload")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/things/1");
    assert_eq!(v["query"], "a=b");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["headers"]["x-api-key"], "k1");
    let url_id = format!("http%3A%2F%2F127.0.0.1%3A{port}");
    let v: Value = c
        .get(format!(
            "{}/v1.0/invoke/{url_id}/method/by-url",
            a.http_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/by-url");
}

/// The `static` resolver: the caller finds the callee at the address listed in its
/// Configuration (the callee's fixed `--dapr-internal-grpc-port`).
#[tokio::test(flavor = "multi_thread")]
async fn static_name_resolution_with_a_fixed_internal_port() {
    let (port, _echo) = echo_app("static-b").await;
    let internal = mecha_test_support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("static.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: static\nspec:\n  nameResolution:\n    component: static\n    configuration:\n      apps:\n        static-b: [\"127.0.0.1:{internal}\"]\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let res = ResourcesDir::new();
    let _b = MechaProcess::builder(MECHA)
        .app_id("static-b")
        .resources(res.path())
        .args([
            "--config",
            &config,
            "--app-port",
            &port.to_string(),
            "--dapr-internal-grpc-port",
            &internal.to_string(),
        ])
        .start()
        .await;
    let a = MechaProcess::builder(MECHA)
        .app_id("static-a")
        .resources(res.path())
        .args(["--config", &config])
        .start()
        .await;
    let c = Client::new();
    wait_reachable(&c, &a, "static-b").await;
    let v: Value = c
        .get(format!(
            "{}/v1.0/invoke/static-b/method/listed",
            a.http_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["replica"], "static-b");
    assert_eq!(v["headers"]["dapr-caller-app-id"], "static-a");
}

/// One trace id from the caller through both sidecars to the app, exported by both sidecars
/// to an OTLP receiver; the callee's server span is the child of the caller's client span.
#[tokio::test(flavor = "multi_thread")]
async fn one_trace_spans_caller_both_sidecars_and_the_app() {
    let receiver = mecha_test_support::otlp::Receiver::start().await;
    let mesh = Mesh::with_spec(&format!(
        "  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: \"{}\"\n      isSecure: false\n      protocol: grpc\n",
        receiver.endpoint()
    ));
    let (port, _echo) = echo_app("traced").await;
    let _b = mesh.sidecar("trace-b", Some(port), &[]).await;
    let a = mesh.sidecar("trace-a", None, &[]).await;
    let c = Client::new();
    wait_reachable(&c, &a, "trace-b").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = c
        .get(format!(
            "{}/v1.0/invoke/trace-b/method/traced",
            a.http_url()
        ))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let seen = v["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(seen.contains(trace_id), "the app got {seen}");
    assert!(
        !seen.contains("00f067aa0ba902b7"),
        "the app got the caller's span, not the callee sidecar's: {seen}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id && s.name.contains("traced"))
            .collect();
        let has = |service: &str, kind: &str| {
            spans
                .iter()
                .any(|s| s.service_name == service && s.kind == kind)
        };
        if has("trace-a", "SPAN_KIND_CLIENT") && has("trace-b", "SPAN_KIND_SERVER") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing: {:?}\n{}",
            receiver.spans(),
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client = spans
        .iter()
        .find(|s| s.service_name == "trace-a" && s.kind == "SPAN_KIND_CLIENT")
        .unwrap();
    let server = spans
        .iter()
        .find(|s| s.service_name == "trace-b" && s.kind == "SPAN_KIND_SERVER")
        .unwrap();
    assert_eq!(server.parent_span_id, client.span_id, "{spans:?}");
    assert!(
        seen.contains(&server.span_id),
        "the app's parent is the callee's span: {seen}"
    );
}

/// `spec.accessControl` on the callee: the caller's app id, the operation and the verb decide;
/// denied calls get 403 `ERR_PERMISSION_DENIED`. `spec.api` restricts the caller's own APIs.
#[tokio::test(flavor = "multi_thread")]
async fn access_control_and_api_allow_lists() {
    let mesh = Mesh::new();
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.yaml");
    std::fs::write(
        &acl,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: acl-a\n      defaultAction: deny\n      namespace: default\n      operations:\n      - name: /allowed/*\n        httpVerb: [GET]\n        action: allow\n",
    )
    .unwrap();
    let api = dir.path().join("api.yaml");
    std::fs::write(
        &api,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: api\nspec:\n  api:\n    allowed:\n    - name: invoke\n      version: v1.0\n      protocol: http\n",
    )
    .unwrap();
    let (port, echo) = echo_app("guarded").await;
    let _b = mesh
        .sidecar("acl-b", Some(port), &["--config", acl.to_str().unwrap()])
        .await;
    let a = mesh
        .sidecar("acl-a", None, &["--config", api.to_str().unwrap()])
        .await;
    let other = mesh.sidecar("acl-other", None, &[]).await;
    let c = Client::new();
    let call = |p: &MechaProcess, verb: reqwest::Method, path: &str| {
        let url = format!("{}/v1.0/invoke/acl-b/method{path}", p.http_url());
        let c = c.clone();
        async move { c.request(verb, url).send().await.unwrap() }
    };
    eventually!(
        Duration::from_secs(15),
        call(&a, reqwest::Method::GET, "/allowed/1").await.status() == StatusCode::OK,
        "the allowed call never succeeded:\n{}",
        a.log()
    );
    for (p, verb, path) in [
        (&a, reqwest::Method::POST, "/allowed/1"),
        (&a, reqwest::Method::GET, "/secret"),
        (&a, reqwest::Method::GET, "/allowed/1/deeper"),
        (&other, reqwest::Method::GET, "/allowed/1"),
    ] {
        let r = call(p, verb.clone(), path).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{} {verb} {path}",
            p.app_id
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errorCode"], "ERR_PERMISSION_DENIED", "{v}");
    }
    assert_eq!(echo.hits("/secret"), 0, "a denied call reached the app");

    // acl-a may use only the invoke API of its own sidecar.
    let r = c
        .post(format!("{}/v1.0/state/statestore", a.http_url()))
        .json(&json!([{"key": "k", "value": 1}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "ERR_PERMISSION_DENIED");
    let health = c
        .get(format!("{}/v1.0/healthz", a.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        StatusCode::NO_CONTENT,
        "healthz is always allowed"
    );
    let mut grpc = dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::connect(a.grpc_url())
        .await
        .unwrap();
    let err = grpc
        .get_metadata(dapr::dapr::proto::runtime::v1::GetMetadataRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

/// With no configuration at all, sidecars started by one user find each other through the
/// embedded default (`~/.mecha/nameresolution.db`).
#[tokio::test(flavor = "multi_thread")]
async fn sidecars_find_each_other_with_no_configuration() {
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap();
    let (port, _echo) = echo_app("zero-config").await;
    let res = ResourcesDir::new();
    let _b = MechaProcess::builder(MECHA)
        .app_id("zc-b")
        .resources(res.path())
        .args(["--app-port", &port.to_string()])
        .env("HOME", home_s)
        .start()
        .await;
    let a = MechaProcess::builder(MECHA)
        .app_id("zc-a")
        .resources(res.path())
        .env("HOME", home_s)
        .start()
        .await;
    let c = Client::new();
    wait_reachable(&c, &a, "zc-b").await;
    assert!(home.path().join(".mecha/nameresolution.db").exists());
}

/// The Configuration's `httpPipeline` (on the sidecar's API) and `appHttpPipeline` (on calls
/// into the app), with `middleware.http.*` components applied in order.
#[tokio::test(flavor = "multi_thread")]
async fn http_middleware_pipelines() {
    let mesh = Mesh::new();
    mesh.resources.write(
        "middleware.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: upper\nspec:\n  type: middleware.http.uppercase\n  version: v1\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: limit\nspec:\n  type: middleware.http.ratelimit\n  version: v1\n  metadata:\n  - name: maxRequestsPerSecond\n    value: 5\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: router\nspec:\n  type: middleware.http.routerchecker\n  version: v1\n  metadata:\n  - name: rule\n    value: \"^/allowed\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines.yaml");
    std::fs::write(
        &pipelines,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: pipelines\nspec:\n  httpPipeline:\n    handlers:\n    - name: upper\n      type: middleware.http.uppercase\n    - name: limit\n      type: middleware.http.ratelimit\n  appHttpPipeline:\n    handlers:\n    - name: router\n      type: middleware.http.routerchecker\n",
    )
    .unwrap();
    let (port, echo) = echo_app("piped").await;
    let p = mesh
        .sidecar(
            "mw-app",
            Some(port),
            &["--config", pipelines.to_str().unwrap()],
        )
        .await;
    let c = Client::new();
    let url = |m: &str| format!("{}/v1.0/invoke/mw-app/method{m}", p.http_url());
    // uppercase runs on the API request; routerchecker lets /allowed… into the app.
    let r = c
        .post(url("/allowed/x"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", p.log());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body"], "HELLO");
    // routerchecker refuses other paths before the app sees them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.post(url("/other")).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(echo.hits("/other"), 0);
    // ratelimit: 5 requests per second per client.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut limited = 0;
    for _ in 0..15 {
        if c.get(url("/allowed/burst")).send().await.unwrap().status()
            == StatusCode::TOO_MANY_REQUESTS
        {
            limited += 1;
        }
    }
    assert!(
        limited >= 5,
        "only {limited} of 15 rapid calls were limited"
    );
}
