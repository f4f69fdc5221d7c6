//! Property test: random sequences of append / read / roll / reopen /
//! truncate / retention against an in-memory model of the log.

mod common;

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use ringmq::log::{FlushPolicy, LogConfig, LogError, PartitionLog};
use ringmq_protocol::batch::{stamp, verify};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: u32,
        value_len: usize,
        epoch: u32,
    },
    Read {
        from: u16,
        max_bytes: usize,
        upper: u16,
    },
    Reopen {
        clean: bool,
    },
    Truncate {
        at: u16,
    },
    Retention,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => (1u32..6, 0usize..400, 0u32..3).prop_map(|(records, value_len, epoch)| Op::Append { records, value_len, epoch }),
        6 => (any::<u16>(), 0usize..3000, any::<u16>()).prop_map(|(from, max_bytes, upper)| Op::Read { from, max_bytes, upper }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Retention),
        1 => Just(Op::Sync),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    segment_bytes: u64,
    index_interval_bytes: u32,
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
    interval_flush: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        4096u64..12_000,
        1u32..2048,
        proptest::option::of(0u64..20_000),
        proptest::option::of(0u64..300),
        any::<bool>(),
    )
        .prop_map(
            |(
                segment_bytes,
                index_interval_bytes,
                retention_bytes,
                retention_ms,
                interval_flush,
            )| Setup {
                segment_bytes,
                index_interval_bytes,
                retention_bytes,
                retention_ms,
                interval_flush,
            },
        )
}

/// The model: the batches kept, as stored (stamped), and the log bounds.
#[derive(Default)]
struct Model {
    batches: Vec<(u64, u64, Bytes)>, // (base, next, bytes)
    start: u64,
    next: u64,
}

impl Model {
    /// Index of the batch containing `offset`.
    fn find(&self, offset: u64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.1 <= offset);
        (i < self.batches.len() && self.batches[i].0 <= offset).then_some(i)
    }
}

fn pick_offset(m: &Model, x: u16) -> u64 {
    // Mostly inside or at the edges of the log, sometimes outside.
    let span = m.next - m.start + 3;
    (m.start + u64::from(x) % span).saturating_sub(1)
}

async fn check_read(log: &PartitionLog, m: &Model, from: u64, max_bytes: usize, upper: u64) {
    let r = log.read(from, max_bytes, upper).await;
    if from < m.start || from > m.next {
        assert!(
            matches!(r, Err(LogError::OffsetOutOfRange { .. })),
            "read {from} outside [{}, {}]: {r:?}",
            m.start,
            m.next
        );
        return;
    }
    let got = r.unwrap_or_else(|e| panic!("read {from} failed: {e}"));
    let upper = upper.min(m.next);
    if from >= upper {
        assert!(got.is_empty());
        return;
    }
    let i = m.find(from).expect("model has the batch");
    let first = &m.batches[i];
    if first.1 > upper {
        assert!(got.is_empty(), "batch straddling upper must not be served");
        return;
    }
    let parts = common::split_batches(&got);
    assert!(
        !parts.is_empty(),
        "read {from} (upper {upper}) returned nothing"
    );
    assert!(
        parts.len() == 1 || got.len() <= max_bytes,
        "read exceeded max_bytes"
    );
    for (k, part) in parts.iter().enumerate() {
        let want = &m.batches[i + k];
        assert!(want.1 <= upper, "served a batch ending past upper");
        assert_eq!(part, &want.2, "batch {} differs", want.0);
    }
}

fn check_bounds(log: &PartitionLog, m: &Model) {
    assert_eq!(log.start_offset(), m.start, "start offset");
    assert_eq!(log.next_offset(), m.next, "next offset");
    let bytes: u64 = m.batches.iter().map(|b| b.2.len() as u64).sum();
    assert_eq!(log.size_bytes(), bytes, "size");
}

