//! The circuit breaker: the state machine of `sony/gobreaker`, which Dapr uses.
//!
//! Closed: requests pass and are counted; after each failure the trip expression is evaluated
//! over the counts and, when true, the breaker opens. `interval` > 0 clears the counts every
//! interval while closed. Open: every request fails at once until `timeout` has passed, then
//! the breaker is half-open. Half-open: at most `maxRequests` requests pass; once that many
//! have succeeded in a row the breaker closes, and any failure opens it again. Every change of
//! state starts a new generation with cleared counts; results from an older generation are
//! ignored.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The counts the trip expression sees (the names are its variables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) requests: u32,
    pub(crate) total_successes: u32,
    pub(crate) total_failures: u32,
    pub(crate) consecutive_successes: u32,
    pub(crate) consecutive_failures: u32,
}

/// The variables a trip expression may use.
pub(crate) const TRIP_VARIABLES: [&str; 5] = [
    "requests",
    "totalSuccesses",
    "totalFailures",
    "consecutiveSuccesses",
    "consecutiveFailures",
];

/// A compiled `trip` expression.
pub(crate) struct Trip {
    source: String,
    program: cel::Program,
}

impl std::fmt::Debug for Trip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Trip {
    /// Compiles `source`; it must use only [`TRIP_VARIABLES`] and yield a boolean.
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        let program = cel::Program::compile(source)
            .map_err(|e| format!("invalid CEL expression '{source}': {e}"))?;
        let refs = program.references();
        if let Some(unknown) = refs
            .variables()
            .into_iter()
            .find(|v| !TRIP_VARIABLES.contains(v))
        {
            return Err(format!(
                "invalid CEL expression '{source}': unknown variable '{unknown}' (expected one of {})",
                TRIP_VARIABLES.join(", ")
            ));
        }
        let trip = Self {
            source: source.to_owned(),
            program,
        };
        trip.eval(&Counts::default())?;
        Ok(trip)
    }

    /// Evaluates the expression over `counts`.
    pub(crate) fn eval(&self, counts: &Counts) -> Result<bool, String> {
        let mut ctx = cel::Context::default();
        let vars = [
            counts.requests,
            counts.total_successes,
            counts.total_failures,
            counts.consecutive_successes,
            counts.consecutive_failures,
        ];
        for (name, value) in TRIP_VARIABLES.iter().zip(vars) {
            ctx.add_variable_from_value(*name, i64::from(value));
        }
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "CEL expression '{}' yields {other:?}, not a boolean",
                self.source
            )),
            Err(e) => Err(format!("CEL expression '{}' failed: {e}", self.source)),
        }
    }
}

/// A `circuitBreakers` policy: the template each target's breaker is made from.
#[derive(Debug)]
pub(crate) struct BreakerSpec {
    pub(crate) max_requests: u32,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) trip: Trip,
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Closed,
    HalfOpen,
    Open,
}

#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
    counts: Counts,
    /// Closed: when the counts are cleared next (None: never). Open: when it turns half-open.
    expiry: Option<Instant>,
}

/// One target's breaker (shared by every call to that target).
#[derive(Debug)]
pub(crate) struct Breaker {
    name: String,
    spec: Arc<BreakerSpec>,
    inner: Mutex<Inner>,
}

/// The breaker refused a request (open, or half-open with `maxRequests` already in flight).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rejected;

/// A request let through; report its outcome with [`Permit::record`]. Dropped without a
/// record (the caller gave up), it frees its place without counting either way.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    done: bool,
}

