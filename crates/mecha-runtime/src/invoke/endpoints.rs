//! External services: `kind: HTTPEndpoint` resources (`spec.baseUrl`, `spec.headers`) and
//! app ids written as `http://host` or `https://host` (URL-escaped or plain).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mecha_core::resource::RawResource;
use serde_json::Value;

/// The external services an app may invoke.
#[derive(Clone)]
pub struct HttpEndpoints {
    named: HashMap<String, Arc<Endpoint>>,
    client: Option<Client<HttpsConnector<HttpConnector>, Body>>,
}

/// One external service.
pub struct Endpoint {
    base: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

// === impl HttpEndpoints ===

impl HttpEndpoints {
    /// Reads the `HTTPEndpoint` resources. Header values must be plain (`value`); a
    /// `secretKeyRef` or `clientTLS` is refused with an error naming the resource.
    pub fn from_resources(resources: &[RawResource]) -> Result<Self, String> {
        let client = build_client()?;
        let mut named = HashMap::new();
        for r in resources {
            let base = r
                .spec
                .get("baseUrl")
                .and_then(Value::as_str)
                .map(|b| b.trim().trim_end_matches('/').to_owned())
                .filter(|b| b.starts_with("http://") || b.starts_with("https://"))
                .ok_or_else(|| {
                    format!(
                        "HTTPEndpoint '{}' in {}: spec.baseUrl must be an http:// or https:// URL",
                        r.name,
                        r.source.display()
                    )
                })?;
            if r.spec.get("clientTLS").is_some_and(|v| !v.is_null()) {
                return Err(format!(
                    "HTTPEndpoint '{}': spec.clientTLS is not supported yet",
                    r.name
                ));
            }
            let mut headers = Vec::new();
            for h in r
                .spec
                .get("headers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some(value) = h.get("value").and_then(Value::as_str) else {
                    return Err(format!(
                        "HTTPEndpoint '{}': header '{name}' needs a plain value (secretKeyRef is not supported yet)",
                        r.name
                    ));
                };
                let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(value))
                else {
                    return Err(format!(
                        "HTTPEndpoint '{}': invalid header '{name}'",
                        r.name
                    ));
                };
                headers.push((n, v));
            }
            named.insert(
                r.name.clone(),
                Arc::new(Endpoint {
                    base,
                    headers,
                    client: client.clone(),
                }),
            );
        }
        Ok(Self {
            named,
            client: Some(client),
        })
    }

    /// No endpoint (only `http(s)://` ids, without TLS roots).
    pub fn none() -> Self {
        Self {
            named: HashMap::new(),
            client: build_client().ok(),
        }
    }

    /// The endpoint a target names: an `HTTPEndpoint` resource, or an `http(s)://` URL.
    pub fn find(&self, target: &str) -> Option<Arc<Endpoint>> {
        if let Some(e) = self.named.get(target) {
            return Some(e.clone());
        }
        let decoded = percent_decode(target);
        if decoded.starts_with("http://") || decoded.starts_with("https://") {
            return Some(Arc::new(Endpoint {
                base: decoded.trim_end_matches('/').to_owned(),
                headers: Vec::new(),
                client: self.client.clone()?,
            }));
        }
        None
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// Calls the service with `req` (URI = method path and query).
    pub async fn call(&self, mut req: Request<Body>) -> Result<Response<Body>, String> {
        let uri: Uri = format!(
            "{}{}",
            self.base,
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        )
        .parse()
        .map_err(|e| format!("bad URL: {e}"))?;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("calling {}: {e}", self.base))?;
        let mut res = res.map(Body::new);
        super::forward::strip_hop_by_hop(res.headers_mut());
        Ok(res)
    }
}

fn build_client() -> Result<Client<HttpsConnector<HttpConnector>, Body>, String> {
    let https = crate::outbound::https_connector()?;
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_named_and_url_targets() {
        let e = HttpEndpoints::from_resources(&[RawResource {
            name: "ext".into(),
            spec: serde_json::json!({"baseUrl": "http://127.0.0.1:9/", "headers": [{"name": "x-k", "value": "v"}]}),
            scopes: vec![],
            source: "e.yaml".into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            e.find("ext").map(|x| x.base.clone()).as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            e.find("http%3A%2F%2Fexample.com")
                .map(|x| x.base.clone())
                .as_deref(),
            Some("http://example.com")
        );
        assert!(e.find("orders").is_none());
        assert!(
            HttpEndpoints::from_resources(&[RawResource {
                name: "bad".into(),
                spec: serde_json::json!({"baseUrl": "ftp://x"}),
                scopes: vec![],
                source: "e.yaml".into(),
            }])
            .is_err()
        );
    }
}
