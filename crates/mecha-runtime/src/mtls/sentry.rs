//! The certificate-signing service (`mecha sentry`) and its client in the sidecar.
//!
//! The service speaks Dapr Sentry's `dapr.proto.sentry.v1.CA/SignCertificate` over gRPC on
//! TLS 1.3 (its own certificate, id `spiffe://<td>/ns/<ns>/dapr-sentry`, is signed by the same
//! issuer and renewed like a workload's). A request names an app id, namespace and trust
//! domain, carries a PEM CSR, and must carry the bootstrap token; the answer is a certificate
//! for exactly that SPIFFE id, valid from `allowedClockSkew` ago for `workloadCertTTL`, with the
//! issuer chain. Any holder of the token may ask for any id: the token stands for "runs on a
//! machine this CA trusts", as Dapr's self-hosted Sentry does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mecha_proto::sentry::{SIGN_CERTIFICATE_PATH, SignCertificateRequest, SignCertificateResponse};
use tonic::Status;

use super::ca::CertificateAuthority;
use super::tls::{Expect, Trust, Workload};
use super::{CertSource, SpiffeId};

/// The app id in the signing service's own certificate.
pub const SENTRY_APP_ID: &str = "dapr-sentry";

/// How the signing service signs.
pub struct Signer {
    ca: CertificateAuthority,
    token: String,
    ttl: Duration,
    skew: Duration,
}

impl Signer {
    /// A signer with the issuer `ca`, requiring `token`.
    pub fn new(ca: CertificateAuthority, token: String, ttl: Duration, skew: Duration) -> Self {
        Self {
            ca,
            token,
            ttl,
            skew,
        }
    }

    /// The CA.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Checks and signs one request.
    pub fn sign(&self, req: &SignCertificateRequest) -> Result<SignCertificateResponse, Status> {
        if !constant_time_eq(req.token.as_bytes(), self.token.as_bytes()) {
            tracing::warn!(app_id = %req.id, namespace = %req.namespace, "Refused a certificate request with a wrong token");
            return Err(Status::unauthenticated(
                "the bootstrap token is missing or wrong",
            ));
        }
        let trust_domain = if req.trust_domain.is_empty() {
            "public"
        } else {
            &req.trust_domain
        };
        let namespace = if req.namespace.is_empty() {
            "default"
        } else {
            &req.namespace
        };
        let id = SpiffeId::new(trust_domain, namespace, &req.id);
        id.validate().map_err(Status::invalid_argument)?;
        let csr = std::str::from_utf8(&req.certificate_signing_request)
            .map_err(|_| Status::invalid_argument("the CSR is not PEM text"))?;
        let issued = self
            .ca
            .sign_csr(csr, &id, self.ttl, self.skew)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(id = %id, ttl = ?self.ttl, "Signed a workload certificate");
        Ok(SignCertificateResponse {
            workload_certificate: issued.cert_pem.into_bytes(),
            trust_chain_certificates: issued
                .chain_pem
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            valid_until: Some(timestamp(issued.not_after)),
        })
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router serving `SignCertificate` with `signer`.
pub fn router(signer: Arc<Signer>) -> axum::Router {
    let svc = tower::service_fn(move |req: axum::extract::Request| {
        let signer = signer.clone();
        async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                SignCertificateResponse,
                SignCertificateRequest,
            >::default());
            Ok::<_, Infallible>(grpc.unary(Unary(signer), req).await)
        }
    });
    axum::Router::new().route_service(SIGN_CERTIFICATE_PATH, svc)
}

struct Unary(Arc<Signer>);

impl tonic::server::UnaryService<SignCertificateRequest> for Unary {
    type Response = SignCertificateResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, Status>>;

    fn call(&mut self, request: tonic::Request<SignCertificateRequest>) -> Self::Future {
        std::future::ready(self.0.sign(request.get_ref()).map(tonic::Response::new))
    }
}

/// Certificates from this process's own issuer (the signing service's certificate).
pub struct LocalSource {
    /// The signer.
    pub signer: Arc<Signer>,
    /// The id to issue for.
    pub id: SpiffeId,
    /// Extra DNS / IP names.
    pub names: Vec<rcgen::SanType>,
}

#[async_trait]
impl CertSource for LocalSource {
    async fn fetch(&self) -> Result<(String, String), String> {
        let (key, issued) = self
            .signer
            .ca
            .issue(&self.id, &self.names, self.signer.ttl, self.signer.skew)
            .map_err(|e| e.to_string())?;
        let mut chain = issued.cert_pem;
        for c in issued.chain_pem {
            chain.push_str(&c);
        }
        Ok((chain, key))
    }
}

