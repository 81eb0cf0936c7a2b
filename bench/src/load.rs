//! Closed-loop load at fixed concurrency over HTTP/1.1 (pooled keep-alive connections) and
//! gRPC (one HTTP/2 connection, as SDKs use), recorded in HDR histograms.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use dapr::dapr::proto::common::v1::StateItem;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{GetStateRequest, SaveStateRequest};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::procs::Sidecar;

/// The value every scenario reads and writes (1 KB of JSON would dominate; Dapr's own perf
/// tests use small values for state).
const VALUE: &str = r#"{"n":1}"#;

/// The protocol a scenario speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Grpc,
}

/// What a scenario does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    BareGet,
    Get,
    Save,
}

/// One measured scenario.
pub(crate) struct Scenario {
    pub(crate) protocol: Protocol,
    pub(crate) op: Op,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
}

/// What a scenario measured.
pub(crate) struct Outcome {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Grpc => "gRPC",
        }
    }
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::BareGet => "GET",
            Op::Get => "GET",
            Op::Save => "SAVE",
        }
    }
}

/// Saves the key every GET scenario reads.
pub(crate) async fn prepare(s: &Sidecar) -> anyhow::Result<()> {
    let mut c = DaprClient::connect(format!("http://127.0.0.1:{}", s.grpc_port)).await?;
    c.save_state(SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![item("k")],
    })
    .await?;
    Ok(())
}

fn item(key: &str) -> StateItem {
    StateItem {
        key: key.into(),
        value: VALUE.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Runs one scenario against `port` (HTTP) or `grpc_port` (gRPC).
pub(crate) async fn run(s: &Scenario, port: u16, grpc_port: u16) -> anyhow::Result<Outcome> {
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(s.concurrency)
        .build_http();
    let grpc = match s.protocol {
        Protocol::Grpc => Some(DaprClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?),
        Protocol::Http => None,
    };
    // Warm up connections and caches.
    let warm = Scenario {
        duration: Duration::from_millis(300),
        ..*s
    };
    drive(&warm, port, &http, grpc.clone()).await?;
    drive(s, port, &http, grpc).await
}

async fn drive(
    s: &Scenario,
    port: u16,
    http: &Client<HttpConnector, Full<Bytes>>,
    grpc: Option<DaprClient<tonic::transport::Channel>>,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + s.duration;
    let mut tasks = Vec::new();
    for worker in 0..s.concurrency {
        let http = http.clone();
        let mut grpc = grpc.clone();
        let (op, protocol) = (s.op, s.protocol);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let key = format!("w{worker}");
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match (protocol, grpc.as_mut()) {
                    (Protocol::Grpc, Some(c)) => grpc_call(c, op, &key).await,
                    _ => http_call(&http, port, op, &key).await,
                };
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                if !ok {
                    errors += 1;
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.context("worker panicked")??;
        latency_us.add(h)?;
        errors += e;
    }
    Ok(Outcome {
        latency_us,
        errors,
        elapsed: start.elapsed(),
    })
}

async fn http_call(c: &Client<HttpConnector, Full<Bytes>>, port: u16, op: Op, key: &str) -> bool {
    let req = match op {
        Op::BareGet => {
            http::Request::get(format!("http://127.0.0.1:{port}/")).body(Full::default())
        }
        Op::Get => http::Request::get(format!("http://127.0.0.1:{port}/v1.0/state/statestore/k"))
            .body(Full::default()),
        Op::Save => http::Request::post(format!("http://127.0.0.1:{port}/v1.0/state/statestore"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                r#"[{{"key":"{key}","value":{VALUE}}}]"#
            )))),
    };
    let Ok(req) = req else { return false };
    match c.request(req).await {
        Ok(res) => {
            let ok = res.status().is_success();
            ok && res.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

async fn grpc_call(c: &mut DaprClient<tonic::transport::Channel>, op: Op, key: &str) -> bool {
    match op {
        Op::Get | Op::BareGet => c
            .get_state(GetStateRequest {
                store_name: "statestore".into(),
                key: "k".into(),
                ..Default::default()
            })
            .await
            .is_ok(),
        Op::Save => c
            .save_state(SaveStateRequest {
                store_name: "statestore".into(),
                states: vec![item(key)],
            })
            .await
            .is_ok(),
    }
}

/// A minimal HTTP/1.1 server answering every request with `{"n":1}`: the baseline hop.
pub(crate) async fn bare_server(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    VALUE.as_bytes(),
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
