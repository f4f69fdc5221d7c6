//! Produce (key 5): append one record batch to one partition.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{put_str, Reader, Wire};
use crate::frame::{begin_frame, end_frame, FrameError};

/// When the broker answers a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// Wire `0`: the broker sends no response at all, not even an error.
    None,
    /// Wire `1`: after the leader appended the batch.
    Leader,
    /// Wire `-1`: after every in-sync replica has the batch.
    All,
}

impl Acks {
    pub fn as_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    pub fn from_i8(v: i8) -> Option<Acks> {
        match v {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: u32,
    pub acks: Acks,
    /// How long the broker may wait for replicas (acks=all) before answering
    /// `REQUEST_TIMED_OUT`.
    pub timeout_ms: u32,
    /// Exactly one record batch (see [`crate::batch`]). Decoding does not
    /// verify it: the owning shard does, answering `CORRUPT_BATCH`. When
    /// decoded, a slice of the frame (no copy).
    pub batch: Bytes,
}

impl ProduceRequest {
    /// Writes the whole frame except the batch bytes, with lengths that count
    /// them: the caller sends `self.batch` right after, without copying it.
    pub fn encode_head(&self, correlation_id: u32, buf: &mut BytesMut) {
        let start = begin_frame(buf);
        buf.put_u16_le(ApiKey::Produce.as_u16());
        buf.put_u16_le(ApiKey::Produce.max_version());
        buf.put_u32_le(correlation_id);
        self.encode_fields(buf);
        end_frame(buf, start, self.batch.len());
    }

    /// Checks that `batch` is exactly one well-formed batch with a matching
    /// CRC (see [`crate::batch::verify_one`]); on error answer
    /// `ErrorCode::from(&err)`, which is `CORRUPT_BATCH` or `MESSAGE_TOO_LARGE`.
    pub fn verify_batch(&self) -> Result<crate::batch::BatchHeader, crate::batch::BatchError> {
        crate::batch::verify_one(&self.batch)
    }

    fn encode_fields(&self, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        buf.put_u32_le(self.partition);
        buf.put_i8(self.acks.as_i8());
        buf.put_u32_le(self.timeout_ms);
        buf.put_u32_le(u32::try_from(self.batch.len()).expect("a batch is shorter than 4 GiB"));
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Offset assigned to the first record of the batch.
    pub base_offset: u64,
    /// First offset still in the partition (retention moves it up).
    pub log_start_offset: u64,
    /// How long the client must wait before its next request on this
    /// connection: it went over a quota (SPEC.md 5.25). 0 = not throttled.
    pub throttle_ms: u32,
}

impl Wire for ProduceRequest {
    const MIN_LEN: usize = 2 + 4 + 1 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        self.encode_fields(buf);
        buf.put_slice(&self.batch);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ProduceRequest {
            topic: r.string()?,
            partition: r.u32()?,
            acks: Acks::from_i8(r.i8()?)
                .ok_or(FrameError::Malformed("acks must be 0, 1 or -1".into()))?,
            timeout_ms: r.u32()?,
            batch: r.bytes()?,
        })
    }
}

impl Wire for ProduceResponse {
    const MIN_LEN: usize = 20;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.base_offset);
        buf.put_u64_le(self.log_start_offset);
        buf.put_u32_le(self.throttle_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ProduceResponse {
            base_offset: r.u64()?,
            log_start_offset: r.u64()?,
            throttle_ms: r.u32()?,
        })
    }
}
