//! Mecha's components: one file per store or broker, registered by Dapr type and version.
//!
//! Each building block has a module (`state`, `secretstores`, `configuration`, `lock`) holding
//! one static registration table; each component is one file in that block's folder
//! (`state/sqlite.rs`), gated by a cargo feature when it pulls a client library. Components
//! implement the traits of `mecha-core` and must not depend on `mecha-runtime`. Start reading
//! at [`state::REGISTRY`].

pub mod bindings;
pub mod configuration;
pub mod lock;
#[cfg(any(feature = "bindings-mqtt3", feature = "pubsub-mqtt3"))]
mod mqtt;
pub mod nameresolution;
pub mod pubsub;
pub mod registry;
pub mod secretstores;
pub mod state;

pub use registry::Registration;
