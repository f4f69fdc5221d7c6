//! Fetch (key 6): read batches of one partition from an offset, long-polling
//! until `min_bytes` are there or `max_wait_ms` passed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{put_bytes, put_str, Reader, Wire};
use crate::error_code::ErrorCode;
use crate::frame::{begin_frame, end_frame, FrameError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: u32,
    /// First offset wanted. The response starts with the batch that holds
    /// it, so it may also carry records before it, which the client skips.
    pub offset: u64,
    /// Soft cap on record bytes, clamped to [`crate::limits::MAX_FETCH_BYTES`].
    /// The first batch is returned whole even if it is larger, so a consumer
    /// always makes progress.
    pub max_bytes: u32,
    /// Answer as soon as this many record bytes are available...
    pub min_bytes: u32,
    /// ...or this much time passed, whichever comes first.
    pub max_wait_ms: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchResponse {
    /// Offset after the last record a consumer may read.
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// How long the client must wait before its next request on this
    /// connection: it went over a quota (SPEC.md 5.25). 0 = not throttled.
    pub throttle_ms: u32,
    /// Whole batches laid end to end (possibly none); iterate with
    /// [`crate::batch::batches`]. When decoded, a slice of the frame.
    pub records: Bytes,
}

impl FetchResponse {
    /// Writes a success frame up to and including the length of `records`,
    /// with the frame length counting them. The caller writes
    /// `self.records` right after, so segment bytes reach the socket
    /// without being copied into a new buffer.
    pub fn encode_head(&self, correlation_id: u32, buf: &mut BytesMut) {
        let start = begin_frame(buf);
        buf.put_u32_le(correlation_id);
        buf.put_u16_le(ErrorCode::None.as_u16());
        self.encode_fields(buf);
        end_frame(buf, start, self.records.len());
    }

    fn encode_fields(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.high_watermark);
        buf.put_u64_le(self.log_start_offset);
        buf.put_u32_le(self.throttle_ms);
        buf.put_u32_le(u32::try_from(self.records.len()).expect("records are shorter than 4 GiB"));
    }
}

impl Wire for FetchRequest {
    const MIN_LEN: usize = 2 + 4 + 8 + 4 * 3;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.offset);
        buf.put_u32_le(self.max_bytes);
        buf.put_u32_le(self.min_bytes);
        buf.put_u32_le(self.max_wait_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(FetchRequest {
            topic: r.string()?,
            partition: r.u32()?,
            offset: r.u64()?,
            max_bytes: r.u32()?,
            min_bytes: r.u32()?,
            max_wait_ms: r.u32()?,
        })
    }
}

impl Wire for FetchResponse {
    const MIN_LEN: usize = 8 + 8 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.high_watermark);
        buf.put_u64_le(self.log_start_offset);
        buf.put_u32_le(self.throttle_ms);
        put_bytes(buf, &self.records);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(FetchResponse {
            high_watermark: r.u64()?,
            log_start_offset: r.u64()?,
            throttle_ms: r.u32()?,
            records: r.bytes()?,
        })
    }
}
