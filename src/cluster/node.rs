//! One cluster node's Raft: a raft-rs `RawNode` driven on a glommio executor.
//! A controller (one of the fixed voters) or a learner: a member that is not
//! a controller, which gets the log (or a snapshot) from the leader and
//! applies the same metadata, but never campaigns or votes.
//!
//! A single driver task owns the `RawNode`, the [`DiskLog`] and the pending
//! proposals, so nothing about Raft is shared or locked; other tasks talk to
//! it through a [`NodeHandle`] (a bounded inbox) and read the applied
//! [`Metadata`] through a `RefCell` that is never borrowed across an `.await`.
//!
//! Each turn of the driver: take one input (a peer message, a proposal) or
//! wait for the next tick; tick if due; then process a `Ready` in the order
//! Raft requires: persist (snapshot, entries, hard state; fdatasync), send,
//! apply committed entries, advance — then the `LightReady` (send, apply).
//! Messages are sent only after the writes they depend on are durable.
//!
//! Liveness of nodes is decided here, by the controller leader only: every
//! node heartbeats every controller (not through the log); a member silent
//! for `node_timeout` is proposed dead, one heard again is proposed alive, one
//! dead longer than `replace_after` is proposed replaced. A new leader gives
//! everyone a fresh `node_timeout` before judging, since it has heard no
//! heartbeats yet.
//!
//! Learners follow membership: the controller leader checks after every turn
//! that every member that is not a voter is a learner and every learner a
//! member, and proposes the one conf change (AddLearnerNode, RemoveNode) that
//! is missing, one at a time. That converges whatever happened before: a
//! retried join, a leader that died between applying a join and proposing
//! its conf change, a new leader. Voters never change; a conf change
//! touching one is refused by every node alike.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::Timer;
use glommio::Task;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, MessageType, Snapshot};
use raft::{RawNode, StateRole, Storage};

use super::metadata::{Command, CommandError, Metadata, NodeId};
use super::raft_log::{self, DiskLog, LogError, RaftStore};
use super::transport::{PeerMessage, Transport};

/// How one controller runs. [`NodeConfig::new`] gives production-like
/// defaults; tests shorten the times.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The controller nodes (Raft voters), the same on every node. A node
    /// not among them is a learner.
    pub voters: Vec<NodeId>,
    /// Where the Raft log and snapshots live (`<data dir>/raft`).
    pub dir: PathBuf,
    /// Raft's clock: elections and heartbeats count in ticks.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomised by
    /// raft-rs up to twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's raft heartbeats.
    pub heartbeat_ticks: usize,
    /// Node heartbeats to the controllers, for liveness.
    pub heartbeat_interval: Duration,
    /// Silence after which the controller leader marks a node dead.
    pub node_timeout: Duration,
    /// Death after which the node leaves the ring and its replicas move.
    pub replace_after: Duration,
    /// How long a proposal may take to be applied before it fails.
    pub proposal_timeout: Duration,
    /// Applied entries between two snapshots (which compact the log).
    pub snapshot_every: u64,
    /// Capacity of the inbox; a full inbox drops peer messages (Raft
    /// retransmits) and makes proposers wait.
    pub inbox: usize,
    /// Proposals awaiting their entry's application, at most.
    pub max_pending: usize,
    /// Whether the leader keeps the learners in step with the members (see
    /// the module doc). Tests turn it off to leave a member without its
    /// learner entry, as a leader dying at the wrong moment would.
    pub reconcile_learners: bool,
}

impl NodeConfig {
    pub fn new(id: NodeId, voters: Vec<NodeId>, dir: PathBuf) -> Self {
        NodeConfig {
            id,
            voters,
            dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            heartbeat_interval: Duration::from_millis(500),
            node_timeout: Duration::from_secs(6),
            replace_after: Duration::from_secs(600),
            proposal_timeout: Duration::from_secs(5),
            snapshot_every: 1000,
            inbox: 1024,
            max_pending: 1024,
            reconcile_learners: true,
        }
    }
}

