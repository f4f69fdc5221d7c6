//! Issue #8, acceptance 1: an idempotent producer with acks=all rides out
//! the SIGKILL of a partition leader (and its restart) without losing or
//! duplicating an acknowledged record. Three real `ringmq serve`
//! processes on loopback, one core each, a topic of 12 partitions with
//! three copies; the producer numbers its records, the check reads every
//! partition back from the beginning. And `ringmq produce` says how many
//! messages were not acknowledged when acks=all cannot be met.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::probe::{create_topic, healthy, metadata, numbers, WAIT};
use ringmq_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Delivery, OffsetSpec, Producer,
    ProducerConfig, StartOffset,
};
use ringmq_protocol::{MetadataResponse, NO_LEADER};

const FLAGS: &[&str] = common::probe::FAST_FAILURE;
const TOPIC: &str = "T";
const PARTITIONS: u32 = 12;
const MESSAGES: u32 = 200_000;

/// One cluster at a time: they share two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Partition → leader once every partition has a leader and three copies
/// in sync.
fn settled_leaders(md: &MetadataResponse) -> Option<Vec<u32>> {
    let t = md.topics.iter().find(|t| t.name == TOPIC)?;
    let ok = t.partitions.len() == PARTITIONS as usize
        && t.partitions
            .iter()
            .all(|p| p.leader != NO_LEADER && p.isr.len() == 3);
    ok.then(|| t.partitions.iter().map(|p| p.leader).collect())
}

/// Where a record is: (partition, offset).
type At = (u32, u64);

/// What the producer saw of one record.
struct Sent {
    number: u32,
    delivery: Delivery,
}

