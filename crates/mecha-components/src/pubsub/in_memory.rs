//! `pubsub.in-memory`: a broker inside the sidecar process. Messages live in memory only and
//! are lost when the process stops; use it for tests and demos.
//!
//! Components of this type with the same name in one process share one bus (so that two
//! subscribers of one group can be tested in one process). Each consumer group of a topic has
//! its own queue; a message whose handler fails goes back to the front of the queue after the
//! redelivery delay (metadata `redeliverInterval`, a Go duration, default `1s`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::duration::parse_go_duration;
use mecha_core::pubsub::{
    Message, MessageHandler, PubSub, PubSubError, PubSubFeature, PublishRequest, SubscribeRequest,
    Subscription, consumer_group, expires_at, is_expired,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

const DEFAULT_REDELIVER: Duration = Duration::from_secs(1);

/// The in-memory broker.
pub struct InMemoryPubSub {
    bus: Arc<Bus>,
    group: String,
    redeliver: Duration,
}

/// The topics of one component name.
#[derive(Default)]
struct Bus {
    topics: Mutex<HashMap<String, HashMap<String, Arc<Queue>>>>,
}

/// The queue of one consumer group on one topic.
#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<Stored>>,
    ready: Notify,
}

#[derive(Clone)]
struct Stored {
    topic: String,
    data: Bytes,
    content_type: Option<String>,
    metadata: HashMap<String, String>,
    expires_at: Option<u64>,
}

fn buses() -> &'static Mutex<HashMap<String, Weak<Bus>>> {
    static BUSES: OnceLock<Mutex<HashMap<String, Weak<Bus>>>> = OnceLock::new();
    BUSES.get_or_init(Default::default)
}

// === impl InMemoryPubSub ===

impl InMemoryPubSub {
    /// Creates the broker (sharing the bus of any live component with the same name).
    pub async fn create(init: ComponentInit) -> Result<Arc<dyn PubSub>, ComponentError> {
        let redeliver = match init.metadata.get("redeliverInterval") {
            Some(v) if !v.trim().is_empty() => {
                parse_go_duration(v).map_err(|reason| ComponentError::InvalidField {
                    field: "redeliverInterval",
                    reason: reason.to_string(),
                })?
            }
            _ => DEFAULT_REDELIVER,
        };
        let bus = {
            let mut all = buses().lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|_, b| b.strong_count() > 0);
            match all.get(&init.name).and_then(Weak::upgrade) {
                Some(bus) => bus,
                None => {
                    let bus = Arc::new(Bus::default());
                    all.insert(init.name.clone(), Arc::downgrade(&bus));
                    bus
                }
            }
        };
        Ok(Arc::new(Self {
            bus,
            group: consumer_group(&init.metadata, &init.app_id),
            redeliver,
        }))
    }
}

#[async_trait]
impl PubSub for InMemoryPubSub {
    fn features(&self) -> &[PubSubFeature] {
        &[
            PubSubFeature::MessageMetadata,
            PubSubFeature::Ordered,
            PubSubFeature::Ttl,
        ]
    }

    async fn publish(&self, req: PublishRequest) -> Result<(), PubSubError> {
        if req.topic.is_empty() {
            return Err(PubSubError::BadRequest("the topic name is empty".into()));
        }
        let queues: Vec<Arc<Queue>> = {
            let topics = self.bus.topics.lock().unwrap_or_else(|e| e.into_inner());
            match topics.get(&req.topic) {
                Some(groups) => groups.values().cloned().collect(),
                None => return Ok(()),
            }
        };
        let stored = Stored {
            expires_at: expires_at(&req.metadata),
            topic: req.topic,
            data: req.data,
            content_type: req.content_type,
            metadata: req.metadata,
        };
        for q in queues {
            q.items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(stored.clone());
            q.ready.notify_one();
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        req: SubscribeRequest,
        handler: MessageHandler,
    ) -> Result<Subscription, PubSubError> {
        if req.topic.is_empty() {
            return Err(PubSubError::BadRequest("the topic name is empty".into()));
        }
        let queue = {
            let mut topics = self.bus.topics.lock().unwrap_or_else(|e| e.into_inner());
            topics
                .entry(req.topic.clone())
                .or_default()
                .entry(self.group.clone())
                .or_default()
                .clone()
        };
        let (sub, mut stop) = Subscription::new();
        let permits = Arc::new(Semaphore::new(req.max_in_flight.max(1)));
        let redeliver = self.redeliver;
        let task = tokio::spawn(async move {
            let mut in_flight = JoinSet::new();
            loop {
                let permit = tokio::select! {
                    _ = stop.stopped() => break,
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                let next = loop {
                    // Register interest before looking, so that a push in between wakes us.
                    let notified = queue.ready.notified();
                    let popped = queue
                        .items
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    match popped {
                        Some(m) if is_expired(m.expires_at) => continue,
                        Some(m) => break Some(m),
                        None => {}
                    }
                    tokio::select! {
                        _ = stop.stopped() => break None,
                        _ = notified => {}
                    }
                };
                let Some(stored) = next else { break };
                // Another subscriber of the group may be waiting too.
                if !queue
                    .items
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    queue.ready.notify_one();
                }
                let (handler, queue) = (handler.clone(), queue.clone());
                in_flight.spawn(async move {
                    let msg = Message {
                        topic: stored.topic.clone(),
                        data: stored.data.clone(),
                        content_type: stored.content_type.clone(),
                        metadata: stored.metadata.clone(),
                    };
                    let result = handler(msg).await;
                    drop(permit);
                    if let Err(e) = result {
                        tracing::debug!(topic = %stored.topic, error = %e, "Message not processed; redelivering later");
                        tokio::time::sleep(redeliver).await;
                        queue
                            .items
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_front(stored);
                        queue.ready.notify_one();
                    }
                });
                while in_flight.try_join_next().is_some() {}
            }
            while in_flight.join_next().await.is_some() {}
        });
        Ok(sub.with_task(task))
    }
}
