//! Resiliency policies (`kind: Resiliency`): timeouts, retries and circuit breakers applied to
//! calls to apps and components, as Dapr defines them.
//!
//! # Format
//!
//! `spec.policies` names the policies:
//! - `timeouts.<name>`: a Go duration (a bare number is milliseconds); `0` means none.
//! - `retries.<name>`: `policy` `constant` (default) or `exponential`; `duration` (constant
//!   wait, default 5s); `initialInterval` (500ms), `maxInterval` (60s), `multiplier` (1.5) and
//!   `randomizationFactor` (0.5) for exponential; `maxRetries` (default -1 = unlimited, 0 =
//!   none); `matching.httpStatusCodes` / `matching.gRPCStatusCodes` (`"429,500-599"`): the
//!   codes that are retried (without them every failure is). `maxElapsedTime` is checked and
//!   ignored.
//! - `circuitBreakers.<name>`: `maxRequests` (1), `interval` (0s: counts are never cleared
//!   while closed), `timeout` (60s open before half-open), `trip` (a CEL expression over
//!   `requests`, `totalSuccesses`, `totalFailures`, `consecutiveSuccesses`,
//!   `consecutiveFailures`; default `consecutiveFailures > 5`).
//!
//! `spec.targets` applies them: `apps.<appId>` (outbound service invocation), `components.
//! <name>.outbound` (calls to the component: state, publish, output bindings) and `.inbound`
//! (deliveries to the app: subscriptions, input bindings), `actors.<type>` (read and checked;
//! `circuitBreakerScope` is required with a breaker, only the `type` scope is applied).
//! Each entry names `timeout`, `retry` and `circuitBreaker` (`circuitBreakerCacheSize` is
//! ignored). A target without an entry gets the default policies, found as Dapr finds them:
//! for a state store's outbound retry `DefaultStatestoreComponentOutboundRetryPolicy`, then
//! `DefaultComponentOutboundRetryPolicy`, `DefaultComponentRetryPolicy`, `DefaultRetryPolicy`
//! (likewise `…TimeoutPolicy`, `…CircuitBreakerPolicy`; apps use `DefaultApp…`, actors
//! `DefaultActor…`). A target with an entry uses only what the entry names, as in Dapr.
//! Several resources merge; a later policy of the same name replaces an earlier one. A
//! missing policy name, a bad duration, number, code list or CEL expression fails start-up
//! with an error naming the resource and field.
//!
//! # Running a call
//!
//! [`Resiliency::app`], [`Resiliency::component_outbound`] and friends return a [`Policy`]
//! (cached per target; the no-op policy costs no allocation). [`Policy::run`] calls the
//! operation once per attempt, each attempt under the timeout, inside the target's circuit
//! breaker, retrying [`Attempt::Retryable`] outcomes and timeouts with the policy's back-off
//! until the retries are used up. An open breaker fails at once with
//! [`PolicyError::CircuitOpen`] without calling the operation (also between retries).
//! Every failed attempt (retryable, fatal or timed out) counts as a breaker failure; to keep
//! an error out of the breaker, return it inside `Attempt::Ok`. Exponential waits grow by
//! `multiplier` from `initialInterval`, each randomised by ± `randomizationFactor` and capped
//! at `maxInterval`.
//!
//! Breakers are shared per target (one per app, per component and direction, per actor
//! type); Dapr keeps one per app endpoint and shares a component's between directions.
//! The `DaprBuiltIn…Retries` policy names are read like any other but not applied.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use mecha_core::resource::RawResource;

mod breaker;
mod retry;
mod spec;

use breaker::{Breaker, Rejected};
use retry::{Backoff, RetrySpec};
use spec::{Names, Spec};

/// The kind of component a policy is for; it selects the `Default<Kind>Component…` policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    /// `state.*`.
    Statestore,
    /// `pubsub.*`.
    Pubsub,
    /// `bindings.*`.
    Binding,
    /// `secretstores.*`.
    Secretstore,
    /// `configuration.*`.
    Configuration,
    /// `lock.*`.
    Lock,
    /// `crypto.*`.
    Crypto,
}

impl ComponentKind {
    const ALL: [Self; 7] = [
        Self::Statestore,
        Self::Pubsub,
        Self::Binding,
        Self::Secretstore,
        Self::Configuration,
        Self::Lock,
        Self::Crypto,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Statestore => "Statestore",
            Self::Pubsub => "Pubsub",
            Self::Binding => "Binding",
            Self::Secretstore => "Secretstore",
            Self::Configuration => "Configuration",
            Self::Lock => "Lock",
            Self::Crypto => "Crypto",
        }
    }
}

