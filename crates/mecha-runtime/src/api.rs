//! The app-facing APIs: thin HTTP and gRPC translations into the building-block services.

pub mod grpc;
pub mod http;
