//! [`ApiError`]: one error type for both protocols, carrying Dapr's error code, the HTTP status
//! and the gRPC code. It is rendered once per protocol, in `api/http.rs` and `api/grpc.rs`.

use std::fmt;

use http::StatusCode;
use tonic::Code;

/// The ErrorInfo domain of every Dapr error.
pub const ERROR_DOMAIN: &str = "dapr.io";

/// An error returned by the sidecar's API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Dapr's `errorCode` tag, e.g. `ERR_STATE_STORE_NOT_FOUND`.
    pub code: &'static str,
    /// The HTTP status.
    pub http: StatusCode,
    /// The gRPC status code.
    pub grpc: Code,
    /// A readable message.
    pub message: String,
    /// The details of a rich error; boxed, as most errors have none and results stay small.
    pub details: Option<Box<ErrorDetails>>,
}

/// The `google.rpc` details of a rich error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// The `google.rpc.ErrorInfo` reason.
    pub reason: &'static str,
    /// ErrorInfo metadata.
    pub metadata: Vec<(&'static str, String)>,
    /// The `google.rpc.ResourceInfo` type and name.
    pub resource: Option<(&'static str, String)>,
}

// === impl ApiError ===

impl ApiError {
    /// A plain error.
    pub fn new(
        code: &'static str,
        http: StatusCode,
        grpc: Code,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            http,
            grpc,
            message: message.into(),
            details: None,
        }
    }

    /// The ErrorInfo reason, if this is a rich error.
    pub fn reason(&self) -> Option<&'static str> {
        self.details.as_ref().map(|d| d.reason)
    }

    /// Adds the ErrorInfo reason and metadata.
    pub fn with_reason(
        mut self,
        reason: &'static str,
        metadata: Vec<(&'static str, String)>,
    ) -> Self {
        let details = self.details.get_or_insert_with(Default::default);
        details.reason = reason;
        details.metadata = metadata;
        self
    }

    /// Adds the ResourceInfo.
    pub fn with_resource(mut self, kind: &'static str, name: impl Into<String>) -> Self {
        self.details.get_or_insert_with(Default::default).resource = Some((kind, name.into()));
        self
    }

    /// `400 ERR_MALFORMED_REQUEST`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_MALFORMED_REQUEST",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            message,
        )
    }

    /// `400 ERR_BODY_READ`: the request body could not be read.
    pub fn body_read(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_BODY_READ",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            message,
        )
    }

    /// `413 ERR_BODY_TOO_LARGE`: the request body is over `--dapr-http-max-request-size`.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            "ERR_BODY_TOO_LARGE",
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// `501 ERR_API_UNIMPLEMENTED`.
    pub fn unimplemented(what: &str) -> Self {
        Self::new(
            "ERR_API_UNIMPLEMENTED",
            StatusCode::NOT_IMPLEMENTED,
            Code::Unimplemented,
            format!("{what} is not implemented by this sidecar yet"),
        )
    }

    /// `500 ERR_INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_INTERNAL",
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            message,
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
