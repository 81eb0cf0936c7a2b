//! Outbound HTTP(S) to services outside the mesh (HTTPEndpoint resources, JWKS documents,
//! wasm modules): one connector trusting the system's certificate roots.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// An HTTP/1.1 connector for `http://` and `https://` URLs, verifying servers against the
/// system's roots.
pub(crate) fn https_connector() -> Result<HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
