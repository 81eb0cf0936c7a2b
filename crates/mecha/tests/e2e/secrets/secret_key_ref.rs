//! `secretKeyRef` in component metadata: through `auth.secretStore`, from the environment, and
//! references that cannot be resolved.

use std::time::Duration;

use mecha_test_support::{MechaProcess, ResourcesDir, component};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{path_str, secret_stores, sidecar};
use crate::MECHA;

/// A `state.sqlite` component whose `connectionString` is `secretKeyRef: {name, key}`, read
/// through `auth.secretStore` when `store` is given.
fn sqlite_from_secret(name: &str, secret: &str, key: Option<&str>, store: Option<&str>) -> String {
    let key = key
        .map(|k| format!("\n      key: \"{k}\""))
        .unwrap_or_default();
    let auth = store
        .map(|s| format!("auth:\n  secretStore: \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  \
         type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    \
         secretKeyRef:\n      name: \"{secret}\"{key}\n{auth}"
    )
}

/// Saves and reads back one value through `store`'s state API.
async fn assert_state_works(p: &MechaProcess, store: &str) {
    let c = Client::new();
    let url = format!("{}/v1.0/state/{store}", p.http_url());
    let r = c
        .post(&url)
        .json(&json!([{"key": "k", "value": {"from": store}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{store}");
    let r = c.get(format!("{url}/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{store}");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"from": store}));
}

#[tokio::test]
async fn secret_key_ref_through_auth_secret_store() {
    let dbs = tempfile::tempdir().unwrap();
    let (db_a, db_b) = (dbs.path().join("a.db"), dbs.path().join("b.db"));
    let res = ResourcesDir::new();
    let secrets = json!({"sqlite": {"conn": path_str(&db_a)}, "flat": path_str(&db_b)});
    res.write("vault.json", &secrets.to_string());
    let vault = path_str(&res.path().join("vault.json"));
    let vault_component = |name: &str, multi: &str| {
        component(
            name,
            "secretstores.local.file",
            &[("secretsFile", &vault), ("multiValued", multi)],
        )
    };
    res.write("vault.yaml", &vault_component("vault", "true"));
    res.write("flatvault.yaml", &vault_component("flatvault", "false"));
    // A state store sorted before its secret store: secret stores load first anyway.
    let a = sqlite_from_secret("a-store", "sqlite", Some("conn"), Some("vault"));
    res.write("a-store.yaml", &a);
    let b = sqlite_from_secret("b-store", "flat", None, Some("flatvault"));
    res.write("b-store.yaml", &b);
    // An empty key means the secret's name, as in Dapr.
    let c = sqlite_from_secret("c-store", "flat", Some(""), Some("flatvault"));
    res.write("c-store.yaml", &c);
    let p = sidecar(&res, &[]).await;
    assert_state_works(&p, "a-store").await;
    assert_state_works(&p, "b-store").await;
    assert_state_works(&p, "c-store").await;
    // The stores use the databases the secrets name.
    assert!(db_a.exists() && db_b.exists());
}

#[tokio::test]
async fn secret_key_ref_from_the_environment_without_auth() {
    let dbs = tempfile::tempdir().unwrap();
    let db = dbs.path().join("env.db");
    let var = "MECHA_E2E_SQLITE_CONN";
    let res = ResourcesDir::new()
        .with(
            "store.yaml",
            &sqlite_from_secret("env-store", var, None, None),
        )
        // An empty `auth.secretStore` names no store, as in Dapr.
        .with(
            "empty-auth.yaml",
            &sqlite_from_secret("empty-auth", var, None, Some("")),
        );
    let p = MechaProcess::builder(MECHA)
        .resources(res.path())
        .env(var, &path_str(&db))
        .start()
        .await;
    assert_state_works(&p, "env-store").await;
    assert_state_works(&p, "empty-auth").await;
    assert!(db.exists());
}

/// Starts a sidecar on `res` that must exit non-zero; returns its `mecha: ` error line.
fn failed_start(res: &ResourcesDir) -> String {
    let mut p = MechaProcess::builder(MECHA).resources(res.path()).spawn();
    let status = p
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("mecha did not exit:\n{}", p.log()));
    assert!(!status.success(), "exit status {status}:\n{}", p.log());
    let log = p.log();
    log.lines()
        .find(|l| l.starts_with("mecha: "))
        .unwrap_or_else(|| panic!("no error line on stderr:\n{log}"))
        .to_owned()
}

#[tokio::test]
async fn unresolvable_secret_key_ref_stops_the_sidecar() {
    // A key the secret does not have.
    let res = secret_stores().with(
        "bad.yaml",
        &sqlite_from_secret("bad-store", "db", Some("no-such-key"), Some("multistore")),
    );
    let line = failed_start(&res);
    assert!(
        line.contains("bad-store") && line.contains("no-such-key"),
        "{line}"
    );

    // A secret the store does not have.
    let res = secret_stores().with(
        "bad.yaml",
        &sqlite_from_secret("bad-store", "no-such-secret", None, Some("filestore")),
    );
    let line = failed_start(&res);
    assert!(
        line.contains("bad-store") && line.contains("no-such-secret"),
        "{line}"
    );

    // A secret store that is not loaded.
    let res = ResourcesDir::new().with(
        "bad.yaml",
        &sqlite_from_secret("bad-store", "s", None, Some("no-such-store")),
    );
    let line = failed_start(&res);
    assert!(
        line.contains("bad-store") && line.contains("no-such-store"),
        "{line}"
    );

    // No auth.secretStore and no such environment variable.
    let res = ResourcesDir::new().with(
        "bad.yaml",
        &sqlite_from_secret("bad-store", "MECHA_E2E_NEVER_SET_VAR", None, None),
    );
    let line = failed_start(&res);
    assert!(
        line.contains("bad-store") && line.contains("MECHA_E2E_NEVER_SET_VAR"),
        "{line}"
    );
}

#[tokio::test]
async fn bad_secrets_file_stops_the_sidecar() {
    let res = ResourcesDir::new().with("bad.json", "{\"a\": ");
    for file in ["bad.json", "missing.json"] {
        let path = path_str(&res.path().join(file));
        res.write(
            "vault.yaml",
            &component(
                "vault",
                "secretstores.local.file",
                &[("secretsFile", &path)],
            ),
        );
        let line = failed_start(&res);
        assert!(line.contains("vault") && line.contains(&path), "{line}");
    }
}
