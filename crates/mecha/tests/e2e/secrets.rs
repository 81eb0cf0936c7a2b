//! The secrets API and `secretKeyRef` against the real binary: HTTP and gRPC (through the
//! official Rust SDK's generated client), secret scopes from a `--config` file, and component
//! metadata taken from secret stores.

use std::collections::HashMap;
use std::path::Path;

use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use mecha_test_support::{MechaProcess, ResourcesDir, component, in_memory_store};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tonic::Code;

use crate::MECHA;

mod secret_key_ref;

/// The secrets file of the `filestore` (flat) and `multistore` (`multiValued`) stores.
const SECRETS_JSON: &str =
    r#"{"db": {"user": "u", "pass": "p"}, "token": "t", "port": 5432, "empty": {}}"#;
/// The prefix of the `envstore` store; the sidecars get variables with it.
const ENV_PREFIX: &str = "MECHA_E2E_SECRET_";
/// Secret scopes: `filestore` denies all but two secrets, `envstore` denies one.
const SCOPES_CONFIG: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: secretsconfig
spec:
  secrets:
    scopes:
    - storeName: filestore
      defaultAccess: deny
      allowedSecrets: ["token", "db:user"]
    - storeName: envstore
      defaultAccess: allow
      deniedSecrets: ["API_KEY"]
"#;

/// A resources folder with `filestore`, `multistore` and `envstore`, and the secrets file.
fn secret_stores() -> ResourcesDir {
    let res = ResourcesDir::new();
    let file = path_str(&res.path().join("secrets.json"));
    res.write("secrets.json", SECRETS_JSON);
    res.write(
        "filestore.yaml",
        &component(
            "filestore",
            "secretstores.local.file",
            &[("secretsFile", &file)],
        ),
    );
    res.write(
        "multistore.yaml",
        &component(
            "multistore",
            "secretstores.local.file",
            &[("secretsFile", &file), ("multiValued", "true")],
        ),
    );
    res.write(
        "envstore.yaml",
        &component(
            "envstore",
            "secretstores.local.env",
            &[("prefix", ENV_PREFIX)],
        ),
    );
    res
}

async fn sidecar(res: &ResourcesDir, args: &[&str]) -> MechaProcess {
    MechaProcess::builder(MECHA)
        .resources(res.path())
        .env(&format!("{ENV_PREFIX}API_KEY"), "k")
        .env(&format!("{ENV_PREFIX}OTHER"), "o")
        .args(args.iter().copied())
        .start()
        .await
}

/// A sidecar with the three stores and the scopes of [`SCOPES_CONFIG`].
async fn scoped_sidecar() -> (MechaProcess, ResourcesDir, ResourcesDir) {
    let res = secret_stores();
    let config = ResourcesDir::new().with("config.yaml", SCOPES_CONFIG);
    let config_file = path_str(&config.path().join("config.yaml"));
    let p = sidecar(&res, &["--config", &config_file]).await;
    (p, res, config)
}

fn path_str(p: &Path) -> String {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", p.display()))
        .to_owned()
}

/// `GET /v1.0/secrets/{path}`: the status, and the body as JSON (`Null` when empty).
async fn get(p: &MechaProcess, path: &str) -> (StatusCode, Value) {
    let r = Client::new()
        .get(format!("{}/v1.0/secrets/{path}", p.http_url()))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.bytes().await.unwrap();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"))
    };
    (status, json)
}

/// Asserts that `GET /v1.0/secrets/{path}` fails with `status` and `code`.
async fn assert_error(p: &MechaProcess, path: &str, status: StatusCode, code: &str) {
    let (got, body) = get(p, path).await;
    assert_eq!(
        (got, body["errorCode"].as_str()),
        (status, Some(code)),
        "{path}: {body}"
    );
}

#[tokio::test]
async fn http_get_and_bulk() {
    let res = secret_stores();
    let p = sidecar(&res, &[]).await;
    let ok = |v: Value| (StatusCode::OK, v);
    assert_eq!(
        get(&p, "filestore/db:user").await,
        ok(json!({"db:user": "u"}))
    );
    assert_eq!(get(&p, "filestore/port").await, ok(json!({"port": "5432"})));
    assert_eq!(
        get(&p, "filestore/token?metadata.version_id=1").await,
        ok(json!({"token": "t"}))
    );
    assert_eq!(
        get(&p, "multistore/db").await,
        ok(json!({"user": "u", "pass": "p"}))
    );
    assert_eq!(get(&p, "multistore/token").await, ok(json!({"token": "t"})));
    assert_eq!(
        get(&p, "multistore/empty").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        get(&p, "envstore/API_KEY").await,
        ok(json!({"API_KEY": "k"}))
    );

    assert_eq!(
        get(&p, "filestore/bulk").await,
        ok(json!({
            "db:user": {"db:user": "u"}, "db:pass": {"db:pass": "p"},
            "token": {"token": "t"}, "port": {"port": "5432"},
        }))
    );
    assert_eq!(
        get(&p, "multistore/bulk").await,
        ok(json!({
            "db": {"user": "u", "pass": "p"}, "token": {"token": "t"},
            "port": {"port": "5432"}, "empty": {},
        }))
    );
    assert_eq!(
        get(&p, "envstore/bulk").await,
        ok(json!({"API_KEY": {"API_KEY": "k"}, "OTHER": {"OTHER": "o"}}))
    );

    let (internal, unauthorized) = (StatusCode::INTERNAL_SERVER_ERROR, StatusCode::UNAUTHORIZED);
    for path in ["filestore/db", "multistore/db:user", "envstore/MISSING"] {
        assert_error(&p, path, internal, "ERR_SECRET_GET").await;
    }
    for path in ["nostore/token", "nostore/bulk"] {
        assert_error(&p, path, unauthorized, "ERR_SECRET_STORE_NOT_FOUND").await;
    }
}

