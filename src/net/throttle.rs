//! A connection's share of the quotas (see `crate::quota`): which
//! principal's buckets its requests charge, and until when it is muted.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::ANONYMOUS;
use crate::quota::{Quota, Usage};

/// The principal charged (`None`: anonymous) and its buckets, if any.
#[derive(Debug)]
struct Charged {
    principal: Option<Rc<str>>,
    quota: Option<Arc<Quota>>,
}

#[derive(Debug)]
pub struct Throttle {
    charged: RefCell<Charged>,
    /// No request is taken before this.
    until: Cell<Option<Instant>>,
}

impl Throttle {
    pub fn new(principal: Option<Rc<str>>) -> Throttle {
        let quota = crate::quota::of(principal.as_deref().unwrap_or(ANONYMOUS));
        Throttle {
            charged: RefCell::new(Charged { principal, quota }),
            until: Cell::new(None),
        }
    }

    /// Charges `principal` from now on, if the connection authenticated as
    /// another one.
    pub fn follow(&self, principal: Option<Rc<str>>) {
        let mut charged = self.charged.borrow_mut();
        if charged.principal != principal {
            let quota = crate::quota::of(principal.as_deref().unwrap_or(ANONYMOUS));
            *charged = Charged { principal, quota };
        }
    }

    /// Charges a served request; returns how long the connection is muted
    /// for it (zero within quota).
    pub fn charge(&self, usage: Usage) -> Duration {
        let Some(quota) = self.charged.borrow().quota.clone() else {
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
