//! The publishing connection: publishes and waits for the broker's acknowledgement (PUBACK for
//! QoS 1, PUBCOMP for QoS 2; QoS 0 is done once sent).
//!
//! Each connection gets a fresh rumqttc client and event loop, so a publish belongs to exactly
//! one connection: when it drops, the publishes waiting on it fail at once instead of being
//! retransmitted later behind the caller's back. A publish waits a few seconds for a connection
//! and fails when there is none, naming the last connection error.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{BrokerOptions, DEFAULT_WAIT, RECONNECT_WAIT, REQUEST_CAPACITY};

/// How long a publish waits for a connection before failing.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// How often [`Publisher::wait_connected`] looks at the connection state.
const CONNECTED_POLL: Duration = Duration::from_millis(20);

/// A failed publish (or connection), as a readable message; components turn it into their
/// backend error.
#[derive(Debug)]
pub(crate) struct PublishError(String);

/// A publishing connection kept open (and reopened) in the background.
pub(crate) struct Publisher {
    broker: String,
    qos: QoS,
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

// === impl PublishError ===

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PublishError {}

// === impl Publisher ===

impl Publisher {
    /// Starts connecting to `broker` in the background as `client_id`; publishes use `qos`.
    pub(crate) fn start(
        broker: &BrokerOptions,
        client_id: String,
        clean_session: bool,
        qos: QoS,
    ) -> Self {
        let (tx, current) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(
            broker.clone(),
            client_id,
            clean_session,
            tx,
            last_error.clone(),
        ));
        Self {
            broker: broker.display().to_owned(),
            qos,
            current,
            last_error,
            task,
        }
    }

    /// Waits up to `within` for the first connection; fails at the first refused attempt
    /// rather than after the whole wait.
    #[cfg_attr(not(feature = "pubsub-mqtt3"), allow(dead_code))]
    pub(crate) async fn wait_connected(&self, within: Duration) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.current.borrow().is_some() {
                return Ok(());
            }
            if self.last_error().is_some() || tokio::time::Instant::now() >= deadline {
                return Err(self.lost());
            }
            tokio::time::sleep(CONNECTED_POLL).await;
        }
    }

    /// Publishes `data` to `topic` and waits for the broker's acknowledgement.
    pub(crate) async fn publish(
        &self,
        topic: String,
        retain: bool,
        data: Bytes,
    ) -> Result<(), PublishError> {
        let session = self.session().await?;
        let acked = {
            let mut w = session.waiters();
            if w.dead {
                return Err(self.lost());
            }
            session
                .client
                .try_publish(topic, self.qos, retain, data.to_vec())
                .map_err(|e| PublishError(format!("MQTT publish failed: {e}")))?;
            let (tx, rx) = oneshot::channel();
            w.queued.push_back(tx);
            rx
        };
        match tokio::time::timeout(DEFAULT_WAIT, acked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => Err(PublishError(format!(
                "MQTT broker {} did not acknowledge the message within {} s",
                self.broker,
                DEFAULT_WAIT.as_secs()
            ))),
        }
    }

    /// Stops the connection.
    pub(crate) fn close(&self) {
        self.task.abort();
    }

    /// The live connection, waiting a little for one.
    async fn session(&self) -> Result<Arc<Session>, PublishError> {
        let mut rx = self.current.clone();
        match tokio::time::timeout(CONNECT_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => s.clone().ok_or_else(|| self.lost()),
            _ => Err(self.lost()),
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The error for a publish without a working connection.
    fn lost(&self) -> PublishError {
        PublishError(match self.last_error() {
            Some(e) => format!("MQTT broker {} is not reachable: {e}", self.broker),
            None => format!(
                "MQTT connection to {} was lost before the message was acknowledged",
                self.broker
            ),
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Session ===

impl Session {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
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
    broker: BrokerOptions,
    client_id: String,
    clean_session: bool,
    current: watch::Sender<Option<Arc<Session>>>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    let mut connected_once = false;
    loop {
        let options = broker.mqtt_options(&client_id, clean_session);
        let (client, mut events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let session = Arc::new(Session {
            client,
            waiters: Mutex::new(Waiters::default()),
        });
        let mut was_connected = false;
        let error = loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if connected_once {
                        tracing::info!(
                            broker = broker.display(),
                            client_id,
                            "MQTT publisher reconnected"
                        );
                    } else {
                        tracing::debug!(
                            broker = broker.display(),
                            client_id,
                            "MQTT publisher connected"
                        );
                    }
                    connected_once = true;
                    was_connected = true;
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
        if was_connected {
            tracing::warn!(broker = broker.display(), client_id, error = %error, "MQTT publisher connection lost; reconnecting");
        } else {
            tracing::debug!(broker = broker.display(), client_id, error = %error, "MQTT publisher cannot connect; retrying");
        }
        *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}
