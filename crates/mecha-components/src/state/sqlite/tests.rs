use std::collections::HashMap;
use std::time::Duration;

use mecha_core::Metadata;

use super::metadata::Metadata as SqliteMetadata;
use super::*;

fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    let values: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ComponentInit {
        name: "sqlite".into(),
        metadata: Metadata::new(values),
        app_id: "app".into(),
    }
}

fn parse(metadata: &[(&str, &str)]) -> Result<SqliteMetadata, ComponentError> {
    SqliteMetadata::parse(&init(metadata))
}

fn field_of(err: ComponentError) -> &'static str {
    match err {
        ComponentError::InvalidField { field, .. } | ComponentError::MissingField(field) => field,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn metadata_defaults() {
    let md = parse(&[("connectionString", "state.db")]).unwrap();
    assert_eq!(md.table_name, "state");
    assert_eq!(md.metadata_table_name, "metadata");
    assert_eq!(md.timeout, Duration::from_secs(20));
    assert_eq!(md.busy_timeout, Duration::from_secs(2));
    assert_eq!(md.cleanup_interval, Some(Duration::from_secs(3600)));
    assert!(!md.disable_wal);
}

#[test]
fn metadata_values() {
    let md = parse(&[
        ("connectionString", "state.db"),
        ("tableName", "my_state2"),
        ("timeout", "1m"),
        ("busyTimeout", "500ms"),
        ("cleanupInterval", "10s"),
        ("disableWAL", "true"),
        ("actorStateStore", "true"),
    ])
    .unwrap();
    assert_eq!(md.table_name, "my_state2");
    assert_eq!(md.timeout, Duration::from_secs(60));
    assert_eq!(md.busy_timeout, Duration::from_millis(500));
    assert_eq!(md.cleanup_interval, Some(Duration::from_secs(10)));
    assert!(md.disable_wal);
    let md = parse(&[("connectionString", "x"), ("timeoutInSeconds", "5")]).unwrap();
    assert_eq!(md.timeout, Duration::from_secs(5));
    for off in ["0", "-1s", "-1h30m"] {
        let md = parse(&[("connectionString", "x"), ("cleanupInterval", off)]).unwrap();
        assert_eq!(md.cleanup_interval, None, "{off}");
    }
}

#[test]
fn metadata_errors() {
    assert_eq!(field_of(parse(&[]).unwrap_err()), "connectionString");
    let bad: [(&str, &str); 7] = [
        ("tableName", "state; DROP TABLE x"),
        ("tableName", "a-b"),
        ("metadataTableName", "m\"x"),
        ("timeout", "0"),
        ("busyTimeout", "soon"),
        ("cleanupInterval", "-x"),
        ("disableWAL", "maybe"),
    ];
    for (key, value) in bad {
        let err = parse(&[("connectionString", "x"), (key, value)]).unwrap_err();
        assert_eq!(field_of(err), key, "{key}={value}");
    }
}

fn target(connection_string: &str) -> Result<Target, ComponentError> {
    parse(&[("connectionString", connection_string)])?.target()
}

#[test]
fn connection_strings() {
    let t = target("/x/y.db").unwrap();
    assert_eq!(t.options.get_filename(), std::path::Path::new("/x/y.db"));
    assert_eq!(
        t.create_file.as_deref(),
        Some(std::path::Path::new("/x/y.db"))
    );
    assert_eq!(
        (t.in_memory, t.read_only, t.journal_mode),
        (false, false, Some("WAL"))
    );

    let t = target("file:data%20x.db?_pragma=busy_timeout(5000)&_txlock=immediate").unwrap();
    assert_eq!(t.options.get_filename(), std::path::Path::new("data x.db"));
    let t = target("file:///abs/data.db?mode=ro").unwrap();
    assert_eq!(
        t.options.get_filename(),
        std::path::Path::new("/abs/data.db")
    );
    assert_eq!(
        (t.read_only, t.journal_mode, t.create_file),
        (true, None, None)
    );

    for memory in [":memory:", "file::memory:", "file:whatever?mode=memory"] {
        let t = target(memory).unwrap();
        assert!(
            t.in_memory && t.create_file.is_none() && t.journal_mode.is_none(),
            "{memory}"
        );
    }
    let md = parse(&[("connectionString", "a.db"), ("disableWAL", "yes")]).unwrap();
    assert_eq!(md.target().unwrap().journal_mode, Some("DELETE"));

    for bad in [
        "file:a.db?_pragma=journal_mode(WAL)",
        "file:a.db?_pragma=foo(1;DROP)",
        "file:a.db?mode=sometimes",
        "file://remote/a.db",
        "file:a%zz.db",
    ] {
        assert_eq!(
            field_of(target(bad).unwrap_err()),
            "connectionString",
            "{bad}"
        );
    }
}

#[test]
fn statements_quote_the_table() {
    let sql = Statements::new("my_table");
    assert!(sql.get.contains("FROM \"my_table\""));
    assert!(sql.bulk_get(3).contains("IN (?2, ?3, ?4)"));
}

#[tokio::test]
async fn cleanup_deletes_expired_rows() {
    let store = SqliteStateStore::open(init(&[
        ("connectionString", ":memory:"),
        ("cleanupInterval", "50ms"),
    ]))
    .await
    .unwrap();
    let expiring = SetRequest {
        key: "expiring".into(),
        value: "v".into(),
        ttl: Some(Duration::from_millis(1)),
        ..SetRequest::default()
    };
    store.set(&expiring).await.unwrap();
    store
        .set(&SetRequest {
            key: "kept".into(),
            value: "v".into(),
            ..SetRequest::default()
        })
        .await
        .unwrap();
    let count = || async {
        let n: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "state""#)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        n
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count().await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired row never cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
}

#[tokio::test]
async fn cleanup_task_stops_with_the_store() {
    let store = SqliteStateStore::open(init(&[("connectionString", ":memory:")]))
        .await
        .unwrap();
    let weak = Arc::downgrade(&store);
    drop(store);
    assert!(weak.upgrade().is_none());
}

#[tokio::test]
async fn bulk_get_spans_chunks() {
    let store = SqliteStateStore::open(init(&[("connectionString", ":memory:")]))
        .await
        .unwrap();
    let n = BULK_GET_CHUNK + 7;
    for i in (0..n).step_by(2) {
        let req = SetRequest {
            key: format!("k{i}"),
            value: format!("{i}").into(),
            ..Default::default()
        };
        store.set(&req).await.unwrap();
    }
    let reqs: Vec<GetRequest> = (0..n)
        .rev()
        .map(|i| GetRequest {
            key: format!("k{i}"),
            ..Default::default()
        })
        .collect();
    let items = store.bulk_get(&reqs).await.unwrap();
    assert_eq!(items.len(), n);
    for (item, i) in items.iter().zip((0..n).rev()) {
        assert_eq!(item.key, format!("k{i}"));
        let data = item.result.clone().unwrap().map(|r| r.data);
        assert_eq!(data, (i % 2 == 0).then(|| Bytes::from(format!("{i}"))));
    }
}
