//! Recovery at open: find out what each segment file holds, repair what a
//! crash left behind, and hand `PartitionLog::open` a consistent chain of
//! segments. Blocking code; `open` runs it on glommio's blocking pool.
//!
//! Rules:
//! - A segment whose index file is Sealed, matches the file length and
//!   passes a spot check is trusted without a scan (it was finalized: synced,
//!   trimmed). The last segment is trusted only after a clean shutdown
//!   (marker file present); otherwise it is scanned from its last index entry
//!   that still points at a batch with the right offset.
//! - A scan validates batch after batch (length, CRC, base offset == the
//!   expected next offset) and stops at the first that fails. What follows is
//!   zeroed (hole punched) and synced before the log takes appends, so stale
//!   bytes past a truncation point can never be read as batches later.
//! - Segments must chain (each base == the previous next offset). Where the
//!   chain breaks, the segments after the break are deleted: nothing in them
//!   can have been acknowledged, since a sync covers older segments first.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::Mmap;
use ringmq_protocol::batch::BatchHeader;

use super::disk;
use super::error::{LogError, Result};
use super::index::{self, Index, IndexEntry, IndexState, Trailer};
use super::scan::scan_valid;
use super::segment::{index_path, log_path, RecoveredSegment, SPARE_SUFFIX};

/// Name of the clean-shutdown marker in a partition directory.
pub(crate) const CLEAN_MARKER: &str = ".clean-shutdown";

/// What recovery did.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub segments: Vec<RecoveredSegment>,
    pub clean: bool,
    /// Non-zero bytes found and zeroed after the last valid batch.
    pub truncated_bytes: u64,
    pub scanned_segments: usize,
    pub removed_segments: usize,
}

