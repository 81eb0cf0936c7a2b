//! [`Sidecar::start`]: load components, build the services, bind and serve both APIs; and
//! [`Running`], which drains and stops them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use futures::StreamExt;
use mecha_core::nameresolution::{DEFAULT_NAMESPACE, Instance, NameResolver, ResolverInit};
use mecha_core::resource::{ConfigurationResource, Resource, ResourceError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app_channel::AppChannel;
use crate::bindings::BindingsService;
use crate::components::{Components, LoadError};
use crate::config::RuntimeConfig;
use crate::configuration::ConfigurationService;
use crate::health::{Health, wait_for_app_port};
use crate::invoke::{HttpEndpoints, InvokeService};
use crate::lock::LockService;
use crate::metadata::MetadataService;
use crate::pubsub::PubSubService;
use crate::resiliency::Resiliency;
use crate::secrets::SecretsService;
use crate::state::StateService;

/// Everything the API handlers reach: the building-block services and shared flags.
pub struct Services {
    /// The app id.
    pub app_id: String,
    /// The state service.
    pub state: StateService,
    /// The secrets service.
    pub secrets: SecretsService,
    /// The configuration service.
    pub configuration: ConfigurationService,
    /// The lock service.
    pub lock: LockService,
    /// The bindings service.
    pub bindings: Arc<BindingsService>,
    /// The pub/sub service.
    pub pubsub: Arc<PubSubService>,
    /// Service invocation.
    pub invoke: Arc<InvokeService>,
    /// The Configuration's `httpPipeline`, applied to the HTTP API.
    pub http_pipeline: Option<Arc<crate::middleware::Pipeline>>,
    /// Which of the sidecar's APIs the app may use (`spec.api`).
    pub api_access: crate::acl::ApiAccess,
    /// Prometheus metrics, unless disabled.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Distributed tracing (a no-op unless the Configuration enables it).
    pub tracer: crate::trace::Tracer,
    /// The metadata service.
    pub metadata: MetadataService,
    /// Readiness.
    pub health: Arc<Health>,
    /// Starts a graceful shutdown.
    pub shutdown: ShutdownHandle,
    /// The token apps must send, if any.
    pub api_token: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_request_body: usize,
}

/// Starts a graceful shutdown from anywhere: a signal, the API, or the launcher.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

/// The sidecar entry point.
pub struct Sidecar;

/// A started sidecar.
pub struct Running {
    /// Where the HTTP API listens.
    pub http_addrs: Vec<SocketAddr>,
    /// Where the gRPC API listens.
    pub grpc_addrs: Vec<SocketAddr>,
    /// Where the internal invocation endpoint listens.
    pub internal_addr: SocketAddr,
    services: Arc<Services>,
    resolver: Option<Arc<dyn NameResolver>>,
    servers: JoinSet<()>,
    grace: Duration,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Components could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A configuration file could not be read.
    #[error("configuration: {0}")]
    Config(#[from] ResourceError),
    /// A `--config` file holds something other than a Configuration.
    #[error("{file} is not a Configuration resource")]
    NotAConfiguration {
        /// The file.
        file: String,
    },
    /// A resiliency or HTTPEndpoint resource, or the name resolution, is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A port could not be bound.
    #[error("cannot listen for the {api} API on {addr}: {error}")]
    Bind {
        /// `HTTP` or `gRPC`.
        api: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        error: std::io::Error,
    },
}

// === impl ShutdownHandle ===

impl Default for ShutdownHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownHandle {
    /// A handle not yet triggered.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// Starts the shutdown; later calls do nothing.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the shutdown has started.
    pub async fn wait(self) {
        let mut rx = self.0.subscribe();
        // An error means the sender is gone, which only happens at exit.
        let _ = rx.wait_for(|v| *v).await;
    }
}

// === impl Sidecar ===

impl Sidecar {
    /// Validates the configuration, loads components, binds both APIs and starts serving.
    pub async fn start(config: RuntimeConfig) -> Result<Running, StartError> {
        let started = Instant::now();
        tracing::info!(app_id = %config.app_id, version = crate::metadata::RUNTIME_VERSION, "Starting Mecha sidecar");
        let mut secret_scopes = Vec::new();
        let mut name_resolution = serde_json::Value::Null;
        let mut tracing_spec = None;
        let mut access_spec = None;
        let mut api_spec = None;
        let mut mtls_spec = None;
        let mut pipelines_spec = serde_json::Map::new();
        for file in &config.config_files {
            for c in load_configuration(file)? {
                secret_scopes.extend(c.secret_scopes()?);
                if let Some(nr) = c.spec.get("nameResolution").filter(|v| !v.is_null()) {
                    name_resolution = nr.clone();
                }
                if let Some(t) = c.spec.get("tracing").filter(|v| !v.is_null()) {
                    tracing_spec = Some(t.clone());
                }
                if let Some(a) = c.spec.get("accessControl").filter(|v| !v.is_null()) {
                    access_spec = Some(a.clone());
                }
                if let Some(a) = c.spec.get("api").filter(|v| !v.is_null()) {
                    api_spec = Some(a.clone());
                }
                if let Some(m) = c.spec.get("mtls").filter(|v| !v.is_null()) {
                    mtls_spec = Some(m.clone());
                }
                for key in [
                    crate::middleware::HTTP_PIPELINE,
                    crate::middleware::APP_HTTP_PIPELINE,
                ] {
                    if let Some(p) = c.spec.get(key).filter(|v| !v.is_null()) {
                        pipelines_spec.insert(key.to_owned(), p.clone());
                    }
                }
            }
        }
        let components = Components::load(&config).await?;
        if components.state.is_empty() {
            tracing::info!("No state store is configured");
        }
        let health = Arc::new(Health::new(config.app_port.is_none()));
        let app = AppChannel::new(&config).map(Arc::new);
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let resiliency = Arc::new(
            Resiliency::from_resources(&components.resiliency).map_err(StartError::Invalid)?,
        );
        let endpoints = HttpEndpoints::from_resources(&components.http_endpoints)
            .map_err(StartError::Invalid)?;
        let resolver = name_resolver(&config, &namespace, &name_resolution).await?;
        let access_control = crate::acl::AccessControl::from_spec(access_spec.as_ref())
            .map_err(StartError::Invalid)?;
        if access_control.is_some() {
            tracing::info!("Access control policies apply to incoming invocations");
        }
        let api_access =
            crate::acl::ApiAccess::from_spec(api_spec.as_ref()).map_err(StartError::Invalid)?;
        let shutdown = ShutdownHandle::new();
        let mtls_spec =
            crate::mtls::MtlsSpec::from_spec(mtls_spec.as_ref()).map_err(StartError::Invalid)?;
        if mtls_spec.workload_cert_ttl != crate::mtls::DEFAULT_WORKLOAD_CERT_TTL
            || mtls_spec.allowed_clock_skew != crate::mtls::DEFAULT_ALLOWED_CLOCK_SKEW
        {
            tracing::info!(
                "spec.mtls.workloadCertTTL and allowedClockSkew are applied by the signing service (mecha sentry --config), not by the sidecar"
            );
        }
        let workload = if config.mtls.enabled || mtls_spec.enabled {
            let trust_domain = access_spec
                .as_ref()
                .and_then(|a| a.get("trustDomain"))
                .and_then(serde_json::Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or(crate::acl::DEFAULT_TRUST_DOMAIN);
            let id = crate::mtls::SpiffeId::new(trust_domain, &namespace, &config.app_id);
            Some(
                crate::mtls::start(&config.mtls, id, shutdown.clone().wait())
                    .await
                    .map_err(|e| StartError::Invalid(format!("mTLS: {e}")))?,
            )
        } else {
            None
        };
        let pipelines_spec = serde_json::Value::Object(pipelines_spec);
        let pipeline = |key: &str| -> Result<Option<Arc<crate::middleware::Pipeline>>, StartError> {
            let refs = crate::middleware::handler_refs(&pipelines_spec, key)
                .and_then(|r| crate::middleware::resolve(&r, &components.middleware))
                .map_err(|e| StartError::Invalid(format!("spec.{key}: {e}")))?;
            if refs.is_empty() {
                return Ok(None);
            }
            let p = crate::middleware::Pipeline::build(&refs)
                .map_err(|e| StartError::Invalid(format!("spec.{key}: {e}")))?
                .with_body_limit(config.max_request_body);
            tracing::info!(pipeline = key, handlers = ?p.names().collect::<Vec<_>>(), "HTTP middleware pipeline");
            Ok(Some(Arc::new(p)))
        };
        let http_pipeline = pipeline(crate::middleware::HTTP_PIPELINE)?;
        let app_pipeline = pipeline(crate::middleware::APP_HTTP_PIPELINE)?;
        let tracer = crate::trace::TracingConfig::from_spec(tracing_spec.as_ref())
            .and_then(|c| crate::trace::Tracer::new(&c, &config.app_id))
            .map_err(|e| StartError::Invalid(format!("spec.tracing: {e}")))?;
        if tracer.is_enabled() {
            tracing::info!(sampling_rate = tracer.sampling_rate(), "Tracing enabled");
        }
        let metrics = config
            .enable_metrics
            .then(|| Arc::new(crate::metrics::Metrics::new(&config.app_id)));
        let services = Arc::new(Services {
            app_id: config.app_id.clone(),
            state: StateService::new(
                &config.app_id,
                config.namespace.as_deref(),
                &components.state,
                &resiliency,
                metrics.clone(),
            ),
            secrets: SecretsService::new(&components.secrets, secret_scopes),
            configuration: ConfigurationService::new(&components.configuration, app.clone()),
            lock: LockService::new(
                &config.app_id,
                config.namespace.as_deref(),
                &components.locks,
            ),
            bindings: Arc::new(
                BindingsService::new(&components.bindings, &resiliency).with_tracer(tracer.clone()),
            ),
            invoke: Arc::new(
                InvokeService::new(
                    &config.app_id,
                    &namespace,
                    resolver.clone(),
                    app.clone(),
                    endpoints,
                    resiliency.clone(),
                )
                .with_observability(metrics.clone(), tracer.clone())
                .with_access_control(access_control)
                .with_app_pipeline(app_pipeline)
                .with_mtls(workload.clone()),
            ),
            http_pipeline,
            api_access,
            pubsub: Arc::new(
                PubSubService::new(
                    &config.app_id,
                    &components.pubsub,
                    components.subscriptions.clone(),
                )
                .with_resiliency(&resiliency)
                .with_metrics(metrics.clone())
                .with_tracer(tracer.clone()),
            ),
            metrics: metrics.clone(),
            tracer: tracer.clone(),
            metadata: MetadataService::new(&config, components.infos()),
            health: health.clone(),
            shutdown: shutdown.clone(),
            api_token: config.api_token.clone(),
            max_request_body: config.max_request_body,
        });
        if services.api_token.is_some() {
            tracing::info!("API token authentication is enabled");
        }

        let mut servers = JoinSet::new();
        let mut http_addrs = Vec::new();
        let mut grpc_addrs = Vec::new();
        let api = crate::api::http::HttpApi::new(services.clone());
        for ip in &config.listen_addresses {
            let listener = bind("HTTP", SocketAddr::new(*ip, config.http_port)).await?;
            let addr = listener.local_addr().map_err(|error| StartError::Bind {
                api: "HTTP",
                addr: SocketAddr::new(*ip, config.http_port),
                error,
            })?;
            http_addrs.push(addr);
            tracing::info!(address = %addr, "HTTP API listening (HTTP/1.1 and h2c)");
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, api.clone())
                .with_graceful_shutdown(services.shutdown.clone().wait());
            servers.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP API server failed");
                }
            });
        }
        for ip in &config.listen_addresses {
            let listener = bind("gRPC", SocketAddr::new(*ip, config.grpc_port)).await?;
            let addr = listener.local_addr().map_err(|error| StartError::Bind {
                api: "gRPC",
                addr: SocketAddr::new(*ip, config.grpc_port),
                error,
            })?;
            grpc_addrs.push(addr);
            tracing::info!(address = %addr, "gRPC API listening");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
                conn.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            });
            let serve = tonic::transport::Server::builder()
                .layer(tower::util::option_layer(services.metrics.clone().map(
                    |m| {
                        tower::layer::util::Stack::new(
                            crate::metrics::GrpcMetricsLayer::new(m),
                            tower::util::MapResponseLayer::new(
                                |res: http::Response<
                                    crate::metrics::GrpcMetricsBody<tonic::body::Body>,
                                >| res.map(tonic::body::Body::new),
                            ),
                        )
                    },
                )))
                .add_routes(crate::api::grpc::routes(services.clone()))
                .serve_with_incoming_shutdown(incoming, services.shutdown.clone().wait());
            servers.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "gRPC API server failed");
                }
            });
        }
        let internal_ip = config
            .listen_addresses
            .first()
            .copied()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        // The metrics port is a fixed one: bind it before the internal port, which may be
        // any free port.
        if let Some(m) = &services.metrics {
            let addr = SocketAddr::new(internal_ip, config.metrics_port);
            let listener = bind("metrics", addr).await?;
            let (m, shutdown) = (m.clone(), services.shutdown.clone().wait());
            servers.spawn(async move {
                if let Err(e) = crate::metrics::serve(listener, m, shutdown).await {
                    tracing::error!(error = %e, "Metrics server failed");
                }
            });
        }
        let listener = bind(
            "internal",
            SocketAddr::new(internal_ip, config.internal_port),
        )
        .await?;
        let internal_addr = listener.local_addr().map_err(|error| StartError::Bind {
            api: "internal",
            addr: SocketAddr::new(internal_ip, config.internal_port),
            error,
        })?;
        // One handler for every request: no router in front of it.
        let invoke = services.invoke.clone();
        let internal = tower::service_fn(move |req: axum::extract::Request| {
            let invoke = invoke.clone();
            async move { Ok::<_, std::convert::Infallible>(invoke.serve_internal(req).await) }
        });
        if let Some(w) = &workload {
            let tls = w
                .server_config(true)
                .map_err(|e| StartError::Invalid(format!("mTLS: {e}")))?;
            servers.spawn(crate::mtls::tls::serve(
                listener,
                Arc::new(tls),
                internal,
                services.shutdown.clone().wait(),
            ));
            tracing::info!(address = %internal_addr, id = %w.id(), "Internal invocation endpoint listening (mTLS, TLS 1.3)");
        } else {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, tower::make::Shared::new(internal))
                .with_graceful_shutdown(services.shutdown.clone().wait());
            servers.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "Internal invocation server failed");
                }
            });
            tracing::info!(address = %internal_addr, "Internal invocation endpoint listening (plaintext; mTLS is off)");
        }
        if let (Some(resolver), Some(_)) = (&resolver, config.app_port) {
            let host = if internal_ip.is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                internal_ip.to_string()
            };
            let me = Instance {
                app_id: config.app_id.clone(),
                namespace: namespace.clone(),
                host,
                port: internal_addr.port(),
            };
            if let Err(e) = resolver.register(&me).await {
                tracing::warn!(error = %e, "Could not register with name resolution; other apps cannot call this one");
            }
        }
        health.set_outbound_ready();
        services.bindings.start_inputs(app.clone(), health.clone());
        services.pubsub.start(app.clone(), health.clone());
        if let (Some(app), Some(check)) = (app, config.app_health_check.clone()) {
            tracing::info!(path = %check.path, interval = ?check.interval, timeout = ?check.timeout, threshold = check.threshold, "App health checks enabled");
            tokio::spawn(crate::health::probe_app_health(health.clone(), app, check));
        }
        if let Some(port) = config.app_port {
            let addr = format!("{}:{port}", config.app_channel_address);
            tokio::spawn(wait_for_app_port(health, addr));
        }
        tracing::info!(
            app_id = %config.app_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Sidecar is ready"
        );
        Ok(Running {
            http_addrs,
            grpc_addrs,
            internal_addr,
            services,
            resolver,
            servers,
            grace: config.graceful_shutdown,
        })
    }
}

