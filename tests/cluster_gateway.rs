//! A cluster's data path on real nodes: topics created through one node are
//! placed across all of them, and a client that knows any one node reaches
//! every partition (the node forwards to the leader). Three `ringmq serve`
//! processes on loopback, one core each, one cluster at a time.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::cluster::TestCluster;
use common::probe::{self, cli, create_topic, eventually, healthy, numbers, WAIT};
use ringmq::ring::Epsilon;
use ringmq_client::{Client, ClientConfig, ClientError, Connection, ConnectionConfig};
use ringmq_protocol::{
    Acks, ErrorCode, ForwardHelloRequest, MetadataResponse, ProduceRequest, Request, ResponseBody,
    NO_LEADER,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Small segments: every partition preallocates one, and the disk is shared.
const FLAGS: &[&str] = &[
    "--node-timeout",
    "2s",
    "--replace-after",
    "10min",
    "--segment-bytes",
    "1MiB",
];

/// Runs `f` with a client bootstrapped with `addr` alone.
fn with_client<T>(addr: SocketAddr, f: impl AsyncFnOnce(Client) -> T) -> T {
    common::small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addr.to_string()))
            .await
            .expect("connect");
        f(client).await
    })
}

fn metadata(addr: SocketAddr) -> MetadataResponse {
    probe::metadata(addr).expect("metadata")
}

/// Partitions led per node id in a Metadata answer.
fn leaders(md: &MetadataResponse, topic: &str) -> BTreeMap<u32, usize> {
    let mut led = BTreeMap::new();
    for t in md.topics.iter().filter(|t| t.name == topic) {
        for p in &t.partitions {
            *led.entry(p.leader).or_insert(0) += 1;
        }
    }
    led
}

/// Every message of `topic` read through `addr`, sorted numerically.
fn consume_all(addr: SocketAddr, topic: &str) -> Vec<u32> {
    let bootstrap = addr.to_string();
    let (ok, out, err) = cli(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--timeout",
            "3s",
            "--bootstrap",
            &bootstrap,
        ],
        "",
    );
    assert!(ok, "consume through {addr}: {err}");
    let mut got: Vec<u32> = out.lines().map(|l| l.parse().expect("a number")).collect();
    got.sort_unstable();
    got
}

