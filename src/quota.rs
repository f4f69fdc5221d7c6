//! Quotas: how many produce bytes, fetch bytes and requests per second one
//! principal may send through this node, so that one noisy client cannot
//! starve the rest.
//!
//! Each principal has a token bucket per kind, shared by every core of the
//! node (its connections may land on any core), so a quota is per node, as
//! Kafka's is per broker. A request is never refused for a quota: what it
//! takes beyond the bucket is debt, and its connection is throttled for as
//! long as the refill needs to pay that debt back. The answer says so
//! (`throttle_ms`, SPEC.md 5.25) and no further request of that connection
//! is taken until then, as Kafka does since KIP-219, so a client that ignores the field is held
//! back all the same. A bucket holds one second's worth, so a principal that
//! was idle may burst that much.
//!
//! Nothing here does I/O; the connection asks [`Quota::charge`] after each
//! request and waits out the answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The node's quotas, set once at start (like the metrics registry): every
/// core's connections charge the same buckets.
static QUOTAS: OnceLock<Arc<Quotas>> = OnceLock::new();

/// Sets the node's quotas; the first call wins (one broker per process).
pub fn install(quotas: Arc<Quotas>) {
    let _ = QUOTAS.set(quotas);
}

/// The buckets a connection of `principal` charges; `None` without quotas.
pub fn of(principal: &str) -> Option<Arc<Quota>> {
    QUOTAS.get()?.of(principal)
}

/// The longest one answer throttles its connection. Debt beyond it stays and
/// throttles the next answers; the cap keeps a group member's heartbeats,
/// which share the muted connection, within its session timeout.
pub const MAX_THROTTLE: Duration = Duration::from_secs(2);

/// How much a bucket holds, in seconds of its rate.
const BURST: f64 = 1.0;

/// Per-second limits of one principal; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub produce_bytes: Option<u64>,
    pub fetch_bytes: Option<u64>,
    pub requests: Option<u64>,
}

impl QuotaLimits {
    pub fn is_unlimited(&self) -> bool {
        self.produce_bytes.is_none() && self.fetch_bytes.is_none() && self.requests.is_none()
    }
}

/// What a request used, charged after it was served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub produce_bytes: u64,
    pub fetch_bytes: u64,
}

/// Every principal's buckets on this node.
#[derive(Debug)]
pub struct Quotas {
    default: QuotaLimits,
    overrides: BTreeMap<String, QuotaLimits>,
    buckets: Mutex<HashMap<String, Arc<Quota>>>,
}

