//! Walking a chain of batches laid end to end in a byte buffer: picking the
//! batches a read serves, and validating a segment during recovery. Pure
//! functions over bytes, shared by the hot (mapping) and cold (file read)
//! paths.

use ringmq_protocol::batch::{verify, BatchHeader};

use super::error::{LogError, Result};
use super::index::Index;

/// What a read should serve from a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Serve `buf[start..end]`: whole, CRC-checked batches.
    Batches { start: usize, end: usize },
    /// Nothing to serve below `upper`.
    Empty,
    /// The buffer ends too early: read `len` bytes from buffer position `at`
    /// (whose batch starts at offset `offset`) and pick again.
    NeedMore { at: usize, offset: u64, len: usize },
}

/// Where a buffer lies and what the read asks for.
pub(crate) struct PickArgs {
    /// Base offset of the segment (for error messages).
    pub segment: u64,
    /// File position of `buf[0]`.
    pub buf_pos: u64,
    /// Offset of the batch starting at `buf[0]`.
    pub buf_offset: u64,
    /// `buf` reaches the end of the segment's data.
    pub complete: bool,
    pub from: u64,
    pub upper: u64,
    pub max_bytes: usize,
}

/// Skips the batches wholly below `from` by their headers, then takes whole
/// batches while they end at or below `upper` and fit `max_bytes` (the first
/// always fits). Every batch taken is CRC-checked; a bad first batch is an
/// error, a bad later one ends the pick (the next read reports it).
pub(crate) fn pick(buf: &[u8], a: &PickArgs) -> Result<Pick> {
    let corrupt =
        |at: usize, reason: String| LogError::corrupt(a.segment, a.buf_pos + at as u64, reason);
    let more = |at: usize, offset: u64, len: usize| Pick::NeedMore { at, offset, len };
    let mut pos = 0usize;
    let mut off = a.buf_offset;
    // Skip to the batch containing `from`.
    let first = loop {
        if pos >= buf.len() {
            if a.complete {
                return Err(corrupt(
                    pos,
                    format!("segment data ends before offset {}", a.from),
                ));
            }
            return Ok(more(pos, off, 0));
        }
        let h = match BatchHeader::parse(&buf[pos..]) {
            Ok(h) => h,
            Err(_) if !a.complete && buf.len() - pos < ringmq_protocol::batch::BATCH_HEADER_LEN => {
                return Ok(more(pos, off, 0))
            }
            Err(e) => return Err(corrupt(pos, e.to_string())),
        };
        if h.base_offset != off {
            return Err(corrupt(
                pos,
                format!(
                    "expected a batch at offset {off}, found offset {}",
                    h.base_offset
                ),
            ));
        }
        if h.next_offset() > a.from {
            break (pos, h);
        }
        pos += h.total_len();
        off = h.next_offset();
    };
    let (start, h0) = first;
    if h0.next_offset() > a.upper {
        return Ok(Pick::Empty);
    }
    let mut end = start;
    off = h0.base_offset;
    while end < buf.len() {
        let h = match verify(&buf[end..]) {
            Ok(h) => h,
            Err(e) => {
                if end == start {
                    let whole_missing = buf.len() - start < h0.total_len();
                    if whole_missing && !a.complete {
                        return Ok(more(start, off, h0.total_len().max(a.max_bytes)));
                    }
                    return Err(corrupt(start, e.to_string()));
                }
                break;
            }
        };
        if h.base_offset != off || h.next_offset() > a.upper {
            if end == start {
                return Err(corrupt(end, "batch offset changed under the read".into()));
            }
            break;
        }
        if end > start && end + h.total_len() - start > a.max_bytes {
            break;
        }
        end += h.total_len();
        off = h.next_offset();
    }
    if end == start {
        // The first batch starts in the buffer but does not end in it.
        if a.complete {
            return Err(corrupt(
                start,
                "batch runs past the end of the segment".into(),
            ));
        }
        return Ok(more(start, off, h0.total_len().max(a.max_bytes)));
    }
    Ok(Pick::Batches { start, end })
}

/// How far a recovery scan got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Position after the last valid batch.
    pub pos: u64,
    /// Offset after the last valid batch.
    pub next_offset: u64,
    pub max_timestamp: i64,
}

/// Validates batches from `pos` (where offset `offset` is expected) until the
/// first one that is torn, corrupt, or does not carry the expected offset,
/// adding index entries on the way.
pub(crate) fn scan_valid(
    data: &[u8],
    segment: u64,
    mut pos: u64,
    mut offset: u64,
    index: &mut Index,
    mut max_timestamp: i64,
) -> ScanEnd {
    while (pos as usize) < data.len() {
        let Ok(h) = verify(&data[pos as usize..]) else {
            break;
        };
        let rel = offset - segment;
        if h.base_offset != offset
            || rel > u64::from(u32::MAX)
            || h.next_offset() - segment > u64::from(u32::MAX)
        {
            break;
        }
        index.on_append(rel as u32, pos as u32);
        max_timestamp = max_timestamp.max(h.max_timestamp);
        pos += h.total_len() as u64;
        offset = h.next_offset();
    }
    ScanEnd {
        pos,
        next_offset: offset,
        max_timestamp,
    }
}
