//! The cluster core in one process: three Raft controllers (and, in some
//! tests, a fourth node that is a learner) on one glommio executor, an
//! in-memory network, a temp dir each. Times are short (10 ms
//! ticks) so each test takes a second or two; every wait is on an observable
//! condition with a deadline, never a bare sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use raft::eraftpb::{Entry, Message, MessageType};
use ringmq::cluster::metadata::{Command, CommandError, Metadata, NodeId, NodeInfo};
use ringmq::cluster::node::{Node, NodeConfig, NodeHandle, ProposeError, ReceiveError};
use ringmq::cluster::transport::{MemNetwork, PeerMessage};

const IDS: [NodeId; 3] = [1, 2, 3];
/// Generous: the machine running the tests may be busy with other builds,
/// which delays timers and fsyncs; a passing run takes a fraction of it.
const DEADLINE: Duration = Duration::from_secs(10);

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .preempt_timer(Duration::from_millis(5))
        .make()
        .unwrap()
}

struct Cluster {
    net: MemNetwork,
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, Node>,
    snapshot_every: u64,
    replace_after: Duration,
    /// Whether leaders keep learners in step with members.
    reconcile: bool,
}

impl Cluster {
    async fn start(snapshot_every: u64) -> Cluster {
        let mut c = Cluster {
            net: MemNetwork::new(),
            dir: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            snapshot_every,
            replace_after: Duration::from_secs(60),
            reconcile: true,
        };
        for id in IDS {
            c.start_node(id).await;
        }
        c
    }

    fn config(&self, id: NodeId) -> NodeConfig {
        let mut cfg = NodeConfig::new(id, IDS.to_vec(), self.dir.path().join(format!("n{id}")));
        cfg.tick = Duration::from_millis(10);
        cfg.election_ticks = 20;
        cfg.heartbeat_ticks = 2;
        cfg.heartbeat_interval = Duration::from_millis(20);
        cfg.node_timeout = Duration::from_millis(300);
        cfg.proposal_timeout = Duration::from_secs(2);
        cfg.snapshot_every = self.snapshot_every;
        cfg.replace_after = self.replace_after;
        cfg.inbox = 256;
        cfg.reconcile_learners = self.reconcile;
        cfg
    }

    async fn start_node(&mut self, id: NodeId) {
        let node = Node::start(self.config(id), self.net.transport(id))
            .await
            .unwrap();
        self.net.attach(node.handle());
        self.nodes.insert(id, node);
    }

    /// Stops a node as a crash would look from outside: unreachable at once.
    async fn stop_node(&mut self, id: NodeId) {
        self.net.detach(id);
        let node = self.nodes.remove(&id).unwrap();
        node.stop().await.unwrap();
    }

    fn handle(&self, id: NodeId) -> NodeHandle {
        self.nodes[&id].handle()
    }

    fn handles(&self) -> Vec<NodeHandle> {
        self.nodes.values().map(Node::handle).collect()
    }

    /// The leader every running controller agrees on.
    async fn leader(&self) -> NodeId {
        let handles: Vec<NodeHandle> = self
            .handles()
            .into_iter()
            .filter(|h| IDS.contains(&h.id()))
            .collect();
        wait_for("an agreed leader", || {
            let leaders: Vec<_> = handles.iter().map(|h| h.status().leader).collect();
            let first = leaders[0]?;
            let agreed = leaders.iter().all(|l| *l == Some(first));
            let is_leader = handles
                .iter()
                .any(|h| h.id() == first && h.status().is_leader);
            (agreed && is_leader).then_some(first)
        })
        .await
    }

