//! Retry policies: constant and exponential back-off, the retry budget and status matching.

use std::time::Duration;

/// A `retries` policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetrySpec {
    pub(crate) backoff: BackoffKind,
    /// How many retries after the first attempt; `None` is unlimited.
    pub(crate) max_retries: Option<u64>,
    pub(crate) matching: Matching,
}

/// How long to wait before each retry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BackoffKind {
    /// The same wait every time (`duration`).
    Constant(Duration),
    /// `initialInterval`, multiplied by `multiplier` after each retry and capped at
    /// `maxInterval`; each wait is randomised by ± `randomizationFactor` (and capped too).
    Exponential {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        randomization: f64,
    },
}

/// `matching`: the status codes that are retried (`None`: every code).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Matching {
    pub(crate) http: Option<Vec<(i32, i32)>>,
    pub(crate) grpc: Option<Vec<(i32, i32)>>,
}

impl Matching {
    pub(crate) fn http(&self, code: i32) -> bool {
        matches_any(self.http.as_deref(), code)
    }

    pub(crate) fn grpc(&self, code: i32) -> bool {
        matches_any(self.grpc.as_deref(), code)
    }
}

fn matches_any(ranges: Option<&[(i32, i32)]>, code: i32) -> bool {
    ranges.is_none_or(|rs| rs.iter().any(|&(lo, hi)| lo <= code && code <= hi))
}

/// Parses a code list such as `429,500-599` whose codes must lie in `valid`. An empty list
/// means no restriction.
pub(crate) fn parse_codes(
    input: &str,
    valid: (i32, i32),
) -> Result<Option<Vec<(i32, i32)>>, String> {
    let mut out = Vec::new();
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<i32>()
                .map_err(|_| format!("invalid status code pattern '{part}'"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        for c in [lo, hi] {
            if c < valid.0 || c > valid.1 {
                return Err(format!(
                    "invalid status code pattern '{part}': {c} is outside {}-{}",
                    valid.0, valid.1
                ));
            }
        }
        if hi < lo {
            return Err(format!(
                "invalid status code pattern '{part}': the start is above the end"
            ));
        }
        out.push((lo, hi));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The waits of one run of a retry policy.
#[derive(Debug)]
pub(crate) struct Backoff<'a> {
    spec: &'a RetrySpec,
    retries: u64,
    interval: Duration,
}

impl<'a> Backoff<'a> {
    pub(crate) fn new(spec: &'a RetrySpec) -> Self {
        let interval = match &spec.backoff {
            BackoffKind::Constant(d) => *d,
            BackoffKind::Exponential { initial, .. } => *initial,
        };
        Self {
            spec,
            retries: 0,
            interval,
        }
    }

    /// The wait before the next retry, or `None` when the retries are used up.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        if self.spec.max_retries.is_some_and(|m| self.retries >= m) {
            return None;
        }
        self.retries += 1;
        match &self.spec.backoff {
            BackoffKind::Constant(d) => Some(*d),
            BackoffKind::Exponential {
                max,
                multiplier,
                randomization,
                ..
            } => {
                let base = self.interval.min(*max);
                let factor = 1.0 - randomization + 2.0 * randomization * random_unit();
                let wait = base.mul_f64(factor.max(0.0)).min(*max);
                self.interval = base.mul_f64(*multiplier).min(*max);
                Some(wait)
            }
        }
    }
}

/// A random number in `[0, 1)` (from the operating system's randomness behind UUID v4).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_patterns() {
        let r = parse_codes("429, 500-599", (100, 599)).unwrap_or_else(|e| panic!("{e}"));
        let m = Matching {
            http: r,
            grpc: parse_codes("1-4,8-11", (0, 16)).unwrap_or_else(|e| panic!("{e}")),
        };
        assert!(m.http(429) && m.http(500) && m.http(599));
        assert!(!m.http(404) && !m.http(428));
        assert!(m.grpc(2) && m.grpc(8) && !m.grpc(5) && !m.grpc(12));
        assert!(Matching::default().http(404) && Matching::default().grpc(5));
        assert_eq!(parse_codes("", (100, 599)), Ok(None));
        assert!(parse_codes("600", (100, 599)).is_err());
        assert!(parse_codes("500-400", (100, 599)).is_err());
        assert!(parse_codes("5xx", (100, 599)).is_err());
        assert!(parse_codes("1-2-3", (0, 16)).is_err());
        assert!(parse_codes("17", (0, 16)).is_err());
    }

    #[test]
    fn constant_waits_and_budget() {
        let spec = RetrySpec {
            backoff: BackoffKind::Constant(Duration::from_secs(2)),
            max_retries: Some(3),
            matching: Matching::default(),
        };
        let mut b = Backoff::new(&spec);
        let waits: Vec<_> = std::iter::from_fn(|| b.next_wait()).collect();
        assert_eq!(waits, vec![Duration::from_secs(2); 3]);
        let none = RetrySpec {
            max_retries: Some(0),
            ..spec.clone()
        };
        assert_eq!(Backoff::new(&none).next_wait(), None);
        let unlimited = RetrySpec {
            max_retries: None,
            ..spec
        };
        let mut b = Backoff::new(&unlimited);
        assert!((0..1000).all(|_| b.next_wait().is_some()));
    }

    #[test]
    fn exponential_waits_grow_randomised_and_capped() {
        let spec = RetrySpec {
            backoff: BackoffKind::Exponential {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(3),
                multiplier: 1.5,
                randomization: 0.5,
            },
            max_retries: Some(10),
            matching: Matching::default(),
        };
        let mut b = Backoff::new(&spec);
        let waits: Vec<_> = std::iter::from_fn(|| b.next_wait()).collect();
        assert_eq!(waits.len(), 10);
        let mut base = 0.5f64;
        for w in &waits {
            let w = w.as_secs_f64();
            assert!(w >= base * 0.5 - 1e-9, "{w} below {base} × 0.5");
            assert!(w <= (base * 1.5).min(3.0) + 1e-9, "{w} above {base} × 1.5");
            base = (base * 1.5).min(3.0);
        }
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(3)));
    }
}
