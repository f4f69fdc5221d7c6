//! InitProducerId (key 17): an idempotent producer asks for an id (SPEC.md
//! 5.20) before its first batch, and stamps every batch with it, its epoch
//! and a per-partition sequence.

use bytes::{BufMut, BytesMut};

use crate::codec::{Reader, Wire};
use crate::frame::FrameError;

/// Request body: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitProducerIdRequest {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    /// Unique in the cluster; ≥ 0.
    pub producer_id: i64,
    pub producer_epoch: i16,
}

empty_body!(InitProducerIdRequest);

impl Wire for InitProducerIdResponse {
    const MIN_LEN: usize = 8 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_i64_le(self.producer_id);
        buf.put_i16_le(self.producer_epoch);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(InitProducerIdResponse {
            producer_id: r.i64()?,
            producer_epoch: r.i16()?,
        })
    }
}
