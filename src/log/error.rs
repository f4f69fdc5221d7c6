//! Errors of the partition log. Each variant is something a caller can act on
//! and maps to one protocol error code (see the `protocol_hint` comments).

use std::fmt;

use ringmq_protocol::batch::BatchError;

/// Where a bad batch was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLocation {
    /// A batch handed to `append`; nothing of it was written.
    Incoming,
    /// A batch on disk: the segment (named by its base offset) and the byte
    /// position of the batch inside that segment file.
    Stored { segment: u64, position: u64 },
}

impl fmt::Display for BatchLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchLocation::Incoming => f.write_str("incoming batch"),
            BatchLocation::Stored { segment, position } => {
                write!(f, "segment {segment:020} at byte {position}")
            }
        }
    }
}

/// Everything that can go wrong in the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// CRC mismatch, or a batch whose framing or offset does not fit where it
    /// lies (protocol: `CORRUPT_BATCH`). Never served as data.
    #[error("corrupt batch ({location}): {reason}")]
    CorruptBatch {
        location: BatchLocation,
        reason: String,
    },
    /// A batch handed to `append` that is malformed in a way other than its
    /// CRC (protocol: `INVALID_BATCH`).
    #[error("invalid batch: {0}")]
    InvalidBatch(BatchError),
    /// `append` takes exactly one whole batch.
    #[error("append takes exactly one batch: got {given} bytes, the batch is {batch} bytes")]
    NotOneBatch { given: usize, batch: usize },
    /// The batch is larger than a whole segment (protocol: `MESSAGE_TOO_LARGE`).
    #[error("batch of {size} bytes does not fit a segment of {segment_bytes} bytes")]
    BatchTooLarge { size: usize, segment_bytes: u64 },
    /// `requested` is below the log start or above its end (protocol:
    /// `OFFSET_OUT_OF_RANGE`).
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        requested: u64,
        start: u64,
        end: u64,
    },
    /// Disk blocks for the append could not be reserved (protocol:
    /// `STORAGE_FULL`). Nothing was written; reads go on.
    #[error("no disk space left for the partition log")]
    StorageFull,
    /// A read of a sealed segment would take the broker past its read
    /// budget (protocol: `BUSY`); retry after a backoff.
    #[error(
        "reads of old data hold {used} of {limit} bytes; {wanted} more do not fit, retry later"
    )]
    ReadBudget {
        wanted: usize,
        used: usize,
        limit: usize,
    },
    /// `append_replica`: the batch does not start where the log ends, so it
    /// is not the leader's next batch for this replica (refetch from
    /// `expected`, or truncate first).
    #[error("replica batch starts at offset {got}, the log ends at {expected}")]
    ReplicaGap { expected: u64, got: u64 },
    /// `append_replicas`: the batch at `offset` (byte `position` of the
    /// fetched data) was refused; the batches before it were appended.
    #[error(
        "replica batch for offset {offset} (byte {position} of the fetched data) refused: {source}"
    )]
    ReplicaBatch {
        offset: u64,
        position: usize,
        #[source]
        source: Box<LogError>,
    },
    /// An idempotent producer's batch skips or repeats sequences other than
    /// a retry of one of its last five batches (protocol:
    /// `OUT_OF_ORDER_SEQUENCE`). Nothing was written.
    #[error("producer {producer_id}: sequence {got} where {expected} was expected")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// A batch from an older epoch of an idempotent producer than the log
    /// has seen: a zombie instance. Nothing was written.
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A batch with a producer id but a negative epoch or sequence (protocol:
    /// `CORRUPT_BATCH` or `INVALID_REQUEST`). Nothing was written.
    #[error("producer {producer_id}: an idempotent batch needs producer_epoch and base_sequence >= 0, got {producer_epoch} and {base_sequence}")]
    InvalidProducerFields {
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    },
    /// The `LogConfig` cannot work.
    #[error("invalid log configuration: {0}")]
    Config(String),
    /// The log was closed (or every handle dropped).
    #[error("the partition log is closed")]
    Closed,
    /// An append raced a `truncate_to` in progress; retry once it returns.
    #[error("the partition log is being truncated")]
    Truncating,
    /// An earlier fdatasync failed. The kernel may have dropped the dirty
    /// pages, so the log cannot promise durability any more: every write
    /// fails until it is reopened (and recovered).
    #[error("an earlier fdatasync failed ({0}); reopen the log")]
    Poisoned(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl LogError {
    /// An I/O failure; a full disk (or quota) is `StorageFull` wherever it
    /// strikes (an append's reservation, a roll, an index write), so the
    /// client hears the one code it can act on.
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        let source = source.into();
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            tracing::debug!(context = %context.into(), "disk full");
            return LogError::StorageFull;
        }
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupt(segment: u64, position: u64, reason: impl Into<String>) -> Self {
        LogError::CorruptBatch {
            location: BatchLocation::Stored { segment, position },
            reason: reason.into(),
        }
    }
}

/// Shorthand used throughout the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
