//! A cluster node inside the server: the Raft [`Node`], its [`PeerNet`], the
//! task that makes this node a member, and the task answering the operator
//! ([`super::admin`]). All of it runs on shard 0.
//!
//! Joining: a node proposes `Join` for itself (its client and peer
//! addresses) once a controller leader exists. Only the leader takes
//! proposals, so a node that does not lead sends the command to the leader
//! in a Forward frame (SPEC.md 11.3.5) and watches its own applied metadata
//! until it is a member, sending again every [`JOIN_RETRY`] (through
//! whichever node leads by then). A node that is not a controller knows no
//! leader until it is a learner, which it becomes once its join is applied,
//! so until then it sends the join to every controller (the ones that do not
//! lead drop it). Once a member, it stops trying, so a node
//! removed by `ringmq cluster remove` stays out until its process restarts.
//! Addresses of a member are not updated yet (a node that comes back on
//! other addresses is logged, not re-registered).
//!
//! The data path stays local in this step: topics and partitions are still
//! the node's own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use glommio::Task;

use super::admin::{AdminInbox, AdminRequest, ClusterStatus, CoordinatorView, NodeView};
use super::metadata::{Command, NodeId, NodeInfo};
use super::node::{Node, NodeConfig, NodeError, NodeHandle, ProposeError};
use super::peer_net::{PeerNet, PeerNetConfig};
use crate::config::Config;
use crate::group::store::OFFSETS_TOPIC;

/// How often a node that is not yet a member asks to join.
pub const JOIN_RETRY: Duration = Duration::from_millis(500);
/// The Raft log's directory under the data dir. `__` because topics live in
/// `<data_dir>/<topic>` and user topics cannot start with `__`: a topic
/// named `raft` could otherwise be created, and deleted, over the log.
pub const RAFT_DIR: &str = "__raft";
/// How long a removal forwarded to the leader may take to show here.
const FORWARD_WAIT: Duration = Duration::from_secs(8);

/// Why the cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot listen for peers on {addr} (peer_listen): {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("cluster node: {0}")]
    Node(#[from] NodeError),
}

/// What a cluster node needs from the server's configuration.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub me: NodeId,
    pub cluster_id: String,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub peer_listen: SocketAddr,
    /// Where clients reach this node (what it joins with).
    pub client_addr: SocketAddr,
    pub raft_dir: PathBuf,
    pub node_timeout: Duration,
    pub replace_after: Duration,
    pub tls: Option<std::sync::Arc<crate::security::tls::TlsContext>>,
    pub secret: Option<crate::security::secret::ClusterSecret>,
}

impl ClusterSettings {
    /// `None` in single-node mode. `config` must be validated, its `listen`
    /// the bound address. A wildcard client address is advertised with this
    /// node's peer IP, the one address of it the others are known to reach.
    pub fn from_config(config: &Config) -> Option<ClusterSettings> {
        let me = config.node_id?;
        let peer_listen = config.peer_listen_addr()?;
        // A node that is not a controller is dialed at its `peer_listen`.
        let own = config.peers.get(&me).copied().unwrap_or(peer_listen);
        let mut client_addr = config.listen;
        if client_addr.ip().is_unspecified() {
            client_addr.set_ip(own.ip());
        }
        Some(ClusterSettings {
            me,
            cluster_id: config.cluster_id.clone(),
            peers: config.peers.clone(),
            peer_listen,
            client_addr,
            raft_dir: config.data_dir.join(RAFT_DIR),
            node_timeout: config.node_timeout,
            replace_after: config.replace_after,
            tls: config.tls.clone(),
            secret: config.cluster_secret.clone(),
        })
    }
}

/// A running cluster node.
pub struct Cluster {
    node: Node,
    net: Rc<PeerNet>,
    tasks: Vec<Task<()>>,
}

impl Cluster {
    /// Binds the peer listener, starts the Raft node on its log and the peer
    /// network, and starts joining. Runs on the calling executor.
    pub async fn start(
        settings: ClusterSettings,
        admin: Option<AdminInbox>,
    ) -> Result<Cluster, ClusterError> {
        let listener = glommio::net::TcpListener::bind(settings.peer_listen).map_err(|e| {
            ClusterError::Listen {
                addr: settings.peer_listen,
                reason: e.to_string(),
            }
        })?;
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let net = PeerNet::new(PeerNetConfig {
            me: settings.me,
            cluster_id: settings.cluster_id.clone(),
            peers: settings.peers.clone(),
            incarnation,
            tls: settings.tls.clone(),
            secret: settings.secret.clone(),
        });
        let mut config = NodeConfig::new(
            settings.me,
            settings.peers.keys().copied().collect(),
            settings.raft_dir.clone(),
        );
        config.node_timeout = settings.node_timeout;
        config.replace_after = settings.replace_after;
        let node = Node::start(config, net.transport()).await?;
        let handle = node.handle();
        net.start(listener, handle.clone());
        tracing::info!(
            node = settings.me,
            cluster = %settings.cluster_id,
            peer_listen = %settings.peer_listen,
            controllers = ?settings.peers.keys().collect::<Vec<_>>(),
            "cluster node started"
        );

        let settings = Rc::new(settings);
        let info = NodeInfo {
            id: settings.me,
            client_addr: settings.client_addr.to_string(),
            peer_addr: settings
                .peers
                .get(&settings.me)
                .copied()
                .unwrap_or(settings.peer_listen)
                .to_string(),
        };
        let mut tasks = vec![glommio::spawn_local(join(
            handle.clone(),
            net.clone(),
            info,
        ))];
        if let Some(inbox) = admin {
            tasks.push(glommio::spawn_local(serve_admin(
                inbox,
                handle,
                net.clone(),
                settings,
            )));
        }
        Ok(Cluster { node, net, tasks })
    }

