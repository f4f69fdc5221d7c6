//! A list of tasks waiting for a condition on single-threaded shared state.
//! Waiters re-check their condition when woken, so a spurious wake-up is
//! harmless and one list can serve several conditions.

use std::task::Waker;

#[derive(Debug, Default)]
pub(crate) struct WaitList(Vec<Waker>);

impl WaitList {
    /// Remembers `waker`, once: a task that polls again is not added twice.
    pub(crate) fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|w| w.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    /// Wakes every waiter. Call it after the state changed and after
    /// releasing any `RefCell` borrow the waiters will need.
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }

    /// Takes the waiters out, so they can be woken after the borrow of the
    /// state that holds this list ends.
    pub(crate) fn take(&mut self) -> WaitList {
        WaitList(std::mem::take(&mut self.0))
    }
}
