//! The pub/sub conformance suite on `pubsub.in-memory`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mecha_components::pubsub::in_memory::InMemoryPubSub;
use mecha_core::Metadata;
use mecha_core::component::ComponentInit;
use mecha_core::pubsub::PubSub;

async fn broker(name: &str, app_id: String) -> Arc<dyn PubSub> {
    let md = HashMap::from([("redeliverInterval".to_owned(), "200ms".to_owned())]);
    InMemoryPubSub::create(ComponentInit {
        name: name.to_owned(),
        metadata: Metadata::new(md),
        app_id,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_conformance_on_in_memory() {
    // One component name for every broker, so that they share one bus.
    let name = format!("pubsub-{}", uuid::Uuid::new_v4().simple());
    let options = mecha_conformance::pubsub::Options::new(Duration::from_millis(200));
    mecha_conformance::pubsub::run(options, |app_id| broker(&name, app_id)).await;
}
