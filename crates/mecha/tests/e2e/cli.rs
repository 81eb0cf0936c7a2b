//! Start-up from resource files: what loads, what is skipped, and the errors that stop start-up.

use std::process::Command;
use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, component, free_port, in_memory_store};
use serde_json::Value;

use crate::MECHA;

/// Starts a sidecar that is expected to fail; returns its stderr.
fn failing_start(res: &ResourcesDir) -> String {
    let out = Command::new(MECHA)
        .args(["sidecar", "--app-id", "app"])
        .args(["--resources-path", &res.path().display().to_string()])
        .args([
            "--dapr-http-port",
            &free_port().to_string(),
            "--dapr-grpc-port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "start-up should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_yaml_names_the_file() {
    let res = ResourcesDir::new().with("broken.yaml", "apiVersion: [unclosed\n");
    let err = failing_start(&res);
    assert!(
        err.contains("invalid YAML") && err.contains("broken.yaml"),
        "{err}"
    );
}

#[test]
fn unknown_component_type_names_component_and_file() {
    let res = ResourcesDir::new().with("c.yaml", &component("cache", "state.nosuchstore", &[]));
    let err = failing_start(&res);
    assert!(
        err.contains("component 'cache'") && err.contains("c.yaml"),
        "{err}"
    );
    assert!(
        err.contains("unknown component type state.nosuchstore/v1"),
        "{err}"
    );
    assert!(
        err.contains("state.sqlite/v1"),
        "the error lists what is supported: {err}"
    );
}

#[test]
fn missing_required_field_and_failing_init_stop_start_up() {
    let res = ResourcesDir::new()
        .with("c.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.sqlite}\n");
    let err = failing_start(&res);
    assert!(
        err.contains("spec.version is required") && err.contains("component 's'"),
        "{err}"
    );

    let res = ResourcesDir::new().with("c.yaml", &component("s", "state.sqlite", &[]));
    let err = failing_start(&res);
    assert!(
        err.contains("connectionString") && err.contains("component 's'"),
        "{err}"
    );
}

#[test]
fn duplicate_component_names_are_an_error() {
    let res = ResourcesDir::new()
        .with("a.yaml", &in_memory_store("statestore"))
        .with("b.yaml", &in_memory_store("statestore"));
    let err = failing_start(&res);
    assert!(
        err.contains("duplicate component name 'statestore'"),
        "{err}"
    );
}

#[test]
fn unresolvable_secret_reference_names_component_and_key() {
    let yaml = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: password\n    secretKeyRef: {name: db, key: pw}\n";
    let err = failing_start(&ResourcesDir::new().with("c.yaml", yaml));
    assert!(
        err.contains("component 's'") && err.contains("secret 'db' key 'pw'"),
        "{err}"
    );
}

#[tokio::test]
async fn ignore_errors_scopes_and_unknown_kinds() {
    let broken = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: broken}\nspec:\n  type: state.sqlite\n  version: v1\n  ignoreErrors: true\n  metadata: []\n";
    let scoped = format!("{}scopes: [someone-else]\n", in_memory_store("scoped"));
    let res = ResourcesDir::new()
        .with("ok.yaml", &in_memory_store("statestore"))
        .with("broken.yaml", broken)
        .with("scoped.yaml", &scoped)
        .with("sub.yaml", "apiVersion: dapr.io/v2alpha1\nkind: Pipeline\nmetadata: {name: orders}\nspec: {pubsubname: p, topic: t}\n")
        .with("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let m: Value = reqwest::get(format!("{}/v1.0/metadata", p.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = m["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["statestore"]);
    let log = p.log();
    assert!(log.contains("ignoreErrors"), "{log}");
    assert!(log.contains("scoped to other apps"), "{log}");
    assert!(log.contains("Pipeline"), "{log}");
}

#[tokio::test]
async fn json_logs_on_request() {
    let res = ResourcesDir::new().with("ok.yaml", &in_memory_store("statestore"));
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--log-as-json"])
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = p.log();
    let first = log.lines().next().unwrap();
    let v: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "INFO");
    assert!(log.contains("\"component\":\"statestore\""), "{log}");
}

#[test]
fn help_lists_daprd_flags_and_components_lists_types() {
    let out = Command::new(MECHA)
        .args(["sidecar", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--app-id",
        "--app-port",
        "--app-protocol",
        "--app-channel-address",
        "--dapr-http-port",
        "--dapr-grpc-port",
        "--metrics-port",
        "--dapr-listen-addresses",
        "--resources-path",
        "--config",
        "--log-level",
        "--log-as-json",
        "--dapr-http-max-request-size",
        "--dapr-graceful-shutdown-seconds",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let out = Command::new(MECHA).arg("components").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("state.sqlite") && table.contains("state.in-memory"),
        "{table}"
    );
}

#[tokio::test]
async fn components_path_alias_and_config_flag_are_accepted() {
    let res = ResourcesDir::new().with("ok.yaml", &in_memory_store("statestore"));
    let cfg = res.path().join("config.yml.cfg");
    std::fs::write(&cfg, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: appconfig}\nspec: {}\n").unwrap();
    let p = MechaProcess::builder(MECHA)
        .args([
            "--components-path",
            &res.path().display().to_string(),
            "--config",
            &cfg.display().to_string(),
        ])
        .start()
        .await;
    assert!(p.log().contains("Configuration loaded"));
}

#[tokio::test]
async fn an_invalid_subscription_names_its_kind_file_and_field() {
    let res = ResourcesDir::new().with(
        "sub.yaml",
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: orders}\nspec: {pubsubname: p, topic: t}\n",
    );
    let out = std::process::Command::new(MECHA)
        .args([
            "sidecar",
            "--app-id",
            "x",
            "--dapr-http-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--resources-path")
        .arg(res.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subscription 'orders'"), "{err}");
    assert!(err.contains("sub.yaml"), "{err}");
    assert!(
        err.contains("spec.route or spec.routes is required"),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let res = ResourcesDir::new().with("ok.yaml", &in_memory_store("statestore"));
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .args(["--enable-metrics=false"])
        .start()
        .await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p.metrics_port)).is_err(),
        "the metrics port is open with --enable-metrics=false"
    );
    let on = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", on.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# EOF") || text.contains("# TYPE"), "{text}");
}
