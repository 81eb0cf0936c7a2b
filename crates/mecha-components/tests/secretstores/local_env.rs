//! `secretstores.local.env` in child processes of this test binary with chosen environments.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use mecha_components::secretstores::local_env::EnvSecretStore;
use mecha_core::secretstores::{SecretError, SecretStore};

use super::{CHILD, bulk, get, init, single, values};

/// Runs the ignored test `child` in a new process of this binary whose environment holds only
/// `envs` (and [`CHILD`]), and fails unless it ran and passed.
fn run_child(child: &str, envs: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args([
            child,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD, child)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {child} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Whether this process is the child run for `test`; other runs of an ignored child test
/// (`--include-ignored`) have nothing to check.
fn is_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|t| t == test)
}

async fn env_store(metadata: &[(&str, &str)]) -> Arc<dyn SecretStore> {
    EnvSecretStore::create(init(metadata)).await.unwrap()
}

#[test]
fn env_without_prefix() {
    run_child(
        "local_env::child_env_without_prefix",
        &[
            ("ALPHA", "one"),
            ("EMPTY", ""),
            ("WITH_EQUALS", "a=b=c"),
            ("UNICODE", "wörld ✓"),
            ("DAPR_API_TOKEN", "hidden"),
            ("dapr_lower", "hidden"),
            ("APP_API_TOKEN", "hidden"),
            ("app_api_token", "hidden"),
        ],
    );
}

#[tokio::test]
#[ignore = "run by env_without_prefix in a child process"]
async fn child_env_without_prefix() {
    if !is_child("local_env::child_env_without_prefix") {
        return;
    }
    let store = env_store(&[]).await;
    for (name, value) in [
        ("ALPHA", "one"),
        ("EMPTY", ""),
        ("WITH_EQUALS", "a=b=c"),
        ("UNICODE", "wörld ✓"),
    ] {
        assert_eq!(get(&store, name).await.unwrap(), values(&[(name, value)]));
    }
    for name in [
        "MISSING",
        "alpha",
        "",
        "ALPHA=one",
        "AL\0PHA",
        "DAPR_API_TOKEN",
        "dapr_lower",
        "APP_API_TOKEN",
        "app_api_token",
    ] {
        assert_eq!(
            get(&store, name).await,
            Err(SecretError::NotFound(name.into())),
            "{name:?}"
        );
    }
    let want: HashMap<_, _> = [
        single("ALPHA", "one"),
        single("EMPTY", ""),
        single("WITH_EQUALS", "a=b=c"),
        single("UNICODE", "wörld ✓"),
        single(CHILD, "local_env::child_env_without_prefix"),
    ]
    .into_iter()
    .collect();
    assert_eq!(bulk(&store).await, want);
}

#[test]
fn env_with_prefix() {
    run_child(
        "local_env::child_env_with_prefix",
        &[
            ("MYAPP_DB_PASSWORD", "pw"),
            ("MYAPP_DAPR_LIKE", "visible"),
            ("MYAPP_", "only the prefix"),
            ("myapp_lower", "other case"),
            ("OTHER", "not prefixed"),
            ("DAPR_HTTP_PORT", "3500"),
        ],
    );
}

#[tokio::test]
#[ignore = "run by env_with_prefix in a child process"]
async fn child_env_with_prefix() {
    if !is_child("local_env::child_env_with_prefix") {
        return;
    }
    let store = env_store(&[("prefix", "MYAPP_")]).await;
    assert_eq!(
        get(&store, "DB_PASSWORD").await.unwrap(),
        values(&[("DB_PASSWORD", "pw")])
    );
    assert_eq!(
        get(&store, "DAPR_LIKE").await.unwrap(),
        values(&[("DAPR_LIKE", "visible")])
    );
    for name in [
        "MYAPP_DB_PASSWORD",
        "OTHER",
        "lower",
        "",
        "HTTP_PORT",
        "DAPR_HTTP_PORT",
    ] {
        assert_eq!(
            get(&store, name).await,
            Err(SecretError::NotFound(name.into())),
            "{name:?}"
        );
    }
    let want: HashMap<_, _> = [single("DB_PASSWORD", "pw"), single("DAPR_LIKE", "visible")]
        .into_iter()
        .collect();
    assert_eq!(bulk(&store).await, want);

    // A prefix that is the sidecar's own hides everything.
    let store = env_store(&[("prefix", "DAPR_")]).await;
    assert!(matches!(
        get(&store, "HTTP_PORT").await,
        Err(SecretError::NotFound(_))
    ));
    assert!(bulk(&store).await.is_empty());
}
