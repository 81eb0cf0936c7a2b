//! Service invocation: a call from the app to another app id goes to one of that app's
//! sidecars over pooled connections to their internal endpoint, which hands it to its app;
//! bodies stream through both hops, headers and status pass through. HTTP calls use
//! pooled HTTP/1.1 keep-alive connections between sidecars (cheaper per request than HTTP/2
//! framing); gRPC calls use HTTP/2 (h2c).
//!
//! * Caller side ([`InvokeService::invoke_http`], [`InvokeService::proxy_grpc`]): resolve the
//!   target through the name resolver, pick an instance round robin (skipping instances whose
//!   connection failed recently), send the request with the internal headers. A call to this
//!   sidecar's own app id goes straight to the app. `HTTPEndpoint` names and `http(s)://` ids
//!   go to the external service.
//! * Callee side ([`InvokeService::serve_internal`]): the internal endpoint forwards to the
//!   app, HTTP as HTTP (or `OnInvoke` for gRPC apps), gRPC as gRPC (transparent proxying).
//!
//! Internal headers: `dapr-callee-app-id`, `dapr-caller-app-id`, `dapr-caller-namespace`,
//! `mecha-invoke-kind` (`http` or `grpc`) and `mecha-deadline-ms` (the caller's remaining
//! time, applied by the callee).

mod endpoints;
mod forward;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mecha_core::nameresolution::{Instance, NameResolver};
use tonic::Code;

pub use self::endpoints::HttpEndpoints;
pub use self::forward::{grpc_code_of, http_status_of};
use crate::app_channel::AppChannel;
use crate::error::ApiError;
use crate::resiliency::{Attempt, Policy, PolicyError, Resiliency};

/// The callee's app id.
pub const CALLEE: HeaderName = HeaderName::from_static("dapr-callee-app-id");
/// The caller's app id.
pub const CALLER: HeaderName = HeaderName::from_static("dapr-caller-app-id");
/// The caller's namespace.
pub const CALLER_NAMESPACE: HeaderName = HeaderName::from_static("dapr-caller-namespace");
/// `http` or `grpc`: how the callee hands the request to its app.
const KIND: HeaderName = HeaderName::from_static("mecha-invoke-kind");
/// The caller's remaining time in milliseconds.
const DEADLINE: HeaderName = HeaderName::from_static("mecha-deadline-ms");

/// How long an instance whose connection failed is skipped.
const FAILED_INSTANCE_PAUSE: Duration = Duration::from_secs(5);
/// Bodies up to this size are buffered so that a retry can send them again.
const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// How a call reaches the callee's app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP request for the app's HTTP server (or `OnInvoke` on a gRPC app).
    Http,
    /// A gRPC call passed through to the app's gRPC server.
    Grpc,
}

/// The invocation service.
pub struct InvokeService {
    app_id: String,
    namespace: String,
    resolver: Option<Arc<dyn NameResolver>>,
    /// This app's id and namespace as header values, made once (they go on every call).
    app_id_header: HeaderValue,
    namespace_header: HeaderValue,
    /// HTTP/2 to other sidecars, for gRPC calls (streams, trailers).
    peers: Client<HttpConnector, Body>,
    /// Pooled HTTP/1.1 keep-alive connections to other sidecars, for HTTP calls: cheaper per
    /// request than HTTP/2 framing on loopback and LAN links (see bench/README.md).
    peers_http1: Arc<crate::h1pool::H1Pool>,
    app: Option<Arc<AppChannel>>,
    endpoints: HttpEndpoints,
    resiliency: Arc<Resiliency>,
    balancer: Balancer,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    tracer: crate::trace::Tracer,
    access_control: Option<crate::acl::AccessControl>,
    app_pipeline: Option<Arc<crate::middleware::Pipeline>>,
    /// With mTLS: clients that present this sidecar's certificate.
    peer_tls: Option<PeerTls>,
    forwarded: forward::ForwardedCache,
}

type TlsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Clients to other sidecars over mTLS, a pair per callee (app id, namespace): each verifies
/// that the callee's certificate names the app called.
struct PeerTls {
    workload: Arc<crate::mtls::Workload>,
    /// Namespace → app id → clients (looked up without allocating).
    clients: std::sync::RwLock<HashMap<String, HashMap<String, Arc<TlsClients>>>>,
}

struct TlsClients {
    /// HTTP/1.1 keep-alive, for HTTP calls.
    h1: TlsClient,
    /// HTTP/2, for gRPC calls.
    h2: TlsClient,
}

/// Round robin over the instances of each app id, skipping those that failed recently.
#[derive(Default)]
struct Balancer {
    next: Mutex<HashMap<String, usize>>,
    failed: Mutex<HashMap<(String, u16), Instant>>,
}

// === impl Kind ===

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Grpc => "grpc",
        }
    }
}

// === errors ===

fn invoke_error(target: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        "ERR_DIRECT_INVOKE",
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        format!("failed to invoke, id: {target}, err: {why}"),
    )
}

/// The error for a call that names no app id.
pub fn no_app_id() -> ApiError {
    ApiError::new(
        "ERR_DIRECT_INVOKE",
        StatusCode::NOT_FOUND,
        Code::NotFound,
        "failed getting app id either from the URL path or the header dapr-app-id",
    )
}

// === impl InvokeService ===

impl InvokeService {
    /// Builds the service.
    pub fn new(
        app_id: &str,
        namespace: &str,
        resolver: Option<Arc<dyn NameResolver>>,
        app: Option<Arc<AppChannel>>,
        endpoints: HttpEndpoints,
        resiliency: Arc<Resiliency>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let peers = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_adaptive_window(true)
            .build(connector);
        let peers_http1 = crate::h1pool::H1Pool::new(Duration::from_secs(5));
        Self {
            app_id: app_id.to_owned(),
            namespace: namespace.to_owned(),
            app_id_header: header(app_id),
            namespace_header: header(namespace),
            resolver,
            peers,
            peers_http1,
            app,
            endpoints,
            resiliency,
            balancer: Balancer::default(),
            metrics: None,
            tracer: crate::trace::Tracer::disabled(),
            access_control: None,
            app_pipeline: None,
            peer_tls: None,
            forwarded: Default::default(),
        }
    }

    /// Calls other sidecars over mTLS as `workload`, and accepts only calls that came over
    /// mTLS (the internal endpoint then serves TLS; see [`crate::mtls`]).
    pub fn with_mtls(mut self, workload: Option<Arc<crate::mtls::Workload>>) -> Self {
        self.peer_tls = workload.map(|workload| PeerTls {
            workload,
            clients: Default::default(),
        });
        self
    }

    /// Passes HTTP calls into the app through the Configuration's `appHttpPipeline`.
    pub fn with_app_pipeline(mut self, p: Option<Arc<crate::middleware::Pipeline>>) -> Self {
        self.app_pipeline = p;
        self
    }

    /// Records calls in `metrics` and traces them with `tracer`.
    pub fn with_observability(
        mut self,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        tracer: crate::trace::Tracer,
    ) -> Self {
        self.metrics = metrics;
        self.tracer = tracer;
        self
    }

    /// Checks incoming calls against `spec.accessControl`.
    pub fn with_access_control(mut self, acl: Option<crate::acl::AccessControl>) -> Self {
        self.access_control = acl;
        self
    }

