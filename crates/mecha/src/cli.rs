//! Command-line flags. Sidecar flags carry daprd's names so existing scripts keep working.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Mecha: a sidecar that gives any app state, pub/sub, bindings, invocation and more through
/// the Dapr v1 API, with an embedded SQLite default that needs no servers.
#[derive(Debug, Parser)]
#[command(name = "mecha", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the sidecar alone, as daprd does (flags under daprd's names).
    Sidecar(SidecarArgs),
    /// Run a sidecar and, optionally, an app next to it, as `dapr run` does.
    ///
    /// Without --resources-path, the components in ~/.mecha/components are used; when that
    /// folder does not exist it is created with the embedded default: a `statestore` and a
    /// `lockstore` on the SQLite file ~/.mecha/state.db. The app gets DAPR_HTTP_PORT, DAPR_GRPC_PORT, APP_ID and
    /// APP_PORT in its environment; `mecha run` exits with the app's exit code.
    Run(RunArgs),
    /// List the component types this build contains.
    Components,
    /// Manage the certificate authority that mTLS between sidecars uses.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run the certificate-signing service sidecars get their mTLS certificates from.
    ///
    /// It speaks Dapr Sentry's gRPC `SignCertificate` over TLS 1.3, signs with the issuer of
    /// `mecha ca init`, and requires the bootstrap token written there. Sidecars started with
    /// --enable-mtls (or `spec.mtls.enabled: true`) ask it for a certificate whose SPIFFE id is
    /// spiffe://<trustDomain>/ns/<namespace>/<appId>, and renew it before it expires.
    Sentry(SentryArgs),
}

/// `mecha ca …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a root and an issuer certificate (or take existing ones) and a bootstrap token.
    ///
    /// Writes ca.crt (the trust anchors), issuer.crt, issuer.key and token into --dir. The
    /// generated root and issuer are ECDSA P-256 and valid for one year.
    Init(CaInitArgs),
}

