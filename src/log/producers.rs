//! Idempotent producers: per producer id, its epoch and its last five
//! batches, so a retried batch is answered with its original offsets
//! instead of being appended twice, and a batch that skips sequences is
//! refused. The leader checks ([`ProducerState::check`]) then records; a
//! follower only records (the leader already decided), so whichever replica
//! leads next knows the same producers.
//!
//! The state is a function of the batch headers kept (and of expiry): it is
//! rebuilt at open from a snapshot plus a scan of the batches after it, and
//! trimmed when either end of the log goes. Memory is bounded: at most
//! `max_producers` producers (the one whose last batch is oldest in the log
//! is evicted) of at most five batches each. An evicted or expired producer
//! is unknown again, and an unknown producer's first batch is taken at any
//! sequence (there is nothing to compare it with).
//!
//! Snapshot file (`producers-<covered>.snapshot`), little-endian:
//!
//! ```text
//! magic "RMQPID01" | u64 covered | u32 count
//! | count × (i64 id, i16 epoch, u8 n, n × (i32 first_seq, i32 last_seq,
//!            u64 base_offset, u64 last_offset, i64 max_timestamp))
//! | u32 crc32 of everything before it
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use ringmq_protocol::batch::BatchHeader;

use super::error::{LogError, Result};

/// Batches remembered per producer (Kafka's
/// `max.in.flight.requests.per.connection` bound for idempotence).
pub(crate) const KEEP_BATCHES: usize = 5;

/// Producers a snapshot may hold, whatever the configured bound: a larger
/// file is damaged.
pub(crate) const MAX_SNAPSHOT_PRODUCERS: usize = 1 << 20;

const MAGIC: &[u8; 8] = b"RMQPID01";
const HEAD_LEN: usize = 8 + 8 + 4;
const PRODUCER_HEAD_LEN: usize = 8 + 2 + 1;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;

/// Largest snapshot file worth reading.
pub(crate) const MAX_SNAPSHOT_BYTES: u64 =
    (HEAD_LEN + 4 + MAX_SNAPSHOT_PRODUCERS * (PRODUCER_HEAD_LEN + KEEP_BATCHES * BATCH_LEN)) as u64;

/// Bounds on the producer state of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Producers remembered at most; past it the one idle longest goes.
    pub max_producers: usize,
    /// A producer whose last batch's `max_timestamp` is older than this is
    /// forgotten (checked at open and by `apply_retention`).
    pub expiry_ms: u64,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        ProducerLimits {
            max_producers: 10_000,
            expiry_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// What the log knows of one producer, for callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub epoch: i16,
    /// Sequence of the last record of its last batch.
    pub last_sequence: i32,
    /// Offset of the last record of its last batch.
    pub last_offset: u64,
    /// `max_timestamp` of its last batch.
    pub last_timestamp: i64,
}

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
    last_offset: u64,
    max_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first, 1..=KEEP_BATCHES, all of `epoch`.
    batches: VecDeque<BatchMeta>,
}

impl Producer {
    fn last(&self) -> Option<&BatchMeta> {
        self.batches.back()
    }
}

/// What the leader does with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate {
        base_offset: u64,
        last_offset: u64,
    },
}

/// First and last sequence of a batch; sequences wrap from `i32::MAX` to 0.
fn seq_range(h: &BatchHeader) -> (i32, i32) {
    let first = h.base_sequence;
    let span = i64::from(h.record_count) - 1;
    let last = (i64::from(first) + span).rem_euclid(i64::from(i32::MAX) + 1);
    (first, last as i32)
}

