//! The CA, the signing service and TLS between workloads, over real sockets.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::sentry::{SENTRY_APP_ID, SentryClient, Signer, sentry_workload};
use super::tls::{self, Expect};
use super::*;

struct Pki {
    _dir: tempfile::TempDir,
    signer: Arc<Signer>,
    token: String,
    trust: Arc<Trust>,
}

fn pki(ttl: Duration) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    ca::init(&ca::InitOptions {
        dir: dir.path().to_owned(),
        existing: None,
        force: false,
    })
    .unwrap();
    let token = std::fs::read_to_string(dir.path().join(ca::TOKEN)).unwrap();
    let authority = ca::CertificateAuthority::load(dir.path()).unwrap();
    let trust = Trust::from_pem(authority.trust_anchors_pem()).unwrap();
    let signer = Arc::new(Signer::new(
        authority,
        token.clone(),
        ttl,
        Duration::from_secs(10),
    ));
    Pki {
        _dir: dir,
        signer,
        token,
        trust,
    }
}

/// Starts the signing service; returns its address.
async fn start_sentry(p: &Pki) -> String {
    let id = SpiffeId::new("public", "default", SENTRY_APP_ID);
    let w = sentry_workload(p.signer.clone(), id, Vec::new(), std::future::pending())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Arc::new(w.server_config(false).unwrap());
    tokio::spawn(tls::serve(
        listener,
        config,
        sentry::router(p.signer.clone()),
        std::future::pending(),
    ));
    addr
}

fn client_of(p: &Pki, sentry: &str, app: &str) -> Arc<SentryClient> {
    Arc::new(SentryClient {
        address: sentry.to_owned(),
        token: p.token.clone(),
        id: SpiffeId::new("public", "default", app),
        trust: p.trust.clone(),
    })
}

async fn workload(p: &Pki, sentry: &str, app: &str) -> Arc<Workload> {
    let source = client_of(p, sentry, app);
    start_workload(
        source.id.clone(),
        p.trust.clone(),
        source,
        std::future::pending(),
    )
    .await
    .unwrap()
}

/// What a caller of `id` accepts: that app id in that namespace.
fn expect(id: &SpiffeId) -> Expect {
    Expect::App {
        namespace: id.namespace.clone(),
        app_id: id.app_id.clone(),
    }
}

/// Serves, over mTLS as `w`, an endpoint answering with the caller's verified app id.
async fn serve_whoami(w: &Arc<Workload>) -> u16 {
    let router = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        req.extensions()
            .get::<PeerIdentity>()
            .map(|p| p.id().to_string())
            .unwrap_or_else(|| "anonymous".into())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(tls::serve(
        listener,
        Arc::new(w.server_config(true).unwrap()),
        router,
        std::future::pending(),
    ));
    port
}

