//! The leader-epoch cache: for each leader epoch found in the log, the offset
//! of its first batch (Kafka's KIP-101/279). A follower that comes back after
//! a leader change asks the new leader where its last epoch ends
//! ([`EpochCache::end_offset_for`]) and truncates there, so logs that
//! diverged agree again before fetching goes on.
//!
//! The cache is a function of the batch headers kept: the first batch opens
//! an entry, and so does every batch whose `leader_epoch` is larger than the
//! last entry's (a smaller one opens nothing: the caller fences stale
//! leaders). Truncating the end drops entries at or after the new end;
//! deleting old segments keeps one entry at the new start, so an epoch that
//! began in deleted data still answers from there.
//!
//! On disk (`leader-epochs` in the partition directory), little-endian,
//! rewritten whole (tmp + fsync + rename) in a sync round, so `covered`
//! never exceeds what is durable:
//!
//! ```text
//! magic "RMQEPO01" | u64 covered | u32 count | count × (u32 epoch, u64 start)
//! | u32 crc32 of everything before it
//! ```
//!
//! `covered` is the log end the entries describe: at open, the batches from
//! there to the log end are scanned to bring the cache up to date.

/// File name of the persisted cache in a partition directory.
pub(crate) const EPOCHS_FILE: &str = "leader-epochs";

const MAGIC: &[u8; 8] = b"RMQEPO01";
const HEAD_LEN: usize = 8 + 8 + 4;
const ENTRY_LEN: usize = 4 + 8;

/// Entries kept at most. One entry is one leader change that appended to
/// this partition; past the bound the oldest goes (its data would answer
/// from the next entry's start, as after retention).
pub(crate) const MAX_ENTRIES: usize = 1 << 16;

/// One leader epoch and the offset of its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start_offset: u64,
}

/// The (epoch, start offset) pairs of one log, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<EpochEntry>,
    /// Bumped on every change, so a sync round knows whether what it wrote
    /// is still current.
    version: u64,
}

