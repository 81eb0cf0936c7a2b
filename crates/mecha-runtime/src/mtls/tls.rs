//! TLS 1.3 with workload certificates: the current certificate of this sidecar (swapped on
//! rotation; connections already open keep theirs), server and client configurations that
//! verify the peer against the trust anchors, and an accept loop that hands each request the
//! peer's verified SPIFFE id.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpListener;

use super::SpiffeId;

/// How long a TLS handshake on an accepted connection may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The trust anchors, and what verifies a certificate chain against them.
pub struct Trust {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    anchors: Vec<TrustAnchor<'static>>,
}

/// This sidecar's identity: its SPIFFE id, the trust anchors and its current certificate.
pub struct Workload {
    id: SpiffeId,
    trust: Arc<Trust>,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
}

/// The verified identity of the peer of a TLS connection, as a request extension: made once
/// per connection, shared by its requests.
#[derive(Clone, Debug)]
pub struct PeerIdentity(Arc<Peer>);

#[derive(Debug)]
struct Peer {
    id: SpiffeId,
    app_id: http::HeaderValue,
    namespace: http::HeaderValue,
}

impl PeerIdentity {
    fn new(id: SpiffeId) -> Option<Self> {
        // SPIFFE ids hold only characters that are valid in header values.
        let app_id = http::HeaderValue::from_str(&id.app_id).ok()?;
        let namespace = http::HeaderValue::from_str(&id.namespace).ok()?;
        Some(Self(Arc::new(Peer {
            id,
            app_id,
            namespace,
        })))
    }

    /// The peer's SPIFFE id.
    pub fn id(&self) -> &SpiffeId {
        &self.0.id
    }

    /// The peer's app id as a header value.
    pub fn app_id_header(&self) -> &http::HeaderValue {
        &self.0.app_id
    }

    /// The peer's namespace as a header value.
    pub fn namespace_header(&self) -> &http::HeaderValue {
        &self.0.namespace
    }
}

/// Which server identity a client accepts.
#[derive(Clone, Debug)]
pub enum Expect {
    /// This app id in this namespace, in any trust domain of the anchors.
    App {
        /// The namespace.
        namespace: String,
        /// The app id.
        app_id: String,
    },
    /// This app id in any trust domain and namespace of the anchors (the signing service).
    AppId(String),
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").field("id", &self.id).finish()
    }
}

/// Parses PEM trust anchors.
pub fn parse_anchors(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the trust anchors do not parse: {e:?}"))?;
    if certs.is_empty() {
        return Err("the trust anchors hold no certificate".into());
    }
    Ok(certs)
}

/// Builds a [`CertifiedKey`] from a PEM chain (leaf first) and a PEM private key.
pub fn certified_key(
    chain_pem: &str,
    key_pem: &str,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, SystemTime), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate chain does not parse: {e:?}"))?;
    let leaf = chain
        .first()
        .ok_or("the certificate chain holds no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the workload certificate does not parse: {e}"))?;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0));
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the private key does not parse: {e:?}"))?;
    let ck = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))?;
    Ok((ck, not_after))
}

impl Trust {
    /// Trust in the PEM certificates `anchors_pem`.
    pub fn from_pem(anchors_pem: &str) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let mut anchors = Vec::new();
        for d in &parse_anchors(anchors_pem)? {
            roots
                .add(d.clone())
                .map_err(|e| format!("a trust anchor is unusable: {e}"))?;
            anchors.push(
                webpki::anchor_from_trusted_cert(d)
                    .map_err(|e| format!("a trust anchor is unusable: {e}"))?
                    .to_owned(),
            );
        }
        Ok(Arc::new(Self {
            provider,
            roots: Arc::new(roots),
            anchors,
        }))
    }

    fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(pki_error)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map(|_| ())
        .map_err(pki_error)
    }

    /// A client that presents no certificate (to fetch the first one), TLS 1.3, verifying the
    /// server against the anchors and `expect`. (The HTTP connector sets ALPN.)
    pub fn anonymous_client_config(self: &Arc<Self>, expect: Expect) -> rustls::ClientConfig {
        self.client_builder(expect).with_no_client_auth()
    }

    fn client_builder(
        self: &Arc<Self>,
        expect: Expect,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|_| unreachable!("the ring provider supports TLS 1.3"))
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier {
                trust: self.clone(),
                expect,
            }))
    }
}

