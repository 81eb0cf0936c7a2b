//! `bindings.postgresql` on a private server killed and restarted under the same binding:
//! calls fail with a backend error within the timeout, then work again by themselves.

use std::time::{Duration, Instant};

use mecha_components::bindings::postgresql::PostgresBinding;
use mecha_core::bindings::BindingError;
use serde_json::json;

use crate::server::PrivatePostgres;
use crate::{call, init, json, output};

/// The operation timeout of the binding under test.
const TIMEOUT_SECS: u64 = 2;
/// How late an error may come after the timeout.
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_survives_a_server_restart() {
    let mut server = PrivatePostgres::start().await;
    let b = output(
        PostgresBinding::create(init(&[
            ("connectionString", &server.url()),
            ("timeout", &format!("{TIMEOUT_SECS}s")),
        ]))
        .await
        .unwrap(),
    );
    let create = [("sql", "CREATE TABLE kept (v text)")];
    call(&*b, "exec", b"", &create).await.unwrap();
    let insert = [
        ("sql", "INSERT INTO kept VALUES ($1)"),
        ("params", r#"["before"]"#),
    ];
    call(&*b, "exec", b"", &insert).await.unwrap();

    server.kill();
    for (op, md) in [
        ("query", vec![("sql", "SELECT v FROM kept")]),
        ("exec", insert.to_vec()),
        ("exec", vec![("sql", "DELETE FROM kept")]),
    ] {
        let started = Instant::now();
        let r = call(&*b, op, b"", &md).await;
        let took = started.elapsed();
        match r {
            Err(BindingError::Backend(m)) => eprintln!("{op} during the outage: {m} ({took:?})"),
            other => panic!("{op} during the outage: got {other:?}, want a backend error"),
        }
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS) + SLACK,
            "{op} took {took:?}"
        );
    }

    server.restart().await;
    // The same binding works again: broken pooled connections are replaced.
    let rows = call(&*b, "query", b"", &[("sql", "SELECT v FROM kept")])
        .await
        .unwrap();
    assert_eq!(json(&rows), json!([["before"]]));
    let after = [
        ("sql", "INSERT INTO kept VALUES ($1)"),
        ("params", r#"["after"]"#),
    ];
    call(&*b, "exec", b"", &after).await.unwrap();
    let rows = call(
        &*b,
        "query",
        b"",
        &[("sql", "SELECT v FROM kept ORDER BY v DESC")],
    )
    .await
    .unwrap();
    assert_eq!(json(&rows), json!([["before"], ["after"]]));
}
