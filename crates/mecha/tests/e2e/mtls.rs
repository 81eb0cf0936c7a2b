//! mTLS between real sidecars: `mecha ca init`, `mecha sentry`, sidecars with certificates
//! from it (or given in DAPR_CERT_CHAIN / DAPR_CERT_KEY), access control on the verified
//! identity, the API tokens, refusal of plaintext and foreign-CA callers, and certificate
//! rotation under load.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mecha_test_support::{MechaProcess, eventually, free_port};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::MECHA;
use crate::invoke::echo_app;

/// A CA folder made by `mecha ca init`.
fn ca_init(dir: &Path) {
    let out = Command::new(MECHA)
        .args(["ca", "init", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ca.crt") && text.contains("issuer.key"),
        "{text}"
    );
    for f in ["ca.crt", "issuer.crt", "issuer.key", "token"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // A second init refuses to overwrite the CA.
    let again = Command::new(MECHA)
        .args(["ca", "init", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

/// A running `mecha sentry`.
struct Sentry {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Sentry {
    async fn start(pki: &Path, config: Option<&Path>) -> Self {
        let port = free_port();
        let log = pki.join("sentry.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(MECHA);
        cmd.args(["sentry", "--port", &port.to_string(), "--dir"])
            .arg(pki)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd.spawn().unwrap();
        let address = format!("127.0.0.1:{port}");
        eventually!(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&address).await.is_ok(),
            "the signing service did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sentry log ----\n{}", self.log());
        }
    }
}

/// A Configuration file with a private SQLite name resolution and `extra` spec lines.
fn config(dir: &Path, name: &str, names_db: &Path, extra: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: \"{}\"\n{extra}",
            names_db.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn mtls_args(pki: &Path, sentry: &Sentry) -> Vec<String> {
    vec![
        "--sentry-address".into(),
        sentry.address.clone(),
        "--trust-anchors-file".into(),
        pki.join("ca.crt").display().to_string(),
        "--sentry-token-file".into(),
        pki.join("token").display().to_string(),
    ]
}

async fn sidecar(
    app_id: &str,
    config: &str,
    app_port: Option<u16>,
    args: Vec<String>,
    envs: &[(&str, &str)],
) -> MechaProcess {
    let mut all = vec!["--config".to_owned(), config.to_owned()];
    if let Some(p) = app_port {
        all.push("--app-port".into());
        all.push(p.to_string());
    }
    all.extend(args);
    let mut b = MechaProcess::builder(MECHA).app_id(app_id).args(all);
    for (k, v) in envs {
        b = b.env(k, v);
    }
    b.start().await
}

async fn invoke(
    c: &Client,
    from: &MechaProcess,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut r = c.get(format!(
        "{}/v1.0/invoke/mtls-b/method{path}",
        from.http_url()
    ));
    if let Some(t) = token {
        r = r.header("dapr-api-token", t);
    }
    r.send().await.unwrap()
}

/// Two sidecars with certificates from one CA talk; the callee's app sees the caller id of the
/// certificate; access control applies to it; both API tokens work with mTLS; a plaintext
/// sidecar, one whose certificate comes from another CA, and one with a certificate for
/// another app id are refused or judged by that certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_pair_with_certificates_from_the_signing_service() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    ca_init(&pki);
    let sentry = Sentry::start(&pki, None).await;
    let names = dir.path().join("names.db");
    let acl = "  mtls:\n    enabled: true\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: mtls-a\n      defaultAction: deny\n      namespace: default\n      operations:\n      - name: /allowed/**\n        httpVerb: ['*']\n        action: allow\n";
    let callee_config = config(dir.path(), "callee", &names, acl);
    let caller_config = config(dir.path(), "caller", &names, "  mtls:\n    enabled: true\n");
    let plain_config = config(dir.path(), "plain", &names, "");

    let (port, echo) = echo_app("secure").await;
    let b = sidecar(
        "mtls-b",
        &callee_config,
        Some(port),
        mtls_args(&pki, &sentry),
        &[("APP_API_TOKEN", "to-the-app")],
    )
    .await;
    assert!(b.log().contains("mTLS, TLS 1.3"), "{}", b.log());
    let a = sidecar(
        "mtls-a",
        &caller_config,
        None,
        mtls_args(&pki, &sentry),
        &[("DAPR_API_TOKEN", "from-the-app")],
    )
    .await;
    let c = Client::new();
    eventually!(
        Duration::from_secs(15),
        invoke(&c, &a, "/allowed/1", Some("from-the-app"))
            .await
            .status()
            == StatusCode::OK,
        "the mTLS call never succeeded:\n{}\n{}",
        a.log(),
        b.log()
    );
    let v: Value = invoke(&c, &a, "/allowed/1?x=1", Some("from-the-app"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/allowed/1");
    assert_eq!(v["headers"]["dapr-caller-app-id"], "mtls-a");
    assert_eq!(v["headers"]["dapr-api-token"], "to-the-app");
    // DAPR_API_TOKEN is still required from the app.
    assert_eq!(
        invoke(&c, &a, "/allowed/1", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Access control judges the verified caller.
    let denied = invoke(&c, &a, "/secret", Some("from-the-app")).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let v: Value = denied.json().await.unwrap();
    assert_eq!(v["errorCode"], "ERR_PERMISSION_DENIED", "{v}");
    assert!(
        sentry.log().contains("spiffe://public/ns/default/mtls-a"),
        "{}",
        sentry.log()
    );

    // A sidecar without mTLS cannot reach the callee, whatever it claims.
    let plain = sidecar("mtls-a", &plain_config, None, Vec::new(), &[]).await;
    let before = echo.hits("/allowed/1");
    let r = invoke(&c, &plain, "/allowed/1", None).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "ERR_DIRECT_INVOKE", "{v}");

    // A sidecar whose certificate comes from another CA is refused by the callee.
    let other_pki = dir.path().join("other-pki");
    ca_init(&other_pki);
    let other_sentry = Sentry::start(&other_pki, None).await;
    let intruder = sidecar(
        "mtls-a",
        &caller_config,
        None,
        mtls_args(&other_pki, &other_sentry),
        &[],
    )
    .await;
    let r = invoke(&c, &intruder, "/allowed/1", None).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        echo.hits("/allowed/1"),
        before,
        "a refused call reached the app"
    );
    eventually!(
        Duration::from_secs(5),
        b.log().contains("TLS handshake refused"),
        "the callee did not log the refusal:\n{}",
        b.log()
    );

    // A certificate given in DAPR_CERT_CHAIN / DAPR_CERT_KEY (no signing service): its SPIFFE
    // id is the caller's identity, so access control sees `mtls-filed`, not `mtls-a`.
    let authority = mecha_runtime::mtls::ca::CertificateAuthority::load(&pki).unwrap();
    let (key, issued) = authority
        .issue(
            &mecha_runtime::mtls::SpiffeId::new("public", "default", "mtls-filed"),
            &[],
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .unwrap();
    let chain = format!("{}{}", issued.cert_pem, issued.chain_pem.concat());
    let anchors = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let filed = sidecar(
        "mtls-filed",
        &caller_config,
        None,
        Vec::new(),
        &[
            ("DAPR_CERT_CHAIN", &chain),
            ("DAPR_CERT_KEY", &key),
            ("DAPR_TRUST_ANCHORS", &anchors),
        ],
    )
    .await;
    let r = invoke(&c, &filed, "/allowed/1", None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", filed.log());
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mtls-filed"),
        "{v}"
    );

    // A caller whose certificate (given in files, so never renewed) has expired is refused.
    let (key, issued) = authority
        .issue(
            &mecha_runtime::mtls::SpiffeId::new("public", "default", "mtls-a"),
            &[],
            Duration::from_secs(2),
            Duration::from_secs(0),
        )
        .unwrap();
    let chain_file = dir.path().join("short.crt");
    let key_file = dir.path().join("short.key");
    std::fs::write(
        &chain_file,
        format!("{}{}", issued.cert_pem, issued.chain_pem.concat()),
    )
    .unwrap();
    std::fs::write(&key_file, key).unwrap();
    let anchors_file = pki.join("ca.crt").display().to_string();
    let short = sidecar(
        "mtls-a",
        &caller_config,
        None,
        vec![
            "--cert-chain-file".into(),
            chain_file.display().to_string(),
            "--cert-key-file".into(),
            key_file.display().to_string(),
            "--trust-anchors-file".into(),
            anchors_file,
        ],
        &[],
    )
    .await;
    // Certificate times have whole seconds: wait until a second after the last valid one.
    let expired_at = issued.not_after + Duration::from_millis(1100);
    if let Ok(wait) = expired_at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let before = echo.hits("/allowed/1");
    let r = invoke(&c, &short, "/allowed/1", None).await;
    assert_eq!(
        r.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        short.log()
    );
    assert_eq!(
        echo.hits("/allowed/1"),
        before,
        "an expired certificate reached the app"
    );
    eventually!(
        Duration::from_secs(5),
        b.log()
            .lines()
            .any(|l| l.contains("TLS handshake refused") && l.to_lowercase().contains("expired")),
        "the callee did not log the expired certificate:\n{}",
        b.log()
    );
}

/// Workload certificates of 4 s are renewed over and over while calls flow; no call fails,
/// and a sidecar started after the first certificates expired still reaches the callee.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_under_load_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    ca_init(&pki);
    let sentry_config = dir.path().join("sentry.yaml");
    std::fs::write(
        &sentry_config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    enabled: true\n    workloadCertTTL: 4s\n    allowedClockSkew: 1s\n",
    )
    .unwrap();
    let sentry = Sentry::start(&pki, Some(&sentry_config)).await;
    let names = dir.path().join("names.db");
    let conf = config(dir.path(), "mesh", &names, "");
    let mut args = mtls_args(&pki, &sentry);
    args.push("--enable-mtls".into());
    let (port, _echo) = echo_app("rotating").await;
    let b = sidecar("mtls-b", &conf, Some(port), args.clone(), &[]).await;
    let a = sidecar("mtls-a", &conf, None, args.clone(), &[]).await;
    let c = Client::new();
    eventually!(
        Duration::from_secs(15),
        invoke(&c, &a, "/ping", None).await.status() == StatusCode::OK,
        "the mTLS call never succeeded:\n{}\n{}",
        a.log(),
        b.log()
    );

    let ok = Arc::new(AtomicUsize::new(0));
    let stop = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (c, url, ok) = (
            c.clone(),
            format!("{}/v1.0/invoke/mtls-b/method/load", a.http_url()),
            ok.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while tokio::time::Instant::now() < stop {
                match c.post(&url).body("x").send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    // Meanwhile, fresh connections: a new caller every few seconds must handshake with the
    // callee's current certificate.
    let mut late_callers = Vec::new();
    for i in 0..2 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let late = sidecar(&format!("mtls-late{i}"), &conf, None, args.clone(), &[]).await;
        let r = invoke(&c, &late, "/late", None).await;
        assert_eq!(r.status(), StatusCode::OK, "{}\n{}", late.log(), b.log());
        late_callers.push(late);
    }
    for w in workers {
        let failures = w.await.unwrap();
        assert!(
            failures.is_empty(),
            "calls failed during rotation: {failures:?}"
        );
    }
    let done = ok.load(Ordering::Relaxed);
    assert!(done > 100, "only {done} calls");
    for p in [&a, &b] {
        let renewals = p.log().matches("Workload certificate renewed").count();
        assert!(
            renewals >= 3,
            "{} renewed {renewals} times:\n{}",
            p.app_id,
            p.log()
        );
    }
}

/// The official Python SDK's invocation (HTTP, gRPC `InvokeService`, gRPC proxying) through
/// sidecars that talk over mTLS.
#[tokio::test(flavor = "multi_thread")]
async fn sdk_invocation_and_grpc_proxying_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    ca_init(&pki);
    let sentry = Sentry::start(&pki, None).await;
    let mesh = crate::invoke::Mesh::with_spec("  mtls:\n    enabled: true\n");
    let args = mtls_args(&pki, &sentry);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (http_port, grpc_port) = (free_port(), free_port());
    let http_app = mesh.sidecar("mtls-py-http", Some(http_port), &args).await;
    let mut grpc_args = args.clone();
    grpc_args.extend(["--app-protocol", "grpc"]);
    let _grpc_app = mesh
        .sidecar("mtls-py-grpc", Some(grpc_port), &grpc_args)
        .await;
    let caller = mesh.sidecar("mtls-py-caller", None, &args).await;
    assert!(http_app.log().contains("mTLS, TLS 1.3"));
    crate::python_sdk::run_script(
        &caller,
        "invoke_sdk.py",
        &[
            ("HTTP_APP", "mtls-py-http"),
            ("GRPC_APP", "mtls-py-grpc"),
            ("HTTP_APP_PORT", &http_port.to_string()),
            ("GRPC_APP_PORT", &grpc_port.to_string()),
            ("CALLER_APP", "mtls-py-caller"),
        ],
    )
    .await;
}
