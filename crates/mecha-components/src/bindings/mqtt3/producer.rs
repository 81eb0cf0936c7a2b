//! The output side's connection (`<consumerID>-producer`): publishes and waits for the broker's
//! acknowledgement.
//!
//! Each connection gets a fresh rumqttc client and event loop, so a publish belongs to exactly
//! one connection: when it drops, the publishes waiting on it fail at once instead of being
//! retransmitted later behind the caller's back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mecha_core::bindings::BindingError;
use rumqttc::{AsyncClient, Event, Outgoing, Packet};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::MqttMetadata;
use super::connection::{DEFAULT_WAIT, RECONNECT_WAIT, REQUEST_CAPACITY};

/// How long a publish waits for a connection before failing.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// A producer connection kept open (and reopened) in the background.
pub(super) struct Producer {
    meta: Arc<MqttMetadata>,
    current: watch::Receiver<Option<Arc<Session>>>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// One live connection.
struct Session {
    client: AsyncClient,
    waiters: Mutex<Waiters>,
}

/// Publishes waiting for the broker: first queued in request order, then by packet id.
#[derive(Default)]
struct Waiters {
    dead: bool,
    queued: VecDeque<oneshot::Sender<()>>,
    inflight: HashMap<u16, oneshot::Sender<()>>,
}

// === impl Producer ===

impl Producer {
    /// Starts connecting in the background.
    pub(super) fn start(meta: Arc<MqttMetadata>) -> Self {
        let (tx, current) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(meta.clone(), tx, last_error.clone()));
        Self {
            meta,
            current,
            last_error,
            task,
        }
    }

    /// Publishes `data` to `topic` and waits for the broker's acknowledgement.
    pub(super) async fn publish(
        &self,
        topic: String,
        retain: bool,
        data: Bytes,
    ) -> Result<(), BindingError> {
        let session = self.session().await?;
        let acked = {
            let mut w = session.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if w.dead {
                return Err(self.lost());
            }
            session
                .client
                .try_publish(topic, self.meta.qos, retain, data.to_vec())
                .map_err(|e| BindingError::Backend(format!("MQTT publish failed: {e}")))?;
            let (tx, rx) = oneshot::channel();
            w.queued.push_back(tx);
            rx
        };
        match tokio::time::timeout(DEFAULT_WAIT, acked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => Err(BindingError::Backend(format!(
                "MQTT broker {} did not acknowledge the message within {} s",
                self.meta.url.display(),
                DEFAULT_WAIT.as_secs()
            ))),
        }
    }

    /// Stops the connection.
    pub(super) fn close(&self) {
        self.task.abort();
    }

    /// The live connection, waiting a little for one.
    async fn session(&self) -> Result<Arc<Session>, BindingError> {
        let mut rx = self.current.clone();
        match tokio::time::timeout(CONNECT_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => s.clone().ok_or_else(|| self.lost()),
            _ => Err(self.lost()),
        }
    }

    /// The error for a publish without a working connection.
    fn lost(&self) -> BindingError {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        BindingError::Backend(match last {
            Some(e) => format!(
                "MQTT broker {} is not reachable: {e}",
                self.meta.url.display()
            ),
            None => format!(
                "MQTT connection to {} was lost before the message was acknowledged",
                self.meta.url.display()
            ),
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Session ===

impl Session {
    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A publish left with `pkid` (0 for QoS 0, which is then done).
    fn on_sent(&self, pkid: u16) {
        let mut w = self.waiters();
        if pkid != 0 && w.inflight.contains_key(&pkid) {
            return; // a retransmission
        }
        if let Some(tx) = w.queued.pop_front() {
            if pkid == 0 {
                let _ = tx.send(());
            } else {
                w.inflight.insert(pkid, tx);
            }
        }
    }

    /// The broker acknowledged `pkid`.
    fn on_acked(&self, pkid: u16) {
        if let Some(tx) = self.waiters().inflight.remove(&pkid) {
            let _ = tx.send(());
        }
    }

    /// The connection is gone: every waiting publish fails.
    fn fail(&self) {
        let mut w = self.waiters();
        w.dead = true;
        w.queued.clear();
        w.inflight.clear();
    }
}

/// Connects, drives the event loop, and reconnects after a pause when the connection fails.
async fn run(
    meta: Arc<MqttMetadata>,
    current: watch::Sender<Option<Arc<Session>>>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    let client_id = format!("{}-producer", meta.consumer_id);
    loop {
        let options = meta.url.mqtt_options(&client_id, meta.clean_session);
        let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let session = Arc::new(Session {
            client,
            waiters: Mutex::new(Waiters::default()),
        });
        let error = loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::debug!(broker = meta.url.display(), "MQTT producer connected");
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    current.send_replace(Some(session.clone()));
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => session.on_sent(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => session.on_acked(ack.pkid),
                Ok(Event::Incoming(Packet::PubComp(ack))) => session.on_acked(ack.pkid),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
        };
        current.send_replace(None);
        session.fail();
        drop(events);
        tracing::warn!(broker = meta.url.display(), error = %error, "MQTT producer connection failed; reconnecting");
        *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}
