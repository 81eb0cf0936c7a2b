//! Mutual TLS between sidecars, with a certificate authority Mecha provides itself.
//!
//! * [`ca`]: `mecha ca init` writes a root, an issuer and a bootstrap token (or takes an
//!   existing issuer), and signs workload certificates whose only name is the SPIFFE id
//!   `spiffe://<trustDomain>/ns/<namespace>/<appId>` ([`SpiffeId`]).
//! * [`sentry`]: `mecha sentry` signs certificate requests over gRPC (Dapr Sentry's
//!   `SignCertificate`), for holders of the bootstrap token.
//! * [`tls`]: TLS 1.3 configurations verifying peers against the trust anchors, and the accept
//!   loop of the internal endpoint that tags each request with the peer's verified id.
//!
//! A sidecar with mTLS on (`--enable-mtls`, or `spec.mtls.enabled: true` in its Configuration)
//! gets its certificate from the signing service (`--sentry-address`) or, when
//! `DAPR_CERT_CHAIN` / `DAPR_CERT_KEY` are given, uses that one (no renewal). It renews a
//! certificate from the service when 70 % of its remaining lifetime has passed; new
//! connections use the new certificate, open ones carry on. Its internal endpoint then
//! accepts only TLS 1.3 clients whose certificate chains to the trust anchors, and calls to
//! other sidecars verify that the callee's certificate names the app id and namespace called.
//! The caller id the callee's app sees (`dapr-caller-app-id`) and access control use comes
//! from the certificate.

pub mod ca;
pub mod sentry;
mod spiffe;
pub mod tls;

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use self::spiffe::SpiffeId;
pub use self::tls::{PeerIdentity, Trust, Workload};

/// The default address of the signing service.
pub const DEFAULT_SENTRY_ADDRESS: &str = "127.0.0.1:50003";
/// The default lifetime of a workload certificate (`spec.mtls.workloadCertTTL`).
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default clock skew allowed (`spec.mtls.allowedClockSkew`): certificates are valid from
/// this long before they are signed.
pub const DEFAULT_ALLOWED_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// How long a sidecar keeps asking for its first certificate before it gives up.
const FIRST_CERT_PATIENCE: Duration = Duration::from_secs(30);

/// Where certificates come from.
#[async_trait]
pub trait CertSource: Send + Sync {
    /// A new certificate chain (PEM, leaf first) and its private key (PEM).
    async fn fetch(&self) -> Result<(String, String), String>;
}

/// How a sidecar gets its certificate; the binary fills this from flags and environment.
#[derive(Clone, Debug, Default)]
pub struct MtlsSettings {
    /// `--enable-mtls`.
    pub enabled: bool,
    /// `--sentry-address` (`host:port`).
    pub sentry_address: Option<String>,
    /// The bootstrap token for the signing service.
    pub sentry_token: Option<String>,
    /// The trust anchors, PEM (`DAPR_TRUST_ANCHORS` or a file).
    pub trust_anchors: Option<String>,
    /// A certificate chain to use instead of asking the signing service (`DAPR_CERT_CHAIN`).
    pub cert_chain: Option<String>,
    /// Its private key (`DAPR_CERT_KEY`).
    pub cert_key: Option<String>,
}

/// `spec.mtls` of a Configuration resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtlsSpec {
    /// `enabled`.
    pub enabled: bool,
    /// `workloadCertTTL`.
    pub workload_cert_ttl: Duration,
    /// `allowedClockSkew`.
    pub allowed_clock_skew: Duration,
}

impl Default for MtlsSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            workload_cert_ttl: DEFAULT_WORKLOAD_CERT_TTL,
            allowed_clock_skew: DEFAULT_ALLOWED_CLOCK_SKEW,
        }
    }
}

