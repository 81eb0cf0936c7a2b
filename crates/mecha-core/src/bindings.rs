//! The bindings building block's component contract: [`OutputBinding`] (the app calls an
//! external system) and [`InputBinding`] (an external system triggers the app).
//!
//! One component may be both, as Dapr's are (`bindings.mqtt3`); its constructor returns a
//! [`BindingComponent`] with the directions it offers, and the runtime uses the ones the
//! `direction` metadata allows.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// Metadata key limiting a binding to `input`, `output` or both (`"input, output"`).
pub const DIRECTION: &str = "direction";
/// Metadata key of the app path input events are POSTed to (default: `/<binding name>`).
pub const ROUTE: &str = "route";

/// A call of an output binding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokeRequest {
    /// The operation, e.g. `create`, `get`, `exec`.
    pub operation: String,
    /// The payload, as the app sent it (JSON-encoded over HTTP).
    pub data: Bytes,
    /// Per-request metadata (`key`, `sql`, `path`, `ttlInSeconds`…).
    pub metadata: HashMap<String, String>,
}

/// What an output binding answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokeResponse {
    /// The response payload, if any.
    pub data: Option<Bytes>,
    /// Response metadata, returned to HTTP callers as `metadata.<key>` headers.
    pub metadata: HashMap<String, String>,
    /// The payload's content type, when the binding knows it.
    pub content_type: Option<String>,
}

/// An event read from an input binding's source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingEvent {
    /// The payload.
    pub data: Bytes,
    /// Event metadata, sent to HTTP apps as headers.
    pub metadata: HashMap<String, String>,
}

/// The future a delivery returns: `Ok` once the app accepted the event, `Err` with the reason
/// otherwise (the source redelivers where it can).
pub type DeliveryFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Delivers one event to the app; given to [`InputBinding::read`] by the runtime.
pub type EventHandler = Arc<dyn Fn(BindingEvent) -> DeliveryFuture + Send + Sync>;

/// A binding the app calls.
#[async_trait]
pub trait OutputBinding: Send + Sync + 'static {
    /// The operations it supports, for the error listing them.
    fn operations(&self) -> &[&'static str];

    /// Performs one operation.
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError>;

    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// A binding that triggers the app.
#[async_trait]
pub trait InputBinding: Send + Sync + 'static {
    /// Starts reading from the source in the background, calling `handler` for each event and
    /// acknowledging an event only when `handler` succeeded (where the source supports it).
    /// Returns once reading has started; reading continues until [`InputBinding::close`].
    async fn read(&self, handler: EventHandler) -> Result<(), BindingError>;

    /// Stops reading and releases connections.
    async fn close(&self) {}
}

/// What a binding component offers.
#[derive(Clone, Default)]
pub struct BindingComponent {
    /// The input side, if the component has one.
    pub input: Option<Arc<dyn InputBinding>>,
    /// The output side, if the component has one.
    pub output: Option<Arc<dyn OutputBinding>>,
}

/// An error from a binding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The operation is not one the binding supports.
    #[error("binding does not support operation '{operation}'; supported operations: {}", supported.join(", "))]
    UnsupportedOperation {
        /// The operation asked for.
        operation: String,
        /// The operations supported.
        supported: Vec<String>,
    },
    /// The request is invalid (missing metadata, bad SQL, a path outside the root…).
    #[error("{0}")]
    BadRequest(String),
    /// The external system failed or is unreachable.
    #[error("{0}")]
    Backend(String),
}

impl BindingError {
    /// The error for `operation` on a binding supporting `supported`.
    pub fn unsupported(operation: &str, supported: &[&str]) -> Self {
        BindingError::UnsupportedOperation {
            operation: operation.to_owned(),
            supported: supported.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}