    /// Proposes through node `via`, following NotLeader to the leader as a
    /// gateway would. A proposal that timed out (lost with a change of
    /// leader on a busy machine) is made again; if the first had been
    /// applied after all, the repeat's "already exists" counts as success.
    async fn propose_via(&self, via: NodeId, cmd: Command) -> Result<(), ProposeError> {
        let start = Instant::now();
        let mut at = via;
        let mut retried = false;
        loop {
            match self.handle(at).propose(cmd.clone()).await {
                Err(ProposeError::NotLeader { leader }) if start.elapsed() < DEADLINE => {
                    match leader.filter(|l| self.nodes.contains_key(l)) {
                        Some(l) => at = l,
                        None => glommio::timer::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err(ProposeError::Timeout(_)) if start.elapsed() < DEADLINE => {
                    let status: Vec<_> = self.handles().iter().map(NodeHandle::status).collect();
                    eprintln!("proposal {cmd:?} timed out at node {at}; retrying; {status:?}");
                    retried = true;
                }
                Err(ProposeError::Rejected(
                    CommandError::NodeExists(_) | CommandError::TopicExists(_),
                )) if retried => return Ok(()),
                other => return other,
            }
        }
    }

    /// Until every running node has applied the same metadata as `id`.
    async fn converged(&self) -> Metadata {
        let handles = self.handles();
        wait_for("the same metadata on every node", || {
            let first = handles[0].metadata();
            let applied = handles[0].status().applied;
            handles
                .iter()
                .all(|h| h.metadata() == first && h.status().applied == applied)
                .then_some(first)
        })
        .await
    }

    async fn join_all(&self) {
        let leader = self.leader().await;
        for id in IDS {
            self.propose_via(leader, Command::Join { node: info(id) })
                .await
                .unwrap();
        }
    }
}

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        id,
        client_addr: format!("127.0.0.1:{}", 9000 + id),
        peer_addr: format!("127.0.0.1:{}", 9100 + id),
    }
}

fn create(name: &str, partitions: u32, replication: u16) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions,
        replication,
    }
}

/// Polls `probe` every 5 ms until it answers, or panics after [`DEADLINE`].
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

fn run<F: Future<Output = ()>>(f: impl FnOnce() -> F) {
    // RUST_LOG=ringmq::cluster=debug,raft=debug shows what the nodes did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    executor().run(f());
}

