//! Pipeline tests: every middleware through a small router, in order, with real time and
//! tokens signed here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::bearer::{Bearer, check_claims};
use super::*;

/// A 2048-bit RSA private key (PKCS#1 DER), for signing RS256/PS256 test tokens.
const RSA_TEST_KEY: &[&str] = &[
    "MIIEowIBAAKCAQEA0bW1iDl4TsB257CLQlobS485pxrL7unxSXBMX+akKDtWWT7MqQw7/a5zWjhDZ1GK/woJGe5dkf+5I7KD",
    "CnrFmPTKppZ0/7s+ChWGZg5AJBgYOmmlgFKTTcZkjiwiJwOTPY2g4zZl1sC7BzuY1LJbIUOa2ezeI1fv80Y8ndtkeSb2dmf8",
    "SotvXdGgr+6FTnZReGJ1amuRGgLloPSLtMCzIl10AvTEaYDyNfPzSv4W3PB2bfaMc6YiS8bFJ6AtAJ5BjzJhf+2Fgxkotirz",
    "pINDz8VBracs+Ib2F15qkjyIPpP/GYuPitgPD9nOiKIsqjPIhX0FXoKMx3OtscNvmResfwIDAQABAoIBADNn6IzxEYW0djFL",
    "PIfSULiP7mEBF5aEMEqBRaeIgRr/mKYd18tknVwNJGesPRGZkon8Ksj5fmRonDic7LRn7gIVl4uIfDun6YhNSHnB6oUuhtni",
    "xdgT5dn91O5o8SJBJRnEmvi3f/VJn08hk9AnvGEGEnJzNuzRBJfM0tUbT6DGs6dOLWugE5j1sJWV12exKFIX7eb9nUMoBs+I",
    "oC2drieZT8v4kegud6cs9jX3z7RSaaW25RAQkDoN8AD7KH+t892OgOtjSwOZg4ijkakQhu5N4yRL1lFRreKGZl4YtH3uyLkO",
    "JE/z7YwaHJyGel7mUieiYCMYmCNxbaok1fr8MSECgYEA7eN1eYR2FYx24c79++aRe3iC8RTWgScTqisscLTRlRvDwi68rHvr",
    "c/BtkP96GbQDcSivW3KDgizTHEmmp7dk9ovxIW0tOSZgekHt2EVQskX7qwEazni7t4sFjPVX7elHpyjFC0V10U4wfdWCF74E",
    "Bk1pSrEFm56K700P7+wnF/ECgYEA4a0JOROJa3Uh7YA4wWjnn9j0iR28pDbcpvt4uHfZYp9la7GBmtMDj40UlYcpMetdtxsr",
    "Igq34u14XhmiPE4b1gIFoP5FXgUqJ4MGZXoHjy64ZztYNAd7lKi9Pl0mmOu07qB+6eeVwIE9lNxRCVj7RFzxXEkduZ/z1TxD",
    "8y1b+28CgYAN5R9Tfb03/QBkqCaFtC4DPELJuiHdYV7wrZzm6GjlgL2qdfhnSsWx+/UqZwHGxpD85xd3C/VKgTvDhznIyhmH",
    "nRz0it/9WpSAD6HI5COWhifxERtzu/GbAu/MD/iW2O1qgiMgSWpcU2jZsMLsiBjMFXF0/2oIcPZEjAfGR9DwwQKBgHMfak0L",
    "glam8h/OASXo9f+9FUG9QbYjpnwoXHT97o848Ov3KT5p1q8sMQv2XzVv8+asnVxIS3Yf3f9i5DgPQHPzpBt0mr5TtCVj2ad6",
    "kNCh7L/8rgocpxY23hMqQb5Qv4Pbq+J2mRYS1+9QVKaIFeXR4+5H/jnrNt/YVnF++iVRAoGBAK0PZzzgVEuU0v7y+TGkZDgv",
    "ETd6mckFQ0/evocEBi8cMEXV9cZ+xpR0x6ZqojfO4v8b0H25LbJCPPkjVHJ7EN8ZpK0TrsoDuH6fTtD6+35v6viW7c1jLPGc",
    "Eza+BlHXzfhyZc+PovzzsQyRLBtWlUTqHiYBMgfIBC6VCYMG3RKq",
];

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "mecha-app";

