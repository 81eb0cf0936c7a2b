//! `google.rpc` error model: `Status` and the detail messages Dapr attaches to rich errors.
//!
//! The field numbers are those of `google/rpc/status.proto` and `google/rpc/error_details.proto`.

use std::collections::HashMap;

pub use dapr::google::rpc::Status;

/// Type URL of [`ErrorInfo`] inside a `google.protobuf.Any`.
pub const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
/// Type URL of [`ResourceInfo`] inside a `google.protobuf.Any`.
pub const RESOURCE_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ResourceInfo";

/// Why an error happened, as a machine-readable reason within a domain.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    /// The reason, e.g. `DAPR_STATE_NOT_FOUND`.
    #[prost(string, tag = "1")]
    pub reason: String,
    /// The domain, `dapr.io` for Dapr errors.
    #[prost(string, tag = "2")]
    pub domain: String,
    /// Extra context, e.g. the app id.
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

/// The resource an error is about.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceInfo {
    /// The kind of resource, e.g. `state`.
    #[prost(string, tag = "1")]
    pub resource_type: String,
    /// The name of the resource, e.g. the store name.
    #[prost(string, tag = "2")]
    pub resource_name: String,
    /// Who owns the resource.
    #[prost(string, tag = "3")]
    pub owner: String,
    /// A human-readable description.
    #[prost(string, tag = "4")]
    pub description: String,
}
