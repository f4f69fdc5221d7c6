//! `PartitionLog`: the append-only log of one partition, a chain of segments
//! in one directory. Lives on one glommio executor and is shared by that
//! executor's tasks (`Clone` is an `Rc` clone). Appends are synchronous; the
//! methods that touch the disk beyond a memcpy are async. No method holds a
//! `RefCell` borrow across an `.await`.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use bytes::Bytes;
use ringmq_protocol::batch::{verify, BatchError, BatchHeader};

use super::config::{FlushPolicy, LogConfig};
use super::disk;
use super::epochs::{EpochCache, EpochEntry};
use super::error::{BatchLocation, LogError, Result};
use super::flush::{spawn_interval_flusher, Flushable, GroupCommit};
use super::producers::{ProducerLimits, ProducerState, ProducerSummary, Verdict};
use super::recovery;
use super::retention::{self, SegmentInfo};
use super::segment::{spare_path, SegState, Segment, Spare};
use super::state::{self, Capture, Span};

/// Where an appended batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record (stamped into the stored batch).
    pub base_offset: u64,
    /// Offset the next batch will get; pass it to `wait_durable`.
    pub next_offset: u64,
    /// Size of the batch in bytes.
    pub bytes: usize,
    /// The batch repeats one of its idempotent producer's last five batches
    /// (a retry): nothing was written, and `base_offset` and `next_offset`
    /// are the original's (so `wait_durable(next_offset)` waits for it).
    pub duplicate: bool,
}

/// Whether handles may still use the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// `close` ran (or is running).
    Closed,
    /// Every handle was dropped without `close`: background work must not
    /// touch the files any more (a new `open` may be recovering them).
    Abandoned,
}

struct Inner {
    dir: PathBuf,
    cfg: LogConfig,
    /// Oldest first; the last one is the active segment. Never empty.
    segments: RefCell<Vec<Rc<Segment>>>,
    next_offset: Cell<u64>,
    commit: GroupCommit,
    life: Cell<Life>,
    truncating: Cell<bool>,
    poisoned: RefCell<Option<String>>,
    /// The next segment's file, made ahead of the roll (see `Spare`).
    spare: RefCell<Option<Spare>>,
    /// A spare is being made on the blocking pool.
    spare_pending: Cell<bool>,
    /// Base of the active segment for which making a spare failed: no retry
    /// until the next roll.
    spare_failed: Cell<Option<u64>>,
    /// Leader epochs of the batches kept (see `epochs`).
    epochs: RefCell<EpochCache>,
    /// The epoch cache version the `leader-epochs` file holds; the next
    /// sync round rewrites the file when the cache moved on.
    epochs_written: Cell<u64>,
    /// Idempotent producers (see `producers`).
    producers: RefCell<ProducerState>,
    /// The next sync round writes both state files (after a roll, a
    /// truncation, retention, and at close), which bounds the scan at open.
    state_wanted: Cell<bool>,
}

/// Marks the log abandoned when the last user handle goes away.
struct HandleGuard(Weak<Inner>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            if inner.life.get() == Life::Open {
                inner.life.set(Life::Abandoned);
            }
        }
    }
}

/// The log of one partition. See the module documentation.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<Inner>,
    _guard: Rc<HandleGuard>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.inner.dir)
            .field("start_offset", &self.start_offset())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

fn incoming(e: BatchError) -> LogError {
    match e {
        BatchError::CrcMismatch { .. } => LogError::CorruptBatch {
            location: BatchLocation::Incoming,
            reason: e.to_string(),
        },
        other => LogError::InvalidBatch(other),
    }
}

impl PartitionLog {
    /// Opens the log in `dir`, creating it or recovering it (see
    /// `recovery`), with the default producer limits. Recovery runs on the
    /// blocking pool.
    pub async fn open(dir: &Path, cfg: LogConfig) -> Result<Self> {
        Self::open_with(dir, cfg, ProducerLimits::default()).await
    }

