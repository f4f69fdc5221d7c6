//! A connection's share of the quotas (see `crate::quota`): which
//! principal's buckets its requests charge, and until when it is muted.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::ANONYMOUS;
use crate::quota::{Quota, Usage};

/// The principal charged (`None`: anonymous) and its buckets, if any, as
/// of the quotas' `generation`.
#[derive(Debug)]
struct Charged {
    principal: Option<Rc<str>>,
    quota: Option<Arc<Quota>>,
    generation: u64,
}

impl Charged {
    fn look_up(principal: Option<Rc<str>>) -> Charged {
        // The generation first: a change racing the look-up is seen next time.
        let generation = crate::quota::generation();
        let quota = crate::quota::of(principal.as_deref().unwrap_or(ANONYMOUS));
        Charged {
            principal,
            quota,
            generation,
        }
    }
}

#[derive(Debug)]
pub struct Throttle {
    charged: RefCell<Charged>,
    /// No request is taken before this.
    until: Cell<Option<Instant>>,
}

impl Throttle {
    pub fn new(principal: Option<Rc<str>>) -> Throttle {
        Throttle {
            charged: RefCell::new(Charged::look_up(principal)),
            until: Cell::new(None),
        }
    }

    /// Charges `principal` from now on, if the connection authenticated as
    /// another one.
    pub fn follow(&self, principal: Option<Rc<str>>) {
        let mut charged = self.charged.borrow_mut();
        if charged.principal != principal {
            *charged = Charged::look_up(principal);
        }
    }

    /// Charges a served request; returns how long the connection is muted
    /// for it (zero within quota).
    pub fn charge(&self, usage: Usage) -> Duration {
        // The limits changed (`ringmq quota set`): the principal may have
        // gained or lost its buckets. Live buckets were updated in place.
        if self.charged.borrow().generation != crate::quota::generation() {
            let mut charged = self.charged.borrow_mut();
            *charged = Charged::look_up(charged.principal.take());
        }
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
