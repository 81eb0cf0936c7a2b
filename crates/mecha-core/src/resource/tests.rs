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
kind: Pipeline
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
    assert!(matches!(&docs[1], Resource::Other { kind, .. } if kind == "Pipeline"));
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

#[test]
fn subscriptions_v1_and_v2() {
    let docs = parse(
        r#"
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    rules:
    - match: event.type == "big"
      path: /big
    default: /orders
  deadLetterTopic: poison
scopes: [app1]
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: v1
spec:
  pubsubname: pubsub
  topic: t
  route: /t
"#,
    )
    .unwrap();
    let Resource::Subscription(s) = &docs[0] else {
        panic!("not a subscription")
    };
    assert_eq!(s.spec.rules().len(), 2);
    assert_eq!(s.spec.dead_letter_topic.as_deref(), Some("poison"));
    assert!(s.in_scope("app1") && !s.in_scope("app2"));
    let Resource::Subscription(s) = &docs[1] else {
        panic!("not a subscription")
    };
    assert_eq!(s.spec.rules(), vec![(String::new(), "/t".to_owned())]);
    let err = parse("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: x}\nspec: {pubsubname: p, topic: t}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("route"), "{err}");
}
