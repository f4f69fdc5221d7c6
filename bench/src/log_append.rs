//! `log-append`: append throughput of `PartitionLog` for 100-byte and 1 KiB
//! records in 16 KiB batches, under `interval` (one appender) and
//! `every-batch` (N concurrent appenders sharing group commits), printed next
//! to what `dd bs=16k` reaches on the same disk with `conv=fdatasync` and
//! `oflag=dsync`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use ringmq::log::{FlushPolicy, LogConfig, PartitionLog};
use ringmq_protocol::batch::BatchBuilder;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory (on the disk to measure); a scratch subdirectory is
    /// created in it and removed afterwards.
    #[arg(long)]
    dir: PathBuf,
    /// MiB appended per `interval` run.
    #[arg(long, default_value_t = 3072)]
    interval_mib: u64,
    /// MiB appended per `every-batch` run.
    #[arg(long, default_value_t = 256)]
    every_batch_mib: u64,
    /// Concurrent appenders in the `every-batch` runs.
    #[arg(long, default_value_t = 8)]
    appenders: usize,
    /// Segment size in MiB.
    #[arg(long, default_value_t = 256)]
    segment_mib: u64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 16 << 10)]
    batch_bytes: usize,
    /// 16 KiB blocks written by `dd ... oflag=dsync` (slow: one sync each).
    #[arg(long, default_value_t = 4096)]
    dd_dsync_blocks: u64,
    /// CPU the executor is pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Run only the log runs of one policy (`interval` or `every-batch`) and
    /// skip dd.
    #[arg(long)]
    only: Option<String>,
}

/// One line of the report.
struct Row {
    what: String,
    bytes: u64,
    elapsed: Duration,
    note: String,
}

impl Row {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// 16 KiB batches of `record_bytes` records (a few, with different values
/// so the CRCs differ).
fn make_batches(record_bytes: usize, batch_bytes: usize) -> Vec<Bytes> {
    (0..8u8)
        .map(|k| {
            let mut b = BatchBuilder::with_capacity(0, batch_bytes);
            let value = vec![k; record_bytes];
            while b.size_bytes() + BatchBuilder::record_size(None, Some(&value), &[]) <= batch_bytes
            {
                b.push(1_700_000_000_000, None, Some(&value), &[]);
            }
            b.finish(None)
        })
        .collect()
}

fn dd(dir: &Path, count: u64, flag: &str) -> Result<Row, String> {
    let file = dir.join("dd.bin");
    let _ = std::fs::remove_file(&file);
    let t = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .arg("bs=16k")
        .arg(format!("count={count}"))
        .arg(flag)
        .output()
        .map_err(|e| format!("run dd: {e}"))?;
    let elapsed = t.elapsed();
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        return Err(format!(
            "dd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Row {
        what: format!("dd bs=16k {flag}"),
        bytes: count * 16384,
        elapsed,
        note: format!("{count} blocks"),
    })
}

fn log_cfg(a: &Args, flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: a.segment_mib << 20,
        retention_ms: None,
        flush,
        ..LogConfig::default()
    }
}

/// `interval` policy: one task appends as fast as it can.
async fn run_interval(
    dir: &Path,
    a: &Args,
    batches: &[Bytes],
    label: &str,
) -> Result<Vec<Row>, String> {
    let log = PartitionLog::open(
        dir,
        log_cfg(a, FlushPolicy::Interval(Duration::from_millis(100))),
    )
    .await
    .map_err(|e| e.to_string())?;
    let total = a.interval_mib << 20;
    let mut bytes = 0u64;
    let mut n = 0usize;
    let t = Instant::now();
    while bytes < total {
        let b = &batches[n % batches.len()];
        n += 1;
        log.append(b, 1).map_err(|e| e.to_string())?;
        bytes += b.len() as u64;
        if n % 64 == 0 {
            glommio::yield_if_needed().await;
        }
    }
    let appended = t.elapsed();
    log.sync().await.map_err(|e| e.to_string())?;
    let synced = t.elapsed();
    let segments = log.segment_count();
    log.close().await.map_err(|e| e.to_string())?;
    Ok(vec![
        Row {
            what: format!("log interval(100ms) {label}, 1 appender"),
            bytes,
            elapsed: appended,
            note: format!("{n} batches, {segments} segments"),
        },
        Row {
            what: "  same, incl. final fdatasync".to_string(),
            bytes,
            elapsed: synced,
            note: String::new(),
        },
    ])
}

