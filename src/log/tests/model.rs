//! Property test: random leader appends (with growing leader epochs and
//! idempotent producers, retries included), replica appends, truncations,
//! dropped segments, retention and reopens (clean, crash-like, state files
//! missing or damaged) keep the epoch cache and the producer state equal to
//! what the headers of the batches kept say, and `end_offset_for_epoch`
//! answers as computed from them.

use std::collections::HashMap;

use proptest::prelude::*;
use ringmq_protocol::batch::BatchHeader;

use super::*;
use crate::log::producers::ProducerState;
use crate::log::{Appended, ProducerSummary};

#[derive(Debug, Clone)]
enum Op {
    Lead {
        records: u32,
        value_len: usize,
        bump: u32,
        producer: Option<i64>,
        retry: bool,
    },
    Replica {
        records: u32,
        value_len: usize,
        bump: u32,
        producer: Option<(i64, i16, i32)>,
        two: bool,
    },
    Truncate {
        at: u16,
    },
    Drop {
        at: u16,
    },
    Retention,
    Reopen {
        how: u8,
    },
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (1u32..4, 0usize..700, prop_oneof![4 => Just(0u32), 1 => 1u32..3],
               proptest::option::of(0i64..5), any::<bool>())
            .prop_map(|(records, value_len, bump, producer, retry)| Op::Lead { records, value_len, bump, producer, retry }),
        6 => (1u32..4, 0usize..400, prop_oneof![3 => Just(0u32), 1 => 1u32..3],
              proptest::option::of((0i64..5, 0i16..3, 0i32..50)), any::<bool>())
            .prop_map(|(records, value_len, bump, producer, two)| Op::Replica { records, value_len, bump, producer, two }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::Drop { at }),
        1 => Just(Op::Retention),
        2 => (0u8..4).prop_map(|how| Op::Reopen { how }),
        1 => Just(Op::Sync),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    segment_bytes: u64,
    index_interval_bytes: u32,
    retention_bytes: Option<u64>,
    interval_flush: bool,
    max_producers: usize,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        4096u64..6000,
        1u32..1024,
        proptest::option::of(2000u64..20_000),
        any::<bool>(),
        2usize..6,
    )
        .prop_map(
            |(
                segment_bytes,
                index_interval_bytes,
                retention_bytes,
                interval_flush,
                max_producers,
            )| {
                Setup {
                    segment_bytes,
                    index_interval_bytes,
                    retention_bytes,
                    interval_flush,
                    max_producers,
                }
            },
        )
}

/// The batches kept, as stored, and the log bounds.
#[derive(Default)]
struct Model {
    batches: Vec<(BatchHeader, Bytes)>,
    start: u64,
    next: u64,
}

impl Model {
    fn push(&mut self, stored: Bytes) {
        let h = verify(&stored).unwrap();
        assert_eq!(h.base_offset, self.next);
        self.next = h.next_offset();
        self.batches.push((h, stored));
    }

    /// The epoch entries the batches kept call for.
    fn epochs(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        for (h, _) in &self.batches {
            if out.last().map_or(true, |l| h.leader_epoch > l.0) {
                out.push((h.leader_epoch, h.base_offset));
            }
        }
        out
    }

    fn end_offset_for(&self, epoch: u32) -> Option<(u32, u64)> {
        let e = self.epochs();
        let i = e.iter().rposition(|x| x.0 <= epoch)?;
        Some((e[i].0, e.get(i + 1).map_or(self.next, |x| x.1)))
    }

    fn producers(&self, limits: ProducerLimits) -> ProducerState {
        let mut p = ProducerState::new(limits);
        for (h, _) in &self.batches {
            p.record(h, h.base_offset);
        }
        p
    }

    fn find(&self, offset: u64) -> Option<usize> {
        let i = self
            .batches
            .partition_point(|b| b.0.next_offset() <= offset);
        (i < self.batches.len() && self.batches[i].0.base_offset <= offset).then_some(i)
    }

    fn drop_below(&mut self, start: u64) {
        let i = self.batches.partition_point(|b| b.0.base_offset < start);
        assert!(
            i == self.batches.len() || self.batches[i].0.base_offset == start,
            "new start {start} is not a batch boundary"
        );
        self.batches.drain(..i);
        self.start = start;
    }
}

fn pick_offset(m: &Model, x: u16) -> u64 {
    let span = m.next - m.start + 3;
    (m.start + u64::from(x) % span).saturating_sub(1)
}

fn check(log: &PartitionLog, m: &Model, limits: ProducerLimits, what: &str) {
    assert_eq!(
        (log.start_offset(), log.next_offset()),
        (m.start, m.next),
        "bounds after {what}"
    );
    let want = m.epochs();
    assert_eq!(epochs(log), want, "epoch cache after {what}");
    assert_eq!(log.last_epoch(), want.last().map(|e| e.0));
    let top = want.last().map_or(0, |e| e.0);
    for e in 0..=top + 1 {
        assert_eq!(
            log.end_offset_for_epoch(e),
            m.end_offset_for(e),
            "end offset for epoch {e} after {what}"
        );
    }
    assert!(
        log.producer_state() == m.producers(limits),
        "producer state after {what}:\n log {:?}\n model {:?}",
        log.producer_state(),
        m.producers(limits)
    );
}