impl EpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The epoch of the last entry.
    pub fn last_epoch(&self) -> Option<u32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// A batch with `epoch` was appended at `base_offset` (after every
    /// entry's start). Returns whether an entry was added.
    pub fn observe(&mut self, epoch: u32, base_offset: u64) -> bool {
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch || base_offset <= last.start_offset {
                return false;
            }
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: base_offset,
        });
        self.version += 1;
        true
    }

    /// The log now ends at `end`: entries starting at or after it go.
    pub fn truncate_from_end(&mut self, end: u64) {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.version += 1;
        }
    }

    /// The log now starts at `start`: of the entries at or below it only the
    /// last stays, moved to `start`.
    pub fn truncate_from_start(&mut self, start: u64) {
        let at_or_below = self.entries.partition_point(|e| e.start_offset <= start);
        if at_or_below == 0 {
            return;
        }
        let drop = at_or_below - 1;
        let moved = self.entries[drop].start_offset != start;
        if drop > 0 || moved {
            self.entries.drain(..drop);
            self.entries[0].start_offset = start;
            self.version += 1;
        }
    }

    /// Kafka's OffsetsForLeaderEpoch answer for a log ending at `log_end`:
    /// the largest epoch `<= epoch` this log has, and where it ends (the
    /// start of the next larger epoch, or `log_end` for the last one).
    /// `None` when the log has no epoch `<= epoch` (empty, or every epoch it
    /// still has is larger): nothing at or above the log start is known to
    /// agree.
    pub fn end_offset_for(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let floor = self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |e| e.start_offset);
        Some((floor.epoch, end))
    }

    /// The file contents for a cache describing the log below `covered`;
    /// entries starting at or after `covered` are left out.
    pub fn encode(&self, covered: u64) -> Vec<u8> {
        let n = self.entries.partition_point(|e| e.start_offset < covered);
        let mut out = Vec::with_capacity(HEAD_LEN + n * ENTRY_LEN + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&covered.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for e in &self.entries[..n] {
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.start_offset.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a file: the cache and its `covered` offset, or `None` when the
    /// file is damaged in any way (magic, length, CRC, entries not strictly
    /// increasing or at or past `covered`, too many).
    pub fn decode(buf: &[u8]) -> Option<(EpochCache, u64)> {
        if buf.len() < HEAD_LEN + 4 || &buf[..8] != MAGIC {
            return None;
        }
        let covered = u64::from_le_bytes(buf[8..16].try_into().ok()?);
        let count = u32::from_le_bytes(buf[16..20].try_into().ok()?) as usize;
        if count > MAX_ENTRIES || buf.len() != HEAD_LEN + count * ENTRY_LEN + 4 {
            return None;
        }
        let body_end = buf.len() - 4;
        if crc32fast::hash(&buf[..body_end]).to_le_bytes() != buf[body_end..] {
            return None;
        }
        let mut cache = EpochCache::default();
        for chunk in buf[HEAD_LEN..body_end].chunks_exact(ENTRY_LEN) {
            let e = EpochEntry {
                epoch: u32::from_le_bytes(chunk[..4].try_into().ok()?),
                start_offset: u64::from_le_bytes(chunk[4..].try_into().ok()?),
            };
            if e.start_offset >= covered || !cache.observe(e.epoch, e.start_offset) {
                return None;
            }
        }
        Some((cache, covered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(u32, u64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, s) in pairs {
            assert!(c.observe(e, s));
        }
        c
    }

    fn pairs(c: &EpochCache) -> Vec<(u32, u64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn only_a_larger_epoch_opens_an_entry() {
        let mut c = EpochCache::default();
        assert!(c.observe(3, 0));
        assert!(!c.observe(3, 5));
        assert!(!c.observe(2, 7));
        assert!(c.observe(5, 9));
        assert_eq!(pairs(&c), vec![(3, 0), (5, 9)]);
        assert_eq!(c.last_epoch(), Some(5));
    }

    #[test]
    fn end_offset_follows_offsets_for_leader_epoch() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(c.end_offset_for(0, 40), None);
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(5, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(6, 40), Some((6, 40)));
        assert_eq!(c.end_offset_for(u32::MAX, 40), Some((6, 40)));
        assert_eq!(EpochCache::default().end_offset_for(4, 0), None);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        c.truncate_from_end(25);
        assert_eq!(pairs(&c), vec![(1, 0), (3, 10)]);
        c.truncate_from_end(11);
        assert_eq!(pairs(&c), vec![(1, 0), (3, 10)]);
        let v = c.version();
        c.truncate_from_start(0);
        assert_eq!(c.version(), v, "nothing changed");
        c.truncate_from_start(12);
        assert_eq!(pairs(&c), vec![(3, 12)]);
        c.truncate_from_start(5); // below the start: nothing to drop
        assert_eq!(pairs(&c), vec![(3, 12)]);
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        c.truncate_from_start(10);
        assert_eq!(pairs(&c), vec![(3, 10), (6, 25)]);
        c.truncate_from_end(0);
        assert!(c.entries().is_empty());
    }

    #[test]
    fn bounded() {
        let mut c = EpochCache::default();
        for i in 0..MAX_ENTRIES as u32 + 3 {
            c.observe(i, u64::from(i) * 2);
        }
        assert_eq!(c.entries().len(), MAX_ENTRIES);
        assert_eq!(c.entries()[0].epoch, 3);
    }

    #[test]
    fn file_round_trip_and_damage() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        let buf = c.encode(30);
        let (d, covered) = EpochCache::decode(&buf).unwrap();
        assert_eq!((pairs(&d), covered), (pairs(&c), 30));
        // Entries past `covered` are left out.
        let (d, _) = EpochCache::decode(&c.encode(25)).unwrap();
        assert_eq!(pairs(&d), vec![(1, 0), (3, 10)]);
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 1;
            assert_eq!(EpochCache::decode(&b), None, "flip at {i}");
        }
        assert_eq!(EpochCache::decode(&buf[..buf.len() - 1]), None);
        assert_eq!(EpochCache::decode(b""), None);
    }
}
