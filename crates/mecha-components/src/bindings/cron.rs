//! `bindings.cron` v1: triggers the app on a schedule.
//!
//! Input: one event per slot of `schedule`, evaluated in UTC, with empty data and the metadata
//! Dapr sends (`timeZone`, here always `UTC`, and `readTimeUTC`, here RFC 3339). Output: the
//! operation `delete` stops the schedule, as Dapr's cron binding did.
//!
//! A slot never fires twice: a started schedule fires only at slots strictly after the moment
//! reading started (so a sidecar restarted within a slot does not repeat it), a late wake-up
//! fires once and skips the slots it missed, and a failed delivery is logged, not retried.
//! There is no backing server; it is tested against the system clock.

mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use mecha_core::bindings::{
    BindingComponent, BindingError, BindingEvent, EventHandler, InputBinding, InvokeRequest,
    InvokeResponse, OutputBinding,
};
use mecha_core::component::{ComponentError, ComponentInit};
use tokio::task::JoinHandle;

use self::schedule::Schedule;

/// Metadata key of the schedule (required).
const SCHEDULE: &str = "schedule";
/// The metadata keys this component reads (`direction` and `route` belong to the runtime).
const KNOWN_KEYS: &[&str] = &[SCHEDULE, "direction", "route"];
/// The one output operation: stop the schedule.
const DELETE: &str = "delete";
const OPERATIONS: &[&str] = &[DELETE];

/// The `bindings.cron` component.
///
/// # Metadata
///
/// - `schedule` (required): a cron expression with optional seconds (`*/2 * * * * *`,
///   `0 30 * * * *`, `*/5 * * * *`), a descriptor (`@yearly`, `@annually`, `@monthly`,
///   `@weekly`, `@daily`, `@midnight`, `@hourly`) or `@every <Go duration>` (`@every 1h30m`;
///   whole seconds, slots aligned on the Unix epoch).
pub struct CronBinding {
    name: String,
    spec: String,
    schedule: Arc<Schedule>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    closed: bool,
    tasks: Vec<JoinHandle<()>>,
}

// === impl CronBinding ===

impl CronBinding {
    /// Creates the component, refusing a missing or malformed `schedule`.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        init.metadata.warn_unknown(&init.name, KNOWN_KEYS);
        let spec = init.metadata.required(SCHEDULE)?.trim().to_owned();
        let schedule = Schedule::parse(&spec).map_err(|reason| ComponentError::InvalidField {
            field: SCHEDULE,
            reason: format!("invalid schedule '{spec}': {reason}"),
        })?;
        let binding = Arc::new(Self {
            name: init.name,
            spec,
            schedule: Arc::new(schedule),
            state: Mutex::new(State::default()),
        });
        Ok(Arc::new(BindingComponent {
            input: Some(binding.clone()),
            output: Some(binding),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every schedule started by [`InputBinding::read`]; later reads are refused.
    fn stop(&self) {
        let tasks = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.tasks)
        };
        for task in tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl InputBinding for CronBinding {
    async fn read(&self, handler: EventHandler) -> Result<(), BindingError> {
        let mut state = self.state();
        if state.closed {
            return Err(BindingError::Backend(format!(
                "cron binding '{}' is stopped",
                self.name
            )));
        }
        let start = Utc::now();
        tracing::debug!(binding = %self.name, schedule = %self.spec, "Starting cron schedule");
        state.tasks.push(tokio::spawn(run(
            self.name.clone(),
            self.schedule.clone(),
            handler,
            start,
        )));
        Ok(())
    }

    async fn close(&self) {
        self.stop();
    }
}

#[async_trait]
impl OutputBinding for CronBinding {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        if req.operation != DELETE {
            return Err(BindingError::unsupported(&req.operation, OPERATIONS));
        }
        self.stop();
        tracing::info!(binding = %self.name, schedule = %self.spec, "Cron schedule stopped");
        let metadata = HashMap::from([
            ("schedule".to_owned(), self.spec.clone()),
            ("stopTimeUTC".to_owned(), rfc3339(Utc::now())),
        ]);
        Ok(InvokeResponse {
            data: None,
            metadata,
            content_type: None,
        })
    }

    async fn close(&self) {
        self.stop();
    }
}

/// Fires `handler` at each slot strictly after `start`, until aborted.
async fn run(name: String, schedule: Arc<Schedule>, handler: EventHandler, start: DateTime<Utc>) {
    let mut after = start;
    loop {
        let Some(slot) = schedule.next_after(after) else {
            tracing::warn!(binding = %name, "Cron schedule has no further slot; stopping");
            return;
        };
        sleep_until(slot).await;
        let now = Utc::now();
        let delivery = handler(BindingEvent {
            data: Bytes::new(),
            metadata: HashMap::from([
                ("timeZone".to_owned(), "UTC".to_owned()),
                ("readTimeUTC".to_owned(), rfc3339(now)),
            ]),
        });
        // Delivered on its own task so a slow app does not delay the next slot.
        let binding = name.clone();
        tokio::spawn(async move {
            if let Err(error) = delivery.await {
                tracing::warn!(binding = %binding, %error, "Cron event not delivered; not retried");
            }
        });
        // After a late wake-up, the missed slots are skipped rather than fired in a burst.
        after = slot.max(now);
    }
}

/// Sleeps until the wall clock reads `slot` or later.
async fn sleep_until(slot: DateTime<Utc>) {
    loop {
        let Ok(left) = (slot - Utc::now()).to_std() else {
            return;
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left).await;
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
