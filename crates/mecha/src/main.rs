//! The `mecha` binary: reads flags and environment, sets up logging, and runs the sidecar
//! (`mecha sidecar`) or the launcher (`mecha run`). Behaviour lives in `mecha-runtime`.

mod cli;
mod config;
mod logging;
mod pki;
mod run;

use std::process::ExitCode;

use clap::Parser;
use mecha_runtime::{Running, ShutdownHandle, Sidecar};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Cli, Command, SidecarArgs};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Sidecar(args) => args.runtime_threads,
        Command::Run(args) => args.sidecar.runtime_threads,
        _ => 1,
    };
    let runtime = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mecha: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sidecar(args) => sidecar(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Components => {
                components();
                Ok(ExitCode::SUCCESS)
            }
            Command::Ca(cli::CaCommand::Init(args)) => pki::ca_init(&args),
            Command::Sentry(args) => pki::sentry(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Mecha stopped with an error");
            eprintln!("mecha: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one thread (the default, as a sidecar's work is mostly waiting on
/// sockets, and one thread spares the cross-thread wake-ups of a work-stealing pool), `n`
/// worker threads, or with 0 one per CPU. Blocking work (SQLite, file I/O, wasm guests) runs on
/// tokio's blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// `mecha sidecar`: serve until SIGTERM, SIGINT or `POST /v1.0/shutdown`.
async fn sidecar(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    logging::init(&args.log_level, args.log_as_json)?;
    let app_id = args
        .app_id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--app-id is required"))?;
    let config = config::runtime_config(&args, app_id)?;
    let running = Sidecar::start(config).await?;
    forward_signals_to(running.shutdown_handle())?;
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// Starts a sidecar from flags; shared by `sidecar` and `run`.
pub(crate) async fn start_sidecar(args: &SidecarArgs, app_id: String) -> anyhow::Result<Running> {
    let config = config::runtime_config(args, app_id)?;
    Ok(Sidecar::start(config).await?)
}

/// On SIGTERM or SIGINT, starts a graceful shutdown; a second signal exits at once.
pub(crate) fn forward_signals_to(shutdown: ShutdownHandle) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen > 1 {
                tracing::warn!("Second signal received; exiting without draining");
                std::process::exit(1);
            }
            tracing::info!("Signal received; starting graceful shutdown");
            shutdown.trigger();
        }
    });
    Ok(())
}

fn components() {
    println!("{:<32} VERSION", "TYPE");
    for row in mecha_runtime::components::supported_types() {
        let (t, v) = row.rsplit_once('/').unwrap_or((row.as_str(), ""));
        println!("{t:<32} {v}");
    }
}
