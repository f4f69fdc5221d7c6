//! Corruption test: bytes flipped in the tail of the active segment are
//! truncated away at reopen; bytes flipped in a sealed segment make reads of
//! that batch fail with `CorruptBatch` while other ranges still read.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringmq::log::{BatchLocation, FlushPolicy, LogConfig, LogError, PartitionLog};
use ringmq_protocol::batch::{verify, BATCH_HEADER_LEN};

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 1024,
        retention_bytes: None,
        retention_ms: None,
        flush: FlushPolicy::EveryBatch,
        reserve_ahead_bytes: 32 << 10,
        ..LogConfig::default()
    }
}

fn seg_file(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Positions and base offsets of the batches in a segment file.
fn layout(path: &Path) -> Vec<(usize, u64, usize)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(h) = verify(&data[pos..]) {
        out.push((pos, h.base_offset, h.total_len()));
        pos += h.total_len();
    }
    out
}

fn flip(path: &Path, pos: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, pos).unwrap();
    f.sync_all().unwrap();
}

/// Appends `n` batches and returns their (base, next) offsets.
fn fill(log: &PartitionLog, n: u64) -> Vec<(u64, u64)> {
    (0..n)
        .map(|i| {
            let b = common::batch(i, 1 + (i % 3) as u32, 200 + (i as usize % 5) * 50, i as i64);
            let a = log.append(&b, 1).unwrap();
            (a.base_offset, a.next_offset)
        })
        .collect()
}

fn tail_case(clean_close: bool, back: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    common::small_executor().run(async move {
        let log = PartitionLog::open(&path, cfg(1 << 20)).await.unwrap();
        let offs = fill(&log, 40);
        log.sync().await.unwrap();
        if clean_close {
            log.close().await.unwrap();
        } else {
            drop(log); // as after a crash: no clean-shutdown marker
        }
        let file = seg_file(&path, 0);
        let lay = layout(&file);
        assert_eq!(lay.len(), 40);
        // Flip a byte in the body of the batch `back` from the end.
        let (pos, base, len) = lay[lay.len() - back];
        flip(&file, (pos + BATCH_HEADER_LEN + len / 3) as u64);

        let log = PartitionLog::open(&path, cfg(1 << 20)).await.unwrap();
        assert_eq!(
            log.next_offset(),
            base,
            "the damaged batch and all after it are gone"
        );
        for &(b, n) in &offs[..offs.len() - back] {
            let got = log.read(b, 0, u64::MAX).await.unwrap();
            assert_eq!(verify(&got).unwrap().next_offset(), n);
        }
        assert!(log.read(base, 0, u64::MAX).await.unwrap().is_empty());
        // The truncated tail is zero on disk, and appends continue there.
        let data = std::fs::read(&file).unwrap();
        assert!(
            data[pos..].iter().all(|b| *b == 0),
            "stale bytes after the truncation point"
        );
        let a = log.append(&common::batch(99, 1, 10, 0), 1).unwrap();
        assert_eq!(a.base_offset, base);
        log.close().await.unwrap();
    });
}

#[test]
fn flipped_tail_is_truncated_after_a_crash() {
    tail_case(false, 1);
    tail_case(false, 3);
}

#[test]
fn flipped_tail_is_truncated_after_a_clean_shutdown() {
    tail_case(true, 1);
}

#[test]
fn flipped_sealed_batch_is_an_error_for_its_range_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    common::small_executor().run(async move {
        let log = PartitionLog::open(&path, cfg(16 << 10)).await.unwrap();
        let offs = fill(&log, 200);
        assert!(log.segment_count() >= 4);
        log.close().await.unwrap();

        // Damage a batch in the middle of the second segment (sealed).
        let second = offs
            .iter()
            .map(|o| o.0)
            .find(|b| seg_file(&path, *b).exists() && *b > 0)
            .unwrap();
        let file = seg_file(&path, second);
        let lay = layout(&file);
        let k = lay.len() / 2;
        let (pos, bad_base, len) = lay[k];
        flip(&file, (pos + BATCH_HEADER_LEN + len / 2) as u64);

        let log = PartitionLog::open(&path, cfg(16 << 10)).await.unwrap();
        assert_eq!(
            log.next_offset(),
            offs.last().unwrap().1,
            "a sealed segment is not truncated"
        );
        match log.read(bad_base, 1 << 20, u64::MAX).await {
            Err(LogError::CorruptBatch {
                location: BatchLocation::Stored { segment, position },
                reason,
            }) => {
                assert_eq!((segment, position), (second, pos as u64));
                assert!(reason.contains("CRC"), "{reason}");
            }
            other => panic!("expected CorruptBatch, got {other:?}"),
        }
        // Offsets inside the damaged batch fail too.
        assert!(
            matches!(
                log.read(bad_base + 1, 0, u64::MAX).await,
                Err(LogError::CorruptBatch { .. })
            ) || {
                let (_, n) = offs.iter().copied().find(|o| o.0 == bad_base).unwrap();
                n == bad_base + 1
            }
        );
        // Every other batch still reads, in this segment and the others.
        for &(b, n) in &offs {
            if b == bad_base {
                continue;
            }
            let got = log
                .read(b, 0, u64::MAX)
                .await
                .unwrap_or_else(|e| panic!("read {b}: {e}"));
            assert_eq!(verify(&got).unwrap().next_offset(), n);
        }
        // A read that starts before the damage stops in front of it.
        let seg_start = lay[0].1;
        let got = log.read(seg_start, 1 << 20, u64::MAX).await.unwrap();
        let parts = common::split_batches(&got);
        assert_eq!(
            parts.len(),
            k,
            "served exactly the batches before the damaged one"
        );
        log.close().await.unwrap();
    });
}
