//! The cluster's metadata as a replicated state machine: member nodes and
//! their liveness, topics, and the placement derived from them.
//!
//! Every controller applies the same committed [`Command`]s in the same order
//! to a [`Metadata`], so every node computes the same placement without
//! anyone handing placements out. Hence this room is pure: no clocks (a time
//! a command needs travels inside it), no I/O, no hash other than the ring's
//! xxh3, only ordered maps.
//!
//! Membership is not liveness (see `docs/architecture.md`, "Placement"):
//! - the ring over the member node ids gives each partition its replicas; it
//!   changes only on [`Command::Join`], [`Command::Remove`] (decommission) and
//!   [`Command::ReplaceDead`] (dead longer than `replace_after`);
//! - liveness ([`Command::MarkDead`], [`Command::MarkAlive`]) moves leadership
//!   only: a partition is led by its first live *in-sync* replica in ring
//!   order, so the preferred leader (the first replica) takes back over once
//!   it has returned and caught up.
//!
//! The in-sync set (ISR) holds the replicas that have everything the leader
//! acknowledged; only its members may lead. The leader changes it
//! ([`Command::AlterIsr`], fenced by its leader epoch and the partition's
//! ISR version) as followers fall
//! behind and catch up; a node marked dead leaves every ISR it is not the
//! last member of. When membership moves a partition, the replicas it
//! leaves stay on as `removing` until every new replica is in sync: data
//! moves before leadership, and the old copy goes only after that.
//!
//! Every change of a partition's leader bumps its leader epoch, which lets a
//! replica fence off requests from a leader that no longer is one.

use std::collections::BTreeMap;

use ringmq_protocol::limits::{self, TopicNameError};
use serde::{Deserialize, Serialize};

use crate::auth::{Security, SecurityCommand, SecurityError};
use crate::ring::{Epsilon, Ring, RingError};

/// Copies of each partition a cluster keeps unless told otherwise.
pub const DEFAULT_REPLICATION: usize = 3;

/// The replication factor a topic gets when none is asked for: three
/// copies, or one per member where there are fewer members.
pub fn default_replication(members: usize) -> u16 {
    members.clamp(1, DEFAULT_REPLICATION) as u16
}

/// A node's id in the cluster; also its Raft id. 0 is not a node (Raft
/// reserves it for "nobody").
pub type NodeId = u32;

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// `host:port` of its client listener (what Metadata answers carry).
    pub client_addr: String,
    /// `host:port` of its peer listener (node-to-node protocol).
    pub peer_addr: String,
}

/// Whether the controller currently hears from a node. Only applied
/// commands change it, so every replica agrees on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    Alive,
    /// Marked dead by the controller leader at `since_ms` (its wall clock, ms
    /// since the Unix epoch); the start of the `replace_after` countdown.
    Dead {
        since_ms: u64,
    },
}

impl Liveness {
    pub fn is_alive(self) -> bool {
        matches!(self, Liveness::Alive)
    }
}

/// A member of the cluster: on the ring until removed or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub info: NodeInfo,
    pub liveness: Liveness,
}

/// One partition's place in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlacement {
    /// Replica nodes, preferred leader first, then in ring order. Changes only
    /// with membership.
    pub replicas: Vec<NodeId>,
    /// Replicas that have everything the leader acknowledged (the leader
    /// included); a subset of `replicas` and `removing`.
    #[serde(default)]
    pub isr: Vec<NodeId>,
    /// Former replicas kept until every one of `replicas` is in the ISR.
    #[serde(default)]
    pub removing: Vec<NodeId>,
    /// The first live in-sync replica (`replicas`, then `removing`); `None`
    /// while no in-sync replica is alive: the partition is offline.
    pub leader: Option<NodeId>,
    /// Bumped on every change of `leader`.
    pub leader_epoch: u64,
    /// Bumped on every change of `isr`, of the holders or the leader, and
    /// of a holder's liveness. An [`Command::AlterIsr`] names the version
    /// it was computed from and is refused once the partition moved on, so
    /// the leader knows when its request is answered: by a view at a newer
    /// version, whether it was applied or not.
    #[serde(default)]
    pub isr_version: u64,
}

/// A topic and the placement of each of its partitions (index = partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    /// Unique among the topics the cluster ever had (1, 2, ...): tells a
    /// topic from an earlier one of the same name, so a node that missed a
    /// delete and a create in between still drops the old data.
    #[serde(default)]
    pub id: u64,
    /// The replication factor asked for. Placement uses
    /// `min(replication, members)`, so removing members never makes a topic
    /// unplaceable.
    pub replication: u16,
    pub partitions: Vec<PartitionPlacement>,
}

impl PartitionPlacement {
    /// Every node holding a copy: the replicas, then those being removed.
    pub fn holders(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().chain(&self.removing).copied()
    }

    /// Nodes that should fetch from the leader.
    pub fn followers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.holders().filter(move |&n| Some(n) != self.leader)
    }

    /// The only way the ISR changes, so that every change bumps its version.
    fn set_isr(&mut self, isr: Vec<NodeId>) {
        if isr != self.isr {
            self.isr = isr;
            self.isr_version += 1;
        }
    }

    /// The holders or their liveness changed: pending ISR requests are void.
    fn touch(&mut self) {
        self.isr_version += 1;
    }
}

