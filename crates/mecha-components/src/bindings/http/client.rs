//! The component metadata of `bindings.http` and the HTTP client built from it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mecha_core::component::ComponentError;
use mecha_core::duration::parse_go_duration;
use mecha_core::metadata::Metadata;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The client the binding sends its requests with.
pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Dapr's default limit on the response body read: 100 MiB.
const DEFAULT_MAX_RESPONSE_BODY: u64 = 100 << 20;
/// How long connecting (TCP and TLS) may take, as Dapr's dialer and handshake timeouts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) const URL: &str = "url";
pub(super) const RESPONSE_TIMEOUT: &str = "responseTimeout";
pub(super) const MAX_RESPONSE_BODY_SIZE: &str = "maxResponseBodySize";
pub(super) const MTLS_ROOT_CA: &str = "MTLSRootCA";
pub(super) const MTLS_CLIENT_CERT: &str = "MTLSClientCert";
pub(super) const MTLS_CLIENT_KEY: &str = "MTLSClientKey";
pub(super) const MTLS_RENEGOTIATION: &str = "MTLSRenegotiation";
pub(super) const SECURITY_TOKEN: &str = "securityToken";
pub(super) const SECURITY_TOKEN_HEADER: &str = "securityTokenHeader";
pub(super) const INSECURE_SKIP_VERIFY: &str = "insecureSkipVerify";
pub(super) const ERROR_IF_NOT_2XX: &str = "errorIfNot2XX";

/// The validated component settings.
pub(super) struct Settings {
    /// The base URL.
    pub(super) url: String,
    /// The limit of one request, if any.
    pub(super) response_timeout: Option<Duration>,
    /// The most response body bytes read (the rest is dropped, as Dapr does); `None`: no limit.
    pub(super) max_body: Option<u64>,
    /// The header carrying `securityToken`.
    pub(super) token: Option<(HeaderName, HeaderValue)>,
    /// Whether a non-2xx status is an error (Dapr's default: yes).
    pub(super) error_if_not_2xx: bool,
    /// The client, with the TLS settings applied.
    pub(super) client: HttpClient,
}

// === impl Settings ===

impl Settings {
    /// Reads and checks the metadata and builds the client.
    pub(super) fn from_metadata(md: &Metadata) -> Result<Self, ComponentError> {
        let url = md.required(URL)?.trim().to_owned();
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| ComponentError::InvalidField {
                field: URL,
                reason: format!("'{url}' is not a URL: {e}"),
            })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ComponentError::InvalidField {
                field: URL,
                reason: format!("'{url}' is not an http:// or https:// URL"),
            });
        }
        let response_timeout = match md.get(RESPONSE_TIMEOUT).map(str::trim) {
            None | Some("") => None,
            Some(v) => {
                let d = parse_go_duration(v).map_err(|e| ComponentError::InvalidField {
                    field: RESPONSE_TIMEOUT,
                    reason: e.to_string(),
                })?;
                (!d.is_zero()).then_some(d)
            }
        };
        let max_body = match md.get(MAX_RESPONSE_BODY_SIZE).map(str::trim) {
            None | Some("") => Some(DEFAULT_MAX_RESPONSE_BODY),
            Some(v) => parse_byte_size(v).map_err(|reason| ComponentError::InvalidField {
                field: MAX_RESPONSE_BODY_SIZE,
                reason,
            })?,
        };
        let token = security_token(md)?;
        if md
            .get(MTLS_RENEGOTIATION)
            .is_some_and(|v| !v.trim().is_empty())
        {
            tracing::info!(
                "Ignoring {MTLS_RENEGOTIATION}: TLS renegotiation is not supported (rustls)"
            );
        }
        Ok(Self {
            url,
            response_timeout,
            max_body,
            token,
            error_if_not_2xx: md.bool(ERROR_IF_NOT_2XX, true)?,
            client: build_client(md)?,
        })
    }
}

