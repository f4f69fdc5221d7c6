//! Chaos (issue #10): a bounded run against a 3-node cluster on loopback
//! with a producer (acks=all) and a consumer group, while faults chosen at
//! random hit it: SIGKILL and restart of a node, SIGSTOP/SIGCONT of a node
//! (a pause looks like a network partition), SIGKILL of a consumer. Then a
//! checker verifies, from what the clients saw:
//! - every acknowledged message is in the log exactly once, in its
//!   partition, in the order it was sent;
//! - every message in the log was consumed at least once by the group;
//! - the group's committed offsets never went backwards.
//!
//! `RINGMQ_CHAOS_SECS` sets the length (default 60), `RINGMQ_CHAOS_SEED`
//! the faults' seed (printed, so a failure can be replayed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::probe::create_topic;
use ringmq::cluster::admin::ClusterStatus;
use ringmq_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset,
};

const TOPIC: &str = "chaos";
const PARTITIONS: u32 = 6;
const GROUP: &str = "checkers";
const CONSUMERS: usize = 2;
/// Messages a second the producer offers: enough to keep every partition
/// busy through the faults, little enough for a debug build on 2 cores.
const RATE: u64 = 1500;
const FLAGS: &[&str] = common::probe::FAST_FAILURE;

/// A small deterministic generator (xorshift), seeded from the env or the clock.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span.max(1)))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn healthy(s: &ClusterStatus) -> bool {
    common::probe::healthy(3)(s)
}

/// One `ringmq consume --group` process; each incarnation writes its own file.
struct GroupMember {
    child: Option<Child>,
    outputs: Vec<PathBuf>,
    dir: PathBuf,
    name: String,
}

impl GroupMember {
    fn start(dir: &std::path::Path, name: &str, bootstrap: &str) -> GroupMember {
        let mut m = GroupMember {
            child: None,
            outputs: Vec::new(),
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        m.spawn(bootstrap);
        m
    }

    fn spawn(&mut self, bootstrap: &str) {
        let out = self
            .dir
            .join(format!("{}-{}.out", self.name, self.outputs.len()));
        let file = std::fs::File::create(&out).expect("consumer output file");
        let child = Command::new(common::BIN)
            .args([
                "consume",
                TOPIC,
                "--group",
                GROUP,
                "--from-beginning",
                "--session-timeout",
                "3s",
                "--commit-interval",
                "300ms",
                "--bootstrap",
                bootstrap,
            ])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start a consumer");
        self.outputs.push(out);
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Every value any incarnation printed.
    fn consumed(&self) -> Vec<u64> {
        self.outputs
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Committed offset per partition from `ringmq group describe`.
fn committed(bootstrap: &str) -> Option<BTreeMap<u32, u64>> {
    let (status, out, _) = common::cli(&["group", "describe", GROUP, "--bootstrap", bootstrap], "");
    if !status.success() {
        return None;
    }
    let mut got = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with(&format!("{TOPIC}/"))) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let p: u32 = cols
            .first()?
            .strip_prefix(&format!("{TOPIC}/"))?
            .parse()
            .ok()?;
        if let Some(c) = cols.get(2).and_then(|c| c.parse().ok()) {
            got.insert(p, c);
        }
    }
    Some(got)
}

#[derive(Default)]
struct Sent {
    /// (partition, offset) → value, for every acknowledged message.
    acked: BTreeMap<(u32, u64), u64>,
    /// Values sent per partition in send order.
    order: BTreeMap<u32, Vec<u64>>,
    failed: u64,
    /// Why deliveries failed, with how many each.
    why: BTreeMap<String, u64>,
}

#[test]
fn chaos() {
    let secs = env_u64("RINGMQ_CHAOS_SECS").unwrap_or(60);
    let seed = env_u64("RINGMQ_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    println!("chaos: {secs} s, seed {seed} (RINGMQ_CHAOS_SEED={seed} replays the faults)");
    let mut rng = Rng(seed);
    let mut cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", Duration::from_secs(30), healthy);
    let bootstrap: String = (1..=3)
        .map(|n| cluster.node(n).client.to_string())
        .collect::<Vec<_>>()
        .join(",");
    create_topic(&bootstrap, TOPIC, PARTITIONS, Some(3));

    // The producer: its own thread and executor, numbered values keyed by
    // themselves, acks=all, retries through every fault.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let producer = {
        let (stop, sent, bootstrap) = (stop.clone(), sent.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            common::small_executor().run(async move {
                let client = Client::connect(ClientConfig::new(&bootstrap))
                    .await
                    .expect("producer connects");
                let config = ProducerConfig {
                    acks: Acks::All,
                    retries: 1_000,
                    retry_backoff: Duration::from_millis(50),
                    max_retry_backoff: Duration::from_millis(500),
                    linger: Duration::from_millis(5),
                    ..ProducerConfig::default()
                };
                let producer = Producer::new(&client, TOPIC, config)
                    .await
                    .expect("producer");
                let started = Instant::now();
                let mut waits = Vec::new();
                let mut value = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = Duration::from_micros(value * 1_000_000 / RATE);
                    if let Some(ahead) = due.checked_sub(started.elapsed()) {
                        glommio::timer::sleep(ahead).await;
                    }
                    let key = value.to_string();
                    let delivery = producer
                        .send(Some(key.as_bytes()), key.as_bytes())
                        .await
                        .expect("send");
                    sent.lock()
                        .unwrap()
                        .order
                        .entry(delivery.partition())
                        .or_default()
                        .push(value);
                    let sent = sent.clone();
                    waits.push(glommio::spawn_local(async move {
                        let result = delivery.await;
                        let mut s = sent.lock().unwrap();
                        match result {
                            Ok(meta) => {
                                let offset = meta.offset.expect("acks=all reports offsets");
                                s.acked.insert((meta.partition, offset), value);
                            }
                            Err(e) => {
                                s.failed += 1;
                                *s.why.entry(e.to_string()).or_default() += 1;
                            }
                        }
                    }));
                    value += 1;
                }
                let _ = producer.flush().await;
                for w in waits {
                    w.await;
                }
            })
        })
    };

