//! Copies of partitions on several nodes (issue #8): followers leave the
//! in-sync set when they stop keeping up and come back once caught up, and
//! acks=all writes go on with two of three. Real `ringmq serve` processes
//! on loopback, one core each, one cluster at a time.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::probe::{cli, create_topic, healthy, metadata, numbers, scrape, WAIT};
use ringmq_protocol::MetadataResponse;

static SERIAL: Mutex<()> = Mutex::new(());

/// A follower is dropped from the ISR after 2 s without catching up; a
/// node is declared dead only after 6 s, so what removes a paused follower
/// first is its leaders' ISR decision, not the controller's.
const FLAGS: &[&str] = &[
    "--node-timeout",
    "6s",
    "--replace-after",
    "10min",
    "--replica-lag",
    "2s",
    "--segment-bytes",
    "1MiB",
];

/// Per partition of `topic`: its in-sync set.
fn isrs(md: &MetadataResponse, topic: &str) -> BTreeMap<u32, Vec<u32>> {
    md.topics
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.isr.clone())))
        .collect()
}

/// Issue #8, acceptance 2.
#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let n1 = cluster.node(1).client;
    let out = create_topic(&n1.to_string(), "jobs", 6, Some(3));
    assert!(out.contains("replication=3"), "{out}");
    let (ok, _, err) = cli(
        &[
            "produce",
            "jobs",
            "--acks",
            "all",
            "--bootstrap",
            &n1.to_string(),
        ],
        &numbers(0..600),
    );
    assert!(ok, "acks=all with three in sync: {err}");

    // Node 3 stops (as if cut off): the leaders of the partitions it
    // follows drop it from their ISRs, well before it is declared dead.
    let paused = 3;
    let md = metadata(n1).expect("metadata");
    let followed: Vec<u32> = md
        .topics
        .iter()
        .filter(|t| t.name == "jobs")
        .flat_map(|t| &t.partitions)
        .filter(|p| p.leader != paused)
        .map(|p| p.partition)
        .collect();
    assert!(!followed.is_empty());
    cluster.node(paused).pause(true);
    let t0 = Instant::now();
    let deadline = t0 + WAIT;
    loop {
        let out_of_all = metadata(n1).is_some_and(|md| {
            let isr = isrs(&md, "jobs");
            followed
                .iter()
                .all(|p| isr.get(p).is_some_and(|s| !s.contains(&paused)))
        });
        if out_of_all {
            break;
        }
        assert!(Instant::now() < deadline, "node {paused} still in an ISR");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t0.elapsed();
    println!(
        "a paused follower left the ISR of the {} partitions it follows after {took:?} (replica_lag 2s, node_timeout 6s)",
        followed.len()
    );
    assert!(
        took < Duration::from_secs(6),
        "{took:?}: not the ISR decision"
    );

    // Two of three: acks=all still works (min_insync_replicas is 2).
    let (ok, _, err) = cli(
        &[
            "produce",
            "jobs",
            "--acks",
            "all",
            "--bootstrap",
            &n1.to_string(),
        ],
        &numbers(600..1200),
    );
    assert!(ok, "acks=all with two in sync: {err}");
    let status = cluster.node(1).status().expect("status");
    assert!(status.under_replicated >= 6, "{status:?}");

    // Back: it catches up and every leader takes it in again.
    cluster.node(paused).pause(false);
    let deadline = Instant::now() + WAIT;
    loop {
        let all_in = metadata(n1).is_some_and(|md| {
            let isr = isrs(&md, "jobs");
            isr.len() == 6 && isr.values().all(|s| s.len() == 3)
        });
        if all_in {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {paused} did not rejoin every ISR"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its copy is whole: reading through it gives everything.
    let (ok, out, err) = cli(
        &[
            "consume",
            "jobs",
            "--from-beginning",
            "--timeout",
            "3s",
            "--bootstrap",
            &cluster.node(paused).client.to_string(),
        ],
        "",
    );
    assert!(ok, "{err}");
    let mut got: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..1200).collect::<Vec<_>>());
}

/// `ringmq_partition_end_offset` of `topic`/`partition` on the node whose
/// metrics listen at `metrics`.
fn end_offset_on(metrics: SocketAddr, topic: &str, partition: u32) -> Option<u64> {
    let series =
        format!("ringmq_partition_end_offset{{topic=\"{topic}\",partition=\"{partition}\"}} ");
    scrape(metrics)?
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// A leader whose followers are down takes acks=1 writes they never see;
/// then it dies, they come back and elect a new leader, and go on. When the old leader returns, its
/// extra tail diverges from the new leader's history: it truncates it at
/// the epoch boundary and copies the new history, so all copies agree.
#[test]
fn a_returning_leader_truncates_what_only_it_had() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let n1 = cluster.node(1).client;
    create_topic(&n1.to_string(), "log", 1, Some(3));
    let produce = |via: SocketAddr, acks: &str, range: std::ops::Range<u32>| {
        cli(
            &[
                "produce",
                "log",
                "--partition",
                "0",
                "--acks",
                acks,
                "--bootstrap",
                &via.to_string(),
            ],
            &numbers(range),
        )
    };
    let (ok, _, err) = produce(n1, "all", 0..100);
    assert!(ok, "{err}");
    let md = metadata(n1).expect("metadata");
    let old = md.topics[0].partitions[0].leader;
    let followers: Vec<u32> = (1..=3).filter(|&n| n != old).collect();
    let via_old = cluster.node(old).client;

    // The followers die (and with them the controllers' quorum, so the
    // metadata stands still); the leader alone takes 50 acks=1 writes.
    for &f in &followers {
        cluster.node_mut(f).kill();
    }
    let (ok, _, err) = produce(via_old, "1", 100..150);
    assert!(ok, "acks=1 on the lone leader: {err}");
    cluster.node_mut(old).kill();
    for &f in &followers {
        cluster.node_mut(f).restart();
    }
    // A new leader from the ISR, which never saw the last 50.
    let survivor = cluster.node(followers[0]).client;
    let deadline = Instant::now() + WAIT;
    loop {
        let moved = metadata(survivor).is_some_and(|md| {
            let p = &md
                .topics
                .iter()
                .find(|t| t.name == "log")
                .unwrap()
                .partitions[0];
            p.leader != old && p.leader != ringmq_protocol::NO_LEADER
        });
        if moved {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, _, err) = produce(survivor, "all", 1000..1030);
    assert!(ok, "acks=all under the new leader: {err}");

    // The old leader returns: it truncates its 50 and copies the 30.
    cluster.node_mut(old).restart();
    let deadline = Instant::now() + WAIT;
    loop {
        let ends: Vec<Option<u64>> = (1..=3)
            .map(|n| end_offset_on(cluster.node(n).metrics, "log", 0))
            .collect();
        if ends.iter().all(|e| *e == Some(130)) {
            break;
        }
        assert!(Instant::now() < deadline, "copies disagree: {ends:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out, err) = cli(
        &[
            "consume",
            "log",
            "--from-beginning",
            "--timeout",
            "3s",
            "--bootstrap",
            &via_old.to_string(),
        ],
        "",
    );
    assert!(ok, "{err}");
    let got: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    let want: Vec<u32> = (0..100).chain(1000..1030).collect();
    assert_eq!(got, want, "the history every copy agrees on");
}
