//! `mecha-bench`: measures the sidecar the way users feel it — state API latency and
//! throughput over HTTP and gRPC against a bare HTTP round trip and against the same operation
//! done directly with the store's client library, idle and loaded memory, CPU per request and
//! time to healthy, and pub/sub publish latency and publish→deliver latency and throughput on
//! four brokers — and writes `bench/RESULTS.md`.
//!
//! Run it with `bench/run.sh` (or `cargo run --release -p mecha-bench -- all [--quick]`). Every
//! process is started here on free loopback ports and stopped at the end; Redis and PostgreSQL
//! (and NATS JetStream for pub/sub) are the servers already running on the machine
//! (`MECHA_TEST_REDIS_URL`, `MECHA_TEST_POSTGRES_URL`, `MECHA_TEST_NATS_URL`). Load is a closed loop at fixed concurrency: each worker sends its
//! next request when the previous one answered, so latencies are service times at that
//! concurrency.

mod direct;
mod grpc_echo;
mod invoke;
mod load;
mod plots;
mod procs;
mod pubsub;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{Load, Op};
use crate::procs::Sidecar;
use crate::report::{Footprint, Report, Row};

const CONCURRENCIES: &[usize] = &[1, 16];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bare-server") => {
            let port: u16 = args.get(1).context("bare-server PORT")?.parse()?;
            load::bare_server(port).await
        }
        Some("app-server") => {
            let port: u16 = args.get(1).context("app-server PORT BYTES")?.parse()?;
            let bytes: usize = args.get(2).context("app-server PORT BYTES")?.parse()?;
            load::app_server(port, bytes).await
        }
        Some("grpc-echo") => {
            let port: u16 = args.get(1).context("grpc-echo PORT")?.parse()?;
            grpc_echo::serve(port).await
        }
        Some(cmd @ ("all" | "pubsub" | "invoke")) => {
            let quick = args.iter().any(|a| a == "--quick");
            let mecha = flag(&args, "--mecha")
                .map(PathBuf::from)
                .unwrap_or(default_mecha()?);
            let default_out = match cmd {
                "all" => "bench/RESULTS.md",
                "invoke" => "target/bench-invoke.md",
                _ => "target/bench-pubsub.md",
            };
            let out = flag(&args, "--out")
                .map(PathBuf::from)
                .unwrap_or_else(|| default_out.into());
            match cmd {
                "all" => all(&mecha, &out, quick).await,
                "invoke" => invoke_only(&mecha, &out, quick).await,
                _ => pubsub_only(&mecha, &out, quick).await,
            }
        }
        _ => {
            bail!(
                "usage: mecha-bench all|pubsub|invoke [--quick] [--mecha PATH] [--out FILE] | bare-server PORT | app-server PORT BYTES | grpc-echo PORT"
            )
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

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn scenario_duration(quick: bool) -> Duration {
    if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    }
}

/// The bare HTTP round trip every sidecar row is compared with.
async fn baseline(report: &mut Report, duration: Duration) -> anyhow::Result<()> {
    eprintln!("Bare HTTP round trip (baseline) …");
    let bare = procs::BareServer::start().await?;
    for &concurrency in CONCURRENCIES {
        let load = Load {
            concurrency,
            duration,
        };
        let r = load::run(load, load::bare_get(bare.port, concurrency)).await?;
        report
            .rows
            .push(Row::new("bare HTTP", "-", "HTTP", "GET", load, &r, None));
    }
    Ok(())
}

/// The service invocation scenarios and their plots, into `report`; the plots go to a `plots`
/// folder next to `out`.
async fn invocation(mecha: &Path, out: &Path, quick: bool, report: &mut Report) {
    let mut inv = invoke::run(mecha, quick).await;
    let dir = out.parent().unwrap_or(Path::new(".")).join("plots");
    match plots::draw(&inv, &dir) {
        Ok(p) => {
            report.plots = p
                .into_iter()
                .map(|(title, file)| (title, format!("plots/{file}")))
                .collect();
        }
        Err(e) => {
            eprintln!("plots failed: {e:#}");
            inv.notes.push(format!("The plots were not drawn: {e:#}"));
        }
    }
    report.invoke = Some(inv);
}

/// The invocation scenarios alone (`mecha-bench invoke`).
async fn invoke_only(mecha: &Path, out: &Path, quick: bool) -> anyhow::Result<()> {
    let mut report = Report::new(quick, scenario_duration(quick));
    invocation(mecha, out, quick, &mut report).await;
    report.write(out)?;
    eprintln!("Wrote {}", out.display());
    report.check()
}

/// The pub/sub scenarios alone, with their own baseline (`mecha-bench pubsub`).
async fn pubsub_only(mecha: &Path, out: &Path, quick: bool) -> anyhow::Result<()> {
    let duration = scenario_duration(quick);
    let mut report = Report::new(quick, duration);
    let redis = env_or("MECHA_TEST_REDIS_URL", "127.0.0.1:6379");
    let nats = env_or("MECHA_TEST_NATS_URL", "nats://127.0.0.1:4222");
    let mut brokers = pubsub::Brokers::new(redis, nats)?;
    pubsub::run(mecha, &mut report, duration, quick, &mut brokers).await;
    report.write(out)?;
    eprintln!("Wrote {}", out.display());
    report.check()
}

