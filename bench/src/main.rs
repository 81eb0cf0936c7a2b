//! `mecha-bench`: measures the sidecar the way users feel it — state API latency and
//! throughput over HTTP and gRPC against a bare HTTP round trip, idle and loaded memory, CPU
//! per request and time to healthy — and writes `bench/RESULTS.md`.
//!
//! Run it with `bench/run.sh` (or `cargo run --release -p mecha-bench -- all [--quick]`). Every
//! process is started here on free loopback ports and stopped at the end. Load is a closed loop
//! at fixed concurrency: each worker sends its next request when the previous one answered, so
//! latencies are service times at that concurrency, not open-loop response times.

mod load;
mod procs;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{Op, Protocol, Scenario};
use crate::procs::Sidecar;
use crate::report::{Footprint, Report, Row};

/// Stores every scenario runs against.
const STORES: &[&str] = &["state.in-memory", "state.sqlite"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bare-server") => {
            let port: u16 = args.get(1).context("bare-server PORT")?.parse()?;
            load::bare_server(port).await
        }
        Some("all") => {
            let quick = args.iter().any(|a| a == "--quick");
            let mecha = flag(&args, "--mecha")
                .map(PathBuf::from)
                .unwrap_or(default_mecha()?);
            let out = flag(&args, "--out")
                .map(PathBuf::from)
                .unwrap_or_else(|| "bench/RESULTS.md".into());
            all(&mecha, &out, quick).await
        }
        _ => {
            bail!("usage: mecha-bench all [--quick] [--mecha PATH] [--out FILE] | bare-server PORT")
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn default_mecha() -> anyhow::Result<PathBuf> {
    let p = PathBuf::from("target/release/mecha");
    if !p.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p mecha`",
            p.display()
        );
    }
    Ok(p)
}

async fn all(mecha: &std::path::Path, out: &std::path::Path, quick: bool) -> anyhow::Result<()> {
    let duration = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let concurrencies: &[usize] = &[1, 16];
    let mut report = Report::new(quick, duration);

    eprintln!("Bare HTTP round trip (baseline) …");
    let bare = procs::BareServer::start().await?;
    for &c in concurrencies {
        let s = Scenario {
            protocol: Protocol::Http,
            op: Op::BareGet,
            concurrency: c,
            duration,
        };
        let r = load::run(&s, bare.port, 0).await?;
        report.rows.push(Row::new("bare HTTP", "-", &s, &r, None));
    }
    drop(bare);

    for store in STORES {
        let sidecar = Sidecar::start(mecha, store).await?;
        load::prepare(&sidecar).await?;
        for op in [Op::Get, Op::Save] {
            for protocol in [Protocol::Http, Protocol::Grpc] {
                for &c in concurrencies {
                    let s = Scenario {
                        protocol,
                        op,
                        concurrency: c,
                        duration,
                    };
                    eprintln!(
                        "{store}: {} {} at concurrency {c} …",
                        protocol.name(),
                        op.name()
                    );
                    let cpu_before = sidecar.cpu_seconds()?;
                    let port = if protocol == Protocol::Http {
                        sidecar.http_port
                    } else {
                        sidecar.grpc_port
                    };
                    let r = load::run(&s, port, sidecar.grpc_port).await?;
                    let cpu = sidecar.cpu_seconds()? - cpu_before;
                    report
                        .rows
                        .push(Row::new("mecha", store, &s, &r, Some(cpu)));
                }
            }
        }
        report
            .peak_rss_kb
            .push((store.to_string(), sidecar.peak_rss_kb()?));
    }

    eprintln!("Footprint and start-up …");
    report.footprint = Some(Footprint::measure(mecha, if quick { 5 } else { 20 }).await?);
    report.write(out)?;
    eprintln!("Wrote {}", out.display());
    Ok(())
}