impl Topic {
    pub fn partition_count(&self) -> u32 {
        // Bounded by MAX_PARTITIONS at creation.
        self.partitions.len() as u32
    }
}

/// A change to the metadata. Serialized (JSON) into Raft log entries, so
/// variants and fields may be added but never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A new member joins the ring (alive).
    Join {
        node: NodeInfo,
    },
    /// Decommission: the node leaves the ring, its replicas move elsewhere.
    Remove {
        node: NodeId,
    },
    /// A node dead for at least `replace_after_ms` at `now_ms` leaves the
    /// ring, as if removed. Both times come from the proposer (the
    /// controller leader), so every replica checks the same numbers.
    ReplaceDead {
        node: NodeId,
        now_ms: u64,
        replace_after_ms: u64,
    },
    /// The controller stopped hearing from `node` (at `at_ms`). Marking a
    /// dead node dead again is a no-op, so a retried proposal is harmless.
    MarkDead {
        node: NodeId,
        at_ms: u64,
    },
    /// The controller hears from `node` again. Idempotent like `MarkDead`.
    MarkAlive {
        node: NodeId,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        replication: u16,
    },
    DeleteTopic {
        name: String,
    },
    /// The leader of a partition changes its ISR: followers that fell
    /// behind leave, caught-up ones join. Taken only from the current
    /// leader at the current epoch, so a deposed leader cannot undo a
    /// newer decision, and only against the ISR version it was computed
    /// from: until then the leader counts the joiners in its high
    /// watermark, so a joiner never enters the ISR short of it.
    AlterIsr {
        topic: String,
        partition: u32,
        leader: NodeId,
        leader_epoch: u64,
        #[serde(default)]
        isr_version: u64,
        isr: Vec<NodeId>,
    },
    /// An offline partition (no live in-sync replica) is given to a live
    /// replica that may lack acknowledged data, which is then lost; only
    /// proposed where the operator allowed it (`unclean_leader_election`).
    UncleanElect {
        topic: String,
        partition: u32,
        node: NodeId,
    },
    /// A change to the users or ACLs (`auth::store`), which every node
    /// applies like the topics.
    Security(SecurityCommand),
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("node id 0 is reserved")]
    InvalidNodeId,
    #[error("node {0} is already a member")]
    NodeExists(NodeId),
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    #[error("node {node} is alive; only a dead node can be replaced")]
    NodeAlive { node: NodeId },
    #[error(
        "node {node} has been dead {dead_ms} ms, less than replace_after ({replace_after_ms} ms)"
    )]
    NotDeadLongEnough {
        node: NodeId,
        dead_ms: u64,
        replace_after_ms: u64,
    },
    #[error("removing node {0}, the last member, would leave topics with nowhere to live")]
    LastMember(NodeId),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("a topic has 1..={max} partitions, not {requested}", max = limits::MAX_PARTITIONS)]
    InvalidPartitions { requested: u32 },
    #[error("replication factor {requested} is invalid with {members} member node(s)")]
    InvalidReplication { requested: u16, members: usize },
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("node {node} at epoch {epoch} is not the leader of this partition (now {leader:?} at epoch {current})")]
    StaleLeader {
        node: NodeId,
        epoch: u64,
        leader: Option<NodeId>,
        current: u64,
    },
    #[error("in-sync set change computed from version {asked}, now at {current}")]
    StaleIsr { asked: u64, current: u64 },
    #[error("invalid in-sync set {isr:?}: {why}")]
    InvalidIsr { isr: Vec<NodeId>, why: String },
    #[error("partition is not offline, or node {0} cannot lead it")]
    NotUncleanElectable(NodeId),
    #[error(transparent)]
    Security(#[from] SecurityError),
}

impl From<TopicNameError> for CommandError {
    fn from(e: TopicNameError) -> Self {
        CommandError::InvalidTopicName(e.to_string())
    }
}