async fn bind(api: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind { api, addr, error })
}

/// The name resolver of `spec.nameResolution` (default: the embedded `sqlite` one); `None`
/// when the default has no file to use.
async fn name_resolver(
    config: &RuntimeConfig,
    namespace: &str,
    spec: &serde_json::Value,
) -> Result<Option<Arc<dyn NameResolver>>, StartError> {
    let component = spec
        .get("component")
        .and_then(serde_json::Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .unwrap_or("sqlite");
    let registration = mecha_components::nameresolution::find(component).ok_or_else(|| {
        StartError::Invalid(format!(
            "spec.nameResolution.component '{component}' is unknown (sqlite, dns, kubernetes, static)"
        ))
    })?;
    let explicit = !spec.is_null();
    let init = ResolverInit {
        app_id: config.app_id.clone(),
        namespace: namespace.to_owned(),
        configuration: spec.get("configuration").cloned().unwrap_or_default(),
        default_path: config.name_resolution_path.clone(),
    };
    match (registration.create)(init).await {
        Ok(r) => {
            tracing::info!(component, "Name resolution ready");
            Ok(Some(r))
        }
        Err(e) if explicit => Err(StartError::Invalid(format!(
            "name resolution '{component}': {e}"
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "The default name resolution is unavailable; only this app can be invoked");
            Ok(None)
        }
    }
}

fn load_configuration(file: &std::path::Path) -> Result<Vec<ConfigurationResource>, StartError> {
    let mut out = Vec::new();
    for resource in Resource::read_file(file)? {
        match resource {
            Resource::Configuration(c) => {
                tracing::info!(name = %c.name, file = %file.display(), "Configuration loaded");
                out.push(c);
            }
            _ => {
                return Err(StartError::NotAConfiguration {
                    file: file.display().to_string(),
                });
            }
        }
    }
    Ok(out)
}

// === impl Running ===

impl Running {
    /// A handle that starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.services.shutdown.clone()
    }

    /// Waits for the shutdown to be triggered, lets in-flight requests finish within the
    /// grace period, then closes the components.
    pub async fn wait(mut self) {
        self.services.shutdown.clone().wait().await;
        tracing::info!(grace_period = ?self.grace, "Shutting down: draining in-flight requests");
        // Nothing new is delivered to the app, and subscription streams end, so that their
        // connections can close with the rest.
        self.services.bindings.stop_inputs().await;
        self.services.pubsub.stop().await;
        self.services.configuration.close().await;
        let drained = tokio::time::timeout(self.grace, async {
            while self.servers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("Grace period over; closing the remaining connections");
            self.servers.abort_all();
        }
        self.services.bindings.close().await;
        self.services.pubsub.close().await;
        if let Some(r) = &self.resolver {
            r.close().await;
        }
        self.services.lock.close().await;
        self.services.state.close().await;
        self.services.secrets.close().await;
        self.services.tracer.shutdown().await;
        tracing::info!("Sidecar stopped");
    }
}
