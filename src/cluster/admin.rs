//! The operator's view of the cluster: [`ClusterStatus`] (what `ringmq
//! cluster status` prints) and the bridge that lets the metrics HTTP thread
//! ask the shard running the Raft node for it, or for a removal.
//!
//! Status is served on the metrics listener (`GET /cluster`, JSON) rather
//! than in the client protocol: it is an operator's view, like the metrics,
//! and it needs no client-protocol change while the data path is not yet
//! clustered. The HTTP thread is not an executor, so it talks to shard 0
//! through a bounded `futures_channel` (full: answered busy) and waits for
//! the answer on a std channel with a timeout, so a stuck shard cannot hang
//! it.

use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::metadata::NodeId;

/// Requests queued towards shard 0 before the HTTP side is answered busy.
const ADMIN_QUEUE: usize = 16;
/// How long the HTTP side waits for a status.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it waits for a removal (a proposal, perhaps forwarded).
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One node as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    /// One of the Raft voters (`peers`).
    pub controller: bool,
    /// A Raft learner: a member that is not a controller and gets the log.
    #[serde(default)]
    pub learner: bool,
    /// On the ring (joined, not removed or replaced).
    pub member: bool,
    /// The controller's liveness mark; `None` for a node that is not a member.
    pub alive: Option<bool>,
    pub client_addr: Option<String>,
    pub peer_addr: Option<String>,
    /// Partitions this node leads, and partition replicas it holds.
    pub partitions_led: usize,
    pub replicas: usize,
}

/// The cluster as one node sees it (its applied metadata and Raft status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: NodeId,
    pub cluster_id: String,
    pub term: u64,
    /// The controller leader, as far as this node knows.
    pub leader: Option<NodeId>,
    /// Index of the last metadata command applied on this node.
    pub applied: u64,
    pub topics: usize,
    /// Partitions with fewer in-sync copies than replicas.
    #[serde(default)]
    pub under_replicated: usize,
    /// Partitions with no live in-sync copy: unavailable.
    #[serde(default)]
    pub offline: usize,
    pub nodes: Vec<NodeView>,
    /// The `__offsets` partitions, by number: each one's leader coordinates
    /// the consumer groups whose `xxh3(group) % 8` it is. Empty until the
    /// controller has placed them.
    #[serde(default)]
    pub coordinators: Vec<CoordinatorView>,
}

/// One `__offsets` partition: who coordinates its groups, and who holds
/// copies of their state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorView {
    pub partition: u32,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
}

/// What the HTTP side asks.
pub enum AdminRequest {
    Status {
        reply: mpsc::SyncSender<ClusterStatus>,
    },
    /// Decommission `node`; the answer says what happened, in a sentence.
    Remove {
        node: NodeId,
        reply: mpsc::SyncSender<Result<String, String>>,
    },
}

/// Why an admin request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("the node is busy with other admin requests; try again")]
    Busy,
    #[error("the cluster node has stopped")]
    Stopped,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Refused(String),
}

/// The HTTP side's end; `Send`, cheap to clone.
#[derive(Clone)]
pub struct AdminClient(futures_channel::mpsc::Sender<AdminRequest>);

/// Shard 0's end.
pub struct AdminInbox(pub(super) futures_channel::mpsc::Receiver<AdminRequest>);

pub fn channel() -> (AdminClient, AdminInbox) {
    let (tx, rx) = futures_channel::mpsc::channel(ADMIN_QUEUE);
    (AdminClient(tx), AdminInbox(rx))
}

impl AdminClient {
    fn ask<T>(
        &self,
        make: impl FnOnce(mpsc::SyncSender<T>) -> AdminRequest,
        timeout: Duration,
    ) -> Result<T, AdminError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut tx = self.0.clone();
        tx.try_send(make(reply)).map_err(|e| {
            if e.is_disconnected() {
                AdminError::Stopped
            } else {
                AdminError::Busy
            }
        })?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => AdminError::Timeout(timeout),
            mpsc::RecvTimeoutError::Disconnected => AdminError::Stopped,
        })
    }

    /// The cluster as the node sees it. Blocks up to [`STATUS_TIMEOUT`].
    pub fn status(&self) -> Result<ClusterStatus, AdminError> {
        self.ask(|reply| AdminRequest::Status { reply }, STATUS_TIMEOUT)
    }

    /// Decommissions `node`. Blocks up to [`REMOVE_TIMEOUT`].
    pub fn remove(&self, node: NodeId) -> Result<String, AdminError> {
        self.ask(|reply| AdminRequest::Remove { node, reply }, REMOVE_TIMEOUT)?
            .map_err(AdminError::Refused)
    }
}