/// Why a node stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    #[error("snapshot does not hold cluster metadata: {0}")]
    Snapshot(serde_json::Error),
}

/// Why a proposal did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the controller leader takes proposals; ask `leader` (unknown
    /// during an election).
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Committed, and refused by the state machine on every node alike.
    #[error("refused: {0}")]
    Rejected(#[from] CommandError),
    /// Not applied in time: it may still be, or may have been lost with a
    /// change of leader. Read the metadata to find out.
    #[error("not applied within {0:?}")]
    Timeout(Duration),
    #[error("too many proposals in flight")]
    Busy,
    /// The command could not be written, or its committed entry read, as a
    /// command (a bug, or an entry from an incompatible version).
    #[error("not a metadata command: {0}")]
    Encoding(String),
    #[error("the node has stopped")]
    Stopped,
}

/// Why an incoming peer message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("node {0} is not a member or controller of this cluster")]
    UnknownNode(NodeId),
    #[error("raft message from {claimed} to {to} arrived from node {from} at node {me}")]
    Misaddressed {
        from: NodeId,
        claimed: u64,
        to: u64,
        me: NodeId,
    },
    /// A message type only a node gives itself (or a proposal, which only
    /// the leader's own clients make), or term 0: raft-rs would step it
    /// without a term check.
    #[error("raft message {0:?} is not one peers exchange")]
    NotPeerMessage(MessageType),
    #[error("inbox full")]
    Busy,
    #[error("the node has stopped")]
    Stopped,
}

/// What the driver last saw, for readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub term: u64,
    /// The controller leader as far as this node knows. A learner, which
    /// never campaigns, forgets it after two election timeouts without word
    /// from it.
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    /// Index of the last log entry applied to the metadata.
    pub applied: u64,
    /// Index of the latest snapshot (0: none yet).
    pub snapshot_index: u64,
    /// The commit index this node had on disk when it started. Until
    /// `applied` reaches it, the metadata is older than what this node
    /// already acted on before it restarted.
    pub restored_commit: u64,
    /// The learners of the Raft configuration this node has applied.
    pub learners: Vec<NodeId>,
}

enum Input {
    Peer {
        from: NodeId,
        msg: PeerMessage,
    },
    Propose {
        cmd: Command,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    Unreachable(NodeId),
    Stop,
}

struct Shared {
    metadata: Metadata,
    status: NodeStatus,
}

/// Talks to a running node; cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    voters: Rc<[NodeId]>,
    tx: Rc<LocalSender<Input>>,
    shared: Rc<RefCell<Shared>>,
    proposal_timeout: Duration,
}

impl NodeHandle {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The metadata as of the last applied entry on this node (a follower may
    /// lag the leader by a heartbeat).
    pub fn metadata(&self) -> Metadata {
        self.shared.borrow().metadata.clone()
    }

    /// Reads the metadata without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&Metadata) -> R) -> R {
        f(&self.shared.borrow().metadata)
    }

    pub fn status(&self) -> NodeStatus {
        self.shared.borrow().status.clone()
    }

    /// The controllers (Raft voters).
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// Whether this node is a controller.
    pub fn is_controller(&self) -> bool {
        self.voters.contains(&self.id)
    }

    /// Whether `id` is a controller, a learner, or a member in the applied
    /// metadata: a node of the cluster, rather than one that may only ask to
    /// join.
    pub fn knows(&self, id: NodeId) -> bool {
        if self.voters.contains(&id) {
            return true;
        }
        let shared = self.shared.borrow();
        shared.status.learners.contains(&id) || shared.metadata.member(id).is_some()
    }