async fn all(mecha: &Path, out: &Path, quick: bool) -> anyhow::Result<()> {
    let duration = scenario_duration(quick);
    let mut report = Report::new(quick, duration);
    let redis = env_or("MECHA_TEST_REDIS_URL", "127.0.0.1:6379");
    let postgres = env_or(
        "MECHA_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let pg_table = format!("bench_state_{}", std::process::id());

    baseline(&mut report, duration).await?;

    let stores: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("state.in-memory", vec![]),
        ("state.sqlite", vec![]),
        ("state.redis", vec![("redisHost", redis.clone())]),
        (
            "state.postgresql",
            vec![
                ("connectionString", postgres.clone()),
                ("tableName", pg_table.clone()),
            ],
        ),
    ];
    for (store, metadata) in &stores {
        let sidecar = Sidecar::start(mecha, store, metadata).await?;
        load::prepare(sidecar.grpc_port).await?;
        for op in [Op::Get, Op::Save] {
            for &concurrency in CONCURRENCIES {
                let load = Load {
                    concurrency,
                    duration,
                };
                for protocol in ["HTTP", "gRPC"] {
                    eprintln!(
                        "{store}: {protocol} {} at concurrency {concurrency} …",
                        op.name()
                    );
                    let call = match protocol {
                        "HTTP" => load::http_state(sidecar.http_port, op, concurrency),
                        _ => load::grpc_state(sidecar.grpc_port, op).await?,
                    };
                    let cpu_before = sidecar.cpu_seconds()?;
                    let r = load::run(load, call).await?;
                    let cpu = sidecar.cpu_seconds()? - cpu_before;
                    report.rows.push(Row::new(
                        "mecha",
                        store,
                        protocol,
                        op.name(),
                        load,
                        &r,
                        Some(cpu),
                    ));
                }
                let direct = match *store {
                    "state.redis" => Some(("direct redis", direct::redis(&redis, op).await?)),
                    "state.postgresql" => {
                        let conns = u32::try_from(concurrency).unwrap_or(16);
                        Some((
                            "direct sqlx",
                            direct::postgres(&postgres, &pg_table, op, conns).await?,
                        ))
                    }
                    _ => None,
                };
                if let Some((target, call)) = direct {
                    eprintln!(
                        "{store}: {target} {} at concurrency {concurrency} …",
                        op.name()
                    );
                    let r = load::run(load, call).await?;
                    report
                        .rows
                        .push(Row::new(target, store, "native", op.name(), load, &r, None));
                }
            }
        }
        report
            .peak_rss_kb
            .push((store.to_string(), sidecar.peak_rss_kb()?));
    }
    drop_pg_table(&postgres, &pg_table).await;
    bindings(mecha, &mut report, duration, &redis, &postgres).await?;

    let nats = env_or("MECHA_TEST_NATS_URL", "nats://127.0.0.1:4222");
    let mut brokers = pubsub::Brokers::new(redis.clone(), nats)?;
    pubsub::run(mecha, &mut report, duration, quick, &mut brokers).await;

    invocation(mecha, out, quick, &mut report).await;

    eprintln!("Footprint and start-up …");
    report.footprint = Some(Footprint::measure(mecha, if quick { 5 } else { 20 }).await?);
    report.write(out)?;
    eprintln!("Wrote {}", out.display());
    report.check()
}

async fn drop_pg_table(url: &str, table: &str) {
    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&pool)
            .await;
    }
}

/// Output bindings on Redis (`get`) and PostgreSQL (`query`) through the sidecar over HTTP,
/// against the same operation done directly.
async fn bindings(
    mecha: &Path,
    report: &mut Report,
    duration: Duration,
    redis: &str,
    postgres: &str,
) -> anyhow::Result<()> {
    let key = format!("bench-binding-{}", std::process::id());
    let client = redis::Client::open(format!("redis://{redis}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg(&key)
        .arg(load::VALUE)
        .query_async::<()>(&mut conn)
        .await?;
    let components = [
        (
            "redisbinding",
            "bindings.redis",
            vec![("redisHost", redis.to_owned())],
        ),
        (
            "pgbinding",
            "bindings.postgresql",
            vec![("connectionString", postgres.to_owned())],
        ),
    ];
    let sidecar = Sidecar::start_with(mecha, &components).await?;
    let redis_body = format!(r#"{{"operation":"get","metadata":{{"key":"{key}"}}}}"#);
    let pg_body =
        r#"{"operation":"query","metadata":{"sql":"SELECT $1::int","params":"[1]"}}"#.to_owned();
    for &concurrency in CONCURRENCIES {
        let load = Load {
            concurrency,
            duration,
        };
        eprintln!("bindings: redis get at concurrency {concurrency} …");
        let call = load::http_binding(
            sidecar.http_port,
            "redisbinding",
            redis_body.clone(),
            concurrency,
        );
        let r = load::run(load, call).await?;
        report.rows.push(Row::new(
            "mecha",
            "bindings.redis",
            "HTTP",
            "get",
            load,
            &r,
            None,
        ));
        let r = load::run(load, direct::redis_get(redis, &key).await?).await?;
        report.rows.push(Row::new(
            "direct redis",
            "bindings.redis",
            "native",
            "get",
            load,
            &r,
            None,
        ));
        eprintln!("bindings: postgresql query at concurrency {concurrency} …");
        let call = load::http_binding(sidecar.http_port, "pgbinding", pg_body.clone(), concurrency);
        let r = load::run(load, call).await?;
        report.rows.push(Row::new(
            "mecha",
            "bindings.postgresql",
            "HTTP",
            "query",
            load,
            &r,
            None,
        ));
        let conns = u32::try_from(concurrency).unwrap_or(16);
        let r = load::run(load, direct::postgres_select(postgres, conns).await?).await?;
        report.rows.push(Row::new(
            "direct sqlx",
            "bindings.postgresql",
            "native",
            "query",
            load,
            &r,
            None,
        ));
    }
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}
