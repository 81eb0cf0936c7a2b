//! A tiny gRPC echo service (`/bench.Echo/Echo`) and its client, without generated code: the
//! messages travel as raw bytes through a pass-through codec, which is all a transparent gRPC
//! proxy (the sidecar's `dapr-app-id` proxying, HAProxy in `mode http` over h2c) sees anyway.
//! The payload is a valid protobuf message (field 1, 1 KB of bytes), so tools that decode it
//! would still read it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::load::Call;

/// The full method path of the echo call.
pub(crate) const METHOD: &str = "/bench.Echo/Echo";

/// A codec that passes message bytes through unchanged.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

/// The encoder of [`RawCodec`].
pub(crate) struct RawEncoder;

/// The decoder of [`RawCodec`].
pub(crate) struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// A protobuf message with one `bytes` field (number 1) of `len` bytes.
pub(crate) fn payload(len: usize) -> Bytes {
    let mut v = vec![0x0a];
    let mut n = len;
    while n >= 0x80 {
        v.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v.extend(std::iter::repeat_n(b'x', len));
    Bytes::from(v)
}

/// The echo service: answers `/bench.Echo/Echo` with the request message, and every other
/// method with `UNIMPLEMENTED` (which is what a sidecar's app-callback probes get).
#[derive(Clone, Copy)]
pub(crate) struct EchoServer;

struct Echo;

impl UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(req.into_inner())) })
    }
}

impl NamedService for EchoServer {
    const NAME: &'static str = "bench.Echo";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() == METHOD {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                Ok(grpc.unary(Echo, req).await)
            } else {
                Ok(Status::unimplemented("not served by the bench echo app").into_http())
            }
        })
    }
}

/// Serves the echo service on `port` until the process ends (`mecha-bench grpc-echo PORT`).
pub(crate) async fn serve(port: u16) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServer)
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}

/// One echo call of `body` on one shared HTTP/2 connection to `port`; with `app_id`, the call
/// carries `dapr-app-id` metadata, so a sidecar proxies it to that app.
pub(crate) async fn call(port: u16, app_id: Option<&str>, body: Bytes) -> anyhow::Result<Call> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let grpc = tonic::client::Grpc::new(channel);
    let app_id: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        app_id.map(str::parse).transpose()?;
    Ok(Arc::new(move |_| {
        let (mut grpc, app_id, body) = (grpc.clone(), app_id.clone(), body.clone());
        Box::pin(async move {
            if grpc.ready().await.is_err() {
                return false;
            }
            let len = body.len();
            let mut req = Request::new(body);
            if let Some(id) = app_id {
                req.metadata_mut().insert("dapr-app-id", id);
            }
            grpc.unary::<Bytes, Bytes, _>(req, PathAndQuery::from_static(METHOD), RawCodec)
                .await
                .is_ok_and(|r| r.get_ref().len() == len)
        })
    }))
}
