//! Pooled plaintext HTTP/1.1 keep-alive connections per `host:port`, for the two hops of an
//! HTTP invocation: caller sidecar → callee sidecar, and callee sidecar → app.
//!
//! Lighter per request than hyper-util's general-purpose pool: a lookup is one fast hash under
//! one lock, and a connection goes back to the pool from its response body as the body ends
//! (no task spawned and no channel made per request). A request that could not be written on a
//! pooled connection (the peer had closed it) is sent again on another one; a connection whose
//! response body is dropped before its end is closed, not reused.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per `host:port`.
const MAX_IDLE_PER_PEER: usize = 64;

/// The pool.
pub(crate) struct H1Pool {
    peers: Mutex<hashbrown::HashMap<Peer, Arc<Idle>>>,
    connect_timeout: Duration,
}

/// The idle connections to one peer, and the `Host` header that names it.
struct Idle {
    connections: Mutex<Vec<SendRequest<Body>>>,
    host: Option<HeaderValue>,
}

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum H1Error {
    /// No connection could be made.
    Connect(String),
    /// The connection failed while the request or its answer was on the way.
    Http(hyper::Error),
}

#[derive(Hash, PartialEq, Eq)]
struct Peer {
    host: Box<str>,
    port: u16,
}

/// A [`Peer`] borrowed (same fields in the same order, so the same hash).
#[derive(Hash)]
struct PeerRef<'a> {
    host: &'a str,
    port: u16,
}

impl hashbrown::Equivalent<Peer> for PeerRef<'_> {
    fn equivalent(&self, key: &Peer) -> bool {
        self.port == key.port && self.host == &*key.host
    }
}

/// A response body that hands its connection back to the pool when it ends.
pub(crate) struct PooledBody {
    body: Incoming,
    back: Option<(Arc<Idle>, SendRequest<Body>)>,
}

// === impl H1Error ===

impl H1Error {
    /// Whether no connection could be made (nothing reached the peer).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, H1Error::Connect(_))
    }
}

impl fmt::Display for H1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H1Error::Connect(e) => write!(f, "cannot connect: {e}"),
            H1Error::Http(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for H1Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            H1Error::Connect(_) => None,
            H1Error::Http(e) => Some(e),
        }
    }
}

// === impl H1Pool ===