fn ctx(what: &str, p: &Path) -> String {
    format!("{what} {}", p.display())
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| LogError::io(ctx("list", dir), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| LogError::io(ctx("list", dir), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".index.tmp") || name.ends_with(SPARE_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Reads an index file; `None` if missing or damaged.
fn read_index(path: &Path) -> Option<(Vec<IndexEntry>, Trailer)> {
    let buf = std::fs::read(path).ok()?;
    index::decode(&buf)
}

/// A Sealed index is trusted if it agrees with the file and its last entry
/// points at a batch header with the right offset.
fn trusted(file: &File, len: u64, base: u64, ix: &(Vec<IndexEntry>, Trailer)) -> bool {
    let (entries, t) = ix;
    if t.state != IndexState::Sealed || t.size != len || t.next_offset < base {
        return false;
    }
    if entries
        .iter()
        .any(|e| u64::from(e.pos) >= len || base + u64::from(e.rel) >= t.next_offset)
    {
        return false;
    }
    let (pos, rel) = entries
        .last()
        .map_or((0, 0), |e| (u64::from(e.pos), u64::from(e.rel)));
    if len == 0 {
        return t.next_offset == base;
    }
    let mut hdr = [0u8; ringmq_protocol::batch::BATCH_HEADER_LEN];
    if file.read_exact_at(&mut hdr, pos).is_err() {
        return false;
    }
    matches!(BatchHeader::parse(&hdr), Ok(h) if h.base_offset == base + rel)
}

/// Even after a clean shutdown the tail of the last segment (from its last
/// index entry, at most one interval and a batch) is CRC-checked: damage
/// there sends the segment through the scan, which truncates it.
fn tail_intact(file: &File, base: u64, ix: &(Vec<IndexEntry>, Trailer), interval: u32) -> bool {
    let (entries, t) = ix;
    let e = entries
        .last()
        .copied()
        .unwrap_or(IndexEntry { rel: 0, pos: 0 });
    let mut buf = vec![0u8; (t.size - u64::from(e.pos)) as usize];
    if file.read_exact_at(&mut buf, u64::from(e.pos)).is_err() {
        return false;
    }
    let mut scratch = Index::new(interval);
    let end = scan_valid(
        &buf,
        base,
        0,
        base + u64::from(e.rel),
        &mut scratch,
        i64::MIN,
    );
    end.pos == buf.len() as u64 && end.next_offset == t.next_offset
}

fn remove_segment(dir: &Path, base: u64) -> Result<()> {
    for p in [log_path(dir, base), index_path(dir, base)] {
        disk::remove_if_exists(&p).map_err(|e| LogError::io(ctx("remove", &p), e))?;
    }
    Ok(())
}

/// Scans one segment. Returns what is valid and how many garbage bytes
/// follow it. Does not modify the file.
fn scan_segment(
    file: &File,
    len: u64,
    base: u64,
    hint: Option<(Vec<IndexEntry>, Trailer)>,
    interval: u32,
) -> Result<(RecoveredSegment, Option<u64>)> {
    if len == 0 {
        let r = RecoveredSegment {
            base,
            size: 0,
            next_offset: base,
            max_timestamp: i64::MIN,
            index: Vec::new(),
        };
        return Ok((r, None));
    }
    // SAFETY: a read-only mapping of a file only this process writes (the
    // broker holds the data-dir lock); we read within its length.
    let map = unsafe { Mmap::map(file) }.map_err(|e| LogError::io("map for recovery", e))?;
    let data: &[u8] = &map;
    // Keep the prefix of hint entries that still point at a batch header
    // carrying the expected offset.
    let mut kept = Vec::new();
    let mut max_ts = i64::MIN;
    if let Some((entries, t)) = hint {
        for e in entries {
            let ok = (e.pos as usize) < data.len()
                && matches!(BatchHeader::parse(&data[e.pos as usize..]),
                            Ok(h) if h.base_offset == base + u64::from(e.rel));
            if !ok {
                break;
            }
            kept.push(e);
        }
        max_ts = t.max_timestamp;
    }
    let start = kept
        .last()
        .copied()
        .unwrap_or(IndexEntry { rel: 0, pos: 0 });
    let mut ix = Index::from_entries(interval, kept);
    let end = scan_valid(
        data,
        base,
        u64::from(start.pos),
        base + u64::from(start.rel),
        &mut ix,
        max_ts,
    );
    // If the batch at the entry we started from is bad, the scan ended at
    // that entry's position and this drops it.
    ix.truncate_pos(end.pos);
    let garbage = disk::nonzero_end(file, data, end.pos);
    let r = RecoveredSegment {
        base,
        size: end.pos,
        next_offset: end.next_offset,
        max_timestamp: end.max_timestamp,
        index: ix.entries().to_vec(),
    };
    Ok((r, garbage))
}

/// Recovers the partition directory `dir` (creating it if needed).
pub(crate) fn recover(dir: &Path, interval: u32) -> Result<Recovery> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(ctx("create", dir), e))?;
    let marker = dir.join(CLEAN_MARKER);
    let clean = marker.exists();
    let bases = list_segments(dir)?;
    let mut out = Recovery {
        segments: Vec::new(),
        clean,
        truncated_bytes: 0,
        scanned_segments: 0,
        removed_segments: 0,
    };
    let mut expected: Option<u64> = None;
    let mut i = 0;
    while i < bases.len() {
        let base = bases[i];
        if expected.is_some_and(|e| e != base) {
            break; // chain broken: drop this and later segments
        }
        let is_last = i + 1 == bases.len();
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(ctx("open", &path), e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io(ctx("stat", &path), e))?
            .len();
        let ix = read_index(&index_path(dir, base));
        let trust = ix.as_ref().filter(|ix| {
            (!is_last || clean)
                && trusted(&file, len, base, ix)
                && (!is_last || tail_intact(&file, base, ix, interval))
        });
        if let Some(ix) = trust {
            out.segments.push(RecoveredSegment {
                base,
                size: ix.1.size,
                next_offset: ix.1.next_offset,
                max_timestamp: ix.1.max_timestamp,
                index: ix.0.clone(),
            });
            expected = Some(ix.1.next_offset);
            i += 1;
            continue;
        }
        out.scanned_segments += 1;
        let (seg, garbage) = scan_segment(&file, len, base, ix, interval)?;
        let chains = bases
            .get(i + 1)
            .is_some_and(|next| *next == seg.next_offset);
        if !is_last && chains {
            // A sealed segment a crash caught before it was finalized.
            let t = Trailer {
                state: IndexState::Sealed,
                size: seg.size,
                next_offset: seg.next_offset,
                max_timestamp: seg.max_timestamp,
            };
            file.set_len(seg.size)
                .map_err(|e| LogError::io(ctx("trim", &path), e))?;
            file.sync_all()
                .map_err(|e| LogError::io(ctx("sync", &path), e))?;
            disk::write_index(&index_path(dir, base), &seg.index, &t)
                .map_err(|e| LogError::io(ctx("write index of", &path), e))?;
            expected = Some(seg.next_offset);
            out.segments.push(seg);
            i += 1;
            continue;
        }
        // The last segment (or where the chain ends): zero what follows the
        // last valid batch and make that durable before anything is appended.
        if let Some(g) = garbage {
            out.truncated_bytes += g - seg.size;
            disk::zero_range(&file, seg.size, len)
                .map_err(|e| LogError::io(ctx("zero tail of", &path), e))?;
        }
        // The hint written below lets the next recovery skip validating what
        // precedes its entries, so that data must be on disk first.
        file.sync_all()
            .map_err(|e| LogError::io(ctx("sync", &path), e))?;
        let t = Trailer {
            state: IndexState::Open,
            size: seg.size,
            next_offset: seg.next_offset,
            max_timestamp: seg.max_timestamp,
        };
        disk::write_index(&index_path(dir, base), &seg.index, &t)
            .map_err(|e| LogError::io(ctx("write index of", &path), e))?;
        out.segments.push(seg);
        i += 1;
        break;
    }
    for base in &bases[i..] {
        tracing::warn!(dir = %dir.display(), segment = base, "removing segment after a break in the offset chain");
        remove_segment(dir, *base)?;
        out.removed_segments += 1;
    }
    if clean {
        std::fs::remove_file(&marker).map_err(|e| LogError::io(ctx("remove", &marker), e))?;
    }
    if clean || out.removed_segments > 0 {
        disk::fsync_dir(dir).map_err(|e| LogError::io(ctx("fsync", dir), e))?;
    }
    Ok(out)
}

/// Writes the clean-shutdown marker durably.
pub(crate) fn write_clean_marker(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(CLEAN_MARKER);
    let f = File::create(&p)?;
    f.sync_all()?;
    disk::fsync_dir(dir)
}
