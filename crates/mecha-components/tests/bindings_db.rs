//! The database output bindings against real servers: `bindings.redis` on the shared Redis
//! (`MECHA_TEST_REDIS_URL`, default `127.0.0.1:6379`), `bindings.postgresql` on the shared
//! PostgreSQL (`MECHA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and on a private server restarted under the binding, and `bindings.mysql` on the shared
//! MariaDB (`MECHA_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`). Every test
//! uses fresh keys and tables; an unreachable server fails the test.

#![cfg(all(
    feature = "bindings-redis",
    feature = "bindings-postgresql",
    feature = "bindings-mysql"
))]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bindings_db {
    pub(crate) mod mysql;
    pub(crate) mod outage;
    pub(crate) mod postgresql;
    pub(crate) mod redis;
}
/// The private PostgreSQL server of the PostgreSQL component tests.
#[path = "postgresql/server.rs"]
mod server;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mecha_core::Metadata;
use mecha_core::bindings::{
    BindingComponent, BindingError, InvokeRequest, InvokeResponse, OutputBinding,
};
use mecha_core::component::ComponentInit;

pub(crate) fn init(metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: "db-binding".to_owned(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        app_id: "bindings-db".to_owned(),
    }
}

/// The output side of a created component.
pub(crate) fn output(component: Arc<BindingComponent>) -> Arc<dyn OutputBinding> {
    assert!(component.input.is_none(), "an output-only binding");
    component.output.clone().expect("an output binding")
}

/// Calls `operation` with `data` and request metadata `md`.
pub(crate) async fn call(
    binding: &dyn OutputBinding,
    operation: &str,
    data: &[u8],
    md: &[(&str, &str)],
) -> Result<InvokeResponse, BindingError> {
    binding
        .invoke(InvokeRequest {
            operation: operation.to_owned(),
            data: Bytes::copy_from_slice(data),
            metadata: md
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
        .await
}

/// A fresh name: `<tag>_<32 hex digits>`.
pub(crate) fn fresh(tag: &str) -> String {
    format!("{tag}_{}", uuid::Uuid::new_v4().simple())
}

/// The JSON of a response's data.
pub(crate) fn json(resp: &InvokeResponse) -> serde_json::Value {
    serde_json::from_slice(resp.data.as_deref().expect("response data")).expect("JSON data")
}

/// Checks the response metadata every SQL operation answers.
pub(crate) fn check_sql_metadata(resp: &InvokeResponse, operation: &str, sql: &str) {
    let md = &resp.metadata;
    assert_eq!(md.get("operation").map(String::as_str), Some(operation));
    assert_eq!(md.get("sql").map(String::as_str), Some(sql));
    for key in ["start-time", "end-time"] {
        let t = md.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(t.ends_with('Z') && t.contains('T'), "{key}: {t}");
    }
    let d = md.get("duration").expect("duration");
    assert!(d.ends_with('s'), "duration {d}");
    assert!(md.get("start-time") <= md.get("end-time"));
}
