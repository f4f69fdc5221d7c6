//! The record batch: the unit a producer sends, the broker stores and a
//! consumer fetches. The same bytes travel over the wire and lie on disk; the
//! broker only fills in `base_offset` and `leader_epoch`, which is why those
//! two fields sit before the CRC and are not covered by it.
//!
//! Layout (all integers little-endian; byte-level description in SPEC.md):
//!
//! ```text
//!  0  u64 base_offset      assigned by the broker (0 when sent)
//!  8  u32 batch_length     bytes that follow this field: total = 12 + batch_length
//! 12  u32 leader_epoch     assigned by the broker (0 when sent)
//! 16  u32 crc              CRC-32 (IEEE) of bytes 20..total
//! 20  u8  version          FORMAT_VERSION
//! 21  u8  attributes       must be 0 (no compression yet)
//! 22  i16 producer_epoch   -1 when not idempotent
//! 24  u32 record_count     >= 1
//! 28  i32 base_sequence    -1 when not idempotent
//! 32  i64 first_timestamp  ms since the Unix epoch
//! 40  i64 max_timestamp
//! 48  i64 producer_id      -1 when not idempotent
//! 56  records...
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint;

/// Size of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 56;
/// The only batch format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Largest batch the broker accepts (header included).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Smallest encoded record: length, attributes, timestamp and offset deltas,
/// key and value lengths, header count, one byte each.
const MIN_RECORD_LEN: usize = 7;
/// `producer_id` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;