fn run_case(s: Setup, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let c = LogConfig {
        segment_bytes: s.segment_bytes,
        index_interval_bytes: s.index_interval_bytes,
        retention_bytes: s.retention_bytes,
        retention_ms: None,
        flush: if s.interval_flush {
            FlushPolicy::Interval(Duration::from_millis(2))
        } else {
            FlushPolicy::EveryBatch
        },
        reserve_ahead_bytes: 8192,
        ..LogConfig::default()
    };
    let limits = ProducerLimits {
        max_producers: s.max_producers,
        ..ProducerLimits::default()
    };
    executor().run(async move {
        let path = dir.path().to_path_buf();
        let mut log = PartitionLog::open_with(&path, c.clone(), limits)
            .await
            .unwrap();
        let mut m = Model::default();
        // The last batch each producer sent, where it went, and what the
        // log knew of the producer right after.
        let mut sent: HashMap<i64, (Bytes, Appended, ProducerSummary)> = HashMap::new();
        let mut clock = now_ms();
        for (n, op) in ops.into_iter().enumerate() {
            clock += 10;
            let epoch_now = m.epochs().last().map_or(0, |e| e.0);
            let what = format!("op {n}: {op:?}");
            match op {
                Op::Lead {
                    records,
                    value_len,
                    bump,
                    producer,
                    retry,
                } => {
                    let epoch = epoch_now + bump;
                    let known = producer.and_then(|id| log.producer(id).map(|p| (id, p)));
                    let again = known.and_then(|(id, p)| {
                        let (b, a, after) = sent.get(&id)?;
                        (retry && p == *after).then(|| (b.clone(), *a))
                    });
                    if let Some((b, first)) = again {
                        let a = log.append(&b, epoch).unwrap();
                        assert!(a.duplicate, "{what}: a retry");
                        assert_eq!(
                            (a.base_offset, a.next_offset),
                            (first.base_offset, first.next_offset)
                        );
                        check(&log, &m, limits, &what);
                        continue;
                    }
                    let stamp = producer.map(|id| {
                        let (producer_epoch, base_sequence) = match log.producer(id) {
                            Some(p) if p.last_sequence == i32::MAX => (p.epoch, 0),
                            Some(p) => (p.epoch, p.last_sequence + 1),
                            None => (0, 1000),
                        };
                        ProducerStamp {
                            producer_id: id,
                            producer_epoch,
                            base_sequence,
                        }
                    });
                    let b = batch(records, value_len, clock, stamp);
                    let a = log
                        .append(&b, epoch)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!a.duplicate);
                    if let Some(id) = producer {
                        let after = log.producer(id).unwrap();
                        sent.insert(id, (b.clone(), a, after));
                    }
                    m.push(stored(&b, a.base_offset, epoch));
                    if n % 3 == 0 {
                        log.wait_durable(a.next_offset).await.unwrap();
                    }
                }
                Op::Replica {
                    records,
                    value_len,
                    bump,
                    producer,
                    two,
                } => {
                    let epoch = epoch_now + bump;
                    // What a leader would have taken: the next sequence, or
                    // sequence 0 of a new producer epoch; anything from an
                    // unknown producer.
                    let stamp = producer.map(|(producer_id, e, seq)| {
                        let (producer_epoch, base_sequence) = match log.producer(producer_id) {
                            Some(p) if e == 0 => (p.epoch, p.last_sequence.wrapping_add(1).max(0)),
                            Some(p) => (p.epoch.saturating_add(e), 0),
                            None => (e, seq),
                        };
                        ProducerStamp {
                            producer_id,
                            producer_epoch,
                            base_sequence,
                        }
                    });
                    let first = stored(&batch(records, value_len, clock, stamp), m.next, epoch);
                    let mut data = first.to_vec();
                    let mut parts = vec![first];
                    if two {
                        let next = m.next + u64::from(records);
                        let second = stored(&batch(1, value_len / 2, clock, None), next, epoch);
                        data.extend_from_slice(&second);
                        parts.push(second);
                    }
                    let a = if two {
                        log.append_replicas(&data)
                    } else {
                        log.append_replica(&data)
                    }
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!((a.base_offset, a.bytes), (m.next, data.len()));
                    for p in parts {
                        m.push(p);
                    }
                }
                Op::Truncate { at } => {
                    let at = pick_offset(&m, at);
                    log.truncate_to(at).await.unwrap();
                    if at <= m.start {
                        if at < m.next {
                            m.batches.clear();
                            m.start = at;
                            m.next = at;
                        }
                    } else if let Some(i) = m.find(at) {
                        m.next = m.batches[i].0.base_offset;
                        m.batches.truncate(i);
                    }
                }
                Op::Drop { at } => {
                    let at = pick_offset(&m, at);
                    log.drop_segments_below(at).await.unwrap();
                    m.drop_below(log.start_offset());
                }
                Op::Retention => {
                    log.apply_retention(clock).await.unwrap();
                    m.drop_below(log.start_offset());
                }
                Op::Reopen { how } => {
                    let how = [
                        Reopen::Clean,
                        Reopen::Unclean,
                        Reopen::Missing,
                        Reopen::Damaged,
                    ][usize::from(how) % 4];
                    let dir = log.dir();
                    match how {
                        Reopen::Unclean => drop(log),
                        _ => log.close().await.unwrap(),
                    }
                    damage_state(&dir, how, n);
                    log = PartitionLog::open_with(&dir, c.clone(), limits)
                        .await
                        .unwrap();
                }
                Op::Sync => {
                    log.sync().await.unwrap();
                }
            }
            check(&log, &m, limits, &what);
        }
        log.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn epochs_and_producers_agree_with_the_batches_kept(s in setup(), ops in proptest::collection::vec(op(), 1..80)) {
        run_case(s, ops);
    }
}