/// Certificates from a signing service.
pub struct SentryClient {
    /// `host:port` of the service.
    pub address: String,
    /// The bootstrap token.
    pub token: String,
    /// The id asked for.
    pub id: SpiffeId,
    /// The trust anchors the service's certificate must chain to.
    pub trust: Arc<Trust>,
}

#[async_trait]
impl CertSource for SentryClient {
    async fn fetch(&self) -> Result<(String, String), String> {
        use hyper_util::client::legacy::Client;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.id.app_id.as_str());
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| format!("making the CSR: {e}"))?;
        let tls = self
            .trust
            .anonymous_client_config(Expect::AppId(SENTRY_APP_ID.into()));
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http2()
            .wrap_connector(http);
        let client: Client<_, tonic::body::Body> =
            Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build(https);
        let origin: http::Uri = format!("https://{}", self.address)
            .parse()
            .map_err(|e| format!("the signing service address '{}': {e}", self.address))?;
        let mut grpc = tonic::client::Grpc::with_origin(client, origin);
        grpc.ready()
            .await
            .map_err(|e| format!("the signing service at {}: {e}", self.address))?;
        let request = SignCertificateRequest {
            id: self.id.app_id.clone(),
            token: self.token.clone(),
            trust_domain: self.id.trust_domain.clone(),
            namespace: self.id.namespace.clone(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: 0,
        };
        let mut req = tonic::Request::new(request);
        req.set_timeout(Duration::from_secs(10));
        let res = grpc
            .unary(
                req,
                http::uri::PathAndQuery::from_static(SIGN_CERTIFICATE_PATH),
                tonic_prost::ProstCodec::<SignCertificateRequest, SignCertificateResponse>::default(
                ),
            )
            .await
            .map_err(|s| {
                format!(
                    "the signing service at {} refused: {} ({:?})",
                    self.address,
                    s.message(),
                    s.code()
                )
            })?
            .into_inner();
        let mut chain = String::from_utf8(res.workload_certificate)
            .map_err(|_| "the signed certificate is not PEM text".to_owned())?;
        for c in res.trust_chain_certificates {
            chain.push_str(&String::from_utf8_lossy(&c));
        }
        Ok((chain, key.serialize_pem()))
    }
}

/// The signing service's own workload, renewed in the background.
pub async fn sentry_workload(
    signer: Arc<Signer>,
    id: SpiffeId,
    names: Vec<rcgen::SanType>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Arc<Workload>, String> {
    let trust = Trust::from_pem(signer.ca.trust_anchors_pem())?;
    let source: Arc<dyn CertSource> = Arc::new(LocalSource {
        signer: signer.clone(),
        id: id.clone(),
        names,
    });
    super::start_workload(id, trust, source, shutdown).await
}

/// How `mecha sentry` runs.
#[derive(Clone, Debug)]
pub struct SentryOptions {
    /// The CA folder (`mecha ca init`).
    pub dir: std::path::PathBuf,
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The bootstrap token sidecars must present.
    pub token: String,
    /// The trust domain of the service's own certificate.
    pub trust_domain: String,
    /// The namespace of the service's own certificate.
    pub namespace: String,
    /// `spec.mtls` of its Configuration: certificate lifetime and clock skew.
    pub spec: super::MtlsSpec,
}

/// Serves the signing service until `shutdown`.
pub async fn run(opts: SentryOptions, shutdown: crate::ShutdownHandle) -> Result<(), String> {
    let ca = CertificateAuthority::load(&opts.dir)
        .map_err(|e| format!("{e} (create the CA first with `mecha ca init`)"))?;
    if opts.token.trim().is_empty() {
        return Err("the bootstrap token is empty".into());
    }
    let signer = Arc::new(Signer::new(
        ca,
        opts.token.trim().to_owned(),
        opts.spec.workload_cert_ttl,
        opts.spec.allowed_clock_skew,
    ));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let ip = if opts.listen.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        opts.listen.ip()
    };
    let names = vec![
        rcgen::SanType::DnsName(
            rcgen::string::Ia5String::try_from("localhost").map_err(|e| e.to_string())?,
        ),
        rcgen::SanType::IpAddress(ip),
    ];
    let id = SpiffeId::new(&opts.trust_domain, &opts.namespace, SENTRY_APP_ID);
    let workload = sentry_workload(signer.clone(), id, names, shutdown.clone().wait()).await?;
    let tls = Arc::new(workload.server_config(false)?);
    tracing::info!(
        address = %listener.local_addr().map_err(|e| e.to_string())?,
        workload_cert_ttl = ?opts.spec.workload_cert_ttl,
        allowed_clock_skew = ?opts.spec.allowed_clock_skew,
        "Certificate-signing service listening (gRPC over TLS 1.3)"
    );
    super::tls::serve(listener, tls, router(signer), shutdown.wait()).await;
    tracing::info!("Certificate-signing service stopped");
    Ok(())
}