const OFF_BASE_OFFSET: usize = 0;
const OFF_BATCH_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_CRC: usize = 16;
/// First byte covered by the CRC.
const CRC_START: usize = 20;
const OFF_VERSION: usize = 20;
const OFF_ATTRIBUTES: usize = 21;
const OFF_PRODUCER_EPOCH: usize = 22;
const OFF_RECORD_COUNT: usize = 24;
const OFF_BASE_SEQUENCE: usize = 28;
const OFF_FIRST_TIMESTAMP: usize = 32;
const OFF_MAX_TIMESTAMP: usize = 40;
const OFF_PRODUCER_ID: usize = 48;

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("batch length {0} is outside 44..={max}", max = MAX_BATCH_BYTES - 12)]
    BadLength(u32),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unsupported batch format version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported batch attributes {0:#04x}")]
    UnsupportedAttributes(u8),
    #[error("batch has no records")]
    Empty,
    #[error("{0} bytes after the batch where exactly one batch was expected")]
    TrailingBytes(usize),
    #[error("malformed record {index}: {reason}")]
    BadRecord { index: u32, reason: &'static str },
}

/// The fixed header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub leader_epoch: u32,
    pub crc: u32,
    pub version: u8,
    pub attributes: u8,
    pub producer_epoch: i16,
    pub record_count: u32,
    pub base_sequence: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` and checks what can be checked
    /// without the body: the length is in range, the version and attributes are
    /// known and the batch holds at least one record. The CRC is not checked
    /// here (see [`verify`]).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                have: buf.len(),
            });
        }
        let batch_length = u32_at(buf, OFF_BATCH_LENGTH);
        let total = 12 + batch_length as usize;
        if !(BATCH_HEADER_LEN..=MAX_BATCH_BYTES).contains(&total) {
            return Err(BatchError::BadLength(batch_length));
        }
        let h = BatchHeader {
            base_offset: u64_at(buf, OFF_BASE_OFFSET),
            batch_length,
            leader_epoch: u32_at(buf, OFF_LEADER_EPOCH),
            crc: u32_at(buf, OFF_CRC),
            version: buf[OFF_VERSION],
            attributes: buf[OFF_ATTRIBUTES],
            producer_epoch: i16::from_le_bytes([
                buf[OFF_PRODUCER_EPOCH],
                buf[OFF_PRODUCER_EPOCH + 1],
            ]),
            record_count: u32_at(buf, OFF_RECORD_COUNT),
            base_sequence: u32_at(buf, OFF_BASE_SEQUENCE) as i32,
            first_timestamp: u64_at(buf, OFF_FIRST_TIMESTAMP) as i64,
            max_timestamp: u64_at(buf, OFF_MAX_TIMESTAMP) as i64,
            producer_id: u64_at(buf, OFF_PRODUCER_ID) as i64,
        };
        if h.version != FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion(h.version));
        }
        if h.attributes != 0 {
            return Err(BatchError::UnsupportedAttributes(h.attributes));
        }
        if h.record_count == 0 {
            return Err(BatchError::Empty);
        }
        Ok(h)
    }

    /// Total size of the batch in bytes, header included.
    pub fn total_len(&self) -> usize {
        12 + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    /// Offset the next batch after this one starts at.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// The CRC a batch should carry: CRC-32 (IEEE) of everything after the CRC field.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[CRC_START..])
}

/// Parses the header of the batch that starts `buf`, checks that the whole
/// batch is present and that its CRC matches. Returns the header; the batch is
/// `buf[..header.total_len()]`.
pub fn verify(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    let total = h.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            have: buf.len(),
        });
    }
    let computed = compute_crc(&buf[..total]);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// Like [`verify`], for a buffer that must hold exactly one batch (a Produce
/// request's `batch` field): bytes after the batch are an error.
pub fn verify_one(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = verify(buf)?;
    match buf.len() - h.total_len() {
        0 => Ok(h),
        extra => Err(BatchError::TrailingBytes(extra)),
    }
}

/// The broker-assigned fields that [`stamp`] writes lie within a batch's
/// first `STAMPED_LEN` bytes.
pub const STAMPED_LEN: usize = OFF_LEADER_EPOCH + 4;

/// Writes the broker-assigned fields. Neither is covered by the CRC, so the
/// batch stays valid.
pub fn stamp(batch: &mut [u8], base_offset: u64, leader_epoch: u32) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_le_bytes());
}

/// One record header: a key and a value, both opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// A record as decoded from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Identity of an idempotent producer, written into the batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Builds one batch record by record. `finish` writes the header and the CRC.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(first_timestamp: i64) -> Self {
        Self::with_capacity(first_timestamp, 16 << 10)
    }

    pub fn with_capacity(first_timestamp: i64, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_HEADER_LEN));
        buf.put_bytes(0, BATCH_HEADER_LEN);
        BatchBuilder {
            buf,
            count: 0,
            first_timestamp,
            max_timestamp: first_timestamp,
        }
    }

    /// Records added so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if it were finished now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes one record with these fields adds to a batch (an upper bound),
    /// so a producer can decide to start a new batch before it overflows.
    pub fn record_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
        let body = 1
            + varint::MAX_LEN * 4
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + headers
                .iter()
                .map(|h| 2 * varint::MAX_LEN + h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>();
        varint::MAX_LEN + body
    }

    /// Appends one record. `timestamp` is in ms since the Unix epoch.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let mut body = [0u8; 4 * varint::MAX_LEN + 1];
        let mut n = 0;
        body[n] = 0; // record attributes
        n += 1;
        n += varint::put_i64(&mut body[n..], timestamp.wrapping_sub(self.first_timestamp));
        n += varint::put_u64(&mut body[n..], u64::from(self.count));
        n += varint::put_i64(&mut body[n..], key.map_or(-1, |k| k.len() as i64));
        let key_len = key.map_or(0, <[u8]>::len);
        let value_len = value.map_or(0, <[u8]>::len);
        let mut value_prefix = [0u8; varint::MAX_LEN];
        let vp = varint::put_i64(&mut value_prefix, value.map_or(-1, |v| v.len() as i64));
        let mut hdr_count = [0u8; varint::MAX_LEN];
        let hc = varint::put_u64(&mut hdr_count, headers.len() as u64);
        let headers_len: usize = headers
            .iter()
            .map(|h| {
                varint::len_u64(h.key.len() as u64)
                    + h.key.len()
                    + varint::len_i64(h.value.as_ref().map_or(-1, |v| v.len() as i64))
                    + h.value.as_ref().map_or(0, Bytes::len)
            })
            .sum();
        let record_len = n + key_len + vp + value_len + hc + headers_len;

        let mut len_prefix = [0u8; varint::MAX_LEN];
        let lp = varint::put_u64(&mut len_prefix, record_len as u64);
        self.buf.reserve(lp + record_len);
        self.buf.put_slice(&len_prefix[..lp]);
        self.buf.put_slice(&body[..n]);
        if let Some(k) = key {
            self.buf.put_slice(k);
        }
        self.buf.put_slice(&value_prefix[..vp]);
        if let Some(v) = value {
            self.buf.put_slice(v);
        }
        self.buf.put_slice(&hdr_count[..hc]);
        for h in headers {
            let mut tmp = [0u8; varint::MAX_LEN];
            let t = varint::put_u64(&mut tmp, h.key.len() as u64);
            self.buf.put_slice(&tmp[..t]);
            self.buf.put_slice(&h.key);
            let t = varint::put_i64(&mut tmp, h.value.as_ref().map_or(-1, |v| v.len() as i64));
            self.buf.put_slice(&tmp[..t]);
            if let Some(v) = &h.value {
                self.buf.put_slice(v);
            }
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Writes the header and CRC and returns the finished batch. Panics if no
    /// record was pushed (an empty batch is not a valid batch).
    pub fn finish(self, producer: Option<ProducerStamp>) -> Bytes {
        assert!(self.count > 0, "a batch needs at least one record");
        let mut buf = self.buf;
        let total = buf.len();
        let p = producer.unwrap_or(ProducerStamp {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: -1,
        });
        let h = &mut buf[..BATCH_HEADER_LEN];
        h[OFF_BATCH_LENGTH..OFF_BATCH_LENGTH + 4]
            .copy_from_slice(&((total - 12) as u32).to_le_bytes());
        h[OFF_VERSION] = FORMAT_VERSION;
        h[OFF_ATTRIBUTES] = 0;
        h[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&p.producer_epoch.to_le_bytes());
        h[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        h[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&p.base_sequence.to_le_bytes());
        h[OFF_FIRST_TIMESTAMP..OFF_FIRST_TIMESTAMP + 8]
            .copy_from_slice(&self.first_timestamp.to_le_bytes());
        h[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp.to_le_bytes());
        h[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&p.producer_id.to_le_bytes());
        let crc = compute_crc(&buf);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        buf.freeze()
    }
}

/// Decodes every record of a verified batch. `batch` must be exactly one
/// batch (as sliced by [`verify`]); the records must fill it exactly.
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    let h = verify(batch)?;
    let body = batch.slice(BATCH_HEADER_LEN..h.total_len());
    // record_count is untrusted: never reserve more than the body could hold.
    let mut out = Vec::with_capacity((h.record_count as usize).min(body.len() / MIN_RECORD_LEN));
    let mut pos = 0usize;
    for index in 0..h.record_count {
        let bad = |reason| BatchError::BadRecord { index, reason };
        let (len, n) = varint::get_u64(&body[pos..]).ok_or(bad("record length"))?;
        pos += n;
        let end = pos
            .checked_add(usize::try_from(len).map_err(|_| bad("record length"))?)
            .filter(|e| *e <= body.len())
            .ok_or(bad("record overruns the batch"))?;
        let rec = &body[..end];
        if pos >= end {
            return Err(bad("empty record"));
        }
        pos += 1; // record attributes
        let (ts_delta, n) = varint::get_i64(&rec[pos..]).ok_or(bad("timestamp delta"))?;
        pos += n;
        let (off_delta, n) = varint::get_u64(&rec[pos..]).ok_or(bad("offset delta"))?;
        pos += n;
        let key = take_opt(&body, rec, &mut pos).ok_or(bad("key"))?;
        let value = take_opt(&body, rec, &mut pos).ok_or(bad("value"))?;
        let (hcount, n) = varint::get_u64(&rec[pos..]).ok_or(bad("header count"))?;
        pos += n;
        let mut headers = Vec::new();
        for _ in 0..hcount {
            let (klen, n) = varint::get_u64(&rec[pos..]).ok_or(bad("header key"))?;
            pos += n;
            let kend = pos
                .checked_add(usize::try_from(klen).map_err(|_| bad("header key"))?)
                .filter(|e| *e <= end)
                .ok_or(bad("header key"))?;
            let hkey = body.slice(pos..kend);
            pos = kend;
            let hval = take_opt(&body, rec, &mut pos).ok_or(bad("header value"))?;
            headers.push(Header {
                key: hkey,
                value: hval,
            });
        }
        if pos != end {
            return Err(bad("record length does not match its fields"));
        }
        out.push(Record {
            offset: h.base_offset.wrapping_add(off_delta),
            timestamp: h.first_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
        });
    }
    if pos != body.len() {
        return Err(BatchError::BadRecord {
            index: h.record_count,
            reason: "bytes left after the last record",
        });
    }
    Ok(out)
}

/// Reads a zigzag length (-1 = absent) and that many bytes from `rec`.
fn take_opt(body: &Bytes, rec: &[u8], pos: &mut usize) -> Option<Option<Bytes>> {
    let (len, n) = varint::get_i64(rec.get(*pos..)?)?;
    *pos += n;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len).filter(|e| *e <= rec.len())?;
    let out = body.slice(*pos..end);
    *pos = end;
    Some(Some(out))
}

/// Iterates over the batches laid end to end in `buf` (a fetch response's
/// record set or a stretch of a segment), verifying each one.
pub fn batches(buf: &Bytes) -> impl Iterator<Item = Result<Bytes, BatchError>> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        match verify(&buf[pos..]) {
            Ok(h) => {
                let b = buf.slice(pos..pos + h.total_len());
                pos += h.total_len();
                Some(Ok(b))
            }
            Err(e) => {
                pos = buf.len();
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut b = BatchBuilder::new(1_000);
        b.push(1_000, Some(b"k1"), Some(b"hello"), &[]);
        b.push(
            1_005,
            None,
            Some(b""),
            &[Header {
                key: Bytes::from_static(b"h"),
                value: None,
            }],
        );
        b.push(999, Some(b""), None, &[]);
        b.finish(None)
    }

    #[test]
    fn round_trip() {
        let mut raw = sample().to_vec();
        stamp(&mut raw, 42, 7);
        let batch = Bytes::from(raw);
        let h = verify(&batch).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.leader_epoch, 7);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(h.producer_id, NO_PRODUCER_ID);
        let recs = decode_records(&batch).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].offset, 42);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(recs[0].value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp, 1_005);
        assert_eq!(recs[1].headers.len(), 1);
        assert_eq!(recs[2].value, None);
        assert_eq!(recs[2].timestamp, 999);
    }

    #[test]
    fn crc_catches_a_flipped_bit_anywhere_it_covers() {
        let batch = sample();
        for i in CRC_START..batch.len() {
            let mut raw = batch.to_vec();
            raw[i] ^= 0x10;
            assert!(verify(&raw).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn verify_one_refuses_trailing_bytes() {
        let mut raw = sample().to_vec();
        assert!(verify_one(&raw).is_ok());
        raw.push(0);
        assert_eq!(verify_one(&raw), Err(BatchError::TrailingBytes(1)));
    }

    #[test]
    fn truncated_is_an_error() {
        let batch = sample();
        for n in 0..batch.len() {
            assert!(verify(&batch[..n]).is_err());
        }
    }

    #[test]
    fn producer_stamp_is_written() {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(b"x"), &[]);
        let batch = b.finish(Some(ProducerStamp {
            producer_id: 9,
            producer_epoch: 2,
            base_sequence: 100,
        }));
        let h = verify(&batch).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (9, 2, 100)
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data: Vec<u8>) {
            let b = Bytes::from(data);
            let _ = verify(&b);
            let _ = decode_records(&b);
            for r in batches(&b) { let _ = r; }
        }

        #[test]
        fn decoding_a_corrupted_valid_batch_never_panics(pos in 0usize..200, val: u8) {
            let mut raw = sample().to_vec();
            let i = pos % raw.len();
            raw[i] = val;
            // Fix the CRC so the record decoder sees the damage.
            let crc = compute_crc(&raw);
            raw[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
            let _ = decode_records(&Bytes::from(raw));
        }
    }
}