fn next_seq(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// The idempotent producers of one partition log.
#[derive(Debug, Clone)]
pub(crate) struct ProducerState {
    producers: HashMap<i64, Producer>,
    /// Offset of each producer's last record → its id: the idle order.
    by_last: BTreeMap<u64, i64>,
    limits: ProducerLimits,
}

impl PartialEq for ProducerState {
    fn eq(&self, other: &Self) -> bool {
        self.producers == other.producers
    }
}

impl ProducerState {
    pub fn new(limits: ProducerLimits) -> Self {
        ProducerState {
            producers: HashMap::new(),
            by_last: BTreeMap::new(),
            limits,
        }
    }

    pub fn limits(&self) -> ProducerLimits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn summary(&self, producer_id: i64) -> Option<ProducerSummary> {
        let p = self.producers.get(&producer_id)?;
        let last = p.last()?;
        Some(ProducerSummary {
            epoch: p.epoch,
            last_sequence: last.last_seq,
            last_offset: last.last_offset,
            last_timestamp: last.max_timestamp,
        })
    }

    /// The leader's decision on a verified batch; nothing changes.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict> {
        let id = h.producer_id;
        if id < 0 {
            return Ok(Verdict::Append);
        }
        if h.producer_epoch < 0 || h.base_sequence < 0 {
            return Err(LogError::InvalidProducerFields {
                producer_id: id,
                producer_epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            });
        }
        let Some(p) = self.producers.get(&id) else {
            return Ok(Verdict::Append);
        };
        let (first, last) = seq_range(h);
        if h.producer_epoch < p.epoch {
            return Err(LogError::ProducerFenced {
                producer_id: id,
                epoch: h.producer_epoch,
                current: p.epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            // A new epoch (a restarted producer) starts its sequences over.
            return match first {
                0 => Ok(Verdict::Append),
                got => Err(LogError::OutOfOrderSequence {
                    producer_id: id,
                    expected: 0,
                    got,
                }),
            };
        }
        if let Some(b) = p
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = p.last().map_or(0, |b| next_seq(b.last_seq));
        if first == expected {
            Ok(Verdict::Append)
        } else {
            Err(LogError::OutOfOrderSequence {
                producer_id: id,
                expected,
                got: first,
            })
        }
    }

    /// A batch was appended at `base_offset` (by the leader after `check`,
    /// or by a follower as the leader stored it): remember it.
    pub fn record(&mut self, h: &BatchHeader, base_offset: u64) {
        if h.producer_id < 0 {
            return;
        }
        let (first_seq, last_seq) = seq_range(h);
        let meta = BatchMeta {
            first_seq,
            last_seq,
            base_offset,
            last_offset: base_offset + u64::from(h.record_count) - 1,
            max_timestamp: h.max_timestamp,
        };
        self.push(h.producer_id, h.producer_epoch, meta);
    }

    fn push(&mut self, id: i64, epoch: i16, meta: BatchMeta) {
        if let Some(p) = self.producers.get_mut(&id) {
            if let Some(old) = p.last() {
                self.by_last.remove(&old.last_offset);
            }
            if p.epoch != epoch {
                p.epoch = epoch;
                p.batches.clear();
            }
            if p.batches.len() >= KEEP_BATCHES {
                p.batches.pop_front();
            }
            p.batches.push_back(meta);
        } else {
            while self.producers.len() >= self.limits.max_producers.max(1) {
                let Some((_, idle)) = self.by_last.pop_first() else {
                    break;
                };
                self.producers.remove(&idle);
            }
            self.producers.insert(
                id,
                Producer {
                    epoch,
                    batches: VecDeque::from([meta]),
                },
            );
        }
        self.by_last.insert(meta.last_offset, id);
    }

    /// The log now starts at `start`: batches below it are forgotten, and so
    /// is a producer left with none.
    pub fn trim_below(&mut self, start: u64) {
        self.producers.retain(|_, p| {
            while p.batches.front().is_some_and(|b| b.base_offset < start) {
                p.batches.pop_front();
            }
            !p.batches.is_empty()
        });
        // `start` is a batch boundary: the emptied producers' last batches
        // end below it, the others' last batches start at or after it.
        let kept = self.by_last.split_off(&start);
        self.by_last = kept;
    }

    /// The log now ends at `end`: batches at or after it are forgotten.
    /// Returns false when what a producer had before is unknown, so the
    /// caller must rebuild from the log: it lost every batch remembered, or
    /// lost some while remembering the full five (older ones would take
    /// their places).
    pub fn trim_from(&mut self, end: u64) -> bool {
        let mut exact = true;
        let by_last = &mut self.by_last;
        self.producers.retain(|id, p| {
            let Some(old_last) = p.last().map(|b| b.last_offset) else {
                return false;
            };
            if old_last < end {
                return true;
            }
            by_last.remove(&old_last);
            if p.batches.len() >= KEEP_BATCHES {
                exact = false;
            }
            while p.batches.back().is_some_and(|b| b.base_offset >= end) {
                p.batches.pop_back();
            }
            match p.last() {
                Some(b) => {
                    by_last.insert(b.last_offset, *id);
                    true
                }
                None => {
                    exact = false;
                    false
                }
            }
        });
        exact
    }

    /// Forgets producers whose last batch is older than the expiry at
    /// `now_ms`. Returns how many went.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let expiry = i64::try_from(self.limits.expiry_ms).unwrap_or(i64::MAX);
        let before = self.producers.len();
        let by_last = &mut self.by_last;
        self.producers.retain(|_, p| {
            let Some(last) = p.last() else { return false };
            let keep = now_ms.saturating_sub(last.max_timestamp) <= expiry;
            if !keep {
                by_last.remove(&last.last_offset);
            }
            keep
        });
        before - self.producers.len()
    }

    /// The snapshot file of this state, which describes the log below
    /// `covered`.
    pub fn encode(&self, covered: u64) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(
            HEAD_LEN + 4 + ids.len() * (PRODUCER_HEAD_LEN + KEEP_BATCHES * BATCH_LEN),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&covered.to_le_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            let p = &self.producers[id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&p.epoch.to_le_bytes());
            out.push(p.batches.len() as u8);
            for b in &p.batches {
                out.extend_from_slice(&b.first_seq.to_le_bytes());
                out.extend_from_slice(&b.last_seq.to_le_bytes());
                out.extend_from_slice(&b.base_offset.to_le_bytes());
                out.extend_from_slice(&b.last_offset.to_le_bytes());
                out.extend_from_slice(&b.max_timestamp.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a snapshot: the state (bounded by `limits`) and its `covered`
    /// offset, or `None` when the file is damaged in any way.
    pub fn decode(buf: &[u8], limits: ProducerLimits) -> Option<(ProducerState, u64)> {
        if buf.len() < HEAD_LEN + 4 || &buf[..8] != MAGIC {
            return None;
        }
        let body_end = buf.len() - 4;
        if crc32fast::hash(&buf[..body_end]).to_le_bytes() != buf[body_end..] {
            return None;
        }
        let mut r = Reader(&buf[8..body_end]);
        let covered = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_SNAPSHOT_PRODUCERS {
            return None;
        }
        // Read every producer first, then insert them in log order so the
        // bound evicts the ones idle longest.
        let mut all: Vec<(i64, i16, Vec<BatchMeta>)> = Vec::with_capacity(count.min(r.0.len()));
        for _ in 0..count {
            let id = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let n = usize::from(r.u8()?);
            if id < 0 || n == 0 || n > KEEP_BATCHES {
                return None;
            }
            let mut batches: Vec<BatchMeta> = Vec::with_capacity(n);
            for _ in 0..n {
                let b = BatchMeta {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                    max_timestamp: r.u64()? as i64,
                };
                let follows = batches
                    .last()
                    .map_or(true, |p| p.last_offset < b.base_offset);
                if b.base_offset > b.last_offset || b.last_offset >= covered || !follows {
                    return None;
                }
                batches.push(b);
            }
            all.push((id, epoch, batches));
        }
        if !r.0.is_empty() {
            return None;
        }
        all.sort_unstable_by_key(|(_, _, b)| b.last().map_or(0, |b| b.last_offset));
        let mut state = ProducerState::new(limits);
        for (id, epoch, batches) in all {
            if state.producers.contains_key(&id) {
                return None;
            }
            for b in batches {
                if state.by_last.contains_key(&b.last_offset) {
                    return None;
                }
                state.push(id, epoch, b);
            }
        }
        Some((state, covered))
    }
}

/// Little-endian reads that fail instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ringmq_protocol::batch::{BatchBuilder, ProducerStamp};

    /// A verified header of an idempotent batch of `records` records.
    pub(crate) fn header(id: i64, epoch: i16, seq: i32, records: u32, ts: i64) -> BatchHeader {
        let mut b = BatchBuilder::new(ts);
        for _ in 0..records {
            b.push(ts, None, Some(b"v"), &[]);
        }
        let batch = b.finish(Some(ProducerStamp {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        }));
        ringmq_protocol::batch::verify(&batch).unwrap()
    }

    fn limits(max: usize) -> ProducerLimits {
        ProducerLimits {
            max_producers: max,
            expiry_ms: 1000,
        }
    }

    /// Checks then records, like the leader; returns the verdict.
    fn lead(s: &mut ProducerState, h: &BatchHeader, at: &mut u64) -> Result<Verdict> {
        let v = s.check(h)?;
        if v == Verdict::Append {
            s.record(h, *at);
            *at += u64::from(h.record_count);
        }
        Ok(v)
    }

    #[test]
    fn duplicates_in_order_and_out_of_order() {
        let mut s = ProducerState::new(limits(10));
        let mut at = 100;
        for i in 0..7 {
            assert_eq!(
                lead(&mut s, &header(1, 0, i * 2, 2, 0), &mut at).unwrap(),
                Verdict::Append
            );
        }
        // Batches 2..=6 are remembered; batch 1 (seq 2-3) is not.
        assert_eq!(
            s.check(&header(1, 0, 12, 2, 0)).unwrap(),
            Verdict::Duplicate {
                base_offset: 112,
                last_offset: 113
            }
        );
        assert_eq!(
            s.check(&header(1, 0, 4, 2, 0)).unwrap(),
            Verdict::Duplicate {
                base_offset: 104,
                last_offset: 105
            }
        );
        assert!(matches!(
            s.check(&header(1, 0, 2, 2, 0)),
            Err(LogError::OutOfOrderSequence {
                expected: 14,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(1, 0, 15, 1, 0)),
            Err(LogError::OutOfOrderSequence {
                expected: 14,
                got: 15,
                ..
            })
        ));
        // Same first sequence, other length: not a duplicate.
        assert!(s.check(&header(1, 0, 12, 1, 0)).is_err());
        assert_eq!(s.check(&header(1, 0, 14, 3, 0)).unwrap(), Verdict::Append);
        // Unknown producers start anywhere; non-idempotent batches pass.
        assert_eq!(s.check(&header(2, 0, 77, 1, 0)).unwrap(), Verdict::Append);
        assert_eq!(s.check(&header(-1, -1, -1, 1, 0)).unwrap(), Verdict::Append);
        assert!(matches!(
            s.check(&header(3, -1, 0, 1, 0)),
            Err(LogError::InvalidProducerFields { .. })
        ));
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut s = ProducerState::new(limits(10));
        let mut at = 0;
        lead(&mut s, &header(1, 3, 0, 1, 0), &mut at).unwrap();
        lead(&mut s, &header(1, 3, 1, 1, 0), &mut at).unwrap();
        assert!(matches!(
            s.check(&header(1, 2, 2, 1, 0)),
            Err(LogError::ProducerFenced {
                epoch: 2,
                current: 3,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(1, 4, 2, 1, 0)),
            Err(LogError::OutOfOrderSequence {
                expected: 0,
                got: 2,
                ..
            })
        ));
        assert_eq!(
            lead(&mut s, &header(1, 4, 0, 1, 0), &mut at).unwrap(),
            Verdict::Append
        );
        // The old epoch's batches are no longer duplicates of anything.
        assert!(matches!(
            s.check(&header(1, 3, 1, 1, 0)),
            Err(LogError::ProducerFenced { .. })
        ));
        assert_eq!(s.summary(1).unwrap().epoch, 4);
        assert_eq!(s.summary(1).unwrap().last_offset, 2);
    }

    #[test]
    fn sequences_wrap() {
        let mut s = ProducerState::new(limits(10));
        let mut at = 0;
        lead(&mut s, &header(1, 0, i32::MAX - 1, 3, 0), &mut at).unwrap();
        assert_eq!(s.summary(1).unwrap().last_sequence, 0);
        assert_eq!(
            lead(&mut s, &header(1, 0, 1, 1, 0), &mut at).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            s.check(&header(1, 0, i32::MAX - 1, 3, 0)).unwrap(),
            Verdict::Duplicate {
                base_offset: 0,
                last_offset: 2
            }
        );
    }

    #[test]
    fn bounded_by_count_evicting_the_idle_longest() {
        let mut s = ProducerState::new(limits(3));
        let mut at = 0;
        for id in 1..=3 {
            lead(&mut s, &header(id, 0, 0, 1, 0), &mut at).unwrap();
        }
        lead(&mut s, &header(1, 0, 1, 1, 0), &mut at).unwrap(); // 1 is busy again
        lead(&mut s, &header(4, 0, 0, 1, 0), &mut at).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.summary(2).is_none(), "2 was idle longest");
        assert!(s.summary(1).is_some() && s.summary(3).is_some() && s.summary(4).is_some());
    }

    #[test]
    fn expiry_by_last_batch_timestamp() {
        let mut s = ProducerState::new(limits(10));
        let mut at = 0;
        lead(&mut s, &header(1, 0, 0, 1, 5_000), &mut at).unwrap();
        lead(&mut s, &header(2, 0, 0, 1, 1_000), &mut at).unwrap();
        assert_eq!(s.expire(6_000), 1);
        assert!(s.summary(2).is_none() && s.summary(1).is_some());
        lead(&mut s, &header(3, 0, 0, 1, 9_000), &mut at).unwrap();
        assert_eq!(s.by_last.len(), 2);
    }

    #[test]
    fn trims_from_both_ends() {
        let mut s = ProducerState::new(limits(10));
        let mut at = 0;
        for i in 0..3 {
            lead(&mut s, &header(1, 0, i, 1, 0), &mut at).unwrap(); // 0, 1, 2
        }
        lead(&mut s, &header(2, 0, 0, 1, 0), &mut at).unwrap(); // 3
        lead(&mut s, &header(1, 0, 3, 1, 0), &mut at).unwrap(); // 4
        assert!(s.trim_from(4));
        assert_eq!(s.summary(1).unwrap().last_sequence, 2);
        assert_eq!(s.by_last.len(), 2);
        assert!(!s.trim_from(3), "producer 2 lost everything");
        assert!(s.summary(2).is_none());
        s.trim_below(2);
        assert_eq!(s.summary(1).unwrap().last_offset, 2);
        s.trim_below(3);
        assert_eq!(s.len(), 0);
        assert!(s.by_last.is_empty());
    }

    #[test]
    fn snapshot_round_trip_and_damage() {
        let mut s = ProducerState::new(limits(10));
        let mut at = 10;
        for i in 0..7 {
            lead(
                &mut s,
                &header(i % 3, (i % 2) as i16, 0, 2, i64::from(i as i32)),
                &mut at,
            )
            .ok();
        }
        let buf = s.encode(at);
        let (d, covered) = ProducerState::decode(&buf, limits(10)).unwrap();
        assert_eq!((&d, covered), (&s, at));
        assert_eq!(d.by_last, s.by_last);
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 1;
            assert!(
                ProducerState::decode(&b, limits(10)).is_none(),
                "flip at {i}"
            );
        }
        assert!(ProducerState::decode(&buf[..buf.len() - 1], limits(10)).is_none());
        // Batches at or past `covered` make it damaged.
        assert!(ProducerState::decode(&s.encode(at - 1), limits(10)).is_none());
        // A smaller bound keeps the most recently active.
        let (d, _) = ProducerState::decode(&buf, limits(1)).unwrap();
        assert_eq!(d.len(), 1);
        let busiest = s.by_last.last_key_value().map(|(_, id)| *id).unwrap();
        assert!(d.summary(busiest).is_some());
    }
}
