//! Tests of the partition log's replication support through `PartitionLog`
//! on a real directory: replica appends, the leader-epoch cache and
//! idempotent producers, across truncation, retention and reopen. `model`
//! is the property test against a model computed from the batches kept.

mod model;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringmq_protocol::batch::{stamp, verify, BatchBuilder, ProducerStamp};

use super::epochs::EPOCHS_FILE;
use super::state::{list_snapshots, snapshot_name};
use super::{FlushPolicy, LogConfig, LogError, PartitionLog, ProducerLimits};

pub(super) fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .make()
        .expect("create a test executor")
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch of `records` records of `value_len` bytes, from an idempotent
/// producer when `producer` is given.
pub(super) fn batch(
    records: u32,
    value_len: usize,
    ts: i64,
    producer: Option<ProducerStamp>,
) -> Bytes {
    let mut b = BatchBuilder::new(ts);
    let v = vec![7u8; value_len];
    for _ in 0..records {
        b.push(ts, None, Some(&v), &[]);
    }
    b.finish(producer)
}

fn idem(id: i64, epoch: i16, seq: i32, records: u32) -> Bytes {
    batch(
        records,
        10,
        now_ms(),
        Some(ProducerStamp {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        }),
    )
}

/// A batch as a leader would have stored it.
fn stored(b: &Bytes, base: u64, epoch: u32) -> Bytes {
    let mut raw = b.to_vec();
    stamp(&mut raw, base, epoch);
    Bytes::from(raw)
}

pub(super) fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 512,
        retention_ms: None,
        flush: FlushPolicy::EveryBatch,
        reserve_ahead_bytes: 8192,
        ..LogConfig::default()
    }
}

fn epochs(log: &PartitionLog) -> Vec<(u32, u64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

/// How a test reopens a log.
#[derive(Debug, Clone, Copy)]
enum Reopen {
    Clean,
    /// Dropped without `close`, like a crash of the process.
    Unclean,
    /// Closed, then the state files deleted.
    Missing,
    /// Closed, then the state files damaged.
    Damaged,
}

async fn reopen(log: PartitionLog, how: Reopen, c: &LogConfig) -> PartitionLog {
    let dir = log.dir();
    match how {
        Reopen::Unclean => drop(log),
        _ => log.close().await.unwrap(),
    }
    damage_state(&dir, how, 0);
    PartitionLog::open(&dir, c.clone()).await.unwrap()
}

/// The epoch file and every producer snapshot in `dir`.
pub(super) fn state_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.join(EPOCHS_FILE)];
    out.extend(
        list_snapshots(dir)
            .unwrap()
            .into_iter()
            .map(|c| dir.join(snapshot_name(c))),
    );
    out
}

/// Deletes (`Missing`) or flips a bit in (`Damaged`) every state file of a
/// closed log; `seed` picks the bit.
fn damage_state(dir: &Path, how: Reopen, seed: usize) {
    if matches!(how, Reopen::Clean | Reopen::Unclean) {
        return;
    }
    let files = state_files(dir);
    assert!(files.len() >= 2, "a closed log has its state files");
    for p in files {
        match how {
            Reopen::Missing => std::fs::remove_file(&p).unwrap(),
            Reopen::Damaged => {
                let mut b = std::fs::read(&p).unwrap();
                let at = (b.len() / 2 + seed * 7919) % b.len();
                b[at] ^= 0x40;
                std::fs::write(&p, b).unwrap();
            }
            _ => {}
        }
    }
}

fn run(f: impl std::future::Future<Output = ()> + 'static) {
    executor().run(f);
}

fn open_in(dir: &Path, c: &LogConfig) -> impl std::future::Future<Output = PartitionLog> {
    let (dir, c) = (dir.to_path_buf(), c.clone());
    async move { PartitionLog::open(&dir, c).await.unwrap() }
}

