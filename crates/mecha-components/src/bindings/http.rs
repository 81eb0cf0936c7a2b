//! `bindings.http` v1: calls an HTTP endpoint.
//!
//! Output only. Operations `get`, `head`, `post`, `put`, `patch`, `delete`, `options`, `trace`
//! and `create` (a `post`, kept by Dapr for backward compatibility). Per request: `path` is
//! appended to the base `url`; as in Dapr, metadata keys starting with a capital letter are
//! sent as request headers (`Content-Type`, `Accept` default to JSON), plus `traceparent`,
//! `tracestate` and `baggage`; `errorIfNot2XX` overrides the component's setting. The response
//! data is the body; its metadata holds `statusCode`, `status` (`200 OK`) and every response
//! header (Go-canonical names, repeated values joined with `, `). A non-2xx status is the error
//! `received status code N` unless `errorIfNot2XX` is `false`.
//!
//! Component metadata: see [`HttpBinding`]. `MTLSRenegotiation` is accepted but has no effect
//! (rustls does not renegotiate); redirects are not followed (Go's client follows them). No
//! overall timeout unless `responseTimeout` is set (as Dapr); connecting is bounded at 15 s.
//! Tested against local HTTP servers and an `openssl s_server`
//! with certificates made on the fly.

mod client;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mecha_core::bindings::{
    BindingComponent, BindingError, InvokeRequest, InvokeResponse, OutputBinding,
};
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::metadata::parse_bool;

use self::client::{Settings, chain};

const OPERATIONS: &[&str] = &[
    "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
];
const KNOWN_KEYS: &[&str] = &[
    client::URL,
    client::RESPONSE_TIMEOUT,
    client::MAX_RESPONSE_BODY_SIZE,
    client::MTLS_ROOT_CA,
    client::MTLS_CLIENT_CERT,
    client::MTLS_CLIENT_KEY,
    client::MTLS_RENEGOTIATION,
    client::SECURITY_TOKEN,
    client::SECURITY_TOKEN_HEADER,
    client::INSECURE_SKIP_VERIFY,
    client::ERROR_IF_NOT_2XX,
    "direction",
    "route",
];
/// Request metadata key of the path appended to the base URL.
const PATH: &str = "path";
/// Trace context forwarded although lower-case, as Dapr does.
const TRACE_KEYS: &[&str] = &["traceparent", "tracestate", "baggage"];
const JSON: &str = "application/json; charset=utf-8";

/// The `bindings.http` component.
///
/// # Metadata
///
/// - `url` (required): the base URL.
/// - `responseTimeout`: a Go duration bounding each request (none by default).
/// - `maxResponseBodySize`: the most body bytes read (`100Mi` by default, `0`: no limit).
/// - `MTLSRootCA`, `MTLSClientCert`, `MTLSClientKey`: PEM, inline or as a file path; the root
///   CA replaces the system roots.
/// - `securityToken` + `securityTokenHeader`: a header added to every request.
/// - `insecureSkipVerify`: skip server certificate checks (tests only).
/// - `errorIfNot2XX`: whether a non-2xx status is an error (default `true`).
pub struct HttpBinding {
    settings: Settings,
}

// === impl HttpBinding ===

