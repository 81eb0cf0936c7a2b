//! Log set-up: readable lines by default, JSON lines with `--log-as-json`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub(crate) fn init(level: &str, json: bool) -> anyhow::Result<()> {
    let level = match level.to_ascii_lowercase().as_str() {
        "debug" | "info" | "warn" | "error" | "trace" => level.to_ascii_lowercase(),
        "fatal" => "error".to_owned(),
        other => {
            anyhow::bail!("--log-level '{other}' is not one of debug, info, warn, error, fatal")
        }
    };
    // Our crates log at the chosen level; dependencies only from WARN, unless debugging.
    let directives = if level == "debug" || level == "trace" {
        level.clone()
    } else {
        format!(
            "warn,mecha={level},mecha_runtime={level},mecha_components={level},mecha_core={level}"
        )
    };
    let filter = EnvFilter::try_new(directives)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        use std::io::IsTerminal;
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    Ok(())
}