    let dir = tempfile::tempdir().expect("a temp dir");
    let mut members: Vec<GroupMember> = (0..CONSUMERS)
        .map(|i| GroupMember::start(dir.path(), &format!("c{i}"), &bootstrap))
        .collect();

    // Committed offsets, sampled through any live node while faults run.
    let commits: Arc<Mutex<Vec<BTreeMap<u32, u64>>>> = Arc::default();
    let sampler = {
        let (stop, commits, bootstrap) = (stop.clone(), commits.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(c) = committed(&bootstrap) {
                    commits.lock().unwrap().push(c);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // Faults: one at a time, so two of three nodes are always up.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    while Instant::now() + Duration::from_secs(4) < deadline {
        std::thread::sleep(rng.between(Duration::from_millis(500), Duration::from_millis(2000)));
        let node = 1 + rng.below(3) as u32;
        match rng.below(3) {
            0 => {
                cluster.node_mut(node).kill();
                std::thread::sleep(rng.between(Duration::from_millis(500), Duration::from_secs(2)));
                cluster.node_mut(node).restart();
                *faults.entry("node killed and restarted").or_default() += 1;
            }
            1 => {
                cluster.node(node).pause(true);
                std::thread::sleep(rng.between(Duration::from_millis(500), Duration::from_secs(2)));
                cluster.node(node).pause(false);
                *faults.entry("node paused").or_default() += 1;
            }
            _ => {
                let m = &mut members[rng.below(CONSUMERS as u64) as usize];
                m.kill();
                m.spawn(&bootstrap);
                *faults.entry("consumer killed").or_default() += 1;
            }
        }
        // Let the cluster settle a little before the next fault.
        cluster.wait_until(
            "three alive members between faults",
            Duration::from_secs(30),
            healthy,
        );
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("the producer thread");
    sampler.join().expect("the sampler thread");
    cluster.wait_until(
        "three alive members at the end",
        Duration::from_secs(30),
        healthy,
    );

    // Everything in the log, read back from the beginning.
    let log: BTreeMap<u32, Vec<(u64, u64)>> = common::small_executor().run({
        let bootstrap = bootstrap.clone();
        async move {
            let client = Client::connect(ClientConfig::new(&bootstrap))
                .await
                .expect("reader connects");
            let mut log = BTreeMap::new();
            for p in 0..PARTITIONS {
                let end = client
                    .admin()
                    .list_offsets(TOPIC, p, ringmq_client::OffsetSpec::Latest)
                    .await
                    .expect("end offset");
                let mut consumer = Consumer::new(
                    &client,
                    TOPIC,
                    Some(&[p]),
                    StartOffset::Earliest,
                    ConsumerConfig::default(),
                )
                .await
                .expect("reader");
                let mut records: Vec<(u64, u64)> = Vec::new();
                while records.last().map_or(0, |r| r.0 + 1) < end {
                    for r in consumer.poll().await.expect("read") {
                        let value = r
                            .value
                            .as_deref()
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse().ok())
                            .expect("a number");
                        records.push((r.offset, value));
                    }
                }
                log.insert(p, records);
            }
            log
        }
    });
    let in_log: BTreeSet<u64> = log.values().flatten().map(|&(_, v)| v).collect();

    // The group drains what is left, then stops.
    let drain = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: BTreeSet<u64> = members.iter().flat_map(|m| m.consumed()).collect();
        if in_log.is_subset(&seen) || Instant::now() > drain {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for m in &mut members {
        m.kill();
    }
    let consumed: BTreeSet<u64> = members.iter().flat_map(|m| m.consumed()).collect();

    // The checks.
    let sent = sent.lock().unwrap();
    let mut lost = Vec::new();
    let mut duplicated = 0usize;
    let mut out_of_order = Vec::new();
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for &(_, v) in log.values().flatten() {
        *count.entry(v).or_default() += 1;
    }
    for (&(p, offset), &v) in &sent.acked {
        let at = log
            .get(&p)
            .and_then(|recs| recs.iter().find(|r| r.0 == offset));
        if at.map(|r| r.1) != Some(v) {
            lost.push((p, offset, v));
        }
        if count.get(&v).copied().unwrap_or(0) > 1 {
            duplicated += 1;
        }
    }
    for (p, recs) in &log {
        let values: Vec<u64> = recs.iter().map(|r| r.1).collect();
        let order = sent.order.get(p).cloned().unwrap_or_default();
        let rank: BTreeMap<u64, usize> = order.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let ranks: Vec<usize> = values.iter().filter_map(|v| rank.get(v).copied()).collect();
        if ranks.windows(2).any(|w| w[0] >= w[1]) {
            out_of_order.push(*p);
        }
    }
    let unconsumed: Vec<u64> = in_log.difference(&consumed).copied().collect();
    let mut backwards = Vec::new();
    let samples = commits.lock().unwrap();
    let mut high: BTreeMap<u32, u64> = BTreeMap::new();
    for s in samples.iter() {
        for (&p, &c) in s {
            if let Some(&h) = high.get(&p) {
                if c < h {
                    backwards.push((p, h, c));
                }
            }
            high.insert(p, c.max(high.get(&p).copied().unwrap_or(0)));
        }
    }
    let fault_count: u32 = faults.values().sum();
    println!(
        "chaos summary: {secs} s, {fault_count} faults {faults:?}; sent {}, acknowledged {}, failed {}, lost {}, duplicated {}, in the log {}, consumed by the group {}, not consumed {}, partitions out of order {:?}, committed offsets that went backwards {}, commit samples {}",
        sent.order.values().map(Vec::len).sum::<usize>(),
        sent.acked.len(),
        sent.failed,
        lost.len(),
        duplicated,
        in_log.len(),
        consumed.len(),
        unconsumed.len(),
        out_of_order,
        backwards.len(),
        samples.len(),
    );
    if !sent.why.is_empty() {
        println!("chaos: deliveries that failed for good: {:?}", sent.why);
    }
    assert!(
        lost.is_empty(),
        "acknowledged messages lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert_eq!(duplicated, 0, "acknowledged messages duplicated");
    assert!(
        out_of_order.is_empty(),
        "partitions out of send order: {out_of_order:?}"
    );
    assert!(
        unconsumed.is_empty(),
        "{} messages never consumed, e.g. {:?}",
        unconsumed.len(),
        &unconsumed[..unconsumed.len().min(20)]
    );
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );
    assert!(
        sent.acked.len() > 1000,
        "too little got through to mean anything"
    );
    if secs >= 60 {
        assert!(fault_count >= 10, "only {fault_count} faults in {secs} s");
    }
}