#[test]
fn a_follower_stores_the_leaders_batches_as_they_are() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (lp, fp) = (ld.path().to_path_buf(), fd.path().to_path_buf());
    run(async move {
        let c = cfg(4096);
        let leader = open_in(&lp, &c).await;
        let follower = open_in(&fp, &c).await;
        let ts = now_ms();
        for (i, epoch) in [0u32, 0, 2, 2, 2, 5, 5, 9].into_iter().enumerate() {
            leader
                .append(&batch(1 + i as u32 % 3, 300, ts, None), epoch)
                .unwrap();
        }
        // Fetch and append in rounds, as a replica fetcher would.
        while follower.next_offset() < leader.next_offset() {
            let data = leader
                .read(follower.next_offset(), 1000, u64::MAX)
                .await
                .unwrap();
            let a = follower.append_replicas(&data).unwrap();
            assert_eq!(a.bytes, data.len());
            follower.wait_durable(a.next_offset).await.unwrap();
        }
        assert!(follower.segment_count() > 1, "the follower rolled");
        assert_eq!(all_bytes(&leader).await, all_bytes(&follower).await);
        assert_eq!(epochs(&leader), vec![(0, 0), (2, 3), (5, 9), (9, 13)]);
        assert_eq!(epochs(&follower), epochs(&leader));
        assert_eq!(follower.last_epoch(), Some(9));
        assert_eq!(follower.end_offset_for_epoch(4), Some((2, 9)));
        let follower = reopen(follower, Reopen::Unclean, &c).await;
        assert_eq!(epochs(&follower), epochs(&leader));
        leader.close().await.unwrap();
        follower.close().await.unwrap();
    });
}

/// Every batch of the log, as stored.
pub(super) async fn all_bytes(l: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = l.start_offset();
    while at < l.next_offset() {
        let b = l.read(at, 1 << 20, u64::MAX).await.unwrap();
        for one in ringmq_protocol::batch::batches(&b) {
            at = verify(&one.unwrap()).unwrap().next_offset();
        }
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn zeros_reserved_ahead_never_land_on_appended_batches() {
    // Under every-batch the space reserved ahead is zero-filled off the
    // executor. Appends that outrun that job (a 64 KiB window, batches of
    // ~8 KiB appended without a pause) reserve for themselves, and must
    // find every byte they wrote still there: in memory, after a clean
    // reopen and after an unclean one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = LogConfig {
            reserve_ahead_bytes: 64 << 10,
            ..cfg(4 << 20)
        };
        assert!(c.zero_fill());
        let mut log = open_in(&path, &c).await;
        let ts = now_ms();
        let mut expected = Vec::new();
        for round in 0..6u32 {
            for i in 0..60u32 {
                let b = batch(1 + (round * 60 + i) % 7, 1200, ts, None);
                let base = log.append(&b, 0).unwrap().base_offset;
                expected.extend_from_slice(&stored(&b, base, 0));
            }
            // Let reservation jobs run between the bursts.
            log.wait_durable(log.next_offset()).await.unwrap();
            assert_eq!(all_bytes(&log).await, expected, "round {round}");
        }
        for how in [Reopen::Clean, Reopen::Unclean] {
            log = reopen(log, how, &c).await;
            assert_eq!(all_bytes(&log).await, expected, "{how:?}");
        }
        log.close().await.unwrap();
    });
}

