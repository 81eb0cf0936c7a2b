//! Unit tests of the parts that need no server: connection strings, names, ETags, values
//! and the query translation.

use std::collections::HashMap;
use std::time::Duration;

use mecha_core::component::ComponentError;
use mecha_core::state::{Query, StateError};

use super::connection::conninfo::parse_keyword_value;
use super::connection::{Connection, TableName};
use super::query::{Param, Translated};
use super::{json_text, parse_etag};

fn metadata(pairs: &[(&str, &str)]) -> mecha_core::Metadata {
    mecha_core::Metadata::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    )
}

fn pairs(s: &str) -> Vec<(String, String)> {
    parse_keyword_value(s).unwrap()
}

#[test]
fn splits_keyword_value_strings() {
    let got = pairs(
        "host=localhost user=postgres password=x port=5432 dbname=test sslmode=disable \
         connect_timeout=10",
    );
    let want = [
        ("host", "localhost"),
        ("user", "postgres"),
        ("password", "x"),
        ("port", "5432"),
        ("dbname", "test"),
        ("sslmode", "disable"),
        ("connect_timeout", "10"),
    ];
    assert_eq!(
        got,
        want.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
    );
    assert_eq!(
        pairs(r"  password = 'p w' user='a b\'c' app=x\ y  "),
        [("password", "p w"), ("user", "a b'c"), ("app", "x y")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec()
    );
    assert_eq!(
        pairs("password='' user=u")[0],
        ("password".into(), "".into())
    );
    for bad in ["host", "host=localhost port", "password='open"] {
        assert!(parse_keyword_value(bad).is_err(), "{bad}");
    }
}

#[test]
fn reads_both_connection_string_forms() {
    let kv = Connection::parse(&metadata(&[(
        "connectionString",
        "host=db.example port=6543 user=app password='p w' dbname=things sslmode=disable \
         pool_max_conns=7 connect_timeout=10",
    )]))
    .unwrap();
    assert_eq!(kv.options.get_host(), "db.example");
    assert_eq!(kv.options.get_port(), 6543);
    assert_eq!(kv.options.get_username(), "app");
    assert_eq!(kv.options.get_database(), Some("things"));
    assert_eq!(kv.max_conns, 7);
    assert_eq!(kv.timeout, Duration::from_secs(20));

    let url = Connection::parse(&metadata(&[
        (
            "connectionString",
            "postgres://u:pw@db.example:6000/d?sslmode=disable&pool_max_conns=3&connect_timeout=5",
        ),
        ("timeoutInSeconds", "3"),
        ("maxConns", "9"),
        ("connectionMaxIdleTime", "5m"),
        ("port", "6001"),
    ]))
    .unwrap();
    assert_eq!(url.options.get_host(), "db.example");
    assert_eq!(url.options.get_port(), 6001, "the port field overrides");
    assert_eq!(url.options.get_database(), Some("d"));
    assert_eq!(url.max_conns, 9, "maxConns wins over pool_max_conns");
    assert_eq!(url.timeout, Duration::from_secs(3));
    assert_eq!(url.idle_timeout, Some(Duration::from_secs(300)));

    let socket = Connection::parse(&metadata(&[(
        "connectionString",
        "host=/var/run/postgresql user=postgres",
    )]))
    .unwrap();
    assert!(socket.options.get_socket().is_some());
}

#[test]
fn refuses_bad_connection_metadata() {
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("connectionString", "host=x port=notaport")],
        &[("connectionString", "host=x"), ("timeout", "0s")],
        &[("connectionString", "host=x"), ("maxConns", "many")],
        &[("connectionString", "host=x"), ("useAzureAD", "true")],
    ];
    for md in cases {
        assert!(Connection::parse(&metadata(md)).is_err(), "{md:?}");
    }
}

#[test]
fn validates_table_names() {
    let t = TableName::parse("State", "tableName").unwrap();
    assert_eq!(t.quoted(), "\"state\"");
    let t = TableName::parse("app.my_state", "tableName").unwrap();
    assert_eq!(t.quoted(), "\"app\".\"my_state\"");
    assert_eq!(t.flat(), "app_my_state");
    for bad in [
        "",
        "a.b.c",
        "1abc",
        "st\"ate",
        "a;drop",
        "a b",
        &"x".repeat(64),
    ] {
        assert!(
            matches!(
                TableName::parse(bad, "tableName"),
                Err(ComponentError::InvalidField { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn etags_are_xmin_numbers() {
    assert_eq!(parse_etag("4294967295"), Ok("4294967295"));
    for bad in ["", "-1", "4294967296", "abc", "1.5"] {
        assert!(
            matches!(parse_etag(bad), Err(StateError::InvalidEtag(_))),
            "{bad}"
        );
    }
}

#[test]
fn only_jsonb_compatible_json_is_stored_as_json() {
    assert_eq!(json_text(br#"{"a":1}"#), Some(r#"{"a":1}"#));
    assert_eq!(json_text(b" -12.5e3 "), Some(" -12.5e3 "));
    for binary in [
        &b""[..],
        b"plain text",
        &[0xff, 0xfe],
        br#""nul \u0000""#,
        b"1e999",
    ] {
        assert_eq!(json_text(binary), None, "{binary:?}");
    }
}

#[test]
fn queries_bind_every_value() {
    let mut q = Query::parse(
        br#"{"filter":{"OR":[{"EQ":{"a.b":"x'; DROP TABLE t; --"}},{"IN":{"c":[1,2]}},
            {"GTE":{"n":3}},{"LT":{"s":"m"}},{"GT":{"b":true}}]},
            "sort":[{"key":"n","order":"DESC"}],"page":{"limit":2,"token":"4"}}"#,
    )
    .unwrap();
    q.key_prefix = "app||".into();
    let t = Translated::new("\"state\"", &q).unwrap();
    assert!(!t.sql.contains("DROP"), "{}", t.sql);
    assert!(
        t.sql.contains("LIMIT $") && t.sql.contains("OFFSET $"),
        "{}",
        t.sql
    );
    assert_eq!(t.params[0], Param::Text("app||".into()));
    assert!(
        t.params
            .contains(&Param::Path(vec!["a".into(), "b".into()]))
    );
    assert!(t.params.contains(&Param::Int(3)), "limit + 1 is fetched");
    assert!(t.params.contains(&Param::Int(4)), "the token is the offset");
    assert_eq!((t.limit, t.offset), (Some(2), 4));
    q.token = Some("next".into());
    assert!(matches!(
        Translated::new("\"state\"", &q),
        Err(StateError::BadRequest(_))
    ));
}
