//! [`RuntimeConfig`]: the validated configuration a sidecar starts from.
//!
//! The binary turns flags and environment into this; nothing here reads the environment.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The protocol the app speaks on its port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.1.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
    /// gRPC over cleartext HTTP/2.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

/// Everything a sidecar needs to start.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The app id (`--app-id`).
    pub app_id: String,
    /// The namespace (`NAMESPACE`), used by key prefixes and later by name resolution.
    pub namespace: Option<String>,
    /// The app's port (`--app-port`); `None` when the sidecar runs without an app.
    pub app_port: Option<u16>,
    /// The app's protocol (`--app-protocol`).
    pub app_protocol: AppProtocol,
    /// The app's host (`--app-channel-address`).
    pub app_channel_address: String,
    /// The HTTP API port (`--dapr-http-port`); 0 picks a free one.
    pub http_port: u16,
    /// The gRPC API port (`--dapr-grpc-port`); 0 picks a free one.
    pub grpc_port: u16,
    /// The metrics port (`--metrics-port`).
    pub metrics_port: u16,
    /// The addresses the API servers bind (`--dapr-listen-addresses`).
    pub listen_addresses: Vec<IpAddr>,
    /// Folders of resource YAML files (`--resources-path`).
    pub resources_paths: Vec<PathBuf>,
    /// Configuration resource files (`--config`).
    pub config_files: Vec<PathBuf>,
    /// The token apps must send (`DAPR_API_TOKEN`).
    pub api_token: Option<String>,
    /// The token sent to the app (`APP_API_TOKEN`).
    pub app_api_token: Option<String>,
    /// The largest request body accepted, in bytes (`--dapr-http-max-request-size`).
    pub max_request_body: usize,
    /// How long in-flight requests may take to finish at shutdown.
    pub graceful_shutdown: Duration,
    /// Whether `/metrics` is served on `metrics_port` and metrics are recorded.
    pub enable_metrics: bool,
    /// The port of the internal endpoint other sidecars call (0: a free port).
    pub internal_port: u16,
    /// Where the embedded default name resolver keeps its file when the Configuration names
    /// none (`~/.mecha/nameresolution.db`).
    pub name_resolution_path: Option<PathBuf>,
    /// `--app-max-concurrency`: the most calls into the app at once (`None`: unlimited).
    pub app_max_concurrency: Option<usize>,
    /// `--enable-app-health-check` and its settings.
    pub app_health_check: Option<AppHealthCheck>,
    /// `--enable-mtls` and where the workload certificate comes from.
    pub mtls: crate::mtls::MtlsSettings,
}

/// How the app's health is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppHealthCheck {
    /// The HTTP path probed (HTTP apps).
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Failed probes in a row that make the app unhealthy.
    pub threshold: u32,
}

impl Default for AppHealthCheck {
    fn default() -> Self {
        Self {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_millis(500),
            threshold: 3,
        }
    }
}

// === impl AppProtocol ===

impl AppProtocol {
    /// The name used by flags and the metadata API.
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::Https => "https",
            AppProtocol::Grpc => "grpc",
            AppProtocol::Grpcs => "grpcs",
            AppProtocol::H2c => "h2c",
        }
    }
}

impl std::str::FromStr for AppProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "http" => AppProtocol::Http,
            "https" => AppProtocol::Https,
            "grpc" => AppProtocol::Grpc,
            "grpcs" => AppProtocol::Grpcs,
            "h2c" => AppProtocol::H2c,
            other => {
                return Err(format!(
                    "unknown app protocol '{other}' (http, https, grpc, grpcs, h2c)"
                ));
            }
        })
    }
}

// === impl RuntimeConfig ===

impl RuntimeConfig {
    /// A configuration with daprd's defaults for `app_id`.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            namespace: None,
            app_port: None,
            app_protocol: AppProtocol::Http,
            app_channel_address: "127.0.0.1".into(),
            http_port: 3500,
            grpc_port: 50001,
            metrics_port: 9090,
            listen_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            resources_paths: Vec::new(),
            config_files: Vec::new(),
            api_token: None,
            app_api_token: None,
            max_request_body: 4 << 20,
            graceful_shutdown: Duration::from_secs(5),
            enable_metrics: true,
            internal_port: 0,
            mtls: crate::mtls::MtlsSettings::default(),
            name_resolution_path: None,
            app_max_concurrency: None,
            app_health_check: None,
        }
    }
}
