//! HTTP middleware pipelines: Dapr's `httpPipeline` and `appHttpPipeline`.
//!
//! Middleware are `kind: Component` resources of type `middleware.http.<name>` (version `v1`).
//! A Configuration lists them in order under `spec.httpPipeline.handlers` (applied to the
//! requests the app makes to the sidecar's HTTP API) and `spec.appHttpPipeline.handlers`
//! (applied to the requests the sidecar makes to the app: invocation deliveries), each entry
//! `{name, type}` naming a loaded component. [`handler_refs`] reads such a list,
//! [`resolve`] matches it with the loaded middleware components and [`Pipeline::build`] turns
//! the result into a pipeline. The first handler listed sees the request first and the
//! response last; any handler may answer by itself, and then the later ones (and the route)
//! never run.
//!
//! Supported types and the Dapr metadata they honour:
//!
//! * `middleware.http.ratelimit`: `maxRequestsPerSecond` (required, a number > 0). A token
//!   bucket per client holding up to `max(1, maxRequestsPerSecond)` tokens, refilled at that
//!   rate. The client is the peer address (axum `ConnectInfo<SocketAddr>`), else the first
//!   `X-Forwarded-For` address, else `X-Real-IP`, else one bucket shared by everyone. Over the
//!   limit: `429 Too Many Requests`.
//! * `middleware.http.bearer`: `issuer` and `audience` (required); the verification keys come
//!   from `jwksURL` (an `http(s)` JWK Set, fetched on first use, cached, and fetched again at
//!   most once a minute when a token names an unknown key or the copy is over an hour old), or
//!   `jwks` (the JWK Set inline, as JSON), or else the `jwks_uri` of the issuer's OpenID
//!   configuration (`<issuer>/.well-known/openid-configuration`). The request must carry
//!   `Authorization: Bearer <JWT>` signed with RS256/384/512, PS256/384/512, ES256/384, EdDSA
//!   (Ed25519) or HS256/384/512 (`oct` keys), with `iss` equal to the issuer, `aud` holding
//!   the audience, and `exp`/`nbf`, when present, valid within a minute of leeway; otherwise
//!   `401 Unauthorized` with `WWW-Authenticate: Bearer`. The verified claims are handed on as
//!   a [`BearerClaims`] request extension.
//! * `middleware.http.routerchecker`: `rule` (required), a regular expression the
//!   percent-decoded request path must match, else `400 Bad Request` "invalid router".
//! * `middleware.http.uppercase`: upper-cases the request body (a demonstration middleware).
//! * `middleware.http.wasm` (in builds with the `middleware-wasm` cargo feature:
//!   `cargo build --release --features middleware-wasm`): `url` (required; `file://`,
//!   `http://` or `https://`) and `guestConfig`. A WebAssembly guest of the http-wasm handler
//!   ABI that may change the request, answer by itself, and change the response on its way
//!   back; see the `wasm` module for what it may do and the limits it runs under.
//!
//! Refused at build time with an error naming the component: unknown types (including
//! `oauth2`, `opa`, `sentinel`, `routeralias`, which this build does not support, and `wasm`
//! in a build without its feature), missing required metadata, values that do not parse, and
//! Wasm modules that cannot be read or do not fit the ABI.

mod bearer;
mod ratelimit;
#[cfg(test)]
mod tests;
#[cfg(feature = "middleware-wasm")]
mod wasm;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

pub use bearer::BearerClaims;

/// The Configuration key of the pipeline applied to the sidecar's HTTP API.
pub const HTTP_PIPELINE: &str = "httpPipeline";
/// The Configuration key of the pipeline applied to requests the sidecar sends to the app.
pub const APP_HTTP_PIPELINE: &str = "appHttpPipeline";

/// How much of a request body a body-reading middleware buffers unless told otherwise (Dapr's
/// default `--max-body-size`, 4 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

/// One middleware component: its name, type and resolved metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiddlewareSpec {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`, e.g. `middleware.http.ratelimit`.
    pub component_type: String,
    /// `spec.metadata`, with secret and environment references already resolved.
    pub metadata: HashMap<String, String>,
}

/// One entry of a Configuration's `handlers` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerRef {
    /// `name`: the middleware component.
    pub name: String,
    /// `type`: the component's type.
    pub component_type: String,
}