impl Workload {
    /// A workload with its first certificate.
    pub fn new(
        id: SpiffeId,
        trust: Arc<Trust>,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Arc<Self>, String> {
        let (key, not_after) = certified_key(chain_pem, key_pem, &trust.provider)?;
        let w = Self {
            id,
            trust,
            current: RwLock::new(Current {
                key: Arc::new(key),
                not_after,
            }),
        };
        w.check_own(&w.current_key())?;
        Ok(Arc::new(w))
    }

    /// This sidecar's id.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    fn current_key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .key
            .clone()
    }

    /// Installs a renewed certificate; new handshakes use it.
    pub fn rotate(&self, chain_pem: &str, key_pem: &str) -> Result<SystemTime, String> {
        let (key, not_after) = certified_key(chain_pem, key_pem, &self.trust.provider)?;
        let key = Arc::new(key);
        self.check_own(&key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current { key, not_after };
        Ok(not_after)
    }

    /// A certificate of ours must carry our id and chain to the anchors.
    fn check_own(&self, key: &CertifiedKey) -> Result<(), String> {
        let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
        match SpiffeId::from_cert_der(leaf) {
            Some(id) if id == self.id => {}
            Some(other) => {
                return Err(format!(
                    "the workload certificate is for {other}, not {}",
                    self.id
                ));
            }
            None => return Err("the workload certificate carries no SPIFFE id".into()),
        }
        self.trust
            .verify_chain(
                leaf,
                &key.cert[1..],
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
            )
            .map_err(|e| {
                format!("the workload certificate does not chain to the trust anchors: {e}")
            })
    }

    /// The server side: TLS 1.3; with `client_auth`, a client certificate that chains to the
    /// anchors is required.
    pub fn server_config(
        self: &Arc<Self>,
        client_auth: bool,
    ) -> Result<rustls::ServerConfig, String> {
        let builder = rustls::ServerConfig::builder_with_provider(self.trust.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?;
        let builder = if client_auth {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                self.trust.roots.clone(),
                self.trust.provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The client side: TLS 1.3, this workload's certificate, a server certificate that
    /// chains to the anchors and carries the `expect`ed id. (The HTTP connector sets ALPN.)
    pub fn client_config(self: &Arc<Self>, expect: Expect) -> rustls::ClientConfig {
        self.trust
            .client_builder(expect)
            .with_client_cert_resolver(self.clone())
    }
}

impl rustls::server::ResolvesServerCert for Workload {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }
}

impl rustls::client::ResolvesClientCert for Workload {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a server's chain against the anchors and its SPIFFE id against what is expected;
/// the DNS name or address the client dialled plays no part.
#[derive(Debug)]
struct PeerVerifier {
    trust: Arc<Trust>,
    expect: Expect,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.trust.verify_chain(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        let id = SpiffeId::from_cert_der(end_entity).ok_or_else(|| {
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        let ok = match &self.expect {
            Expect::App { namespace, app_id } => id.namespace == *namespace && id.app_id == *app_id,
            Expect::AppId(app) => id.app_id == *app,
        };
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(peer = %id, expected = ?self.expect, "The peer's certificate is for another workload");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.trust.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.trust.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let c = match e {
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(c)
}

/// Serves `service` on `listener` over TLS with `config` until `shutdown` resolves, then waits
/// for open connections to finish their requests. Every request carries the peer's
/// [`PeerIdentity`] when the client presented a certificate; connections whose client
/// certificate has no SPIFFE id are closed.
pub async fn serve<S>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    service: S,
    shutdown: impl std::future::Future<Output = ()>,
) where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let inner = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let id = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| SpiffeId::from_cert_der(c));
            let has_cert = tls.get_ref().1.peer_certificates().is_some();
            if has_cert && id.is_none() {
                tracing::warn!(peer = %peer, "The peer's certificate carries no SPIFFE id; connection closed");
                return;
            }
            let identity = id.and_then(PeerIdentity::new);
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(Body::new);
                    if let Some(identity) = &identity {
                        req.extensions_mut().insert(identity.clone());
                    }
                    tower::ServiceExt::oneshot(inner.clone(), req)
                });
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %peer, error = %e, "Connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