    /// Proposes `cmd`; resolves once it is applied here (and so committed),
    /// with the state machine's verdict.
    pub async fn propose(&self, cmd: Command) -> Result<(), ProposeError> {
        let (reply, answer) = oneshot::channel();
        let timeout = self.proposal_timeout;
        let result = glommio::timer::timeout(timeout, async {
            if self.tx.send(Input::Propose { cmd, reply }).await.is_err() {
                return Ok(Err(ProposeError::Stopped));
            }
            Ok(answer.await.unwrap_or(Err(ProposeError::Stopped)))
        })
        .await;
        result.unwrap_or(Err(ProposeError::Timeout(timeout)))
    }

    /// The transport could not reach `peer` (connect failed, connection
    /// lost): Raft stops streaming appends to it and probes instead. Never
    /// waits; dropped when the inbox is full (the next failure reports again).
    pub fn report_unreachable(&self, peer: NodeId) {
        let _ = self.tx.try_send(Input::Unreachable(peer));
    }

    /// Takes a message that arrived from node `from` (as authenticated by
    /// the transport's Hello). Refuses raft messages from nodes that are
    /// neither voters nor learners, heartbeats from nodes that are neither
    /// controllers nor members, and raft messages whose addresses do not
    /// match; never waits (a full inbox drops the message).
    pub fn receive(&self, from: NodeId, msg: PeerMessage) -> Result<(), ReceiveError> {
        let voter = self.voters.contains(&from);
        match &msg {
            PeerMessage::Raft(m) => {
                if !voter && !self.shared.borrow().status.learners.contains(&from) {
                    return Err(ReceiveError::UnknownNode(from));
                }
                if !is_peer_message(m.get_msg_type()) || m.term == 0 {
                    return Err(ReceiveError::NotPeerMessage(m.get_msg_type()));
                }
                if m.from != u64::from(from) || m.to != u64::from(self.id) {
                    return Err(ReceiveError::Misaddressed {
                        from,
                        claimed: m.from,
                        to: m.to,
                        me: self.id,
                    });
                }
            }
            PeerMessage::Heartbeat => {
                if !voter && self.read(|md| md.member(from).is_none()) {
                    return Err(ReceiveError::UnknownNode(from));
                }
            }
        }
        self.tx
            .try_send(Input::Peer { from, msg })
            .map_err(|e| match e {
                glommio::GlommioError::Closed(_) => ReceiveError::Stopped,
                _ => ReceiveError::Busy,
            })
    }
}

/// A running node: its handle and its driver task.
pub struct Node {
    handle: NodeHandle,
    task: Task<Result<(), NodeError>>,
}

