//! ListOffsets (key 7): turn "earliest", "latest" or a timestamp into an
//! offset of one partition.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_str, Reader, Wire};
use crate::frame::FrameError;

/// Which offset to look up. On the wire an `i64`: `-2`, `-1`, or a
/// timestamp `>= 0`; anything below `-2` is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// Wire `-2`: the log start offset.
    Earliest,
    /// Wire `-1`: the high watermark (the offset the next readable record
    /// will get).
    Latest,
    /// Ms since the Unix epoch: the first offset of the first batch whose
    /// `max_timestamp` is at or after it, or the high watermark if none is.
    /// A broker may answer `INVALID_REQUEST` if it cannot look up by time.
    Timestamp(i64),
}

impl OffsetSpec {
    pub fn as_i64(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }

    pub fn from_i64(v: i64) -> Option<OffsetSpec> {
        match v {
            -2 => Some(OffsetSpec::Earliest),
            -1 => Some(OffsetSpec::Latest),
            t if t >= 0 => Some(OffsetSpec::Timestamp(t)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topic: String,
    pub partition: u32,
    pub spec: OffsetSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    pub offset: u64,
}

impl Wire for ListOffsetsRequest {
    const MIN_LEN: usize = 2 + 4 + 8;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        buf.put_u32_le(self.partition);
        buf.put_i64_le(self.spec.as_i64());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListOffsetsRequest {
            topic: r.string()?,
            partition: r.u32()?,
            spec: OffsetSpec::from_i64(r.i64()?)
                .ok_or(FrameError::Malformed("offset spec below -2".into()))?,
        })
    }
}

impl Wire for ListOffsetsResponse {
    const MIN_LEN: usize = 8;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.offset);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListOffsetsResponse { offset: r.u64()? })
    }
}
