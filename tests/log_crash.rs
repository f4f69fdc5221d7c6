//! Crash test: a child process appends with `FlushPolicy::EveryBatch` and
//! prints every acknowledged (durable) batch; the parent SIGKILLs it at
//! random moments, round after round, and after each kill checks that every
//! acknowledged batch is present and byte-equal and that nothing but zeros
//! follows the last whole batch. The child is this test binary re-executed
//! with `CRASH_CHILD_DIR` set.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmq::log::{FlushPolicy, LogConfig, PartitionLog};
use ringmq_protocol::batch::{stamp, verify};

const ENV_DIR: &str = "CRASH_CHILD_DIR";
const EPOCH: u32 = 7;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10, // rolls every ~50 batches
        index_interval_bytes: 4096,
        retention_bytes: None,
        retention_ms: None,
        flush: FlushPolicy::EveryBatch,
        reserve_ahead_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

/// The batch an ack line describes, rebuilt from its seed.
fn batch_for(seed: u64) -> bytes::Bytes {
    let records = 1 + (seed % 7) as u32;
    let value_len = (seed % 13) as usize * 97;
    common::batch(seed, records, value_len, seed as i64)
}

/// Child mode: append forever from 4 concurrent tasks, print each ack.
#[test]
#[ignore = "run by log_crash::sigkill_rounds as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let ex = common::small_executor();
    ex.run(async move {
        let log = PartitionLog::open(&dir, cfg()).await.expect("child open");
        let salt = std::process::id() as u64 * 1_000_000;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let seed = salt + t * 100_000 + n;
                    n += 1;
                    let b = batch_for(seed);
                    let a = log.append(&b, EPOCH).expect("append");
                    log.wait_durable(a.next_offset).await.expect("durable");
                    println!("ACK {} {} {}", a.base_offset, a.next_offset, seed);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Opens the log, checks every acked batch and the zero tail; closes it
/// cleanly or drops it, as told.
fn verify_dir(dir: &Path, acked: &BTreeMap<u64, (u64, u64)>, clean_close: bool) -> u64 {
    let dir = dir.to_path_buf();
    let acked = acked.clone();
    common::small_executor().run(async move {
        let log = PartitionLog::open(&dir, cfg())
            .await
            .expect("reopen after kill");
        let next = log.next_offset();
        if let Some((&last_base, &(last_next, _))) = acked.iter().next_back() {
            assert!(
                next >= last_next,
                "log ends at {next}, acked batch {last_base}..{last_next} lost"
            );
        }
        for (&base, &(next_off, seed)) in &acked {
            let got = log.read(base, 0, u64::MAX).await.expect("read acked batch");
            let parts = common::split_batches(&got);
            let mut want = batch_for(seed).to_vec();
            stamp(&mut want, base, EPOCH);
            assert_eq!(
                parts.first().map(|p| &p[..]),
                Some(&want[..]),
                "acked batch {base} differs"
            );
            assert_eq!(verify(&parts[0]).unwrap().next_offset(), next_off);
        }
        // Nothing but zeros after the last whole batch of the active segment.
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let active = std::fs::read(logs.last().unwrap()).unwrap();
        let mut pos = 0;
        while let Ok(h) = verify(&active[pos..]) {
            pos += h.total_len();
        }
        assert!(
            active[pos..].iter().all(|b| *b == 0),
            "non-zero bytes after the last whole batch at {pos}"
        );
        // Every offset from start to end reads as a chain of whole batches.
        let mut at = log.start_offset();
        while at < next {
            let got = log.read(at, 256 << 10, u64::MAX).await.expect("sweep read");
            let parts = common::split_batches(&got);
            at = verify(parts.last().unwrap()).unwrap().next_offset();
        }
        if clean_close {
            log.close().await.unwrap();
        }
        next
    })
}

#[test]
fn sigkill_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test rng seed {seed}");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let rounds = 24;
    let mut killed_with_acks = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split_whitespace().collect();
                if let ["ACK", b, n, s] = f[..] {
                    if let (Ok(b), Ok(n), Ok(s)) = (b.parse(), n.parse(), s.parse()) {
                        let _ = tx.send((b, n, s));
                    }
                }
            }
        });
        // Kill at a random moment: mostly after some acks, sometimes while
        // the child is still opening (recovering) the log.
        let first = rx.recv_timeout(Duration::from_secs(20));
        let early = rng.next() % 5 == 0;
        if let Ok(a) = first {
            let _: (u64, u64, u64) = a;
            acked.insert(a.0, (a.1, a.2));
        }
        std::thread::sleep(Duration::from_millis(if early {
            rng.next() % 5
        } else {
            5 + rng.next() % 150
        }));
        child.kill().expect("SIGKILL the child"); // kill(2) of exactly this PID
        child.wait().unwrap();
        reader.join().unwrap();
        let before = acked.len();
        for (b, n, s) in rx.try_iter() {
            acked.insert(b, (n, s));
        }
        if acked.len() > before {
            killed_with_acks += 1;
        }
        let next = verify_dir(dir.path(), &acked, round % 4 == 3);
        eprintln!(
            "round {round}: {} acked batches, log end {next}",
            acked.len()
        );
    }
    assert!(
        acked.len() > 100,
        "the child acknowledged too little to mean anything"
    );
    assert!(killed_with_acks >= rounds / 2);
}
