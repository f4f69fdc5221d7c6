//! The smart client on a real 3-node cluster: bootstrapped with one node, it
//! learns the others from Metadata and sends Produce and Fetch straight to
//! each partition's leader (the nodes' `ringmq_forwarded_requests_total`
//! stay flat); a leader killed while producing costs its partitions'
//! records an error (or a retry), not a hang, and the producer recovers once
//! the node is back; a dead bootstrap address is passed over. Three
//! `ringmq serve` processes on loopback, one core each, one cluster at a
//! time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::probe::eventually;
use ringmq::cluster::admin::ClusterStatus;
use ringmq_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    StartOffset,
};
use ringmq_protocol::{ErrorCode, MetadataResponse, NO_LEADER};

static SERIAL: Mutex<()> = Mutex::new(());

const FLAGS: &[&str] = &["--node-timeout", "2s", "--replace-after", "10min"];
const WAIT: Duration = Duration::from_secs(30);
const PARTITIONS: u32 = 12;
const MESSAGES: u32 = 6000;

fn healthy(n: usize) -> impl Fn(&ClusterStatus) -> bool {
    move |s| {
        s.leader.is_some()
            && s.nodes.iter().filter(|v| v.member).count() == n
            && s.nodes
                .iter()
                .filter(|v| v.member)
                .all(|v| v.alive == Some(true))
    }
}

/// `fut`, or a panic naming `what` after `limit`: nothing here may hang.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    let timer = async {
        glommio::timer::sleep(limit).await;
        None
    };
    futures_lite::future::or(async { Some(fut.await) }, timer)
        .await
        .unwrap_or_else(|| panic!("{what}: not done within {limit:?}"))
}

fn scrape(addr: SocketAddr) -> String {
    common::probe::scrape(addr).expect("a scrape of the metrics listener")
}