// === helpers ===

fn spec(name: &str, ty: &str, md: &[(&str, &str)]) -> MiddlewareSpec {
    MiddlewareSpec {
        name: name.to_owned(),
        component_type: ty.to_owned(),
        metadata: md
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn build(specs: &[MiddlewareSpec]) -> Pipeline {
    Pipeline::build(specs).unwrap_or_else(|e| panic!("{e}"))
}

fn build_err(specs: &[MiddlewareSpec]) -> String {
    match Pipeline::build(specs) {
        Ok(p) => panic!("expected an error, built {p:?}"),
        Err(e) => e,
    }
}

/// A router echoing the body, with the path and the bearer subject in headers, behind the
/// pipeline; `hits` counts requests that reached the route.
fn app(pipeline: Pipeline, hits: Arc<AtomicUsize>) -> Router {
    let echo = move |req: Request| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let sub = req
                .extensions()
                .get::<BearerClaims>()
                .and_then(|c| c.0.get("sub").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            let path = req.uri().path().to_owned();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            ([("x-path", path), ("x-sub", sub)], body).into_response()
        }
    };
    Router::new()
        .route("/", any(echo.clone()))
        .route("/{*rest}", any(echo))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(pipeline),
            layer,
        ))
}

async fn send(router: &Router, req: http::Request<Body>) -> (StatusCode, HeaderMap, String) {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get_req(path: &str) -> http::Request<Body> {
    http::Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, body: &str) -> http::Request<Body> {
    http::Request::post(path)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn with_token(path: &str, token: &str) -> http::Request<Body> {
    http::Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn claims(exp_in: i64) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now(), "exp": now() + exp_in})
}

/// A compact JWS over `header` and `claims`, signed by `sign`.
fn jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

struct EcKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl EcKey {
    fn new(kid: &str) -> EcKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        EcKey {
            pair: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
            kid: kid.to_owned(),
        }
    }

    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let rng = SystemRandom::new();
        jws(
            &json!({"alg": "ES256", "typ": "JWT", "kid": kid}),
            claims,
            |m| self.pair.sign(&rng, m).unwrap().as_ref().to_vec(),
        )
    }
}

fn rsa_key() -> RsaKeyPair {
    let der = STANDARD.decode(RSA_TEST_KEY.concat()).unwrap();
    RsaKeyPair::from_der(&der).unwrap()
}

fn rsa_jwk(pair: &RsaKeyPair, kid: &str) -> Value {
    let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e)})
}