#[test]
fn pages_behind_the_appends_go_to_writeback_before_the_flush() {
    // Under an interval flush, whole pages behind the write position are
    // handed to writeback as the log grows, so the flush is left with at
    // most a few MiB (the kernel alone would keep them dirty for 30 s).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = LogConfig {
            flush: FlushPolicy::Interval(Duration::from_secs(3600)),
            ..cfg(64 << 20)
        };
        let log = open_in(&path, &c).await;
        let ts = now_ms();
        // ~9.7 MB in bursts, with pauses in which the jobs finish.
        for _ in 0..20 {
            for _ in 0..50 {
                log.append(&batch(8, 1200, ts, None), 0).unwrap();
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let file = std::fs::File::open(path.join(format!("{:020}.log", 0))).unwrap();
        let most = super::segment::WRITE_BEHIND / super::disk::PAGE + 1;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let Some(dirty) = dirty_pages(&file) else {
                eprintln!("SKIPPED: this kernel has no cachestat(2) (Linux 6.5+)");
                break;
            };
            if dirty <= most {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{dirty} pages still dirty, more than {most}"
            );
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_hot_read_held_across_finalize_reads_the_same_bytes() {
    // Reads of the active segment are slices of its mapping. Finalizing the
    // segment trims its file and drops the mapping's page tables under a
    // slice still held (a response being written, say): the slice must
    // read the same bytes afterwards.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = cfg(1 << 20);
        let log = open_in(&path, &c).await;
        let ts = now_ms();
        let mut first = Vec::new();
        for _ in 0..40 {
            let b = batch(4, 250, ts, None);
            let base = log.append(&b, 0).unwrap().base_offset;
            first.extend_from_slice(&stored(&b, base, 0));
        }
        let held = log.read(0, 1 << 20, log.next_offset()).await.unwrap();
        assert_eq!(held, first);
        while log.segment_count() < 2 {
            log.append(&batch(4, 1000, ts, None), 0).unwrap();
        }
        log.sync().await.unwrap(); // finalizes the first segment
        assert_eq!(held, first);
        log.close().await.unwrap();
        assert_eq!(held, first);
    });
}

/// Dirty page-cache pages of `file` (cachestat(2)); `None` where the
/// kernel lacks it.
fn dirty_pages(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::io::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64, // 0: to the end of the file
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451; // the same on every architecture
    let range = Range { off: 0, len: 0 };
    let mut st = Stat::default();
    // SAFETY: cachestat(2) reads `range` and fills `st`, both ours and
    // laid out as the kernel's structs.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut Stat,
            0,
        )
    };
    (r == 0).then_some(st.dirty)
}

