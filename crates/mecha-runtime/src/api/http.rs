//! The Dapr HTTP API (`/v1.0/...`), served by axum on HTTP/1.1 and h2c.
//!
//! Handlers decode the request, call a service and encode the answer; nothing else.

mod bindings;
mod configuration;
mod health;
mod invoke;
mod lock;
mod metadata;
mod pubsub;
mod secrets;
mod state;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::error::{ApiError, ERROR_DOMAIN};
use crate::sidecar::Services;

/// The header apps send the API token in.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

/// Builds the HTTP API router over `services`.
pub fn router(services: Arc<Services>) -> Router {
    let limit = services.max_request_body;
    let router = Router::new()
        .route("/v1.0/healthz", get(health::healthz))
        .route("/v1.0/healthz/outbound", get(health::outbound))
        .route("/v1.0/metadata", get(metadata::get_metadata))
        .route("/v1.0/metadata/{key}", put(metadata::put_metadata))
        .route("/v1.0/shutdown", post(health::shutdown))
        .route("/v1.0/state/{store}", post(state::save).put(state::save))
        .route(
            "/v1.0/state/{store}/{key}",
            get(state::get)
                .delete(state::delete)
                .post(state::post_sub)
                .put(state::post_sub),
        )
        .route(
            "/v1.0-alpha1/state/{store}/query",
            post(state::query).put(state::query),
        )
        .route(
            "/v1.0/bindings/{name}",
            post(bindings::invoke).put(bindings::invoke),
        )
        .route("/v1.0/secrets/{store}/{key}", get(secrets::get))
        .route("/v1.0-alpha1/lock/{store}", post(lock::lock))
        .route("/v1.0-alpha1/unlock/{store}", post(lock::unlock))
        .route("/v1.0/configuration/{store}", get(configuration::get))
        .route(
            "/v1.0-alpha1/configuration/{store}",
            get(configuration::get),
        )
        .route(
            "/v1.0/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish).put(pubsub::bulk_publish),
        )
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish).put(pubsub::bulk_publish),
        )
        .route(
            "/v1.0/publish/{pubsub}/{*topic}",
            post(pubsub::publish).put(pubsub::publish),
        )
        .route(invoke::ROUTE, axum::routing::any(invoke::invoke))
        .fallback(invoke::fallback)
        // The body limit applies to every handler that reads a body.
        .layer(DefaultBodyLimit::max(limit));
    // Tracing and metrics run after routing: they label requests with the matched route.
    let router = if services.tracer.is_enabled() {
        router.layer(middleware::from_fn_with_state(services.clone(), trace_api))
    } else {
        router
    };
    let router = match services.metrics.clone() {
        Some(m) => router.layer(middleware::from_fn_with_state(
            m,
            crate::metrics::http_layer,
        )),
        None => router,
    };
    let routes = router.with_state(services.clone());
    // The token check and the `httpPipeline` run before routing, as in daprd: a middleware
    // that rewrites the path (e.g. a wasm guest) chooses the route the request then takes.
    // The token is checked first, before any body is read. Layers that would do nothing are
    // left out: each costs a boxed call per request.
    let checks_token = checks_token(&services);
    let outer = match services.http_pipeline.clone() {
        Some(p) => Router::new()
            .fallback_service(routes)
            .layer(middleware::from_fn_with_state(p, crate::middleware::layer)),
        None if checks_token => Router::new().fallback_service(routes),
        None => return routes,
    };
    if checks_token {
        outer.layer(middleware::from_fn_with_state(services, api_token))
    } else {
        outer
    }
}

/// Whether the API token or the `spec.api` lists are checked (before routing).
fn checks_token(services: &Services) -> bool {
    services.api_token.is_some() || services.api_access.is_restricted()
}

/// The HTTP API as served: [`router`] behind a per-connection service that hands the
/// router the caller's address (as `ConnectInfo`). When no layer runs before routing (no API
/// token, no `spec.api` lists, no `httpPipeline`) and tracing is off, invocation calls
/// (`/v1.0/invoke/...`) skip the router and its layers: the same handler, measured as the
/// same route, for less work per call on the hot path.
#[derive(Clone)]
pub struct HttpApi {
    router: Router,
    direct: Option<Arc<Services>>,
}

impl HttpApi {
    /// Builds the API over `services`.
    pub fn new(services: Arc<Services>) -> Self {
        let before_routing = checks_token(&services) || services.http_pipeline.is_some();
        let direct = (!before_routing && !services.tracer.is_enabled()).then(|| services.clone());
        Self {
            router: router(services),
            direct,
        }
    }
}

/// Makes the service of one connection (`axum::serve(listener, api)`).
impl<L> tower::Service<axum::serve::IncomingStream<'_, L>> for HttpApi
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    type Response = HttpConnection;
    type Error = Infallible;
    type Future = std::future::Ready<Result<HttpConnection, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: axum::serve::IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(HttpConnection {
            api: self.clone(),
            peer: *stream.remote_addr(),
        }))
    }
}

/// The HTTP API on one connection.
#[derive(Clone)]
pub struct HttpConnection {
    api: HttpApi,
    peer: SocketAddr,
}