impl Node {
    /// Opens the log in `config.dir` (on the blocking pool), restores the
    /// metadata from its snapshot and starts the driver on this executor.
    /// Committed entries after the snapshot are applied again as Raft
    /// delivers them; the rest arrives from the leader. A node not among the
    /// voters starts a new log with an empty configuration: a learner-to-be.
    pub async fn start(
        config: NodeConfig,
        transport: Rc<dyn Transport>,
    ) -> Result<Node, NodeError> {
        if config.id == 0 || config.voters.is_empty() || config.voters.contains(&0) {
            return Err(NodeError::Config(format!(
                "node {} with voters {:?}: ids start at 1, and there is at least one voter",
                config.id, config.voters
            )));
        }
        if config.inbox == 0 || config.max_pending == 0 || config.tick.is_zero() {
            return Err(NodeError::Config(
                "inbox, max_pending and tick must be positive".into(),
            ));
        }
        let dir = config.dir.clone();
        let voters: Vec<u64> = if config.voters.contains(&config.id) {
            config.voters.iter().map(|&v| u64::from(v)).collect()
        } else {
            Vec::new()
        };
        let (store, log) = glommio::executor()
            .spawn_blocking(move || raft_log::open(&dir, &voters))
            .await?;

        let snap = store.latest_snapshot().get_metadata().clone();
        let metadata = if snap.index == 0 {
            Metadata::new()
        } else {
            serde_json::from_slice(&store.latest_snapshot().data).map_err(NodeError::Snapshot)?
        };
        let raft_config = raft::Config {
            id: u64::from(config.id),
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: snap.index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, store, &raft_logger(config.id))?;

        let (tx, rx) = local_channel::new_bounded(config.inbox);
        let shared = Rc::new(RefCell::new(Shared {
            metadata,
            status: NodeStatus {
                id: config.id,
                term: raw.raft.term,
                leader: None,
                is_leader: false,
                applied: snap.index,
                snapshot_index: snap.index,
                restored_commit: raw.raft.raft_log.committed,
                learners: learners_of(&raw),
            },
        }));
        let handle = NodeHandle {
            id: config.id,
            voters: config.voters.clone().into(),
            tx: Rc::new(tx),
            shared: shared.clone(),
            proposal_timeout: config.proposal_timeout,
        };
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let driver = Driver {
            applied: snap.index,
            config,
            raw,
            log,
            shared,
            transport,
            rx,
            pending: BTreeMap::new(),
            incarnation,
            next_seq: 0,
            last_heard: BTreeMap::new(),
            judged: BTreeMap::new(),
            was_leader: false,
            conf_proposed: None,
        };
        let id = handle.id;
        let task = glommio::spawn_local(async move {
            let result = driver.run().await;
            if let Err(e) = &result {
                tracing::error!(node = id, error = %e, "cluster node stopped");
            }
            result
        });
        Ok(Node { handle, task })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the driver after its current turn (everything it acknowledged
    /// is durable already) and returns how it ended.
    pub async fn stop(self) -> Result<(), NodeError> {
        // A closed inbox means the driver has ended on its own already.
        let _ = self.handle.tx.send(Input::Stop).await;
        self.task.await
    }
}

/// Proposal ids travel in the entry's context: who proposed it, in which
/// incarnation of the process, and its sequence number there, so that only
/// the proposer completes a future for it, even across restarts.
const CONTEXT_LEN: usize = 4 + 8 + 8;

/// Inputs taken in one turn of the driver at most, so ticks stay on time
/// under a flood.
const MAX_INPUTS_PER_TURN: usize = 256;

struct Driver {
    config: NodeConfig,
    raw: RawNode<RaftStore>,
    log: DiskLog,
    shared: Rc<RefCell<Shared>>,
    transport: Rc<dyn Transport>,
    rx: LocalReceiver<Input>,
    pending: BTreeMap<u64, oneshot::Sender<Result<(), ProposeError>>>,
    incarnation: u64,
    next_seq: u64,
    applied: u64,
    /// When this node last heard from each node (heartbeat or raft message).
    last_heard: BTreeMap<NodeId, Instant>,
    /// Liveness proposals in flight, by node, so a slow commit is not
    /// proposed again on every tick.
    judged: BTreeMap<NodeId, Instant>,
    was_leader: bool,
    /// The last conf change the leader proposed, and when: not proposed
    /// again while it may still be on its way.
    conf_proposed: Option<(ConfChangeType, u64, Instant)>,
}

impl Driver {
    async fn run(mut self) -> Result<(), NodeError> {
        let tick = self.config.tick;
        let mut next_tick = Instant::now() + tick;
        let mut next_heartbeat = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let input = futures_lite::future::or(async { Some(self.rx.recv().await) }, async {
                Timer::new(wait).await;
                None
            })
            .await;
            match input {
                Some(Some(Input::Stop)) | Some(None) => break,
                Some(Some(input)) => self.handle(input),
                None => {}
            }
            // Whatever else is already queued joins this turn, so one
            // fdatasync covers many messages and proposals (group commit).
            let mut stop = false;
            for _ in 0..MAX_INPUTS_PER_TURN {
                match futures_lite::future::poll_once(self.rx.recv()).await {
                    Some(Some(Input::Stop)) | Some(None) => {
                        stop = true;
                        break;
                    }
                    Some(Some(input)) => self.handle(input),
                    None => break,
                }
            }
            let now = Instant::now();
            let ticked = now >= next_tick;
            if ticked {
                self.raw.tick();
                next_tick = now + tick;
                self.pending.retain(|_, reply| !reply.is_canceled());
            }
            if now >= next_heartbeat {
                for &peer in &self.config.voters {
                    if peer != self.config.id {
                        self.transport.send(peer, PeerMessage::Heartbeat);
                    }
                }
                next_heartbeat = now + self.config.heartbeat_interval;
            }
            self.on_ready().await?;
            self.refresh_status();
            self.reconcile_learners(now);
            if stop {
                break;
            }
            if ticked && self.was_leader {
                self.judge_liveness(now);
            }
        }
        Ok(())
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer { from, msg } => {
                self.last_heard.insert(from, Instant::now());
                if let PeerMessage::Raft(m) = msg {
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!(node = self.config.id, from, error = %e, "raft message ignored");
                    }
                }
            }
            Input::Propose { cmd, reply } => {
                let result = self.propose(&cmd, true);
                match result {
                    Ok(Some(seq)) => {
                        self.pending.insert(seq, reply);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Input::Unreachable(peer) => self.raw.report_unreachable(u64::from(peer)),
            Input::Stop => {}
        }
    }

    /// Appends `cmd` to the log if this node leads; returns the sequence
    /// number a reply waits on (when `track`).
    fn propose(&mut self, cmd: &Command, track: bool) -> Result<Option<u64>, ProposeError> {
        let not_leader = ProposeError::NotLeader {
            leader: leader_of(&self.raw),
        };
        if self.raw.raft.state != StateRole::Leader {
            return Err(not_leader);
        }
        if track && self.pending.len() >= self.config.max_pending {
            return Err(ProposeError::Busy);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut context = Vec::with_capacity(CONTEXT_LEN);
        context.extend_from_slice(&self.config.id.to_le_bytes());
        context.extend_from_slice(&self.incarnation.to_le_bytes());
        context.extend_from_slice(&seq.to_le_bytes());
        let data = serde_json::to_vec(cmd).map_err(|e| ProposeError::Encoding(e.to_string()))?;
        self.raw.propose(context, data).map_err(|_| not_leader)?;
        Ok(track.then_some(seq))
    }

    /// One Ready, in Raft's order: persist, send, apply, advance.
    async fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();

        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let metadata: Metadata =
                serde_json::from_slice(&snapshot.data).map_err(NodeError::Snapshot)?;
            self.log
                .install_snapshot(self.raw.mut_store(), snapshot.clone())
                .await?;
            self.applied = snapshot.get_metadata().index;
            let mut shared = self.shared.borrow_mut();
            shared.metadata = metadata;
            shared.status.snapshot_index = self.applied;
        }
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        if !entries.is_empty() || hs.is_some() {
            self.log
                .append(self.raw.mut_store(), &entries, hs.as_ref())
                .await?;
        }

        let mut snapshots = self.send(ready.take_messages());
        snapshots.extend(self.send(ready.take_persisted_messages()));
        self.apply(ready.take_committed_entries()).await?;

        let mut light = self.raw.advance(ready);
        snapshots.extend(self.send(light.take_messages()));
        self.apply(light.take_committed_entries()).await?;
        self.raw.advance_apply();
        // The transport cannot tell whether a snapshot arrived, and raft-rs
        // sends a follower nothing more until told. Reporting it finished at
        // once is safe: if it was lost, the follower refuses the appends that
        // follow and the leader probes back down to sending it again.
        for to in snapshots {
            self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
        }

        self.maybe_snapshot().await
    }

    /// Hands messages to the transport; returns the peers sent a snapshot.
    fn send(&self, messages: Vec<raft::eraftpb::Message>) -> Vec<u64> {
        let mut snapshots = Vec::new();
        for m in messages {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push(m.to);
            }
            match NodeId::try_from(m.to) {
                Ok(to) => self.transport.send(to, PeerMessage::Raft(m)),
                Err(_) => tracing::warn!(to = m.to, "raft message to an impossible node id"),
            }
        }
        snapshots
    }

