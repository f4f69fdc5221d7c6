//! Consumer groups: JoinGroup (key 8), Heartbeat (9), LeaveGroup (10),
//! CommitOffsets (11), FetchOffsets (12), DescribeGroup (13) and
//! ListGroups (14).
//!
//! The coordinator assigns partitions itself; a member learns its share from
//! the [`MemberAssignment`] that JoinGroup and every Heartbeat answer with.
//! SPEC.md section 5.9 gives the rules a member follows when it changes.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_option, put_str, put_vec, Reader, Wire};
use crate::frame::FrameError;

/// Partitions of one topic: an entry of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// What a member may consume at a generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberAssignment {
    /// The group's current generation. Bumped on every membership change.
    pub generation: u32,
    /// What this member may consume now, topic by topic: the partitions of
    /// its assignment that it holds. One it holds but is no longer assigned
    /// is left out, which tells the member to release it.
    pub partitions: Vec<TopicPartitions>,
    /// Partitions this member is due at this generation but that another
    /// member has not released yet; they appear in `partitions` of a later
    /// answer. A member with `pending > 0` should heartbeat sooner.
    pub pending: u32,
}

/// Joins a group, or rejoins it after `UNKNOWN_MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    pub group: String,
    /// Empty for a new member; the coordinator picks the id.
    pub member_id: String,
    /// Static membership: a member joining with the instance id of a current
    /// member takes its place and its partitions, without a rebalance.
    pub instance_id: Option<String>,
    /// How long the coordinator waits for a heartbeat before it removes the
    /// member; within [`crate::limits::MIN_SESSION_TIMEOUT_MS`]..=
    /// [`crate::limits::MAX_SESSION_TIMEOUT_MS`].
    pub session_timeout_ms: u32,
    /// The topics the member consumes. Every member of a group consumes the
    /// same topics; the first member to join an empty group sets them.
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// The id to use in every later request of this member.
    pub member_id: String,
    /// How often to heartbeat: a third of the session timeout.
    pub heartbeat_interval_ms: u32,
    pub assignment: MemberAssignment,
}

/// Keeps a member alive and tells it its assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group: String,
    pub member_id: String,
    /// The generation whose assignment the member has applied: it consumes
    /// nothing outside that assignment and has committed what it released.
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub assignment: MemberAssignment,
}

/// Leaves a group at once, releasing the member's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    pub group: String,
    pub member_id: String,
}

/// Response body: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupResponse {}

/// A partition and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset to consume: one past the last record processed.
    pub offset: u64,
}

/// Stores a member's progress. All or nothing: the member must hold every
/// partition named, at the group's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffsetsRequest {
    pub group: String,
    pub member_id: String,
    pub generation: u32,
    pub offsets: Vec<PartitionOffset>,
}

/// Response body: empty; the offsets are durable under the broker's flush
/// policy when it arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOffsetsResponse {}

/// Reads a group's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOffsetsRequest {
    pub group: String,
    /// Only these topics; empty for every topic the group has offsets for.
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOffsetsResponse {
    /// One entry per partition with a committed offset, by topic then
    /// partition. A partition without one is absent.
    pub offsets: Vec<PartitionOffset>,
}

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Every member holds exactly its assignment.
    Stable,
    /// Some partitions wait for their previous holder to release them.
    Rebalancing,
}

impl GroupState {
    pub fn as_u8(self) -> u8 {
        match self {
            GroupState::Empty => 0,
            GroupState::Stable => 1,
            GroupState::Rebalancing => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<GroupState> {
        match v {
            0 => Some(GroupState::Empty),
            1 => Some(GroupState::Stable),
            2 => Some(GroupState::Rebalancing),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::Stable => "stable",
            GroupState::Rebalancing => "rebalancing",
        }
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupRequest {
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupResponse {
    pub group: String,
    pub state: GroupState,
    pub generation: u32,
    /// The topics the group consumes; empty when it has no members.
    pub topics: Vec<String>,
    pub members: Vec<MemberDescription>,
    /// Every partition of the group's topics and every partition with a
    /// committed offset, by topic then partition.
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    /// Milliseconds since the coordinator last heard from the member.
    pub idle_ms: u32,
    /// The partitions the member holds.
    pub partitions: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub topic: String,
    pub partition: u32,
    /// The member holding it; `None` while nobody does.
    pub holder: Option<String>,
    pub committed: Option<u64>,
    /// The partition's high watermark; lag is `end_offset - committed`.
    pub end_offset: u64,
}

/// Request body: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListGroupsRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// Every group the broker knows (with members or committed offsets), by id.
    pub groups: Vec<GroupSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub state: GroupState,
    pub generation: u32,
    pub members: u32,
}

impl Wire for TopicPartitions {
    const MIN_LEN: usize = 2 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        put_vec(buf, &self.partitions);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(TopicPartitions {
            topic: r.string()?,
            partitions: r.vec()?,
        })
    }
}

impl Wire for MemberAssignment {
    const MIN_LEN: usize = 4 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.generation);
        put_vec(buf, &self.partitions);
        buf.put_u32_le(self.pending);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(MemberAssignment {
            generation: r.u32()?,
            partitions: r.vec()?,
            pending: r.u32()?,
        })
    }
}

impl Wire for JoinGroupRequest {
    const MIN_LEN: usize = 2 + 2 + 1 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        put_str(buf, &self.member_id);
        put_option(buf, self.instance_id.as_ref());
        buf.put_u32_le(self.session_timeout_ms);
        put_vec(buf, &self.topics);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(JoinGroupRequest {
            group: r.string()?,
            member_id: r.string()?,
            instance_id: r.option()?,
            session_timeout_ms: r.u32()?,
            topics: r.vec()?,
        })
    }
}