    /// Like [`PartitionLog::open`], with bounds on the producer state. The
    /// leader-epoch cache and the producer state are loaded from their
    /// files and brought up to date by scanning the batch headers after
    /// them (see `state`).
    pub async fn open_with(dir: &Path, cfg: LogConfig, limits: ProducerLimits) -> Result<Self> {
        cfg.validate()?;
        let d = dir.to_path_buf();
        let interval = cfg.index_interval_bytes;
        let started = std::time::Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (rec, loaded) = glommio::executor()
            .spawn_blocking(move || -> Result<_> {
                let rec = recovery::recover(&d, interval)?;
                let loaded = state::load(&d, &rec.segments, limits, now_ms)?;
                Ok((rec, loaded))
            })
            .await?;
        let mut segments = Vec::with_capacity(rec.segments.len().max(1));
        for r in rec.segments {
            segments.push(Segment::open_recovered(dir, r, interval)?);
        }
        match segments.last() {
            Some(last) => last.activate(cfg.segment_bytes)?,
            None => segments.push(Segment::create(dir, 0, cfg.segment_bytes, interval)?),
        }
        let active = segments.last().cloned().ok_or(LogError::Closed)?;
        let next = active.next_offset();
        let start = segments.first().map_or(0, |s| s.base);
        tracing::info!(
            dir = %dir.display(),
            clean = rec.clean,
            truncated_bytes = rec.truncated_bytes,
            scanned_segments = rec.scanned_segments,
            removed_segments = rec.removed_segments,
            segments = segments.len(),
            start_offset = start,
            next_offset = next,
            scanned_batch_headers = loaded.scanned_batches,
            epochs_file = loaded.epochs_file_used,
            producer_snapshot = loaded.snapshot_used,
            producers = loaded.producers.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{}",
            if rec.clean { "partition log opened after a clean shutdown" } else { "partition log recovered" }
        );
        active.reserve_ahead(cfg.reserve_ahead_bytes, cfg.zero_fill());
        let flush = cfg.flush;
        let inner = Rc::new(Inner {
            dir: dir.to_path_buf(),
            cfg,
            segments: RefCell::new(segments),
            next_offset: Cell::new(next),
            commit: GroupCommit::new(next),
            life: Cell::new(Life::Open),
            truncating: Cell::new(false),
            poisoned: RefCell::new(None),
            spare: RefCell::new(None),
            spare_pending: Cell::new(false),
            spare_failed: Cell::new(None),
            epochs_written: Cell::new(loaded.epochs.version()),
            epochs: RefCell::new(loaded.epochs),
            producers: RefCell::new(loaded.producers),
            state_wanted: Cell::new(loaded.write_failed),
        });
        if let FlushPolicy::Interval(every) = flush {
            spawn_interval_flusher(Rc::downgrade(&inner), every);
        }
        let guard = Rc::new(HandleGuard(Rc::downgrade(&inner)));
        Ok(PartitionLog {
            inner,
            _guard: guard,
        })
    }

    /// Verifies the batch (header and CRC; nothing is written if it is bad),
    /// assigns its base offset, copies it into the active segment and stamps
    /// base offset and leader epoch in place. Rolls to a new segment when the
    /// active one is full. Synchronous: no await on the hot path.
    ///
    /// The leader's path: a batch with a `producer_id >= 0` is checked
    /// against its producer's state first. A retry of one of its last five
    /// batches is not written and answered with the original's offsets
    /// (`duplicate`); a sequence gap is `OutOfOrderSequence`, an older
    /// producer epoch `ProducerFenced`. A `leader_epoch` larger than the
    /// last one in the log opens a leader-epoch entry at this batch.
    pub fn append(&self, batch: &[u8], leader_epoch: u32) -> Result<Appended> {
        let h = self.check_incoming(batch)?;
        let verdict = self.inner.producers.borrow().check(&h)?;
        if let Verdict::Duplicate {
            base_offset,
            last_offset,
        } = verdict
        {
            return Ok(Appended {
                base_offset,
                next_offset: last_offset + 1,
                bytes: 0,
                duplicate: true,
            });
        }
        self.write_batch(batch, &h, self.next_offset(), leader_epoch)
    }