/// The sum of every sample of `name` whose labels contain `label`.
fn total(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per running node: (`api` requests it forwarded to another node,
/// `api` requests it answered).
fn counters(cluster: &TestCluster, api: &str) -> BTreeMap<u32, (u64, u64)> {
    let label = format!("api=\"{api}\"");
    cluster
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(|n| {
            let text = scrape(n.metrics);
            let fwd = total(&text, "ringmq_forwarded_requests_total", &label);
            let answered = total(&text, "ringmq_requests_total", &label);
            (n.id, (fwd as u64, answered as u64))
        })
        .collect()
}

fn forwarded(c: &BTreeMap<u32, (u64, u64)>) -> u64 {
    c.values().map(|(f, _)| f).sum()
}

fn run<T>(f: impl Future<Output = T>) -> T {
    common::small_executor().run(f)
}

async fn connect(bootstrap: &str) -> Client {
    Client::connect(ClientConfig::new(bootstrap))
        .await
        .expect("connect")
}

/// Partition → leader, as `addr` answers Metadata.
fn leaders(addr: SocketAddr, topic: &str) -> Option<Vec<u32>> {
    let md: MetadataResponse = run(async {
        connect(&addr.to_string())
            .await
            .admin()
            .metadata(Some(&[topic]))
            .await
            .ok()
    })?;
    let t = md.topics.into_iter().find(|t| t.name == topic)?;
    (t.error_code == ErrorCode::None).then(|| t.partitions.iter().map(|p| p.leader).collect())
}

/// Creates `topic` through node 3 and waits until every node reports the
/// same leader for each partition, none missing; returns the leaders.
fn create_topic(cluster: &TestCluster, topic: &str) -> Vec<u32> {
    let n3 = cluster.node(3).client.to_string();
    run(async {
        connect(&n3)
            .await
            .admin()
            .create_topic(topic, PARTITIONS, 1)
            .await
            .expect("create the topic")
    });
    eventually("every node agrees on the leaders", || {
        let all: Vec<Option<Vec<u32>>> = (1..=3)
            .map(|id| leaders(cluster.node(id).client, topic))
            .collect();
        let first = all[0].clone()?;
        let complete = first.len() == PARTITIONS as usize && !first.contains(&NO_LEADER);
        (complete && all.iter().all(|l| l.as_ref() == Some(&first))).then_some(first)
    })
}

/// Reads `topic` from the beginning through `bootstrap` until every number
/// of `want` came (or panics after a while); every number seen.
async fn consume_numbers(bootstrap: &str, topic: &str, want: &BTreeSet<u32>) -> BTreeSet<u32> {
    let client = connect(bootstrap).await;
    let cfg = ConsumerConfig {
        max_wait: Duration::from_millis(200),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(&client, topic, None, StartOffset::Earliest, cfg)
        .await
        .expect("a consumer");
    let mut seen = BTreeSet::new();
    let all_in = async {
        while !want.is_subset(&seen) {
            for r in consumer.poll().await.expect("poll") {
                let v = r.value.expect("a value");
                seen.insert(std::str::from_utf8(&v).unwrap().parse().unwrap());
            }
        }
    };
    let timer = async {
        glommio::timer::sleep(Duration::from_secs(60)).await;
    };
    futures_lite::future::or(all_in, timer).await;
    seen
}

/// Sends `range` as numbered records (no key: round-robin); the number and
/// the delivery of each.
async fn send_numbers(
    producer: &Producer,
    range: std::ops::Range<u32>,
) -> Vec<(u32, ringmq_client::Delivery)> {
    let mut deliveries = Vec::with_capacity(range.len());
    for i in range {
        let d = within(WAIT, "send", producer.send(None, i.to_string().as_bytes())).await;
        deliveries.push((i, d.expect("send")));
    }
    deliveries
}

#[test]
fn a_client_that_knows_one_node_goes_straight_to_the_leaders() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let led = create_topic(&cluster, "direct");
    let n3 = cluster.node(3).client.to_string();
    eprintln!("partition leaders: {led:?}");

    let produce_before = counters(&cluster, "produce");
    let started = Instant::now();
    run(async {
        let client = connect(&n3).await;
        let producer = Producer::new(&client, "direct", ProducerConfig::default())
            .await
            .expect("a producer");
        let mut deliveries = Vec::with_capacity(MESSAGES as usize);
        for i in 0..MESSAGES {
            let d = producer.send(None, i.to_string().as_bytes()).await;
            deliveries.push(d.expect("send"));
        }
        within(WAIT, "flush", producer.flush())
            .await
            .expect("flush");
        for d in deliveries {
            d.await.expect("delivered");
        }
        // Retries there may be: a leader answers NOT_LEADER until it has
        // opened a new topic's partition, gateway or not.
        let stats = producer.stats();
        eprintln!("producer retries: {}", stats.retries);
        assert_eq!(stats.failed, 0);
    });
    let produce_took = started.elapsed();
    let produce_after = counters(&cluster, "produce");
    let fwd = forwarded(&produce_after) - forwarded(&produce_before);
    eprintln!(
        "produced {MESSAGES} through node 3 in {produce_took:?}; produce (forwarded, answered) per node {produce_after:?}"
    );
    assert!(
        fwd <= 2,
        "{fwd} produce requests were forwarded: {produce_after:?}"
    );
    // Each leader answered produce requests of its own.
    for id in 1..=3u32 {
        if led.contains(&id) {
            let answered = produce_after[&id].1 - produce_before[&id].1;
            assert!(
                answered > 0,
                "node {id} leads partitions but got no produce"
            );
        }
    }

    let fetch_before = counters(&cluster, "fetch");
    let all: BTreeSet<u32> = (0..MESSAGES).collect();
    let seen = run(consume_numbers(&n3, "direct", &all));
    assert_eq!(seen, all);
    let fetch_after = counters(&cluster, "fetch");
    eprintln!("fetch (forwarded, answered) per node {fetch_after:?}");
    assert_eq!(
        forwarded(&fetch_after) - forwarded(&fetch_before),
        0,
        "fetches were forwarded: {fetch_after:?}"
    );
}

#[test]
fn a_leader_killed_while_producing_fails_or_delays_its_partitions_only() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let led = create_topic(&cluster, "killed");
    // The victim leads partitions and is not the client's bootstrap node.
    let victim = [1u32, 2]
        .into_iter()
        .max_by_key(|id| led.iter().filter(|l| *l == id).count())
        .expect("a node");
    let victims: BTreeSet<u32> = (0..PARTITIONS)
        .filter(|p| led[*p as usize] == victim)
        .collect();
    assert!(!victims.is_empty(), "node {victim} leads nothing: {led:?}");
    let n3 = cluster.node(3).client.to_string();
    const WARM: u32 = 1200;
    const AFTER: u32 = 1200;

    let cluster_ref = &mut cluster;
    let outcome = run(async move {
        let client = connect(&n3).await;
        // Every partition set up on its leader first (a leader answers
        // NOT_LEADER until it has opened a new topic's partition).
        let warm = Producer::new(&client, "killed", ProducerConfig::default())
            .await
            .expect("a producer");
        let mut acked = BTreeSet::new();
        for (i, d) in send_numbers(&warm, 0..WARM).await {
            d.await.expect("warm-up delivered");
            acked.insert(i);
        }
        // Few, short retries: a dead leader's batches fail within a second
        // each (every batch has its own retries, one after another).
        let config = ProducerConfig {
            retries: 4,
            retry_backoff: Duration::from_millis(50),
            max_retry_backoff: Duration::from_millis(200),
            linger: Duration::from_millis(50),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(&client, "killed", config)
            .await
            .expect("a producer");
        let half = WARM + MESSAGES / 2;
        let mut deliveries = send_numbers(&producer, WARM..half).await;
        cluster_ref.node_mut(victim).kill();
        let killed_at = Instant::now();
        deliveries.extend(send_numbers(&producer, half..WARM + MESSAGES).await);
        within(
            Duration::from_secs(60),
            "flush after the kill",
            producer.flush(),
        )
        .await
        .expect("flush");
        let flushed_after = killed_at.elapsed();
        let mut failed: BTreeMap<u32, Vec<ClientError>> = BTreeMap::new();
        for (i, d) in deliveries {
            let p = d.partition();
            match d.await {
                Ok(_) => {
                    acked.insert(i);
                }
                Err(e) => failed.entry(p).or_default().push(e),
            }
        }
        let stats = producer.stats();

        // Back: the same producer delivers to every partition again, once
        // the node has opened its partitions.
        cluster_ref.node_mut(victim).restart();
        cluster_ref.wait_until("the victim back", WAIT, healthy(3));
        let restarted_at = Instant::now();
        let mut probe = 1_000_000;
        within(WAIT, "every partition writable again", async {
            loop {
                let mut all_ok = true;
                for p in 0..PARTITIONS {
                    probe += 1;
                    let d = producer
                        .send_to(p, None, probe.to_string().as_bytes())
                        .await;
                    producer.flush().await.expect("flush");
                    all_ok &= d.expect("send").await.is_ok();
                }
                if all_ok {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let recovered_after = restarted_at.elapsed();
        let mut after = BTreeSet::new();
        let end = WARM + MESSAGES;
        for (i, d) in send_numbers(&producer, end..end + AFTER).await {
            after.insert(d.await.expect("delivered after the restart").partition);
            acked.insert(i);
        }
        (acked, failed, stats, after, flushed_after, recovered_after)
    });
    let (acked, failed, stats, after, flushed_after, recovered_after) = outcome;
    let failed_records: usize = failed.values().map(Vec::len).sum();
    eprintln!(
        "node {victim} killed (it led {victims:?}): flushed {flushed_after:?} after the kill; \
         {failed_records} records failed in partitions {:?}, {} retries; e.g. {:?}; \
         every partition writable {recovered_after:?} after the restart",
        failed.keys().collect::<Vec<_>>(),
        stats.retries,
        failed
            .values()
            .next()
            .and_then(|v| v.first())
            .map(ToString::to_string),
    );
    assert_eq!(
        acked.len() + failed_records,
        (WARM + MESSAGES + AFTER) as usize
    );
    assert_eq!(stats.failed as usize, failed_records);
    for (p, errors) in &failed {
        assert!(
            victims.contains(p),
            "partition {p}, led by node {}, failed: {}",
            led[*p as usize],
            errors[0]
        );
        for e in errors {
            assert!(
                e.is_retriable() || matches!(e, ClientError::Connect { .. }),
                "partition {p}: {e}"
            );
        }
    }
    assert_eq!(
        after.len(),
        PARTITIONS as usize,
        "after the restart: {after:?}"
    );
    // Everything acknowledged is there (a retried batch may be there twice).
    let n3 = cluster.node(3).client.to_string();
    let seen = run(consume_numbers(&n3, "killed", &acked));
    let missing: Vec<&u32> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} acked records not found, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn bootstrap_goes_on_past_a_dead_address() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let n2 = cluster.node(2).client;
    let bootstrap = format!("{dead},{n2}");
    run(async {
        let client = connect(&bootstrap).await;
        assert_eq!(client.connection().await.expect("gateway").addr(), n2);
        let md = client.admin().metadata(None).await.expect("metadata");
        assert_eq!(md.brokers.len(), 3, "{md:?}");
        // Reconnecting starts from node 2, the one that answered.
        assert_eq!(client.open_connection().await.expect("open").addr(), n2);
    });
    let (status, out, err) = common::cli(&["topic", "list", "--bootstrap", &bootstrap], "");
    assert!(status.success(), "{out}{err}");
}
