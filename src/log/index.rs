//! The sparse offset index of one segment: one entry per
//! `index_interval_bytes` of batches, mapping an offset (relative to the
//! segment base) to the byte position of the batch that starts there. Reads
//! binary-search it and walk batch headers from the entry found.
//!
//! On disk (`<base>.index`), all little-endian:
//!
//! ```text
//! magic "RMQIDX01" | u32 count | count × (u32 rel_offset, u32 position)
//! | u8 state | 3 × 0 | u64 segment_size | u64 next_offset | i64 max_timestamp
//! | u32 crc32 of everything before it
//! ```
//!
//! `state` Sealed means the segment file is complete: `segment_size` bytes of
//! batches ending at `next_offset`. Open means the file is only a hint for the
//! active segment: its entries are starting points for the recovery scan and
//! are each checked against the data before use.

const MAGIC: &[u8; 8] = b"RMQIDX01";
const TRAILER_LEN: usize = 4 + 8 + 8 + 8 + 4;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub rel: u32,
    /// Byte position of the batch in the segment file.
    pub pos: u32,
}

/// In-memory sparse index of one segment.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    entries: Vec<IndexEntry>,
    interval: u64,
}

impl Index {
    pub fn new(interval: u32) -> Self {
        Index {
            entries: Vec::new(),
            interval: u64::from(interval),
        }
    }

    pub fn from_entries(interval: u32, entries: Vec<IndexEntry>) -> Self {
        Index {
            entries,
            interval: u64::from(interval),
        }
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Called for every batch appended at `pos`; adds an entry when the batch
    /// starts at least one interval after the previous entry (position 0 is
    /// an implicit entry).
    pub fn on_append(&mut self, rel: u32, pos: u32) {
        let last = self.entries.last().map_or(0, |e| u64::from(e.pos));
        if u64::from(pos) >= last + self.interval {
            self.entries.push(IndexEntry { rel, pos });
        }
    }

    /// The entry with the greatest relative offset `<= rel`, or the segment
    /// start.
    pub fn lookup(&self, rel: u64) -> IndexEntry {
        let i = self.entries.partition_point(|e| u64::from(e.rel) <= rel);
        if i == 0 {
            IndexEntry { rel: 0, pos: 0 }
        } else {
            self.entries[i - 1]
        }
    }

    /// Drops every entry at or after byte `pos`.
    pub fn truncate_pos(&mut self, pos: u64) {
        let i = self.entries.partition_point(|e| u64::from(e.pos) < pos);
        self.entries.truncate(i);
    }
}

/// Whether an index file describes a complete segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexState {
    Open = 0,
    Sealed = 1,
}

/// The summary stored after the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub state: IndexState,
    pub size: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
}

pub(crate) fn encode(entries: &[IndexEntry], t: &Trailer) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + entries.len() * 8 + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.rel.to_le_bytes());
        out.extend_from_slice(&e.pos.to_le_bytes());
    }
    out.extend_from_slice(&[t.state as u8, 0, 0, 0]);
    out.extend_from_slice(&t.size.to_le_bytes());
    out.extend_from_slice(&t.next_offset.to_le_bytes());
    out.extend_from_slice(&t.max_timestamp.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn le_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

/// Decodes an index file. `None` when it is damaged in any way (bad magic,
/// length, CRC, or entries that are not strictly increasing).
pub(crate) fn decode(buf: &[u8]) -> Option<(Vec<IndexEntry>, Trailer)> {
    if buf.len() < 12 + TRAILER_LEN || &buf[..8] != MAGIC {
        return None;
    }
    let count = le_u32(&buf[8..])? as usize;
    if buf.len() != 12 + count.checked_mul(8)? + TRAILER_LEN {
        return None;
    }
    let body_end = buf.len() - 4;
    if crc32fast::hash(&buf[..body_end]) != le_u32(&buf[body_end..])? {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let at = 12 + i * 8;
        let e = IndexEntry {
            rel: le_u32(&buf[at..])?,
            pos: le_u32(&buf[at + 4..])?,
        };
        if let Some(prev) = entries.last() {
            let prev: &IndexEntry = prev;
            if e.rel <= prev.rel || e.pos <= prev.pos {
                return None;
            }
        }
        entries.push(e);
    }
    let t = &buf[12 + count * 8..];
    let state = match t[0] {
        0 => IndexState::Open,
        1 => IndexState::Sealed,
        _ => return None,
    };
    Some((
        entries,
        Trailer {
            state,
            size: le_u64(&t[4..])?,
            next_offset: le_u64(&t[12..])?,
            max_timestamp: le_u64(&t[20..])? as i64,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_floor_entry() {
        let mut ix = Index::new(100);
        ix.on_append(0, 0);
        ix.on_append(3, 60);
        ix.on_append(5, 120);
        ix.on_append(9, 200);
        ix.on_append(12, 230);
        assert_eq!(ix.entries().len(), 2);
        assert_eq!(ix.lookup(0), IndexEntry { rel: 0, pos: 0 });
        assert_eq!(ix.lookup(7), IndexEntry { rel: 5, pos: 120 });
        assert_eq!(ix.lookup(100), IndexEntry { rel: 12, pos: 230 });
        ix.truncate_pos(230);
        assert_eq!(ix.lookup(100), IndexEntry { rel: 5, pos: 120 });
    }

    #[test]
    fn file_round_trip_and_damage() {
        let e = vec![
            IndexEntry { rel: 4, pos: 4096 },
            IndexEntry { rel: 9, pos: 9000 },
        ];
        let t = Trailer {
            state: IndexState::Sealed,
            size: 10_000,
            next_offset: 77,
            max_timestamp: -5,
        };
        let buf = encode(&e, &t);
        assert_eq!(decode(&buf), Some((e, t)));
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 1;
            assert_eq!(decode(&b), None, "flip at {i}");
        }
        assert_eq!(decode(&buf[..buf.len() - 1]), None);
    }
}