#[test]
fn replica_appends_refuse_gaps_and_bad_batches_and_write_nothing_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = cfg(1 << 20);
        let log = open_in(&path, &c).await;
        let ts = now_ms();
        let b0 = stored(&batch(2, 10, ts, None), 0, 3);
        let b1 = stored(&batch(3, 10, ts, None), 2, 4);
        assert!(matches!(
            log.append_replica(&b1),
            Err(LogError::ReplicaGap {
                expected: 0,
                got: 2
            })
        ));
        let mut bad = b0.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            log.append_replica(&bad),
            Err(LogError::CorruptBatch { .. })
        ));
        assert_eq!((log.next_offset(), log.size_bytes()), (0, 0));
        let a = log.append_replica(&b0).unwrap();
        assert_eq!((a.base_offset, a.next_offset, a.duplicate), (0, 2, false));
        // Three batches, the third corrupt: two go in, the error names the third.
        let b2 = stored(&batch(1, 10, ts, None), 5, 4);
        let mut data = [&b1[..], &b2[..], &bad[..]].concat();
        stamp(&mut data[b1.len() + b2.len()..], 6, 4);
        match log.append_replicas(&data) {
            Err(LogError::ReplicaBatch {
                offset,
                position,
                source,
            }) => {
                assert_eq!((offset, position), (6, b1.len() + b2.len()));
                assert!(matches!(*source, LogError::CorruptBatch { .. }));
            }
            other => panic!("expected ReplicaBatch, got {other:?}"),
        }
        assert_eq!(log.next_offset(), 6);
        // A torn last batch is refused the same way.
        let b3 = stored(&batch(1, 10, ts, None), 6, 4);
        match log.append_replicas(&b3[..b3.len() - 1]) {
            Err(LogError::ReplicaBatch { offset: 6, .. }) => {}
            other => panic!("expected ReplicaBatch, got {other:?}"),
        }
        assert_eq!(log.append_replicas(&[]).unwrap().bytes, 0);
        // The stored bytes are the leader's, epoch included.
        let got = log.read(2, 1 << 20, u64::MAX).await.unwrap();
        assert_eq!(&got[..], &[&b1[..], &b2[..]].concat()[..]);
        assert_eq!(epochs(&log), vec![(3, 0), (4, 2)]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_diverged_follower_truncates_to_where_the_new_leader_agrees() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (lp, fp) = (ld.path().to_path_buf(), fd.path().to_path_buf());
    run(async move {
        let c = cfg(1 << 20);
        let ts = now_ms();
        // Both had epochs 1 and 2 up to offset 6; the old leader (now the
        // follower) appended more in epoch 2 that nobody else got, the new
        // leader took over in epoch 3.
        let leader = open_in(&lp, &c).await;
        let follower = open_in(&fp, &c).await;
        for epoch in [1, 1, 2] {
            let a = leader.append(&batch(2, 10, ts, None), epoch).unwrap();
            let data = leader.read(a.base_offset, 1 << 20, u64::MAX).await.unwrap();
            follower.append_replicas(&data).unwrap();
        }
        follower.append(&batch(4, 10, ts, None), 2).unwrap();
        leader.append(&batch(1, 10, ts, None), 3).unwrap();
        leader.append(&batch(1, 10, ts, None), 3).unwrap();
        // KIP-279: ask for the follower's last epoch.
        let mine = follower.last_epoch().unwrap();
        let (epoch, end) = leader.end_offset_for_epoch(mine).unwrap();
        assert_eq!((epoch, end), (2, 6));
        let (own, own_end) = follower.end_offset_for_epoch(epoch).unwrap();
        assert_eq!(own, epoch, "the follower has the epoch the leader answered");
        follower.truncate_to(end.min(own_end)).await.unwrap();
        assert_eq!(follower.next_offset(), 6);
        let data = leader.read(6, 1 << 20, u64::MAX).await.unwrap();
        follower.append_replicas(&data).unwrap();
        assert_eq!(epochs(&follower), epochs(&leader));
        assert_eq!(epochs(&leader), vec![(1, 0), (2, 4), (3, 6)]);
        let follower = reopen(follower, Reopen::Clean, &c).await;
        assert_eq!(epochs(&follower), epochs(&leader));
        leader.close().await.unwrap();
        follower.close().await.unwrap();
    });
}