    async fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for entry in entries {
            self.applied = entry.index;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    self.apply_conf_change(&entry).await?;
                    continue;
                }
                EntryType::EntryConfChangeV2 => {
                    // Nothing proposes joint changes; every node skips it alike.
                    tracing::warn!(
                        index = entry.index,
                        "ignoring a joint raft configuration change"
                    );
                    continue;
                }
            }
            if entry.data.is_empty() {
                // A new leader's empty entry.
                continue;
            }
            let result = match serde_json::from_slice::<Command>(&entry.data) {
                Ok(cmd) => {
                    let r = self.shared.borrow_mut().metadata.apply(&cmd);
                    if let Err(e) = &r {
                        tracing::debug!(index = entry.index, ?cmd, error = %e, "command refused");
                    }
                    r.map_err(ProposeError::from)
                }
                Err(e) => {
                    // Same bytes on every node, so every node skips it alike.
                    tracing::warn!(index = entry.index, error = %e, "undecodable metadata command skipped");
                    Err(ProposeError::Encoding(e.to_string()))
                }
            };
            if let Some(seq) = self.own_seq(&entry.context) {
                if let Some(reply) = self.pending.remove(&seq) {
                    let _ = reply.send(result);
                }
            }
        }
        self.shared.borrow_mut().status.applied = self.applied;
        Ok(())
    }

    /// Applies a committed conf change on this node, and makes the new
    /// configuration durable. Only learners come and go: a change naming a
    /// voter, or of another kind, is refused (by every node alike, as they
    /// share the voters), and so is one raft-rs finds invalid.
    async fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), NodeError> {
        let cc = match ConfChange::parse_from_bytes(&entry.data) {
            Ok(cc) => cc,
            Err(e) => {
                tracing::warn!(index = entry.index, error = %e, "undecodable raft configuration change skipped");
                return Ok(());
            }
        };
        let kind = cc.get_change_type();
        let learner = NodeId::try_from(cc.node_id)
            .ok()
            .filter(|&id| id != 0 && !self.config.voters.contains(&id));
        let known_kind = matches!(
            kind,
            ConfChangeType::AddLearnerNode | ConfChangeType::RemoveNode
        );
        if learner.is_none() || !known_kind {
            tracing::warn!(
                index = entry.index,
                ?kind,
                node = cc.node_id,
                "raft configuration change refused: only learners are added and removed"
            );
            return Ok(());
        }
        if let Err(e) = self.seed_voters() {
            tracing::error!(index = entry.index, error = %e, "cannot take the controllers into this node's raft configuration");
            return Ok(());
        }
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(
                    node = self.config.id,
                    index = entry.index,
                    ?kind,
                    learner = cc.node_id,
                    "raft configuration changed"
                );
                self.shared.borrow_mut().status.learners = learners_of(&self.raw);
                self.log.set_conf_state(self.raw.mut_store(), cs).await?;
            }
            Err(e) => {
                tracing::warn!(index = entry.index, ?kind, node = cc.node_id, error = %e, "raft configuration change refused");
            }
        }
        Ok(())
    }

    /// A node that is not a controller starts with an empty configuration,
    /// and the log does not name the voters (the controllers bootstrap them
    /// from their own storage), so raft-rs would refuse to add a learner to
    /// it ("removed all voters"). The voters are the same fixed set on every
    /// node: they go in first, one valid simple change at a time, before
    /// the first conf change a learner applies from the log. A snapshot
    /// carries the whole configuration and needs none of this.
    fn seed_voters(&mut self) -> Result<(), raft::Error> {
        if !self.raw.raft.prs().conf().to_conf_state().voters.is_empty() {
            return Ok(());
        }
        for &voter in &self.config.voters {
            let mut add = ConfChange::default();
            add.set_change_type(ConfChangeType::AddNode);
            add.node_id = u64::from(voter);
            self.raw.apply_conf_change(&add)?;
        }
        Ok(())
    }

    /// Leader only: proposes the one conf change that brings the learners
    /// closer to the members that are not voters (see the module doc).
    fn reconcile_learners(&mut self, now: Instant) {
        if !self.config.reconcile_learners
            || self.raw.raft.state != StateRole::Leader
            || self.raw.raft.has_pending_conf()
        {
            return;
        }
        let voters: BTreeSet<u64> = self.config.voters.iter().map(|&v| u64::from(v)).collect();
        let learners: BTreeSet<u64> = self
            .raw
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        let change = {
            let shared = self.shared.borrow();
            let members = shared.metadata.members();
            members
                .keys()
                .map(|&id| u64::from(id))
                .find(|id| !voters.contains(id) && !learners.contains(id))
                .map(|id| (ConfChangeType::AddLearnerNode, id))
                .or_else(|| {
                    learners
                        .iter()
                        .find(|&&l| {
                            NodeId::try_from(l).map_or(true, |id| members.get(&id).is_none())
                        })
                        .map(|&l| (ConfChangeType::RemoveNode, l))
                })
        };
        let Some((kind, id)) = change else {
            return;
        };
        if let Some((k, i, at)) = self.conf_proposed {
            if (k, i) == (kind, id) && now.duration_since(at) < self.config.proposal_timeout {
                return;
            }
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = id;
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                tracing::info!(
                    node = self.config.id,
                    ?kind,
                    learner = id,
                    "raft configuration change proposed"
                );
                self.conf_proposed = Some((kind, id, now));
            }
            Err(e) => {
                tracing::debug!(?kind, learner = id, error = %e, "raft configuration change not proposed")
            }
        }
    }

    fn own_seq(&self, context: &[u8]) -> Option<u64> {
        if context.len() != CONTEXT_LEN {
            return None;
        }
        let mut id = [0u8; 4];
        id.copy_from_slice(&context[..4]);
        let mut inc = [0u8; 8];
        inc.copy_from_slice(&context[4..12]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&context[12..]);
        (u32::from_le_bytes(id) == self.config.id && u64::from_le_bytes(inc) == self.incarnation)
            .then(|| u64::from_le_bytes(seq))
    }

    /// Snapshots the metadata and compacts the log every `snapshot_every`
    /// applied entries.
    async fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let base = self.raw.store().latest_snapshot().get_metadata().index;
        // A learner added after the latest snapshot needs a newer one.
        let wanted = self.raw.store().take_snapshot_wanted();
        if self.applied <= base
            || (self.applied < base + self.config.snapshot_every.max(1) && !wanted)
        {
            return Ok(());
        }
        let mut snapshot = Snapshot::default();
        let data =
            serde_json::to_vec(&self.shared.borrow().metadata).map_err(NodeError::Snapshot)?;
        snapshot.data = data.into();
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = self.raw.store().term(self.applied)?;
        meta.set_conf_state(self.raw.store().conf_state().clone());
        self.log
            .install_snapshot(self.raw.mut_store(), snapshot)
            .await?;
        self.shared.borrow_mut().status.snapshot_index = self.applied;
        tracing::debug!(
            node = self.config.id,
            index = self.applied,
            "raft log compacted"
        );
        Ok(())
    }

    fn refresh_status(&mut self) {
        let is_leader = self.raw.raft.state == StateRole::Leader;
        if is_leader && !self.was_leader {
            // Nobody has had a chance to heartbeat this leader yet.
            let now = Instant::now();
            let ids: Vec<NodeId> = self
                .shared
                .borrow()
                .metadata
                .members()
                .keys()
                .copied()
                .collect();
            for id in ids {
                self.last_heard.insert(id, now);
            }
            self.judged.clear();
        }
        self.was_leader = is_leader;
        let mut leader = leader_of(&self.raw);
        // A voter clears the leader when it campaigns; a learner never does,
        // so it stops trusting one it has not heard from for long.
        if !self.raw.raft.promotable()
            && self.raw.raft.election_elapsed > 2 * self.config.election_ticks
        {
            leader = None;
        }
        let learners = learners_of(&self.raw);
        let mut shared = self.shared.borrow_mut();
        shared.status.term = self.raw.raft.term;
        shared.status.leader = leader;
        shared.status.is_leader = is_leader;
        shared.status.learners = learners;
    }

    /// Leader only: turns heartbeats and their absence into liveness
    /// commands.
    fn judge_liveness(&mut self, now: Instant) {
        let timeout = self.config.node_timeout;
        self.judged
            .retain(|_, at| now.duration_since(*at) < self.config.proposal_timeout);
        let wall = wall_ms();
        let replace_after_ms = self.config.replace_after.as_millis() as u64;
        let members: Vec<(NodeId, super::metadata::Liveness)> = self
            .shared
            .borrow()
            .metadata
            .members()
            .values()
            .map(|m| (m.info.id, m.liveness))
            .collect();
        for (id, liveness) in members {
            if self.judged.contains_key(&id) {
                continue;
            }
            let silent = if id == self.config.id {
                Duration::ZERO
            } else {
                let heard = *self.last_heard.entry(id).or_insert(now);
                now.saturating_duration_since(heard)
            };
            let cmd = match liveness {
                super::metadata::Liveness::Alive if silent > timeout => Command::MarkDead {
                    node: id,
                    at_ms: wall,
                },
                super::metadata::Liveness::Dead { .. } if silent <= timeout => {
                    Command::MarkAlive { node: id }
                }
                super::metadata::Liveness::Dead { since_ms }
                    if wall.saturating_sub(since_ms) >= replace_after_ms =>
                {
                    Command::ReplaceDead {
                        node: id,
                        now_ms: wall,
                        replace_after_ms,
                    }
                }
                _ => continue,
            };
            tracing::info!(node = self.config.id, ?cmd, "liveness change proposed");
            if self.propose(&cmd, false).is_ok() {
                self.judged.insert(id, now);
            }
        }
    }
}