    /// Checks that the log takes writes and that `batch` is exactly one
    /// valid batch that fits a segment. Nothing is written.
    pub(super) fn check_incoming(&self, batch: &[u8]) -> Result<BatchHeader> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let h = verify(batch).map_err(incoming)?;
        let len = h.total_len();
        if len != batch.len() {
            return Err(LogError::NotOneBatch {
                given: batch.len(),
                batch: len,
            });
        }
        if len as u64 > inner.cfg.segment_bytes {
            return Err(LogError::BatchTooLarge {
                size: len,
                segment_bytes: inner.cfg.segment_bytes,
            });
        }
        Ok(h)
    }

    /// Copies a checked batch to the log end (`base` must be the log end),
    /// stamped with `base` and `leader_epoch`, and records it in the epoch
    /// cache and the producer state.
    pub(super) fn write_batch(
        &self,
        batch: &[u8],
        h: &BatchHeader,
        base: u64,
        leader_epoch: u32,
    ) -> Result<Appended> {
        let inner = &*self.inner;
        debug_assert_eq!(base, inner.next_offset.get());
        let mut active = inner.active();
        if !active.has_room(batch.len() as u64, h.record_count) {
            active = inner.roll()?;
        }
        active.append(batch, h, base, leader_epoch)?;
        let next = base + u64::from(h.record_count);
        inner.next_offset.set(next);
        inner.epochs.borrow_mut().observe(leader_epoch, base);
        inner.producers.borrow_mut().record(h, base);
        active.reserve_ahead(inner.cfg.reserve_ahead_bytes, inner.cfg.zero_fill());
        active.write_behind();
        self.prepare_spare(&active);
        Ok(Appended {
            base_offset: base,
            next_offset: next,
            bytes: batch.len(),
            duplicate: false,
        })
    }

    /// The leader epoch of the last entry of the epoch cache: the epoch of
    /// the newest leader that appended to this log. `None` while empty.
    pub fn last_epoch(&self) -> Option<u32> {
        self.inner.epochs.borrow().last_epoch()
    }

    /// OffsetsForLeaderEpoch: the largest epoch `<= epoch` this log has and
    /// the offset where it ends (the start of the next larger epoch, or the
    /// log end for the last one). `None` when the log has no such epoch. A
    /// follower whose last epoch is `e` truncates to the end the leader
    /// answers for `e` when the leader has `e` itself, and asks again with
    /// its own largest epoch below the answered one otherwise (KIP-279).
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        self.inner
            .epochs
            .borrow()
            .end_offset_for(epoch, self.next_offset())
    }

    /// The (epoch, start offset) entries of the epoch cache, oldest first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.inner.epochs.borrow().entries().to_vec()
    }

    /// What the log knows of an idempotent producer.
    pub fn producer(&self, producer_id: i64) -> Option<ProducerSummary> {
        self.inner.producers.borrow().summary(producer_id)
    }

    /// Idempotent producers remembered.
    pub fn producer_count(&self) -> usize {
        self.inner.producers.borrow().len()
    }

    #[cfg(test)]
    pub(super) fn producer_state(&self) -> ProducerState {
        self.inner.producers.borrow().clone()
    }

    #[cfg(test)]
    pub(super) fn dir(&self) -> PathBuf {
        self.inner.dir.clone()
    }

    /// Once the active segment is within two reservation windows of full,
    /// makes the next segment's file on the blocking pool (see `Spare`).
    fn prepare_spare(&self, active: &Segment) {
        let inner = &*self.inner;
        let window = inner.cfg.reserve_ahead_bytes;
        if inner.spare_pending.get()
            || active.remaining() > window.saturating_mul(2)
            || inner.spare_failed.get() == Some(active.base)
            || inner.spare.borrow().is_some()
        {
            return;
        }
        inner.spare_pending.set(true);
        let weak = Rc::downgrade(&self.inner);
        let path = spare_path(&inner.dir);
        let (bytes, base) = (inner.cfg.segment_bytes, active.base);
        let zero_fill = inner.cfg.zero_fill();
        glommio::spawn_local(async move {
            let made = glommio::executor()
                .spawn_blocking(move || Spare::create(path, bytes, window, zero_fill))
                .await;
            let leftover = match weak.upgrade() {
                Some(inner) => {
                    inner.spare_pending.set(false);
                    match made {
                        Ok(spare) if inner.life.get() == Life::Open => {
                            *inner.spare.borrow_mut() = Some(spare);
                            None
                        }
                        Ok(spare) => Some(spare),
                        Err(e) => {
                            tracing::debug!(error = %e, "making a spare segment failed; the roll will create the file");
                            inner.spare_failed.set(Some(base));
                            None
                        }
                    }
                }
                None => made.ok(),
            };
            if let Some(spare) = leftover {
                let _ = glommio::executor()
                    .spawn_blocking(move || spare.discard())
                    .await;
            }
        })
        .detach();
    }

    /// Under `EveryBatch`, returns once everything below `next_offset` is on
    /// disk; concurrent waiters share one fdatasync. Under `Interval`,
    /// returns at once (the background flusher syncs).
    pub async fn wait_durable(&self, next_offset: u64) -> Result<()> {
        match self.inner.cfg.flush {
            FlushPolicy::Interval(_) => self.inner.check_poison(),
            FlushPolicy::EveryBatch => self.inner.sync_upto(next_offset).await,
        }
    }

    /// Makes everything appended so far durable, whatever the policy.
    pub async fn sync(&self) -> Result<()> {
        self.inner.sync_upto(self.inner.next_offset.get()).await
    }

    /// Whole batches starting with the one containing `from` and ending at or
    /// below `upper` (exclusive bound, e.g. the high watermark), at most
    /// `max_bytes` but always one whole batch if any is available; empty at
    /// the end. Every batch served is CRC-checked. The active segment is
    /// served zero-copy from the mapping; sealed segments through io_uring
    /// reads. A read never spans two segments.
    pub async fn read(&self, from: u64, max_bytes: usize, upper: u64) -> Result<Bytes> {
        let inner = &*self.inner;
        if inner.life.get() != Life::Open {
            return Err(LogError::Closed);
        }
        let (start, end) = (self.start_offset(), self.next_offset());
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                start,
                end,
            });
        }
        let upper = upper.min(end);
        if from >= upper {
            return Ok(Bytes::new());
        }
        let seg = inner.segment_for(from);
        if seg.state() == SegState::Active {
            if let Some(b) = seg.read_hot(from, upper, max_bytes)? {
                return Ok(b);
            }
        }
        let cfg = &inner.cfg;
        seg.read_cold(
            from,
            upper,
            max_bytes,
            cfg.index_interval_bytes,
            &cfg.read_budget,
        )
        .await
    }

    /// Offset of the oldest batch still kept.
    pub fn start_offset(&self) -> u64 {
        self.inner.segments.borrow().first().map_or(0, |s| s.base)
    }

    /// Offset the next appended batch gets (the log end).
    pub fn next_offset(&self) -> u64 {
        self.inner.next_offset.get()
    }

    /// Bytes of batches kept, over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.segments.borrow().iter().map(|s| s.size()).sum()
    }

    /// Everything below this offset is known to be on disk.
    pub fn durable_offset(&self) -> u64 {
        self.inner.commit.durable()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.inner.segments.borrow().len()
    }

    /// fdatasync rounds run so far (group commit makes this smaller than the
    /// number of `wait_durable` calls).
    pub fn sync_rounds(&self) -> u64 {
        self.inner.commit.rounds()
    }

    /// Drops every batch at or after the batch containing `offset` (for
    /// replication). The stale bytes are zeroed on disk and synced before
    /// this returns, so recovery can never resurrect them; files a live
    /// mapping covers are never shrunk. Appends fail with `Truncating`
    /// meanwhile. At or below the log start, the log becomes empty and
    /// restarts at `offset`.
    pub async fn truncate_to(&self, offset: u64) -> Result<()> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _permit = inner.commit.lock().await?;
        inner.check_writable()?;
        if offset >= inner.next_offset.get() {
            return Ok(());
        }
        inner.truncating.set(true);
        let r = inner.truncate_locked(offset).await;
        inner.truncating.set(false);
        if let Err(e) = &r {
            inner.poison(e);
        }
        r?;
        // Writes the state files for the new end (truncate_locked set
        // `state_wanted`).
        inner.sync_locked().await
    }

    /// Empties the log and starts it again at `offset`, past its end: for
    /// a follower whose leader's log now starts after everything this one
    /// holds (the leader dropped those segments), so there is nothing to
    /// fetch in between. The files go and the change is synced before this
    /// returns, as for [`PartitionLog::truncate_to`]. An `offset` at or
    /// below the log end changes nothing.
    pub async fn restart_at(&self, offset: u64) -> Result<()> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _permit = inner.commit.lock().await?;
        inner.check_writable()?;
        if offset <= inner.next_offset.get() {
            return Ok(());
        }
        inner.truncating.set(true);
        let r = inner.restart_locked(offset).await;
        inner.truncating.set(false);
        if let Err(e) = &r {
            inner.poison(e);
        }
        r?;
        inner.sync_locked().await
    }

    /// How many whole oldest segments (never the active one) lie entirely
    /// below `offset`: what [`PartitionLog::drop_segments_below`] could
    /// drop once they are finalized. Cheap, for deciding whether to call it.
    pub fn segments_below(&self, offset: u64) -> usize {
        let segs = self.inner.segments.borrow();
        (0..segs.len().saturating_sub(1))
            .take_while(|&i| segs[i + 1].base <= offset)
            .count()
    }

    /// Deletes whole oldest segments (never the active one) beyond
    /// `retention_bytes` or older than `retention_ms`. Returns how many.
    ///
    /// Also forgets idempotent producers idle past their expiry at `now_ms`.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let inner = &*self.inner;
        inner.check_writable()?;
        inner.producers.borrow_mut().expire(now_ms);
        if inner.cfg.retention_bytes.is_none() && inner.cfg.retention_ms.is_none() {
            return Ok(0);
        }
        let _permit = inner.commit.lock().await?;
        // Finalize sealed segments first: only those may be deleted.
        inner.sync_locked().await?;
        let doomed: Vec<Rc<Segment>> = {
            let mut segs = inner.segments.borrow_mut();
            let infos: Vec<SegmentInfo> = segs
                .iter()
                .enumerate()
                .map(|(i, s)| SegmentInfo {
                    size: s.size(),
                    max_timestamp: s.max_timestamp(),
                    deletable: i + 1 < segs.len() && s.state() == SegState::Finalized,
                })
                .collect();
            let n = retention::plan(
                &infos,
                inner.cfg.retention_bytes,
                inner.cfg.retention_ms,
                now_ms,
            );
            segs.drain(..n).collect()
        };
        let n = doomed.len();
        if n > 0 {
            inner.trim_state_below(self.start_offset());
            tracing::info!(dir = %inner.dir.display(), segments = n, start_offset = self.start_offset(), "retention deleted segments");
            inner.delete_files(doomed).await?;
        }
        Ok(n)
    }

    /// Deletes the oldest whole segments whose every batch lies below
    /// `offset` (never the active one), e.g. once a compacted copy of their
    /// live records is durable further on. Returns how many went; the log
    /// then starts at the first kept segment's base, at or below `offset`.
    pub async fn drop_segments_below(&self, offset: u64) -> Result<usize> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _permit = inner.commit.lock().await?;
        // Only finalized segments may be deleted; syncing finalizes sealed ones.
        inner.sync_locked().await?;
        let doomed: Vec<Rc<Segment>> = {
            let mut segs = inner.segments.borrow_mut();
            let n = (0..segs.len().saturating_sub(1))
                .take_while(|&i| {
                    segs[i].state() == SegState::Finalized && segs[i + 1].base <= offset
                })
                .count();
            segs.drain(..n).collect()
        };
        let n = doomed.len();
        if n > 0 {
            inner.trim_state_below(self.start_offset());
            tracing::debug!(dir = %inner.dir.display(), segments = n, start_offset = self.start_offset(), "dropped compacted segments");
            inner.delete_files(doomed).await?;
        }
        Ok(n)
    }

    /// Syncs everything, trims the active segment, persists its index and
    /// writes the clean-shutdown marker, so the next open skips the scan.
    pub async fn close(self) -> Result<()> {
        let inner = &*self.inner;
        if inner.life.get() != Life::Open {
            return Err(LogError::Closed);
        }
        inner.life.set(Life::Closed);
        let _permit = inner.commit.lock().await?;
        // The state files then cover the whole log: the next open scans
        // nothing.
        inner.state_wanted.set(true);
        inner.sync_locked().await?;
        let active = inner.active();
        active.seal();
        active.finalize().await?;
        let dir = inner.dir.clone();
        let spare = inner.spare.borrow_mut().take();
        glommio::executor()
            .spawn_blocking(move || {
                if let Some(spare) = spare {
                    spare.discard()?;
                }
                recovery::write_clean_marker(&dir)
            })
            .await
            .map_err(|e| LogError::io("write clean-shutdown marker", e))?;
        tracing::info!(dir = %inner.dir.display(), next_offset = inner.next_offset.get(), "partition log closed");
        Ok(())
    }
}