    /// This sidecar's app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Invokes `target` with an HTTP request whose URI is the method path and query
    /// (`/orders/1?x=y`); `peer` is the address of the app that called.
    pub async fn invoke_http(
        &self,
        target: &str,
        mut req: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Body>, ApiError> {
        if target.is_empty() {
            return Err(no_app_id());
        }
        forward::add_forwarded(req.headers_mut(), peer, &self.forwarded);
        forward::strip_request_headers(req.headers_mut());
        if let Some(endpoint) = self.endpoints.find(target) {
            return endpoint
                .call(req)
                .await
                .map_err(|e| invoke_error(target, e));
        }
        self.route(target, Kind::Http, req).await
    }

    /// Passes a gRPC call (`req` as received, path `/package.Service/Method`) to `target`'s
    /// app.
    pub async fn proxy_grpc(
        &self,
        target: &str,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        forward::strip_request_headers(req.headers_mut());
        self.route(target, Kind::Grpc, req).await
    }

    /// [`InvokeService::to_peer`], counted in the invocation metrics.
    async fn observed_to_peer(
        &self,
        target: &str,
        app_id: &str,
        namespace: &str,
        kind: Kind,
        mut req: Request<Body>,
        policy: &Policy,
    ) -> Result<Response<Body>, ApiError> {
        // The caller's trace context is only read when there is a tracer to use it.
        let parent = self.tracer.is_enabled().then(|| {
            req.extensions()
                .get::<crate::trace::SpanContext>()
                .cloned()
                .or_else(|| crate::trace::SpanContext::from_headers(req.headers()))
        });
        let mut span = self.tracer.start_lazy(
            parent.flatten(),
            || format!("CallLocal/{app_id}{}", req.uri().path()),
            crate::trace::SpanKind::Client,
        );
        if let Some(ctx) = span.context() {
            ctx.inject_w3c(req.headers_mut());
            if kind == Kind::Grpc {
                ctx.inject_grpc(req.headers_mut());
            }
            span.set_attribute("dapr.callee", app_id);
        }
        let result = self
            .metered_to_peer(target, app_id, namespace, kind, req, policy)
            .await;
        match &result {
            Ok(res) if res.status().is_server_error() => {
                span.set_status_error(res.status().to_string())
            }
            Err(e) => span.set_status_error(e.message.clone()),
            Ok(_) => {}
        }
        result
    }

    async fn metered_to_peer(
        &self,
        target: &str,
        app_id: &str,
        namespace: &str,
        kind: Kind,
        req: Request<Body>,
        policy: &Policy,
    ) -> Result<Response<Body>, ApiError> {
        let Some(m) = &self.metrics else {
            return self
                .to_peer(target, app_id, namespace, kind, req, policy)
                .await;
        };
        let uri = req.uri().clone();
        m.invoke_req_sent(app_id, uri.path());
        let started = Instant::now();
        let result = self
            .to_peer(target, app_id, namespace, kind, req, policy)
            .await;
        let status = match &result {
            Ok(res) => res.status(),
            Err(e) => e.http,
        };
        m.invoke_res_recv(app_id, uri.path(), status.as_u16(), started.elapsed());
        result
    }

    /// Sends a call to `target`: this sidecar's own app directly, another app id through one
    /// of its sidecars under the app's resiliency policy (streamed gRPC calls get its timeout
    /// and breaker; retries need a buffered body).
    async fn route(
        &self,
        target: &str,
        kind: Kind,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        let (app_id, namespace) = split_target(target, &self.namespace);
        if app_id == self.app_id && namespace == self.namespace {
            let app = self.app.as_ref().ok_or_else(|| {
                invoke_error(target, "this sidecar has no app channel (--app-port)")
            })?;
            let h = req.headers_mut();
            h.insert(CALLER, self.app_id_header.clone());
            h.insert(CALLEE, self.app_id_header.clone());
            let pipeline = self.app_pipeline.as_deref().filter(|_| kind == Kind::Http);
            return forward::to_app(app, kind, req, None, pipeline)
                .await
                .map_err(|e| invoke_error(target, e));
        }
        let policy = self.resiliency.app(app_id);
        self.observed_to_peer(target, app_id, namespace, kind, req, &policy)
            .await
    }

    async fn to_peer(
        &self,
        target: &str,
        app_id: &str,
        namespace: &str,
        kind: Kind,
        mut req: Request<Body>,
        policy: &Policy,
    ) -> Result<Response<Body>, ApiError> {
        let resolver = self
            .resolver
            .as_ref()
            .ok_or_else(|| invoke_error(target, "no name resolution is configured"))?;
        let instances = resolver
            .resolve(app_id, namespace)
            .await
            .map_err(|e| invoke_error(target, e))?;
        if instances.is_empty() {
            return Err(invoke_error(
                target,
                format!("couldn't find service: {target}"),
            ));
        }
        {
            let h = req.headers_mut();
            h.insert(CALLEE, header(app_id));
            h.insert(CALLER, self.app_id_header.clone());
            h.insert(CALLER_NAMESPACE, self.namespace_header.clone());
            h.insert(KIND, HeaderValue::from_static(kind.as_str()));
            // The callee stops waiting for its app a little before the caller would give up,
            // so that the caller gets the callee's answer rather than a cut connection.
            if let Some(d) = policy.timeout()
                && let Ok(v) =
                    HeaderValue::from_str(&d.saturating_sub(d / 10).as_millis().max(1).to_string())
            {
                h.insert(DEADLINE, v);
            }
        }
        // Small bodies of known size are buffered: a call can then move to the next instance
        // when a connection fails, and be retried by the policy. Larger bodies, and bodies of
        // unknown size (chunked, or an HTTP/2 stream such as a gRPC call that is still
        // sending), stream as they come.
        let (mut parts, body) = req.into_parts();
        // Nothing downstream reads the API side's extensions (connection info, route).
        parts.extensions.clear();
        let payload = if small_body(&body) {
            Payload::Buffered(
                body.collect()
                    .await
                    .map_err(|e| ApiError::body_read(e.to_string()))?
                    .to_bytes(),
            )
        } else {
            Payload::Stream(Mutex::new(Some(body)))
        };
        if policy.is_noop() {
            return self
                .send_once(target, &instances, kind, Cow::Owned(parts), &payload)
                .await;
        }
        let result = policy
            .run(|| async {
                match self
                    .send_once(target, &instances, kind, Cow::Borrowed(&parts), &payload)
                    .await
                {
                    Ok(res) if policy.retries_http_status(res.status().as_u16()) => {
                        Attempt::Retryable(RetryableResponse::Response(res))
                    }
                    // Other server errors are not retried but count against the breaker.
                    Ok(res) if res.status().is_server_error() => {
                        Attempt::Fatal(RetryableResponse::Response(res))
                    }
                    Ok(res) => Attempt::Ok(res),
                    // A streamed body was consumed by the first attempt.
                    Err(e) if matches!(payload, Payload::Stream(_)) => {
                        Attempt::Fatal(RetryableResponse::Error(e))
                    }
                    Err(e) => Attempt::Retryable(RetryableResponse::Error(e)),
                }
            })
            .await;
        match result {
            Ok(res) => Ok(res),
            Err(PolicyError::Inner(RetryableResponse::Response(res))) => Ok(res),
            Err(PolicyError::Inner(RetryableResponse::Error(e))) => Err(e),
            Err(PolicyError::Timeout(d)) => Err(invoke_error(
                target,
                format!("timeout after {d:?} (resiliency policy)"),
            )),
            Err(PolicyError::CircuitOpen) => Err(invoke_error(target, "circuit breaker is open")),
        }
    }

    /// Sends the request to one instance, moving to the next one when a connection cannot be
    /// made (buffered bodies only: a streamed body goes to the first instance). The request
    /// head is copied only when it may be needed again.
    async fn send_once(
        &self,
        target: &str,
        instances: &[Instance],
        kind: Kind,
        mut parts: Cow<'_, http::request::Parts>,
        payload: &Payload,
    ) -> Result<Response<Body>, ApiError> {
        let grpc = kind == Kind::Grpc;
        let pooled_http1 = !grpc && self.peer_tls.is_none();
        let order = self.balancer.order(target, instances);
        let mut last_error = String::new();
        for (i, &index) in order.iter().enumerate() {
            let instance = &instances[index];
            let last = i + 1 == order.len();
            let uri: Uri = if pooled_http1 {
                // The pool sends origin-form URIs and names the peer in `Host`.
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
                    .into()
            } else {
                format!(
                    "{}://{}:{}{}",
                    if self.peer_tls.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    instance.host,
                    instance.port,
                    parts.uri.path_and_query().map_or("/", |p| p.as_str())
                )
                .parse()
                .map_err(|e| invoke_error(target, format!("bad address: {e}")))?
            };
            let body = match payload {
                Payload::Buffered(b) => Body::from(b.clone()),
                Payload::Stream(s) => match s.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    Some(b) => b,
                    None => {
                        return Err(invoke_error(
                            target,
                            format!("a streamed body cannot be sent again ({last_error})"),
                        ));
                    }
                },
            };
            let head = if last {
                std::mem::replace(&mut parts, Cow::Owned(empty_parts())).into_owned()
            } else {
                parts.as_ref().clone()
            };
            let mut req = Request::from_parts(head, body);
            *req.uri_mut() = uri;
            *req.version_mut() = if grpc {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            let response = match &self.peer_tls {
                None if grpc => legacy(self.peers.request(req).await),
                None => match self
                    .peers_http1
                    .send(&instance.host, instance.port, req)
                    .await
                {
                    Ok(res) => Ok(res.map(Body::new)),
                    Err(e) => Err(SendError {
                        connect: e.is_connect(),
                        text: error_chain(&e),
                    }),
                },
                Some(tls) => {
                    let c = tls.clients(&instance.namespace, &instance.app_id);
                    legacy(if grpc {
                        c.h2.request(req).await
                    } else {
                        c.h1.request(req).await
                    })
                }
            };
            let can_move_on = matches!(payload, Payload::Buffered(_)) && !last;
            match response {
                Ok(res) => {
                    self.balancer.succeeded(instance);
                    return Ok(res);
                }
                Err(e) if e.connect && can_move_on => {
                    tracing::warn!(app_id = %instance.app_id, address = %format!("{}:{}", instance.host, instance.port), error = %e.text, "Cannot reach an instance; trying the next one");
                    self.balancer.failed(instance);
                    last_error = e.text;
                }
                Err(e) => {
                    if e.connect {
                        self.balancer.failed(instance);
                    }
                    return Err(invoke_error(
                        target,
                        format!(
                            "calling {}:{}: {}{}",
                            instance.host,
                            instance.port,
                            e.text,
                            if self.peer_tls.is_some() && e.connect {
                                " (mTLS is on: the callee's sidecar needs it too, with a certificate from the same trust anchors)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
        }
        Err(invoke_error(target, last_error))
    }

    /// The callee side: hands a request from another sidecar to the app.
    pub async fn serve_internal(&self, req: Request<Body>) -> Response<Body> {
        let named = req.headers().get(&CALLEE).map(HeaderValue::as_bytes);
        if named != Some(self.app_id.as_bytes()) {
            let named = String::from_utf8_lossy(named.unwrap_or_default());
            return error_response(
                StatusCode::NOT_FOUND,
                &invoke_error(&named, format!("this sidecar serves {}", self.app_id)),
            );
        }
        let callee = self.app_id.as_str();
        let kind = match req.headers().get(&KIND).map(HeaderValue::as_bytes) {
            Some(b"grpc") => Kind::Grpc,
            _ => Kind::Http,
        };
        let deadline = req
            .headers()
            .get(&DEADLINE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let Some(app) = &self.app else {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &invoke_error(callee, "the callee sidecar has no app channel (--app-port)"),
            );
        };
        let mut req = req;
        // With mTLS the caller is who its certificate says, whatever the headers claim.
        let verified = match &self.peer_tls {
            Some(_) => match req.extensions().get::<crate::mtls::PeerIdentity>() {
                Some(p) => {
                    let p = p.clone();
                    let h = req.headers_mut();
                    h.insert(CALLER, p.app_id_header().clone());
                    h.insert(CALLER_NAMESPACE, p.namespace_header().clone());
                    Some(p)
                }
                None => {
                    return error_response(
                        StatusCode::UNAUTHORIZED,
                        &invoke_error(callee, "mTLS is on and the caller presented no certificate"),
                    );
                }
            },
            None => None,
        };
        if let Some(acl) = &self.access_control {
            let h = req.headers();
            let (caller, caller_ns) = (
                header_text(h.get(&CALLER)),
                header_text(h.get(&CALLER_NAMESPACE)),
            );
            let trust_domain = verified
                .as_ref()
                .map_or(crate::acl::DEFAULT_TRUST_DOMAIN, |p| {
                    p.id().trust_domain.as_str()
                });
            let verb = if kind == Kind::Http {
                req.method().as_str()
            } else {
                ""
            };
            let operation = req.uri().path();
            if !acl.allows(trust_domain, caller, caller_ns, operation, verb) {
                let e = ApiError::new(
                    "ERR_PERMISSION_DENIED",
                    StatusCode::FORBIDDEN,
                    Code::PermissionDenied,
                    format!(
                        "access control policy has denied access to id: {caller} operation: {operation} verb: {}",
                        if verb.is_empty() { "NONE" } else { verb }
                    ),
                );
                return match kind {
                    Kind::Http => error_response(StatusCode::FORBIDDEN, &e),
                    Kind::Grpc => tonic::Status::from(e).into_http::<Body>(),
                };
            }
        }
        req.headers_mut().remove(&KIND);
        req.headers_mut().remove(&DEADLINE);
        let span = self.tracer.start_lazy(
            self.tracer
                .is_enabled()
                .then(|| crate::trace::SpanContext::from_headers(req.headers()))
                .flatten(),
            || format!("CallLocal/{}{}", self.app_id, req.uri().path()),
            crate::trace::SpanKind::Server,
        );
        if let Some(ctx) = span.context() {
            ctx.inject_w3c(req.headers_mut());
            if kind == Kind::Grpc {
                ctx.inject_grpc(req.headers_mut());
            }
        }
        let observed = self.metrics.as_ref().map(|m| {
            let caller = req.headers().get(&CALLER).cloned();
            let uri = req.uri().clone();
            m.invoke_req_recv(header_text(caller.as_ref()), uri.path());
            (m, caller, uri, Instant::now())
        });
        let res = match forward::to_app(
            app,
            kind,
            req,
            deadline,
            self.app_pipeline.as_deref().filter(|_| kind == Kind::Http),
        )
        .await
        {
            Ok(res) => res,
            Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &invoke_error(callee, e)),
        };
        if let Some((m, caller, uri, started)) = observed {
            m.invoke_res_sent(
                header_text(caller.as_ref()),
                uri.path(),
                res.status().as_u16(),
                started.elapsed(),
            );
        }
        res
    }
}

/// Why a request to a peer failed: whether no connection could be made, and the error chain.
struct SendError {
    connect: bool,
    text: String,
}

/// A hyper-util client's answer, in the form [`InvokeService::send_once`] handles.
fn legacy<B>(
    r: Result<Response<B>, hyper_util::client::legacy::Error>,
) -> Result<Response<Body>, SendError>
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    r.map(|res| res.map(Body::new)).map_err(|e| SendError {
        connect: e.is_connect(),
        text: error_chain(&e),
    })
}

/// A request head with nothing in it (what is left after the last attempt took the head).
fn empty_parts() -> http::request::Parts {
    Request::new(()).into_parts().0
}

/// A request body: buffered (sendable again) or streamed (once).
enum Payload {
    Buffered(Bytes),
    Stream(Mutex<Option<Body>>),
}

/// What a retried attempt gave: an answer whose status the policy retries, or an error.
enum RetryableResponse {
    Response(Response<Body>),
    Error(ApiError),
}

/// Whether `body` is known to end within [`RETRY_BUFFER_LIMIT`] bytes (its length is
/// declared, or it has already ended).
fn small_body(body: &Body) -> bool {
    use axum::body::HttpBody as _;
    body.size_hint()
        .upper()
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The app id a request names with `dapr-app-id`, or with basic auth as user `dapr-app-id`.
pub fn forward_app_id(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get("dapr-app-id").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_owned());
        }
    }
    h.get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(forward::app_id_from_basic_auth)
}

/// `app.namespace` → (`app`, `namespace`); `app` → (`app`, default namespace).
pub fn split_target<'a>(target: &'a str, default_namespace: &'a str) -> (&'a str, &'a str) {
    match target.rsplit_once('.') {
        Some((app, ns)) if !app.is_empty() && !ns.is_empty() => (app, ns),
        _ => (target, default_namespace),
    }
}

/// A header's value as text ("" when absent or not text).
fn header_text(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An [`ApiError`] as an HTTP response (the same JSON body the HTTP API sends).
pub fn error_response(status: StatusCode, e: &ApiError) -> Response<Body> {
    crate::api::http::log_error(e);
    let body = serde_json::json!({ "errorCode": e.code, "message": e.message }).to_string();
    let mut res = Response::new(Body::from(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

// === impl PeerTls ===

impl PeerTls {
    fn clients(&self, namespace: &str, app_id: &str) -> Arc<TlsClients> {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .and_then(|apps| apps.get(app_id))
        {
            return c.clone();
        }
        let expect = crate::mtls::tls::Expect::App {
            namespace: namespace.to_owned(),
            app_id: app_id.to_owned(),
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = |h2: bool| {
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(self.workload.client_config(expect.clone()))
                .https_only();
            if h2 {
                b.enable_http2().wrap_connector(http.clone())
            } else {
                b.enable_http1().wrap_connector(http.clone())
            }
        };
        let clients = Arc::new(TlsClients {
            h1: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector(false)),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .http2_adaptive_window(true)
                .build(connector(true)),
        });
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(namespace.to_owned())
            .or_default()
            .entry(app_id.to_owned())
            .or_insert(clients)
            .clone()
    }
}

// === impl Balancer ===

impl Balancer {
    /// The indices of `instances` in the order to try them: round robin, recently failed ones
    /// last.
    fn order(&self, target: &str, instances: &[Instance]) -> Cow<'static, [usize]> {
        let n = instances.len();
        match n {
            0 => return Cow::Borrowed(&[]),
            1 => return Cow::Borrowed(&[0]),
            _ => {}
        }
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let counter = match next.get_mut(target) {
                Some(c) => c,
                None => next.entry(target.to_owned()).or_default(),
            };
            let start = *counter % n;
            *counter = counter.wrapping_add(1);
            start
        };
        let mut order: Vec<usize> = (start..n).chain(0..start).collect();
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if !failed.is_empty() {
            let now = Instant::now();
            order.sort_by_key(|&i| {
                let i = &instances[i];
                failed
                    .get(&(i.host.clone(), i.port))
                    .is_some_and(|at| now.duration_since(*at) < FAILED_INSTANCE_PAUSE)
            });
        }
        Cow::Owned(order)
    }

    fn failed(&self, i: &Instance) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((i.host.clone(), i.port), Instant::now());
    }

    fn succeeded(&self, i: &Instance) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if !failed.is_empty() {
            failed.remove(&(i.host.clone(), i.port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(port: u16) -> Instance {
        Instance {
            app_id: "b".into(),
            namespace: "default".into(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn targets_and_round_robin() {
        assert_eq!(split_target("b", "default"), ("b", "default"));
        assert_eq!(split_target("b.prod", "default"), ("b", "prod"));
        let b = Balancer::default();
        let all = [inst(1), inst(2)];
        let first: Vec<u16> = (0..4).map(|_| all[b.order("b", &all)[0]].port).collect();
        assert_eq!(first, vec![1, 2, 1, 2]);
        b.failed(&inst(1));
        let first: Vec<u16> = (0..2).map(|_| all[b.order("b", &all)[0]].port).collect();
        assert_eq!(first, vec![2, 2]);
        b.succeeded(&inst(1));
        let first: Vec<u16> = (0..2).map(|_| all[b.order("b", &all)[0]].port).collect();
        assert_eq!(first, vec![1, 2]);
    }
}
