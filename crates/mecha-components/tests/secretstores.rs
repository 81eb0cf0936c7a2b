//! The secret stores of this crate against real files and real process environments.
//!
//! A test may not change its own environment (`std::env::set_var` is banned and `unsafe`), so
//! the `secretstores.local.env` tests re-run this test binary with a chosen environment and one
//! `#[ignore]`d child test selected; the child does the checks and the parent asserts that it
//! ran and passed.

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use mecha_components::secretstores::local_file::FileSecretStore;
use mecha_core::Metadata;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::secretstores::{SecretError, SecretStore, SecretValues};

#[path = "secretstores/local_env.rs"]
mod local_env;

/// Set in the environment of a child run; its value is the child test's name.
const CHILD: &str = "MECHA_SECRETSTORES_CHILD";

fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "secrets".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "secretstores-test".to_owned(),
    }
}

fn values(pairs: &[(&str, &str)]) -> SecretValues {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn single(key: &str, value: &str) -> (String, SecretValues) {
    (key.to_owned(), values(&[(key, value)]))
}

async fn get(store: &Arc<dyn SecretStore>, name: &str) -> Result<SecretValues, SecretError> {
    store.get_secret(name, &HashMap::new()).await
}

async fn bulk(store: &Arc<dyn SecretStore>) -> HashMap<String, SecretValues> {
    store.bulk_get_secret(&HashMap::new()).await.unwrap()
}

// --- secretstores.local.file -------------------------------------------------------------------

const NESTED: &str = r#"{
    "plain": "p",
    "db": {"user": "u", "pass": "p:w", "conn": {"host": "h", "port": 5432}},
    "flag": true,
    "ratio": 1.5,
    "nothing": null,
    "list": ["a", {"b": "c"}],
    "empty": {}
}"#;

struct SecretsFile {
    dir: tempfile::TempDir,
}

impl SecretsFile {
    fn new(json: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets.json"), json).unwrap();
        Self { dir }
    }

    fn path(&self) -> String {
        self.dir.path().join("secrets.json").display().to_string()
    }
}

async fn file_store(file: &SecretsFile, extra: &[(&str, &str)]) -> Arc<dyn SecretStore> {
    let path = file.path();
    let mut md = vec![("secretsFile", path.as_str())];
    md.extend_from_slice(extra);
    FileSecretStore::create(init(&md))
        .await
        .unwrap_or_else(|e| panic!("opening {path}: {e}"))
}

async fn file_error(json: Option<&str>, extra: &[(&str, &str)]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.json");
    if let Some(json) = json {
        std::fs::write(&path, json).unwrap();
    }
    let path = path.display().to_string();
    let mut md = vec![("secretsFile", path.as_str())];
    md.extend_from_slice(extra);
    match FileSecretStore::create(init(&md)).await {
        Ok(_) => panic!("{json:?} was accepted"),
        Err(e) => (e.to_string(), path),
    }
}

#[tokio::test]
async fn file_flattens_nested_keys_with_colons_by_default() {
    let file = SecretsFile::new(NESTED);
    let store = file_store(&file, &[]).await;
    let want: HashMap<_, _> = [
        single("plain", "p"),
        single("db:user", "u"),
        single("db:pass", "p:w"),
        single("db:conn:host", "h"),
        single("db:conn:port", "5432"),
        single("flag", "true"),
        single("ratio", "1.5"),
        single("nothing", ""),
        single("list:0", "a"),
        single("list:1:b", "c"),
    ]
    .into_iter()
    .collect();
    assert_eq!(bulk(&store).await, want);
    for (name, v) in &want {
        assert_eq!(&get(&store, name).await.unwrap(), v, "{name}");
    }
    // Only leaves are secrets.
    for name in ["db", "db:conn", "empty", "list", "DB:USER", "user"] {
        assert_eq!(
            get(&store, name).await,
            Err(SecretError::NotFound(name.into()))
        );
    }
}

#[tokio::test]
async fn file_nested_separator() {
    let file = SecretsFile::new(NESTED);
    let store = file_store(&file, &[("nestedSeparator", "__")]).await;
    assert_eq!(
        get(&store, "db__user").await.unwrap(),
        values(&[("db__user", "u")])
    );
    assert_eq!(
        get(&store, "db__conn__port").await.unwrap(),
        values(&[("db__conn__port", "5432")])
    );
    assert_eq!(
        get(&store, "list__1__b").await.unwrap(),
        values(&[("list__1__b", "c")])
    );
    assert!(matches!(
        get(&store, "db:user").await,
        Err(SecretError::NotFound(_))
    ));

    // An empty separator means the default.
    let store = file_store(&file, &[("nestedSeparator", "")]).await;
    assert_eq!(
        get(&store, "db:user").await.unwrap(),
        values(&[("db:user", "u")])
    );
}