/// Which way a component call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the sidecar to the component (state, publish, output binding).
    Outbound,
    /// From the component to the app (subscription delivery, input binding).
    Inbound,
}

/// All loaded policies, with the per-target breakers. Cheap to clone (shared).
#[derive(Clone)]
pub struct Resiliency {
    inner: Arc<Inner>,
}

struct Inner {
    /// No policy of any kind: every target gets the no-op policy without a lookup.
    empty: bool,
    spec: Spec,
    /// Resolved policies per target class (see [`Class`]), by target name.
    cache: Vec<RwLock<HashMap<String, Policy>>>,
    /// Breakers by target key (`app/<id>`, `out/<name>`, `in/<name>`, `actor/<type>`).
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
}

/// A cache slot: apps, actors, and components by direction and (optional) kind.
#[derive(Clone, Copy)]
enum Class {
    App,
    Actor,
    Component(Direction, Option<ComponentKind>),
}

const CLASSES: usize = 2 + 2 * (ComponentKind::ALL.len() + 1);

impl Class {
    fn index(self) -> usize {
        match self {
            Self::App => 0,
            Self::Actor => 1,
            Self::Component(dir, kind) => {
                let k = kind.map_or(0, |k| 1 + k as usize);
                let d = match dir {
                    Direction::Outbound => 0,
                    Direction::Inbound => 1,
                };
                2 + d * (ComponentKind::ALL.len() + 1) + k
            }
        }
    }
}

impl fmt::Debug for Resiliency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.spec;
        f.debug_struct("Resiliency")
            .field("timeouts", &s.timeouts.len())
            .field("retries", &s.retries.len())
            .field("circuit_breakers", &s.breakers.len())
            .field("apps", &s.apps.len())
            .field("components", &s.components.len())
            .field("actors", &s.actors.len())
            .finish()
    }
}

impl Default for Resiliency {
    fn default() -> Self {
        Self::none()
    }
}

// === impl Resiliency ===

impl Resiliency {
    /// Reads the `kind: Resiliency` resources that apply to this app.
    pub fn from_resources(resources: &[RawResource]) -> Result<Self, String> {
        let spec = Spec::read(resources)?;
        for r in resources {
            tracing::info!(resiliency = %r.name, "Loaded resiliency policies");
        }
        Ok(Self::with_spec(spec))
    }

    /// No policies: every call runs once, as it is.
    pub fn none() -> Self {
        Self::with_spec(Spec::default())
    }

    fn with_spec(spec: Spec) -> Self {
        let empty = spec.timeouts.is_empty() && spec.retries.is_empty() && spec.breakers.is_empty();
        Self {
            inner: Arc::new(Inner {
                empty,
                spec,
                cache: (0..CLASSES).map(|_| RwLock::default()).collect(),
                breakers: Mutex::default(),
            }),
        }
    }

    /// The policy for outbound calls to the app `app_id` (service invocation).
    pub fn app(&self, app_id: &str) -> Policy {
        self.policy(Class::App, app_id)
    }

    /// The policy for calls to the component `name` (of unknown kind).
    pub fn component_outbound(&self, name: &str) -> Policy {
        self.policy(Class::Component(Direction::Outbound, None), name)
    }

    /// The policy for deliveries from the component `name` (of unknown kind) to the app.
    pub fn component_inbound(&self, name: &str) -> Policy {
        self.policy(Class::Component(Direction::Inbound, None), name)
    }

    /// The policy for the component `name` of `kind` in `direction`: like
    /// [`component_outbound`](Self::component_outbound) /
    /// [`component_inbound`](Self::component_inbound), also honouring
    /// `Default<Kind>Component<Direction>…Policy` names.
    pub fn component(&self, kind: ComponentKind, name: &str, direction: Direction) -> Policy {
        self.policy(Class::Component(direction, Some(kind)), name)
    }

    /// The policy for calls to actors of `actor_type` (breaker scoped to the type).
    pub fn actor(&self, actor_type: &str) -> Policy {
        self.policy(Class::Actor, actor_type)
    }

