use std::collections::HashMap;
use std::time::Duration;

use mecha_core::Metadata as ComponentMetadata;
use sqlx::mysql::MySqlSslMode;

use super::codec::{Encoded, base64_decode, base64_encode, decode};
use super::metadata::Metadata;
use super::*;

fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    let values: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ComponentInit {
        name: "mysql".into(),
        metadata: ComponentMetadata::new(values),
        app_id: "app".into(),
    }
}

fn parse(metadata: &[(&str, &str)]) -> Result<Metadata, ComponentError> {
    Metadata::parse(&init(metadata))
}

fn field_of(err: ComponentError) -> &'static str {
    match err {
        ComponentError::InvalidField { field, .. } | ComponentError::MissingField(field) => field,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn metadata_defaults() {
    let md = parse(&[("connectionString", "root:@tcp(127.0.0.1:3306)/")]).unwrap();
    assert_eq!(md.schema_name, None);
    assert_eq!(md.table_name, "state");
    assert_eq!(md.metadata_table_name, "dapr_metadata");
    assert_eq!(md.timeout, Duration::from_secs(20));
    assert_eq!(md.cleanup_interval, Some(Duration::from_secs(3600)));
    assert_eq!(md.max_open_conns, 10);
    assert_eq!(md.max_idle_conns, None);
    assert_eq!(md.conn_max_lifetime, Some(Duration::from_secs(1800)));
    assert_eq!(md.conn_max_idle_time, Some(Duration::from_secs(600)));
    assert_eq!(md.pem_path, None);
}

#[test]
fn metadata_values() {
    let md = parse(&[
        ("connectionString", "x@tcp(h)/"),
        ("schemaName", "my_schema"),
        ("tableName", "State_2"),
        ("metadataTableName", "meta"),
        ("timeoutInSeconds", "5"),
        ("cleanupIntervalInSeconds", "30"),
        ("maxOpenConns", "3"),
        ("maxIdleConns", "2"),
        ("connMaxLifetime", "1h"),
        ("connMaxIdleTime", "0"),
        ("pemPath", "/ca.pem"),
        ("actorStateStore", "true"),
    ])
    .unwrap();
    assert_eq!(md.schema_name.as_deref(), Some("my_schema"));
    assert_eq!(md.table_name, "State_2");
    assert_eq!(md.metadata_table_name, "meta");
    assert_eq!(md.timeout, Duration::from_secs(5));
    assert_eq!(md.cleanup_interval, Some(Duration::from_secs(30)));
    assert_eq!((md.max_open_conns, md.max_idle_conns), (3, Some(2)));
    assert_eq!(md.conn_max_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(md.conn_max_idle_time, None);
    assert_eq!(md.pem_path.as_deref(), Some("/ca.pem"));

    let with = |k, v| parse(&[("connectionString", "/"), (k, v)]).unwrap();
    assert_eq!(
        with("timeoutInSeconds", "1m30s").timeout,
        Duration::from_secs(90)
    );
    assert_eq!(
        with("timeoutInSeconds", "0").timeout,
        Duration::from_secs(20)
    );
    assert_eq!(
        with("cleanupInterval", "10m").cleanup_interval,
        Some(Duration::from_secs(600))
    );
    for off in ["0", "-1", "-5s"] {
        assert_eq!(with("cleanupInterval", off).cleanup_interval, None, "{off}");
        assert_eq!(
            with("cleanupIntervalInSeconds", off).cleanup_interval,
            None,
            "{off}"
        );
    }
    assert_eq!(with("maxOpenConns", "0").max_open_conns, 10);
}

#[test]
fn metadata_errors() {
    assert_eq!(field_of(parse(&[]).unwrap_err()), "connectionString");
    let bad: [(&str, &str); 8] = [
        ("tableName", "state; DROP TABLE x"),
        ("tableName", "a-b"),
        ("schemaName", "s`x"),
        ("metadataTableName", "m.x"),
        ("timeoutInSeconds", "soon"),
        ("cleanupInterval", "-x"),
        ("maxOpenConns", "many"),
        ("connMaxLifetime", "5"),
    ];
    for (key, value) in bad {
        let err = parse(&[("connectionString", "/"), (key, value)]).unwrap_err();
        assert_eq!(field_of(err), key, "{key}={value}");
    }
    let long = "t".repeat(65);
    assert!(parse(&[("connectionString", "/"), ("tableName", &long)]).is_err());
}

fn dsn(s: &str) -> dsn::Target {
    dsn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn dsn_in_dapr_form() {
    let t =
        dsn("dapr:s3cr@t:x@tcp(db.example:3307)/appdb?parseTime=true&allowNativePasswords=true");
    let o = &t.options;
    assert_eq!((o.get_host(), o.get_port()), ("db.example", 3307));
    assert_eq!(o.get_username(), "dapr");
    assert!(
        format!("{o:?}").contains(r#"password: Some("s3cr@t:x")"#),
        "{o:?}"
    );
    assert_eq!(o.get_database(), None, "statements name the schema instead");
    assert_eq!(t.database.as_deref(), Some("appdb"));
    assert_eq!(t.address, "db.example:3307");
    assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));

    let t = dsn("root:@tcp(127.0.0.1:3306)/?parseTime=true");
    assert_eq!(t.options.get_username(), "root");
    assert!(format!("{:?}", t.options).contains("password: None"));
    assert_eq!(t.database, None);

    let t = dsn("user@tcp(host)/");
    assert_eq!((t.options.get_host(), t.options.get_port()), ("host", 3306));
    assert_eq!(t.options.get_username(), "user");

    let t = dsn("/");
    assert_eq!(t.address, "127.0.0.1:3306");
    let t = dsn("u:p@tcp/mydb");
    assert_eq!(
        (t.address.as_str(), t.database.as_deref()),
        ("127.0.0.1:3306", Some("mydb"))
    );
    let t = dsn("u:p@tcp([::1]:3310)/");
    assert_eq!((t.options.get_host(), t.options.get_port()), ("::1", 3310));
    assert_eq!(t.address, "[::1]:3310");
    let t = dsn("u@unix(/run/mysqld/mysqld.sock)/db");
    assert_eq!(
        t.options.get_socket().map(|p| p.display().to_string()),
        Some("/run/mysqld/mysqld.sock".into())
    );
    // A password may hold `/` as long as the database slash follows.
    let t = dsn("u:a/b@tcp(h:1)/db");
    assert!(format!("{:?}", t.options).contains(r#"password: Some("a/b")"#));
    assert_eq!(t.database.as_deref(), Some("db"));
}

#[test]
fn dsn_parameters() {
    let t = dsn("u@tcp(h)/d?tls=skip-verify&timeout=2s&charset=utf8mb4,utf8&collation=utf8mb4_bin");
    assert!(matches!(t.options.get_ssl_mode(), MySqlSslMode::Required));
    assert_eq!(t.connect_timeout, Some(Duration::from_secs(2)));
    assert_eq!(t.options.get_charset(), "utf8mb4");
    assert_eq!(t.options.get_collation(), Some("utf8mb4_bin"));
    for (tls, mode) in [
        ("true", MySqlSslMode::VerifyIdentity),
        ("false", MySqlSslMode::Disabled),
        ("preferred", MySqlSslMode::Preferred),
        ("custom", MySqlSslMode::VerifyCa),
    ] {
        let t = dsn(&format!("u@tcp(h)/?tls={tls}"));
        assert_eq!(
            format!("{:?}", t.options.get_ssl_mode()),
            format!("{mode:?}")
        );
    }
    // Unknown parameters are logged, not refused; escapes are decoded.
    let t = dsn("u@tcp(h)/my%5Fdb?loc=Local&sql_mode=x&readTimeout=1s");
    assert_eq!(t.database.as_deref(), Some("my_db"));
}

#[test]
fn dsn_errors() {
    for bad in [
        "user:pass@tcp(host:3306)",
        "u@tcp(host:3306/db",
        "u@udp(host)/db",
        "u@tcp(host:port)/db",
        "u@tcp(h)/db?timeout=fast",
        "u@tcp(h)/db?novalue",
        "u@tcp(h)/d%zz",
        "postgres://u@h/db",
    ] {
        assert!(dsn::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn mysql_urls() {
    let t = dsn("mysql://dapr:p%40ss@db:3307/appdb?ssl-mode=disabled&charset=utf8mb4");
    let o = &t.options;
    assert_eq!(
        (o.get_host(), o.get_port(), o.get_username()),
        ("db", 3307, "dapr")
    );
    assert!(format!("{o:?}").contains(r#"password: Some("p@ss")"#));
    assert_eq!(o.get_database(), None);
    assert_eq!(t.database.as_deref(), Some("appdb"));
    assert_eq!(t.address, "db:3307");
    let t = dsn("MariaDB://root@localhost");
    assert_eq!((t.database, t.options.get_port()), (None, 3306));
    let t = dsn("mysql://root@localhost/?ssl-mode=disabled");
    assert_eq!(t.database, None);
}

#[tokio::test]
async fn schema_comes_from_metadata_then_dsn_then_default() {
    // An unreachable port: `open` fails at connecting, after validating the names.
    let err = |md: &[(&str, &str)]| {
        let init = init(md);
        async move { MySqlStateStore::open(init).await.err().unwrap() }
    };
    let refused = "root@tcp(127.0.0.1:1)/bad-name";
    assert_eq!(
        field_of(err(&[("connectionString", refused)]).await),
        "connectionString"
    );
    let e = err(&[
        ("connectionString", refused),
        ("schemaName", "ok"),
        ("timeoutInSeconds", "1"),
    ])
    .await;
    assert!(matches!(e, ComponentError::Init(_)), "{e}");
}

#[test]
fn values_round_trip() {
    let cases: [(&[u8], bool); 6] = [
        (br#"{"a":1}"#, false),
        (b" [1, 2] ", false),
        (b"\"text\"", false),
        (b"not json", true),
        (&[0xff, 0x00, 0xfe], true),
        (b"", true),
    ];
    for (value, binary) in cases {
        let e = Encoded::new(value, true);
        assert_eq!(e.binary, binary, "{value:?}");
        assert_eq!(decode(e.text.into_bytes(), e.binary).unwrap(), value);
        let e = Encoded::new(value, false);
        assert!(e.binary);
        assert_eq!(decode(e.text.into_bytes(), true).unwrap(), value);
    }
    // Dapr's own encoding of bytes.
    assert_eq!(decode(br#""aGk=""#.to_vec(), true).unwrap(), "hi");
    assert!(decode(br#""a*b""#.to_vec(), true).is_err());
    assert!(decode(b"17".to_vec(), true).is_err());
}

#[test]
fn base64_matches_the_standard_alphabet() {
    for (raw, text) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (&[0xfb, 0xff, 0xbf], "+/+/"),
    ] {
        assert_eq!(base64_encode(raw), text);
        assert_eq!(base64_decode(text).unwrap(), raw);
    }
    assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
    for bad in ["Z", "Zm9v=", "Z===", "Zm-v"] {
        assert!(base64_decode(bad).is_err(), "{bad}");
    }
}

#[test]
fn statements_quote_names() {
    let sql = Statements::new("s1", "t_2");
    assert!(sql.get.contains("FROM `s1`.`t_2`"));
    assert!(sql.bulk_get(3).contains("IN (?, ?, ?)"));
    assert!(
        sql.create_table("utf8mb4_bin")
            .contains("CREATE TABLE IF NOT EXISTS `s1`.`t_2`")
    );
    assert_eq!(sql::prefix_pattern("a_b%c!d"), "a!_b!%c!!d%");
    assert_eq!(sql::prefix_pattern(""), "%");
}

#[tokio::test]
async fn close_and_drop_stop_the_cleanup_task() {
    let url = std::env::var("MECHA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let table = format!("mecha_{}", uuid::Uuid::new_v4().simple());
    let open = || {
        MySqlStateStore::open(init(&[
            ("connectionString", &url),
            ("tableName", &table),
            ("cleanupInterval", "20ms"),
        ]))
    };
    let store = open().await.unwrap();
    let task = store.cleanup.task().unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        !task.is_finished(),
        "the clean-up runs while the store is open"
    );
    store.close().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(task.is_finished(), "close() stops the clean-up");
    assert!(store.get(&GetRequest::default()).await.is_err());

    let store = open().await.unwrap();
    let (task, weak) = (store.cleanup.task().unwrap(), Arc::downgrade(&store));
    drop(store);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        task.is_finished() && weak.upgrade().is_none(),
        "dropping stops it too"
    );
    let mut db = <sqlx::MySqlConnection as Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP TABLE `{table}`")))
        .execute(&mut db)
        .await
        .unwrap();
}