fn security_token(md: &Metadata) -> Result<Option<(HeaderName, HeaderValue)>, ComponentError> {
    let (Some(token), Some(header)) = (
        md.get(SECURITY_TOKEN).filter(|v| !v.is_empty()),
        md.get(SECURITY_TOKEN_HEADER)
            .map(str::trim)
            .filter(|v| !v.is_empty()),
    ) else {
        return Ok(None);
    };
    let name =
        HeaderName::from_bytes(header.as_bytes()).map_err(|e| ComponentError::InvalidField {
            field: SECURITY_TOKEN_HEADER,
            reason: format!("'{header}' is not a header name: {e}"),
        })?;
    let mut value = HeaderValue::from_str(token).map_err(|_| ComponentError::InvalidField {
        field: SECURITY_TOKEN,
        reason: "the token is not a valid header value".into(),
    })?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

fn build_client(md: &Metadata) -> Result<HttpClient, ComponentError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(md)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The TLS settings: the root CA (or the system roots), the client certificate, and
/// whether server certificates are checked at all. Always the ring provider.
fn tls_config(md: &Metadata) -> Result<ClientConfig, ComponentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ComponentError::Init(format!("TLS set-up failed: {e}")))?;
    let builder = if md.bool(INSECURE_SKIP_VERIFY, false)? {
        tracing::warn!("{INSECURE_SKIP_VERIFY} is set: server certificates are not verified");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider)))
    } else {
        builder.with_root_certificates(root_store(md)?)
    };
    match (
        pem_field(md, MTLS_CLIENT_CERT)?,
        pem_field(md, MTLS_CLIENT_KEY)?,
    ) {
        (Some(cert), Some(key)) => {
            let certs = certificates(MTLS_CLIENT_CERT, &cert)?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| ComponentError::InvalidField {
                    field: MTLS_CLIENT_KEY,
                    reason: format!("no usable private key: {e}"),
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ComponentError::InvalidField {
                    field: MTLS_CLIENT_CERT,
                    reason: format!("failed to load the client certificate and key: {e}"),
                })
        }
        (Some(_), None) => Err(ComponentError::MissingField(MTLS_CLIENT_KEY)),
        (None, Some(_)) => Err(ComponentError::MissingField(MTLS_CLIENT_CERT)),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

/// `MTLSRootCA` alone when given (as Dapr, it replaces the system roots), else the system roots.
fn root_store(md: &Metadata) -> Result<RootCertStore, ComponentError> {
    let mut roots = RootCertStore::empty();
    if let Some(pem) = pem_field(md, MTLS_ROOT_CA)? {
        for cert in certificates(MTLS_ROOT_CA, &pem)? {
            roots.add(cert).map_err(|e| ComponentError::InvalidField {
                field: MTLS_ROOT_CA,
                reason: format!("unusable CA certificate: {e}"),
            })?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    if native.certs.is_empty() {
        tracing::warn!(errors = ?native.errors, "No system root certificates found");
    }
    roots.add_parsable_certificates(native.certs);
    Ok(roots)
}

fn certificates(
    field: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ComponentError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ComponentError::InvalidField {
            field,
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ComponentError::InvalidField {
            field,
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// A PEM value given inline or as a file path, as Dapr accepts both.
fn pem_field(md: &Metadata, field: &'static str) -> Result<Option<Vec<u8>>, ComponentError> {
    let Some(value) = md.get(field).map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.contains("-----BEGIN ") {
        return Ok(Some(value.as_bytes().to_vec()));
    }
    std::fs::read(value)
        .map(Some)
        .map_err(|e| ComponentError::InvalidField {
            field,
            reason: format!("neither inline PEM nor a readable file '{value}': {e}"),
        })
}

/// A size as Dapr's `ByteSize` reads it: bytes, or a quantity with a unit (`10Mi`, `1G`,
/// `512k`). Zero or less means no limit.
pub(super) fn parse_byte_size(v: &str) -> Result<Option<u64>, String> {
    let bad = || format!("'{v}' is not a size such as 1048576, 512Ki or 100Mi");
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '+' || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.trim() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * factor;
    if !bytes.is_finite() {
        return Err(bad());
    }
    Ok((bytes >= 1.0).then_some(bytes as u64))
}

/// Accepts any server certificate (`insecureSkipVerify`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerifier(Arc<CryptoProvider>);

// === impl NoVerifier ===

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An error with its sources, which hyper keeps out of its own message.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("1024"), Ok(Some(1024)));
        assert_eq!(parse_byte_size("2Ki"), Ok(Some(2048)));
        assert_eq!(parse_byte_size("100Mi"), Ok(Some(100 << 20)));
        assert_eq!(parse_byte_size("1k"), Ok(Some(1000)));
        assert_eq!(parse_byte_size("0"), Ok(None));
        assert_eq!(parse_byte_size("-1"), Ok(None));
        assert!(parse_byte_size("ten").is_err());
        assert!(parse_byte_size("10Xi").is_err());
    }
}
