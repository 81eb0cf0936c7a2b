//! [`AppChannel`]: how the sidecar calls its app over HTTP (configuration updates now;
//! subscriptions, bindings and invocation later), with `APP_API_TOKEN` on every call.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::RuntimeConfig;

/// A pooled HTTP client bound to the app's address.
pub struct AppChannel {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<HeaderValue>,
}

// === impl AppChannel ===

impl AppChannel {
    /// The channel to the app, when `--app-port` is set.
    pub fn new(config: &RuntimeConfig) -> Option<Self> {
        let port = config.app_port?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Some(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{}:{port}", config.app_channel_address),
            token: config
                .app_api_token
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok()),
        })
    }

    /// POSTs a JSON body to `path` and returns the app's status.
    pub async fn post_json(&self, path: &str, body: Vec<u8>) -> Result<StatusCode, String> {
        let mut req = Request::post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        if let Some(token) = &self.token {
            req.headers_mut()
                .insert(crate::api::http::API_TOKEN_HEADER, token.clone());
        }
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("calling the app: {e}"))?;
        Ok(res.status())
    }
}
