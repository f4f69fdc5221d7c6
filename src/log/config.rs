//! How a partition log is laid out on disk and when it is made durable.

use std::time::Duration;

use ringmq_protocol::batch::BATCH_HEADER_LEN;

use super::error::{LogError, Result};
use super::read_budget::ReadBudget;

/// When appended batches reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `wait_durable` returns once an fdatasync covering the batch finished.
    /// Concurrent waiters share one fdatasync (group commit).
    EveryBatch,
    /// A background task fdatasyncs every interval; `wait_durable` returns at
    /// once. A crash loses at most the last interval.
    Interval(Duration),
}

/// Bytes of sealed-segment reads held at once, by default: 16 maximal
/// fetches.
pub const DEFAULT_READ_BUDGET: usize = 128 << 20;

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of a segment file, and so of its mapping. 4 KiB ..= 4 GiB - 1
    /// (index positions are u32).
    pub segment_bytes: u64,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Keep at least this many bytes; delete whole older segments beyond it.
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    pub flush: FlushPolicy,
    /// Disk blocks are reserved (fallocate) this far ahead of the write
    /// position, off the executor thread, leaving the file system a margin:
    /// a full disk shows up as `StorageFull` on an append while the broker's
    /// own small files can still be written. Under `every-batch` it is
    /// zero-filled too, so group commits sync data only. Also the disk space
    /// an idle partition holds.
    pub reserve_ahead_bytes: u64,
    /// What reads of sealed segments may hold at once; shared by every log
    /// given a clone of it.
    pub read_budget: ReadBudget,
}

impl Default for LogConfig {
    /// 256 MiB segments: large enough that a roll (a few metadata syscalls on
    /// the executor) happens every ~0.2 s at full speed, small enough that
    /// retention is fine-grained and an unclean restart rescans at most
    /// 256 MiB of the active segment (~0.1-0.3 s). 64 MiB reserved ahead is
    /// ~40 ms of appends at 1.5 GB/s, so the off-thread fallocate keeps
    /// ahead of the appends.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 256 << 20,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            flush: FlushPolicy::Interval(Duration::from_millis(100)),
            reserve_ahead_bytes: 64 << 20,
            read_budget: ReadBudget::new(DEFAULT_READ_BUDGET),
        }
    }
}

impl LogConfig {
    /// Whether space reserved ahead is also zero-filled: only when each
    /// append waits for its sync (see `segment::Reservation`).
    pub(crate) fn zero_fill(&self) -> bool {
        self.flush == FlushPolicy::EveryBatch
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_bytes < 4096 || self.segment_bytes > u64::from(u32::MAX) {
            return Err(LogError::Config(format!(
                "segment_bytes {} is outside 4096..={}",
                self.segment_bytes,
                u32::MAX
            )));
        }
        if self.segment_bytes < BATCH_HEADER_LEN as u64 {
            return Err(LogError::Config(
                "segment_bytes below one batch header".into(),
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::Config("index_interval_bytes must be > 0".into()));
        }
        if let FlushPolicy::Interval(d) = self.flush {
            if d.is_zero() {
                return Err(LogError::Config("flush interval must be > 0".into()));
            }
        }
        Ok(())
    }
}