#[test]
fn a_topic_created_through_one_node_is_served_through_every_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let [n1, n2, n3] = [1, 2, 3].map(|id| cluster.node(id).client);

    let out = create_topic(&n1.to_string(), "orders", 30, None);
    assert!(out.contains("created topic orders"), "{out}");

    // Visible from the other nodes, with the same placement everywhere.
    for addr in [n2, n3] {
        let listed = eventually("the topic listed by every node", || {
            let (ok, out, _) = cli(&["topic", "list", "--bootstrap", &addr.to_string()], "");
            (ok && out.contains("orders partitions=30")).then_some(out)
        });
        assert!(
            !listed.contains("__offsets"),
            "internal topic listed: {listed}"
        );
    }
    let md = eventually("the same leaders from every node", || {
        let all: Vec<MetadataResponse> = [n1, n2, n3].into_iter().map(metadata).collect();
        let agree = all
            .iter()
            .all(|m| leaders(m, "orders") == leaders(&all[0], "orders"));
        (agree && leaders(&all[0], "orders").values().sum::<usize>() == 30).then(|| all[0].clone())
    });
    assert_eq!(md.brokers.len(), 3, "{md:?}");
    let led = leaders(&md, "orders");
    let bound = Epsilon::NODES.bound(30, 3);
    assert!(!led.contains_key(&NO_LEADER), "{led:?}");
    for id in 1..=3 {
        let n = led.get(&id).copied().unwrap_or(0);
        assert!(
            n >= 1 && n <= bound,
            "node {id} leads {n} of 30 (bound {bound}): {led:?}"
        );
    }

    // A client that knows node 3 only writes to and reads from all 30.
    let (ok, _, err) = cli(
        &["produce", "orders", "--bootstrap", &n3.to_string()],
        &numbers(0..3000),
    );
    assert!(ok, "produce through node 3: {err}");
    // The end offset a client sees is the high watermark: what every
    // in-sync copy holds, a few round trips after an acks=1 produce.
    let ends = eventually("every message on every in-sync copy", || {
        let ends = with_client(n3, async |c| {
            let admin = c.admin();
            let mut ends = Vec::new();
            for p in 0..30 {
                ends.push(
                    admin
                        .list_offsets("orders", p, ringmq_protocol::OffsetSpec::Latest)
                        .await
                        .expect("list offsets through node 3"),
                );
            }
            ends
        });
        (ends.iter().sum::<u64>() == 3000).then_some(ends)
    });
    assert!(
        ends.iter().all(|&e| e > 0),
        "a partition got nothing: {ends:?}"
    );
    assert_eq!(consume_all(n3, "orders"), (0..3000).collect::<Vec<_>>());

    // A consumer group through node 1 (its coordinator may live elsewhere)
    // reads everything and its offsets are visible through node 2.
    let (ok, out, err) = cli(
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--timeout",
            "3s",
            "--bootstrap",
            &n1.to_string(),
        ],
        "",
    );
    assert!(ok, "group consume: {err}");
    assert_eq!(out.lines().count(), 3000);
    let (ok, out, err) = cli(
        &[
            "group",
            "describe",
            "billing",
            "--bootstrap",
            &n2.to_string(),
        ],
        "",
    );
    assert!(ok, "describe: {err}");
    // `orders/P  HOLDER  COMMITTED  END  LAG`: every partition committed to its end.
    let caught_up = out
        .lines()
        .filter(|l| l.starts_with("orders/"))
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() == 5 && cols[2] == cols[3] && cols[4] == "0" && cols[3] != "0"
        })
        .count();
    assert_eq!(caught_up, 30, "{out}");
    let (ok, out, _) = cli(&["group", "list", "--bootstrap", &n3.to_string()], "");
    assert!(ok && out.contains("billing"), "{out}");

    // Deleted through node 2: gone everywhere.
    let (ok, _, err) = cli(
        &["topic", "delete", "orders", "--bootstrap", &n2.to_string()],
        "",
    );
    assert!(ok, "delete: {err}");
    for addr in [n1, n3] {
        eventually("the topic gone from every node", || {
            let (ok, out, _) = cli(&["topic", "list", "--bootstrap", &addr.to_string()], "");
            (ok && !out.contains("orders")).then_some(())
        });
    }
}