#[tokio::test]
async fn file_multi_valued() {
    let file = SecretsFile::new(NESTED);
    let store = file_store(&file, &[("multiValued", "true")]).await;
    let want: HashMap<_, _> = [
        single("plain", "p"),
        (
            "db".to_owned(),
            values(&[
                ("user", "u"),
                ("pass", "p:w"),
                ("conn:host", "h"),
                ("conn:port", "5432"),
            ]),
        ),
        single("flag", "true"),
        single("ratio", "1.5"),
        single("nothing", ""),
        ("list".to_owned(), values(&[("0", "a"), ("1:b", "c")])),
        ("empty".to_owned(), SecretValues::new()),
    ]
    .into_iter()
    .collect();
    assert_eq!(bulk(&store).await, want);
    for (name, v) in &want {
        assert_eq!(&get(&store, name).await.unwrap(), v, "{name}");
    }
    assert!(matches!(
        get(&store, "db:user").await,
        Err(SecretError::NotFound(_))
    ));

    // With a separator of its own.
    let store = file_store(&file, &[("multiValued", "true"), ("nestedSeparator", ".")]).await;
    assert_eq!(
        get(&store, "db").await.unwrap(),
        values(&[
            ("user", "u"),
            ("pass", "p:w"),
            ("conn.host", "h"),
            ("conn.port", "5432")
        ])
    );

    // multiValued false, spelled out, is the flat layout.
    let store = file_store(&file, &[("multiValued", "false")]).await;
    assert_eq!(
        get(&store, "db:user").await.unwrap(),
        values(&[("db:user", "u")])
    );
    assert!(matches!(
        get(&store, "db").await,
        Err(SecretError::NotFound(_))
    ));
}

#[tokio::test]
async fn file_missing_secret_is_not_found() {
    let file = SecretsFile::new(r#"{"a": "1"}"#);
    let store = file_store(&file, &[]).await;
    assert_eq!(
        get(&store, "b").await,
        Err(SecretError::NotFound("b".into()))
    );
    assert_eq!(get(&store, "").await, Err(SecretError::NotFound("".into())));

    let empty = SecretsFile::new("{}");
    let store = file_store(&empty, &[]).await;
    assert!(bulk(&store).await.is_empty());
}

#[tokio::test]
async fn file_is_read_once_at_start_up() {
    let file = SecretsFile::new(r#"{"a": "1"}"#);
    let store = file_store(&file, &[]).await;
    std::fs::write(file.path(), r#"{"a": "2", "b": "3"}"#).unwrap();
    assert_eq!(get(&store, "a").await.unwrap(), values(&[("a", "1")]));
    assert!(matches!(
        get(&store, "b").await,
        Err(SecretError::NotFound(_))
    ));
    std::fs::remove_file(file.path()).unwrap();
    assert_eq!(get(&store, "a").await.unwrap(), values(&[("a", "1")]));
}

#[tokio::test]
async fn file_bad_files_are_start_up_errors_naming_the_file() {
    let (e, path) = file_error(None, &[]).await;
    assert!(e.contains("secretsFile") && e.contains(&path), "{e}");
    assert!(e.contains("cannot read"), "{e}");

    let (e, path) = file_error(Some(r#"{"a": "#), &[]).await;
    assert!(e.contains(&path) && e.contains("invalid JSON"), "{e}");

    let (e, path) = file_error(Some(""), &[]).await;
    assert!(e.contains(&path) && e.contains("invalid JSON"), "{e}");

    for not_an_object in [r#"["a", "b"]"#, r#""a""#, "42", "null"] {
        let (e, path) = file_error(Some(not_an_object), &[]).await;
        assert!(
            e.contains(&path) && e.contains("JSON object"),
            "{not_an_object}: {e}"
        );
    }

    // Two paths to one key.
    let (e, path) = file_error(Some(r#"{"a:b": "1", "a": {"b": "2"}}"#), &[]).await;
    assert!(e.contains(&path) && e.contains("'a:b'"), "{e}");
    // A directory is not a file.
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().display().to_string();
    let e = FileSecretStore::create(init(&[("secretsFile", &dir_path)]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&dir_path), "{e}");
}

#[tokio::test]
async fn file_metadata_errors() {
    for md in [
        &[][..],
        &[("secretsFile", "")][..],
        &[("secretsFile", "  ")][..],
    ] {
        let e = FileSecretStore::create(init(md)).await.err().unwrap();
        assert!(
            matches!(e, ComponentError::MissingField("secretsFile")),
            "{md:?}: {e}"
        );
    }
    let (e, _) = file_error(Some("{}"), &[("multiValued", "maybe")]).await;
    assert!(e.contains("multiValued") && e.contains("maybe"), "{e}");
}

#[tokio::test]
async fn file_separator_collisions_depend_on_the_separator() {
    let json = r#"{"a:b": "1", "a": {"b": "2"}}"#;
    let file = SecretsFile::new(json);
    let store = file_store(&file, &[("nestedSeparator", "/")]).await;
    assert_eq!(get(&store, "a:b").await.unwrap(), values(&[("a:b", "1")]));
    assert_eq!(get(&store, "a/b").await.unwrap(), values(&[("a/b", "2")]));
    // Metadata keys are matched case-insensitively, as Dapr does.
    let path = file.path();
    let store = FileSecretStore::create(init(&[
        ("SECRETSFILE", path.as_str()),
        ("NestedSeparator", "/"),
        ("MULTIVALUED", "1"),
    ]))
    .await
    .unwrap();
    assert_eq!(get(&store, "a").await.unwrap(), values(&[("b", "2")]));
}
