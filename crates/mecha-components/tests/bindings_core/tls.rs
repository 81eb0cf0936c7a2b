//! `bindings.http` over TLS and mutual TLS against `openssl s_server -www`, with a CA, a server
//! and a client certificate made by the `openssl` command line on the fly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mecha_components::bindings::http::HttpBinding;
use mecha_core::bindings::BindingError;

use crate::{created, init, request};

/// Certificates in a temporary folder: `ca.pem`, `server.{pem,key}`, `client.{pem,key}`.
struct Pki {
    dir: tempfile::TempDir,
}

/// An `openssl s_server` process, killed on drop.
struct SServer {
    child: Child,
    port: u16,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`openssl` must be on PATH for the TLS tests: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// === impl Pki ===

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=mecha-test-ca"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        for (name, usage, san) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut req = vec!["req", "-subj"];
            let subj = format!("/CN={name}");
            req.push(subj.as_str());
            req.extend(ec);
            req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
            openssl(d, &req);
            std::fs::write(
                d.join(&ext),
                format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{san}"),
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &pem,
                ],
            );
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn path_str(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_owned()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    /// Starts `openssl s_server -www`; with `require_client_cert`, only clients presenting a
    /// certificate signed by the CA are served.
    async fn serve(&self, require_client_cert: bool) -> SServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-www", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(self.path("server.pem"))
            .arg("-key")
            .arg(self.path("server.key"));
        if require_client_cert {
            cmd.args(["-Verify", "1", "-CAfile"])
                .arg(self.path("ca.pem"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("`openssl` must be on PATH for the TLS tests: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SServer { child, port }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn root_ca_from_a_file_and_inline() {
    let pki = Pki::new();
    let server = pki.serve(false).await;
    let url = format!("https://localhost:{}", server.port);
    for root in [pki.path_str("ca.pem"), pki.read("ca.pem")] {
        let c = created(
            HttpBinding::create(init("tls", &[("url", &url), ("MTLSRootCA", &root)])).await,
        );
        let r = c
            .output
            .as_ref()
            .unwrap()
            .invoke(request("get", b"", &[]))
            .await
            .unwrap();
        assert_eq!(
            r.metadata.get("statusCode").map(String::as_str),
            Some("200")
        );
        let body = String::from_utf8_lossy(r.data.as_deref().unwrap()).into_owned();
        assert!(body.contains("no client certificate available"), "{body}");
    }

    // Without the CA the server is not trusted, quickly and clearly.
    let c = created(HttpBinding::create(init("tls", &[("url", &url)])).await);
    let started = Instant::now();
    let err = c
        .output
        .as_ref()
        .unwrap()
        .invoke(request("get", b"", &[]))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let BindingError::Backend(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.to_lowercase().contains("certificate"), "{m}");

    // insecureSkipVerify accepts it anyway.
    let md = [("url", url.as_str()), ("insecureSkipVerify", "true")];
    let c = created(HttpBinding::create(init("tls", &md)).await);
    c.output
        .as_ref()
        .unwrap()
        .invoke(request("get", b"", &[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn client_certificate_for_mutual_tls() {
    let pki = Pki::new();
    let server = pki.serve(true).await;
    let url = format!("https://localhost:{}", server.port);
    let (ca, cert, key) = (
        pki.path_str("ca.pem"),
        pki.read("client.pem"),
        pki.path_str("client.key"),
    );
    let md = [
        ("url", url.as_str()),
        ("MTLSRootCA", ca.as_str()),
        ("MTLSClientCert", cert.as_str()),
        ("MTLSClientKey", key.as_str()),
    ];
    let c = created(HttpBinding::create(init("mtls", &md)).await);
    let r = c
        .output
        .as_ref()
        .unwrap()
        .invoke(request("get", b"", &[]))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(r.data.as_deref().unwrap()).into_owned();
    assert!(!body.contains("no client certificate available"), "{body}");

    // Without the client certificate the server refuses the handshake.
    let c = created(HttpBinding::create(init("mtls", &md[..2])).await);
    let err = c
        .output
        .as_ref()
        .unwrap()
        .invoke(request("get", b"", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, BindingError::Backend(_)), "{err:?}");

    // A certificate without its key is refused at creation.
    let Err(e) = HttpBinding::create(init("mtls", &md[..3])).await else {
        panic!("MTLSClientKey is needed with MTLSClientCert")
    };
    assert!(e.to_string().contains("MTLSClientKey"), "{e}");
}
