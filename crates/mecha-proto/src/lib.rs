//! Wire types for Mecha.
//!
//! Owns the protobuf messages and gRPC service definitions that Mecha speaks: the app-facing
//! `dapr.proto.runtime.v1.Dapr` service, the `AppCallback` services an app implements, the
//! `dapr.proto.common.v1` messages, and the `google.rpc` error details that rich errors carry.
//!
//! The Dapr runtime types come from the official `dapr` crate, pinned to an exact version so
//! that the wire contract changes only when we choose. This crate must not depend on any other
//! Mecha crate. Start reading at [`runtime`].

pub mod rpc;
pub mod sentry;

/// `dapr.proto.runtime.v1`: the `Dapr` service, its messages and the app callback services.
pub mod runtime {
    pub use dapr::dapr::proto::runtime::v1::*;
}

/// `dapr.proto.common.v1`: messages shared by the runtime and app callback services.
pub mod common {
    pub use dapr::dapr::proto::common::v1::*;
}

pub use prost;
pub use prost_types;
