//! Durability: group commit for `FlushPolicy::EveryBatch` and the background
//! flusher for `FlushPolicy::Interval`.
//!
//! Group commit is a one-permit semaphore plus a durable watermark. A waiter
//! takes the permit; if a sync that finished meanwhile already covers its
//! offset it leaves at once, otherwise it syncs everything appended so far
//! (capturing the end offset *before* the fdatasync) and raises the
//! watermark. So one fdatasync is in flight at a time, every waiter it covers
//! completes when it ends, and later arrivals are covered by the next one,
//! which starts as soon as the previous ends. The same permit serializes the
//! other operations that rewrite files (truncate, retention, close).

use std::cell::Cell;
use std::rc::Weak;
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
}

impl GroupCommit {
    pub fn new(durable: u64) -> Self {
        GroupCommit {
            lock: Semaphore::new(1),
            durable: Cell::new(durable),
            rounds: Cell::new(0),
        }
    }

    /// Exclusive right to sync or rewrite files.
    pub async fn lock(&self) -> Result<Permit<'_>> {
        self.lock.acquire_permit(1).await.map_err(|_| LogError::Closed)
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
        loop {
            glommio::timer::sleep(every).await;
            let Some(log) = log.upgrade() else { break };
            if !log.is_open() {
                break;
            }
            if let Err(e) = log.flush_now().await {
                tracing::error!(error = %e, "interval flush failed");
            }
        }
    })
    .detach();
}
