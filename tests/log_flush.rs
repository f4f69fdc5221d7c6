//! Flush policies: group commit shares fdatasyncs between concurrent
//! waiters; the interval flusher makes data durable without being asked.

mod common;

use std::time::{Duration, Instant};

use ringmq::log::{FlushPolicy, LogConfig, PartitionLog};

fn cfg(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        flush,
        reserve_ahead_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

#[test]
fn concurrent_waiters_share_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    common::small_executor().run(async move {
        let log = PartitionLog::open(&path, cfg(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..40 {
                    let a = log
                        .append(&common::batch(t * 1000 + i, 2, 100, 0), 0)
                        .unwrap();
                    log.wait_durable(a.next_offset).await.unwrap();
                    assert!(log.durable_offset() >= a.next_offset);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let rounds = log.sync_rounds();
        eprintln!("320 acks took {rounds} fdatasync rounds");
        assert!(
            rounds <= 320 / 4,
            "group commit did not group: {rounds} rounds for 320 acks"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn interval_flusher_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    common::small_executor().run(async move {
        let log = PartitionLog::open(&path, cfg(FlushPolicy::Interval(Duration::from_millis(5))))
            .await
            .unwrap();
        let a = log.append(&common::batch(1, 3, 50, 0), 0).unwrap();
        log.wait_durable(a.next_offset).await.unwrap(); // returns at once
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.durable_offset() < a.next_offset {
            assert!(
                Instant::now() < deadline,
                "the interval flusher never synced"
            );
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        log.close().await.unwrap();
    });
}