impl tower::Service<Request> for HttpConnection {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(services) = &self.api.direct
            && req.uri().path().starts_with(invoke::PREFIX)
        {
            let (services, peer) = (services.clone(), self.peer);
            return Box::pin(async move { Ok(invoke::direct(services, req, peer).await) });
        }
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let router = self.api.router.clone();
        Box::pin(tower::ServiceExt::oneshot(router, req))
    }
}

/// A server span per API call (health and metadata excepted), child of the caller's
/// `traceparent`; its context is handed to the handlers (request extension) and written to
/// the response when the handler wrote none.
async fn trace_api(State(s): State<Arc<Services>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/v1.0/healthz") || path.starts_with("/v1.0/metadata") {
        return next.run(req).await;
    }
    let parent = crate::trace::SpanContext::from_headers(req.headers());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| path.to_owned(), |m| m.as_str().to_owned());
    let mut span = s.tracer.start_lazy(
        parent,
        || format!("{} {route}", req.method()),
        crate::trace::SpanKind::Server,
    );
    span.set_attribute("http.method", req.method().as_str());
    span.set_attribute("http.url", route.as_str());
    let context = span.context().cloned();
    if let Some(ctx) = &context {
        req.extensions_mut().insert(ctx.clone());
    }
    let mut res = next.run(req).await;
    span.set_attribute("http.status_code", i64::from(res.status().as_u16()));
    if res.status().is_server_error() {
        span.set_status_error(res.status().to_string());
    }
    if let Some(ctx) = &context
        && !res.headers().contains_key(crate::trace::TRACEPARENT)
    {
        ctx.inject_w3c(res.headers_mut());
    }
    res
}

/// Checks `dapr-api-token` when `DAPR_API_TOKEN` is set; the health probes are exempt.
async fn api_token(State(services): State<Arc<Services>>, req: Request, next: Next) -> Response {
    if services.api_access.is_restricted()
        && let Some((name, version)) = crate::acl::http_api(req.uri().path())
        && !services.api_access.allows(name, version, "http")
    {
        return ApiError::new(
            "ERR_PERMISSION_DENIED",
            StatusCode::FORBIDDEN,
            tonic::Code::PermissionDenied,
            format!(
                "the {name} API ({version}, http) is not allowed by the Configuration's spec.api"
            ),
        )
        .into_response();
    }
    if let Some(token) = &services.api_token {
        let exempt = req.method() == http::Method::GET
            && matches!(req.uri().path(), "/v1.0/healthz" | "/v1.0/healthz/outbound");
        let given = req
            .headers()
            .get(API_TOKEN_HEADER)
            .map(HeaderValue::as_bytes);
        if !exempt && given != Some(token.as_bytes()) {
            tracing::info!(path = %req.uri().path(), "Rejected a request with a missing or wrong API token");
            return (StatusCode::UNAUTHORIZED, "invalid api token").into_response();
        }
    }
    next.run(req).await
}

/// Reads a request body, mapping a body over the limit to 413.
fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(limit)
        } else {
            ApiError::body_read(e.body_text())
        }
    })
}

/// Splits query parameters into `metadata.*` entries (prefix stripped, first value wins) and
/// the others.
fn split_metadata(
    params: Vec<(String, String)>,
) -> (mecha_core::state::RequestMetadata, Vec<(String, String)>) {
    let mut metadata = mecha_core::state::RequestMetadata::new();
    let mut rest = Vec::new();
    for (k, v) in params {
        match k.strip_prefix("metadata.") {
            Some(m) => {
                metadata.entry(m.to_owned()).or_insert(v);
            }
            None => rest.push((k, v)),
        }
    }
    (metadata, rest)
}

/// 200 with a JSON body.
fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::internal(format!("cannot encode the response: {e}")).into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        log_error(&self);
        let mut body = json!({ "errorCode": self.code, "message": self.message });
        if let Some(d) = &self.details {
            let metadata: serde_json::Map<String, Value> = d
                .metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
                .collect();
            let mut details = vec![json!({
                "@type": mecha_proto::rpc::ERROR_INFO_TYPE_URL,
                "reason": d.reason,
                "domain": ERROR_DOMAIN,
                "metadata": metadata,
            })];
            if let Some((kind, name)) = &d.resource {
                details.push(json!({
                    "@type": mecha_proto::rpc::RESOURCE_INFO_TYPE_URL,
                    "resource_type": kind,
                    "resource_name": name,
                    "owner": "",
                    "description": "",
                }));
            }
            body["details"] = Value::Array(details);
        }
        let mut res = Response::new(Body::from(body.to_string()));
        *res.status_mut() = self.http;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

/// Logs a failed request once, at INFO for the caller's mistakes and WARN for ours.
pub(crate) fn log_error(e: &ApiError) {
    if e.code.starts_with("ERR_HEALTH") || e.code == "ERR_OUTBOUND_HEALTH_NOT_READY" {
        // Probes poll until ready: not worth a warning each time.
        tracing::debug!(code = e.code, message = %e.message, "Not ready yet");
    } else if e.http.is_server_error() {
        tracing::warn!(code = e.code, message = %e.message, "Request failed");
    } else {
        tracing::info!(code = e.code, message = %e.message, "Request refused");
    }
}
