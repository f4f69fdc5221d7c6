//! ForwardHello (key 15): the first request on a connection one node of a
//! cluster opens to another's client listener to forward its clients'
//! requests (SPEC.md 5.17).
//!
//! It exists so a forwarded request is never forwarded again: a node that
//! no longer leads the partition answers `NOT_LEADER` on such a connection,
//! where a client connection would be relayed once more, and two nodes
//! whose metadata disagree for a moment cannot bounce a request between
//! them.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_str, Reader, Wire};
use crate::frame::FrameError;

/// "I am node `node_id` of cluster `cluster_id`; what follows on this
/// connection I forward for my clients."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHelloRequest {
    pub node_id: u32,
    pub cluster_id: String,
}

/// Response body: empty; success is the `NONE` error code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardHelloResponse {}

empty_body!(ForwardHelloResponse);

impl Wire for ForwardHelloRequest {
    const MIN_LEN: usize = 4 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.node_id);
        put_str(buf, &self.cluster_id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ForwardHelloRequest {
            node_id: r.u32()?,
            cluster_id: r.string()?,
        })
    }
}
