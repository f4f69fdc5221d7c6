//! Replica appends: a follower stores the leader's batches exactly as the
//! leader stored them (same bytes, base offsets and leader epochs), so both
//! logs hold one history and their leader-epoch caches agree. No producer
//! checks here: the leader already decided, the follower only records.

use ringmq_protocol::batch::{BatchError, BatchHeader};

use super::error::{LogError, Result};
use super::partition::{Appended, PartitionLog};

impl PartitionLog {
    /// Appends one batch as the leader stored it: length and CRC are
    /// verified (nothing is written if either is bad), its `base_offset`
    /// must be this log's end (`ReplicaGap` otherwise), and its base offset
    /// and leader epoch are kept. Rolls like `append`; a larger leader epoch
    /// opens an epoch-cache entry, and an idempotent producer's batch is
    /// recorded without checks.
    pub fn append_replica(&self, batch: &[u8]) -> Result<Appended> {
        let h = self.check_incoming(batch)?;
        let expected = self.next_offset();
        if h.base_offset != expected {
            return Err(LogError::ReplicaGap {
                expected,
                got: h.base_offset,
            });
        }
        self.write_batch(batch, &h, h.base_offset, h.leader_epoch)
    }

    /// Appends the batches laid end to end in `data` (one replica fetch
    /// answer) with [`PartitionLog::append_replica`], in order. Stops at the
    /// first batch that is refused with `ReplicaBatch`, naming the offset it
    /// was for and its byte position; the batches before it stay appended
    /// (`next_offset()` says how far it got). Returns the whole stretch
    /// appended: `base_offset` is the log end before, `bytes` the total.
    pub fn append_replicas(&self, data: &[u8]) -> Result<Appended> {
        let base_offset = self.next_offset();
        let mut pos = 0;
        while pos < data.len() {
            let offset = self.next_offset();
            let refused = |source: LogError| LogError::ReplicaBatch {
                offset,
                position: pos,
                source: Box::new(source),
            };
            let rest = &data[pos..];
            let len = BatchHeader::parse(rest)
                .map_err(|e| refused(LogError::InvalidBatch(e)))?
                .total_len();
            let Some(one) = rest.get(..len) else {
                return Err(refused(LogError::InvalidBatch(BatchError::Truncated {
                    needed: len,
                    have: rest.len(),
                })));
            };
            self.append_replica(one).map_err(refused)?;
            pos += len;
        }
        Ok(Appended {
            base_offset,
            next_offset: self.next_offset(),
            bytes: pos,
            duplicate: false,
        })
    }
}