/// Flags of `mecha ca init`.
#[derive(Debug, Args)]
pub(crate) struct CaInitArgs {
    /// Where the CA files go (default: ~/.mecha/pki).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Use this issuer certificate (PEM) instead of generating one; needs --issuer-key and
    /// --root-cert.
    #[arg(long, value_name = "FILE", requires_all = ["issuer_key", "root_cert"])]
    pub(crate) issuer_cert: Option<PathBuf>,
    /// The private key (PEM, PKCS#8) of --issuer-cert.
    #[arg(long, value_name = "FILE", requires = "issuer_cert")]
    pub(crate) issuer_key: Option<PathBuf>,
    /// The root certificate(s) (PEM) that signed --issuer-cert: the trust anchors.
    #[arg(long, value_name = "FILE", requires = "issuer_cert")]
    pub(crate) root_cert: Option<PathBuf>,
    /// Replace a CA that already exists in --dir.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Flags of `mecha sentry`.
#[derive(Debug, Args)]
pub(crate) struct SentryArgs {
    /// The CA folder written by `mecha ca init` (default: ~/.mecha/pki).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS")]
    pub(crate) listen_address: std::net::IpAddr,
    /// The port to listen on.
    #[arg(long, default_value_t = 50003, value_name = "PORT")]
    pub(crate) port: u16,
    /// A Configuration file whose spec.mtls sets workloadCertTTL (default 24h) and
    /// allowedClockSkew (default 15m).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The bootstrap token file (default: the `token` file of --dir).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// The trust domain of the service's own certificate.
    #[arg(long, default_value = "localhost", value_name = "DOMAIN")]
    pub(crate) trust_domain: String,
    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub(crate) log_level: String,
    /// Write logs as JSON lines.
    #[arg(long)]
    pub(crate) log_as_json: bool,
}

/// Flags of `mecha run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) sidecar: SidecarArgs,
    /// The app's command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

/// Flags of the sidecar, named as daprd names them.
#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// The id of the app this sidecar serves; keys, pub/sub and invocation use it.
    #[arg(long, value_name = "ID")]
    pub(crate) app_id: Option<String>,
    /// The port the app listens on; the sidecar calls the app there.
    #[arg(long, value_name = "PORT")]
    pub(crate) app_port: Option<u16>,
    /// The protocol the app speaks: http, https, grpc, grpcs or h2c.
    #[arg(long, default_value = "http", value_name = "PROTOCOL")]
    pub(crate) app_protocol: String,
    /// The host the app listens on.
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub(crate) app_channel_address: String,
    /// The port of the HTTP API (HTTP/1.1 and h2c); 0 picks a free port.
    #[arg(long, default_value_t = 3500, value_name = "PORT")]
    pub(crate) dapr_http_port: u16,
    /// The port of the gRPC API; 0 picks a free port.
    #[arg(long, default_value_t = 50001, value_name = "PORT")]
    pub(crate) dapr_grpc_port: u16,
    /// The port other sidecars call this one on (service invocation); 0 picks a free port,
    /// which is registered with name resolution.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub(crate) dapr_internal_grpc_port: u16,
    /// Record metrics and serve them at `/metrics` on --metrics-port (`--enable-metrics=false`
    /// turns both off).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) enable_metrics: bool,
    /// The port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090, value_name = "PORT")]
    pub(crate) metrics_port: u16,
    /// Comma-separated addresses the API servers listen on (default: localhost only).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESSES")]
    pub(crate) dapr_listen_addresses: String,
    /// A folder of resource YAML files (Component …); repeat for several folders.
    #[arg(long, alias = "components-path", value_name = "DIR")]
    pub(crate) resources_path: Vec<PathBuf>,
    /// A Configuration resource file; may be repeated.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Vec<PathBuf>,
    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub(crate) log_level: String,
    /// Write logs as JSON lines.
    #[arg(long)]
    pub(crate) log_as_json: bool,
    /// The largest request body accepted, in MB (HTTP bodies and gRPC messages).
    #[arg(long, default_value_t = 4, value_name = "MB")]
    pub(crate) dapr_http_max_request_size: usize,
    /// How long in-flight requests may take to finish when the sidecar stops.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub(crate) dapr_graceful_shutdown_seconds: u64,
    /// The most calls into the app at once (pub/sub and binding deliveries); -1 for no limit.
    #[arg(long, default_value_t = -1, value_name = "N", allow_negative_numbers = true)]
    pub(crate) app_max_concurrency: i64,
    /// Probe the app's health; while it fails, pub/sub and binding deliveries pause.
    #[arg(long)]
    pub(crate) enable_app_health_check: bool,
    /// The path probed on HTTP apps (gRPC apps get AppCallbackHealthCheck.HealthCheck).
    #[arg(long, default_value = "/healthz", value_name = "PATH")]
    pub(crate) app_health_check_path: String,
    /// Seconds between app health probes.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub(crate) app_health_probe_interval: u64,
    /// Milliseconds one app health probe may take.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub(crate) app_health_probe_timeout: u64,
    /// Failed probes in a row that make the app unhealthy.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub(crate) app_health_threshold: u32,
    /// Threads that run the sidecar: 1 (the default) serves everything from one thread, which
    /// costs the least CPU and latency per request; more lets one sidecar use several cores
    /// under heavy load; 0 means one per CPU. Blocking work has its own threads either way.
    #[arg(
        long,
        default_value_t = 1,
        env = "MECHA_RUNTIME_THREADS",
        value_name = "N"
    )]
    pub(crate) runtime_threads: usize,
    /// Call other sidecars, and accept their calls, only over mutual TLS with workload
    /// certificates (also turned on by `spec.mtls.enabled: true` in the Configuration).
    /// The certificate comes from DAPR_CERT_CHAIN / DAPR_CERT_KEY when set, otherwise from
    /// the signing service (`mecha sentry`).
    #[arg(long)]
    pub(crate) enable_mtls: bool,
    /// The signing service's address.
    #[arg(long, default_value = "127.0.0.1:50003", value_name = "HOST:PORT")]
    pub(crate) sentry_address: String,
    /// The trust anchors (PEM) peers' certificates must chain to (default: DAPR_TRUST_ANCHORS,
    /// else ~/.mecha/pki/ca.crt).
    #[arg(long, value_name = "FILE")]
    pub(crate) trust_anchors_file: Option<PathBuf>,
    /// The signing service's bootstrap token (default: DAPR_SENTRY_TOKEN_FILE, else
    /// ~/.mecha/pki/token).
    #[arg(long, value_name = "FILE")]
    pub(crate) sentry_token_file: Option<PathBuf>,
    /// Use this workload certificate chain (PEM, leaf first) instead of asking the signing
    /// service (like DAPR_CERT_CHAIN); it is not renewed. Needs --cert-key-file.
    #[arg(long, value_name = "FILE", requires = "cert_key_file")]
    pub(crate) cert_chain_file: Option<PathBuf>,
    /// The private key (PEM) of --cert-chain-file (like DAPR_CERT_KEY).
    #[arg(long, value_name = "FILE", requires = "cert_chain_file")]
    pub(crate) cert_key_file: Option<PathBuf>,
}