impl Wire for JoinGroupResponse {
    const MIN_LEN: usize = 2 + 4 + MemberAssignment::MIN_LEN;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.member_id);
        buf.put_u32_le(self.heartbeat_interval_ms);
        self.assignment.encode(buf);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(JoinGroupResponse {
            member_id: r.string()?,
            heartbeat_interval_ms: r.u32()?,
            assignment: MemberAssignment::decode(r)?,
        })
    }
}

impl Wire for HeartbeatRequest {
    const MIN_LEN: usize = 2 + 2 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        put_str(buf, &self.member_id);
        buf.put_u32_le(self.generation);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(HeartbeatRequest {
            group: r.string()?,
            member_id: r.string()?,
            generation: r.u32()?,
        })
    }
}

impl Wire for HeartbeatResponse {
    const MIN_LEN: usize = MemberAssignment::MIN_LEN;

    fn encode(&self, buf: &mut BytesMut) {
        self.assignment.encode(buf);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(HeartbeatResponse {
            assignment: MemberAssignment::decode(r)?,
        })
    }
}

impl Wire for LeaveGroupRequest {
    const MIN_LEN: usize = 2 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        put_str(buf, &self.member_id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(LeaveGroupRequest {
            group: r.string()?,
            member_id: r.string()?,
        })
    }
}

impl Wire for PartitionOffset {
    const MIN_LEN: usize = 2 + 4 + 8;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.offset);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(PartitionOffset {
            topic: r.string()?,
            partition: r.u32()?,
            offset: r.u64()?,
        })
    }
}

impl Wire for CommitOffsetsRequest {
    const MIN_LEN: usize = 2 + 2 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        put_str(buf, &self.member_id);
        buf.put_u32_le(self.generation);
        put_vec(buf, &self.offsets);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(CommitOffsetsRequest {
            group: r.string()?,
            member_id: r.string()?,
            generation: r.u32()?,
            offsets: r.vec()?,
        })
    }
}

impl Wire for FetchOffsetsRequest {
    const MIN_LEN: usize = 2 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        put_vec(buf, &self.topics);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(FetchOffsetsRequest {
            group: r.string()?,
            topics: r.vec()?,
        })
    }
}

impl Wire for FetchOffsetsResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.offsets);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(FetchOffsetsResponse { offsets: r.vec()? })
    }
}

impl Wire for GroupState {
    const MIN_LEN: usize = 1;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(self.as_u8());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let v = r.u8()?;
        GroupState::from_u8(v).ok_or_else(|| {
            FrameError::Malformed(format!("group state {v} is not 0, 1 or 2").into())
        })
    }
}

impl Wire for DescribeGroupRequest {
    const MIN_LEN: usize = 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(DescribeGroupRequest { group: r.string()? })
    }
}

impl Wire for MemberDescription {
    const MIN_LEN: usize = 2 + 1 + 4 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.member_id);
        put_option(buf, self.instance_id.as_ref());
        buf.put_u32_le(self.session_timeout_ms);
        buf.put_u32_le(self.idle_ms);
        put_vec(buf, &self.partitions);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(MemberDescription {
            member_id: r.string()?,
            instance_id: r.option()?,
            session_timeout_ms: r.u32()?,
            idle_ms: r.u32()?,
            partitions: r.vec()?,
        })
    }
}

impl Wire for PartitionDescription {
    const MIN_LEN: usize = 2 + 4 + 1 + 1 + 8;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        buf.put_u32_le(self.partition);
        put_option(buf, self.holder.as_ref());
        put_option(buf, self.committed.as_ref());
        buf.put_u64_le(self.end_offset);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(PartitionDescription {
            topic: r.string()?,
            partition: r.u32()?,
            holder: r.option()?,
            committed: r.option()?,
            end_offset: r.u64()?,
        })
    }
}

impl Wire for DescribeGroupResponse {
    const MIN_LEN: usize = 2 + 1 + 4 + 4 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        self.state.encode(buf);
        buf.put_u32_le(self.generation);
        put_vec(buf, &self.topics);
        put_vec(buf, &self.members);
        put_vec(buf, &self.partitions);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(DescribeGroupResponse {
            group: r.string()?,
            state: GroupState::decode(r)?,
            generation: r.u32()?,
            topics: r.vec()?,
            members: r.vec()?,
            partitions: r.vec()?,
        })
    }
}

impl Wire for GroupSummary {
    const MIN_LEN: usize = 2 + 1 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.group);
        self.state.encode(buf);
        buf.put_u32_le(self.generation);
        buf.put_u32_le(self.members);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(GroupSummary {
            group: r.string()?,
            state: GroupState::decode(r)?,
            generation: r.u32()?,
            members: r.u32()?,
        })
    }
}

impl Wire for ListGroupsResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.groups);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListGroupsResponse { groups: r.vec()? })
    }
}

empty_body!(LeaveGroupResponse, CommitOffsetsResponse, ListGroupsRequest);
