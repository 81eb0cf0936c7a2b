//! Mecha's conformance suites: one generic suite per building block, written from Dapr's
//! semantics in MUST terms and run by every component against its real server.
//!
//! Owns [`state`], [`lock`], [`configuration`] and [`pubsub`], the suites for the traits of the same
//! names in `mecha-core`. It depends only on
//! `mecha-core` (and never on `mecha-components` or `mecha-runtime`), so that each component's
//! test file can run it. Start reading at [`state::run`].
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use mecha_core::state::StateStore;
//! # async fn open() -> Arc<dyn StateStore> { unimplemented!() }
//! # async fn example() {
//! // Every check, each on a store from the factory; panics naming the first failing check.
//! mecha_conformance::state::run(|| open()).await;
//! # }
//! ```

pub mod configuration;
pub mod lock;
pub mod pubsub;
pub mod state;
