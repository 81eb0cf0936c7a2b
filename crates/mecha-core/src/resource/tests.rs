use super::*;

fn parse(text: &str) -> Result<Vec<Resource>, ResourceError> {
    Resource::parse(text, Path::new("components/test.yaml"))
}

#[test]
fn parses_multi_document_components() {
    let docs = parse(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: "state.db"
  - name: timeoutInSeconds
    value: 30
  - name: actorStateStore
    value: true
  - name: password
    secretKeyRef:
      name: db
      key: pw
auth:
  secretStore: env
scopes: [a, b]
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: orders
"#,
    )
    .unwrap();
    assert_eq!(docs.len(), 2);
    let Resource::Component(c) = &docs[0] else {
        panic!("not a component")
    };
    assert_eq!(c.name, "statestore");
    assert_eq!(c.type_and_version(), "state.sqlite/v1");
    assert_eq!(c.metadata[1].value, MetadataValue::Plain("30".into()));
    assert_eq!(c.metadata[2].value, MetadataValue::Plain("true".into()));
    assert_eq!(
        c.metadata[3].value,
        MetadataValue::SecretKeyRef {
            name: "db".into(),
            key: "pw".into()
        }
    );
    assert_eq!(c.secret_store.as_deref(), Some("env"));
    assert!(c.in_scope("a") && !c.in_scope("c"));
    assert!(matches!(&docs[1], Resource::Other { kind, .. } if kind == "Subscription"));
}

#[test]
fn missing_type_names_file_and_component() {
    let err = parse(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {version: v1}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("component 's'"), "{err}");
    assert!(err.contains("components/test.yaml"), "{err}");
    assert!(err.contains("spec.type"), "{err}");
}

#[test]
fn invalid_yaml_is_an_error() {
    let err = parse("apiVersion: [unclosed\n").unwrap_err();
    assert!(matches!(err, ResourceError::Yaml { .. }), "{err}");
}

#[test]
fn foreign_documents_are_other() {
    let docs = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap();
    assert!(matches!(&docs[0], Resource::Other { .. }));
}

#[test]
fn configuration_secret_scopes() {
    let docs = parse(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: cfg}\nspec:\n  secrets:\n    scopes:\n    - {storeName: a, defaultAccess: deny, allowedSecrets: [x]}\n    - {storeName: b, deniedSecrets: [pw]}\n",
    )
    .unwrap();
    let Resource::Configuration(c) = &docs[0] else {
        panic!("not a configuration")
    };
    let scopes = c.secret_scopes().unwrap();
    assert!(scopes[0].allows("x") && !scopes[0].allows("z"));
    assert!(!scopes[1].allows("pw") && scopes[1].allows("z"));
}
