//! Topic administration: CreateTopic (key 2), DeleteTopic (key 3) and
//! ListTopics (key 4).

use bytes::{BufMut, BytesMut};

use crate::codec::{put_str, put_vec, Reader, Wire};
use crate::frame::FrameError;

/// Creates a topic. The broker checks the name
/// ([`crate::limits::validate_topic_name`]), `1..=MAX_PARTITIONS`
/// partitions and a replication factor the cluster can place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    pub replication: u16,
}

/// Response body: empty; success is the `NONE` error code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTopicResponse {}

/// Deletes a topic and all its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    pub name: String,
}

/// Response body: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteTopicResponse {}

/// Request body: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTopicsRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTopicsResponse {
    pub topics: Vec<TopicInfo>,
}

/// One topic as ListTopics reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    pub replication: u16,
}

empty_body!(CreateTopicResponse, DeleteTopicResponse, ListTopicsRequest);

impl Wire for CreateTopicRequest {
    const MIN_LEN: usize = 2 + 4 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
        buf.put_u32_le(self.partitions);
        buf.put_u16_le(self.replication);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(CreateTopicRequest {
            name: r.string()?,
            partitions: r.u32()?,
            replication: r.u16()?,
        })
    }
}

impl Wire for DeleteTopicRequest {
    const MIN_LEN: usize = 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(DeleteTopicRequest { name: r.string()? })
    }
}

impl Wire for TopicInfo {
    const MIN_LEN: usize = 2 + 4 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
        buf.put_u32_le(self.partitions);
        buf.put_u16_le(self.replication);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(TopicInfo {
            name: r.string()?,
            partitions: r.u32()?,
            replication: r.u16()?,
        })
    }
}

impl Wire for ListTopicsResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.topics);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListTopicsResponse { topics: r.vec()? })
    }
}