#[test]
fn an_idempotent_producer_rides_out_a_killed_leader_without_loss_or_duplicates() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let n1 = cluster.node(1).client;
    create_topic(&n1.to_string(), TOPIC, PARTITIONS, Some(3));
    let deadline = Instant::now() + WAIT;
    let leaders = loop {
        if let Some(l) = metadata(n1).as_ref().and_then(settled_leaders) {
            break l;
        }
        assert!(Instant::now() < deadline, "topic {TOPIC} not settled");
        std::thread::sleep(Duration::from_millis(100));
    };
    let victim = (1..=3u32)
        .max_by_key(|id| leaders.iter().filter(|l| *l == id).count())
        .expect("a node");
    let led: Vec<u32> = (0..PARTITIONS)
        .filter(|p| leaders[*p as usize] == victim)
        .collect();
    let bootstrap = cluster
        .nodes
        .iter()
        .map(|n| n.client.to_string())
        .collect::<Vec<_>>()
        .join(",");

    // The producer: default idempotence and acks=all; retries enough to
    // outlast node_timeout (2 s) and the election after it.
    let config = ProducerConfig {
        acks: Acks::All,
        batch_bytes: 64 << 10,
        // A small buffer paces the sender by the acknowledgements, so the
        // kill falls mid-way through what is acknowledged.
        max_buffered_bytes: 1 << 20,
        retries: 200,
        retry_backoff: Duration::from_millis(50),
        max_retry_backoff: Duration::from_millis(500),
        ..ProducerConfig::default()
    };
    assert!(config.idempotent, "idempotence is on by default");
    let cluster_ref = &mut cluster;
    let (acked, failed, stats, producer_id, killed_at_acked, produce_took) =
        common::small_executor().run(async move {
            let client = Client::connect(ClientConfig::new(&bootstrap))
                .await
                .expect("connect");
            let producer = Producer::new(&client, TOPIC, config)
                .await
                .expect("a producer");
            let producer_id = producer.producer_id().expect("a producer id");
            let t0 = Instant::now();
            let mut sent = Vec::with_capacity(MESSAGES as usize);
            let mut killed: Option<(Instant, u64)> = None;
            let mut restarted = false;
            for number in 0..MESSAGES {
                // Killed once half is acknowledged; restarted once the
                // failover is over (node_timeout 2 s plus the election)
                // and three quarters are acknowledged, or at the end.
                if number % 1000 == 0 || number == MESSAGES - 1 {
                    let acked = producer.stats().acked;
                    if killed.is_none() && acked >= u64::from(MESSAGES / 2) {
                        cluster_ref.node_mut(victim).kill();
                        killed = Some((Instant::now(), acked));
                    }
                    if let (Some((at, _)), false) = (killed, restarted) {
                        let last = number == MESSAGES - 1;
                        if last
                            || (acked >= u64::from(MESSAGES / 4 * 3)
                                && at.elapsed() > Duration::from_secs(4))
                        {
                            let since = at.elapsed();
                            if since < Duration::from_secs(4) {
                                glommio::timer::sleep(Duration::from_secs(4) - since).await;
                            }
                            cluster_ref.node_mut(victim).restart();
                            restarted = true;
                        }
                    }
                }
                // No key: round-robin; the delivery says where it went.
                let delivery = producer
                    .send(None, number.to_string().as_bytes())
                    .await
                    .expect("send");
                sent.push(Sent { number, delivery });
            }
            producer.flush().await.expect("flush");
            let took = t0.elapsed();
            assert!(
                restarted,
                "the victim was never killed: {:?}",
                producer.stats()
            );
            // What each delivery said: number → (partition, offset).
            let mut acked: HashMap<u32, At> = HashMap::new();
            let mut failed = Vec::new();
            for s in sent {
                match s.delivery.await {
                    Ok(m) => {
                        let offset = m.offset.expect("acks=all gives an offset");
                        acked.insert(s.number, (m.partition, offset));
                    }
                    Err(e) => failed.push((s.number, e)),
                }
            }
            let killed_at_acked = killed.map_or(0, |(_, a)| a);
            let stats = producer.stats();
            (acked, failed, stats, producer_id, killed_at_acked, took)
        });
    let sent_count = MESSAGES;

    // Everything back, partition by partition, from the beginning.
    let n_any = cluster
        .nodes
        .iter()
        .map(|n| n.client.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let logs: BTreeMap<u32, Vec<(u64, u32)>> = common::small_executor().run(async {
        let client = Client::connect(ClientConfig::new(&n_any))
            .await
            .expect("connect");
        let admin = client.admin();
        let mut ends = Vec::new();
        for p in 0..PARTITIONS {
            ends.push(
                admin
                    .list_offsets(TOPIC, p, OffsetSpec::Latest)
                    .await
                    .expect("end offset"),
            );
        }
        let cfg = ConsumerConfig {
            max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(&client, TOPIC, None, StartOffset::Earliest, cfg)
            .await
            .expect("a consumer");
        let mut logs: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while (0..PARTITIONS).any(|p| consumer.position(p).unwrap_or(0) < ends[p as usize]) {
            assert!(Instant::now() < deadline, "could not read everything back");
            for r in consumer.poll().await.expect("poll") {
                let v = r.value.expect("a value");
                let n: u32 = std::str::from_utf8(&v).unwrap().parse().unwrap();
                logs.entry(r.partition).or_default().push((r.offset, n));
            }
        }
        logs
    });

    // Every acknowledged number once, where its delivery said, in the
    // order of its partition's acknowledgements (= send order: one batch
    // per partition in flight), with no acknowledged number missing.
    let mut found: HashMap<u32, Vec<At>> = HashMap::new();
    for (p, records) in &logs {
        for (offset, n) in records {
            found.entry(*n).or_default().push((*p, *offset));
        }
    }
    let duplicates: usize = found.values().map(|v| v.len() - 1).sum();
    let unacked_found = found.keys().filter(|n| !acked.contains_key(n)).count();
    let missing: Vec<u32> = {
        let mut m: Vec<u32> = acked
            .keys()
            .filter(|n| !found.contains_key(n))
            .copied()
            .collect();
        m.sort_unstable();
        m
    };
    let misplaced: Vec<(u32, At, Vec<At>)> = acked
        .iter()
        .filter(|(n, at)| found.get(n).is_some_and(|f| f != &vec![**at]))
        .map(|(n, at)| (*n, *at, found[n].clone()))
        .take(5)
        .collect();
    let mut out_of_order = 0;
    for records in logs.values() {
        let numbers: Vec<u32> = records
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| acked.contains_key(n))
            .collect();
        out_of_order += numbers.windows(2).filter(|w| w[0] >= w[1]).count();
    }
    let total = started.elapsed();
    println!(
        "failover: sent {sent_count}, acknowledged {}, failed {}, duplicates found {duplicates}, \
         missing {}, out of order {out_of_order}, unacknowledged found {unacked_found}; \
         retries {}, sequence resets {}; producer {producer_id}; node {victim} (leader of \
         partitions {led:?}) killed after {killed_at_acked} acknowledged; produce took \
         {produce_took:?}, whole test {total:?}",
        acked.len(),
        failed.len(),
        missing.len(),
        stats.retries,
        stats.sequence_resets,
    );
    assert!(
        failed.is_empty(),
        "{} records failed, e.g. {}: {}",
        failed.len(),
        failed[0].0,
        failed[0].1
    );
    assert_eq!(acked.len(), MESSAGES as usize);
    assert!(
        missing.is_empty(),
        "acknowledged but missing, e.g. {:?}",
        &missing[..missing.len().min(10)]
    );
    assert_eq!(duplicates, 0, "duplicates in the log");
    assert!(
        misplaced.is_empty(),
        "not at the offset its delivery reported: {misplaced:?}"
    );
    assert_eq!(out_of_order, 0, "acknowledged records out of order");
    assert!(
        stats.retries > 0,
        "the kill cost no retry: no failover seen"
    );
}

