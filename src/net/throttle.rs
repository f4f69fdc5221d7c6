//! A connection's share of the quotas (see `crate::quota`): which
//! principal's buckets its requests charge, and until when it is muted.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::quota::{Quota, Usage};

#[derive(Debug)]
pub struct Throttle {
    quota: RefCell<Option<Arc<Quota>>>,
    /// No request is read before this.
    until: Cell<Option<Instant>>,
}

impl Throttle {
    pub fn new(quota: Option<Arc<Quota>>) -> Throttle {
        Throttle {
            quota: RefCell::new(quota),
            until: Cell::new(None),
        }
    }

    /// Charges a served request; returns how long the connection is muted
    /// for it (zero within quota).
    pub fn charge(&self, usage: Usage) -> Duration {
        let Some(quota) = self.quota.borrow().clone() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let wait = quota.charge(usage, now);
        if !wait.is_zero() {
            let until = now + wait;
            self.until
                .set(Some(self.until.get().map_or(until, |u| u.max(until))));
            crate::metrics::throttled(wait);
        }
        wait
    }

    /// Waits out the mute, if any.
    pub async fn wait(&self) {
        while let Some(until) = self.until.get() {
            let now = Instant::now();
            if until <= now {
                self.until.set(None);
                return;
            }
            glommio::timer::sleep(until - now).await;
        }
    }
}