impl Permit<'_> {
    /// Records the request's outcome.
    pub(crate) fn record(mut self, success: bool) {
        self.done = true;
        self.breaker.after_request(self.generation, success);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.cancel(self.generation);
        }
    }
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker named `name` (for logs) following `spec`.
    pub(crate) fn new(name: String, spec: Arc<BreakerSpec>) -> Self {
        let expiry = Self::closed_expiry(&spec, Instant::now());
        Self {
            name,
            spec,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                counts: Counts::default(),
                expiry,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn max_requests(&self) -> u32 {
        self.spec.max_requests.max(1)
    }

    fn closed_expiry(spec: &BreakerSpec, now: Instant) -> Option<Instant> {
        (!spec.interval.is_zero()).then(|| now + spec.interval)
    }

    /// The state now (moving open → half-open and clearing closed counts as time says).
    #[cfg(test)]
    pub(crate) fn state(&self) -> State {
        let mut inner = self.lock();
        self.current(&mut inner, Instant::now());
        inner.state
    }

    fn current(&self, inner: &mut Inner, now: Instant) {
        match inner.state {
            State::Closed => {
                if inner.expiry.is_some_and(|e| e <= now) {
                    inner.generation += 1;
                    inner.counts = Counts::default();
                    inner.expiry = Self::closed_expiry(&self.spec, now);
                }
            }
            State::Open => {
                if inner.expiry.is_some_and(|e| e <= now) {
                    self.set_state(inner, State::HalfOpen, now);
                }
            }
            State::HalfOpen => {}
        }
    }

    fn set_state(&self, inner: &mut Inner, to: State, now: Instant) {
        if inner.state == to {
            return;
        }
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.counts = Counts::default();
        inner.expiry = match to {
            State::Closed => Self::closed_expiry(&self.spec, now),
            State::Open => Some(now + self.spec.timeout),
            State::HalfOpen => None,
        };
        tracing::info!(breaker = %self.name, ?from, ?to, "Circuit breaker changed state");
    }

    /// Lets a request through, or refuses it.
    pub(crate) fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        self.current(&mut inner, Instant::now());
        match inner.state {
            State::Open => return Err(Rejected),
            State::HalfOpen if inner.counts.requests >= self.max_requests() => {
                return Err(Rejected);
            }
            _ => {}
        }
        inner.counts.requests = inner.counts.requests.saturating_add(1);
        Ok(Permit {
            breaker: self,
            generation: inner.generation,
            done: false,
        })
    }

    fn cancel(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.counts.requests = inner.counts.requests.saturating_sub(1);
        }
    }

    fn after_request(&self, generation: u64, success: bool) {
        let mut inner = self.lock();
        let now = Instant::now();
        self.current(&mut inner, now);
        if inner.generation != generation {
            return;
        }
        let c = &mut inner.counts;
        if success {
            c.total_successes = c.total_successes.saturating_add(1);
            c.consecutive_successes = c.consecutive_successes.saturating_add(1);
            c.consecutive_failures = 0;
            if inner.state == State::HalfOpen
                && inner.counts.consecutive_successes >= self.max_requests()
            {
                self.set_state(&mut inner, State::Closed, now);
            }
        } else {
            c.total_failures = c.total_failures.saturating_add(1);
            c.consecutive_failures = c.consecutive_failures.saturating_add(1);
            c.consecutive_successes = 0;
            match inner.state {
                State::Closed => {
                    let trip = self.spec.trip.eval(&inner.counts).unwrap_or_else(|e| {
                        tracing::warn!(breaker = %self.name, error = %e, "Trip expression failed; not tripping");
                        false
                    });
                    if trip {
                        self.set_state(&mut inner, State::Open, now);
                    }
                }
                State::HalfOpen => self.set_state(&mut inner, State::Open, now),
                State::Open => {}
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> Counts {
        self.lock().counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_requests: u32, interval_ms: u64, timeout_ms: u64, trip: &str) -> Arc<BreakerSpec> {
        Arc::new(BreakerSpec {
            max_requests,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            trip: Trip::compile(trip).unwrap_or_else(|e| panic!("{e}")),
        })
    }

    fn call(b: &Breaker, success: bool) -> Result<(), Rejected> {
        b.try_acquire().map(|p| p.record(success))
    }

    #[test]
    fn trip_expressions_compile_and_evaluate() {
        let t = Trip::compile("consecutiveFailures > 2").unwrap_or_else(|e| panic!("{e}"));
        let mut c = Counts {
            consecutive_failures: 3,
            ..Counts::default()
        };
        assert_eq!(t.eval(&c), Ok(true));
        c.consecutive_failures = 2;
        assert_eq!(t.eval(&c), Ok(false));
        let t = Trip::compile("requests >= 4 && totalFailures * 2 > requests")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = Counts {
            requests: 4,
            total_failures: 3,
            ..Counts::default()
        };
        assert_eq!(t.eval(&c), Ok(true));
        assert!(Trip::compile("consecutiveFailures >").is_err());
        assert!(Trip::compile("failures > 3").is_err_and(|e| e.contains("unknown variable")));
        assert!(Trip::compile("consecutiveFailures + 1").is_err_and(|e| e.contains("boolean")));
    }

    #[tokio::test]
    async fn closed_open_half_open_closed() {
        let b = Breaker::new("t".into(), spec(2, 0, 60, "consecutiveFailures >= 3"));
        call(&b, false).ok();
        call(&b, false).ok();
        call(&b, true).ok();
        assert_eq!(b.state(), State::Closed);
        for _ in 0..3 {
            assert_eq!(call(&b, false), Ok(()));
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(call(&b, true), Err(Rejected));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(b.state(), State::HalfOpen);
        // Two may pass in half-open; a third in flight is refused.
        let p1 = b.try_acquire().unwrap_or_else(|_| panic!("refused"));
        let p2 = b.try_acquire().unwrap_or_else(|_| panic!("refused"));
        assert!(b.try_acquire().is_err());
        p1.record(true);
        assert_eq!(b.state(), State::HalfOpen);
        p2.record(true);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.counts(), Counts::default());
    }

    #[tokio::test]
    async fn half_open_failure_reopens() {
        let b = Breaker::new("t".into(), spec(1, 0, 50, "consecutiveFailures > 0"));
        call(&b, false).ok();
        assert_eq!(b.state(), State::Open);
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert_eq!(call(&b, false), Ok(()));
        assert_eq!(b.state(), State::Open);
        assert_eq!(call(&b, true), Err(Rejected));
    }

    #[tokio::test]
    async fn dropped_permit_frees_half_open_slot() {
        let b = Breaker::new("t".into(), spec(1, 0, 30, "consecutiveFailures > 0"));
        call(&b, false).ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = b.try_acquire().unwrap_or_else(|_| panic!("refused"));
        assert!(b.try_acquire().is_err());
        drop(p);
        assert_eq!(call(&b, true), Ok(()));
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test]
    async fn interval_clears_counts_while_closed() {
        let b = Breaker::new("t".into(), spec(1, 40, 60_000, "totalFailures >= 2"));
        call(&b, false).ok();
        assert_eq!(b.counts().total_failures, 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        call(&b, false).ok();
        assert_eq!(b.state(), State::Closed);
        call(&b, false).ok();
        assert_eq!(b.state(), State::Open);
    }
}