impl Inner {
    fn active(&self) -> Rc<Segment> {
        // The chain is never empty (open creates a segment; truncation and
        // retention keep or recreate the active one).
        self.segments
            .borrow()
            .last()
            .cloned()
            .expect("a partition log always has an active segment")
    }

    fn segment_for(&self, offset: u64) -> Rc<Segment> {
        let segs = self.segments.borrow();
        let i = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
        segs[i].clone()
    }

    fn check_poison(&self) -> Result<()> {
        match &*self.poisoned.borrow() {
            Some(reason) => Err(LogError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.life.get() != Life::Open {
            return Err(LogError::Closed);
        }
        if self.truncating.get() {
            return Err(LogError::Truncating);
        }
        self.check_poison()
    }

    fn poison(&self, e: &LogError) {
        tracing::error!(dir = %self.dir.display(), error = %e, "partition log failed a write to disk; refusing writes until reopened");
        self.poisoned
            .borrow_mut()
            .get_or_insert_with(|| e.to_string());
    }

    /// Seals the full active segment and starts a new one at the log end.
    fn roll(&self) -> Result<Rc<Segment>> {
        let old = self.active();
        if old.size() == 0 {
            // A fresh segment that cannot take the batch: no roll helps.
            return Err(LogError::BatchTooLarge {
                size: usize::MAX,
                segment_bytes: self.cfg.segment_bytes,
            });
        }
        let (base, interval) = (self.next_offset.get(), self.cfg.index_interval_bytes);
        let spare = self.spare.borrow_mut().take();
        let made = spare.map(|sp| Segment::from_spare(&self.dir, base, sp, interval));
        let new = match made {
            Some(Ok(seg)) => seg,
            Some(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not use the spare segment; creating the file");
                Segment::create(&self.dir, base, self.cfg.segment_bytes, interval)?
            }
            None => Segment::create(&self.dir, base, self.cfg.segment_bytes, interval)?,
        };
        old.seal();
        self.segments.borrow_mut().push(new.clone());
        // Bounds what the next open scans to about one segment.
        self.state_wanted.set(true);
        tracing::debug!(dir = %self.dir.display(), segment = new.base, "rolled to a new segment");
        Ok(new)
    }

    /// Group commit (see `flush`): returns once everything below `upto` is
    /// durable, leading a sync round if none is in flight.
    async fn sync_upto(&self, upto: u64) -> Result<()> {
        let upto = upto.min(self.next_offset.get());
        loop {
            self.check_poison()?;
            if self.commit.durable() >= upto {
                return Ok(());
            }
            match self.commit.try_lead() {
                None => self.commit.round_end().await,
                Some(_leader) => {
                    // Let the tasks the previous round just released append
                    // their next batches first, so this round covers them.
                    glommio::executor().yield_now().await;
                    let _permit = self.commit.lock().await?;
                    return self.sync_locked().await;
                }
            }
        }
    }

    /// One group-commit round; the caller holds the commit permit.
    async fn sync_locked(&self) -> Result<()> {
        self.check_poison()?;
        let target = self.next_offset.get();
        // Captured with `target`, written once everything below it is
        // durable: the files never describe batches a crash can lose.
        let capture = self.capture_state(target);
        let dirty: Vec<Rc<Segment>> = self
            .segments
            .borrow()
            .iter()
            .filter(|s| s.needs_sync())
            .cloned()
            .collect();
        for seg in dirty {
            if let Err(e) = seg.fdatasync().await {
                self.poison(&e);
                return Err(e);
            }
            if seg.state() == SegState::Sealed {
                if self.life.get() == Life::Abandoned {
                    return Err(LogError::Closed);
                }
                if let Err(e) = seg.finalize().await {
                    self.poison(&e);
                    return Err(e);
                }
            }
        }
        self.commit.advance(target);
        if let Some(c) = capture {
            self.write_state(c).await;
        }
        Ok(())
    }

    /// The state files' contents for the log below `covered`, if they
    /// need writing.
    fn capture_state(&self, covered: u64) -> Option<Capture> {
        let epochs = self.epochs.borrow();
        if !self.state_wanted.get() && epochs.version() == self.epochs_written.get() {
            return None;
        }
        let snapshot = self
            .state_wanted
            .replace(false)
            .then(|| self.producers.borrow().encode(covered));
        Some(Capture {
            covered,
            epochs: Some((epochs.encode(covered), epochs.version())),
            snapshot,
        })
    }

    /// Writes captured state files. A failure is not the data's: it is
    /// retried by the next round, and meanwhile costs a longer scan at open.
    async fn write_state(&self, c: Capture) {
        if self.life.get() == Life::Abandoned {
            return; // a new open may be recovering the directory
        }
        let version = c.epochs.as_ref().map(|e| e.1);
        let snapshot = c.snapshot.is_some();
        let dir = self.dir.clone();
        let r = glommio::executor()
            .spawn_blocking(move || state::write(&dir, &c))
            .await;
        match r {
            Ok(()) => {
                if let Some(v) = version {
                    self.epochs_written.set(v);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "writing the leader-epoch and producer state files failed; will retry");
                if snapshot {
                    self.state_wanted.set(true);
                }
            }
        }
    }

    /// The log now starts at `start` (segments deleted): the epoch cache
    /// keeps one entry there if a batch is left, producers forget the
    /// deleted batches.
    fn trim_state_below(&self, start: u64) {
        let mut epochs = self.epochs.borrow_mut();
        epochs.truncate_from_start(start);
        // With no batch left, no entry either (as a rebuild would find).
        epochs.truncate_from_end(self.next_offset.get());
        drop(epochs);
        self.producers.borrow_mut().trim_below(start);
        self.state_wanted.set(true);
    }

    /// Header-scan spans of the segments holding batches at or after `from`.
    fn spans_from(&self, from: u64) -> Vec<Span> {
        self.segments
            .borrow()
            .iter()
            .filter(|s| s.next_offset() > from)
            .map(|s| {
                let (pos, offset) = s.scan_start(from);
                Span {
                    path: s.paths().0,
                    base: s.base,
                    size: s.size(),
                    pos,
                    offset,
                }
            })
            .collect()
    }

    /// Truncates the segments, then the state derived from them. The state
    /// files past `offset` are deleted first, so none can describe the
    /// dropped batches.
    async fn truncate_locked(&self, offset: u64) -> Result<()> {
        let dir = self.dir.clone();
        let limits = self.producers.borrow().limits();
        let snapshot = glommio::executor()
            .spawn_blocking(move || state::prepare_truncation(&dir, offset, limits))
            .await
            .map_err(|e| LogError::io("remove state files", e))?;
        self.truncate_segments(offset).await?;
        let end = self.next_offset.get();
        let start = self.segments.borrow().first().map_or(end, |s| s.base);
        self.epochs.borrow_mut().truncate_from_end(end);
        self.state_wanted.set(true);
        if self.producers.borrow_mut().trim_from(end) {
            return Ok(());
        }
        // A producer's state before `end` is unknown: replay the log below
        // `end` on the newest snapshot, or from the start without one.
        let (base, from) = match snapshot {
            Some((mut p, covered)) if covered <= end => {
                p.trim_below(start);
                (p, covered.max(start))
            }
            _ => (ProducerState::new(limits), start),
        };
        let spans = self.spans_from(from);
        let rebuilt = glommio::executor()
            .spawn_blocking(move || state::rebuild_producers(&spans, base, from, end))
            .await?;
        *self.producers.borrow_mut() = rebuilt;
        Ok(())
    }

    /// [`PartitionLog::restart_at`] under the commit lock: no segment, no
    /// epoch and no producer is left, and the state files go too.
    async fn restart_locked(&self, offset: u64) -> Result<()> {
        let dir = self.dir.clone();
        let limits = self.producers.borrow().limits();
        glommio::executor()
            .spawn_blocking(move || state::prepare_truncation(&dir, 0, limits))
            .await
            .map_err(|e| LogError::io("remove state files", e))?;
        self.empty_at(offset).await?;
        self.epochs.borrow_mut().truncate_from_end(0);
        *self.producers.borrow_mut() = ProducerState::new(limits);
        self.state_wanted.set(true);
        Ok(())
    }

    /// Deletes every segment and starts an empty one at `offset`.
    async fn empty_at(&self, offset: u64) -> Result<()> {
        let all: Vec<Rc<Segment>> = self.segments.borrow_mut().drain(..).collect();
        let res = self.delete_files(all).await;
        let new = Segment::create(
            &self.dir,
            offset,
            self.cfg.segment_bytes,
            self.cfg.index_interval_bytes,
        )?;
        self.segments.borrow_mut().push(new.clone());
        res?;
        self.next_offset.set(offset);
        self.commit.lower(offset);
        new.reserve_ahead(self.cfg.reserve_ahead_bytes, self.cfg.zero_fill());
        Ok(())
    }

    async fn truncate_segments(&self, offset: u64) -> Result<()> {
        let start = self.segments.borrow().first().map_or(0, |s| s.base);
        if offset <= start {
            return self.empty_at(offset).await;
        }
        let (later, target) = {
            let mut segs = self.segments.borrow_mut();
            let i = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
            let later: Vec<Rc<Segment>> = segs.drain(i + 1..).collect();
            (later, segs[i].clone())
        };
        self.delete_files(later).await?;
        if target.state() != SegState::Active {
            target.activate(self.cfg.segment_bytes)?;
        }
        target.truncate(offset).await?;
        self.next_offset.set(target.next_offset());
        self.commit.lower(target.next_offset());
        target.reserve_ahead(self.cfg.reserve_ahead_bytes, self.cfg.zero_fill());
        Ok(())
    }

    /// Deletes the files of segments already removed from the chain.
    async fn delete_files(&self, segs: Vec<Rc<Segment>>) -> Result<()> {
        let mut paths = Vec::with_capacity(segs.len() * 2);
        for s in &segs {
            s.quiesce().await;
            let (log, idx) = s.paths();
            paths.push(log);
            paths.push(idx);
        }
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                // Index first: a log file without its index is rebuilt by
                // scanning, an index without its log is ignored.
                for p in paths.iter().rev() {
                    disk::remove_if_exists(p)?;
                }
                disk::fsync_dir(&dir)
            })
            .await
            .map_err(|e| LogError::io("delete segment files", e))
    }
}

impl Flushable for Inner {
    fn is_open(&self) -> bool {
        self.life.get() == Life::Open
    }

    async fn flush_now(&self) -> Result<()> {
        self.sync_upto(self.next_offset.get()).await
    }
}