#[tokio::test]
async fn no_secret_store_configured() {
    let res = ResourcesDir::new().with("store.yaml", &in_memory_store("statestore"));
    let p = sidecar(&res, &[]).await;
    let internal = StatusCode::INTERNAL_SERVER_ERROR;
    for path in ["anystore/token", "anystore/bulk"] {
        assert_error(&p, path, internal, "ERR_SECRET_STORES_NOT_CONFIGURED").await;
    }
    let mut c = client(&p).await;
    let err = c
        .get_secret(get_req("anystore", "token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = c.get_bulk_secret(bulk_req("anystore")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn scopes_from_config_deny_and_filter() {
    let (p, _res, _config) = scoped_sidecar().await;
    let forbidden = StatusCode::FORBIDDEN;
    // filestore: defaultAccess deny, allowedSecrets token and db:user.
    assert_eq!(
        get(&p, "filestore/token").await,
        (StatusCode::OK, json!({"token": "t"}))
    );
    assert_eq!(
        get(&p, "filestore/db:user").await.1,
        json!({"db:user": "u"})
    );
    for path in [
        "filestore/db:pass",
        "filestore/port",
        "filestore/never-defined",
    ] {
        assert_error(&p, path, forbidden, "ERR_PERMISSION_DENIED").await;
    }
    assert_eq!(
        get(&p, "filestore/bulk").await,
        (
            StatusCode::OK,
            json!({"token": {"token": "t"}, "db:user": {"db:user": "u"}})
        )
    );
    // envstore: API_KEY denied, the rest allowed.
    assert_error(&p, "envstore/API_KEY", forbidden, "ERR_PERMISSION_DENIED").await;
    assert_eq!(get(&p, "envstore/OTHER").await.1, json!({"OTHER": "o"}));
    assert_eq!(
        get(&p, "envstore/bulk").await.1,
        json!({"OTHER": {"OTHER": "o"}})
    );
    // multistore has no scope: everything is readable.
    assert_eq!(
        get(&p, "multistore/db").await.1,
        json!({"user": "u", "pass": "p"})
    );
    assert_eq!(
        get(&p, "multistore/bulk")
            .await
            .1
            .as_object()
            .unwrap()
            .len(),
        4
    );
}

async fn client(p: &MechaProcess) -> DaprClient<tonic::transport::Channel> {
    DaprClient::connect(p.grpc_url())
        .await
        .expect("connect to the gRPC API")
}

fn get_req(store: &str, key: &str) -> rt::GetSecretRequest {
    rt::GetSecretRequest {
        store_name: store.into(),
        key: key.into(),
        metadata: HashMap::new(),
    }
}

fn bulk_req(store: &str) -> rt::GetBulkSecretRequest {
    rt::GetBulkSecretRequest {
        store_name: store.into(),
        metadata: HashMap::new(),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn grpc_get_secret_and_bulk() {
    let (p, _res, _config) = scoped_sidecar().await;
    let mut c = client(&p).await;
    let got = c.get_secret(get_req("filestore", "db:user")).await.unwrap();
    assert_eq!(got.into_inner().data, map(&[("db:user", "u")]));
    let got = c.get_secret(get_req("multistore", "db")).await.unwrap();
    assert_eq!(got.into_inner().data, map(&[("user", "u"), ("pass", "p")]));
    let got = c.get_secret(get_req("envstore", "OTHER")).await.unwrap();
    assert_eq!(got.into_inner().data, map(&[("OTHER", "o")]));

    let bulk = c.get_bulk_secret(bulk_req("filestore")).await.unwrap();
    let bulk: HashMap<_, _> = bulk
        .into_inner()
        .data
        .into_iter()
        .map(|(k, v)| (k, v.secrets))
        .collect();
    let want = HashMap::from([
        ("token".to_owned(), map(&[("token", "t")])),
        ("db:user".to_owned(), map(&[("db:user", "u")])),
    ]);
    assert_eq!(bulk, want);
    let bulk = c.get_bulk_secret(bulk_req("multistore")).await.unwrap();
    let db = &bulk.into_inner().data["db"].secrets;
    assert_eq!(db, &map(&[("user", "u"), ("pass", "p")]));

    for (store, key, code) in [
        ("filestore", "db:pass", Code::PermissionDenied),
        ("envstore", "API_KEY", Code::PermissionDenied),
        ("multistore", "missing", Code::Internal),
        ("nostore", "token", Code::InvalidArgument),
    ] {
        let err = c.get_secret(get_req(store, key)).await.unwrap_err();
        assert_eq!(err.code(), code, "{store}/{key}: {err:?}");
    }
    let err = c.get_bulk_secret(bulk_req("nostore")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}