impl HttpBinding {
    /// Creates the component and its client.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        init.metadata.warn_unknown(&init.name, KNOWN_KEYS);
        let settings = Settings::from_metadata(&init.metadata)?;
        Ok(Arc::new(BindingComponent {
            input: None,
            output: Some(Arc::new(Self { settings })),
        }))
    }

    fn url(&self, req: &InvokeRequest) -> String {
        match req.metadata.get(PATH).map(String::as_str) {
            Some(path) if !path.is_empty() => format!(
                "{}/{}",
                self.settings.url.trim_end_matches('/'),
                path.trim_start_matches('/')
            ),
            _ => self.settings.url.clone(),
        }
    }

    fn headers(&self, req: &InvokeRequest, has_body: bool) -> Result<HeaderMap, BindingError> {
        let mut headers = HeaderMap::new();
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        }
        headers.insert(ACCEPT, HeaderValue::from_static(JSON));
        if let Some((name, value)) = &self.settings.token {
            headers.insert(name.clone(), value.clone());
        }
        for (key, value) in &req.metadata {
            let forwarded = key.starts_with(|c: char| c.is_ascii_uppercase())
                || TRACE_KEYS.contains(&key.as_str());
            if !forwarded || (value.is_empty() && TRACE_KEYS.contains(&key.as_str())) {
                continue;
            }
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                BindingError::BadRequest(format!("metadata '{key}' is not a valid header name"))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                BindingError::BadRequest(format!("metadata '{key}' is not a valid header value"))
            })?;
            headers.insert(name, value);
        }
        Ok(headers)
    }

    /// Reads the body, keeping at most `maxResponseBodySize` bytes (the rest is dropped, as
    /// Dapr's LimitReader does).
    async fn read_body(&self, mut body: Incoming, url: &str) -> Result<Bytes, BindingError> {
        let max = self
            .settings
            .max_body
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                BindingError::Backend(format!(
                    "reading the response of {url} failed: {}",
                    chain(&e)
                ))
            })?;
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
                if out.len() >= max {
                    out.truncate(max);
                    break;
                }
            }
        }
        Ok(out.freeze())
    }

    /// Sends the request and reads the response.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        url: &str,
    ) -> Result<(http::response::Parts, Bytes), BindingError> {
        let resp = self.settings.client.request(request).await.map_err(|e| {
            BindingError::Backend(format!("request to {url} failed: {}", chain(&e)))
        })?;
        let (parts, body) = resp.into_parts();
        let body = self.read_body(body, url).await?;
        Ok((parts, body))
    }
}

#[async_trait]
impl OutputBinding for HttpBinding {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let method = match req.operation.as_str() {
            "create" | "post" => Method::POST,
            "get" => Method::GET,
            "head" => Method::HEAD,
            "put" => Method::PUT,
            "patch" => Method::PATCH,
            "delete" => Method::DELETE,
            "options" => Method::OPTIONS,
            "trace" => Method::TRACE,
            other => return Err(BindingError::unsupported(other, OPERATIONS)),
        };
        let has_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        let error_if_not_2xx = match req.metadata.get(client::ERROR_IF_NOT_2XX) {
            Some(v) if !v.trim().is_empty() => parse_bool(v.trim()).unwrap_or(false),
            _ => self.settings.error_if_not_2xx,
        };
        let url = self.url(&req);
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| BindingError::BadRequest(format!("'{url}' is not a valid URL: {e}")))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(if has_body {
                req.data.clone()
            } else {
                Bytes::new()
            }))
            .map_err(|e| BindingError::BadRequest(format!("invalid request: {e}")))?;
        *request.headers_mut() = self.headers(&req, has_body)?;
        let exchange = self.exchange(request, &url);
        let (parts, body) = match self.settings.response_timeout {
            Some(limit) => tokio::time::timeout(limit, exchange).await.map_err(|_| {
                BindingError::Backend(format!("request to {url} timed out after {limit:?}"))
            })??,
            None => exchange.await?,
        };
        let status = parts.status;
        let mut metadata = response_metadata(&parts.headers);
        metadata.insert("statusCode".into(), status.as_u16().to_string());
        let reason = status.canonical_reason().unwrap_or_default();
        metadata.insert(
            "status".into(),
            format!("{} {reason}", status.as_u16())
                .trim_end()
                .to_owned(),
        );
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if error_if_not_2xx && !status.is_success() {
            return Err(BindingError::Backend(format!(
                "received status code {}",
                status.as_u16()
            )));
        }
        Ok(InvokeResponse {
            data: (!body.is_empty()).then_some(body),
            metadata,
            content_type,
        })
    }
}

/// Response headers under their Go-canonical names, repeated values joined with `, `.
fn response_metadata(headers: &HeaderMap) -> HashMap<String, String> {
    let mut metadata: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        metadata
            .entry(canonical(name.as_str()))
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    metadata
}

/// `content-type` → `Content-Type`, as Go's `http.CanonicalHeaderKey`.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_header_names() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-custom-HEADER"), "X-Custom-Header");
        assert_eq!(canonical("etag"), "Etag");
    }
}