async fn get(config: rustls::ClientConfig, port: u16) -> Result<String, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Body> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let res = client
        .get(format!("https://127.0.0.1:{port}/x").parse().unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

#[tokio::test]
async fn signing_service_and_mutual_tls() {
    let p = pki(Duration::from_secs(3600));
    let sentry = start_sentry(&p).await;
    let a = workload(&p, &sentry, "a").await;
    let b = workload(&p, &sentry, "b").await;
    assert_eq!(a.id(), &SpiffeId::new("public", "default", "a"));
    let port = serve_whoami(&b).await;

    // Both sides verified: the callee sees the caller's id from its certificate.
    let ok = get(a.client_config(expect(b.id())), port).await;
    assert_eq!(ok.unwrap(), "spiffe://public/ns/default/a");

    // The caller refuses a callee that is not the app it meant to call.
    let wrong = get(
        a.client_config(expect(&SpiffeId::new("public", "default", "c"))),
        port,
    )
    .await;
    assert!(
        format!("{wrong:?}").contains("NotValidForName"),
        "{wrong:?}"
    );

    // No client certificate: refused.
    let anonymous = get(p.trust.anonymous_client_config(expect(b.id())), port).await;
    assert!(
        format!("{anonymous:?}").contains("CertificateRequired"),
        "{anonymous:?}"
    );

    // A client certificate from another CA is refused by the server, even when that client
    // trusts the server; and a client of the other CA alone does not trust the server.
    let other = pki(Duration::from_secs(3600));
    let other_sentry = start_sentry(&other).await;
    let (key, issued) = other
        .signer
        .ca()
        .issue(
            &SpiffeId::new("public", "default", "a"),
            &[],
            Duration::from_secs(3600),
            Duration::from_secs(0),
        )
        .unwrap();
    let both = Trust::from_pem(&format!(
        "{}{}",
        p.signer.ca().trust_anchors_pem(),
        other.signer.ca().trust_anchors_pem()
    ))
    .unwrap();
    let chain = format!("{}{}", issued.cert_pem, issued.chain_pem.concat());
    let stranger =
        Workload::new(SpiffeId::new("public", "default", "a"), both, &chain, &key).unwrap();
    let refused = get(stranger.client_config(expect(b.id())), port).await;
    let text = format!("{refused:?}");
    assert!(text.contains("AlertReceived"), "{text}");
    let outsider = workload(&other, &other_sentry, "a").await;
    let distrusted = get(outsider.client_config(expect(b.id())), port).await;
    assert!(
        format!("{distrusted:?}").contains("InvalidCertificate"),
        "{distrusted:?}"
    );

    // A wrong bootstrap token gets no certificate.
    let mut bad = SentryClient {
        address: sentry.clone(),
        token: "not-the-token".into(),
        id: SpiffeId::new("public", "default", "x"),
        trust: p.trust.clone(),
    };
    let e = bad.fetch().await.unwrap_err();
    assert!(e.contains("token"), "{e}");
    // A signing service whose certificate comes from another CA is not trusted.
    bad.token = p.token.clone();
    bad.address = other_sentry;
    let e = bad.fetch().await.unwrap_err();
    assert!(e.contains("signing service"), "{e}");
}

#[tokio::test]
async fn expired_certificates_are_refused_and_renewal_keeps_serving() {
    let p = pki(Duration::from_secs(3));
    let sentry = start_sentry(&p).await;
    let b = workload(&p, &sentry, "b").await;
    let port = serve_whoami(&b).await;

    // A certificate that has expired: the client still presents it, the server refuses it.
    let (key, issued) = p
        .signer
        .ca()
        .issue(
            &SpiffeId::new("public", "default", "old"),
            &[],
            Duration::from_secs(1),
            Duration::from_secs(0),
        )
        .unwrap();
    let chain = format!("{}{}", issued.cert_pem, issued.chain_pem.concat());
    let old = Workload::new(
        SpiffeId::new("public", "default", "old"),
        p.trust.clone(),
        &chain,
        &key,
    )
    .unwrap();
    let config = old.client_config(expect(b.id()));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = get(config, port).await;
    assert!(
        format!("{expired:?}").contains("CertificateExpired"),
        "{expired:?}"
    );

    // Meanwhile b's 3 s certificate has been renewed (at 70 % of its life) and b keeps
    // answering new connections with a valid certificate.
    let a = workload(&p, &sentry, "a").await;
    let first = b.not_after();
    let mut answers = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        let r = get(a.client_config(expect(b.id())), port).await;
        assert_eq!(r.unwrap(), "spiffe://public/ns/default/a");
        answers += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answers > 20);
    assert!(b.not_after() > first, "b's certificate was not renewed");
}

#[test]
fn mtls_spec() {
    let spec =
        serde_json::json!({"enabled": true, "workloadCertTTL": "1h", "allowedClockSkew": "1m"});
    let s = MtlsSpec::from_spec(Some(&spec)).unwrap();
    assert!(s.enabled);
    assert_eq!(s.workload_cert_ttl, Duration::from_secs(3600));
    assert_eq!(s.allowed_clock_skew, Duration::from_secs(60));
    assert_eq!(MtlsSpec::from_spec(None).unwrap(), MtlsSpec::default());
    assert!(MtlsSpec::from_spec(Some(&serde_json::json!({"enabled": 3}))).is_err());
    assert!(MtlsSpec::from_spec(Some(&serde_json::json!({"workloadCertTTL": "soon"}))).is_err());
}
