//! Graceful shutdown and `mecha run`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, free_port, in_memory_store};

use crate::MECHA;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let mut p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let body = br#"[{"key":"drained","value":{"ok":true}}]"#;
    let (head, tail) = body.split_at(10);
    let mut conn = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    write!(
        conn,
        "POST /v1.0/state/statestore HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(head).unwrap();
    conn.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The request is in flight: SIGTERM must let it finish.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(p.pid().to_string())
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(tail).unwrap();
    let mut response = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).unwrap();
    response.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(
        response.starts_with("HTTP/1.1 204"),
        "in-flight request was not drained: {response}"
    );

    drop(conn);
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("mecha did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = p.log();
    assert!(log.contains("Sidecar stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_api_stops_the_sidecar() {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let mut p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .start()
        .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1.0/shutdown", p.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NO_CONTENT);
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("mecha did not exit");
    assert!(status.success());
}

/// Runs `mecha run` with `args` and HOME set to `home`; returns status, stdout and stderr.
fn mecha_run(home: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(MECHA)
        .arg("run")
        .args(args)
        .env("HOME", home)
        .env_remove("DAPR_API_TOKEN")
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn run_passes_env_and_exit_code_through() {
    let home = tempfile::tempdir().unwrap();
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let (http, grpc, app) = (free_port(), free_port(), free_port());
    let script =
        "echo \"env:$DAPR_HTTP_PORT:$DAPR_GRPC_PORT:$APP_ID:$APP_PORT:$DAPR_API_TOKEN\"; exit 7";
    let out = Command::new(MECHA)
        .arg("run")
        .args(["--app-id", "runner", "--app-port", &app.to_string()])
        .args([
            "--dapr-http-port",
            &http.to_string(),
            "--dapr-grpc-port",
            &grpc.to_string(),
        ])
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--resources-path", &res.path().display().to_string()])
        .args(["--", "sh", "-c", script])
        .env("HOME", home.path())
        .env("DAPR_API_TOKEN", "tok")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("env:{http}:{grpc}:runner:{app}:tok")),
        "{stdout}"
    );
}

#[test]
fn run_writes_the_embedded_default_and_the_app_uses_it() {
    let home = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    // The app saves and reads state through the sidecar with curl, then exits 0.
    let script = r#"set -e
curl -sf -X POST "http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/state/statestore" -H 'content-type: application/json' -d '[{"key":"a","value":{"n":1}}]'
curl -sf -X POST "http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/publish/pubsub/greetings" -H 'content-type: text/plain' -d 'hello'
curl -sf "http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/state/statestore/a""#;
    let http_s = http.to_string();
    let grpc_s = grpc.to_string();
    let metrics_s = free_port().to_string();
    let args = [
        "--app-id",
        "demo",
        "--dapr-http-port",
        &http_s,
        "--dapr-grpc-port",
        &grpc_s,
        "--metrics-port",
        &metrics_s,
        "--",
        "sh",
        "-c",
        script,
    ];
    let (status, stdout, stderr) = mecha_run(home.path(), &args);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), r#"{"n":1}"#);
    assert!(
        stderr.contains("Wrote the embedded default components"),
        "{stderr}"
    );
    let yaml =
        std::fs::read_to_string(home.path().join(".mecha/components/statestore.yaml")).unwrap();
    assert!(
        yaml.contains("state.sqlite") && yaml.contains("actorStateStore"),
        "{yaml}"
    );
    assert!(home.path().join(".mecha/state.db").exists());
    let lock =
        std::fs::read_to_string(home.path().join(".mecha/components/lockstore.yaml")).unwrap();
    assert!(lock.contains("lock.sqlite"), "{lock}");
    let pubsub =
        std::fs::read_to_string(home.path().join(".mecha/components/pubsub.yaml")).unwrap();
    assert!(pubsub.contains("pubsub.sqlite"), "{pubsub}");
    assert!(home.path().join(".mecha/pubsub.db").exists());

    // A second run reuses the folder, and the value is still there.
    let script = r#"curl -sf "http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/state/statestore/a""#;
    let args = [
        "--app-id",
        "demo",
        "--dapr-http-port",
        &http_s,
        "--dapr-grpc-port",
        &grpc_s,
        "--metrics-port",
        &metrics_s,
        "--",
        "sh",
        "-c",
        script,
    ];
    let (status, stdout, stderr) = mecha_run(home.path(), &args);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), r#"{"n":1}"#);
    assert!(
        stderr.contains("Using the components in the default folder"),
        "{stderr}"
    );
}

#[test]
fn run_fails_clearly_when_the_app_cannot_start() {
    let home = tempfile::tempdir().unwrap();
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let res_s = res.path().display().to_string();
    let (http, grpc, metrics) = (
        free_port().to_string(),
        free_port().to_string(),
        free_port().to_string(),
    );
    let args = [
        "--app-id",
        "x",
        "--resources-path",
        &res_s,
        "--dapr-http-port",
        &http,
        "--dapr-grpc-port",
        &grpc,
        "--metrics-port",
        &metrics,
        "--",
        "/nonexistent/app",
    ];
    let (status, _, stderr) = mecha_run(home.path(), &args);
    assert!(!status.success());
    assert!(
        stderr.contains("cannot start the app '/nonexistent/app'"),
        "{stderr}"
    );
}