fn rsa_sign(
    pair: &RsaKeyPair,
    alg: &'static dyn signature::RsaEncoding,
    name: &str,
    kid: &str,
    claims: &Value,
) -> String {
    let rng = SystemRandom::new();
    jws(&json!({"alg": name, "kid": kid}), claims, |m| {
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(alg, &rng, m, &mut sig).unwrap();
        sig
    })
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn bearer_pipeline(keys: &[Value]) -> Pipeline {
    let set = jwks(keys);
    build(&[spec(
        "auth",
        "middleware.http.bearer",
        &[("issuer", ISSUER), ("audience", AUDIENCE), ("jwks", &set)],
    )])
}

fn assert_unauthorized((status, headers, body): &(StatusCode, HeaderMap, String), why: &str) {
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    let challenge = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{why}: {challenge:?}");
}

// === building ===

#[test]
fn build_refuses_unknown_and_unsupported_types_naming_the_component() {
    let e = build_err(&[spec("o", "middleware.http.opa", &[])]);
    assert!(e.contains("'o'"), "{e}");
    assert!(
        e.contains("middleware.http.opa is not supported in this build"),
        "{e}"
    );
    let e = build_err(&[spec("w", "middleware.http.wasm", &[])]);
    assert!(e.contains("'w'"), "{e}");
    if cfg!(feature = "middleware-wasm") {
        assert!(e.contains("missing required metadata field url"), "{e}");
    } else {
        assert!(
            e.contains("--features middleware-wasm") && e.contains("not in this build"),
            "{e}"
        );
    }
    let e = build_err(&[
        spec("up", "middleware.http.uppercase", &[]),
        spec("odd", "middleware.http.nope", &[]),
    ]);
    assert!(
        e.contains("'odd'") && e.contains("unknown middleware type"),
        "{e}"
    );
}

#[test]
fn build_refuses_bad_metadata() {
    for (md, want) in [
        (vec![], "maxRequestsPerSecond"),
        (vec![("maxRequestsPerSecond", "0")], "greater than 0"),
        (vec![("maxRequestsPerSecond", "-3")], "greater than 0"),
        (vec![("maxRequestsPerSecond", "fast")], "must be a number"),
    ] {
        let e = build_err(&[spec("rl", "middleware.http.ratelimit", &md)]);
        assert!(e.contains("'rl'") && e.contains(want), "{e}");
    }
    let e = build_err(&[spec(
        "rc",
        "middleware.http.routerchecker",
        &[("rule", "([a-z")],
    )]);
    assert!(
        e.contains("'rc'") && e.contains("regular expression"),
        "{e}"
    );
    let e = build_err(&[spec("rc", "middleware.http.routerchecker", &[])]);
    assert!(e.contains("rule"), "{e}");
    let e = build_err(&[spec("b", "middleware.http.bearer", &[("audience", "a")])]);
    assert!(e.contains("'b'") && e.contains("issuer"), "{e}");
    let e = build_err(&[spec(
        "b",
        "middleware.http.bearer",
        &[("issuer", ISSUER), ("audience", "a"), ("jwks", "{not json")],
    )]);
    assert!(e.contains("jwks"), "{e}");
    let e = build_err(&[spec(
        "b",
        "middleware.http.bearer",
        &[
            ("issuer", ISSUER),
            ("audience", "a"),
            ("jwks", r#"{"keys": []}"#),
        ],
    )]);
    assert!(e.contains("no usable signing key"), "{e}");
    let e = build_err(&[spec(
        "b",
        "middleware.http.bearer",
        &[
            ("issuer", ISSUER),
            ("audience", "a"),
            ("jwksURL", "ftp://x/keys"),
        ],
    )]);
    assert!(e.contains("jwksURL"), "{e}");
}

#[test]
fn metadata_names_match_case_insensitively() {
    let p = build(&[spec(
        "rl",
        "middleware.http.ratelimit",
        &[("maxrequestspersecond", "5")],
    )]);
    assert_eq!(p.names().collect::<Vec<_>>(), ["rl"]);
    assert!(!p.is_empty());
    assert!(Pipeline::build(&[]).unwrap().is_empty());
}

#[test]
fn handler_lists_are_read_and_resolved_in_order() {
    let spec_json = json!({
        "httpPipeline": {"handlers": [
            {"name": "upper", "type": "middleware.http.uppercase"},
            {"name": "rc", "type": "middleware.http.routerchecker"}
        ]},
        "appHttpPipeline": {"handlers": [{"name": "upper", "type": "middleware.http.uppercase"}]}
    });
    let refs = handler_refs(&spec_json, HTTP_PIPELINE).unwrap();
    assert_eq!(
        refs.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["upper", "rc"]
    );
    assert_eq!(
        handler_refs(&spec_json, APP_HTTP_PIPELINE).unwrap().len(),
        1
    );
    assert!(handler_refs(&json!({}), HTTP_PIPELINE).unwrap().is_empty());
    assert!(
        handler_refs(
            &json!({"httpPipeline": {"handlers": [{"name": "x"}]}}),
            HTTP_PIPELINE
        )
        .is_err()
    );

    let loaded = [
        spec("rc", "middleware.http.routerchecker", &[("rule", "^/ok")]),
        spec("upper", "middleware.http.uppercase", &[]),
    ];
    let specs = resolve(&refs, &loaded).unwrap();
    assert_eq!(specs[0].name, "upper");
    assert_eq!(specs[1].name, "rc");
    let missing = [HandlerRef {
        name: "ghost".into(),
        component_type: "middleware.http.uppercase".into(),
    }];
    assert!(resolve(&missing, &loaded).unwrap_err().contains("'ghost'"));
    let wrong = [HandlerRef {
        name: "rc".into(),
        component_type: "middleware.http.uppercase".into(),
    }];
    assert!(
        resolve(&wrong, &loaded)
            .unwrap_err()
            .contains("routerchecker")
    );
}

// === uppercase and routerchecker ===

#[tokio::test]
async fn uppercase_rewrites_the_request_body() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = app(build(&[spec("up", "middleware.http.uppercase", &[])]), hits);
    let (status, _, body) = send(&app, post("/v1.0/invoke/a/method/m", "hello, wörld")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "HELLO, WÖRLD");
    let (status, _, body) = send(&app, get_req("/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn uppercase_refuses_bodies_over_the_limit() {
    let hits = Arc::new(AtomicUsize::new(0));
    let p = build(&[spec("up", "middleware.http.uppercase", &[])]).with_body_limit(8);
    let app = app(p, hits.clone());
    let (status, _, _) = send(&app, post("/x", "0123456789")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let (status, _, body) = send(&app, post("/x", "abc")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ABC"));
}

#[tokio::test]
async fn routerchecker_blocks_paths_outside_the_rule() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = app(
        build(&[spec(
            "rc",
            "middleware.http.routerchecker",
            &[("rule", "^[A-Za-z0-9/._-]+$")],
        )]),
        hits.clone(),
    );
    for ok in [
        "/v1.0/invoke/demo/method/method",
        "/v1.0/invoke/demo.default/method/user_info",
        "/v1.0/invoke/demo.default/method/user-info",
    ] {
        let (status, headers, _) = send(&app, get_req(ok)).await;
        assert_eq!(status, StatusCode::OK, "{ok}");
        assert_eq!(headers["x-path"], ok);
    }
    for bad in [
        "/v1.0/invoke/demo.default/method/cat%20password",
        "/v1.0/invoke/demo.default/method/%22%20AND%204210=4210%20limit%201",
        "/v1.0/invoke/demo.default/method/%22$(curl",
    ] {
        let (status, _, body) = send(&app, get_req(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body, "invalid router");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("/a%20b"), "/a b");
    assert_eq!(percent_decode("/a%2"), "/a%2");
    assert_eq!(percent_decode("/%zz%41"), "/%zzA");
    assert_eq!(percent_decode("/plain"), "/plain");
}

// === ratelimit ===

#[tokio::test]
async fn ratelimit_refuses_over_the_rate_and_recovers_with_time() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = app(
        build(&[spec(
            "rl",
            "middleware.http.ratelimit",
            &[("maxRequestsPerSecond", "4")],
        )]),
        hits.clone(),
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(&app, get_req("/v1.0/state/s")).await.0);
    }
    assert_eq!(&statuses[..4], [StatusCode::OK; 4]);
    assert_eq!(&statuses[4..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // 4 per second: one token back after 250 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(&app, get_req("/x")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, get_req("/x")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn ratelimit_keeps_one_bucket_per_client() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = app(
        build(&[spec(
            "rl",
            "middleware.http.ratelimit",
            &[("maxRequestsPerSecond", "1")],
        )]),
        hits,
    );
    let from = |addr: &str| {
        let mut req = get_req("/x");
        let addr: SocketAddr = addr.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    let forwarded = |ip: &str| {
        http::Request::get("/x")
            .header("x-forwarded-for", format!("{ip}, 10.0.0.1"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, from("10.1.1.1:5000")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, from("10.1.1.1:5001")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, from("10.1.1.2:5000")).await.0, StatusCode::OK);
    assert_eq!(send(&app, forwarded("192.0.2.7")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, forwarded("192.0.2.7")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, forwarded("192.0.2.8")).await.0, StatusCode::OK);
    // The peer address wins over a forwarding header.
    let mut spoofed = forwarded("192.0.2.99");
    spoofed
        .extensions_mut()
        .insert(ConnectInfo("10.1.1.1:6000".parse::<SocketAddr>().unwrap()));
    assert_eq!(send(&app, spoofed).await.0, StatusCode::TOO_MANY_REQUESTS);
    // No address at all: one shared bucket.
    assert_eq!(send(&app, get_req("/x")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, get_req("/x")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

// === order ===

#[tokio::test]
async fn middleware_apply_in_order_and_short_circuit() {
    // Upper-casing first changes nothing the checker looks at; the checker stops the request
    // before the route either way.
    let hits = Arc::new(AtomicUsize::new(0));
    let rc = spec("rc", "middleware.http.routerchecker", &[("rule", "^/ok")]);
    let up = spec("up", "middleware.http.uppercase", &[]);
    let app1 = app(build(&[up.clone(), rc.clone()]), hits.clone());
    assert_eq!(send(&app1, post("/ok", "abc")).await.2, "ABC");
    assert_eq!(
        send(&app1, post("/no", "abc")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Rate limit before authentication: refused tokens still spend the budget.
    let ec = EcKey::new("k1");
    let set = jwks(&[ec.jwk()]);
    let rl = spec(
        "rl",
        "middleware.http.ratelimit",
        &[("maxRequestsPerSecond", "1")],
    );
    let auth = spec(
        "auth",
        "middleware.http.bearer",
        &[("issuer", ISSUER), ("audience", AUDIENCE), ("jwks", &set)],
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let limit_first = app(build(&[rl.clone(), auth.clone()]), hits.clone());
    assert_unauthorized(&send(&limit_first, get_req("/x")).await, "no token");
    let token = ec.sign(&claims(300));
    assert_eq!(
        send(&limit_first, with_token("/x", &token)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Authentication first: anonymous requests never reach the limiter.
    let auth_first = app(build(&[auth, rl]), hits.clone());
    for _ in 0..3 {
        assert_unauthorized(&send(&auth_first, get_req("/x")).await, "no token");
    }
    let (status, headers, _) = send(&auth_first, with_token("/x", &token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-sub"], "alice");
    assert_eq!(
        send(&auth_first, with_token("/x", &token)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn handle_works_without_axum_middleware() {
    let p = build(&[spec("up", "middleware.http.uppercase", &[])]);
    let res = p
        .handle(post("/x", "shout"), |req: Request| async move {
            let body = axum::body::to_bytes(req.into_body(), 100).await.unwrap();
            (StatusCode::ACCEPTED, body).into_response()
        })
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"SHOUT");
}

// === bearer ===

#[tokio::test]
async fn bearer_accepts_a_valid_es256_token() {
    let ec = EcKey::new("k1");
    let app = app(bearer_pipeline(&[ec.jwk()]), Arc::new(AtomicUsize::new(0)));
    let (status, headers, _) = send(&app, with_token("/x", &ec.sign(&claims(300)))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-sub"], "alice");
    // An audience list holding ours, lower-case scheme, no kid in the header.
    let mut c = claims(300);
    c["aud"] = json!(["other", AUDIENCE]);
    let rng = SystemRandom::new();
    let no_kid = jws(&json!({"alg": "ES256"}), &c, |m| {
        ec.pair.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    let req = http::Request::get("/x")
        .header(header::AUTHORIZATION, format!("bearer {no_kid}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bearer_refuses_bad_tokens() {
    let ec = EcKey::new("k1");
    let other = EcKey::new("k1");
    let hits = Arc::new(AtomicUsize::new(0));
    let app = app(bearer_pipeline(&[ec.jwk()]), hits.clone());

    let res = send(&app, get_req("/x")).await;
    assert_unauthorized(&res, "missing");
    assert_eq!(res.1[header::WWW_AUTHENTICATE], "Bearer");

    let basic = http::Request::get("/x")
        .header(header::AUTHORIZATION, "Basic dTpw")
        .body(Body::empty())
        .unwrap();
    assert_unauthorized(&send(&app, basic).await, "basic auth");

    let expired = ec.sign(&claims(-3600));
    let res = send(&app, with_token("/x", &expired)).await;
    assert_unauthorized(&res, "expired");
    assert!(res.2.contains("expired"), "{}", res.2);

    let mut c = claims(300);
    c["aud"] = json!("someone-else");
    assert_unauthorized(
        &send(&app, with_token("/x", &ec.sign(&c))).await,
        "audience",
    );

    let mut c = claims(300);
    c["iss"] = json!("https://evil.example");
    assert_unauthorized(&send(&app, with_token("/x", &ec.sign(&c))).await, "issuer");

    let mut c = claims(300);
    c["nbf"] = json!(now() + 3600);
    assert_unauthorized(&send(&app, with_token("/x", &ec.sign(&c))).await, "nbf");

    let forged = other.sign(&claims(300));
    let res = send(&app, with_token("/x", &forged)).await;
    assert_unauthorized(&res, "bad signature");
    assert!(res.2.contains("signature"), "{}", res.2);

    // A valid signature over other claims, spliced onto new claims.
    let good = ec.sign(&claims(300));
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(300);
    c["sub"] = json!("mallory");
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_unauthorized(&send(&app, with_token("/x", &spliced)).await, "spliced");

    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims(300).to_string().as_bytes())
    );
    assert_unauthorized(&send(&app, with_token("/x", &none)).await, "alg none");
    assert_unauthorized(&send(&app, with_token("/x", "a.b")).await, "malformed");
    assert_unauthorized(
        &send(
            &app,
            with_token("/x", &ec.sign_as("unknown-kid", &claims(300))),
        )
        .await,
        "unknown kid",
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bearer_verifies_rsa_and_hmac_tokens() {
    let rsa = rsa_key();
    let secret = b"a shared secret of thirty-two by";
    let oct = json!({"kty": "oct", "kid": "h1", "alg": "HS256", "k": b64(secret)});
    let app = app(
        bearer_pipeline(&[rsa_jwk(&rsa, "r1"), oct]),
        Arc::new(AtomicUsize::new(0)),
    );
    let c = claims(300);
    let rs256 = rsa_sign(&rsa, &signature::RSA_PKCS1_SHA256, "RS256", "r1", &c);
    assert_eq!(send(&app, with_token("/x", &rs256)).await.0, StatusCode::OK);
    let ps256 = rsa_sign(&rsa, &signature::RSA_PSS_SHA256, "PS256", "r1", &c);
    assert_eq!(send(&app, with_token("/x", &ps256)).await.0, StatusCode::OK);
    // The RSA key must not be usable as an HMAC secret (algorithm confusion).
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"r1");
    let confused = jws(&json!({"alg": "HS256", "kid": "r1"}), &c, |m| {
        ring::hmac::sign(&key, m).as_ref().to_vec()
    });
    assert_unauthorized(&send(&app, with_token("/x", &confused)).await, "confusion");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let hs256 = jws(&json!({"alg": "HS256", "kid": "h1"}), &c, |m| {
        ring::hmac::sign(&key, m).as_ref().to_vec()
    });
    assert_eq!(send(&app, with_token("/x", &hs256)).await.0, StatusCode::OK);
    let mut expired = claims(-600);
    expired["sub"] = json!("old");
    let old = rsa_sign(&rsa, &signature::RSA_PKCS1_SHA256, "RS256", "r1", &expired);
    assert_unauthorized(&send(&app, with_token("/x", &old)).await, "expired rsa");
}

#[test]
fn claims_are_checked_with_leeway() {
    let t = 1_000_000.0;
    let ok = json!({"iss": "i", "aud": "a", "exp": 1_000_000, "nbf": 1_000_000});
    assert!(check_claims(&ok, "i", "a", t).is_ok());
    assert!(check_claims(&ok, "i", "a", t + 30.0).is_ok());
    assert!(check_claims(&ok, "i", "a", t - 30.0).is_ok());
    assert_eq!(check_claims(&ok, "i", "a", t + 120.0), Err("token expired"));
    assert_eq!(
        check_claims(&ok, "i", "a", t - 120.0),
        Err("token not valid yet")
    );
    assert!(check_claims(&json!({"iss": "i", "aud": "a"}), "i", "a", t).is_ok());
    assert!(check_claims(&json!({"iss": "i"}), "i", "a", t).is_err());
    assert!(check_claims(&json!({"iss": "i", "aud": "a", "exp": "soon"}), "i", "a", t).is_err());
    assert!(check_claims(&json!([]), "i", "a", t).is_err());
}

// === bearer with a key set served over HTTP ===

struct KeyServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn key_server() -> KeyServer {
    let keys = Arc::new(Mutex::new(json!({"keys": []})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (k, f) = (keys.clone(), fetches.clone());
    let issuer = url.clone();
    let router = Router::new()
        .route(
            "/jwks",
            get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let doc = k.lock().unwrap().clone();
                    axum::Json(doc)
                }
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let issuer = issuer.clone();
                async move {
                    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    KeyServer { url, keys, fetches }
}

fn remote_bearer(md: &[(&str, &str)], refetch: Duration) -> Pipeline {
    let md: HashMap<String, String> = md
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let bearer = Bearer::new(&md, refetch).unwrap_or_else(|e| panic!("{e}"));
    Pipeline {
        stages: vec![Stage {
            name: "auth".to_owned(),
            middleware: Middleware::Bearer(bearer),
        }],
        body_limit: None,
    }
}

#[tokio::test]
async fn bearer_fetches_the_key_set_and_refetches_for_new_keys_at_most_once_per_interval() {
    let server = key_server().await;
    let a = EcKey::new("a");
    let b = EcKey::new("b");
    *server.keys.lock().unwrap() = json!({"keys": [a.jwk()]});
    let jwks_url = format!("{}/jwks", server.url);
    let interval = Duration::from_secs(1);
    let app = app(
        remote_bearer(
            &[
                ("issuer", ISSUER),
                ("audience", AUDIENCE),
                ("jwksURL", &jwks_url),
            ],
            interval,
        ),
        Arc::new(AtomicUsize::new(0)),
    );
    for _ in 0..3 {
        assert_eq!(
            send(&app, with_token("/x", &a.sign(&claims(300)))).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        1,
        "cached after the first fetch"
    );

    // The issuer rotates to key b. Within the interval the unknown kid is refused without a
    // fetch; afterwards one fetch picks b up.
    *server.keys.lock().unwrap() = json!({"keys": [b.jwk()]});
    assert_unauthorized(
        &send(&app, with_token("/x", &b.sign(&claims(300)))).await,
        "too soon",
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert_eq!(
        send(&app, with_token("/x", &b.sign(&claims(300)))).await.0,
        StatusCode::OK
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

    // A flood of unknown kids causes no more fetches within the interval.
    for _ in 0..5 {
        let t = b.sign_as("nope", &claims(300));
        assert_unauthorized(&send(&app, with_token("/x", &t)).await, "unknown kid");
    }
    assert!(server.fetches.load(Ordering::SeqCst) <= 3);
}

#[tokio::test]
async fn bearer_discovers_the_key_set_from_the_issuer() {
    let server = key_server().await;
    let a = EcKey::new("a");
    *server.keys.lock().unwrap() = json!({"keys": [a.jwk()]});
    let app = app(
        build(&[spec(
            "auth",
            "middleware.http.bearer",
            &[("issuer", &server.url), ("audience", AUDIENCE)],
        )]),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut c = claims(300);
    c["iss"] = json!(server.url);
    assert_eq!(
        send(&app, with_token("/x", &a.sign(&c))).await.0,
        StatusCode::OK
    );
    assert!(server.fetches.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn bearer_refuses_everything_while_the_key_set_is_unreachable() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let a = EcKey::new("a");
    let app = app(
        remote_bearer(
            &[
                ("issuer", ISSUER),
                ("audience", AUDIENCE),
                ("jwksURL", &url),
            ],
            Duration::from_millis(50),
        ),
        Arc::new(AtomicUsize::new(0)),
    );
    let res = send(&app, with_token("/x", &a.sign(&claims(300)))).await;
    assert_unauthorized(&res, "unreachable");
}