#[test]
fn the_cli_counts_what_acks_all_could_not_get_acknowledged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Every copy must be in sync for acks=all: one node down is enough to
    // refuse it (NOT_ENOUGH_REPLICAS), while acks=1 goes on.
    let mut flags = FLAGS.to_vec();
    flags.extend(["--min-insync-replicas", "3"]);
    let mut cluster = TestCluster::start(3, &flags);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let b = cluster.node(1).client.to_string();
    let produce = |acks: &str, stdin: &str| {
        let (st, out, err) = common::cli(
            &["produce", TOPIC, "--acks", acks, "--bootstrap", &b],
            stdin,
        );
        (st.success(), format!("{out}{err}"))
    };
    create_topic(&b, TOPIC, 3, Some(3));
    let deadline = Instant::now() + WAIT;
    while metadata(cluster.node(1).client)
        .and_then(|md| {
            let t = md.topics.into_iter().find(|t| t.name == TOPIC)?;
            t.partitions
                .iter()
                .all(|p| p.leader != NO_LEADER && p.isr.len() == 3)
                .then_some(())
        })
        .is_none()
    {
        assert!(Instant::now() < deadline, "topic {TOPIC} not settled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, said) = produce("all", &numbers(0..30));
    assert!(ok, "acks=all with every copy in sync: {said}");

    // Node 3 gone, and out of every in-sync set (it is declared dead after
    // node_timeout, 2 s).
    cluster.node_mut(3).kill();
    let deadline = Instant::now() + WAIT;
    while metadata(cluster.node(1).client)
        .and_then(|md| {
            let t = md.topics.into_iter().find(|t| t.name == TOPIC)?;
            t.partitions
                .iter()
                .all(|p| p.leader != NO_LEADER && p.leader != 3 && !p.isr.contains(&3))
                .then_some(())
        })
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "node 3 still leads or is in sync"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let (ok, said) = produce("all", &numbers(30..60));
    println!(
        "acks=all with two of three in sync, after {:?}: {said}",
        t0.elapsed()
    );
    assert!(!ok, "acks=all cannot be met: {said}");
    assert!(
        said.contains("30 of 30 messages were not acknowledged")
            && said.contains("NOT_ENOUGH_REPLICAS"),
        "{said}"
    );
    let (ok, said) = produce("1", &numbers(60..90));
    assert!(ok, "acks=1 needs only the leader: {said}");
}
