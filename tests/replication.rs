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
use ringmq::cluster::admin::ClusterStatus;
use ringmq_client::{Client, ClientConfig};
use ringmq_protocol::MetadataResponse;

static SERIAL: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(30);
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

fn healthy(n: usize) -> impl Fn(&ClusterStatus) -> bool {
    move |s| {
        s.leader.is_some()
            && s.nodes
                .iter()
                .filter(|v| v.member && v.alive == Some(true))
                .count()
                == n
    }
}

fn cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let (status, out, err) = common::cli(args, stdin);
    (status.success(), out, err)
}

fn metadata(addr: SocketAddr) -> Option<MetadataResponse> {
    common::small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addr.to_string()))
            .await
            .ok()?;
        client.admin().metadata(None).await.ok()
    })
}

/// Per partition of `topic`: its in-sync set.
fn isrs(md: &MetadataResponse, topic: &str) -> BTreeMap<u32, Vec<u32>> {
    md.topics
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.isr.clone())))
        .collect()
}

fn numbers(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{i}\n")).collect()
}

/// Issue #8, acceptance 2.
#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let n1 = cluster.node(1).client;
    let (ok, out, err) = cli(
        &[
            "topic",
            "create",
            "jobs",
            "--partitions",
            "6",
            "--replication",
            "3",
            "--bootstrap",
            &n1.to_string(),
        ],
        "",
    );
    assert!(ok, "{err}");
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
