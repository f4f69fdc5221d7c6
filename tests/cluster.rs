//! Real nodes on loopback agree on the cluster metadata (wiring step 1: the
//! data path is still local). Three `ringmq serve` controllers, one core
//! each, and in some tests a fourth node that is not a controller; the tests
//! run one after another so no more than four brokers run at once.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::cluster::TestCluster;
use protobuf::Message as _;
use ringmq::cluster::admin::ClusterStatus;
use ringmq::cluster::metadata::{Command, NodeInfo};
use ringmq_protocol::peer::{Forward, Hello, PeerMessage, RaftMessage, RejectReason};

/// One cluster at a time (memory, and two cores shared with other work).
static SERIAL: Mutex<()> = Mutex::new(());

/// Fast failure detection so the tests do not wait 10 s for a dead node;
/// small segments, as each node preallocates one per `__offsets` partition
/// (8 × 256 MiB by default) on a disk shared with other work.
const FLAGS: &[&str] = &[
    "--node-timeout",
    "2s",
    "--replace-after",
    "10min",
    "--segment-bytes",
    "1MiB",
];

fn healthy(n: usize) -> impl Fn(&ClusterStatus) -> bool {
    move |s| {
        s.leader.is_some()
            && s.nodes.len() == n
            && s.nodes
                .iter()
                .all(|v| v.member && v.controller && v.alive == Some(true))
    }
}

fn same_leader(statuses: &[ClusterStatus]) -> u32 {
    let leader = statuses[0].leader.expect("a leader");
    for s in statuses {
        assert_eq!(s.leader, Some(leader), "{statuses:#?}");
    }
    leader
}

#[test]
fn three_nodes_agree_and_survive_the_leader_being_killed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    let statuses = cluster.wait_until("three alive members", Duration::from_secs(30), healthy(3));
    let leader = same_leader(&statuses);
    for (s, node) in statuses.iter().zip(&cluster.nodes) {
        let view = &s.nodes[node.id as usize - 1];
        assert_eq!(view.client_addr, Some(node.client.to_string()));
        assert_eq!(view.peer_addr, Some(node.peer.to_string()));
    }
    // The table, as an operator sees it.
    let (ok, out, err) = cluster.node(1).cli(&["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("controller leader {leader}")),
        "{out}"
    );
    assert_eq!(out.matches("alive").count(), 3, "{out}");

    // The controller leader dies without a word.
    cluster.node_mut(leader).kill();
    let statuses = cluster.wait_until(
        "a new leader, and the old one marked dead",
        Duration::from_secs(30),
        |s| {
            s.leader.is_some_and(|l| l != leader)
                && s.nodes
                    .iter()
                    .all(|v| v.member && v.alive == Some(v.id != leader))
        },
    );
    // The dead mark was a committed metadata change with two of three.
    let new_leader = same_leader(&statuses);
    // A change that cannot apply is refused cleanly, through either survivor.
    for id in (1..=3).filter(|&id| id != leader) {
        let (ok, _, err) = cluster.node(id).cli(&["remove", "4"]);
        assert!(!ok);
        assert!(err.contains("node 4 is not a member"), "{err}");
    }
    let applied = statuses.iter().map(|s| s.applied).max().unwrap_or(0);

    // Back, it catches up from the log and is marked alive again.
    cluster.node_mut(leader).restart();
    let statuses = cluster.wait_until(
        "the restarted node caught up",
        Duration::from_secs(30),
        |s| healthy(3)(s) && s.applied > applied,
    );
    assert_eq!(same_leader(&statuses), new_leader);
}

/// Reads what the node answers before it closes: the frames, or an error.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<PeerMessage> {
    exchange_for(addr, bytes, Duration::from_secs(10))
}

