//! The official Dapr Python SDK (`dapr` on PyPI) against the real sidecar: the scripts under
//! `tests/sdk/python/` run with the venv's Python, made by `scripts/setup-venv.sh`.
//!
//! The interpreter is `$MECHA_TEST_PYTHON`, else `$MECHA_VENV/bin/python`, else
//! `<workspace root>/.venv/bin/python`. A missing interpreter fails the test: it is never
//! skipped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, component, in_memory_store};
use tokio::process::Command;

/// How long one script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// The app id of the sidecars started here.
const APP_ID: &str = "python-sdk";
/// The sidecar token of the token test.
const TOKEN: &str = "s3cret";

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn python() -> PathBuf {
    let python = match (
        std::env::var_os("MECHA_TEST_PYTHON"),
        std::env::var_os("MECHA_VENV"),
    ) {
        (Some(p), _) if !p.is_empty() => PathBuf::from(p),
        (_, Some(v)) if !v.is_empty() => PathBuf::from(v).join("bin/python"),
        _ => workspace_root().join(".venv/bin/python"),
    };
    if !python.exists() {
        panic!(
            "{} does not exist: run scripts/setup-venv.sh first (or set MECHA_TEST_PYTHON)",
            python.display()
        );
    }
    python
}

/// Runs `tests/sdk/python/<script>` against `sidecar` with `envs` added, and fails the test,
/// showing the script's output, unless it exits 0 within [`SCRIPT_TIMEOUT`].
pub(crate) async fn run_script(sidecar: &MechaProcess, script: &str, envs: &[(&str, &str)]) {
    let path = workspace_root().join("tests/sdk/python").join(script);
    assert!(path.exists(), "{} is missing", path.display());
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let stdout = File::create(&stdout_path).unwrap_or_else(|e| panic!("stdout file: {e}"));
    let stderr = File::create(&stderr_path).unwrap_or_else(|e| panic!("stderr file: {e}"));

    let mut cmd = Command::new(python());
    cmd.arg(&path);
    // Only what the test says: no token, endpoint or port inherited from the caller's shell.
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("DAPR_") || k.starts_with("APP_"))
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("DAPR_HTTP_PORT", sidecar.http_port.to_string())
        .env("DAPR_GRPC_PORT", sidecar.grpc_port.to_string())
        .env("DAPR_RUNTIME_HOST", "127.0.0.1")
        .env("DAPR_HEALTH_TIMEOUT", "20")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(envs.iter().copied())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));

    let outcome = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait()).await;
    if outcome.is_err() {
        let _ = child.kill().await;
    }
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("<unreadable: {e}>"));
    let output = format!(
        "---- {script} stdout ----\n{}\n---- {script} stderr ----\n{}",
        read(&stdout_path),
        read(&stderr_path)
    );
    match outcome {
        Err(_) => panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}\n{output}"),
        Ok(Err(e)) => panic!("waiting for {script}: {e}\n{output}"),
        Ok(Ok(status)) if !status.success() => panic!("{script} failed with {status}\n{output}"),
        Ok(Ok(_)) => println!("{output}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn state_api_on_sqlite() {
    let db_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let db = db_dir.path().join("state.db");
    let db = db
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", db.display()));
    let resources = ResourcesDir::new().with(
        "statestore.yaml",
        &component("statestore", "state.sqlite", &[("connectionString", db)]),
    );
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id(APP_ID)
        .resources(resources.path())
        .start()
        .await;
    run_script(
        &sidecar,
        "state_sdk.py",
        &[
            ("STORE", "statestore"),
            ("QUERY", "1"),
            ("EXPECT_APP_ID", APP_ID),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_api_on_in_memory() {
    let resources = ResourcesDir::new().with("statestore.yaml", &in_memory_store("statestore"));
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id(APP_ID)
        .resources(resources.path())
        .start()
        .await;
    run_script(
        &sidecar,
        "state_sdk.py",
        &[
            ("STORE", "statestore"),
            ("QUERY", "1"),
            ("EXPECT_APP_ID", APP_ID),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token() {
    let resources = ResourcesDir::new().with("statestore.yaml", &in_memory_store("statestore"));
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id(APP_ID)
        .resources(resources.path())
        .env("DAPR_API_TOKEN", TOKEN)
        .start()
        .await;
    run_script(
        &sidecar,
        "token_sdk.py",
        &[("STORE", "statestore"), ("DAPR_API_TOKEN", TOKEN)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("locks.db").display().to_string();
    let resources = ResourcesDir::new().with(
        "lock.yaml",
        &component("lockstore", "lock.sqlite", &[("connectionString", &file)]),
    );
    let sidecar = MechaProcess::builder(crate::MECHA)
        .resources(resources.path())
        .start()
        .await;
    run_script(&sidecar, "lock_sdk.py", &[("LOCK_STORE", "lockstore")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_api_on_redis() {
    let redis = std::env::var("MECHA_TEST_REDIS_URL").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let (host, port) = redis
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("bad redis address {redis}"));
    let resources = ResourcesDir::new().with(
        "config.yaml",
        &component(
            "configstore",
            "configuration.redis",
            &[("redisHost", &redis)],
        ),
    );
    let sidecar = MechaProcess::builder(crate::MECHA)
        .resources(resources.path())
        .start()
        .await;
    let set = format!("redis-cli -h {host} -p {port} SET {{key}} {{value}}");
    run_script(
        &sidecar,
        "config_sdk.py",
        &[("CONFIG_STORE", "configstore"), ("SET_COMMAND", &set)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_api_on_local_stores() {
    let resources = ResourcesDir::new();
    let file = resources.path().join("secrets.json");
    let file = file
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", file.display()))
        .to_owned();
    resources.write(
        "secrets.json",
        r#"{"db": {"user": "u", "pass": "p"}, "token": "t", "unicode": "wörld ✓"}"#,
    );
    let local_file = "secretstores.local.file";
    resources.write(
        "filestore.yaml",
        &component("filestore", local_file, &[("secretsFile", &file)]),
    );
    resources.write(
        "multistore.yaml",
        &component(
            "multistore",
            local_file,
            &[("secretsFile", &file), ("multiValued", "true")],
        ),
    );
    resources.write(
        "envstore.yaml",
        &component(
            "envstore",
            "secretstores.local.env",
            &[("prefix", "PY_SDK_SECRET_")],
        ),
    );
    let config = ResourcesDir::new().with(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: scopes\nspec:\n  \
         secrets:\n    scopes:\n    - storeName: filestore\n      defaultAccess: deny\n      \
         allowedSecrets: [token, \"db:user\", unicode]\n    - storeName: envstore\n      \
         deniedSecrets: [API_KEY]\n",
    );
    let config_file = config.path().join("config.yaml").display().to_string();
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id(APP_ID)
        .resources(resources.path())
        .args(["--config", &config_file])
        .env("PY_SDK_SECRET_API_KEY", "k")
        .env("PY_SDK_SECRET_OTHER", "o")
        .start()
        .await;
    run_script(
        &sidecar,
        "secrets_sdk.py",
        &[
            ("FILE_STORE", "filestore"),
            ("MULTI_STORE", "multistore"),
            ("ENV_STORE", "envstore"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_api_on_postgresql() {
    let url = std::env::var("MECHA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let table = format!("pysdk_config_{}", std::process::id());
    let resources = ResourcesDir::new().with(
        "config.yaml",
        &component(
            "configstore",
            "configuration.postgresql",
            &[("connectionString", &url), ("table", &table)],
        ),
    );
    let sidecar = MechaProcess::builder(crate::MECHA)
        .resources(resources.path())
        .start()
        .await;
    let set = format!(
        "psql {url} -q -c \"INSERT INTO {table} (key, value, version) VALUES ('{{key}}', '{{value}}', '1') \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = '2'\""
    );
    run_script(
        &sidecar,
        "config_sdk.py",
        &[("CONFIG_STORE", "configstore"), ("SET_COMMAND", &set)],
    )
    .await;
    let _ = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-q",
            "-c",
            &format!("DROP TABLE IF EXISTS {table}"),
        ])
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn output_bindings_http_and_localstorage() {
    let base = crate::bindings_core::external().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let root = dir.path().join("files").display().to_string();
    let resources = ResourcesDir::new()
        .with(
            "web.yaml",
            &component("web", "bindings.http", &[("url", &base)]),
        )
        .with(
            "files.yaml",
            &component("files", "bindings.localstorage", &[("rootPath", &root)]),
        );
    let sidecar = MechaProcess::builder(crate::MECHA)
        .resources(resources.path())
        .start()
        .await;
    run_script(
        &sidecar,
        "bindings_core_sdk.py",
        &[
            ("HTTP_BINDING", "web"),
            ("FILES_BINDING", "files"),
            ("FILES_ROOT", &root),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_bindings_mqtt_and_rabbitmq() {
    use crate::bindings_brokers::{app, delete_queue, events, resources, warm_up_mqtt};
    let (app_port, inbox) = app(false).await;
    let (res, queue) = resources();
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id(APP_ID)
        .resources(res.path())
        .args(["--app-port", &app_port.to_string()])
        .start()
        .await;
    warm_up_mqtt(&sidecar, &inbox).await;
    run_script(
        &sidecar,
        "bindings_brokers_sdk.py",
        &[("MQTT_BINDING", "mq"), ("RABBITMQ_BINDING", "rq")],
    )
    .await;
    // The messages went through the brokers and back to the app via the input side.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mq = events(&inbox, "mq");
        let rq = events(&inbox, "rq");
        if mq.iter().any(|e| e.body == "from-python-mqtt")
            && rq.iter().any(|e| e.body == "from-python-rabbitmq")
        {
            assert_eq!(rq[0].headers.get("custom").map(String::as_str), Some("py"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events missing: {mq:?} {rq:?}\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sidecar);
    delete_queue(&queue);
}

#[tokio::test(flavor = "multi_thread")]
async fn bindings_on_databases() {
    let resources = crate::bindings_db::resources();
    let sidecar = MechaProcess::builder(crate::MECHA)
        .resources(resources.path())
        .start()
        .await;
    run_script(
        &sidecar,
        "bindings_db_sdk.py",
        &[
            ("REDIS_BINDING", "kv"),
            ("POSTGRES_BINDING", "pg"),
            ("MYSQL_BINDING", "my"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_publish_bulk_http_app_and_streaming() {
    let app_port = mecha_test_support::free_port();
    let resources = ResourcesDir::new().with(
        "pubsub.yaml",
        &component(
            "pubsub",
            "pubsub.in-memory",
            &[("redeliverInterval", "200ms")],
        ),
    );
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id(APP_ID)
        .resources(resources.path())
        .args(["--app-port", &app_port.to_string()])
        .start()
        .await;
    run_script(
        &sidecar,
        "pubsub_sdk.py",
        &[
            ("PUBSUB", "pubsub"),
            ("APP_PORT", &app_port.to_string()),
            ("EXPECT_APP_ID", APP_ID),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invocation_http_grpc_and_grpc_proxying() {
    let mesh = crate::invoke::Mesh::new();
    let (http_port, grpc_port) = (
        mecha_test_support::free_port(),
        mecha_test_support::free_port(),
    );
    let _http_app = mesh.sidecar("py-http-app", Some(http_port), &[]).await;
    let _grpc_app = mesh
        .sidecar("py-grpc-app", Some(grpc_port), &["--app-protocol", "grpc"])
        .await;
    let caller = mesh.sidecar("py-caller", None, &[]).await;
    run_script(
        &caller,
        "invoke_sdk.py",
        &[
            ("HTTP_APP", "py-http-app"),
            ("GRPC_APP", "py-grpc-app"),
            ("HTTP_APP_PORT", &http_port.to_string()),
            ("GRPC_APP_PORT", &grpc_port.to_string()),
            ("CALLER_APP", "py-caller"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_app_with_the_sdk_framework_subscribes_and_is_invoked() {
    let app_port = mecha_test_support::free_port();
    let resources =
        ResourcesDir::new().with("pubsub.yaml", &component("pubsub", "pubsub.in-memory", &[]));
    let sidecar = MechaProcess::builder(crate::MECHA)
        .app_id("py-grpc-sub")
        .resources(resources.path())
        .args([
            "--app-port",
            &app_port.to_string(),
            "--app-protocol",
            "grpc",
        ])
        .start()
        .await;
    run_script(
        &sidecar,
        "grpc_app_sdk.py",
        &[
            ("PUBSUB", "pubsub"),
            ("APP_PORT", &app_port.to_string()),
            ("APP_ID", "py-grpc-sub"),
        ],
    )
    .await;
}
