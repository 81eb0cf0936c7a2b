//! The request and response one guest call works on: what the `http_handler` host functions
//! read and change, and how it turns back into the request handed on or the response sent.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use tokio::runtime::Handle;

use super::{Features, GuestFault};

/// `header_kind` of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeaderKind {
    Request,
    Response,
    RequestTrailers,
    ResponseTrailers,
}

impl HeaderKind {
    pub(super) fn from_abi(kind: u32) -> Result<HeaderKind, GuestFault> {
        match kind {
            0 => Ok(HeaderKind::Request),
            1 => Ok(HeaderKind::Response),
            2 => Ok(HeaderKind::RequestTrailers),
            3 => Ok(HeaderKind::ResponseTrailers),
            other => Err(GuestFault::new(format!("unknown header kind {other}"))),
        }
    }

    fn is_trailers(self) -> bool {
        matches!(
            self,
            HeaderKind::RequestTrailers | HeaderKind::ResponseTrailers
        )
    }
}

/// `body_kind` of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyKind {
    Request,
    Response,
}

impl BodyKind {
    pub(super) fn from_abi(kind: u32) -> Result<BodyKind, GuestFault> {
        match kind {
            0 => Ok(BodyKind::Request),
            1 => Ok(BodyKind::Response),
            other => Err(GuestFault::new(format!("unknown body kind {other}"))),
        }
    }
}

/// The request body as the guest left it.
enum RequestBody {
    /// Not read by the guest: handed on as it came, without buffering.
    Unread(Body),
    /// Read into memory (up to the body limit) when the guest first asked for it.
    Read { bytes: Bytes, pos: usize },
}

/// One request going through the guest: before `next`, the request itself and the response
/// the guest may write instead; after `next`, a copy of the request head and the response
/// from the later handlers.
pub(super) struct Exchange {
    request: http::request::Parts,
    request_body: Option<RequestBody>,
    /// Set by the guest's first `write_body(request)`; later writes append.
    request_written: Option<Vec<u8>>,
    response: http::response::Parts,
    response_body: Vec<u8>,
    response_read: usize,
    /// The guest wrote the response body (after `next`: replaced the downstream one).
    response_written: bool,
    /// The downstream response body was buffered into `response_body`.
    response_buffered: bool,
    peer: Option<SocketAddr>,
    pub(super) features: Features,
    pub(super) after_next: bool,
    body_limit: usize,
    runtime: Handle,
}

impl Exchange {
    pub(super) fn new(
        req: Request,
        features: Features,
        body_limit: usize,
        runtime: Handle,
    ) -> Exchange {
        let (request, body) = req.into_parts();
        let peer = request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let (response, ()) = Response::new(()).into_parts();
        Exchange {
            request,
            request_body: Some(RequestBody::Unread(body)),
            request_written: None,
            response,
            response_body: Vec::new(),
            response_read: 0,
            response_written: false,
            response_buffered: false,
            peer,
            features,
            after_next: false,
            body_limit,
            runtime,
        }
    }

    // === request line ===

    pub(super) fn method(&self) -> &str {
        self.request.method.as_str()
    }

    pub(super) fn set_method(&mut self, method: &[u8]) -> Result<(), GuestFault> {
        self.before_next("set the method")?;
        if method.is_empty() {
            return Err(GuestFault::new("the method cannot be empty"));
        }
        self.request.method = Method::from_bytes(method)
            .map_err(|_| GuestFault::new("set_method: not a valid HTTP method"))?;
        Ok(())
    }

    /// The path and query, as sent (still percent-encoded).
    pub(super) fn uri(&self) -> &str {
        self.request
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
    }

    /// Replaces the path and query; an empty value means `/`. An absolute URI keeps only its
    /// path and query: the request still goes where it was going.
    pub(super) fn set_uri(&mut self, uri: &[u8]) -> Result<(), GuestFault> {
        self.before_next("set the URI")?;
        let given = if uri.is_empty() { b"/".as_slice() } else { uri };
        let parsed = Uri::try_from(given)
            .map_err(|e| GuestFault::new(format!("set_uri: not a valid request URI: {e}")))?;
        let pq = parsed
            .path_and_query()
            .filter(|pq| pq.as_str().starts_with('/'))
            .cloned()
            .ok_or_else(|| GuestFault::new("set_uri: the URI must start with '/'"))?;
        let mut parts = self.request.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        self.request.uri =
            Uri::from_parts(parts).map_err(|e| GuestFault::new(format!("set_uri: {e}")))?;
        Ok(())
    }