/// [`exchange`], reading for at most `wait` (a connection the node keeps
/// open yields what arrived by then).
fn exchange_for(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> Vec<PeerMessage> {
    let mut s = TcpStream::connect(addr).expect("connect to the peer port");
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut frames = Vec::new();
    let mut buf = Bytes::from(got);
    while let Ok(Some((msg, used))) = PeerMessage::decode_frame(&buf) {
        frames.push(msg);
        buf = buf.slice(used..);
    }
    frames
}

fn hello(cluster_id: &str, node_id: u32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    PeerMessage::Hello(Hello {
        protocol_version: 0,
        cluster_id: cluster_id.into(),
        node_id,
    })
    .encode(&mut buf);
    buf.to_vec()
}

fn rejected(frames: &[PeerMessage], reason: RejectReason) -> bool {
    matches!(frames, [PeerMessage::Reject(r)] if r.reason == reason)
}

#[test]
fn bad_peer_input_is_refused_without_disturbing_the_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, FLAGS);
    let before = cluster.wait_until("three alive members", Duration::from_secs(30), healthy(3));
    let leader = same_leader(&before);
    let target = cluster.node(leader).peer;

    // Garbage: a header no peer frame has. The connection is closed.
    let frames = exchange(target, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        frames.is_empty() || rejected(&frames, RejectReason::BadInput),
        "{frames:?}"
    );
    // A valid frame that is not a Hello.
    let mut hb = BytesMut::new();
    PeerMessage::Heartbeat(ringmq_protocol::peer::NodeHeartbeat {
        node_id: 2,
        incarnation: 1,
        sent_ms: 0,
    })
    .encode(&mut hb);
    assert!(rejected(&exchange(target, &hb), RejectReason::BadInput));
    // A stranger's cluster, an unknown node, a node claiming the receiver's id.
    assert!(rejected(
        &exchange(target, &hello("other", 2)),
        RejectReason::WrongCluster
    ));
    assert!(rejected(
        &exchange(target, &hello(&cluster.cluster_id, leader)),
        RejectReason::UnknownNode
    ));
    // A node of the cluster that then sends garbage: answered Hello, then
    // that one connection is closed.
    let other = if leader == 1 { 2 } else { 1 };
    let mut bytes = hello(&cluster.cluster_id, other);
    bytes.extend_from_slice(&[0xff; 64]);
    let frames = exchange(target, &bytes);
    assert!(
        matches!(frames.first(), Some(PeerMessage::Hello(_))),
        "{frames:?}"
    );
    // A raft message that is not protobuf, on an accepted connection.
    let mut bytes = hello(&cluster.cluster_id, other);
    let mut raft = BytesMut::new();
    PeerMessage::Raft(ringmq_protocol::peer::RaftMessage {
        message: Bytes::from_static(&[0xff, 0xff, 0xff]),
    })
    .encode(&mut raft);
    bytes.extend_from_slice(&raft);
    let frames = exchange(target, &bytes);
    assert!(
        matches!(frames.first(), Some(PeerMessage::Hello(_))),
        "{frames:?}"
    );

    // A stranger (node 9) is heard, as it may ask to join; but a vote
    // request from it with a huge term is dropped, and so are its forwarded
    // join of another node (7) and removal of a controller.
    let term = before[0].term;
    let vote = raft::eraftpb::Message {
        msg_type: raft::eraftpb::MessageType::MsgRequestVote,
        from: 9,
        to: u64::from(leader),
        term: term + 100,
        ..Default::default()
    };
    let forward = |cmd: &Command| {
        PeerMessage::Forward(Forward {
            command: serde_json::to_vec(cmd).unwrap().into(),
        })
    };
    let other_join = Command::Join {
        node: NodeInfo {
            id: 7,
            client_addr: "127.0.0.1:1".into(),
            peer_addr: "127.0.0.1:2".into(),
        },
    };
    for frame in [
        PeerMessage::Raft(RaftMessage {
            message: vote.write_to_bytes().unwrap().into(),
        }),
        forward(&other_join),
        forward(&Command::Remove { node: other }),
    ] {
        let mut bytes = hello(&cluster.cluster_id, 9);
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        bytes.extend_from_slice(&buf);
        let frames = exchange_for(target, &bytes, Duration::from_secs(1));
        assert!(
            matches!(frames.first(), Some(PeerMessage::Hello(h)) if h.node_id == leader),
            "{frames:?}"
        );
    }

    // Nothing changed: same leader, same term, everyone alive.
    std::thread::sleep(Duration::from_secs(3));
    let after = cluster.wait_until("three alive members", Duration::from_secs(10), healthy(3));
    assert_eq!(same_leader(&after), leader);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.term, b.term, "{before:#?}\n{after:#?}");
    }
    // Refusals are logged, each kind once.
    let logs = cluster.node(leader).logs();
    let refusals = logs.matches("peer connection closed").count();
    assert!((1..=6).contains(&refusals), "{logs}");
    for dropped in [
        "raft message from a node that is neither a voter nor a learner dropped",
        "forwarded command not taken from this peer",
    ] {
        assert_eq!(logs.matches(dropped).count(), 1, "{dropped}: {logs}");
    }
    for s in &after {
        assert!(s.nodes.iter().all(|v| v.id != 7 && v.id != 9), "{after:#?}");
    }
}

