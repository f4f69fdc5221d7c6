//! Metadata (key 1): the brokers of the cluster and, per topic, who leads and
//! who replicates each partition. Clients route produce and fetch with it.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_option, put_str, put_vec, Reader, Wire};
use crate::error_code::ErrorCode;
use crate::frame::FrameError;

/// `leader` of a partition that has none right now.
pub const NO_LEADER: u32 = u32::MAX;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataRequest {
    /// Topics to describe; `None` means every topic.
    pub topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerMetadata>,
    pub topics: Vec<TopicMetadata>,
}

/// Where to reach one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// `NONE`, or why this topic could not be described (e.g.
    /// `UNKNOWN_TOPIC` for a name asked for that does not exist); then
    /// `partitions` is empty.
    pub error_code: ErrorCode,
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// Node id of the leader, or [`NO_LEADER`].
    pub leader: u32,
    /// Bumped on every leader change; fences an old leader.
    pub leader_epoch: u32,
    /// Node ids holding a replica, preferred leader first.
    pub replicas: Vec<u32>,
    /// Node ids of the replicas that are in sync.
    pub isr: Vec<u32>,
}

impl Wire for MetadataRequest {
    const MIN_LEN: usize = 1;

    fn encode(&self, buf: &mut BytesMut) {
        put_option(buf, self.topics.as_ref());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(MetadataRequest {
            topics: r.option()?,
        })
    }
}

impl Wire for BrokerMetadata {
    const MIN_LEN: usize = 4 + 2 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.node_id);
        put_str(buf, &self.host);
        buf.put_u16_le(self.port);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(BrokerMetadata {
            node_id: r.u32()?,
            host: r.string()?,
            port: r.u16()?,
        })
    }
}

impl Wire for PartitionMetadata {
    const MIN_LEN: usize = 4 * 3 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.partition);
        buf.put_u32_le(self.leader);
        buf.put_u32_le(self.leader_epoch);
        put_vec(buf, &self.replicas);
        put_vec(buf, &self.isr);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(PartitionMetadata {
            partition: r.u32()?,
            leader: r.u32()?,
            leader_epoch: r.u32()?,
            replicas: r.vec()?,
            isr: r.vec()?,
        })
    }
}

impl Wire for TopicMetadata {
    const MIN_LEN: usize = 2 + 2 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
        buf.put_u16_le(self.error_code.as_u16());
        put_vec(buf, &self.partitions);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(TopicMetadata {
            name: r.string()?,
            error_code: ErrorCode::from_u16(r.u16()?),
            partitions: r.vec()?,
        })
    }
}

impl Wire for MetadataResponse {
    const MIN_LEN: usize = 8;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.brokers);
        put_vec(buf, &self.topics);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(MetadataResponse {
            brokers: r.vec()?,
            topics: r.vec()?,
        })
    }
}
