//! MQTT 3.1.1 code shared by `bindings.mqtt3` and `pubsub.mqtt3` (rumqttc, rustls with ring).
//!
//! - [`ConnectionSettings`]: the connection metadata both components honour, under Dapr's
//!   names: `url` (`tcp://` / `mqtt://`, or `ssl://` / `mqtts://` / `tcps://` / `tls://` with
//!   `caCert` and optionally `clientCert` + `clientKey`), `qos` (0, 1 or 2; default 1),
//!   `retain` (default false) and `cleanSession` (default false).
//! - [`Publisher`]: one publishing connection, reopened by itself after an outage; a publish
//!   returns once the broker acknowledged it and fails with a readable error, within a few
//!   seconds, when there is no working connection or no acknowledgement in time.
//!
//! - [`SubscriberConnection`]: a subscriber connection whose messages are acknowledged only
//!   while it is alive.
//!
//! Every connection uses manual acknowledgements, so a subscriber acknowledges a message only
//! once it was handled. What each component does with a connection (client ids, topics,
//! redelivery) stays with the component.

mod options;
mod publisher;
mod subscriber;

use std::time::Duration;

pub(crate) use self::options::{BrokerOptions, CONNECTION_KEYS, ConnectionSettings};
pub(crate) use self::publisher::{PublishError, Publisher};
pub(crate) use self::subscriber::{SubscriberConnection, refused};

/// The pause between reconnection attempts.
pub(crate) const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// The bound on connecting, subscribing and publishing, as Dapr's `defaultWait`.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// Capacity of the request channel of each connection.
const REQUEST_CAPACITY: usize = 256;
