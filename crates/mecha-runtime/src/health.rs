//! Readiness of the sidecar (`/v1.0/healthz/outbound`) and of its app channel (`/v1.0/healthz`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use tonic::Code;

use crate::error::ApiError;

const APP_PORT_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Readiness flags.
#[derive(Debug, Default)]
pub struct Health {
    outbound: AtomicBool,
    app: AtomicBool,
    /// False while input bindings wait to be subscribed (they start once the app is ready).
    inputs: AtomicBool,
}

// === impl Health ===

impl Health {
    /// Creates the flags; `app_ready` is true when there is no app to wait for.
    pub fn new(app_ready: bool) -> Self {
        Self {
            outbound: AtomicBool::new(false),
            app: AtomicBool::new(app_ready),
            inputs: AtomicBool::new(true),
        }
    }

    /// Marks the API servers and components ready.
    pub fn set_outbound_ready(&self) {
        self.outbound.store(true, Ordering::Release);
    }

    /// Marks the app channel ready.
    pub fn set_app_ready(&self) {
        self.app.store(true, Ordering::Release);
    }

    /// Marks the input bindings as waiting to be started, or started.
    pub fn set_inputs_ready(&self, ready: bool) {
        self.inputs.store(ready, Ordering::Release);
    }

    /// Whether the app channel is ready.
    pub fn app_ready(&self) -> bool {
        self.app.load(Ordering::Acquire)
    }

    /// `GET /v1.0/healthz/outbound`: ready once components and API servers are up.
    pub fn check_outbound(&self) -> Result<(), ApiError> {
        if self.outbound.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::new(
                "ERR_OUTBOUND_HEALTH_NOT_READY",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Unavailable,
                "dapr outbound is not ready",
            ))
        }
    }

    /// `GET /v1.0/healthz`: ready once the app channel is also up.
    pub fn check(&self, app_id: &str, asked_app_id: Option<&str>) -> Result<(), ApiError> {
        if let Some(asked) = asked_app_id.filter(|a| *a != app_id) {
            return Err(ApiError::new(
                "ERR_HEALTH_APPID_NOT_MATCH",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                format!("dapr app-id does not match: asked {asked}, this is {app_id}"),
            ));
        }
        let mut waiting = Vec::new();
        if !self.outbound.load(Ordering::Acquire) {
            waiting.push("api");
        }
        if !self.app_ready() {
            waiting.push("app-channel");
        }
        if !self.inputs.load(Ordering::Acquire) {
            waiting.push("input-bindings");
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                "ERR_HEALTH_NOT_READY",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Unavailable,
                format!("dapr is not ready: [{}]", waiting.join(" ")),
            ))
        }
    }
}

/// Waits until something accepts TCP connections at `addr`, then marks the app ready.
pub(crate) async fn wait_for_app_port(health: std::sync::Arc<Health>, addr: String) {
    let mut logged = false;
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            tracing::info!(address = %addr, "App channel is ready");
            health.set_app_ready();
            return;
        }
        if !logged {
            tracing::info!(address = %addr, "Waiting for the app to listen on its port");
            logged = true;
        }
        tokio::time::sleep(APP_PORT_PROBE_INTERVAL).await;
    }
}