#[test]
fn retries_are_answered_with_the_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = cfg(1 << 20);
        let log = open_in(&path, &c).await;
        log.append(&batch(3, 10, now_ms(), None), 0).unwrap();
        let mut sent = Vec::new();
        for i in 0..6 {
            let b = idem(7, 0, i * 2, 2);
            let a = log.append(&b, 0).unwrap();
            assert!(!a.duplicate);
            sent.push((b, a));
        }
        let size = log.size_bytes();
        // The last five are remembered.
        for (b, a) in &sent[1..] {
            let d = log.append(b, 0).unwrap();
            assert!(d.duplicate);
            assert_eq!(
                (d.base_offset, d.next_offset),
                (a.base_offset, a.next_offset)
            );
            log.wait_durable(d.next_offset).await.unwrap();
        }
        assert_eq!(log.size_bytes(), size, "nothing written for retries");
        // The first is too old to tell from a replay: out of order.
        assert!(matches!(
            log.append(&sent[0].0, 0),
            Err(LogError::OutOfOrderSequence {
                producer_id: 7,
                expected: 12,
                got: 0
            })
        ));
        assert!(matches!(
            log.append(&idem(7, 0, 13, 1), 0),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        assert_eq!(log.size_bytes(), size);
        let mut log = log;
        for how in [
            Reopen::Clean,
            Reopen::Unclean,
            Reopen::Missing,
            Reopen::Damaged,
        ] {
            log = reopen(log, how, &c).await;
            for (b, a) in &sent[1..] {
                let d = log.append(b, 0).unwrap();
                assert!(d.duplicate, "{how:?}");
                assert_eq!(d.base_offset, a.base_offset, "{how:?}");
            }
            assert_eq!(log.producer(7).unwrap().last_sequence, 11);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn producer_epochs_fence_and_restart_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = cfg(1 << 20);
        let log = open_in(&path, &c).await;
        log.append(&idem(1, 2, 0, 1), 0).unwrap();
        log.append(&idem(1, 2, 1, 1), 0).unwrap();
        assert!(matches!(
            log.append(&idem(1, 1, 2, 1), 0),
            Err(LogError::ProducerFenced {
                producer_id: 1,
                epoch: 1,
                current: 2
            })
        ));
        assert!(matches!(
            log.append(&idem(1, 3, 5, 1), 0),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        let a = log.append(&idem(1, 3, 0, 1), 0).unwrap();
        assert!(!a.duplicate);
        assert!(matches!(
            log.append(&idem(1, 2, 2, 1), 0),
            Err(LogError::ProducerFenced { .. })
        ));
        let log = reopen(log, Reopen::Unclean, &c).await;
        assert_eq!(log.producer(1).unwrap().epoch, 3);
        assert!(log.append(&idem(1, 3, 0, 1), 0).unwrap().duplicate);
        assert!(matches!(
            log.append(&idem(-5, 0, -1, 1), 0),
            Ok(a) if !a.duplicate
        ));
        assert!(matches!(
            log.append(&idem(4, 0, -1, 1), 0),
            Err(LogError::InvalidProducerFields { .. })
        ));
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_forgets_the_dropped_batches_and_rebuilds_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = cfg(4096);
        let log = open_in(&path, &c).await;
        // Producer 1: seq 0 at offset 0, then other producers' batches
        // across segments, then seq 1..=5 at the end.
        log.append(&idem(1, 0, 0, 1), 0).unwrap();
        for i in 0..20 {
            log.append(&idem(2, 0, i, 1), 0).unwrap();
            log.append(&batch(1, 500, now_ms(), None), 0).unwrap();
        }
        log.sync().await.unwrap(); // a snapshot after the rolls
        assert!(log.segment_count() > 2);
        let cut = log.next_offset();
        for i in 1..=5 {
            log.append(&idem(1, 0, i, 1), 0).unwrap();
        }
        // Every remembered batch of producer 1 goes: its state before is
        // rebuilt from the log.
        log.truncate_to(cut).await.unwrap();
        let p = log.producer(1).unwrap();
        assert_eq!((p.last_sequence, p.last_offset), (0, 0));
        let d = log.append(&idem(1, 0, 0, 1), 0).unwrap();
        assert!(d.duplicate && d.base_offset == 0);
        let a = log.append(&idem(1, 0, 1, 1), 0).unwrap();
        assert_eq!((a.base_offset, a.duplicate), (cut, false));
        assert_eq!(log.producer(2).unwrap().last_sequence, 19);
        // Without a usable snapshot the rebuild scans the whole log.
        let log = reopen(log, Reopen::Missing, &c).await;
        log.truncate_to(cut).await.unwrap();
        assert_eq!(log.producer(1).unwrap().last_offset, 0);
        // Truncating below the start empties it.
        log.truncate_to(0).await.unwrap();
        assert_eq!(log.producer_count(), 0);
        assert!(log.epoch_entries().is_empty());
        let log = reopen(log, Reopen::Unclean, &c).await;
        assert_eq!(log.producer_count(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_behind_the_leaders_start_starts_over_there() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (lp, fp) = (ld.path().to_path_buf(), fd.path().to_path_buf());
    run(async move {
        let c = cfg(4096);
        let leader = open_in(&lp, &c).await;
        let follower = open_in(&fp, &c).await;
        for i in 0..3 {
            let b = idem(1, 0, i, 1);
            let a = leader.append(&b, 1).unwrap();
            follower
                .append_replica(&stored(&b, a.base_offset, 1))
                .unwrap();
        }
        // The leader goes on alone and drops its old segments.
        for _ in 0..20 {
            leader.append(&batch(1, 500, now_ms(), None), 2).unwrap();
        }
        let cut = leader.next_offset();
        leader.append(&batch(1, 10, now_ms(), None), 2).unwrap();
        assert!(leader.drop_segments_below(cut).await.unwrap() > 0);
        let start = leader.start_offset();
        assert!(start > follower.next_offset());
        // Nothing left to fetch in between: the follower starts over at
        // the leader's start, with no epoch and no producer of before.
        follower.restart_at(start).await.unwrap();
        assert_eq!(
            (follower.start_offset(), follower.next_offset()),
            (start, start)
        );
        assert!(epochs(&follower).is_empty());
        assert_eq!(follower.producer_count(), 0);
        let rest = leader
            .read(start, 1 << 20, leader.next_offset())
            .await
            .unwrap();
        follower.append_replicas(&rest).unwrap();
        assert_eq!(follower.next_offset(), leader.next_offset());
        // Going back is not its job: an offset at or below the end changes nothing.
        follower.restart_at(start).await.unwrap();
        assert_eq!(follower.next_offset(), leader.next_offset());
        let follower = reopen(follower, Reopen::Unclean, &c).await;
        assert_eq!(
            (follower.start_offset(), follower.next_offset()),
            (start, leader.next_offset())
        );
        assert_eq!(epochs(&follower), vec![(2, start)]);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn the_epoch_cache_survives_reopen_however_its_file_fares() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let c = cfg(4096);
        let mut log = open_in(&path, &c).await;
        let mut epoch = 1;
        for i in 0..40u32 {
            if i % 7 == 0 {
                epoch += i % 3 + 1;
            }
            log.append(&batch(1 + i % 2, 200, now_ms(), None), epoch)
                .unwrap();
            if i % 5 == 0 {
                log.sync().await.unwrap();
            }
        }
        let want = epochs(&log);
        assert_eq!(want.len(), 6);
        for how in [
            Reopen::Clean,
            Reopen::Unclean,
            Reopen::Missing,
            Reopen::Damaged,
        ] {
            log = reopen(log, how, &c).await;
            assert_eq!(epochs(&log), want, "{how:?}");
        }
        // Retention keeps one entry at the new start.
        let third = want[2].1;
        log.drop_segments_below(third + 1).await.unwrap();
        let start = log.start_offset();
        assert!(start > 0 && start <= third + 1);
        let kept = epochs(&log);
        assert_eq!(kept[0].1, start);
        assert!(kept.len() <= 5);
        log = reopen(log, Reopen::Missing, &c).await;
        assert_eq!(epochs(&log), kept);
        log.close().await.unwrap();
    });
}

#[test]
fn idle_producers_expire_and_the_count_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let limits = ProducerLimits {
            max_producers: 3,
            expiry_ms: 60_000,
        };
        let c = LogConfig {
            flush: FlushPolicy::Interval(Duration::from_millis(5)),
            ..cfg(1 << 20)
        };
        let log = PartitionLog::open_with(&path, c.clone(), limits)
            .await
            .unwrap();
        let old = now_ms() - 120_000;
        let old_batch = batch(
            1,
            1,
            old,
            Some(ProducerStamp {
                producer_id: 1,
                producer_epoch: 0,
                base_sequence: 0,
            }),
        );
        log.append(&old_batch, 0).unwrap();
        for id in 2..=4 {
            log.append(&idem(id, 0, 0, 1), 0).unwrap();
        }
        assert_eq!(log.producer_count(), 3);
        assert!(log.producer(1).is_none(), "the idle one was evicted");
        log.close().await.unwrap();
        // Reopened with the old batch replayed: it expires at open.
        damage_state(&path, Reopen::Missing, 0);
        let limits = ProducerLimits {
            max_producers: 10,
            ..limits
        };
        let log = PartitionLog::open_with(&path, c.clone(), limits)
            .await
            .unwrap();
        assert!(log.producer(1).is_none());
        assert_eq!(log.producer_count(), 3);
        log.apply_retention(now_ms() + 61_000).await.unwrap();
        assert_eq!(log.producer_count(), 0);
        log.close().await.unwrap();
    });
}
