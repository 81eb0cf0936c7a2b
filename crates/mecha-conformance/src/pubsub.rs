//! The pub/sub suite: what every [`PubSub`] broker MUST do (see the contract in
//! `mecha_core::pubsub`). Not written yet.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mecha_core::pubsub::PubSub;

/// How the suite treats one broker.
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest a message whose handler failed may take to be delivered again, as the
    /// broker under test is configured.
    pub redelivery_timeout: Duration,
}

/// Runs every check on brokers from `factory`, which builds a broker for the given app id
/// (its consumer group); panics naming the first failing check.
pub async fn run<F, Fut>(options: Options, factory: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<dyn PubSub>>,
{
    let _ = (options, factory);
}
