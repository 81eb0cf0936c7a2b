//! Closed-loop load at fixed concurrency, recorded in HDR histograms. A scenario is a
//! [`Call`]: one request, made by a worker, answering whether it succeeded. Calls exist for
//! HTTP/1.1 (pooled keep-alive connections), gRPC (one HTTP/2 connection, as SDKs use), and the
//! direct Redis and PostgreSQL clients the sidecar is compared with.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use dapr::dapr::proto::common::v1::StateItem;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{GetStateRequest, SaveStateRequest};
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The value every scenario reads and writes.
pub(crate) const VALUE: &str = r#"{"n":1}"#;

/// One request of a scenario, made by worker `n`; `true` when it succeeded.
pub(crate) type Call = Arc<dyn Fn(usize) -> BoxFuture<'static, bool> + Send + Sync>;

/// What a scenario does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Save,
}

/// How long and how hard a scenario runs.
#[derive(Clone, Copy)]
pub(crate) struct Load {
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
}

/// What a scenario measured.
pub(crate) struct Outcome {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Save => "SAVE",
        }
    }
}

fn item(key: &str) -> StateItem {
    StateItem {
        key: key.into(),
        value: VALUE.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Runs `call` from `load.concurrency` workers for `load.duration`, after a warm-up of 300 ms
/// (a fifth of the duration when that is shorter, as in quick runs).
pub(crate) async fn run(load: Load, call: Call) -> anyhow::Result<Outcome> {
    drive(
        Load {
            duration: Duration::from_millis(300).min(load.duration / 5),
            ..load
        },
        call.clone(),
    )
    .await?;
    drive(load, call).await
}

async fn drive(load: Load, call: Call) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::new();
    for worker in 0..load.concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = call(worker).await;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                errors += u64::from(!ok);
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

pub(crate) fn http_client(concurrency: usize) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build(connector)
}

pub(crate) async fn send(
    c: &Client<HttpConnector, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> bool {
    match c.request(req).await {
        Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// `GET /` on the bare server.
pub(crate) fn bare_get(port: u16, concurrency: usize) -> Call {
    let c = http_client(concurrency);
    let url = format!("http://127.0.0.1:{port}/");
    Arc::new(move |_| {
        let (c, url) = (c.clone(), url.clone());
        Box::pin(async move {
            let Ok(req) = http::Request::get(url).body(Full::default()) else {
                return false;
            };
            send(&c, req).await
        })
    })
}

/// The state API over HTTP: GET of key `k`, or SAVE of a key per worker.
pub(crate) fn http_state(port: u16, op: Op, concurrency: usize) -> Call {
    let c = http_client(concurrency);
    let base = format!("http://127.0.0.1:{port}/v1.0/state/statestore");
    Arc::new(move |worker| {
        let (c, base) = (c.clone(), base.clone());
        Box::pin(async move {
            let req = match op {
                Op::Get => http::Request::get(format!("{base}/k")).body(Full::default()),
                Op::Save => http::Request::post(base)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"[{{"key":"w{worker}","value":{VALUE}}}]"#
                    )))),
            };
            let Ok(req) = req else { return false };
            send(&c, req).await
        })
    })
}

/// The state API over gRPC, on one shared HTTP/2 connection.
pub(crate) async fn grpc_state(port: u16, op: Op) -> anyhow::Result<Call> {
    let c = DaprClient::connect(format!("http://127.0.0.1:{port}")).await?;
    Ok(Arc::new(move |worker| {
        let mut c = c.clone();
        Box::pin(async move {
            match op {
                Op::Get => c
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
                        states: vec![item(&format!("w{worker}"))],
                    })
                    .await
                    .is_ok(),
            }
        })
    }))
}

/// Saves the key every GET scenario reads.
pub(crate) async fn prepare(grpc_port: u16) -> anyhow::Result<()> {
    let mut c = DaprClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?;
    c.save_state(SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![item("k")],
    })
    .await?;
    Ok(())
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

/// An output binding invocation over HTTP with a fixed body.
pub(crate) fn http_binding(port: u16, name: &str, body: String, concurrency: usize) -> Call {
    let c = http_client(concurrency);
    let url = format!("http://127.0.0.1:{port}/v1.0/bindings/{name}");
    let body = Bytes::from(body);
    Arc::new(move |_| {
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        Box::pin(async move {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(body));
            let Ok(req) = req else { return false };
            send(&c, req).await
        })
    })
}

/// Runs `call` at a constant `rate` (requests per second) from `workers` workers for
/// `duration`: request `i` is due at `start + i / rate`, worker `w` sends requests
/// `w, w + workers, …`. A request sent late because the worker's previous one was still
/// running is measured from its due time, so a slow answer also counts against the requests
/// queued behind it (no coordinated omission, as `oha -q` with `--latency-correction`); a
/// request sent on time is measured from when it was sent.
pub(crate) async fn paced(
    rate: u32,
    workers: usize,
    duration: Duration,
    call: Call,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs(1) / rate.max(1);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let mut i = worker as u64;
            while i < total {
                let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                // Behind schedule, latency counts from the due time; on schedule, from the
                // wake-up, as the runtime's timer wakes up to a millisecond late.
                let sent = if Instant::now() >= due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                };
                let ok = call(worker).await;
                hist.record(sent.elapsed().as_micros().max(1) as u64)?;
                errors += u64::from(!ok);
                i += workers as u64;
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

/// The target app of the invocation scenarios: an HTTP/1.1 server that reads each request's
/// body and answers `body_len` bytes with 200, except under `/dapr/` (the paths a sidecar asks
/// its app for configuration and subscriptions), which answer 404 as an app without them does.
pub(crate) async fn app_server(port: u16, body_len: usize) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let body = Bytes::from(vec![b'x'; body_len]);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let dapr = req.uri().path().starts_with("/dapr/");
                        let _ = req.into_body().collect().await;
                        let mut res =
                            hyper::Response::new(Full::new(if dapr { Bytes::new() } else { body }));
                        if dapr {
                            *res.status_mut() = http::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, Infallible>(res)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
