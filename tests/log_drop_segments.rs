//! `PartitionLog::drop_segments_below`: whole segments below an offset go,
//! the active segment and anything at or above the offset stay, and a
//! reopened log starts where the drop left it.

mod common;

use ringmq::log::{FlushPolicy, LogConfig, PartitionLog};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        flush: FlushPolicy::EveryBatch,
        reserve_ahead_bytes: 8 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

#[test]
fn whole_segments_below_an_offset_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    common::small_executor().run(async move {
        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        // 1 KiB batches of 2 records: 7 per 8 KiB segment.
        for i in 0..40 {
            log.append(&common::batch(i, 2, 480, 0), 0).unwrap();
        }
        log.sync().await.unwrap();
        let segments = log.segment_count();
        assert!(segments >= 5, "{segments} segments");
        let end = log.next_offset();

        // Nothing lies wholly below offset 1.
        assert_eq!(log.drop_segments_below(1).await.unwrap(), 0);
        assert_eq!(log.start_offset(), 0);

        // Offset 30 is inside a segment: that one stays, those before go.
        let dropped = log.drop_segments_below(30).await.unwrap();
        assert!(dropped >= 1);
        let start = log.start_offset();
        assert!(start <= 30 && start > 0, "start {start}");
        assert_eq!(log.segment_count(), segments - dropped);
        let first = log.read(start, 1 << 20, end).await.unwrap();
        assert!(!first.is_empty());
        assert!(log.read(start - 1, 1 << 20, end).await.is_err());

        // Even past the end, the active segment stays.
        log.drop_segments_below(u64::MAX).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.next_offset(), end);
        let kept = log.start_offset();
        log.append(&common::batch(99, 1, 10, 0), 0).unwrap();
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, cfg()).await.unwrap();
        assert_eq!(log.start_offset(), kept);
        assert_eq!(log.next_offset(), end + 1);
        log.close().await.unwrap();
    });
}