impl H1Pool {
    /// An empty pool; new connections give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            peers: Mutex::new(hashbrown::HashMap::new()),
            connect_timeout,
        })
    }

    /// Sends `req` to `host:port` over a pooled connection (or a new one). The request's URI
    /// should be in origin form (`/path?query`); a `Host` header is added when it has none.
    pub(crate) async fn send(
        &self,
        host: &str,
        port: u16,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, H1Error> {
        let idle = self.idle(host, port);
        if !req.headers().contains_key(header::HOST)
            && let Some(v) = &idle.host
        {
            req.headers_mut().insert(header::HOST, v.clone());
        }
        loop {
            let (mut sender, reused) = match idle.checkout() {
                Some(s) => (s, true),
                None => (self.connect(host, port).await?, false),
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(H1Error::Http(e));
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    return Ok(res.map(|body| {
                        PooledBody {
                            body,
                            back: Some((idle, sender)),
                        }
                        .finish_if_ended()
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the pooled connection was closed under us; try another.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(H1Error::Http(e.into_error())),
                },
            }
        }
    }

    /// The idle connections to `host:port`.
    fn idle(&self, host: &str, port: u16) -> Arc<Idle> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(idle) = peers.get(&PeerRef { host, port }) {
            return idle.clone();
        }
        let idle = Arc::new(Idle {
            connections: Mutex::default(),
            // An IPv6 address goes in brackets (`[::1]:3500`).
            host: HeaderValue::from_str(&if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            })
            .ok(),
        });
        peers.insert(
            Peer {
                host: host.into(),
                port,
            },
            idle.clone(),
        );
        idle
    }

    async fn connect(&self, host: &str, port: u16) -> Result<SendRequest<Body>, H1Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                H1Error::Connect(format!(
                    "{host}:{port}: no connection within {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(|e| H1Error::Connect(format!("{host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| H1Error::Connect(format!("{host}:{port}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }
}

// === impl Idle ===

impl Idle {
    /// An idle connection that is still open.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = list.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_IDLE_PER_PEER {
            list.push(sender);
        }
    }
}

// === impl PooledBody ===

impl PooledBody {
    /// Hands the connection back at once when the response has no body left to read.
    fn finish_if_ended(mut self) -> Self {
        if self.body.is_end_stream() {
            self.finish();
        }
        self
    }

    fn finish(&mut self) {
        if let Some((idle, sender)) = self.back.take() {
            idle.give_back(sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(),
            // A failed connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1.1 server answering `ok <n> <uri>` (n counts requests per connection) that
    /// counts the connections it accepted; `/close` answers with `Connection: close`, and
    /// `/stream` sends one chunk of a body that never ends.
    async fn server() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map_or(0, |a| a.port());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let served = Arc::new(AtomicUsize::new(0));
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            if req.uri().path() == "/stream" {
                                let chunks = futures::stream::iter([Ok::<_, std::io::Error>(
                                    Bytes::from_static(b"first"),
                                )])
                                .chain(futures::stream::pending());
                                return Ok(Response::new(Body::from_stream(chunks)));
                            }
                            let mut res =
                                Response::new(Body::from(format!("ok {n} {}", req.uri())));
                            if req.uri().path() == "/close" {
                                res.headers_mut()
                                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (port, accepted)
    }

    async fn send_get(pool: &H1Pool, port: u16, path: &str) -> Response<PooledBody> {
        let req = Request::get(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        pool.send("127.0.0.1", port, req)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn get(pool: &H1Pool, port: u16, path: &str) -> String {
        let body = send_get(pool, port, path)
            .await
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    #[tokio::test]
    async fn connections_are_reused_and_replaced_when_closed() {
        let (port, accepted) = server().await;
        let pool = H1Pool::new(Duration::from_secs(2));
        for n in 1..=5 {
            assert_eq!(get(&pool, port, "/a?x=1").await, format!("ok {n} /a?x=1"));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for sequential calls"
        );

        // The server closes this connection after answering: the next call takes a new one.
        assert_eq!(get(&pool, port, "/close").await, "ok 6 /close");
        assert_eq!(get(&pool, port, "/b").await, "ok 1 /b");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // Concurrent calls open more connections, which are all kept for later calls.
        let calls = (0..4).map(|_| get(&pool, port, "/c"));
        futures::future::join_all(calls).await;
        let after_burst = accepted.load(Ordering::SeqCst);
        assert!((3..=5).contains(&after_burst), "{after_burst}");
        for _ in 0..8 {
            get(&pool, port, "/d").await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), after_burst);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
        let (port, accepted) = server().await;
        let pool = H1Pool::new(Duration::from_secs(2));
        let mut body = send_get(&pool, port, "/stream").await.into_body();
        let first = body.frame().await.and_then(|f| f.ok()?.into_data().ok());
        assert_eq!(first.as_deref(), Some(&b"first"[..]));
        drop(body);
        // That connection is still busy with the unfinished answer: a reused one would hang.
        let next = tokio::time::timeout(Duration::from_secs(5), get(&pool, port, "/y")).await;
        assert_eq!(next.ok().as_deref(), Some("ok 1 /y"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().map_or(0, |a| a.port())
        };
        let pool = H1Pool::new(Duration::from_secs(2));
        let req = Request::get("/")
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        match pool.send("127.0.0.1", port, req).await {
            Err(e) => assert!(e.is_connect(), "{e}"),
            Ok(res) => panic!("answered {}", res.status()),
        }
    }
}
