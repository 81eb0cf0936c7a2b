//! `bindings.http` against an axum server started by the test.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mecha_components::bindings::http::HttpBinding;
use mecha_core::bindings::{BindingError, OutputBinding};

use crate::{created, init, request};

/// Echoes the request: method, path and query, headers (as `x-echo-<name>` response headers)
/// and body; `/status/<n>` answers status n; `/slow` waits 3 s; `/big` answers 10000 bytes.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path().to_owned();
    if let Some(code) = path.strip_prefix("/status/") {
        let code = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return (code, format!("status {code}")).into_response();
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path == "/big" {
        return vec![b'x'; 10_000].into_response();
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        headers.insert(
            axum::http::HeaderName::try_from(format!("x-echo-{name}")).unwrap(),
            value.clone(),
        );
    }
    headers.append("x-multi", "a".parse().unwrap());
    headers.append("x-multi", "b".parse().unwrap());
    headers.insert(
        "x-method-uri",
        format!("{} {}", parts.method, parts.uri).parse().unwrap(),
    );
    (StatusCode::CREATED, headers, body).into_response()
}

/// Starts the echo server; returns its base URL.
async fn server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(echo))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn binding(md: &[(&str, &str)]) -> Arc<dyn OutputBinding> {
    let c = created(HttpBinding::create(init("web", md)).await);
    assert!(c.input.is_none());
    c.output.clone().unwrap()
}

fn md<'a>(r: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    r.get(k).map(String::as_str)
}

#[tokio::test]
async fn methods_paths_headers_and_response_metadata() {
    let base = server().await;
    let b = binding(&[("url", &format!("{base}/api/"))]).await;

    let r = b
        .invoke(request(
            "post",
            br#"{"a":1}"#,
            &[
                ("path", "/things?x=1"),
                ("X-Custom", "yes"),
                ("lower", "not-a-header"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&br#"{"a":1}"#[..]));
    assert_eq!(md(&r.metadata, "statusCode"), Some("201"));
    assert_eq!(md(&r.metadata, "status"), Some("201 Created"));
    assert_eq!(
        md(&r.metadata, "X-Method-Uri"),
        Some("POST /api/things?x=1")
    );
    assert_eq!(md(&r.metadata, "X-Echo-X-Custom"), Some("yes"));
    assert_eq!(
        md(&r.metadata, "X-Echo-Lower"),
        None,
        "lower-case keys are not headers"
    );
    assert_eq!(md(&r.metadata, "X-Multi"), Some("a, b"));
    assert_eq!(
        md(&r.metadata, "X-Echo-Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        md(&r.metadata, "X-Echo-Accept"),
        Some("application/json; charset=utf-8")
    );

    for (op, method) in [
        ("get", "GET"),
        ("put", "PUT"),
        ("patch", "PATCH"),
        ("delete", "DELETE"),
        ("options", "OPTIONS"),
        ("trace", "TRACE"),
        ("create", "POST"),
        ("head", "HEAD"),
    ] {
        let r = b.invoke(request(op, b"", &[("path", "x")])).await.unwrap();
        assert_eq!(
            md(&r.metadata, "X-Method-Uri"),
            Some(format!("{method} /api/x").as_str()),
            "{op}"
        );
    }
    // GET sends no body and no default Content-Type; Content-Type can be overridden.
    let r = b.invoke(request("get", b"ignored", &[])).await.unwrap();
    assert_eq!(md(&r.metadata, "X-Echo-Content-Type"), None);
    assert_eq!(r.data, None);
    let r = b
        .invoke(request(
            "put",
            b"<a/>",
            &[("Content-Type", "application/xml")],
        ))
        .await
        .unwrap();
    assert_eq!(
        md(&r.metadata, "X-Echo-Content-Type"),
        Some("application/xml")
    );
    // Trace context is forwarded.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = b
        .invoke(request("get", b"", &[("traceparent", tp)]))
        .await
        .unwrap();
    assert_eq!(md(&r.metadata, "X-Echo-Traceparent"), Some(tp));
}

#[tokio::test]
async fn error_statuses_and_unknown_operations() {
    let base = server().await;
    let b = binding(&[("url", &base)]).await;
    for code in ["404", "500", "400"] {
        let err = b
            .invoke(request("get", b"", &[("path", &format!("/status/{code}"))]))
            .await;
        assert_eq!(
            err.unwrap_err(),
            BindingError::Backend(format!("received status code {code}"))
        );
    }
    // errorIfNot2XX=false per request gives the response back.
    let r = b
        .invoke(request(
            "get",
            b"",
            &[("path", "/status/404"), ("errorIfNot2XX", "false")],
        ))
        .await
        .unwrap();
    assert_eq!(md(&r.metadata, "statusCode"), Some("404"));
    assert_eq!(r.data.as_deref(), Some(&b"status 404 Not Found"[..]));

    let err = b.invoke(request("connect", b"", &[])).await.unwrap_err();
    let BindingError::UnsupportedOperation {
        operation,
        supported,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(operation, "connect");
    assert!(supported.contains(&"trace".to_owned()) && supported.len() == 9);

    let err = b
        .invoke(request("get", b"", &[("Bad Header", "x")]))
        .await
        .unwrap_err();
    assert!(matches!(err, BindingError::BadRequest(_)), "{err:?}");
}

#[tokio::test]
async fn token_timeout_and_body_limit() {
    let base = server().await;
    let b = binding(&[
        ("url", &base),
        ("securityToken", "s3cret"),
        ("securityTokenHeader", "X-Token"),
        ("responseTimeout", "500ms"),
        ("maxResponseBodySize", "1Ki"),
    ])
    .await;
    let r = b.invoke(request("get", b"", &[])).await.unwrap();
    assert_eq!(md(&r.metadata, "X-Echo-X-Token"), Some("s3cret"));

    let started = Instant::now();
    let err = b
        .invoke(request("get", b"", &[("path", "/slow")]))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, BindingError::Backend(m) if m.contains("timed out")),
        "{err:?}"
    );

    let r = b
        .invoke(request("get", b"", &[("path", "/big")]))
        .await
        .unwrap();
    assert_eq!(r.data.unwrap().len(), 1024);
}

#[tokio::test]
async fn unreachable_server_is_a_quick_backend_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b = binding(&[("url", &format!("http://127.0.0.1:{port}"))]).await;
    let started = Instant::now();
    let err = b.invoke(request("get", b"", &[])).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let BindingError::Backend(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.contains(&port.to_string()), "{m}");
}

#[tokio::test]
async fn bad_component_metadata_is_refused() {
    for (md, field) in [
        (vec![], "url"),
        (vec![("url", "not a url")], "url"),
        (
            vec![("url", "http://x"), ("responseTimeout", "soon")],
            "responseTimeout",
        ),
        (
            vec![("url", "http://x"), ("maxResponseBodySize", "big")],
            "maxResponseBodySize",
        ),
        (
            vec![("url", "http://x"), ("MTLSRootCA", "/no/such/file.pem")],
            "MTLSRootCA",
        ),
        (
            vec![("url", "http://x"), ("MTLSClientCert", "/no/such.pem")],
            "MTLSClientCert",
        ),
    ] {
        let Err(e) = HttpBinding::create(init("web", &md)).await else {
            panic!("{md:?} must be refused")
        };
        assert!(e.to_string().contains(field), "{md:?}: {e}");
    }
}
