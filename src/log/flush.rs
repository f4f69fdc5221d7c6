//! Durability: group commit for `FlushPolicy::EveryBatch` and the background
//! flusher for `FlushPolicy::Interval`.
//!
//! Group commit: a durable watermark, at most one sync round in flight, and
//! a notification when a round ends. A waiter whose offset is below the
//! watermark returns at once. Otherwise, if a round is in flight it waits for
//! that round to end and looks again; if none is, it leads one: it syncs
//! everything appended so far (capturing the end offset *before* the
//! fdatasync) and raises the watermark. So every waiter a round covers
//! completes when it ends, and the waiters it does not cover (they appended
//! after it started) are all covered by the next round, led by the first of
//! them to run. Waiters must not queue on a lock instead: each would then
//! take its turn alone and every round would cover one batch.
//!
//! A one-permit semaphore serializes sync rounds with the other operations
//! that rewrite files (truncate, retention, close).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Weak;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use glommio::sync::{Permit, Semaphore};

use super::error::{LogError, Result};

/// The group-commit state of one partition log.
pub(crate) struct GroupCommit {
    lock: Semaphore,
    /// Every offset below this is on disk.
    durable: Cell<u64>,
    /// fdatasync rounds run so far (for stats and tests).
    rounds: Cell<u64>,
    /// A round is in flight (its leader holds a `Leader`).
    in_flight: Cell<bool>,
    /// Bumped whenever a round ends.
    round_ends: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

/// Held by the leader of a sync round; ends the round (and wakes the
/// waiters) when dropped, also if the leader's future is cancelled.
pub(crate) struct Leader<'a>(&'a GroupCommit);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let gc = self.0;
        gc.in_flight.set(false);
        gc.round_ends.set(gc.round_ends.get() + 1);
        let waiters = std::mem::take(&mut *gc.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// Resolves when the sync round in flight at creation ends.
struct RoundEnd<'a> {
    gc: &'a GroupCommit,
    seen: u64,
}

impl Future for RoundEnd<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.gc.round_ends.get() != self.seen {
            return Poll::Ready(());
        }
        let mut w = self.gc.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl GroupCommit {
    pub fn new(durable: u64) -> Self {
        GroupCommit {
            lock: Semaphore::new(1),
            durable: Cell::new(durable),
            rounds: Cell::new(0),
            in_flight: Cell::new(false),
            round_ends: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Becomes the leader of a new round, unless one is in flight.
    pub fn try_lead(&self) -> Option<Leader<'_>> {
        if self.in_flight.replace(true) {
            return None;
        }
        Some(Leader(self))
    }

    /// Waits until the round in flight ends.
    pub async fn round_end(&self) {
        RoundEnd {
            gc: self,
            seen: self.round_ends.get(),
        }
        .await
    }

    /// Exclusive right to sync or rewrite files.
    pub async fn lock(&self) -> Result<Permit<'_>> {
        self.lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)
    }

    pub fn durable(&self) -> u64 {
        self.durable.get()
    }

    /// Records a finished sync round that made everything below `upto`
    /// durable.
    pub fn advance(&self, upto: u64) {
        self.durable.set(self.durable.get().max(upto));
        self.rounds.set(self.rounds.get() + 1);
    }

    /// After a truncation nothing at or past `upto` is durable any more.
    pub fn lower(&self, upto: u64) {
        self.durable.set(self.durable.get().min(upto));
    }

    pub fn rounds(&self) -> u64 {
        self.rounds.get()
    }
}

/// Something the interval flusher can sync.
pub(crate) trait Flushable {
    /// False once the log is closed or abandoned: the flusher stops.
    fn is_open(&self) -> bool;
    /// Syncs everything appended so far, if anything is not yet durable.
    fn flush_now(&self) -> impl std::future::Future<Output = Result<()>>;
}

/// Starts the background flusher of `FlushPolicy::Interval`. It holds only
/// a weak reference between rounds and stops when the log is closed,
/// abandoned or dropped.
pub(crate) fn spawn_interval_flusher<T: Flushable + 'static>(log: Weak<T>, every: Duration) {
    glommio::spawn_local(async move {
        // A failed fdatasync poisons the log, so every later round fails
        // the same way: said once, not every `every`.
        let mut failing = false;
        loop {
            glommio::timer::sleep(every).await;
            let Some(log) = log.upgrade() else { break };
            if !log.is_open() {
                break;
            }
            match log.flush_now().await {
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "interval flush failed (said once until it succeeds)");
                }
                Err(_) => {}
                Ok(_) => failing = false,
            }
        }
    })
    .detach();
}
