//! The cluster as the data path sees it: an immutable, `Send` picture of the
//! applied metadata that shard 0 builds after every applied change and hands
//! to every core, so a core routes a request without asking shard 0.
//!
//! It answers three questions: which node leads a partition (and where that
//! node listens), which node coordinates a group, and which partitions this
//! node holds a replica of.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Security;

use super::metadata::{Metadata, NodeId, PartitionPlacement, Topic};
use crate::group::store::{partition_of, OFFSETS_PARTITIONS, OFFSETS_TOPIC};

/// A member node as clients may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: NodeId,
    /// `None` when the registered address does not parse (logged once by
    /// whoever builds the view); such a node is not forwarded to.
    pub client_addr: Option<SocketAddr>,
    pub client_addr_text: String,
    pub alive: bool,
}

/// One applied state of the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This node.
    pub me: NodeId,
    /// Index of the last applied Raft entry it was built from.
    pub applied: u64,
    /// The controller leader as this node knows it (topic changes go there).
    pub controller: Option<NodeId>,
    pub brokers: BTreeMap<NodeId, Broker>,
    pub topics: BTreeMap<String, Topic>,
    /// Users and ACLs as applied.
    pub security: Arc<Security>,
}

/// Where a partition's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    /// This node leads it.
    Me,
    /// Another node does, reachable at `addr`.
    Node { id: NodeId, addr: SocketAddr },
    /// No live replica, or the leader's address is unusable.
    None { why: String },
}

impl ClusterView {
    pub fn new(me: NodeId, applied: u64, controller: Option<NodeId>, md: &Metadata) -> ClusterView {
        let brokers = md
            .members()
            .iter()
            .map(|(&id, m)| {
                (
                    id,
                    Broker {
                        id,
                        client_addr: m.info.client_addr.parse().ok(),
                        client_addr_text: m.info.client_addr.clone(),
                        alive: m.liveness.is_alive(),
                    },
                )
            })
            .collect();
        ClusterView {
            me,
            applied,
            controller,
            brokers,
            topics: md.topics().clone(),
            security: Arc::new(md.security().clone()),
        }
    }

    /// User topics (no `__` internal ones), in name order.
    pub fn user_topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values().filter(|t| !t.name.starts_with("__"))
    }

    pub fn placement(&self, topic: &str, partition: u32) -> Option<&PartitionPlacement> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Whether this node holds a copy of the partition (a replica, or one
    /// being removed).
    pub fn hosts(&self, topic: &str, partition: u32) -> bool {
        self.placement(topic, partition)
            .is_some_and(|p| p.holders().any(|n| n == self.me))
    }

    /// Who leads `placement`; `what` names it in messages (called only
    /// when there is something to explain: no allocation on the way to a
    /// leader).
    pub fn leader_of(
        &self,
        placement: &PartitionPlacement,
        what: impl FnOnce() -> String,
    ) -> Leader {
        match placement.leader {
            Some(id) if id == self.me => Leader::Me,
            Some(id) => match self.brokers.get(&id).and_then(|b| b.client_addr) {
                Some(addr) => Leader::Node { id, addr },
                None => Leader::None {
                    why: format!(
                        "{} is led by node {id}, whose client address is unknown",
                        what()
                    ),
                },
            },
            None => Leader::None {
                why: format!(
                    "{} has no live leader right now (replicas on nodes {:?} are all down)",
                    what(),
                    placement.replicas
                ),
            },
        }
    }

    /// The node coordinating `group`: the leader of its `__offsets`
    /// partition. `None` before the controller has placed `__offsets`.
    pub fn coordinator(&self, group: &str) -> Option<Leader> {
        let p = partition_of(group);
        let placement = self.placement(OFFSETS_TOPIC, p)?;
        Some(self.leader_of(placement, || format!("the coordinator of group {group:?}")))
    }

    /// Whether `__offsets` is placed (the controller does it once).
    pub fn has_offsets_topic(&self) -> bool {
        self.topics
            .get(OFFSETS_TOPIC)
            .is_some_and(|t| t.partition_count() == OFFSETS_PARTITIONS)
    }

    /// "node N at ADDR", for messages.
    pub fn describe_node(&self, id: NodeId) -> String {
        match self.brokers.get(&id) {
            Some(b) => format!("node {id} at {}", b.client_addr_text),
            None => format!("node {id}"),
        }
    }

    /// Other live members with a usable client address.
    pub fn other_live_brokers(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.brokers.values().filter_map(move |b| {
            (b.id != self.me && b.alive)
                .then_some(b.client_addr)
                .flatten()
                .map(|a| (b.id, a))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::{Command, NodeInfo};

    fn md() -> Metadata {
        let mut m = Metadata::new();
        for id in 1..=3 {
            m.apply(&Command::Join {
                node: NodeInfo {
                    id,
                    client_addr: format!("127.0.0.1:{}", 9000 + id),
                    peer_addr: format!("127.0.0.1:{}", 9100 + id),
                },
            })
            .unwrap();
        }
        m.apply(&Command::CreateTopic {
            name: "t".into(),
            partitions: 12,
            replication: 1,
        })
        .unwrap();
        m.apply(&Command::CreateTopic {
            name: OFFSETS_TOPIC.into(),
            partitions: OFFSETS_PARTITIONS,
            replication: 1,
        })
        .unwrap();
        m
    }

    #[test]
    fn every_partition_has_one_route_and_dead_leaders_have_none() {
        let mut m = md();
        let views: Vec<ClusterView> = (1..=3)
            .map(|me| ClusterView::new(me, 1, Some(1), &m))
            .collect();
        for p in 0..12 {
            let led_here = views
                .iter()
                .filter(|v| v.leader_of(v.placement("t", p).unwrap(), String::new) == Leader::Me)
                .count();
            assert_eq!(led_here, 1, "partition {p}");
            for v in &views {
                assert_eq!(
                    v.hosts("t", p),
                    v.placement("t", p).unwrap().leader == Some(v.me)
                );
            }
        }
        assert_eq!(views[0].user_topics().count(), 1);
        assert!(views[0].has_offsets_topic());
        let coordinators: Vec<Option<Leader>> =
            views.iter().map(|v| v.coordinator("workers")).collect();
        assert_eq!(
            coordinators
                .iter()
                .filter(|c| **c == Some(Leader::Me))
                .count(),
            1
        );

        m.apply(&Command::MarkDead { node: 2, at_ms: 1 }).unwrap();
        let v = ClusterView::new(1, 2, Some(1), &m);
        let orphan = (0..12)
            .map(|p| v.placement("t", p).unwrap())
            .find(|p| p.replicas == [2])
            .expect("node 2 holds some of 12 partitions");
        assert!(matches!(
            v.leader_of(orphan, String::new),
            Leader::None { .. }
        ));
        assert_eq!(
            v.other_live_brokers().map(|(id, _)| id).collect::<Vec<_>>(),
            [3]
        );
    }
}