    pub(super) fn protocol_version(&self) -> &'static str {
        match self.request.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        }
    }

    pub(super) fn source_addr(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_default()
    }

    // === headers ===

    /// The headers of `kind`; trailers are never available (the feature is not granted).
    pub(super) fn headers(&self, kind: HeaderKind) -> Option<&HeaderMap> {
        match kind {
            HeaderKind::Request => Some(&self.request.headers),
            HeaderKind::Response => Some(&self.response.headers),
            HeaderKind::RequestTrailers | HeaderKind::ResponseTrailers => None,
        }
    }

    fn headers_mut(&mut self, kind: HeaderKind) -> Result<&mut HeaderMap, GuestFault> {
        if kind.is_trailers() {
            return Err(GuestFault::new(
                "trailers are not supported by this host (the trailers feature is not granted)",
            ));
        }
        if kind == HeaderKind::Request {
            self.before_next("change request headers")?;
            Ok(&mut self.request.headers)
        } else {
            // Nothing has been sent yet, so the response head can change at any time.
            Ok(&mut self.response.headers)
        }
    }

    pub(super) fn set_header(
        &mut self,
        kind: HeaderKind,
        name: &[u8],
        value: &[u8],
        append: bool,
    ) -> Result<(), GuestFault> {
        let name = header_name(name)?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| GuestFault::new("not a valid header value"))?;
        let headers = self.headers_mut(kind)?;
        if append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
        Ok(())
    }

    pub(super) fn remove_header(
        &mut self,
        kind: HeaderKind,
        name: &[u8],
    ) -> Result<(), GuestFault> {
        let name = header_name(name)?;
        if kind.is_trailers() {
            // There are none to remove.
            return Ok(());
        }
        self.headers_mut(kind)?.remove(name);
        Ok(())
    }

    // === status ===

    pub(super) fn status(&self) -> u16 {
        self.response.status.as_u16()
    }

    pub(super) fn set_status(&mut self, code: u32) -> Result<(), GuestFault> {
        self.response.status = u16::try_from(code)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| GuestFault::new(format!("{code} is not an HTTP status code")))?;
        Ok(())
    }

    // === bodies ===

    /// Copies up to `out.len()` unread bytes of the `kind` body into `out`; returns how many
    /// and whether the body is exhausted.
    pub(super) fn read_body(
        &mut self,
        kind: BodyKind,
        out: &mut [u8],
    ) -> Result<(usize, bool), GuestFault> {
        match kind {
            BodyKind::Request => {
                self.before_next("read the request body")?;
                let (bytes, pos) = self.buffered_request_body()?;
                let n = out.len().min(bytes.len() - *pos);
                out[..n].copy_from_slice(&bytes[*pos..*pos + n]);
                *pos += n;
                Ok((n, *pos == bytes.len()))
            }
            BodyKind::Response => {
                if self.after_next && !self.response_buffered && !self.response_written {
                    return Err(GuestFault::new(
                        "reading the response body needs the buffer_response feature",
                    ));
                }
                let rest = &self.response_body[self.response_read..];
                let n = out.len().min(rest.len());
                out[..n].copy_from_slice(&rest[..n]);
                self.response_read += n;
                Ok((n, self.response_read == self.response_body.len()))
            }
        }
    }

    /// The request body, read into memory on first use.
    fn buffered_request_body(&mut self) -> Result<(&Bytes, &mut usize), GuestFault> {
        if let Some(RequestBody::Unread(body)) = self
            .request_body
            .take_if(|b| matches!(b, RequestBody::Unread(_)))
        {
            let bytes = self
                .runtime
                .block_on(axum::body::to_bytes(body, self.body_limit))
                .map_err(|e| GuestFault::BodyTooLarge(e.to_string()))?;
            self.request_body = Some(RequestBody::Read { bytes, pos: 0 });
        }
        match &mut self.request_body {
            Some(RequestBody::Read { bytes, pos }) => Ok((&*bytes, pos)),
            _ => Err(GuestFault::new("the request body is gone")),
        }
    }

    /// Whether the request body still has to be read from the client (a read may block).
    pub(super) fn request_body_unread(&self) -> bool {
        matches!(self.request_body, Some(RequestBody::Unread(_)))
    }

    pub(super) fn write_body(&mut self, kind: BodyKind, bytes: &[u8]) -> Result<(), GuestFault> {
        match kind {
            BodyKind::Request => {
                self.before_next("write the request body")?;
                self.request_written
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(bytes);
            }
            BodyKind::Response => {
                if !self.response_written {
                    self.response_body.clear();
                    self.response_read = 0;
                    self.response_written = true;
                }
                self.response_body.extend_from_slice(bytes);
            }
        }
        Ok(())
    }

    fn before_next(&self, what: &str) -> Result<(), GuestFault> {
        if self.after_next {
            Err(GuestFault::new(format!(
                "cannot {what} in handle_response: the request was already handed on"
            )))
        } else {
            Ok(())
        }
    }

    // === leaving the guest ===

    /// The response the guest wrote itself (`next` was 0).
    pub(super) fn into_response(self) -> Response {
        let mut res = Response::from_parts(self.response, Body::from(self.response_body));
        // The server computes the framing of the body it is given.
        res.headers_mut().remove(header::CONTENT_LENGTH);
        res.headers_mut().remove(header::TRANSFER_ENCODING);
        res
    }

    /// Hands the (possibly changed) request on, keeping a copy of its head for
    /// `handle_response`.
    pub(super) fn into_next(mut self) -> (Request, Exchange) {
        let mut head = Request::new(()).into_parts().0;
        head.method = self.request.method.clone();
        head.uri = self.request.uri.clone();
        head.version = self.request.version;
        head.headers = self.request.headers.clone();
        let mut parts = std::mem::replace(&mut self.request, head);
        let body = match (self.request_written.take(), self.request_body.take()) {
            (Some(written), _) => Bytes::from(written),
            // Without buffering, what the guest read is consumed.
            (None, Some(RequestBody::Read { bytes, pos })) if !self.features.buffer_request() => {
                bytes.slice(pos..)
            }
            (None, Some(RequestBody::Read { bytes, .. })) => bytes,
            (None, Some(RequestBody::Unread(body))) => {
                let req = Request::from_parts(parts, body);
                return (req, self.handed_on());
            }
            (None, None) => Bytes::new(),
        };
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        (
            Request::from_parts(parts, Body::from(body)),
            self.handed_on(),
        )
    }

    fn handed_on(mut self) -> Exchange {
        self.after_next = true;
        self.request_body = None;
        self
    }

    /// Takes in the downstream response's head (and its body, when buffered) for
    /// `handle_response`.
    pub(super) fn set_downstream(&mut self, head: http::response::Parts, body: Option<Bytes>) {
        self.response = head;
        self.response_buffered = body.is_some();
        self.response_body = body.map(Vec::from).unwrap_or_default();
        self.response_read = 0;
        self.response_written = false;
    }

    /// The response after `handle_response`: the downstream body (`stream`, when it was not
    /// buffered) unless the guest wrote another.
    pub(super) fn into_final_response(self, stream: Option<Body>) -> Response {
        let rewritten = self.response_written || self.response_buffered;
        let body = match stream {
            Some(body) if !rewritten => body,
            _ => Body::from(self.response_body),
        };
        let mut res = Response::from_parts(self.response, body);
        if rewritten {
            res.headers_mut().remove(header::CONTENT_LENGTH);
            res.headers_mut().remove(header::TRANSFER_ENCODING);
        }
        res
    }
}

fn header_name(name: &[u8]) -> Result<http::HeaderName, GuestFault> {
    if name.is_empty() {
        return Err(GuestFault::new("a header name cannot be empty"));
    }
    http::HeaderName::from_bytes(name).map_err(|_| GuestFault::new("not a valid header name"))
}