impl Quotas {
    /// `default` applies to every principal without an entry in `overrides`.
    pub fn new(default: QuotaLimits, overrides: BTreeMap<String, QuotaLimits>) -> Arc<Quotas> {
        Arc::new(Quotas {
            default,
            overrides,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The buckets of `principal`, for its connection to keep; `None` when
    /// it has no quota (the common case costs nothing per request).
    pub fn of(&self, principal: &str) -> Option<Arc<Quota>> {
        let limits = self
            .overrides
            .get(principal)
            .copied()
            .unwrap_or(self.default);
        if limits.is_unlimited() {
            return None;
        }
        // A poisoned lock only means a panic elsewhere; the map is intact.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let q = buckets
            .entry(principal.to_owned())
            .or_insert_with(|| Arc::new(Quota::new(principal, limits, Instant::now())));
        Some(q.clone())
    }
}

/// One principal's buckets.
#[derive(Debug)]
pub struct Quota {
    principal: String,
    buckets: Mutex<[Option<Bucket>; 3]>,
}

impl Quota {
    fn new(principal: &str, limits: QuotaLimits, now: Instant) -> Quota {
        let bucket = |rate: Option<u64>| rate.map(|r| Bucket::new(r, now));
        Quota {
            principal: principal.to_owned(),
            buckets: Mutex::new([
                bucket(limits.produce_bytes),
                bucket(limits.fetch_bytes),
                bucket(limits.requests),
            ]),
        }
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Charges one request and what it used; returns how long its
    /// connection must wait (zero when within every quota).
    pub fn charge(&self, usage: Usage, now: Instant) -> Duration {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let [produce, fetch, requests] = &mut *buckets;
        let mut wait = Duration::ZERO;
        for (bucket, n) in [
            (produce, usage.produce_bytes),
            (fetch, usage.fetch_bytes),
            (requests, 1),
        ] {
            if let Some(b) = bucket {
                wait = wait.max(b.take(n, now));
            }
        }
        wait.min(MAX_THROTTLE)
    }
}

/// A token bucket that may go into debt.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens per second.
    rate: f64,
    /// Negative: debt.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let rate = rate as f64;
        Bucket {
            rate,
            tokens: rate * BURST,
            at: now,
        }
    }

    /// Takes `n` tokens; returns how long until the debt, if any, is paid.
    fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * BURST);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(produce: u64) -> QuotaLimits {
        QuotaLimits {
            produce_bytes: Some(produce),
            ..QuotaLimits::default()
        }
    }

    fn produce(bytes: u64) -> Usage {
        Usage {
            produce_bytes: bytes,
            fetch_bytes: 0,
        }
    }

    #[test]
    fn within_the_burst_nothing_waits_past_it_the_debt_does() {
        let t0 = Instant::now();
        let q = Quota::new("User:a", limits(1000), t0);
        assert_eq!(q.charge(produce(600), t0), Duration::ZERO);
        assert_eq!(q.charge(produce(400), t0), Duration::ZERO);
        // 500 bytes of debt at 1000 bytes/s: half a second.
        assert_eq!(q.charge(produce(500), t0), Duration::from_millis(500));
        // A quarter second later, a quarter of it is paid; 250 more bytes
        // put it back where it was.
        let later = t0 + Duration::from_millis(250);
        assert_eq!(q.charge(produce(250), later), Duration::from_millis(500));
    }

    #[test]
    fn a_sustained_rate_converges_on_the_quota() {
        // A client that waits out every throttle and sends 100-byte
        // requests as fast as allowed gets 10,000 bytes/s over 10 s.
        let t0 = Instant::now();
        let q = Quota::new("User:a", limits(10_000), t0);
        let (mut now, mut sent) = (t0, 0u64);
        while now < t0 + Duration::from_secs(10) {
            now += q.charge(produce(100), now) + Duration::from_micros(10);
            sent += 100;
        }
        let rate = sent as f64 / 10.0;
        // The first second's burst comes on top.
        assert!((10_000.0..=11_200.0).contains(&rate), "{rate} bytes/s");
    }

    #[test]
    fn one_throttle_is_capped_and_the_rest_of_the_debt_stays() {
        let t0 = Instant::now();
        let q = Quota::new("User:a", limits(100), t0);
        assert_eq!(q.charge(produce(100 + 1000), t0), MAX_THROTTLE);
        // Ten seconds of debt: still throttled after the capped wait.
        assert_eq!(q.charge(produce(0), t0 + MAX_THROTTLE), MAX_THROTTLE);
    }

    #[test]
    fn the_strictest_quota_decides_and_requests_count_too() {
        let t0 = Instant::now();
        let q = Quota::new(
            "User:a",
            QuotaLimits {
                produce_bytes: Some(1_000_000),
                fetch_bytes: None,
                requests: Some(2),
            },
            t0,
        );
        assert_eq!(q.charge(produce(10), t0), Duration::ZERO);
        assert_eq!(q.charge(produce(10), t0), Duration::ZERO);
        assert_eq!(q.charge(produce(10), t0), Duration::from_millis(500));
    }

    #[test]
    fn principals_have_buckets_of_their_own_and_the_unlimited_none() {
        let quotas = Quotas::new(
            limits(1000),
            BTreeMap::from([("User:admin".to_owned(), QuotaLimits::default())]),
        );
        assert!(quotas.of("User:admin").is_none());
        let a = quotas.of("User:a").unwrap();
        let b = quotas.of("User:b").unwrap();
        let now = Instant::now();
        assert_eq!(a.charge(produce(2000), now), Duration::from_secs(1));
        assert_eq!(b.charge(produce(1000), now), Duration::ZERO);
        // The same principal on another connection (or core) shares a's.
        let a2 = quotas.of("User:a").unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        assert_eq!(a2.principal(), "User:a");
    }
}