/// The raft messages nodes legitimately send each other.
fn is_peer_message(t: MessageType) -> bool {
    use MessageType::*;
    matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow
    )
}

/// The learners of the configuration `raw` has applied, sorted.
fn learners_of(raw: &RawNode<RaftStore>) -> Vec<NodeId> {
    let mut learners: Vec<NodeId> = raw
        .raft
        .prs()
        .conf()
        .learners()
        .iter()
        .filter_map(|&l| NodeId::try_from(l).ok())
        .collect();
    learners.sort_unstable();
    learners
}

fn leader_of(raw: &RawNode<RaftStore>) -> Option<NodeId> {
    NodeId::try_from(raw.raft.leader_id)
        .ok()
        .filter(|&id| id != 0)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// raft-rs logs through slog; this sends its records to tracing (target
/// `raft`), one level down except for warnings and errors, so an election
/// is a debug line and not noise at info.
fn raft_logger(id: NodeId) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => id))
}

struct TracingDrain;

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV as _;
        let level = record.level();
        let enabled = match level {
            slog::Level::Critical | slog::Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            slog::Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            slog::Level::Info | slog::Level::Debug => {
                tracing::enabled!(target: "raft", tracing::Level::DEBUG)
            }
            slog::Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        let kv = kv.0;
        match level {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{kv}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{kv}"),
            slog::Level::Info | slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{kv}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{kv}"),
        }
        Ok(())
    }
}
