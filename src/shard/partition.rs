//! One partition owned by this core: its log, and the long polls waiting for
//! the log to grow.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;

use super::failure::Failure;
use super::messages::{Fetched, Produced};
use crate::log::{LogConfig, LogError, PartitionLog};
use ringmq_protocol::ErrorCode;

/// Offset spec for the first offset still in the log.
pub const EARLIEST: i64 = -2;
/// Offset spec for the offset the next record will get.
pub const LATEST: i64 = -1;

pub struct Partition {
    log: PartitionLog,
    /// Signalled after every append, so long polls re-read.
    appended: Event,
    /// Set when the partition is being closed or deleted: long polls answer now.
    closing: Cell<bool>,
}

impl Partition {
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Self, Failure> {
        let log = PartitionLog::open(dir, config).await?;
        Ok(Partition {
            log,
            appended: Event::new(),
            closing: Cell::new(false),
        })
    }

    /// Appends a batch; returns once it is as durable as the flush policy promises.
    pub async fn produce(&self, batch: Bytes) -> Result<Produced, Failure> {
        if self.closing.get() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                "partition is closing",
            ));
        }
        let appended = self.log.append(&batch, 0)?;
        self.appended.notify(usize::MAX);
        self.log.wait_durable(appended.next_offset).await?;
        Ok(Produced {
            base_offset: appended.base_offset,
            log_start_offset: self.log.start_offset(),
        })
    }

    /// Reads from `offset`; with nothing (or less than `min_bytes`) there, waits
    /// for appends until `max_wait` has passed.
    pub async fn fetch(
        &self,
        offset: u64,
        max_bytes: u32,
        min_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched, Failure> {
        let deadline = Instant::now() + max_wait;
        loop {
            // Listen before reading, so an append between the read and the wait is not missed.
            let listener = self.appended.listen();
            let high_watermark = self.log.next_offset();
            let records = self
                .log
                .read(offset, max_bytes as usize, high_watermark)
                .await?;
            let now = Instant::now();
            let enough = !records.is_empty() && records.len() >= min_bytes as usize;
            if enough || now >= deadline || self.closing.get() {
                return Ok(Fetched {
                    records,
                    high_watermark,
                    log_start_offset: self.log.start_offset(),
                });
            }
            let wait = async {
                listener.await;
                Ok(())
            };
            let _ = glommio::timer::timeout(deadline - now, wait).await;
        }
    }

    pub fn list_offsets(&self, spec: i64) -> Result<u64, Failure> {
        match spec {
            EARLIEST => Ok(self.log.start_offset()),
            LATEST => Ok(self.log.next_offset()),
            _ => Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!("offset spec {spec} is not supported: use -2 (earliest) or -1 (latest)"),
            )),
        }
    }

    /// Publishes where the log stands to the metrics.
    pub fn report(&self, topic: &str, partition: u32) {
        crate::metrics::partition(
            topic,
            partition,
            self.log.start_offset(),
            self.log.next_offset(),
            self.log.size_bytes(),
        );
    }

    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.log.apply_retention(now_ms).await
    }

    /// Refuses new appends and wakes every long poll.
    pub fn shut_down(&self) {
        self.closing.set(true);
        self.appended.notify(usize::MAX);
    }

    /// Syncs the log and marks it cleanly closed; later appends are refused.
    pub async fn close(&self) -> Result<(), LogError> {
        self.shut_down();
        self.log.clone().close().await
    }
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("next_offset", &self.log.next_offset())
            .finish()
    }
}