#[test]
fn cluster_settings_are_checked_at_start() {
    let run = |args: &[&str]| {
        let mut all = vec!["serve", "--cores", "1", "--data-dir", "/nonexistent-ringmq"];
        all.extend_from_slice(args);
        let (status, _, err) = common::cli(&all, "");
        assert!(!status.success());
        err
    };
    // Not a controller: it joins as a member, at its own peer address.
    let err = run(&["--node-id", "4", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"]);
    assert!(
        err.contains("`peer_listen`") && err.contains("1, 2"),
        "{err}"
    );
    let err = run(&[
        "--node-id",
        "4",
        "--peers",
        "1=127.0.0.1:1,2=127.0.0.1:2",
        "--peer-listen",
        "0.0.0.0:3",
    ]);
    assert!(err.contains("`peer_listen`"), "{err}");
    let err = run(&["--peers", "1=127.0.0.1:1"]);
    assert!(err.contains("`node_id`"), "{err}");
    let err = run(&["--node-id", "1", "--peers", "1=127.0.0.1:1,1=127.0.0.1:2"]);
    assert!(err.contains("appears more than once"), "{err}");
    let (status, _, err) = common::cli(&["cluster", "status", "--http", "127.0.0.1:1"], "");
    assert!(!status.success());
    assert!(err.contains("cannot reach"), "{err}");
}

/// Statuses of every node in `statuses` agree: same leader, same applied
/// index, same members.
fn agree(statuses: &[ClusterStatus]) -> bool {
    let first = &statuses[0];
    statuses.iter().all(|s| {
        s.leader.is_some()
            && s.leader == first.leader
            && s.applied == first.applied
            && s.nodes == first.nodes
    })
}

/// Three controllers and node 4 as an alive member that is a learner.
fn healthy_with_learner(s: &ClusterStatus) -> bool {
    s.leader.is_some()
        && s.nodes.len() == 4
        && s.nodes.iter().all(|v| {
            v.member
                && v.alive == Some(true)
                && v.controller == (v.id != 4)
                && v.learner == (v.id == 4)
        })
}

#[test]
fn a_fourth_node_joins_without_touching_the_controllers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    let before = cluster.wait_until("three alive members", Duration::from_secs(30), healthy(3));
    let leader = same_leader(&before);
    let four = cluster.add_member(FLAGS);
    assert_eq!(four, 4);
    cluster.wait_until(
        "node 4 a member and a learner, seen from every node",
        Duration::from_secs(60),
        healthy_with_learner,
    );
    // Node 1 and node 4 see the same thing, at the same applied index.
    let statuses = cluster.wait_on(
        &[1, 4],
        "node 1 and node 4 agree",
        Duration::from_secs(30),
        healthy_with_learner,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut statuses = statuses;
    while !agree(&statuses) {
        assert!(std::time::Instant::now() < deadline, "{statuses:#?}");
        std::thread::sleep(Duration::from_millis(250));
        statuses = vec![
            cluster.node(1).status().unwrap(),
            cluster.node(4).status().unwrap(),
        ];
    }
    assert_eq!(statuses[1].node_id, 4);
    assert_eq!(same_leader(&statuses), leader);
    let view = &statuses[1].nodes[3];
    assert_eq!(view.client_addr, Some(cluster.node(4).client.to_string()));
    assert_eq!(view.peer_addr, Some(cluster.node(4).peer.to_string()));
    let (ok, out, err) = cluster.node(4).cli(&["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("controller leader {leader}")),
        "{out}"
    );

    // Killed without a word: marked dead by the leader, still a member.
    cluster.node_mut(4).kill();
    cluster.wait_until("node 4 marked dead", Duration::from_secs(30), |s| {
        s.nodes.len() == 4
            && s.nodes
                .iter()
                .all(|v| v.member && v.alive == Some(v.id != 4))
    });
    // Back: alive again from its own log, without joining again.
    cluster.node_mut(4).restart();
    cluster.wait_until(
        "node 4 alive again",
        Duration::from_secs(60),
        healthy_with_learner,
    );
    let controllers: String = (1..=3).map(|id| cluster.node(id).logs()).collect();
    assert_eq!(
        controllers
            .matches("raft configuration change proposed")
            .count(),
        1,
        "one AddLearnerNode, ever: {controllers}"
    );
    // (Other forwarded commands may be refused meanwhile: a leader of an
    // `__offsets` copy asks to take node 4 back in sync as soon as it
    // fetches, before the controller has marked it alive.)
    assert!(
        !controllers
            .lines()
            .any(|l| l.contains("forwarded command not applied") && l.contains("cmd=Join")),
        "no join proposed twice: {controllers}"
    );

    // Decommissioned: no longer a member, nor a learner, on any controller.
    let (ok, out, err) = cluster.node(2).cli(&["remove", "4"]);
    assert!(ok, "{out} {err}");
    cluster.wait_on(
        &[1, 2, 3],
        "node 4 gone",
        Duration::from_secs(30),
        healthy(3),
    );
    let controllers: String = (1..=3).map(|id| cluster.node(id).logs()).collect();
    assert!(
        controllers.contains("kind=RemoveNode learner=4"),
        "{controllers}"
    );
}

#[test]
fn a_learner_cannot_make_a_quorum() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, FLAGS);
    cluster.wait_until("three alive members", Duration::from_secs(30), healthy(3));
    cluster.add_member(FLAGS);
    cluster.wait_until(
        "node 4 a member and a learner",
        Duration::from_secs(60),
        healthy_with_learner,
    );
    // Two of three controllers down: the third and node 4 are no quorum,
    // and say so.
    cluster.node_mut(1).kill();
    cluster.node_mut(2).kill();
    let statuses = cluster.wait_until("no controller leader", Duration::from_secs(30), |s| {
        s.leader.is_none()
    });
    assert_eq!(statuses.len(), 2);
    let (ok, out, err) = cluster.node(4).cli(&["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("controller leader none"), "{out}");
    // Still none a while later: node 4 never campaigns.
    std::thread::sleep(Duration::from_secs(2));
    for id in [3, 4] {
        let s = cluster.node(id).status().unwrap();
        assert_eq!(s.leader, None, "{s:#?}");
    }
    let (ok, _, err) = cluster.node(4).cli(&["remove", "3"]);
    assert!(!ok);
    assert!(err.contains("no controller leader"), "{err}");

    cluster.node_mut(1).restart();
    cluster.node_mut(2).restart();
    let statuses = cluster.wait_until(
        "the cluster back, node 4 still a member",
        Duration::from_secs(60),
        healthy_with_learner,
    );
    assert_ne!(same_leader(&statuses), 4);
}
