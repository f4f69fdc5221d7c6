//! ReplicaFetch (key 16): a follower node copying a partition from its
//! leader (SPEC.md 5.19). Sent only on a connection that began with
//! ForwardHello, so the leader knows which node is asking.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{put_bytes, put_str, Reader, Wire};
use crate::error_code::ErrorCode;
use crate::frame::{begin_frame, end_frame, FrameError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    /// The follower's node id (must be the ForwardHello's).
    pub replica: u32,
    pub topic: String,
    pub partition: u32,
    /// The leader epoch the follower believes current; a leader at another
    /// epoch refuses (`STALE_LEADER_EPOCH` or `NOT_LEADER`).
    pub leader_epoch: u32,
    /// The follower's log end: everything below it, it has.
    pub fetch_offset: u64,
    /// Leader epoch of the follower's last batch, `-1` with an empty log.
    pub last_fetched_epoch: i64,
    pub max_bytes: u32,
    pub max_wait_ms: u32,
}

/// Where the leader's history of an epoch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: u32,
    pub end_offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    /// The partition's high watermark on the leader.
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Set when the follower's log diverged from the leader's: the
    /// follower truncates to `end_offset` (or less, per its own history of
    /// `epoch`) and fetches again. `records` is then empty.
    pub diverging: Option<EpochEnd>,
    /// Whole batches from `fetch_offset` on, as the leader stored them.
    pub records: Bytes,
}

impl ReplicaFetchResponse {
    /// Like [`crate::FetchResponse::encode_head`]: the frame up to the
    /// records, which the caller writes from where they lie.
    pub fn encode_head(&self, correlation_id: u32, buf: &mut BytesMut) {
        let start = begin_frame(buf);
        buf.put_u32_le(correlation_id);
        buf.put_u16_le(ErrorCode::None.as_u16());
        self.encode_fields(buf);
        buf.put_u32_le(u32::try_from(self.records.len()).expect("records are shorter than 4 GiB"));
        end_frame(buf, start, self.records.len());
    }

    fn encode_fields(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.high_watermark);
        buf.put_u64_le(self.log_start_offset);
        match self.diverging {
            Some(d) => {
                buf.put_u8(1);
                buf.put_u32_le(d.epoch);
                buf.put_u64_le(d.end_offset);
            }
            None => {
                buf.put_u8(0);
                buf.put_u32_le(0);
                buf.put_u64_le(0);
            }
        }
    }
}

impl Wire for ReplicaFetchRequest {
    const MIN_LEN: usize = 4 + 2 + 4 + 4 + 8 + 8 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.replica);
        put_str(buf, &self.topic);
        buf.put_u32_le(self.partition);
        buf.put_u32_le(self.leader_epoch);
        buf.put_u64_le(self.fetch_offset);
        buf.put_i64_le(self.last_fetched_epoch);
        buf.put_u32_le(self.max_bytes);
        buf.put_u32_le(self.max_wait_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ReplicaFetchRequest {
            replica: r.u32()?,
            topic: r.string()?,
            partition: r.u32()?,
            leader_epoch: r.u32()?,
            fetch_offset: r.u64()?,
            last_fetched_epoch: r.i64()?,
            max_bytes: r.u32()?,
            max_wait_ms: r.u32()?,
        })
    }
}

impl Wire for ReplicaFetchResponse {
    const MIN_LEN: usize = 8 + 8 + 1 + 4 + 8 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        self.encode_fields(buf);
        put_bytes(buf, &self.records);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let high_watermark = r.u64()?;
        let log_start_offset = r.u64()?;
        let flag = r.u8()?;
        let (epoch, end_offset) = (r.u32()?, r.u64()?);
        let diverging = match flag {
            0 => None,
            1 => Some(EpochEnd { epoch, end_offset }),
            f => {
                return Err(FrameError::Malformed(
                    format!("diverging flag {f} is neither 0 nor 1").into(),
                ))
            }
        };
        Ok(ReplicaFetchResponse {
            high_watermark,
            log_start_offset,
            diverging,
            records: r.bytes()?,
        })
    }
}
