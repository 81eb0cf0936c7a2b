//! `mecha run`: a sidecar in this process and the app as a child, like `dapr run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::config::{self, ENV_API_TOKEN};

/// The embedded default state store, written on first use.
const DEFAULT_STATESTORE: &str = "\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: \"{db}\"
  - name: actorStateStore
    value: \"true\"
";

/// The embedded default lock store, on the same file.
const DEFAULT_LOCKSTORE: &str = "\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: lockstore
spec:
  type: lock.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: \"{db}\"
";

/// The embedded default broker, on its own file so that message traffic does not contend
/// with state writes.
const DEFAULT_PUBSUB: &str = "\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: \"{pubsubdb}\"
";

/// Runs the sidecar and the app; returns the app's exit code.
pub(crate) async fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&args.sidecar.log_level, args.sidecar.log_as_json)?;
    if args.sidecar.resources_path.is_empty() {
        args.sidecar.resources_path.push(default_resources()?);
    }
    let app_id = match &args.sidecar.app_id {
        Some(id) => id.clone(),
        None => default_app_id(&args.command),
    };
    let running = crate::start_sidecar(&args.sidecar, app_id.clone()).await?;
    let shutdown = running.shutdown_handle();
    let http_port = running
        .http_addrs
        .first()
        .map(|a| a.port())
        .unwrap_or_default();
    let grpc_port = running
        .grpc_addrs
        .first()
        .map(|a| a.port())
        .unwrap_or_default();
    let sidecar = tokio::spawn(running.wait());

    let Some((program, program_args)) = args.command.split_first() else {
        crate::forward_signals_to(shutdown)?;
        sidecar.await.context("the sidecar task failed")?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut cmd = Command::new(program);
    cmd.args(program_args)
        .env("DAPR_HTTP_PORT", http_port.to_string())
        .env("DAPR_GRPC_PORT", grpc_port.to_string())
        .env("APP_ID", &app_id);
    if let Some(port) = args.sidecar.app_port {
        cmd.env("APP_PORT", port.to_string());
    }
    if let Ok(token) = std::env::var(ENV_API_TOKEN) {
        cmd.env(ENV_API_TOKEN, token);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            shutdown.trigger();
            let _ = sidecar.await;
            return Err(e).with_context(|| format!("cannot start the app '{program}'"));
        }
    };
    tracing::info!(command = %program, pid = child.id().unwrap_or_default(), "App started");
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut sidecar_stopped = Box::pin(shutdown.clone().wait());
    let mut asked_app_to_stop = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = term.recv() => forward(pid, Signal::SIGTERM),
            _ = int.recv() => forward(pid, Signal::SIGINT),
            _ = &mut sidecar_stopped, if !asked_app_to_stop => {
                tracing::info!("Sidecar is stopping; asking the app to stop");
                forward(pid, Signal::SIGTERM);
                asked_app_to_stop = true;
            }
        }
    };
    tracing::info!(status = %status, "App exited; stopping the sidecar");
    shutdown.trigger();
    sidecar.await.context("the sidecar task failed")?;
    Ok(exit_code(status))
}

fn forward(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        tracing::info!(signal = %sig, "Forwarding signal to the app");
        let _ = kill(pid, sig);
    }
}

/// The app's exit code; a signal death maps to 128 + the signal number, as shells do.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    }
}

/// `~/.mecha/components`, created with the embedded default (statestore, lockstore, pubsub);
/// a default file missing from an existing folder is added.
fn default_resources() -> anyhow::Result<PathBuf> {
    let home = config::mecha_home()?;
    let dir = home.join("components");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db = home.join("state.db").display().to_string();
    let pubsub_db = home.join("pubsub.db").display().to_string();
    let mut written = Vec::new();
    for (name, template) in [
        ("statestore.yaml", DEFAULT_STATESTORE),
        ("lockstore.yaml", DEFAULT_LOCKSTORE),
        ("pubsub.yaml", DEFAULT_PUBSUB),
    ] {
        let file = dir.join(name);
        if file.exists() {
            continue;
        }
        let text = template
            .replace("{db}", &db)
            .replace("{pubsubdb}", &pubsub_db);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        written.push(name);
    }
    if written.is_empty() {
        tracing::info!(folder = %dir.display(), "Using the components in the default folder");
    } else {
        tracing::info!(
            folder = %dir.display(),
            files = ?written,
            "Wrote the embedded default components (statestore, lockstore and pubsub on SQLite)"
        );
    }
    Ok(dir)
}

fn default_app_id(command: &[String]) -> String {
    command
        .first()
        .and_then(|c| Path::new(c).file_stem())
        .and_then(|s| s.to_str())
        .map(|s| s.replace(['.', '|'], "-"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mecha".to_owned())
}
