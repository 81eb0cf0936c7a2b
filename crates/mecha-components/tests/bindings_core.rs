//! `bindings.cron`, `bindings.http` and `bindings.localstorage` at the component level: cron
//! against the system clock, HTTP against servers started by the tests (axum, and
//! `openssl s_server` for TLS with certificates made on the fly), localstorage against
//! temporary folders.

#![cfg(all(
    feature = "bindings-cron",
    feature = "bindings-http",
    feature = "bindings-localstorage"
))]
// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bindings_core/cron.rs"]
mod cron;
#[path = "bindings_core/http.rs"]
mod http;
#[path = "bindings_core/localstorage.rs"]
mod localstorage;
#[path = "bindings_core/tls.rs"]
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mecha_core::Metadata;
use mecha_core::bindings::{BindingComponent, InvokeRequest};
use mecha_core::component::{ComponentError, ComponentInit};

/// The init of a component named `name` with `metadata`.
pub(crate) fn init(name: &str, metadata: &[(&str, &str)]) -> ComponentInit {
    ComponentInit {
        name: name.into(),
        metadata: Metadata::new(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        app_id: "bindings-core".into(),
    }
}

/// A request for `operation` with `data` and `metadata`.
pub(crate) fn request(operation: &str, data: &[u8], metadata: &[(&str, &str)]) -> InvokeRequest {
    InvokeRequest {
        operation: operation.into(),
        data: Bytes::copy_from_slice(data),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    }
}

/// Fails with the error's message when creation failed.
pub(crate) fn created(r: Result<Arc<BindingComponent>, ComponentError>) -> Arc<BindingComponent> {
    r.unwrap_or_else(|e| panic!("component creation failed: {e}"))
}
