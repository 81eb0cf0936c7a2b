//! `middleware.http.ratelimit`: a token bucket per client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use http::StatusCode;

use super::{Flow, plain, required};

/// Past this many tracked clients, buckets that have refilled completely are forgotten.
const SWEEP_ABOVE: usize = 4096;

pub(super) struct RateLimit {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens a bucket holds (the burst).
    capacity: f64,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Client {
    Ip(IpAddr),
    /// A forwarding header value that is not an IP address, kept as written.
    Named(String),
    /// No way to tell clients apart: everyone shares one bucket.
    Everyone,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    pub(super) fn from_metadata(md: &HashMap<String, String>) -> Result<RateLimit, String> {
        let raw = required(md, "maxRequestsPerSecond")?;
        let rate: f64 = raw
            .parse()
            .map_err(|_| format!("maxRequestsPerSecond must be a number, not '{raw}'"))?;
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!(
                "maxRequestsPerSecond must be greater than 0, not '{raw}'"
            ));
        }
        Ok(RateLimit::new(rate))
    }

    pub(super) fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            capacity: rate.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn check(&self, req: Request) -> Flow {
        let client = client_of(&req);
        if self.take(client, Instant::now()) {
            Flow::Continue(req)
        } else {
            Flow::Respond(plain(
                StatusCode::TOO_MANY_REQUESTS,
                "You have reached maximum request limit.",
            ))
        }
    }

    /// Takes one token from `client`'s bucket, if it has one.
    fn take(&self, client: Client, now: Instant) -> bool {
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > SWEEP_ABOVE {
            let (rate, capacity) = (self.rate, self.capacity);
            buckets.retain(|_, b| b.level(now, rate, capacity) < capacity);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        bucket.tokens = bucket.level(now, self.rate, self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Bucket {
    fn level(&self, now: Instant, rate: f64, capacity: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(capacity)
    }
}

/// The peer address, else the first `X-Forwarded-For` entry, else `X-Real-IP`.
fn client_of(req: &Request) -> Client {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        return Client::Ip(addr.ip());
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match header("x-forwarded-for").or_else(|| header("x-real-ip")) {
        Some(v) => v
            .parse::<IpAddr>()
            .or_else(|_| v.parse::<SocketAddr>().map(|s| s.ip()))
            .map_or_else(|_| Client::Named(v.to_owned()), Client::Ip),
        None => Client::Everyone,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_refills_at_the_rate_up_to_the_burst() {
        let r = RateLimit::new(2.0);
        let t0 = Instant::now();
        assert!(r.take(Client::Everyone, t0));
        assert!(r.take(Client::Everyone, t0));
        assert!(!r.take(Client::Everyone, t0));
        assert!(!r.take(Client::Everyone, t0 + Duration::from_millis(400)));
        assert!(r.take(Client::Everyone, t0 + Duration::from_millis(600)));
        // A long pause refills to the burst (2), not more.
        let later = t0 + Duration::from_secs(60);
        assert!(r.take(Client::Everyone, later));
        assert!(r.take(Client::Everyone, later));
        assert!(!r.take(Client::Everyone, later));
    }

    #[test]
    fn fractional_rates_allow_one_request_then_wait() {
        let r = RateLimit::new(0.5);
        let t0 = Instant::now();
        assert!(r.take(Client::Everyone, t0));
        assert!(!r.take(Client::Everyone, t0 + Duration::from_secs(1)));
        assert!(r.take(Client::Everyone, t0 + Duration::from_millis(2100)));
    }

    #[test]
    fn idle_clients_are_forgotten_when_many() {
        let r = RateLimit::new(1.0);
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            assert!(r.take(Client::Named(i.to_string()), t0));
        }
        assert!(r.take(Client::Everyone, t0 + Duration::from_secs(2)));
        let n = r.buckets.lock().map(|b| b.len()).unwrap_or(usize::MAX);
        assert_eq!(n, 1);
    }
}
