//! Turns flags and environment into a validated [`RuntimeConfig`]. The only module that reads
//! environment variables.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use mecha_runtime::{AppProtocol, RuntimeConfig};

use crate::cli::SidecarArgs;

/// The token apps must send to the sidecar.
pub(crate) const ENV_API_TOKEN: &str = "DAPR_API_TOKEN";
/// The token the sidecar sends to the app.
pub(crate) const ENV_APP_API_TOKEN: &str = "APP_API_TOKEN";
/// The namespace of a self-hosted sidecar.
pub(crate) const ENV_NAMESPACE: &str = "NAMESPACE";
const ENV_HOME: &str = "HOME";
/// The trust anchors for mTLS, PEM (as daprd reads them).
const ENV_TRUST_ANCHORS: &str = "DAPR_TRUST_ANCHORS";
/// A workload certificate chain to use instead of the signing service, PEM.
const ENV_CERT_CHAIN: &str = "DAPR_CERT_CHAIN";
/// Its private key, PEM.
const ENV_CERT_KEY: &str = "DAPR_CERT_KEY";
/// The file holding the signing service's bootstrap token.
const ENV_SENTRY_TOKEN_FILE: &str = "DAPR_SENTRY_TOKEN_FILE";

/// Builds the runtime configuration; `app_id` is required.
pub(crate) fn runtime_config(args: &SidecarArgs, app_id: String) -> anyhow::Result<RuntimeConfig> {
    if app_id.is_empty() || app_id.contains("||") || app_id.contains('.') {
        bail!(
            "--app-id '{app_id}' is invalid: it must be non-empty and contain neither '||' nor '.'"
        );
    }
    let app_protocol: AppProtocol = args
        .app_protocol
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--app-protocol: {e}"))?;
    if args.dapr_http_max_request_size == 0 {
        bail!("--dapr-http-max-request-size must be at least 1 (MB)");
    }
    let mut config = RuntimeConfig::new(app_id);
    config.namespace = non_empty_env(ENV_NAMESPACE);
    config.app_port = args.app_port;
    config.app_protocol = app_protocol;
    config.app_channel_address = args.app_channel_address.clone();
    config.http_port = args.dapr_http_port;
    config.grpc_port = args.dapr_grpc_port;
    config.metrics_port = args.metrics_port;
    config.internal_port = args.dapr_internal_grpc_port;
    config.enable_metrics = args.enable_metrics;
    config.name_resolution_path =
        non_empty_env(ENV_HOME).map(|h| PathBuf::from(h).join(".mecha").join("nameresolution.db"));
    config.listen_addresses = listen_addresses(&args.dapr_listen_addresses)?;
    config.resources_paths = args.resources_path.clone();
    config.config_files = args.config.clone();
    config.api_token = non_empty_env(ENV_API_TOKEN);
    config.app_api_token = non_empty_env(ENV_APP_API_TOKEN);
    config.max_request_body = args
        .dapr_http_max_request_size
        .checked_mul(1 << 20)
        .context("--dapr-http-max-request-size is too large")?;
    config.graceful_shutdown = Duration::from_secs(args.dapr_graceful_shutdown_seconds);
    config.app_max_concurrency = match args.app_max_concurrency {
        n if n < 0 => None,
        0 => bail!("--app-max-concurrency must be at least 1, or -1 for no limit"),
        n => Some(usize::try_from(n).context("--app-max-concurrency is too large")?),
    };
    if args.enable_app_health_check {
        if args.app_health_probe_interval == 0 || args.app_health_probe_timeout == 0 {
            bail!("--app-health-probe-interval and --app-health-probe-timeout must be positive");
        }
        config.app_health_check = Some(mecha_runtime::AppHealthCheck {
            path: if args.app_health_check_path.starts_with('/') {
                args.app_health_check_path.clone()
            } else {
                format!("/{}", args.app_health_check_path)
            },
            interval: Duration::from_secs(args.app_health_probe_interval),
            timeout: Duration::from_millis(args.app_health_probe_timeout),
            threshold: args.app_health_threshold.max(1),
        });
    }
    config.mtls = mtls_settings(args)?;
    for path in &config.resources_paths {
        if !path.is_dir() {
            bail!("--resources-path {}: no such directory", path.display());
        }
    }
    Ok(config)
}

/// Where the workload certificate comes from. Files named by flags must exist; the
/// defaults under ~/.mecha/pki are used when present.
fn mtls_settings(args: &SidecarArgs) -> anyhow::Result<mecha_runtime::mtls::MtlsSettings> {
    let pki = non_empty_env(ENV_HOME).map(|h| PathBuf::from(h).join(".mecha").join("pki"));
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
    };
    let default_file = |name: &str| {
        pki.as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
            .and_then(|p| std::fs::read_to_string(p).ok())
    };
    let trust_anchors = match (&args.trust_anchors_file, non_empty_env(ENV_TRUST_ANCHORS)) {
        (Some(f), _) => Some(read("--trust-anchors-file", f)?),
        (None, Some(pem)) => Some(pem),
        (None, None) => default_file(mecha_runtime::mtls::ca::ROOT_CERT),
    };
    let token_file = args
        .sentry_token_file
        .clone()
        .or_else(|| non_empty_env(ENV_SENTRY_TOKEN_FILE).map(PathBuf::from));
    let sentry_token = match &token_file {
        Some(f) => Some(read("--sentry-token-file", f)?),
        None => default_file(mecha_runtime::mtls::ca::TOKEN),
    }
    .map(|t| t.trim().to_owned());
    Ok(mecha_runtime::mtls::MtlsSettings {
        enabled: args.enable_mtls,
        sentry_address: Some(args.sentry_address.clone()),
        sentry_token,
        trust_anchors,
        cert_chain: match &args.cert_chain_file {
            Some(f) => Some(read("--cert-chain-file", f)?),
            None => non_empty_env(ENV_CERT_CHAIN),
        },
        cert_key: match &args.cert_key_file {
            Some(f) => Some(read("--cert-key-file", f)?),
            None => non_empty_env(ENV_CERT_KEY),
        },
    })
}

/// `~/.mecha/pki`, where `mecha ca init` writes the CA by default.
pub(crate) fn pki_dir(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(d) => Ok(d.clone()),
        None => Ok(mecha_home()?.join("pki")),
    }
}

/// `~/.mecha`, where `mecha run` keeps its embedded default.
pub(crate) fn mecha_home() -> anyhow::Result<PathBuf> {
    let home = non_empty_env(ENV_HOME)
        .context("HOME is not set: pass --resources-path to say where the components are")?;
    Ok(PathBuf::from(home).join(".mecha"))
}

fn listen_addresses(raw: &str) -> anyhow::Result<Vec<IpAddr>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(vec![IpAddr::from([0, 0, 0, 0])]);
    }
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
            s => s
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .with_context(|| format!("--dapr-listen-addresses: '{s}' is not an IP address")),
        })
        .collect()
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            listen_addresses("localhost").unwrap(),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(listen_addresses("127.0.0.1,[::1]").unwrap().len(), 2);
        assert_eq!(
            listen_addresses("").unwrap(),
            vec![IpAddr::from([0, 0, 0, 0])]
        );
        assert!(listen_addresses("nope").is_err());
    }
}