    fn policy(&self, class: Class, name: &str) -> Policy {
        let inner = &*self.inner;
        if inner.empty {
            return Policy::default();
        }
        let Some(slot) = inner.cache.get(class.index()) else {
            return Policy::default();
        };
        if let Some(p) = slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return p.clone();
        }
        let policy = self.resolve(class, name);
        slot.write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert(policy)
            .clone()
    }

    fn resolve(&self, class: Class, name: &str) -> Policy {
        let spec = &self.inner.spec;
        let (explicit, key_prefix, levels): (Option<&Names>, &str, Vec<String>) = match class {
            Class::App => (spec.apps.get(name), "app", vec!["App".into()]),
            Class::Actor => (
                spec.actors.get(name).map(|a| &a.names),
                "actor",
                vec!["Actor".into()],
            ),
            Class::Component(dir, kind) => {
                let (d, prefix) = match dir {
                    Direction::Outbound => ("Outbound", "out"),
                    Direction::Inbound => ("Inbound", "in"),
                };
                let explicit = spec.components.get(name).map(|c| match dir {
                    Direction::Outbound => &c.outbound,
                    Direction::Inbound => &c.inbound,
                });
                let mut levels = Vec::with_capacity(3);
                if let Some(k) = kind {
                    levels.push(format!("{}Component{d}", k.label()));
                }
                levels.push(format!("Component{d}"));
                levels.push("Component".into());
                (explicit, prefix, levels)
            }
        };
        let defaults;
        let names = match explicit {
            Some(n) => n,
            None => {
                defaults = Names {
                    timeout: find_default(&levels, "Timeout", |n| spec.timeouts.contains_key(n)),
                    retry: find_default(&levels, "Retry", |n| spec.retries.contains_key(n)),
                    circuit_breaker: find_default(&levels, "CircuitBreaker", |n| {
                        spec.breakers.contains_key(n)
                    }),
                };
                &defaults
            }
        };
        let timeout = names
            .timeout
            .as_ref()
            .and_then(|n| spec.timeouts.get(n))
            .copied()
            .filter(|d| !d.is_zero());
        let retry = names
            .retry
            .as_ref()
            .and_then(|n| spec.retries.get(n))
            .filter(|r| r.max_retries != Some(0))
            .cloned();
        let target = format!("{key_prefix}/{name}");
        let breaker = names
            .circuit_breaker
            .as_ref()
            .and_then(|n| spec.breakers.get(n))
            .map(|b| {
                let mut all = self
                    .inner
                    .breakers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                all.entry(target.clone())
                    .or_insert_with(|| Arc::new(Breaker::new(target.clone(), b.clone())))
                    .clone()
            });
        if timeout.is_none() && retry.is_none() && breaker.is_none() {
            return Policy::default();
        }
        Policy {
            inner: Some(Arc::new(PolicyInner {
                target,
                timeout,
                retry,
                breaker,
            })),
        }
    }
}

/// The first `Default<level><what>Policy`, then `Default<what>Policy`, that exists.
fn find_default(levels: &[String], what: &str, exists: impl Fn(&str) -> bool) -> Option<String> {
    levels
        .iter()
        .map(|l| format!("Default{l}{what}Policy"))
        .chain(std::iter::once(format!("Default{what}Policy")))
        .find(|n| exists(n))
}

/// The policies for one target. Cheap to clone; clones share the target's breaker.
#[derive(Clone, Default)]
pub struct Policy {
    inner: Option<Arc<PolicyInner>>,
}

struct PolicyInner {
    target: String,
    timeout: Option<Duration>,
    retry: Option<Arc<RetrySpec>>,
    breaker: Option<Arc<Breaker>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Policy(none)"),
            Some(p) => f
                .debug_struct("Policy")
                .field("target", &p.target)
                .field("timeout", &p.timeout)
                .field("retry", &p.retry)
                .field("circuit_breaker", &p.breaker.is_some())
                .finish(),
        }
    }
}

/// How the caller classifies one attempt.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// Done: the result is returned (and counts as a success for the breaker).
    Ok(T),
    /// Failed in a way worth retrying (per the retry policy's budget).
    Retryable(E),
    /// Failed; retrying would not help. Returned at once.
    Fatal(E),
}

/// Why [`Policy::run`] failed.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyError<E> {
    /// The operation's own error (of the last attempt).
    Inner(E),
    /// The last attempt did not finish within the timeout.
    Timeout(Duration),
    /// The circuit breaker is open: the operation was not called.
    CircuitOpen,
}