/// `every-batch` policy: N tasks each append then wait for durability.
async fn run_every_batch(
    dir: &Path,
    a: &Args,
    batches: &[Bytes],
    label: &str,
) -> Result<Row, String> {
    let log = PartitionLog::open(dir, log_cfg(a, FlushPolicy::EveryBatch))
        .await
        .map_err(|e| e.to_string())?;
    let total = a.every_batch_mib << 20;
    let per_task = total / a.appenders as u64;
    let batches: Rc<Vec<Bytes>> = Rc::new(batches.to_vec());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..a.appenders {
        let log = log.clone();
        let batches = batches.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut bytes = 0u64;
            let mut n = k;
            let mut acks = 0u64;
            while bytes < per_task {
                let b = &batches[n % batches.len()];
                n += 1;
                let ap = log.append(b, 1).map_err(|e| e.to_string())?;
                log.wait_durable(ap.next_offset)
                    .await
                    .map_err(|e| e.to_string())?;
                bytes += b.len() as u64;
                acks += 1;
            }
            Ok::<_, String>((bytes, acks))
        }));
    }
    let mut bytes = 0;
    let mut acks = 0;
    for task in tasks {
        let (b, n) = task.await?;
        bytes += b;
        acks += n;
    }
    let elapsed = t.elapsed();
    let rounds = log.sync_rounds();
    log.close().await.map_err(|e| e.to_string())?;
    Ok(Row {
        what: format!("log every-batch {label}, {} appenders", a.appenders),
        bytes,
        elapsed,
        note: format!(
            "{acks} acks, {rounds} fdatasyncs ({:.1} batches each), {:.0} µs/sync",
            acks as f64 / rounds.max(1) as f64,
            elapsed.as_micros() as f64 / rounds.max(1) as f64
        ),
    })
}

pub fn run(a: Args) -> Result<(), String> {
    let scratch = a.dir.join(format!("ringmq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("create {}: {e}", scratch.display()))?;
    let mut rows = Vec::new();
    let mut dsync = f64::NAN;
    if a.only.is_none() {
        rows.push(dd(
            &scratch,
            (a.interval_mib << 20) / 16384,
            "conv=fdatasync",
        )?);
        rows.push(dd(&scratch, a.dd_dsync_blocks, "oflag=dsync")?);
        dsync = rows[1].mb_s();
    }
    let want = |p: &str| a.only.as_deref().map_or(true, |o| o == p);

    let ex = LocalExecutorBuilder::new(Placement::Fixed(a.cpu))
        .name("bench")
        .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
        .preempt_timer(Duration::from_millis(5))
        .make()
        .map_err(|e| format!("executor: {e}"))?;
    let log_rows = ex.run(async {
        let mut rows = Vec::new();
        for (record, label) in [(100usize, "100 B records"), (1024, "1 KiB records")] {
            let batches = make_batches(record, a.batch_bytes);
            if want("interval") {
                let d = scratch.join(format!("interval-{record}"));
                rows.extend(run_interval(&d, &a, &batches, label).await?);
                let _ = std::fs::remove_dir_all(&d);
            }
            if want("every-batch") {
                let d = scratch.join(format!("every-{record}"));
                rows.push(run_every_batch(&d, &a, &batches, label).await?);
                let _ = std::fs::remove_dir_all(&d);
            }
        }
        Ok::<_, String>(rows)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    rows.extend(log_rows?);

    println!(
        "log-append: {} B batches, {} MiB segments, dir {}",
        a.batch_bytes,
        a.segment_mib,
        a.dir.display()
    );
    println!(
        "{:<48} {:>10} {:>9} {:>10}  notes",
        "run", "MiB", "secs", "MB/s"
    );
    for r in &rows {
        let vs = if r.what.contains("every-batch") {
            format!("  = {:.1}x dd oflag=dsync", r.mb_s() / dsync)
        } else {
            String::new()
        };
        println!(
            "{:<48} {:>10.1} {:>9.3} {:>10.1}  {}{}",
            r.what,
            r.bytes as f64 / (1 << 20) as f64,
            r.elapsed.as_secs_f64(),
            r.mb_s(),
            r.note,
            vs
        );
    }
    Ok(())
}