/// The whole replicated state. `Eq` and serialization are what the tests
/// compare across replicas; the snapshot of the Raft log is this, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    members: BTreeMap<NodeId, Member>,
    topics: BTreeMap<String, Topic>,
    /// The last [`Topic::id`] given out.
    #[serde(default)]
    last_topic_id: u64,
    /// Users and ACLs.
    #[serde(default)]
    security: Security,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    pub fn security(&self) -> &Security {
        &self.security
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Partition `partition` of `topic`, if both exist.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionPlacement> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Per member: (replicas held, partitions led). For `cluster status`.
    pub fn load_per_node(&self) -> BTreeMap<NodeId, (usize, usize)> {
        let mut load: BTreeMap<NodeId, (usize, usize)> =
            self.members.keys().map(|&id| (id, (0, 0))).collect();
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            for r in &p.replicas {
                if let Some(l) = load.get_mut(r) {
                    l.0 += 1;
                }
            }
            if let Some(l) = p.leader.and_then(|id| load.get_mut(&id)) {
                l.1 += 1;
            }
        }
        load
    }

    /// Partitions with fewer in-sync copies than replicas (or still moving).
    pub fn under_replicated(&self) -> usize {
        self.partitions()
            .filter(|p| p.isr.len() < p.replicas.len() || !p.removing.is_empty())
            .count()
    }

    /// Partitions with no leader: no live in-sync copy.
    pub fn offline(&self) -> usize {
        self.partitions().filter(|p| p.leader.is_none()).count()
    }

    fn partitions(&self) -> impl Iterator<Item = &PartitionPlacement> {
        self.topics.values().flat_map(|t| &t.partitions)
    }

    /// Applies one command, or refuses it and changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), CommandError> {
        match cmd {
            Command::Join { node } => {
                if node.id == 0 {
                    return Err(CommandError::InvalidNodeId);
                }
                if self.members.contains_key(&node.id) {
                    return Err(CommandError::NodeExists(node.id));
                }
                let before = self.member_ids();
                self.members.insert(
                    node.id,
                    Member {
                        info: node.clone(),
                        liveness: Liveness::Alive,
                    },
                );
                self.replace_all(&before);
            }
            Command::Remove { node } => {
                self.check_removable(*node)?;
                let before = self.member_ids();
                self.members.remove(node);
                self.replace_all(&before);
            }
            Command::ReplaceDead {
                node,
                now_ms,
                replace_after_ms,
            } => {
                let member = self
                    .members
                    .get(node)
                    .ok_or(CommandError::UnknownNode(*node))?;
                let Liveness::Dead { since_ms } = member.liveness else {
                    return Err(CommandError::NodeAlive { node: *node });
                };
                let dead_ms = now_ms.saturating_sub(since_ms);
                if dead_ms < *replace_after_ms {
                    return Err(CommandError::NotDeadLongEnough {
                        node: *node,
                        dead_ms,
                        replace_after_ms: *replace_after_ms,
                    });
                }
                self.check_removable(*node)?;
                let before = self.member_ids();
                self.members.remove(node);
                self.replace_all(&before);
            }
            Command::MarkDead { node, at_ms } => {
                let member = self
                    .members
                    .get_mut(node)
                    .ok_or(CommandError::UnknownNode(*node))?;
                if member.liveness.is_alive() {
                    member.liveness = Liveness::Dead { since_ms: *at_ms };
                    // A dead node cannot be in sync; the last member of an
                    // ISR stays, so its return brings the partition back.
                    for p in self.topics.values_mut().flat_map(|t| &mut t.partitions) {
                        if !p.holders().any(|h| h == *node) {
                            continue;
                        }
                        p.touch();
                        if p.isr.len() > 1 {
                            let isr = p.isr.iter().copied().filter(|n| n != node).collect();
                            p.set_isr(isr);
                        }
                    }
                    self.elect_all();
                }
            }
            Command::MarkAlive { node } => {
                let member = self
                    .members
                    .get_mut(node)
                    .ok_or(CommandError::UnknownNode(*node))?;
                if !member.liveness.is_alive() {
                    member.liveness = Liveness::Alive;
                    for p in self.topics.values_mut().flat_map(|t| &mut t.partitions) {
                        if p.holders().any(|h| h == *node) {
                            p.touch();
                        }
                    }
                    self.elect_all();
                }
            }
            Command::CreateTopic {
                name,
                partitions,
                replication,
            } => {
                limits::validate_internal_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(CommandError::TopicExists(name.clone()));
                }
                if *partitions == 0 || *partitions > limits::MAX_PARTITIONS {
                    return Err(CommandError::InvalidPartitions {
                        requested: *partitions,
                    });
                }
                let members = self.members.len();
                if *replication == 0 || usize::from(*replication) > members {
                    return Err(CommandError::InvalidReplication {
                        requested: *replication,
                        members,
                    });
                }
                let mut topic = Topic {
                    name: name.clone(),
                    id: self.last_topic_id + 1,
                    replication: *replication,
                    partitions: vec![
                        PartitionPlacement {
                            replicas: Vec::new(),
                            isr: Vec::new(),
                            removing: Vec::new(),
                            leader: None,
                            leader_epoch: 0,
                            isr_version: 0,
                        };
                        *partitions as usize
                    ],
                };
                let ring = self.ring();
                place_topic(&ring, &mut topic, &self.members).map_err(|_| {
                    CommandError::InvalidReplication {
                        requested: *replication,
                        members,
                    }
                })?;
                self.last_topic_id = topic.id;
                self.topics.insert(name.clone(), topic);
            }
            Command::DeleteTopic { name } => {
                if self.topics.remove(name).is_none() {
                    return Err(CommandError::UnknownTopic(name.clone()));
                }
            }
            Command::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                isr_version,
                isr,
            } => {
                let members = &self.members;
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                if p.leader != Some(*leader) || p.leader_epoch != *leader_epoch {
                    return Err(CommandError::StaleLeader {
                        node: *leader,
                        epoch: *leader_epoch,
                        leader: p.leader,
                        current: p.leader_epoch,
                    });
                }
                if p.isr_version != *isr_version {
                    return Err(CommandError::StaleIsr {
                        asked: *isr_version,
                        current: p.isr_version,
                    });
                }
                let invalid = |why: &str| CommandError::InvalidIsr {
                    isr: isr.clone(),
                    why: why.into(),
                };
                if !isr.contains(leader) {
                    return Err(invalid("the leader must be in it"));
                }
                if isr.iter().any(|n| !p.holders().any(|h| h == *n)) {
                    return Err(invalid("every member must hold a replica"));
                }
                if isr
                    .iter()
                    .any(|n| !members.get(n).is_some_and(|m| m.liveness.is_alive()))
                {
                    return Err(invalid("a dead node cannot be in sync"));
                }
                let mut sorted = isr.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != isr.len() {
                    return Err(invalid("a node is listed twice"));
                }
                let mut isr = isr.clone();
                // Every new replica in sync: the old copies can go.
                if !p.removing.is_empty() && p.replicas.iter().all(|r| isr.contains(r)) {
                    let removing = std::mem::take(&mut p.removing);
                    isr.retain(|n| !removing.contains(n));
                }
                p.set_isr(isr);
                elect(p, members);
            }
            Command::UncleanElect {
                topic,
                partition,
                node,
            } => {
                let members = &self.members;
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                let alive = members.get(node).is_some_and(|m| m.liveness.is_alive());
                if p.leader.is_some() || !alive || !p.holders().any(|h| h == *node) {
                    return Err(CommandError::NotUncleanElectable(*node));
                }
                p.set_isr(vec![*node]);
                elect(p, members);
            }
            Command::Security(cmd) => self.security.apply(cmd)?,
        }
        Ok(())
    }

    fn check_removable(&self, node: NodeId) -> Result<(), CommandError> {
        if !self.members.contains_key(&node) {
            return Err(CommandError::UnknownNode(node));
        }
        if self.members.len() == 1 && !self.topics.is_empty() {
            return Err(CommandError::LastMember(node));
        }
        Ok(())
    }

    fn member_ids(&self) -> Vec<NodeId> {
        self.members.keys().copied().collect()
    }

    fn ring(&self) -> Ring<NodeId> {
        Ring::new(self.members.keys().copied())
    }

    /// Membership changed from `before`: partitions that must move take their
    /// place on the new ring; the others stay where they are.
    ///
    /// A partition must move when it lost a replica (a member left), when it
    /// has fewer replicas than `min(replication, members)`, or when the new
    /// ring puts one of its replicas on a member that just joined. Without
    /// that stickiness the bound on loads would reshuffle a few partitions
    /// between members that did not change (the bound shrinks as members
    /// join), moving data and leadership for nothing.
    fn replace_all(&mut self, before: &[NodeId]) {
        let ring = self.ring();
        for topic in self.topics.values_mut() {
            let keys = partition_keys(&topic.name, topic.partitions.len());
            let want = usize::from(topic.replication).min(self.members.len());
            // Cannot fail: `check_removable` keeps a member while topics exist.
            let fresh = ring
                .place_replicas(&keys, usize::from(topic.replication), Epsilon::NODES)
                .unwrap_or_default();
            for (i, p) in topic.partitions.iter_mut().enumerate() {
                let Some(new) = fresh.get(i) else {
                    p.replicas.clear();
                    p.removing.clear();
                    p.set_isr(Vec::new());
                    p.touch();
                    elect(p, &self.members);
                    continue;
                };
                let must_move = p.replicas.len() != want
                    || p.replicas.iter().any(|r| !self.members.contains_key(r))
                    || new.iter().any(|r| !before.contains(r));
                if must_move {
                    let new: Vec<NodeId> = new.iter().map(|&&r| r).collect();
                    move_replicas(p, new, &self.members);
                }
                elect(p, &self.members);
            }
        }
    }

    /// Liveness changed: leaders only, replicas stay.
    fn elect_all(&mut self) {
        for p in self.topics.values_mut().flat_map(|t| &mut t.partitions) {
            elect(p, &self.members);
        }
    }
}