#[test]
fn topic_changes_go_on_with_two_of_three_and_the_restarted_node_catches_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    let statuses = cluster.wait_until("three alive members", WAIT, healthy(3));
    let leader = statuses[0].leader.expect("a controller leader");
    let survivors: Vec<u32> = (1..=3).filter(|&id| id != leader).collect();
    let addr = |c: &TestCluster, id: u32| c.node(id).client.to_string();

    create_topic(&addr(&cluster, survivors[0]), "before", 12, None);
    // acks=all: the leader is killed right after, and acks=1 would allow
    // it to take a tail its followers had not fetched yet (they lag under
    // load) with it.
    let (ok, _, err) = cli(
        &[
            "produce",
            "before",
            "--acks",
            "all",
            "--bootstrap",
            &addr(&cluster, survivors[1]),
        ],
        &numbers(0..1200),
    );
    assert!(ok, "{err}");

    cluster.node_mut(leader).kill();
    cluster.wait_until("a new controller leader", WAIT, |s| {
        s.leader.is_some_and(|l| l != leader)
            && s.nodes
                .iter()
                .any(|v| v.id == leader && v.alive == Some(false))
    });
    // A metadata change with two of three, through either survivor.
    create_topic(&addr(&cluster, survivors[1]), "after", 4, None);
    let (ok, out, _) = cli(
        &[
            "topic",
            "list",
            "--bootstrap",
            &addr(&cluster, survivors[0]),
        ],
        "",
    );
    assert!(ok && out.contains("after partitions=4"), "{out}");
    // Three copies: every partition the dead node led has a new leader
    // from its in-sync set, and everything written is still there.
    let md = metadata(cluster.node(survivors[0]).client);
    for p in md
        .topics
        .iter()
        .filter(|t| t.name == "before")
        .flat_map(|t| &t.partitions)
    {
        assert!(p.leader != NO_LEADER && p.leader != leader, "{p:?}");
        assert!(!p.isr.contains(&leader), "{p:?}");
    }
    let got = eventually("every message readable with the leader dead", || {
        let got = consume_all(cluster.node(survivors[0]).client, "before");
        (got.len() == 1200).then_some(got)
    });
    assert_eq!(got, (0..1200).collect::<Vec<_>>());

    // Back: it catches up from the Raft log and keeps its data.
    cluster.node_mut(leader).restart();
    cluster.wait_until("the restarted node back and caught up", WAIT, |s| {
        healthy(3)(s) && s.topics >= 3
    });
    let (ok, out, _) = cli(
        &["topic", "list", "--bootstrap", &addr(&cluster, leader)],
        "",
    );
    assert!(
        ok && out.contains("after partitions=4") && out.contains("before"),
        "{out}"
    );
    let got = eventually("every message readable through the restarted node", || {
        let got = consume_all(cluster.node(leader).client, "before");
        (got.len() == 1200).then_some(got)
    });
    assert_eq!(got, (0..1200).collect::<Vec<_>>());
    let (ok, _, err) = cli(
        &["produce", "after", "--bootstrap", &addr(&cluster, leader)],
        &numbers(0..100),
    );
    assert!(ok, "{err}");
}

/// A connection that says ForwardHello carries forwarded requests: they are
/// served or refused, never forwarded again; strangers are refused.
#[test]
fn forwarded_requests_are_not_forwarded_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let n1 = cluster.node(1).client;
    create_topic(&n1.to_string(), "t", 6, None);
    let md = metadata(n1);
    let t = md.topics.iter().find(|t| t.name == "t").expect("topic t");
    let elsewhere = t
        .partitions
        .iter()
        .find(|p| p.leader != 1)
        .expect("a partition led by node 2 or 3");
    let leader_addr = cluster.node(elsewhere.leader).client.to_string();
    let cluster_id = cluster.cluster_id.clone();

    common::small_executor().run(async move {
        let hello = |node_id: u32, cluster_id: &str| {
            Request::ForwardHello(ForwardHelloRequest {
                node_id,
                cluster_id: cluster_id.into(),
                nonce: Default::default(),
                proof: Default::default(),
            })
        };
        let refused = async |req: Request| {
            let c = Connection::connect(n1, ConnectionConfig::default())
                .await
                .unwrap();
            match c.request(&req).await {
                Err(ClientError::Broker { code, message }) => (code, message),
                other => panic!("{req:?} answered {other:?}"),
            }
        };
        let (code, message) = refused(hello(2, "someone-else")).await;
        assert_eq!(code, ErrorCode::InvalidRequest);
        assert!(message.contains("someone-else"), "{message}");
        let (code, message) = refused(hello(9, &cluster_id)).await;
        assert_eq!(code, ErrorCode::InvalidRequest);
        assert!(message.contains("node 9 is not a member"), "{message}");

        let c = Connection::connect(n1, ConnectionConfig::default())
            .await
            .unwrap();
        let answer = c.request(&hello(2, &cluster_id)).await.unwrap();
        assert!(matches!(answer, Some(ResponseBody::ForwardHello(_))));
        let produce = Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: elsewhere.partition,
            acks: Acks::Leader,
            timeout_ms: 5000,
            batch: common::batch(1, 1, 10, 0),
        });
        match c.request(&produce).await {
            Err(ClientError::Broker { code, message }) => {
                assert_eq!(code, ErrorCode::NotLeader);
                assert!(message.contains(&leader_addr), "{message}");
            }
            other => panic!("a forwarded produce for another node's partition: {other:?}"),
        }
    });
}