impl MtlsSpec {
    /// Reads `spec.mtls` (absent: the defaults).
    pub fn from_spec(spec: Option<&serde_json::Value>) -> Result<Self, String> {
        let mut out = Self::default();
        let Some(spec) = spec.filter(|v| !v.is_null()) else {
            return Ok(out);
        };
        match spec.get("enabled") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Bool(b)) => out.enabled = *b,
            Some(serde_json::Value::String(s)) => {
                out.enabled = s
                    .parse()
                    .map_err(|_| format!("spec.mtls.enabled '{s}' is not true or false"))?;
            }
            Some(other) => return Err(format!("spec.mtls.enabled {other} is not a boolean")),
        }
        let duration = |key: &str, default: Duration| -> Result<Duration, String> {
            match spec.get(key).and_then(serde_json::Value::as_str) {
                None | Some("") => Ok(default),
                Some(s) => mecha_core::duration::parse_go_duration(s)
                    .map_err(|e| format!("spec.mtls.{key} '{s}': {e}")),
            }
        };
        out.workload_cert_ttl = duration("workloadCertTTL", DEFAULT_WORKLOAD_CERT_TTL)?;
        out.allowed_clock_skew = duration("allowedClockSkew", DEFAULT_ALLOWED_CLOCK_SKEW)?;
        if out.workload_cert_ttl < Duration::from_secs(1) {
            return Err("spec.mtls.workloadCertTTL must be at least 1s".into());
        }
        Ok(out)
    }
}

/// Sets up this sidecar's workload identity `id` from `settings`: a given certificate, or one
/// from the signing service, renewed until `shutdown`.
pub async fn start(
    settings: &MtlsSettings,
    id: SpiffeId,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Arc<Workload>, String> {
    id.validate()?;
    let anchors = settings.trust_anchors.as_deref().ok_or(
        "mTLS needs trust anchors: DAPR_TRUST_ANCHORS, --trust-anchors-file, or ~/.mecha/pki/ca.crt from `mecha ca init`",
    )?;
    let trust = Trust::from_pem(anchors)?;
    if let (Some(chain), Some(key)) = (&settings.cert_chain, &settings.cert_key) {
        let w = Workload::new(id, trust, chain, key)?;
        tracing::info!(id = %w.id(), valid_until = %rfc3339(w.not_after()), "mTLS on with the given workload certificate (it is not renewed)");
        return Ok(w);
    }
    let address = settings
        .sentry_address
        .clone()
        .unwrap_or_else(|| DEFAULT_SENTRY_ADDRESS.to_owned());
    let token = settings.sentry_token.clone().ok_or(
        "mTLS needs the signing service's bootstrap token: DAPR_SENTRY_TOKEN_FILE, --sentry-token-file, or ~/.mecha/pki/token from `mecha ca init`",
    )?;
    let source: Arc<dyn CertSource> = Arc::new(sentry::SentryClient {
        address,
        token,
        id: id.clone(),
        trust: trust.clone(),
    });
    start_workload(id, trust, source, shutdown).await
}

/// Fetches the first certificate (retrying for a while), then renews it in the background.
pub async fn start_workload(
    id: SpiffeId,
    trust: Arc<Trust>,
    source: Arc<dyn CertSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Arc<Workload>, String> {
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(200);
    let (chain, key) = loop {
        match source.fetch().await {
            Ok(c) => break c,
            Err(e) if started.elapsed() < FIRST_CERT_PATIENCE => {
                tracing::warn!(error = %e, retry_in = ?wait, "Could not get a workload certificate yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(format!(
                    "no workload certificate after {FIRST_CERT_PATIENCE:?}: {e}"
                ));
            }
        }
    };
    let workload = Workload::new(id, trust, &chain, &key)?;
    tracing::info!(id = %workload.id(), valid_until = %rfc3339(workload.not_after()), "mTLS on: workload certificate obtained");
    let weak = Arc::downgrade(&workload);
    tokio::spawn(async move {
        tokio::select! {
            () = renew(weak, source) => {}
            () = shutdown => {}
        }
    });
    Ok(workload)
}

/// Renews the certificate when 70 % of its remaining lifetime has passed, until the workload
/// is dropped. Failures are retried with backoff; the old certificate serves meanwhile.
async fn renew(workload: Weak<Workload>, source: Arc<dyn CertSource>) {
    loop {
        let Some(w) = workload.upgrade() else { return };
        let left = w
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        drop(w);
        tokio::time::sleep((left.mul_f64(0.7)).max(Duration::from_millis(500))).await;
        let mut wait = Duration::from_secs(1);
        loop {
            let Some(w) = workload.upgrade() else { return };
            match source.fetch().await.and_then(|(c, k)| w.rotate(&c, &k)) {
                Ok(until) => {
                    tracing::info!(id = %w.id(), valid_until = %rfc3339(until), "Workload certificate renewed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "Renewing the workload certificate failed");
                    drop(w);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
