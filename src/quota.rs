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
//! Limits come from the config file (`quota_*`, `[quotas."User:x"]`) and,
//! over them, from the security metadata (`ringmq quota set`, SPEC.md
//! 5.26), which every core hands here when it installs a new state
//! ([`set_metadata`]). A change updates the live buckets in place, so
//! connections feel it at once, without a restart.
//!
//! Nothing here does I/O; the connection asks [`Quota::charge`] after each
//! request and waits out the answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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

/// Changes whenever the limits do: a connection that cached [`of`]'s
/// answer asks again when this moved (one atomic load per request, no lock).
pub fn generation() -> u64 {
    QUOTAS
        .get()
        .map_or(0, |q| q.generation.load(Ordering::Acquire))
}

/// Takes the security metadata's quotas (every core calls this with each
/// state it installs; only a change does anything).
pub fn set_metadata(entries: &BTreeMap<String, QuotaEntry>) {
    if let Some(q) = QUOTAS.get() {
        q.set_metadata(entries, Instant::now());
    }
}

/// One principal's quotas as the security metadata keeps them, per field:
/// `None` not set (the node's configured value applies), `Some(0)` no
/// limit, else the per-second limit. JSON in the Raft log: fields may be
/// added, never renamed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaEntry {
    #[serde(default)]
    pub produce_bytes: Option<u64>,
    #[serde(default)]
    pub fetch_bytes: Option<u64>,
    #[serde(default)]
    pub requests: Option<u64>,
}

impl QuotaEntry {
    /// `configured`, field by field overridden by what this entry sets.
    pub fn over(&self, configured: QuotaLimits) -> QuotaLimits {
        let field = |set: Option<u64>, base: Option<u64>| match set {
            None => base,
            Some(0) => None,
            Some(n) => Some(n),
        };
        QuotaLimits {
            produce_bytes: field(self.produce_bytes, configured.produce_bytes),
            fetch_bytes: field(self.fetch_bytes, configured.fetch_bytes),
            requests: field(self.requests, configured.requests),
        }
    }
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
    state: Mutex<State>,
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The security metadata's entries, over `default` and `overrides`.
    metadata: BTreeMap<String, QuotaEntry>,
    buckets: HashMap<String, Arc<Quota>>,
}

impl State {
    fn limits(&self, quotas: &Quotas, principal: &str) -> QuotaLimits {
        let configured = quotas
            .overrides
            .get(principal)
            .copied()
            .unwrap_or(quotas.default);
        match self.metadata.get(principal) {
            Some(entry) => entry.over(configured),
            None => configured,
        }
    }
}

impl Quotas {
    /// `default` applies to every principal without an entry in `overrides`.
    pub fn new(default: QuotaLimits, overrides: BTreeMap<String, QuotaLimits>) -> Arc<Quotas> {
        Arc::new(Quotas {
            default,
            overrides,
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the map is intact.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The buckets of `principal`, for its connection to keep; `None` when
    /// it has no quota (the common case costs nothing per request).
    pub fn of(&self, principal: &str) -> Option<Arc<Quota>> {
        let mut state = self.state();
        let limits = state.limits(self, principal);
        if limits.is_unlimited() {
            return None;
        }
        let q = state
            .buckets
            .entry(principal.to_owned())
            .or_insert_with(|| Arc::new(Quota::new(principal, limits, Instant::now())));
        Some(q.clone())
    }

    /// Replaces the metadata's entries and brings every live bucket to its
    /// principal's new limits.
    pub fn set_metadata(&self, entries: &BTreeMap<String, QuotaEntry>, now: Instant) {
        let mut state = self.state();
        if state.metadata == *entries {
            return;
        }
        state.metadata = entries.clone();
        for (principal, quota) in &state.buckets {
            quota.set_limits(state.limits(self, principal), now);
        }
        // After the buckets: a connection that sees the new generation
        // finds them updated.
        self.generation.fetch_add(1, Ordering::AcqRel);
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

    /// New limits for the live buckets: a kept bucket refills at its old
    /// rate up to `now`, then keeps its tokens (or debt) clamped to the new
    /// burst; a new one starts full; a dropped one charges nothing more.
    fn set_limits(&self, limits: QuotaLimits, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let rates = [limits.produce_bytes, limits.fetch_bytes, limits.requests];
        for (bucket, rate) in buckets.iter_mut().zip(rates) {
            *bucket = match (bucket.take(), rate) {
                (_, None) => None,
                (None, Some(r)) => Some(Bucket::new(r, now)),
                (Some(mut b), Some(r)) => {
                    b.refill(now);
                    b.rate = r as f64;
                    b.tokens = b.tokens.min(b.rate * BURST);
                    Some(b)
                }
            };
        }
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

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * BURST);
    }

    /// Takes `n` tokens; returns how long until the debt, if any, is paid.
    fn take(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
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

    #[test]
    fn a_live_bucket_takes_new_limits_from_the_metadata() {
        let quotas = Quotas::new(limits(1000), BTreeMap::new());
        let t0 = Instant::now();
        let a = quotas.of("User:a").unwrap();
        assert_eq!(a.charge(produce(1000), t0), Duration::ZERO);
        // Tighter: the empty bucket now refills at 100 bytes/s.
        let tight = QuotaEntry {
            produce_bytes: Some(100),
            ..QuotaEntry::default()
        };
        let g = quotas.generation.load(Ordering::Acquire);
        quotas.set_metadata(&BTreeMap::from([("User:a".to_owned(), tight)]), t0);
        assert_ne!(quotas.generation.load(Ordering::Acquire), g);
        assert_eq!(a.charge(produce(100), t0), Duration::from_secs(1));
        // The same entries again change nothing.
        let g = quotas.generation.load(Ordering::Acquire);
        quotas.set_metadata(&BTreeMap::from([("User:a".to_owned(), tight)]), t0);
        assert_eq!(quotas.generation.load(Ordering::Acquire), g);
        // Unlimited: the live bucket charges nothing, and a new connection
        // gets no bucket at all.
        let off = QuotaEntry {
            produce_bytes: Some(0),
            ..QuotaEntry::default()
        };
        quotas.set_metadata(&BTreeMap::from([("User:a".to_owned(), off)]), t0);
        assert_eq!(a.charge(produce(1_000_000), t0), Duration::ZERO);
        assert!(quotas.of("User:a").is_none());
        // Removed: the configured default again, on the same buckets.
        quotas.set_metadata(&BTreeMap::new(), t0);
        let again = quotas.of("User:a").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(a.charge(produce(2000), t0), Duration::from_secs(1));
    }

    #[test]
    fn metadata_fields_override_the_configured_ones_one_by_one() {
        let configured = QuotaLimits {
            produce_bytes: Some(10),
            fetch_bytes: Some(20),
            requests: Some(30),
        };
        let entry = QuotaEntry {
            produce_bytes: None,
            fetch_bytes: Some(0),
            requests: Some(5),
        };
        assert_eq!(
            entry.over(configured),
            QuotaLimits {
                produce_bytes: Some(10),
                fetch_bytes: None,
                requests: Some(5),
            }
        );
    }
}
