//! The Mecha sidecar: Dapr-compatible HTTP and gRPC APIs over the building-block services.
//!
//! Owns start-up ([`Sidecar::start`]), component loading ([`components`]), the building-block
//! services ([`state`], [`bindings`], [`secrets`], [`configuration`], [`lock`],
//! [`metadata`], [`health`]) and the thin API layers ([`api`]) that
//! translate HTTP and gRPC into them. It must not read the environment or parse flags (the
//! `mecha` binary does), and components must not depend on it. Start reading at
//! [`sidecar`], then follow one request through [`api::http`] into [`state::StateService`].

pub mod acl;
pub mod api;
pub mod app_channel;
pub mod bindings;
pub mod components;
pub mod config;
pub mod configuration;
pub mod error;
mod h1pool;
pub mod health;
pub mod invoke;
pub mod lock;
pub mod metadata;
pub mod metrics;
pub mod middleware;
pub mod mtls;
mod outbound;
pub mod pubsub;
pub mod resiliency;
pub mod secrets;
pub mod sidecar;
pub mod state;
pub mod trace;

pub use config::{AppHealthCheck, AppProtocol, RuntimeConfig};
pub use error::ApiError;
pub use sidecar::{Running, ShutdownHandle, Sidecar, StartError};
