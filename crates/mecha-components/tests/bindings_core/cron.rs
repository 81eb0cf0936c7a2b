//! `bindings.cron`: timing measured by counting events of one-second schedules.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use mecha_components::bindings::cron::CronBinding;
use mecha_core::bindings::{BindingError, BindingEvent, DeliveryFuture, EventHandler};
use mecha_core::component::ComponentError;

use crate::{created, init, request};

type Events = Arc<Mutex<Vec<BindingEvent>>>;

/// A handler recording every event; it fails the deliveries when `fail` is set.
fn recorder(fail: bool) -> (EventHandler, Events) {
    let events: Events = Arc::default();
    let seen = events.clone();
    let handler: EventHandler = Arc::new(move |e: BindingEvent| -> DeliveryFuture {
        seen.lock().unwrap().push(e);
        Box::pin(async move {
            if fail {
                Err("app refused".to_owned())
            } else {
                Ok(())
            }
        })
    });
    (handler, events)
}

fn read_time(e: &BindingEvent) -> DateTime<Utc> {
    let t = e.metadata.get("readTimeUTC").expect("readTimeUTC");
    DateTime::parse_from_rfc3339(t)
        .unwrap_or_else(|err| panic!("readTimeUTC '{t}' is not RFC 3339: {err}"))
        .with_timezone(&Utc)
}

/// The whole-second slots the events were read in.
fn slots(events: &[BindingEvent]) -> Vec<i64> {
    events.iter().map(|e| read_time(e).timestamp()).collect()
}

fn assert_one_per_slot(events: &[BindingEvent]) {
    let s = slots(events);
    let unique: HashSet<_> = s.iter().collect();
    assert_eq!(unique.len(), s.len(), "a slot fired twice: {s:?}");
}

async fn count_for(schedule: &str, window: Duration) -> Vec<BindingEvent> {
    let c = created(CronBinding::create(init("tick", &[("schedule", schedule)])).await);
    let (handler, events) = recorder(false);
    c.input.as_ref().unwrap().read(handler).await.unwrap();
    tokio::time::sleep(window).await;
    c.input.as_ref().unwrap().close().await;
    events.lock().unwrap().clone()
}

#[tokio::test]
async fn every_second_fires_once_per_slot_with_dapr_metadata() {
    let events = count_for("@every 1s", Duration::from_millis(3_500)).await;
    assert!(
        (3..=4).contains(&events.len()),
        "{} events: {:?}",
        events.len(),
        slots(&events)
    );
    assert_one_per_slot(&events);
    for e in &events {
        assert!(e.data.is_empty());
        assert_eq!(e.metadata.get("timeZone").map(String::as_str), Some("UTC"));
        // Fired at (just after) a whole second.
        let t = read_time(e);
        assert!(t.nanosecond() < 500_000_000, "fired late: {t}");
    }
}

#[tokio::test]
async fn six_field_expression_fires_every_second() {
    let events = count_for("*/1 * * * * *", Duration::from_millis(3_500)).await;
    assert!((3..=4).contains(&events.len()), "{} events", events.len());
    assert_one_per_slot(&events);
}

#[tokio::test]
async fn every_two_seconds_fires_on_even_seconds() {
    let events = count_for("*/2 * * * * *", Duration::from_millis(4_500)).await;
    assert!((2..=3).contains(&events.len()), "{} events", events.len());
    for s in slots(&events) {
        assert_eq!(s % 2, 0, "fired at odd second {s}");
    }
}

#[tokio::test]
async fn restart_within_a_slot_does_not_repeat_it() {
    let (handler, events) = recorder(false);
    let first = created(CronBinding::create(init("tick", &[("schedule", "@every 1s")])).await);
    first
        .input
        .as_ref()
        .unwrap()
        .read(handler.clone())
        .await
        .unwrap();
    // Stop right after a slot fired, then start a new instance within the same second.
    tokio::time::timeout(Duration::from_secs(3), async {
        while events.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no event within 3s");
    first.input.as_ref().unwrap().close().await;
    let second = created(CronBinding::create(init("tick", &[("schedule", "@every 1s")])).await);
    second.input.as_ref().unwrap().read(handler).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    second.input.as_ref().unwrap().close().await;
    let events = events.lock().unwrap().clone();
    assert_one_per_slot(&events);
    assert!(events.len() >= 3, "{:?}", slots(&events));
}

#[tokio::test]
async fn failed_deliveries_are_not_retried() {
    let c = created(CronBinding::create(init("tick", &[("schedule", "@every 1s")])).await);
    let (handler, events) = recorder(true);
    c.input.as_ref().unwrap().read(handler).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    c.input.as_ref().unwrap().close().await;
    let events = events.lock().unwrap().clone();
    assert!((2..=3).contains(&events.len()), "{:?}", slots(&events));
    assert_one_per_slot(&events);
}

#[tokio::test]
async fn close_stops_firing() {
    let c = created(CronBinding::create(init("tick", &[("schedule", "@every 1s")])).await);
    let (handler, events) = recorder(false);
    c.input
        .as_ref()
        .unwrap()
        .read(handler.clone())
        .await
        .unwrap();
    c.input.as_ref().unwrap().close().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(events.lock().unwrap().is_empty());
    assert!(c.input.as_ref().unwrap().read(handler).await.is_err());
}

#[tokio::test]
async fn delete_operation_stops_the_schedule() {
    let c = created(CronBinding::create(init("tick", &[("schedule", "@every 1s")])).await);
    let (handler, events) = recorder(false);
    c.input.as_ref().unwrap().read(handler).await.unwrap();
    let out = c.output.as_ref().unwrap();
    assert_eq!(out.operations(), ["delete"]);
    let resp = out.invoke(request("delete", b"", &[])).await.unwrap();
    assert_eq!(
        resp.metadata.get("schedule").map(String::as_str),
        Some("@every 1s")
    );
    assert!(resp.metadata.contains_key("stopTimeUTC"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(events.lock().unwrap().is_empty());

    let err = out.invoke(request("create", b"", &[])).await.unwrap_err();
    assert!(
        matches!(err, BindingError::UnsupportedOperation { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_at_creation() {
    let Err(ComponentError::MissingField("schedule")) = CronBinding::create(init("t", &[])).await
    else {
        panic!("a missing schedule must be refused");
    };
    for bad in ["* * *", "@every nope", "@reboot", "99 * * * * *"] {
        let Err(err) = CronBinding::create(init("t", &[("schedule", bad)])).await else {
            panic!("'{bad}' must be refused");
        };
        assert!(err.to_string().contains("schedule"), "{err}");
    }
    for good in [
        "@every 1h30m",
        "@daily",
        "0 30 * * * *",
        "*/5 * * * *",
        "@every 2s",
    ] {
        created(CronBinding::create(init("t", &[("schedule", good)])).await);
    }
}