impl<E: fmt::Display> fmt::Display for PolicyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inner(e) => e.fmt(f),
            Self::Timeout(d) => write!(f, "timed out after {d:?}"),
            Self::CircuitOpen => f.write_str("circuit breaker is open"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for PolicyError<E> {}

// === impl Policy ===

impl Policy {
    /// The per-attempt timeout, if any (invocation sends it to the callee as a deadline).
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|p| p.timeout)
    }

    /// Whether there is nothing to apply (no timeout, retry or breaker).
    pub fn is_noop(&self) -> bool {
        self.inner.is_none()
    }

    /// Whether a response with HTTP `status` is a retryable failure: never for 200-399 (Dapr
    /// treats those as successes), otherwise per `matching.httpStatusCodes` (without it, or
    /// without a retry policy, every failing status is).
    pub fn retries_http_status(&self, status: u16) -> bool {
        !(200..400).contains(&status)
            && self
                .retry_spec()
                .is_none_or(|r| r.matching.http(i32::from(status)))
    }

    /// Whether a failing gRPC status `code` is retried (`matching.gRPCStatusCodes`; without
    /// it, or without a retry policy, every code is).
    pub fn retries_grpc_code(&self, code: i32) -> bool {
        self.retry_spec().is_none_or(|r| r.matching.grpc(code))
    }

    fn retry_spec(&self) -> Option<&RetrySpec> {
        self.inner.as_ref().and_then(|p| p.retry.as_deref())
    }

    /// Runs `op` (called once per attempt) under the per-attempt timeout, the retries (of
    /// [`Attempt::Retryable`] outcomes and timeouts) and the circuit breaker (open: fails at
    /// once with [`PolicyError::CircuitOpen`] without calling `op`).
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let Some(p) = self.inner.as_deref() else {
            return match op().await {
                Attempt::Ok(v) => Ok(v),
                Attempt::Retryable(e) | Attempt::Fatal(e) => Err(PolicyError::Inner(e)),
            };
        };
        let mut backoff = p.retry.as_deref().map(Backoff::new);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let permit = match &p.breaker {
                Some(b) => match b.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(Rejected) => {
                        tracing::debug!(target = %p.target, "Circuit breaker open; call refused");
                        return Err(PolicyError::CircuitOpen);
                    }
                },
                None => None,
            };
            let outcome = match p.timeout {
                Some(d) => match tokio::time::timeout(d, op()).await {
                    Ok(a) => a,
                    Err(_) => {
                        if let Some(permit) = permit {
                            permit.record(false);
                        }
                        if let Some(wait) = backoff.as_mut().and_then(Backoff::next_wait) {
                            tracing::debug!(target = %p.target, attempt, ?wait, "Attempt timed out; retrying");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        return Err(PolicyError::Timeout(d));
                    }
                },
                None => op().await,
            };
            if let Some(permit) = permit {
                permit.record(matches!(outcome, Attempt::Ok(_)));
            }
            match outcome {
                Attempt::Ok(v) => {
                    if attempt > 1 {
                        tracing::debug!(target = %p.target, attempt, "Recovered after retrying");
                    }
                    return Ok(v);
                }
                Attempt::Fatal(e) => return Err(PolicyError::Inner(e)),
                Attempt::Retryable(e) => match backoff.as_mut().and_then(Backoff::next_wait) {
                    Some(wait) => {
                        tracing::debug!(target = %p.target, attempt, ?wait, "Attempt failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(PolicyError::Inner(e)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Runs one component call under `policy`: errors for which `is_failure` holds are retried
/// and count against the breaker; other errors are returned as they are and count as
/// successes (a missing key or an ETag mismatch is not an outage). A timeout or an open
/// breaker becomes an error through `outage`. The state, pub/sub and bindings services share
/// this path.
pub async fn component_call<T, E, F, Fut>(
    policy: &Policy,
    is_failure: impl Fn(&E) -> bool,
    outage: impl FnOnce(String) -> E,
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if policy.is_noop() {
        return call().await;
    }
    let run = policy
        .run(|| {
            let attempt = call();
            let is_failure = &is_failure;
            async move {
                match attempt.await {
                    Err(e) if is_failure(&e) => Attempt::Retryable(e),
                    other => Attempt::Ok(other),
                }
            }
        })
        .await;
    match run {
        Ok(result) => result,
        Err(PolicyError::Inner(e)) => Err(e),
        Err(PolicyError::Timeout(d)) => {
            Err(outage(format!("timeout after {d:?} (resiliency policy)")))
        }
        Err(PolicyError::CircuitOpen) => Err(outage("circuit breaker is open".into())),
    }
}
