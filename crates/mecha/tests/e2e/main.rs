//! End-to-end tests: the real `mecha` binary on free ports, driven over HTTP, gRPC and the
//! official SDKs.

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bindings_brokers;
mod bindings_core;
mod bindings_db;
mod bindings_grpc_app;
mod cli;
mod configuration;
mod fuzz_api;
mod grpc_api;
mod http_api;
mod invoke;
mod lifecycle;
mod lock;
mod middleware_wasm;
mod mtls;
mod mysql_outage;
mod postgres_outage;
mod pubsub;
mod pubsub_grpc_app;
mod pubsub_reliability;
mod python_sdk;
mod redis_outage;
mod secrets;

/// The binary under test.
pub(crate) const MECHA: &str = env!("CARGO_BIN_EXE_mecha");
