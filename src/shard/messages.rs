//! What crosses cores. Every value here is `Send` and travels over the
//! channel mesh from the shard that holds a connection to the shard that owns
//! a partition; the answer comes back on a oneshot channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;

use super::failure::Failure;
use crate::auth::{Security, SecurityCommand};
use crate::cluster::metadata::Command;
use crate::cluster::view::ClusterView;
use crate::topics::TopicMeta;
use ringmq_protocol::{
    Acks, CommitOffsetsRequest, DescribeGroupRequest, FetchOffsetsRequest, GroupSummary,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ReplicaFetchRequest,
    ReplicaFetchResponse, Request, ResponseBody,
};

/// The answer to a request, sent back to the shard that asked.
pub type Reply<T> = oneshot::Sender<Result<T, Failure>>;

/// A request for work on another core.
pub enum ShardMsg {
    /// Append a batch to a partition this shard owns.
    Produce {
        topic: String,
        partition: u32,
        batch: Bytes,
        acks: Acks,
        timeout: Duration,
        reply: Reply<Produced>,
    },
    /// Serve a follower's ReplicaFetch for a partition this shard owns.
    ReplicaFetch {
        req: ReplicaFetchRequest,
        reply: Reply<ReplicaFetchResponse>,
    },
    /// To shard 0: hand a metadata change to the controller leader, without
    /// waiting for it to apply (its effect shows in a later view).
    Submit { cmd: Command, reply: Reply<()> },
    /// Read from a partition this shard owns, waiting up to `max_wait` for `min_bytes`.
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        min_bytes: u32,
        max_wait: Duration,
        reply: Reply<Fetched>,
    },
    /// Look up an offset of a partition this shard owns.
    ListOffsets {
        topic: String,
        partition: u32,
        spec: i64,
        reply: Reply<u64>,
    },
    /// To shard 0, which owns the catalogue: create a topic everywhere.
    CreateTopic { meta: TopicMeta, reply: Reply<()> },
    /// To shard 0: delete a topic everywhere.
    DeleteTopic { name: String, reply: Reply<()> },
    /// From shard 0 to every shard: a topic now exists; open its local partitions.
    TopicAdded { meta: TopicMeta, reply: Reply<()> },
    /// From shard 0 to every shard: a topic is gone; close and remove its local partitions.
    TopicRemoved { name: String, reply: Reply<()> },
    /// To a group's coordinator core: serve a request of that group.
    Group {
        request: GroupRequest,
        reply: Reply<ResponseBody>,
    },
    /// To every core, for ListGroups: the groups it coordinates.
    ListGroups { reply: Reply<Vec<GroupSummary>> },
    /// From shard 0 to every core: the cluster as now applied.
    View {
        view: Arc<ClusterView>,
        reply: Reply<()>,
    },
    /// To shard 0, which runs the Raft node: propose a metadata change.
    Propose { cmd: Command, reply: Reply<()> },
    /// To shard 0 of a single node: change the users or ACLs.
    ChangeSecurity {
        cmd: SecurityCommand,
        reply: Reply<()>,
    },
    /// From shard 0 of a single node to every core: the users and ACLs now.
    Security {
        state: Arc<Security>,
        reply: Reply<()>,
    },
}

/// A request of one consumer group, served by the group's coordinator core.
#[derive(Debug)]
pub enum GroupRequest {
    Join(JoinGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveGroupRequest),
    Commit(CommitOffsetsRequest),
    FetchOffsets(FetchOffsetsRequest),
    Describe(DescribeGroupRequest),
}

impl GroupRequest {
    /// The request as it goes on the wire, to forward it to the group's
    /// coordinator node.
    pub fn into_request(self) -> Request {
        match self {
            GroupRequest::Join(r) => Request::JoinGroup(r),
            GroupRequest::Heartbeat(r) => Request::Heartbeat(r),
            GroupRequest::Leave(r) => Request::LeaveGroup(r),
            GroupRequest::Commit(r) => Request::CommitOffsets(r),
            GroupRequest::FetchOffsets(r) => Request::FetchOffsets(r),
            GroupRequest::Describe(r) => Request::DescribeGroup(r),
        }
    }

    /// The group the request is for: it picks the coordinator core.
    pub fn group(&self) -> &str {
        match self {
            GroupRequest::Join(r) => &r.group,
            GroupRequest::Heartbeat(r) => &r.group,
            GroupRequest::Leave(r) => &r.group,
            GroupRequest::Commit(r) => &r.group,
            GroupRequest::FetchOffsets(r) => &r.group,
            GroupRequest::Describe(r) => &r.group,
        }
    }
}

/// Outcome of an append.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: u64,
    pub log_start_offset: u64,
}

/// Outcome of a read: whole batches, and where the log stands.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}