/// Places a topic's partitions on the ring: one placement per topic, so that
/// creating a topic never moves another's partitions. Keeps each partition's
/// epoch and bumps it where the leader changes (a new partition starts at
/// epoch 0 with no leader, so its first leader has epoch 1).
fn place_topic(
    ring: &Ring<NodeId>,
    topic: &mut Topic,
    members: &BTreeMap<NodeId, Member>,
) -> Result<(), RingError> {
    let keys = partition_keys(&topic.name, topic.partitions.len());
    let placed = ring.place_replicas(&keys, usize::from(topic.replication), Epsilon::NODES)?;
    for (p, replicas) in topic.partitions.iter_mut().zip(placed) {
        p.replicas = replicas.into_iter().copied().collect();
        // Empty logs are all in sync.
        p.set_isr(p.replicas.clone());
        elect(p, members);
    }
    Ok(())
}

fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, Topic>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut PartitionPlacement, CommandError> {
    topics
        .get_mut(topic)
        .ok_or_else(|| CommandError::UnknownTopic(topic.to_owned()))?
        .partitions
        .get_mut(partition as usize)
        .ok_or_else(|| CommandError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        })
}

/// `"topic/partition"`: the bytes a partition is hashed by (architecture.md,
/// "Placement"); never change them, or a live cluster moves its data.
fn partition_keys(topic: &str, count: usize) -> Vec<String> {
    (0..count).map(|p| format!("{topic}/{p}")).collect()
}