#[test]
fn elects_a_leader_and_applies_a_topic_on_every_node() {
    run(|| async {
        let c = Cluster::start(1000).await;
        let leader = c.leader().await;
        c.join_all().await;
        // Through a follower, as a client's gateway would.
        let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
        assert!(matches!(
            c.handle(follower).propose(create("direct", 1, 1)).await,
            Err(ProposeError::NotLeader { leader: Some(l) }) if l == leader
        ));
        c.propose_via(follower, create("orders", 30, 3))
            .await
            .unwrap();
        assert_eq!(
            c.propose_via(follower, create("orders", 3, 1)).await,
            Err(ProposeError::Rejected(CommandError::TopicExists(
                "orders".into()
            )))
        );
        let md = c.converged().await;
        let topic = md.topic("orders").unwrap();
        assert_eq!(topic.partition_count(), 30);
        for p in &topic.partitions {
            assert_eq!(p.replicas.len(), 3);
            assert_eq!(p.leader, Some(p.replicas[0]));
        }
        assert_eq!(md.members().len(), 3);
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

#[test]
fn the_leader_stops_and_two_of_three_go_on_then_it_catches_up() {
    run(|| async {
        let mut c = Cluster::start(1000).await;
        c.join_all().await;
        let old = c.leader().await;
        c.propose_via(old, create("before", 12, 3)).await.unwrap();
        let before = c.converged().await;

        c.stop_node(old).await;
        let new = c.leader().await;
        assert_ne!(new, old);
        c.propose_via(new, create("after", 6, 2)).await.unwrap();

        // The new controller marks the silent node dead: its partitions get
        // new leaders with new epochs, it leaves every in-sync set, and no
        // replica list changes.
        let dead = wait_for("the old leader marked dead", || {
            let md = c.handle(new).metadata();
            (!md.member(old).unwrap().liveness.is_alive()).then_some(md)
        })
        .await;
        let was = before.topic("before").unwrap();
        let now = dead.topic("before").unwrap();
        for (b, d) in was.partitions.iter().zip(&now.partitions) {
            assert_eq!(b.replicas, d.replicas);
            assert_ne!(d.leader, Some(old));
            assert!(!d.isr.contains(&old), "{d:?}");
            if b.leader == Some(old) {
                assert_eq!(d.leader_epoch, b.leader_epoch + 1);
            } else {
                assert_eq!((d.leader, d.leader_epoch), (b.leader, b.leader_epoch));
            }
        }

        // Back from its directory: it catches up from the log and is marked
        // alive; once each leader takes it back into the in-sync set (as the
        // data path does when its copy caught up), it leads again where it
        // is preferred.
        c.start_node(old).await;
        let md = wait_for("the old leader alive and caught up", || {
            let md = c.handle(new).metadata();
            let back = md.member(old).unwrap().liveness.is_alive();
            (back && c.handle(old).metadata() == md).then_some(md)
        })
        .await;
        assert!(md.topic("after").is_some());
        for (i, p) in md.topic("before").unwrap().partitions.iter().enumerate() {
            let mut isr = p.isr.clone();
            isr.push(old);
            let alter = Command::AlterIsr {
                topic: "before".into(),
                partition: i as u32,
                leader: p.leader.unwrap(),
                leader_epoch: p.leader_epoch,
                isr_version: p.isr_version,
                isr,
            };
            let leader = c.leader().await;
            c.propose_via(leader, alter).await.unwrap();
        }
        let md = wait_for("every node applied the in-sync sets", || {
            let md = c.handle(new).metadata();
            (c.handle(old).metadata() == md).then_some(md)
        })
        .await;
        let back = md.topic("before").unwrap();
        for (b, a) in was.partitions.iter().zip(&back.partitions) {
            assert_eq!(b.replicas, a.replicas);
            assert_eq!(b.leader, a.leader);
        }
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

#[test]
fn a_node_behind_a_compacted_log_catches_up_from_a_snapshot() {
    run(|| async {
        let mut c = Cluster::start(4).await;
        c.join_all().await;
        let leader = c.leader().await;
        let behind = IDS.into_iter().find(|&id| id != leader).unwrap();
        let stopped_at = c.handle(behind).status().applied;
        c.stop_node(behind).await;
        for i in 0..12 {
            c.propose_via(leader, create(&format!("t{i}"), 2, 2))
                .await
                .unwrap();
        }
        let snap = wait_for("a snapshot on the leader", || {
            let s = c.handle(leader).status().snapshot_index;
            // Compacted past what `behind` has: only a snapshot can help it.
            (s > stopped_at + 1).then_some(s)
        })
        .await;

        // The first snapshot sent to it is lost on the way: the leader must
        // notice and send another.
        let lost = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = lost.clone();
        c.net.drop_if(move |_, to, msg| {
            let snapshot =
                matches!(msg, PeerMessage::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot);
            if to == behind && snapshot && counter.get() == 0 {
                counter.set(1);
                return true;
            }
            false
        });
        c.start_node(behind).await;
        let md = c.converged().await;
        assert_eq!(lost.get(), 1, "a snapshot was dropped");
        assert_eq!(md.topics().len(), 12);
        assert!(
            c.handle(behind).status().snapshot_index >= snap,
            "caught up by snapshot"
        );

        // And a node restarted from its own snapshot and log has it all.
        let other = IDS
            .into_iter()
            .find(|&id| id != leader && id != behind)
            .unwrap();
        c.stop_node(other).await;
        c.start_node(other).await;
        let h = c.handle(other);
        assert!(h.status().snapshot_index > 0);
        wait_for("the restarted node's metadata", || {
            (h.metadata() == md).then_some(())
        })
        .await;
        c.propose_via(other, create("later", 1, 1)).await.unwrap();
        assert_eq!(c.converged().await.topics().len(), 13);
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

#[test]
fn bad_peer_input_is_refused_or_ignored_without_disturbing_the_cluster() {
    run(|| async {
        let mut c = Cluster::start(1000).await;
        c.join_all().await;
        // Move to a later term so that there is an earlier one to replay.
        let first = c.leader().await;
        c.stop_node(first).await;
        c.start_node(first).await;
        let leader = c.leader().await;
        let term = c.handle(leader).status().term;
        assert!(term >= 2);
        let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
        let refused_before = c.net.refused();

        let bogus = Entry {
            index: 1,
            term: 1,
            data: serde_json::to_vec(&create("bogus", 1, 1)).unwrap().into(),
            ..Default::default()
        };
        let msg = |t: MessageType, from: NodeId, to: NodeId, term: u64| Message {
            msg_type: t,
            from: u64::from(from),
            to: u64::from(to),
            term,
            entries: vec![bogus.clone()].into(),
            ..Default::default()
        };
        let h = c.handle(follower);
        // A node id that is no controller: refused, even with a huge term.
        assert_eq!(
            h.receive(
                9,
                PeerMessage::Raft(msg(MessageType::MsgRequestVote, 9, follower, term + 100))
            ),
            Err(ReceiveError::UnknownNode(9))
        );
        assert_eq!(
            h.receive(9, PeerMessage::Heartbeat),
            Err(ReceiveError::UnknownNode(9))
        );
        // A known node claiming to be another: refused.
        assert!(matches!(
            h.receive(
                leader,
                PeerMessage::Raft(msg(MessageType::MsgAppend, 7, follower, term))
            ),
            Err(ReceiveError::Misaddressed { .. })
        ));
        // Messages a node only gives itself, or term 0: refused.
        assert!(matches!(
            h.receive(
                leader,
                PeerMessage::Raft(msg(MessageType::MsgHup, leader, follower, term))
            ),
            Err(ReceiveError::NotPeerMessage(MessageType::MsgHup))
        ));
        assert!(matches!(
            h.receive(
                leader,
                PeerMessage::Raft(msg(MessageType::MsgAppend, leader, follower, 0))
            ),
            Err(ReceiveError::NotPeerMessage(MessageType::MsgAppend))
        ));
        assert!(!c.net.inject(9, leader, PeerMessage::Heartbeat));
        assert!(c.net.refused() > refused_before);

        // Stale terms from known nodes: taken, and ignored by Raft.
        for id in IDS {
            for target in IDS.into_iter().filter(|&t| t != id) {
                for t in [
                    MessageType::MsgAppend,
                    MessageType::MsgRequestVote,
                    MessageType::MsgHeartbeat,
                ] {
                    c.net
                        .inject(id, target, PeerMessage::Raft(msg(t, id, target, term - 1)));
                }
            }
        }
        c.propose_via(follower, create("still-works", 3, 3))
            .await
            .unwrap();
        let md = c.converged().await;
        assert!(md.topic("bogus").is_none());
        assert!(md.topic("still-works").is_some());
        for h in c.handles() {
            let s = h.status();
            assert_eq!((s.term, s.leader), (term, Some(leader)), "node {}", s.id);
        }
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

#[test]
fn a_node_dead_past_replace_after_leaves_the_ring() {
    run(|| async {
        let mut c = Cluster::start(1000).await;
        c.replace_after = Duration::from_millis(400);
        // Restart every node with the short replace_after.
        for id in IDS {
            c.stop_node(id).await;
            c.start_node(id).await;
        }
        c.join_all().await;
        let leader = c.leader().await;
        c.propose_via(leader, create("t", 12, 2)).await.unwrap();
        let gone = IDS.into_iter().find(|&id| id != leader).unwrap();
        c.stop_node(gone).await;
        let md = wait_for("the dead node replaced", || {
            let md = c.handle(leader).metadata();
            md.member(gone).is_none().then_some(md)
        })
        .await;
        for p in &md.topic("t").unwrap().partitions {
            assert_eq!(p.replicas.len(), 2);
            assert!(!p.replicas.contains(&gone));
            assert_eq!(p.leader, Some(p.replicas[0]));
        }
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

#[test]
fn an_isolated_leader_steps_down_and_rejoins_without_disrupting() {
    run(|| async {
        let c = Cluster::start(1000).await;
        c.join_all().await;
        let old = c.leader().await;
        for id in IDS.into_iter().filter(|&id| id != old) {
            c.net.cut(old, id);
        }
        // The majority elects another; the old one, hearing no quorum, stops
        // leading (check_quorum) and so cannot accept proposals it could not
        // commit.
        let others: Vec<NodeHandle> = c.handles().into_iter().filter(|h| h.id() != old).collect();
        let new = wait_for("a leader among the majority", || {
            let l = others[0].status().leader?;
            (l != old && others.iter().all(|h| h.status().leader == Some(l))).then_some(l)
        })
        .await;
        wait_for("the isolated node to step down", || {
            (!c.handle(old).status().is_leader).then_some(())
        })
        .await;
        c.propose_via(new, create("during", 2, 2)).await.unwrap();
        let term = c.handle(new).status().term;

        // Healed: it follows the new leader (pre-vote keeps it from forcing
        // an election with the term it may have raised while cut off).
        for id in IDS.into_iter().filter(|&id| id != old) {
            c.net.heal(old, id);
        }
        let md = c.converged().await;
        assert!(md.topic("during").is_some());
        assert_eq!(c.leader().await, new);
        assert_eq!(c.handle(new).status().term, term);
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

/// The learner a node not among the voters becomes.
const LEARNER: NodeId = 4;

/// Until every running node (voters and learner) has `learners` in its Raft
/// configuration.
async fn learners_are(c: &Cluster, learners: &[NodeId]) {
    let handles = c.handles();
    let start = Instant::now();
    while !handles.iter().all(|h| h.status().learners == learners) {
        let status: Vec<_> = handles.iter().map(NodeHandle::status).collect();
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for learners {learners:?} on every node: {status:#?}"
        );
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_learner_catches_up_from_a_snapshot_and_never_makes_a_quorum() {
    run(|| async {
        let mut c = Cluster::start(4).await;
        c.join_all().await;
        let leader = c.leader().await;
        for i in 0..10 {
            c.propose_via(leader, create(&format!("t{i}"), 2, 3))
                .await
                .unwrap();
        }
        wait_for("a compacted log on the leader", || {
            (c.handle(leader).status().snapshot_index > 4).then_some(())
        })
        .await;

        // Node 4 starts empty: no configuration, no leader, nothing applied.
        c.start_node(LEARNER).await;
        let h4 = c.handle(LEARNER);
        assert_eq!(h4.status().applied, 0);
        assert!(!h4.is_controller());
        c.propose_via(
            leader,
            Command::Join {
                node: info(LEARNER),
            },
        )
        .await
        .unwrap();
        learners_are(&c, &[LEARNER]).await;
        let md = c.converged().await;
        assert_eq!(md.members().len(), 4);
        assert_eq!(md.topics().len(), 10);
        assert!(
            h4.status().snapshot_index > 0,
            "caught up from a snapshot: {:?}",
            h4.status()
        );
        assert_eq!(h4.status().leader, Some(leader));
        // A learner takes no proposals, and points at the leader.
        assert_eq!(
            h4.propose(create("via-4", 1, 1)).await,
            Err(ProposeError::NotLeader {
                leader: Some(leader)
            })
        );
        c.propose_via(LEARNER, create("via-4", 1, 1)).await.unwrap();
        c.converged().await;

        // Two controllers down: the third and the learner are no quorum.
        let down: Vec<NodeId> = IDS.into_iter().filter(|&id| id != leader).collect();
        let term = c.handle(leader).status().term;
        for &id in &down {
            c.stop_node(id).await;
        }
        wait_for("no leader anywhere, the learner included", || {
            c.handles()
                .iter()
                .all(|h| h.status().leader.is_none() && !h.status().is_leader)
                .then_some(())
        })
        .await;
        let wait = Instant::now() + Duration::from_millis(800);
        while Instant::now() < wait {
            assert!(c.handles().iter().all(|h| !h.status().is_leader));
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        // It never campaigned: its term is the one it learned from a leader.
        assert!(h4.status().term <= term, "{:?}", h4.status());

        for &id in &down {
            c.start_node(id).await;
        }
        let back = c.leader().await;
        c.propose_via(back, create("after", 1, 3)).await.unwrap();
        let md = c.converged().await;
        assert!(md.topic("after").is_some());
        assert_ne!(c.leader().await, LEARNER);
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}

#[test]
fn learner_entries_converge_whatever_happened_before() {
    run(|| async {
        // Leaders that never reconcile: as if each died right after applying
        // a join, before proposing its conf change.
        let mut c = Cluster::start(1000).await;
        c.reconcile = false;
        for id in IDS {
            c.stop_node(id).await;
            c.start_node(id).await;
        }
        c.join_all().await;
        c.start_node(LEARNER).await;
        let leader = c.leader().await;
        c.propose_via(
            leader,
            Command::Join {
                node: info(LEARNER),
            },
        )
        .await
        .unwrap();
        // A retried join changes nothing.
        assert_eq!(
            c.propose_via(
                leader,
                Command::Join {
                    node: info(LEARNER)
                }
            )
            .await,
            Err(ProposeError::Rejected(CommandError::NodeExists(LEARNER)))
        );
        let md = c.handle(leader).metadata();
        assert!(md.member(LEARNER).is_some());
        glommio::timer::sleep(Duration::from_millis(300)).await;
        assert!(c.handle(leader).status().learners.is_empty());
        assert_eq!(c.handle(LEARNER).status().applied, 0, "not a learner yet");

        // Leaders that do: whichever is elected finds the member without a
        // learner entry and adds it.
        c.reconcile = true;
        for id in IDS {
            c.stop_node(id).await;
            c.start_node(id).await;
        }
        learners_are(&c, &[LEARNER]).await;
        let md = c.converged().await;
        assert!(md.member(LEARNER).is_some());

        // A restarted learner and a restarted controller keep the same
        // configuration (persisted, and the entries applied again agree).
        c.stop_node(LEARNER).await;
        c.start_node(LEARNER).await;
        let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
        c.stop_node(follower).await;
        c.start_node(follower).await;
        learners_are(&c, &[LEARNER]).await;
        c.converged().await;

        // Removed: its learner entry goes too, on every node.
        let leader = c.leader().await;
        c.propose_via(leader, Command::Remove { node: LEARNER })
            .await
            .unwrap();
        let voters: Vec<NodeHandle> = c
            .handles()
            .into_iter()
            .filter(|h| h.id() != LEARNER)
            .collect();
        wait_for("no learner on the controllers", || {
            voters
                .iter()
                .all(|h| h.status().learners.is_empty() && h.metadata().member(LEARNER).is_none())
                .then_some(())
        })
        .await;
        // Its raft messages are refused from now on.
        let msg = Message {
            msg_type: MessageType::MsgAppendResponse,
            from: u64::from(LEARNER),
            to: u64::from(leader),
            term: c.handle(leader).status().term,
            ..Default::default()
        };
        assert_eq!(
            c.handle(leader).receive(LEARNER, PeerMessage::Raft(msg)),
            Err(ReceiveError::UnknownNode(LEARNER))
        );

        // And it may join again.
        c.propose_via(
            leader,
            Command::Join {
                node: info(LEARNER),
            },
        )
        .await
        .unwrap();
        learners_are(&c, &[LEARNER]).await;
        c.converged().await;
        for (_, node) in c.nodes {
            node.stop().await.unwrap();
        }
    });
}
