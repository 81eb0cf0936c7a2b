//! `dapr.proto.sentry.v1`: the certificate-signing service sidecars call for their workload
//! certificates (`CA/SignCertificate`). Field numbers follow Dapr's Sentry, so either side can
//! talk to the other's implementation.

/// The full gRPC path of `SignCertificate`.
pub const SIGN_CERTIFICATE_PATH: &str = "/dapr.proto.sentry.v1.CA/SignCertificate";

/// A request for a workload certificate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignCertificateRequest {
    /// The app id the certificate is for.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Proof of the caller's right to that id (a bootstrap token here).
    #[prost(string, tag = "2")]
    pub token: String,
    /// The trust domain of the id.
    #[prost(string, tag = "3")]
    pub trust_domain: String,
    /// The namespace of the id.
    #[prost(string, tag = "4")]
    pub namespace: String,
    /// A PEM-encoded PKCS#10 certificate signing request.
    #[prost(bytes = "vec", tag = "5")]
    pub certificate_signing_request: Vec<u8>,
    /// Which validator checks the token (Dapr's enum; 0 means the service's default).
    #[prost(int32, tag = "6")]
    pub token_validator: i32,
}

/// The signed certificate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignCertificateResponse {
    /// The workload certificate, PEM.
    #[prost(bytes = "vec", tag = "1")]
    pub workload_certificate: Vec<u8>,
    /// The certificates between it and the trust anchors, PEM, issuer first.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub trust_chain_certificates: Vec<Vec<u8>>,
    /// When the workload certificate expires.
    #[prost(message, optional, tag = "3")]
    pub valid_until: Option<prost_types::Timestamp>,
}