/// (replicas, leader) of every partition of `topic`, by partition.
fn placement(md: &MetadataResponse, topic: &str) -> Vec<(Vec<u32>, u32)> {
    md.topics
        .iter()
        .find(|t| t.name == topic)
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.replicas.clone(), p.leader))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue #7, acceptance 3: a fourth node takes about a quarter of the
/// partitions and nothing else moves; a node killed and restarted within
/// `replace_after` moves no replica, only leadership while it is away.
#[test]
fn a_fourth_node_takes_a_quarter_and_a_restart_moves_no_replica() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", WAIT, healthy(3));
    let n1 = cluster.node(1).client;
    create_topic(&n1.to_string(), "spread", 240, Some(1));
    let before = placement(&metadata(n1), "spread");
    assert_eq!(before.len(), 240);

    assert_eq!(cluster.add_member(FLAGS), 4);
    cluster.wait_until("four alive members", Duration::from_secs(60), healthy(4));
    let after = eventually("node 1 sees the new placement", || {
        let md = metadata(n1);
        (md.brokers.len() == 4).then(|| placement(&md, "spread"))
    });
    let moved: Vec<usize> = (0..240).filter(|&i| before[i].0 != after[i].0).collect();
    println!(
        "a fourth node joined: {} of 240 partitions moved",
        moved.len()
    );
    // About 1/4: at most 1.5 × 1/4, and at least half of 1/4.
    assert!(moved.len() * 8 <= 240 * 3, "{} of 240 moved", moved.len());
    assert!(moved.len() * 8 >= 240, "only {} of 240 moved", moved.len());
    for i in 0..240 {
        if moved.contains(&i) {
            assert_eq!(
                after[i].0,
                [4],
                "partition {i} moved elsewhere than the new node"
            );
            // The old copy leads until the new one has caught up.
            assert!(
                after[i].1 == before[i].1 || after[i].1 == 4,
                "partition {i}: led by {}",
                after[i].1
            );
        } else {
            assert_eq!(after[i], before[i], "partition {i} changed");
        }
    }

    // The moved partitions' copies reach node 4, which then leads them.
    let after = eventually("node 4 leads what moved to it", || {
        let p = placement(&metadata(n1), "spread");
        moved.iter().all(|&i| p[i].1 == 4).then_some(p)
    });

    // Node 2 dies and comes back within replace_after: replicas stay put;
    // while it is away its partitions (one copy each) have no leader.
    cluster.node_mut(2).kill();
    cluster.wait_until("node 2 marked dead", WAIT, |s| {
        s.nodes.iter().any(|v| v.id == 2 && v.alive == Some(false))
    });
    let away = eventually("node 1 sees node 2 gone", || {
        let md = metadata(n1);
        (md.brokers.len() == 3).then(|| placement(&md, "spread"))
    });
    for i in 0..240 {
        assert_eq!(
            away[i].0, after[i].0,
            "partition {i}: replicas moved on a death"
        );
        if after[i].1 == 2 {
            assert_eq!(away[i].1, NO_LEADER, "partition {i}");
        } else {
            assert_eq!(
                away[i].1, after[i].1,
                "partition {i}: a live leader changed"
            );
        }
    }
    cluster.node_mut(2).restart();
    cluster.wait_until("node 2 back", WAIT, healthy(4));
    let back = eventually("node 1 sees node 2 back", || {
        let md = metadata(n1);
        (md.brokers.len() == 4).then(|| placement(&md, "spread"))
    });
    assert_eq!(
        back, after,
        "a restart within replace_after moved something"
    );
}