    pub fn handle(&self) -> NodeHandle {
        self.node.handle()
    }

    /// The peer network, which carries metadata changes to the leader.
    pub fn peer_net(&self) -> Rc<PeerNet> {
        self.net.clone()
    }

    /// Stops joining and answering, closes the peer network and stops the
    /// Raft driver after its current turn (all it acknowledged is durable).
    pub async fn stop(self) {
        for task in self.tasks {
            task.cancel().await;
        }
        self.net.stop();
        if let Err(e) = self.node.stop().await {
            tracing::error!(error = %e, "cluster node stopped with an error");
        }
    }
}

/// Makes this node a member (see the module doc).
async fn join(handle: NodeHandle, net: Rc<PeerNet>, info: NodeInfo) {
    let me = info.id;
    let cmd = Command::Join { node: info.clone() };
    loop {
        glommio::timer::sleep(JOIN_RETRY).await;
        if let Some(current) = handle.read(|md| md.member(me).map(|m| m.info.clone())) {
            if current != info {
                tracing::warn!(
                    node = me,
                    registered = ?current,
                    now = ?info,
                    "this node is a member with other addresses; they are not updated yet"
                );
            } else {
                tracing::info!(node = me, "member of the cluster");
            }
            return;
        }
        match handle.status().leader {
            None if !handle.is_controller() => {
                for &controller in handle.voters() {
                    net.forward(controller, &cmd);
                }
            }
            None => {}
            Some(leader) if leader == me => match handle.propose(cmd.clone()).await {
                Ok(()) => {}
                Err(e) => tracing::debug!(error = %e, "join not applied yet"),
            },
            Some(leader) => net.forward(leader, &cmd),
        }
    }
}

async fn serve_admin(
    mut inbox: AdminInbox,
    handle: NodeHandle,
    net: Rc<PeerNet>,
    settings: Rc<ClusterSettings>,
) {
    while let Some(request) = inbox.0.next().await {
        match request {
            AdminRequest::Status { reply } => {
                let _ = reply.try_send(status(&handle, &settings));
            }
            AdminRequest::Remove { node, reply } => {
                let handle = handle.clone();
                let net = net.clone();
                glommio::spawn_local(async move {
                    let _ = reply.try_send(remove(&handle, &net, node).await);
                })
                .detach();
            }
        }
    }
}

/// The cluster as this node sees it.
pub fn status(handle: &NodeHandle, settings: &ClusterSettings) -> ClusterStatus {
    let raft = handle.status();
    handle.read(|md| {
        let load = md.load_per_node();
        let mut ids: Vec<NodeId> = settings.peers.keys().copied().collect();
        ids.extend(md.members().keys().copied());
        // A learner whose removal is still on its way shows too.
        ids.extend(raft.learners.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids
            .into_iter()
            .map(|id| {
                let member = md.member(id);
                let (replicas, partitions_led) = load.get(&id).copied().unwrap_or((0, 0));
                NodeView {
                    id,
                    controller: settings.peers.contains_key(&id),
                    learner: raft.learners.contains(&id),
                    member: member.is_some(),
                    alive: member.map(|m| m.liveness.is_alive()),
                    client_addr: member.map(|m| m.info.client_addr.clone()),
                    peer_addr: member
                        .map(|m| m.info.peer_addr.clone())
                        .or_else(|| settings.peers.get(&id).map(|a| a.to_string())),
                    partitions_led,
                    replicas,
                }
            })
            .collect();
        ClusterStatus {
            node_id: settings.me,
            cluster_id: settings.cluster_id.clone(),
            term: raft.term,
            leader: raft.leader,
            applied: raft.applied,
            topics: md.topics().len(),
            under_replicated: md.under_replicated(),
            offline: md.offline(),
            nodes,
            coordinators: md
                .topic(OFFSETS_TOPIC)
                .map(|t| {
                    t.partitions
                        .iter()
                        .enumerate()
                        .map(|(p, pl)| CoordinatorView {
                            partition: p as u32,
                            leader: pl.leader,
                            replicas: pl.replicas.clone(),
                            isr: pl.isr.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    })
}

/// Decommissions `node`: proposed here when this node leads, else forwarded
/// to the leader and watched for in the applied metadata.
async fn remove(handle: &NodeHandle, net: &PeerNet, node: NodeId) -> Result<String, String> {
    if handle.read(|md| md.member(node).is_none()) {
        return Err(format!("node {node} is not a member of the cluster"));
    }
    let cmd = Command::Remove { node };
    match handle.status().leader {
        None => Err("there is no controller leader right now (an election is under way, or too few controllers are up); try again".into()),
        Some(leader) if leader == handle.id() => match handle.propose(cmd).await {
            Ok(()) => Ok(format!("removed node {node}")),
            Err(ProposeError::Rejected(e)) => Err(e.to_string()),
            Err(e) => Err(format!("not removed: {e}")),
        },
        Some(leader) => {
            net.forward(leader, &cmd);
            let deadline = Instant::now() + FORWARD_WAIT;
            while Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                if handle.read(|md| md.member(node).is_none()) {
                    return Ok(format!("removed node {node}"));
                }
            }
            Err(format!(
                "node {node} is still a member after {FORWARD_WAIT:?} (sent to the leader, node {leader}); see `ringmq cluster status`"
            ))
        }
    }
}