/// Reads `spec.<key>.handlers` (`key` is [`HTTP_PIPELINE`] or [`APP_HTTP_PIPELINE`]) of a
/// Configuration's raw `spec`. Absent means an empty list.
pub fn handler_refs(spec: &Value, key: &str) -> Result<Vec<HandlerRef>, String> {
    let Some(handlers) = spec.get(key).and_then(|p| p.get("handlers")) else {
        return Ok(Vec::new());
    };
    if handlers.is_null() {
        return Ok(Vec::new());
    }
    let list = handlers
        .as_array()
        .ok_or_else(|| format!("{key}.handlers must be a list"))?;
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            let field = |f: &str| {
                h.get(f)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{key}.handlers[{i}] has no {f}"))
            };
            Ok(HandlerRef {
                name: field("name")?,
                component_type: field("type")?,
            })
        })
        .collect()
}

/// Picks, in handler order, the loaded middleware components a handler list names. A handler
/// naming no loaded component, or one of another type, is an error.
pub fn resolve(
    handlers: &[HandlerRef],
    components: &[MiddlewareSpec],
) -> Result<Vec<MiddlewareSpec>, String> {
    handlers
        .iter()
        .map(|h| {
            let c = components
                .iter()
                .find(|c| c.name == h.name)
                .ok_or_else(|| format!("middleware component '{}' is not loaded", h.name))?;
            if c.component_type != h.component_type {
                return Err(format!(
                    "middleware component '{}' is of type {}, not {}",
                    h.name, c.component_type, h.component_type
                ));
            }
            Ok(c.clone())
        })
        .collect()
}

/// An ordered chain of HTTP middleware.
#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
    body_limit: Option<usize>,
}

struct Stage {
    name: String,
    middleware: Middleware,
}

enum Middleware {
    RateLimit(ratelimit::RateLimit),
    Bearer(bearer::Bearer),
    RouterChecker(regex::Regex),
    Uppercase,
    #[cfg(feature = "middleware-wasm")]
    Wasm(wasm::Wasm),
}

/// What a middleware decided about a request.
enum Flow {
    /// Hand the (possibly changed) request on.
    Continue(Request),
    /// Answer now.
    Respond(Response),
    /// Hand the request on, and pass the response through the second field on its way back.
    #[cfg_attr(not(feature = "middleware-wasm"), allow(dead_code))]
    Wrap(Request, OnResponse),
}

