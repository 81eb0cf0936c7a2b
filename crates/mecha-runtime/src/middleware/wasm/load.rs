//! Reads a guest module from the component's `url`: `file://<path>` (relative to the working
//! directory unless the path starts with `/`), `http://…` or `https://…` (a `200 OK` answer
//! within [`FETCH_TIMEOUT`], following up to [`MAX_REDIRECTS`] redirects).

use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest module accepted.
const MAX_MODULE_BYTES: usize = 64 << 20;
/// How long a download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How many redirects a download follows.
const MAX_REDIRECTS: usize = 5;

/// The bytes of the module at `url`.
pub(super) fn load(url: &str) -> Result<Vec<u8>, String> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s)
        .ok_or_else(|| format!("url {url} is not a file://, http:// or https:// URL"))?;
    match scheme {
        "file" => read_file(&url["file://".len()..]),
        "http" | "https" => download(url),
        other => Err(format!(
            "url scheme {other} is not supported; use file://, http:// or https://"
        )),
    }
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return Err("url file:// names no file".to_owned());
    }
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {path}: {e}"))?
        .len();
    if size > MAX_MODULE_BYTES as u64 {
        return Err(format!(
            "{path} is {size} bytes; the limit is {MAX_MODULE_BYTES}"
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Downloads on a thread of its own (the pipeline is built synchronously, possibly on a
/// runtime thread, which must not wait on its own I/O).
fn download(url: &str) -> Result<Vec<u8>, String> {
    let uri: Uri = url.parse().map_err(|e| format!("url {url}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting the download of {url}: {e}"))?;
            rt.block_on(async {
                tokio::time::timeout(FETCH_TIMEOUT, fetch(uri))
                    .await
                    .map_err(|_| format!("{url}: no module within {FETCH_TIMEOUT:?}"))?
            })
        })
        .join()
        .map_err(|_| format!("the download of {url} failed"))?
    })
}

async fn fetch(mut uri: Uri) -> Result<Vec<u8>, String> {
    let https = crate::outbound::https_connector()?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    for _ in 0..=MAX_REDIRECTS {
        let req = http::Request::get(uri.clone())
            .body(Empty::new())
            .map_err(|e| format!("{uri}: {e}"))?;
        let res = client
            .request(req)
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        if res.status().is_redirection()
            && let Some(next) = res
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| redirect_target(&uri, l))
        {
            uri = next;
            continue;
        }
        if res.status() != StatusCode::OK {
            return Err(format!("{uri} answered {}", res.status()));
        }
        let body = Limited::new(res.into_body(), MAX_MODULE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{uri}: reading the module: {e}"))?;
        return Ok(body.to_bytes().to_vec());
    }
    Err(format!("{uri}: more than {MAX_REDIRECTS} redirects"))
}

/// Where a `Location` points: an absolute URL, or a path on the same server.
fn redirect_target(from: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with('/') {
        let mut parts = from.clone().into_parts();
        parts.path_and_query = Some(location.parse().ok()?);
        Uri::from_parts(parts).ok()
    } else {
        location
            .parse::<Uri>()
            .ok()
            .filter(|u| u.scheme().is_some())
    }
}