fn run_case(s: Setup, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: s.segment_bytes,
        index_interval_bytes: s.index_interval_bytes,
        retention_bytes: s.retention_bytes,
        retention_ms: s.retention_ms,
        flush: if s.interval_flush {
            FlushPolicy::Interval(Duration::from_millis(2))
        } else {
            FlushPolicy::EveryBatch
        },
        reserve_ahead_bytes: 8192,
        ..LogConfig::default()
    };
    let ex = common::small_executor();
    ex.run(async move {
        let path = dir.path().to_path_buf();
        let mut log = Some(PartitionLog::open(&path, cfg.clone()).await.unwrap());
        let mut m = Model::default();
        let mut clock: i64 = 1_000;
        for (n, op) in ops.into_iter().enumerate() {
            let l = log.as_ref().unwrap();
            clock += 10;
            match op {
                Op::Append {
                    records,
                    value_len,
                    epoch,
                } => {
                    let b = common::batch(n as u64, records, value_len, clock);
                    let a = l.append(&b, epoch).unwrap();
                    assert_eq!(a.base_offset, m.next);
                    let mut stored = b.to_vec();
                    stamp(&mut stored, a.base_offset, epoch);
                    m.batches
                        .push((a.base_offset, a.next_offset, Bytes::from(stored)));
                    m.next = a.next_offset;
                    if n % 3 == 0 {
                        l.wait_durable(a.next_offset).await.unwrap();
                    }
                }
                Op::Read {
                    from,
                    max_bytes,
                    upper,
                } => {
                    let from = pick_offset(&m, from);
                    let upper = if upper % 4 == 0 {
                        u64::MAX
                    } else {
                        pick_offset(&m, upper)
                    };
                    check_read(l, &m, from, max_bytes, upper).await;
                }
                Op::Reopen { clean } => {
                    let l = log.take().unwrap();
                    if clean {
                        l.close().await.unwrap();
                    } else {
                        drop(l);
                    }
                    let l = PartitionLog::open(&path, cfg.clone()).await.unwrap();
                    assert!(!path.join(ringmq::log::CLEAN_SHUTDOWN_MARKER).exists());
                    log = Some(l);
                }
                Op::Truncate { at } => {
                    let at = pick_offset(&m, at);
                    l.truncate_to(at).await.unwrap();
                    if at <= m.start {
                        if at < m.next {
                            m.batches.clear();
                            m.start = at;
                            m.next = at;
                        }
                    } else if let Some(i) = m.find(at) {
                        m.next = m.batches[i].0;
                        m.batches.truncate(i);
                    }
                }
                Op::Retention => {
                    let before = l.start_offset();
                    l.apply_retention(clock).await.unwrap();
                    let start = l.start_offset();
                    assert!(start >= before);
                    if start > before {
                        let i = m.batches.partition_point(|b| b.0 < start);
                        assert!(
                            i == m.batches.len() || m.batches[i].0 == start,
                            "retention start {start} not a batch boundary"
                        );
                        m.batches.drain(..i);
                        m.start = start;
                        if let Some(r) = cfg.retention_bytes {
                            let by_age = cfg.retention_ms.is_some();
                            assert!(
                                by_age || l.size_bytes() >= r,
                                "retention went below retention_bytes"
                            );
                        }
                    }
                }
                Op::Sync => {
                    l.sync().await.unwrap();
                    assert_eq!(l.durable_offset(), m.next);
                }
            }
            let l = log.as_ref().unwrap();
            check_bounds(l, &m);
            for b in &m.batches {
                verify(&b.2).unwrap();
            }
        }
        // Finally every batch reads back, one by one and in one sweep.
        let l = log.take().unwrap();
        for b in &m.batches {
            check_read(&l, &m, b.0, 0, u64::MAX).await;
        }
        let mut at = m.start;
        while at < m.next {
            let got = l.read(at, 1 << 20, u64::MAX).await.unwrap();
            let parts = common::split_batches(&got);
            assert!(!parts.is_empty());
            at = verify(parts.last().unwrap()).unwrap().next_offset();
        }
        l.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn log_agrees_with_model(s in setup(), ops in proptest::collection::vec(op(), 1..100)) {
        run_case(s, ops);
    }
}
