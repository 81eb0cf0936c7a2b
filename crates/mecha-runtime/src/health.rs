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
    subscriptions: AtomicBool,
    app_healthy: AtomicBool,
}

// === impl Health ===

impl Health {
    /// Creates the flags; `app_ready` is true when there is no app to wait for.
    pub fn new(app_ready: bool) -> Self {
        Self {
            outbound: AtomicBool::new(false),
            app: AtomicBool::new(app_ready),
            inputs: AtomicBool::new(true),
            subscriptions: AtomicBool::new(true),
            app_healthy: AtomicBool::new(true),
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

    /// Marks the pub/sub subscriptions as made (or not yet).
    pub fn set_subscriptions_ready(&self, ready: bool) {
        self.subscriptions.store(ready, Ordering::Release);
    }

    /// Records the result of the app health probe.
    pub fn set_app_healthy(&self, healthy: bool) {
        self.app_healthy.store(healthy, Ordering::Release);
    }

    /// Whether the app may receive events: its port answers and its health probe (when
    /// enabled) passes.
    pub fn app_healthy(&self) -> bool {
        self.app_ready() && self.app_healthy.load(Ordering::Acquire)
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
        if !self.subscriptions.load(Ordering::Acquire) {
            waiting.push("subscriptions");
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

/// Probes the app's health every `check.interval` once its port is ready; `check.threshold`
/// failures in a row make it unhealthy (no pub/sub or binding deliveries), one success makes it
/// healthy again.
pub(crate) async fn probe_app_health(
    health: std::sync::Arc<Health>,
    app: std::sync::Arc<crate::app_channel::AppChannel>,
    check: crate::config::AppHealthCheck,
) {
    while !health.app_ready() {
        tokio::time::sleep(APP_PORT_PROBE_INTERVAL).await;
    }
    let mut failures = 0u32;
    loop {
        match app.health_check(&check.path, check.timeout).await {
            Ok(()) => {
                failures = 0;
                if !health.app_healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("The app is healthy again; deliveries resume");
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(failures, error = %e, "App health probe failed");
                if failures >= check.threshold.max(1)
                    && health.app_healthy.swap(false, Ordering::AcqRel)
                {
                    tracing::warn!(failures, error = %e, "The app is unhealthy; deliveries pause until it recovers");
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}