/// A middleware's work on the response, once the later ones (and the route) answered.
type OnResponse =
    Box<dyn FnOnce(Response) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send>;

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Pipeline {
    /// Builds the middleware of `specs`, in order. The error names the failing component.
    pub fn build(specs: &[MiddlewareSpec]) -> Result<Pipeline, String> {
        let stages = specs
            .iter()
            .map(|s| {
                Middleware::build(s)
                    .map(|middleware| Stage {
                        name: s.name.clone(),
                        middleware,
                    })
                    .map_err(|e| {
                        format!(
                            "middleware component '{}' ({}): {e}",
                            s.name, s.component_type
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pipeline {
            stages,
            body_limit: None,
        })
    }

    /// Sets how many bytes of a request body a body-reading middleware may buffer (the
    /// sidecar's `--max-body-size`); larger bodies get `413 Payload Too Large`.
    #[must_use]
    pub fn with_body_limit(mut self, limit: usize) -> Pipeline {
        self.body_limit = Some(limit);
        self
    }

    /// Whether the pipeline has no middleware (then it need not be installed).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The component names, in application order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// Runs `req` through every middleware in order, then `next` (the route or the app). A
    /// middleware that answers by itself ends the request there: the later ones and `next`
    /// never see it. The response goes back through the earlier middleware that asked to see
    /// it, last first.
    pub async fn handle<F, Fut>(&self, req: Request, next: F) -> Response
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = Response>,
    {
        let mut req = req;
        let mut on_response: Vec<OnResponse> = Vec::new();
        let limit = self.body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
        let mut res = 'run: {
            for stage in &self.stages {
                match stage.middleware.on_request(req, limit).await {
                    Flow::Continue(r) => req = r,
                    Flow::Wrap(r, f) => {
                        req = r;
                        on_response.push(f);
                    }
                    Flow::Respond(r) => {
                        tracing::debug!(middleware = %stage.name, status = r.status().as_u16(), "Middleware answered the request");
                        break 'run r;
                    }
                }
            }
            next(req).await
        };
        while let Some(f) = on_response.pop() {
            res = f(res).await;
        }
        res
    }
}

/// An axum middleware running the pipeline in front of the rest of the router:
/// `router.layer(axum::middleware::from_fn_with_state(pipeline, middleware::layer))`.
pub async fn layer(State(pipeline): State<Arc<Pipeline>>, req: Request, next: Next) -> Response {
    pipeline.handle(req, |r| next.run(r)).await
}

impl Middleware {
    fn build(spec: &MiddlewareSpec) -> Result<Middleware, String> {
        let md = &spec.metadata;
        match spec.component_type.as_str() {
            "middleware.http.ratelimit" => {
                ratelimit::RateLimit::from_metadata(md).map(Middleware::RateLimit)
            }
            "middleware.http.bearer" => bearer::Bearer::from_metadata(md).map(Middleware::Bearer),
            "middleware.http.routerchecker" => {
                let rule = required(md, "rule")?;
                regex::Regex::new(rule)
                    .map(Middleware::RouterChecker)
                    .map_err(|e| format!("rule is not a valid regular expression: {e}"))
            }
            "middleware.http.uppercase" => Ok(Middleware::Uppercase),
            #[cfg(feature = "middleware-wasm")]
            "middleware.http.wasm" => {
                wasm::Wasm::from_metadata(&spec.name, md).map(Middleware::Wasm)
            }
            #[cfg(not(feature = "middleware-wasm"))]
            "middleware.http.wasm" => Err(
                "middleware.http.wasm is not in this build; build mecha with the middleware-wasm \
                 feature: cargo build --release --features middleware-wasm"
                    .to_owned(),
            ),
            other @ ("middleware.http.oauth2"
            | "middleware.http.oauth2clientcredentials"
            | "middleware.http.opa"
            | "middleware.http.sentinel"
            | "middleware.http.routeralias") => {
                Err(format!("{other} is not supported in this build"))
            }
            other => Err(format!(
                "unknown middleware type {other}; this build supports: middleware.http.bearer, \
                 middleware.http.ratelimit, middleware.http.routerchecker, \
                 middleware.http.uppercase{}",
                if cfg!(feature = "middleware-wasm") {
                    ", middleware.http.wasm"
                } else {
                    ""
                }
            )),
        }
    }

    async fn on_request(&self, req: Request, body_limit: usize) -> Flow {
        match self {
            Middleware::RateLimit(r) => r.check(req),
            Middleware::Bearer(b) => b.check(req).await,
            Middleware::RouterChecker(rule) => {
                if rule.is_match(&percent_decode(req.uri().path())) {
                    Flow::Continue(req)
                } else {
                    Flow::Respond(plain(StatusCode::BAD_REQUEST, "invalid router"))
                }
            }
            Middleware::Uppercase => uppercase(req, body_limit).await,
            #[cfg(feature = "middleware-wasm")]
            Middleware::Wasm(w) => w.on_request(req, body_limit).await,
        }
    }
}

/// A required, non-empty metadata value.
fn required<'a>(md: &'a HashMap<String, String>, key: &str) -> Result<&'a str, String> {
    optional(md, key).ok_or_else(|| format!("missing required metadata field {key}"))
}

/// A metadata value, matched case-insensitively like Dapr does; empty counts as absent.
fn optional<'a>(md: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    md.get(key)
        .or_else(|| {
            md.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `text/plain` response.
fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn uppercase(req: Request, limit: usize) -> Flow {
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "Reading the request body failed");
            return Flow::Respond(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable",
            ));
        }
    };
    let upper = match std::str::from_utf8(&bytes) {
        Ok(s) => s.to_uppercase().into_bytes(),
        Err(_) => bytes.to_ascii_uppercase(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if !upper.is_empty() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(upper.len()));
    }
    Flow::Continue(Request::from_parts(parts, Body::from(upper)))
}

/// Decodes `%XX` escapes; invalid escapes stay as written, invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
