//! [`AppChannel`]: how the sidecar calls its app — over HTTP (a pooled hyper client) or gRPC
//! (the `AppCallback` service) depending on `--app-protocol` — with `APP_API_TOKEN` on every
//! call. Configuration updates and input bindings use it now; subscriptions and invocation
//! later.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mecha_proto::runtime::app_callback_client::AppCallbackClient;
use tonic::transport::Channel;

use std::sync::Arc;
use std::time::Duration;

use mecha_proto::runtime::app_callback_health_check_client::AppCallbackHealthCheckClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{AppProtocol, RuntimeConfig};

/// The channel to the app.
pub struct AppChannel {
    http: Option<HttpChannel>,
    grpc: Option<AppCallbackClient<Channel>>,
    grpc_channel: Option<Channel>,
    token: Option<HeaderValue>,
    limit: Option<Arc<Semaphore>>,
    /// Streams requests to the app as they are (invocation): HTTP/1.1 for HTTP apps, HTTP/2
    /// for h2c and gRPC apps.
    raw: Client<HttpConnector, axum::body::Body>,
    raw_http2: bool,
    base: String,
    /// The authority part of `base`, parsed once (each call's URI is made from it).
    authority: Option<http::uri::Authority>,
    /// Pooled HTTP/1.1 connections to an HTTP/1.1 app, and its address.
    h1: Arc<crate::h1pool::H1Pool>,
    host: String,
    port: u16,
}

/// An HTTP client bound to the app's address.
struct HttpChannel {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// The app's answer to an HTTP call.
#[derive(Debug)]
pub struct AppResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

// === impl AppChannel ===

impl AppChannel {
    /// The channel to the app, when `--app-port` is set.
    pub fn new(config: &RuntimeConfig) -> Option<Self> {
        let port = config.app_port?;
        let raw = {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let mut builder = Client::builder(TokioExecutor::new());
            if matches!(
                config.app_protocol,
                AppProtocol::Grpc | AppProtocol::Grpcs | AppProtocol::H2c
            ) {
                builder.http2_only(true);
            }
            builder.build(connector)
        };
        let base = format!("http://{}:{port}", config.app_channel_address);
        let token = config
            .app_api_token
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok());
        let (http, grpc) = match config.app_protocol {
            AppProtocol::Grpc | AppProtocol::Grpcs => {
                let endpoint =
                    Channel::from_shared(format!("http://{}:{port}", config.app_channel_address))
                        .ok()?
                        .tcp_nodelay(true);
                let channel = endpoint.connect_lazy();
                (None, Some(channel))
            }
            AppProtocol::Http | AppProtocol::Https | AppProtocol::H2c => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let mut builder = Client::builder(TokioExecutor::new());
                if config.app_protocol == AppProtocol::H2c {
                    builder.http2_only(true);
                }
                let http = HttpChannel {
                    client: builder.build(connector),
                    base: format!("http://{}:{port}", config.app_channel_address),
                };
                (Some(http), None)
            }
        };
        Some(Self {
            http,
            grpc: grpc.clone().map(AppCallbackClient::new),
            grpc_channel: grpc,
            token,
            limit: config
                .app_max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            raw,
            raw_http2: matches!(
                config.app_protocol,
                AppProtocol::Grpc | AppProtocol::Grpcs | AppProtocol::H2c
            ),
            authority: base.strip_prefix("http://").and_then(|a| a.parse().ok()),
            base,
            h1: crate::h1pool::H1Pool::new(Duration::from_secs(5)),
            host: config.app_channel_address.clone(),
            port,
        })
    }

    /// Waits for a slot under `--app-max-concurrency` (at once when unlimited); hold the
    /// permit for the duration of the call into the app.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        match &self.limit {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Probes the app's health: `GET <path>` answering 2xx for HTTP apps,
    /// `AppCallbackHealthCheck.HealthCheck` for gRPC apps.
    pub async fn health_check(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let probe = async {
            if let Some(channel) = &self.grpc_channel {
                let mut client = AppCallbackHealthCheckClient::new(channel.clone());
                return client
                    .health_check(self.grpc_request(()))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("HealthCheck failed: {e}"));
            }
            let res = self.request(Method::GET, path, [], Bytes::new()).await?;
            if res.status.is_success() {
                Ok(())
            } else {
                Err(format!("GET {path} answered {}", res.status))
            }
        };
        tokio::time::timeout(timeout, probe)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    /// Sends `req` to the app as it is, streaming both bodies: its URI is replaced by the
    /// app's address with the same path and query, and the app token is added.
    pub async fn forward(
        &self,
        mut req: Request<axum::body::Body>,
    ) -> Result<http::Response<axum::body::Body>, String> {
        if let Some(token) = &self.token {
            req.headers_mut()
                .insert(crate::api::http::API_TOKEN_HEADER, token.clone());
        }
        if !self.raw_http2 {
            // HTTP/1.1 apps get origin-form URIs over pooled connections.
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                let path = req.uri().path_and_query().cloned();
                *req.uri_mut() = path
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
                    .into();
            }
            *req.version_mut() = http::Version::HTTP_11;
            return self
                .h1
                .send(&self.host, self.port, req)
                .await
                .map(|res| res.map(axum::body::Body::new))
                .map_err(|e| format!("calling the app: {}", crate::invoke::error_chain(&e)));
        }
        let path = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(
            self.authority
                .clone()
                .ok_or_else(|| format!("bad app address {}", self.base))?,
        );
        parts.path_and_query =
            Some(path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("bad app URI: {e}"))?;
        *req.version_mut() = http::Version::HTTP_2;
        self.raw
            .request(req)
            .await
            .map(|res| res.map(axum::body::Body::new))
            .map_err(|e| format!("calling the app: {e}"))
    }

    /// Whether the app speaks gRPC.
    pub fn is_grpc(&self) -> bool {
        self.grpc.is_some()
    }

    /// The gRPC `AppCallback` client, for gRPC apps; carries the app token on each call when
    /// built with [`AppChannel::grpc_request`].
    pub fn grpc(&self) -> Option<AppCallbackClient<Channel>> {
        self.grpc.clone()
    }

    /// Wraps `message` in a request that carries the app token.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(token) = self.token.as_ref().and_then(|t| t.to_str().ok())
            && let Ok(v) = token.parse()
        {
            req.metadata_mut()
                .insert(crate::api::http::API_TOKEN_HEADER, v);
        }
        req
    }

    /// Calls the HTTP app and reads the whole answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<AppResponse, String> {
        let http = self.http.as_ref().ok_or("the app does not speak HTTP")?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", http.base))
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        h.extend(headers);
        if let Some(token) = &self.token {
            h.insert(crate::api::http::API_TOKEN_HEADER, token.clone());
        }
        let res = http
            .client
            .request(req)
            .await
            .map_err(|e| format!("calling the app: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the app's answer: {e}"))?
            .to_bytes();
        Ok(AppResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// POSTs a JSON body to `path` and returns the app's status.
    pub async fn post_json(&self, path: &str, body: Vec<u8>) -> Result<StatusCode, String> {
        let json = (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(self
            .request(Method::POST, path, [json], Bytes::from(body))
            .await?
            .status)
    }
}
