//! `mecha ca init` and `mecha sentry`: the CA and the certificate-signing service for mTLS.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use mecha_core::resource::Resource;
use mecha_runtime::ShutdownHandle;
use mecha_runtime::mtls::{MtlsSpec, ca, sentry};

use crate::cli::{CaInitArgs, SentryArgs};
use crate::config::pki_dir;

/// `mecha ca init`.
pub(crate) fn ca_init(args: &CaInitArgs) -> anyhow::Result<ExitCode> {
    let dir = pki_dir(args.dir.as_ref())?;
    let existing = match (&args.issuer_cert, &args.issuer_key, &args.root_cert) {
        (Some(cert), Some(key), Some(root)) => Some(ca::ExistingIssuer {
            cert: cert.clone(),
            key: key.clone(),
            root: root.clone(),
        }),
        _ => None,
    };
    let brought = existing.is_some();
    let files = ca::init(&ca::InitOptions {
        dir: dir.clone(),
        existing,
        force: args.force,
    })?;
    println!(
        "{} in {}:",
        if brought {
            "Installed the given issuer"
        } else {
            "Created a root and an issuer (ECDSA P-256, valid for one year)"
        },
        dir.display()
    );
    for f in files {
        println!("  {}", f.display());
    }
    println!(
        "Next: `mecha sentry` to sign workload certificates, then start sidecars with --enable-mtls."
    );
    Ok(ExitCode::SUCCESS)
}

/// `mecha sentry`: serve until SIGTERM or SIGINT.
pub(crate) async fn sentry(args: SentryArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&args.log_level, args.log_as_json)?;
    let dir = pki_dir(args.dir.as_ref())?;
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| dir.join(ca::TOKEN));
    let token = std::fs::read_to_string(&token_file).with_context(|| {
        format!(
            "reading the bootstrap token {} (create the CA with `mecha ca init`)",
            token_file.display()
        )
    })?;
    let spec = match &args.config {
        Some(file) => mtls_spec_of(file)?,
        None => MtlsSpec::default(),
    };
    let shutdown = ShutdownHandle::new();
    crate::forward_signals_to(shutdown.clone())?;
    let opts = sentry::SentryOptions {
        dir,
        listen: SocketAddr::new(args.listen_address, args.port),
        token,
        trust_domain: args.trust_domain.clone(),
        namespace: std::env::var("NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        spec,
    };
    sentry::run(opts, shutdown)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}

/// `spec.mtls` of the Configuration resources in `file`.
fn mtls_spec_of(file: &std::path::Path) -> anyhow::Result<MtlsSpec> {
    let mut found = None;
    for r in Resource::read_file(file).with_context(|| format!("--config {}", file.display()))? {
        if let Resource::Configuration(c) = r
            && let Some(m) = c.spec.get("mtls")
        {
            found = Some(m.clone());
        }
    }
    MtlsSpec::from_spec(found.as_ref())
        .map_err(|e| anyhow::anyhow!("--config {}: {e}", file.display()))
}