/// A partition's replicas become `new`. Members that leave it stay as
/// `removing` until the new ones are in sync; nodes no longer members are
/// gone at once, with their copies. A partition left with no in-sync copy
/// at all (its only replicas were removed) starts over, empty, on `new`.
fn move_replicas(p: &mut PartitionPlacement, new: Vec<NodeId>, members: &BTreeMap<NodeId, Member>) {
    let mut removing: Vec<NodeId> = p
        .holders()
        .filter(|n| !new.contains(n) && members.contains_key(n))
        .collect();
    removing.dedup();
    let mut isr: Vec<NodeId> = p
        .isr
        .iter()
        .copied()
        .filter(|n| new.contains(n) || removing.contains(n))
        .collect();
    if isr.is_empty() {
        isr = new.clone();
        removing.clear();
    }
    // Old copies that are not in sync have nothing the new ones need.
    removing.retain(|n| isr.contains(n));
    if new.iter().all(|n| isr.contains(n)) {
        removing.clear();
    }
    p.set_isr(isr);
    p.replicas = new;
    p.removing = removing;
    p.touch();
}

/// Leader = the preferred replica when it is live and in sync; else the
/// current leader while it still is; else the first live in-sync copy in
/// order (replicas, then the ones being removed). A change bumps the epoch.
fn elect(p: &mut PartitionPlacement, members: &BTreeMap<NodeId, Member>) {
    let eligible =
        |id: &NodeId| p.isr.contains(id) && members.get(id).is_some_and(|m| m.liveness.is_alive());
    let preferred = p.replicas.first().filter(|id| eligible(id)).copied();
    let current = p
        .leader
        .filter(|id| p.holders().any(|h| h == *id) && eligible(id));
    let leader = preferred
        .or(current)
        .or_else(|| p.holders().find(|id| eligible(id)));
    if leader != p.leader {
        p.leader = leader;
        p.leader_epoch += 1;
        p.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            client_addr: format!("127.0.0.1:{}", 9000 + id),
            peer_addr: format!("127.0.0.1:{}", 9100 + id),
        }
    }

    fn cluster(ids: impl IntoIterator<Item = NodeId>) -> Metadata {
        let mut m = Metadata::new();
        for id in ids {
            m.apply(&Command::Join { node: node(id) }).unwrap();
        }
        m
    }

    fn create(m: &mut Metadata, name: &str, partitions: u32, replication: u16) {
        m.apply(&Command::CreateTopic {
            name: name.into(),
            partitions,
            replication,
        })
        .unwrap();
    }

    #[test]
    fn same_commands_give_the_same_state_on_every_replica() {
        let cmds = vec![
            Command::Join { node: node(1) },
            Command::Join { node: node(2) },
            Command::CreateTopic {
                name: "orders".into(),
                partitions: 30,
                replication: 2,
            },
            Command::Join { node: node(3) },
            Command::CreateTopic {
                name: "orders".into(),
                partitions: 1,
                replication: 1,
            },
            Command::MarkDead { node: 2, at_ms: 10 },
            Command::CreateTopic {
                name: "events".into(),
                partitions: 7,
                replication: 3,
            },
            Command::MarkAlive { node: 2 },
            Command::DeleteTopic {
                name: "missing".into(),
            },
            Command::Remove { node: 1 },
        ];
        let mut replicas = [Metadata::new(), Metadata::new(), Metadata::new()];
        let mut results = Vec::new();
        for (i, r) in replicas.iter_mut().enumerate() {
            let mut mine = Vec::new();
            for (n, c) in cmds.iter().enumerate() {
                mine.push(r.apply(c));
                // One replica restarts from a snapshot half way through.
                if i == 2 && n == 5 {
                    let bytes = serde_json::to_vec(&*r).unwrap();
                    *r = serde_json::from_slice(&bytes).unwrap();
                }
            }
            results.push(mine);
        }
        assert_eq!(replicas[0], replicas[1]);
        assert_eq!(replicas[0], replicas[2]);
        let bytes: Vec<Vec<u8>> = replicas
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap())
            .collect();
        assert_eq!(bytes[0], bytes[1]);
        assert_eq!(bytes[0], bytes[2]);
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
        assert_eq!(
            results[0][4],
            Err(CommandError::TopicExists("orders".into()))
        );
        assert_eq!(
            results[0][8],
            Err(CommandError::UnknownTopic("missing".into()))
        );
        assert!(replicas[0].member(1).is_none());
    }

    /// Adding a 4th node: about 1/4 of the replica slots move (at most 1.5 ×
    /// 1/4), all onto the new node, and every partition the new node does
    /// not take a replica of keeps its replicas, leader and epoch.
    #[test]
    fn a_fourth_node_moves_about_a_quarter() {
        for (partitions, replication) in [(240u32, 1u16), (120, 3), (30, 1), (30, 3)] {
            let mut m = cluster(1..=3);
            create(&mut m, "t", partitions, replication);
            let before = m.topic("t").unwrap().clone();
            m.apply(&Command::Join { node: node(4) }).unwrap();
            let after = m.topic("t").unwrap().clone();

            let slots = (partitions as usize) * usize::from(replication);
            let mut moved = 0;
            for (b, a) in before.partitions.iter().zip(&after.partitions) {
                moved += a
                    .replicas
                    .iter()
                    .filter(|r| !b.replicas.contains(r))
                    .count();
                if !a.replicas.contains(&4) {
                    assert_eq!(a, b, "a partition the new node does not join changed");
                }
            }
            let on_new = after
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&4))
                .count();
            assert_eq!(moved, on_new, "every moved replica went to the new node");
            // Sticky placement may keep an old member a little above the
            // 4-member bound (30x1: 11 against 10), never above the 3-member
            // one it was placed under.
            for (id, (replicas, _)) in m.load_per_node() {
                assert!(
                    replicas <= Epsilon::NODES.bound(slots, 3),
                    "{partitions}x{replication}: node {id} holds {replicas}"
                );
            }
            // moved / slots <= 1.5 * 1/4, in integers.
            assert!(
                moved * 8 <= slots * 3,
                "{partitions}x{replication}: {moved} of {slots} slots moved"
            );
            assert!(
                moved * 8 >= slots,
                "{partitions}x{replication}: only {moved} of {slots} slots moved"
            );
        }
    }

    /// A joining node's new copies take over only once in sync; the copies
    /// they replace stay (and keep leading) until then.
    #[test]
    fn data_moves_before_leadership() {
        let mut m = cluster(1..=3);
        create(&mut m, "t", 60, 2);
        let before = m.topic("t").unwrap().clone();
        m.apply(&Command::Join { node: node(4) }).unwrap();
        let moved: Vec<usize> = (0..60)
            .filter(|&i| m.topic("t").unwrap().partitions[i].replicas.contains(&4))
            .collect();
        assert!(!moved.is_empty());
        for &i in &moved {
            let (b, p) = (
                &before.partitions[i],
                m.topic("t").unwrap().partitions[i].clone(),
            );
            assert!(!p.isr.contains(&4), "{p:?}");
            assert_eq!(
                p.leader, b.leader,
                "leadership moved before the data: {p:?}"
            );
            let gone: Vec<NodeId> = b
                .replicas
                .iter()
                .copied()
                .filter(|r| !p.replicas.contains(r))
                .collect();
            assert_eq!(p.removing, gone, "{p:?}");
            // The leader reports the newcomer in sync: the old copy goes.
            let leader = p.leader.unwrap();
            let mut isr = p.isr.clone();
            isr.push(4);
            m.apply(&Command::AlterIsr {
                topic: "t".into(),
                partition: i as u32,
                leader,
                leader_epoch: p.leader_epoch,
                isr_version: p.isr_version,
                isr,
            })
            .unwrap();
            let after = &m.topic("t").unwrap().partitions[i];
            assert!(after.removing.is_empty(), "{after:?}");
            assert!(
                after.isr.iter().all(|n| after.replicas.contains(n)),
                "{after:?}"
            );
            assert_eq!(after.leader, Some(after.replicas[0]), "{after:?}");
        }
    }

    /// With every in-sync copy dead a partition stays offline; an unclean
    /// election (only proposed where the operator allowed it) gives it to a
    /// live copy, which becomes the whole ISR.
    #[test]
    fn an_offline_partition_waits_unless_elected_uncleanly() {
        let mut m = cluster(1..=3);
        create(&mut m, "t", 1, 2);
        let p = m.partition("t", 0).unwrap().clone();
        let (first, second) = (p.replicas[0], p.replicas[1]);
        // The second copy falls behind (leaves the ISR), then the first dies.
        m.apply(&Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: first,
            leader_epoch: p.leader_epoch,
            isr_version: p.isr_version,
            isr: vec![first],
        })
        .unwrap();
        m.apply(&Command::MarkDead {
            node: first,
            at_ms: 1,
        })
        .unwrap();
        let offline = m.partition("t", 0).unwrap().clone();
        assert_eq!(
            offline.leader, None,
            "a copy that is behind took over: {offline:?}"
        );
        assert_eq!(offline.isr, vec![first]);
        assert_eq!(m.offline(), 1);
        let unclean = |node| Command::UncleanElect {
            topic: "t".into(),
            partition: 0,
            node,
        };
        assert_eq!(
            m.apply(&unclean(first)),
            Err(CommandError::NotUncleanElectable(first)),
            "a dead node cannot lead"
        );
        m.apply(&unclean(second)).unwrap();
        let led = m.partition("t", 0).unwrap();
        assert_eq!((led.leader, led.isr.clone()), (Some(second), vec![second]));
        assert_eq!(led.leader_epoch, offline.leader_epoch + 1);
        // Led again: not electable uncleanly any more.
        assert_eq!(
            m.apply(&unclean(second)),
            Err(CommandError::NotUncleanElectable(second))
        );
    }

    #[test]
    fn leadership_is_spread_within_the_ring_bound() {
        let mut m = cluster(1..=3);
        create(&mut m, "t", 30, 3);
        let bound = Epsilon::NODES.bound(30, 3);
        for (id, (replicas, leads)) in m.load_per_node() {
            assert_eq!(replicas, 30, "node {id}");
            assert!(leads <= bound, "node {id} leads {leads} > {bound}");
        }
    }

    #[test]
    fn death_moves_leaders_only_and_the_preferred_leader_returns() {
        let mut m = cluster(1..=3);
        create(&mut m, "t", 30, 3);
        create(&mut m, "one", 12, 1);
        let start = m.clone();

        m.apply(&Command::MarkDead { node: 2, at_ms: 5 }).unwrap();
        let dead = m.clone();
        for (name, topic) in start.topics() {
            for (p, (s, d)) in topic
                .partitions
                .iter()
                .zip(&dead.topic(name).unwrap().partitions)
                .enumerate()
            {
                assert_eq!(
                    s.replicas, d.replicas,
                    "{name}/{p}: replicas changed on death"
                );
                if s.replicas.len() > 1 {
                    assert!(!d.isr.contains(&2), "{name}/{p}: a dead node in sync");
                } else {
                    assert_eq!(s.isr, d.isr, "{name}/{p}: the last in-sync copy left");
                }
                if s.leader == Some(2) {
                    let expected = s.replicas.iter().copied().find(|&r| r != 2);
                    assert_eq!(d.leader, expected, "{name}/{p}");
                    assert_eq!(d.leader_epoch, s.leader_epoch + 1, "{name}/{p}");
                } else {
                    assert_eq!(
                        (s.leader, s.leader_epoch),
                        (d.leader, d.leader_epoch),
                        "{name}/{p}: leadership moved off a live node"
                    );
                }
            }
        }
        // Marking it dead again changes nothing.
        m.apply(&Command::MarkDead { node: 2, at_ms: 9 }).unwrap();
        assert_eq!(m, dead);

        // Alive again, it leads nothing until it is back in sync: each
        // leader takes it into its ISR once it caught up.
        m.apply(&Command::MarkAlive { node: 2 }).unwrap();
        for (name, topic) in start.topics() {
            for (i, s) in topic.partitions.iter().enumerate() {
                let now = m.partition(name, i as u32).unwrap().clone();
                assert_ne!(now.leader, Some(2).filter(|_| s.replicas.len() > 1));
                if now.isr.contains(&2) || !now.replicas.contains(&2) {
                    continue;
                }
                let leader = now.leader.unwrap();
                let mut isr = now.isr.clone();
                isr.push(2);
                let alter = |epoch, version| Command::AlterIsr {
                    topic: name.clone(),
                    partition: i as u32,
                    leader,
                    leader_epoch: epoch,
                    isr_version: version,
                    isr: isr.clone(),
                };
                // A stale epoch or ISR version is refused; the current one
                // is taken, once.
                assert!(matches!(
                    m.apply(&alter(now.leader_epoch + 7, now.isr_version)),
                    Err(CommandError::StaleLeader { .. })
                ));
                assert!(matches!(
                    m.apply(&alter(now.leader_epoch, now.isr_version - 1)),
                    Err(CommandError::StaleIsr { .. })
                ));
                m.apply(&alter(now.leader_epoch, now.isr_version)).unwrap();
                assert!(m.partition(name, i as u32).unwrap().isr_version > now.isr_version);
                assert!(
                    m.apply(&alter(now.leader_epoch, now.isr_version)).is_err(),
                    "applied twice"
                );
            }
        }
        for (name, topic) in start.topics() {
            for (p, (s, b)) in topic
                .partitions
                .iter()
                .zip(&m.topic(name).unwrap().partitions)
                .enumerate()
            {
                assert_eq!(
                    s.replicas, b.replicas,
                    "{name}/{p}: replicas changed on return"
                );
                assert_eq!(
                    s.leader, b.leader,
                    "{name}/{p}: preferred leader did not return"
                );
                let bumps = if s.leader == Some(2) { 2 } else { 0 };
                assert_eq!(b.leader_epoch, s.leader_epoch + bumps, "{name}/{p}");
            }
        }
        // A single-replica partition on a dead node has no leader.
        m.apply(&Command::MarkDead { node: 2, at_ms: 20 }).unwrap();
        let orphan = m
            .topic("one")
            .unwrap()
            .partitions
            .iter()
            .find(|p| p.replicas == [2]);
        if let Some(p) = orphan {
            assert_eq!(p.leader, None);
        }
    }

    #[test]
    fn a_dead_node_is_replaced_only_after_replace_after() {
        let mut m = cluster(1..=3);
        create(&mut m, "t", 30, 2);
        let replace = |now_ms| Command::ReplaceDead {
            node: 3,
            now_ms,
            replace_after_ms: 600_000,
        };
        assert_eq!(
            m.apply(&replace(0)),
            Err(CommandError::NodeAlive { node: 3 })
        );
        m.apply(&Command::MarkDead {
            node: 3,
            at_ms: 1_000,
        })
        .unwrap();
        assert_eq!(
            m.apply(&replace(600_999)),
            Err(CommandError::NotDeadLongEnough {
                node: 3,
                dead_ms: 599_999,
                replace_after_ms: 600_000
            })
        );
        m.apply(&replace(601_000)).unwrap();
        assert!(m.member(3).is_none());
        for p in &m.topic("t").unwrap().partitions {
            assert_eq!(p.replicas.len(), 2);
            assert!(!p.holders().any(|n| n == 3));
            // A new copy leads only once in sync: a surviving one leads.
            let leader = p.leader.expect("a leader");
            assert!(p.isr.contains(&leader), "{p:?}");
            assert!(p.isr.iter().all(|n| p.replicas.contains(n)), "{p:?}");
        }
    }

    #[test]
    fn invalid_commands_are_refused_and_change_nothing() {
        let mut m = cluster(1..=2);
        create(&mut m, "t", 4, 2);
        let before = m.clone();
        let cases = [
            (Command::Join { node: node(0) }, CommandError::InvalidNodeId),
            (Command::Join { node: node(2) }, CommandError::NodeExists(2)),
            (Command::Remove { node: 9 }, CommandError::UnknownNode(9)),
            (
                Command::MarkDead { node: 9, at_ms: 0 },
                CommandError::UnknownNode(9),
            ),
            (Command::MarkAlive { node: 9 }, CommandError::UnknownNode(9)),
            (
                Command::CreateTopic {
                    name: "t".into(),
                    partitions: 1,
                    replication: 1,
                },
                CommandError::TopicExists("t".into()),
            ),
            (
                Command::CreateTopic {
                    name: "u".into(),
                    partitions: 1,
                    replication: 3,
                },
                CommandError::InvalidReplication {
                    requested: 3,
                    members: 2,
                },
            ),
            (
                Command::CreateTopic {
                    name: "u".into(),
                    partitions: 1,
                    replication: 0,
                },
                CommandError::InvalidReplication {
                    requested: 0,
                    members: 2,
                },
            ),
            (
                Command::CreateTopic {
                    name: "u".into(),
                    partitions: 0,
                    replication: 1,
                },
                CommandError::InvalidPartitions { requested: 0 },
            ),
            (
                Command::CreateTopic {
                    name: "a/b".into(),
                    partitions: 1,
                    replication: 1,
                },
                CommandError::InvalidTopicName(TopicNameError::BadChar.to_string()),
            ),
            (
                Command::DeleteTopic { name: "u".into() },
                CommandError::UnknownTopic("u".into()),
            ),
        ];
        for (cmd, err) in cases {
            assert_eq!(m.apply(&cmd), Err(err), "{cmd:?}");
            assert_eq!(m, before, "{cmd:?} changed the state");
        }
        // The last member cannot leave while topics exist.
        m.apply(&Command::Remove { node: 1 }).unwrap();
        assert_eq!(
            m.apply(&Command::Remove { node: 2 }),
            Err(CommandError::LastMember(2))
        );
        // Fewer members than the replication factor: placement uses them all.
        for p in &m.topic("t").unwrap().partitions {
            assert_eq!(p.replicas, vec![2]);
        }
    }

    #[test]
    fn security_commands_travel_as_json_and_apply_on_every_replica() {
        use crate::auth::acl::{AclRule, Pattern};
        use crate::auth::{SecurityCommand, StoredCredential};
        use ringmq_protocol::{Operation, ResourceType};
        let acl = AclRule {
            principal: "User:alice".into(),
            resource: ResourceType::Group,
            pattern: Pattern::Prefix("billing-".into()),
            operation: Operation::Join,
        };
        let commands = [
            Command::Security(SecurityCommand::PutUser {
                name: "alice".into(),
                credential: StoredCredential::derive(b"pw", b"0123456789abcdef", 4096),
            }),
            Command::Security(SecurityCommand::AddAcl { acl: acl.clone() }),
        ];
        let mut a = cluster(1..=3);
        let mut b = cluster(1..=3);
        for cmd in &commands {
            // Through the Raft log: JSON, read back as the same command.
            let json = serde_json::to_vec(cmd).unwrap();
            let read: Command = serde_json::from_slice(&json).unwrap();
            assert_eq!(&read, cmd);
            a.apply(cmd).unwrap();
            b.apply(&read).unwrap();
        }
        assert_eq!(a, b);
        assert!(a.security().user("alice").is_some());
        assert!(a.security().acls().contains(&acl));
        // A snapshot carries them; one written before them reads as none.
        let snap: Metadata = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
        assert_eq!(snap, a);
        let old = serde_json::to_value(cluster(1..=3)).unwrap();
        let mut old = old.as_object().unwrap().clone();
        old.remove("security");
        let read: Metadata = serde_json::from_value(old.into()).unwrap();
        assert!(read.security().user_list().next().is_none());
        assert_eq!(
            a.apply(&Command::Security(SecurityCommand::RemoveUser {
                name: "bob".into()
            })),
            Err(CommandError::Security(
                crate::auth::SecurityError::UnknownUser("bob".into())
            ))
        );
    }
}
