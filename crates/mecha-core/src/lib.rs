//! Core types of Mecha, shared by the components and the runtime.
//!
//! Owns the component traits ([`state::StateStore`], [`secretstores::SecretStore`],
//! [`configuration::ConfigurationStore`], [`lock::LockStore`]), the resource model read from YAML
//! ([`resource`]), component metadata helpers ([`metadata`]), Go-style durations
//! ([`duration`]) and the errors components return. It must not depend on an HTTP or gRPC
//! server, nor on any store or broker client: those belong to `mecha-runtime` and
//! `mecha-components`. Start reading at [`state::StateStore`].

pub mod bindings;
pub mod component;
pub mod configuration;
pub mod duration;
pub mod lock;
pub mod metadata;
pub mod nameresolution;
pub mod pubsub;
pub mod resource;
pub mod secretstores;
pub mod state;

pub use component::{ComponentError, ComponentInit, Feature};
pub use metadata::Metadata;
