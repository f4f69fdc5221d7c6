//! What the log derives from its batch headers and keeps beside the
//! segments: the leader-epoch cache (`leader-epochs`) and producer
//! snapshots (`producers-<covered>.snapshot`, the newest few). This module
//! loads them at open, checks them against the recovered log, and brings
//! them up to date by scanning the headers of the batches after what they
//! cover; it also rebuilds the producer state after a truncation, from the
//! newest snapshot below it. Blocking code, run on glommio's blocking pool.
//!
//! Every file says which log end it describes (`covered`). Files are
//! written in a sync round after the data below `covered` is durable (see
//! `PartitionLog`); before a truncation rewrites the log, the epoch file and
//! the snapshots past the truncation point are deleted. So a file never
//! describes batches the log no longer has, except a tail a lost write cut
//! off, which is dropped here. A missing or damaged file costs a longer
//! scan, never a wrong answer.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringmq_protocol::batch::{BatchHeader, BATCH_HEADER_LEN};

use super::disk;
use super::epochs::{EpochCache, EPOCHS_FILE, MAX_ENTRIES};
use super::error::{LogError, Result};
use super::index::IndexEntry;
use super::producers::{ProducerLimits, ProducerState, MAX_SNAPSHOT_BYTES};
use super::segment::{log_path, RecoveredSegment};

/// Largest epoch file worth reading.
const MAX_EPOCHS_BYTES: u64 = (8 + 8 + 4 + MAX_ENTRIES * 12 + 4) as u64;

/// Bytes read at once while walking batch headers.
const SCAN_CHUNK: usize = 64 << 10;

const SNAPSHOT_PREFIX: &str = "producers-";
const SNAPSHOT_SUFFIX: &str = ".snapshot";

/// Producer snapshots kept: one per roll, so a truncation within the last
/// few segments replays at most about a segment.
const KEEP_SNAPSHOTS: usize = 4;

pub(crate) fn snapshot_name(covered: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{covered:020}{SNAPSHOT_SUFFIX}")
}

/// The `covered` offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let covered = name
            .strip_prefix(SNAPSHOT_PREFIX)
            .and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX))
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        out.extend(covered);
    }
    out.sort_unstable();
    Ok(out)
}

/// The newest readable snapshot covering at most `limit`.
fn newest_snapshot(
    dir: &Path,
    all: &[u64],
    limit: u64,
    limits: ProducerLimits,
) -> Option<(ProducerState, u64)> {
    all.iter().rev().filter(|c| **c <= limit).find_map(|c| {
        let buf = read_bounded(&dir.join(snapshot_name(*c)), MAX_SNAPSHOT_BYTES)?;
        ProducerState::decode(&buf, limits).filter(|(_, covered)| covered == c)
    })
}

fn remove_snapshots_above(dir: &Path, all: &[u64], offset: u64) -> std::io::Result<()> {
    for c in all.iter().filter(|c| **c > offset) {
        disk::remove_if_exists(&dir.join(snapshot_name(*c)))?;
    }
    Ok(())
}

/// The stretch of one segment file a header scan walks.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub path: PathBuf,
    /// Base offset of the segment (for error messages).
    pub base: u64,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// A batch boundary to start from: file position and its offset.
    pub pos: u64,
    pub offset: u64,
}

/// The floor entry of a sparse index for `offset` (the segment start if
/// none).
fn floor_entry(entries: &[IndexEntry], base: u64, offset: u64) -> (u64, u64) {
    let rel = offset.saturating_sub(base);
    let i = entries.partition_point(|e| u64::from(e.rel) <= rel);
    match i.checked_sub(1).map(|i| entries[i]) {
        Some(e) => (u64::from(e.pos), base + u64::from(e.rel)),
        None => (0, base),
    }
}

/// The spans of recovered segments holding batches at or after `from`.
pub(crate) fn spans_of_recovered(dir: &Path, segs: &[RecoveredSegment], from: u64) -> Vec<Span> {
    segs.iter()
        .filter(|s| s.next_offset > from)
        .map(|s| {
            let (pos, offset) = floor_entry(&s.index, s.base, from);
            Span {
                path: log_path(dir, s.base),
                base: s.base,
                size: s.size,
                pos,
                offset,
            }
        })
        .collect()
}

/// Calls `f` with the header of every batch whose base offset lies in
/// `[from, to)`, walking headers only (the batches were validated by
/// recovery or appended by this process). Returns how many it saw.
pub(crate) fn scan_headers(
    spans: &[Span],
    from: u64,
    to: u64,
    mut f: impl FnMut(&BatchHeader),
) -> Result<u64> {
    let mut seen = 0u64;
    let mut buf = vec![0u8; SCAN_CHUNK];
    for s in spans {
        if s.offset >= to {
            break;
        }
        let file = File::open(&s.path)
            .map_err(|e| LogError::io(format!("open {}", s.path.display()), e))?;
        // `buf[..len]` holds the file from `at`.
        let (mut at, mut len) = (0u64, 0usize);
        let (mut pos, mut off) = (s.pos, s.offset);
        while pos < s.size && off < to {
            let have = pos >= at && pos + BATCH_HEADER_LEN as u64 <= at + len as u64;
            if !have {
                len = (s.size - pos).min(SCAN_CHUNK as u64) as usize;
                file.read_exact_at(&mut buf[..len], pos)
                    .map_err(|e| LogError::io(format!("read {}", s.path.display()), e))?;
                at = pos;
            }
            let i = (pos - at) as usize;
            let h = BatchHeader::parse(&buf[i..len])
                .map_err(|e| LogError::corrupt(s.base, pos, e.to_string()))?;
            if h.base_offset != off || pos + h.total_len() as u64 > s.size {
                return Err(LogError::corrupt(
                    s.base,
                    pos,
                    format!("expected a batch at offset {off}, found {}", h.base_offset),
                ));
            }
            if off >= from {
                f(&h);
                seen += 1;
            }
            pos += h.total_len() as u64;
            off = h.next_offset();
        }
    }
    Ok(seen)
}

/// Reads a state file, `None` if it is missing, unreadable or too large to
/// be one.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > max {
        return None;
    }
    std::fs::read(path).ok()
}

/// Before truncating the log at `offset`: deletes the epoch file and the
/// snapshots past `offset`, and returns the newest snapshot left (to
/// rebuild the producer state from, if trimming it is not enough).
pub(crate) fn prepare_truncation(
    dir: &Path,
    offset: u64,
    limits: ProducerLimits,
) -> std::io::Result<Option<(ProducerState, u64)>> {
    let all = list_snapshots(dir)?;
    disk::remove_if_exists(&dir.join(EPOCHS_FILE))?;
    remove_snapshots_above(dir, &all, offset)?;
    disk::fsync_dir(dir)?;
    Ok(newest_snapshot(dir, &all, offset, limits))
}

/// The state files' contents, captured at one log end.
pub(crate) struct Capture {
    pub covered: u64,
    /// The epoch file, and the cache version it holds.
    pub epochs: Option<(Vec<u8>, u64)>,
    pub snapshot: Option<Vec<u8>>,
}

/// Writes what was captured; the data below its `covered` is durable.
/// Only the newest snapshots are kept.
pub(crate) fn write(dir: &Path, c: &Capture) -> std::io::Result<()> {
    if let Some((bytes, _)) = &c.epochs {
        disk::write_atomic(dir, EPOCHS_FILE, bytes)?;
    }
    if let Some(bytes) = &c.snapshot {
        disk::write_atomic(dir, &snapshot_name(c.covered), bytes)?;
        let all = list_snapshots(dir)?;
        let old = all.len().saturating_sub(KEEP_SNAPSHOTS);
        for covered in &all[..old] {
            disk::remove_if_exists(&dir.join(snapshot_name(*covered)))?;
        }
    }
    Ok(())
}

/// Removes the temporary files of state writes a crash interrupted.
fn remove_leftovers(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with(SNAPSHOT_PREFIX) || name.starts_with(EPOCHS_FILE);
        if ours && name.ends_with(disk::TMP_SUFFIX) {
            disk::remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// The state of a log as `open` found it.
pub(crate) struct Loaded {
    pub epochs: EpochCache,
    pub producers: ProducerState,
    /// Batch headers read to bring the files up to date.
    pub scanned_batches: u64,
    pub epochs_file_used: bool,
    pub snapshot_used: bool,
    /// The files could not be brought up to date: the log should retry.
    pub write_failed: bool,
}

/// An epoch file checked against a log `[start, end)`: the cache and the
/// offset from which batches must still be scanned, or `None` if it does
/// not fit the log.
fn adopt_epochs(
    mut c: EpochCache,
    covered: u64,
    start: u64,
    end: u64,
) -> Option<(EpochCache, u64)> {
    if covered <= start {
        // It only describes deleted data.
        return Some((EpochCache::default(), start));
    }
    let covered = covered.min(end);
    c.truncate_from_end(covered);
    c.truncate_from_start(start);
    // The first batch kept always opens an entry.
    if covered > start && c.entries().first().map(|e| e.start_offset) != Some(start) {
        return None;
    }
    Some((c, covered))
}

/// Loads the state files of a recovered log and brings them up to date
/// with it. Files describing batches past the log end (a crash lost them)
/// are rewritten, as are files that needed a scan, so the next open is
/// cheaper.
pub(crate) fn load(
    dir: &Path,
    segs: &[RecoveredSegment],
    limits: ProducerLimits,
    now_ms: i64,
) -> Result<Loaded> {
    let io =
        |what: &str, e: std::io::Error| LogError::io(format!("{what} in {}", dir.display()), e);
    remove_leftovers(dir).map_err(|e| io("remove temporary state files", e))?;
    let start = segs.first().map_or(0, |s| s.base);
    let end = segs.last().map_or(start, |s| s.next_offset);
    let mut stale = false;
    let file =
        read_bounded(&dir.join(EPOCHS_FILE), MAX_EPOCHS_BYTES).and_then(|b| EpochCache::decode(&b));
    let epochs_file_used = file.is_some();
    let (mut epochs, epochs_from) = file
        .and_then(|(c, covered)| {
            stale |= covered > end;
            adopt_epochs(c, covered, start, end)
        })
        .unwrap_or_else(|| (EpochCache::default(), start));
    if stale {
        // It names batches a crash cut off: appends there would make it lie.
        disk::remove_if_exists(&dir.join(EPOCHS_FILE)).map_err(|e| io("remove epoch file", e))?;
    }
    let snapshots = list_snapshots(dir).map_err(|e| io("list snapshots", e))?;
    if snapshots.last().is_some_and(|c| *c > end) {
        stale = true;
        remove_snapshots_above(dir, &snapshots, end).map_err(|e| io("remove snapshots", e))?;
    }
    let snap = newest_snapshot(dir, &snapshots, end, limits);
    let snapshot_used = snap.is_some();
    let (mut producers, producers_from) = match snap {
        Some((mut p, covered)) => {
            p.trim_below(start);
            (p, covered.max(start))
        }
        None => (ProducerState::new(limits), start),
    };
    let from = epochs_from.min(producers_from);
    let spans = spans_of_recovered(dir, segs, from);
    let scanned_batches = scan_headers(&spans, from, end, |h| {
        if h.base_offset >= epochs_from {
            epochs.observe(h.leader_epoch, h.base_offset);
        }
        if h.base_offset >= producers_from {
            producers.record(h, h.base_offset);
        }
    })?;
    producers.expire(now_ms);
    let mut write_failed = false;
    if stale || scanned_batches > 0 {
        // Saves the next open this scan. Recovery made everything below
        // `end` durable. Best effort (a full disk must not stop the open):
        // stale files are gone already, and the log rewrites these at its
        // next roll or close.
        let c = Capture {
            covered: end,
            epochs: Some((epochs.encode(end), epochs.version())),
            snapshot: Some(producers.encode(end)),
        };
        if let Err(e) = write(dir, &c) {
            tracing::warn!(dir = %dir.display(), error = %e, "writing the leader-epoch and producer state files failed");
            write_failed = true;
        }
    }
    Ok(Loaded {
        epochs,
        producers,
        scanned_batches,
        epochs_file_used,
        snapshot_used,
        write_failed,
    })
}

/// The producer state of the log below `end`: `base` describes the log
/// below `from`, and the batches in `[from, end)` are replayed on it.
pub(crate) fn rebuild_producers(
    spans: &[Span],
    mut base: ProducerState,
    from: u64,
    end: u64,
) -> Result<ProducerState> {
    scan_headers(spans, from, end, |h| base.record(h, h.base_offset))?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(u32, u64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, s) in pairs {
            c.observe(e, s);
        }
        c
    }

    #[test]
    fn adopting_an_epoch_file() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        // Up to date.
        let (a, from) = adopt_epochs(c.clone(), 30, 0, 30).unwrap();
        assert_eq!((a.entries(), from), (c.entries(), 30));
        // Behind: the rest is scanned from `covered`.
        let (a, from) = adopt_epochs(c.clone(), 28, 0, 40).unwrap();
        assert_eq!((a.entries().len(), from), (3, 28));
        // Past the end: later entries go.
        let (a, from) = adopt_epochs(c.clone(), 30, 0, 20).unwrap();
        assert_eq!((a.entries().len(), from), (2, 20));
        // Retention moved the start.
        let (a, from) = adopt_epochs(c.clone(), 30, 12, 30).unwrap();
        assert_eq!(
            (a.entries()[0].start_offset, a.entries()[0].epoch, from),
            (12, 3, 30)
        );
        // It describes deleted data only.
        let (a, from) = adopt_epochs(c.clone(), 30, 30, 50).unwrap();
        assert_eq!((a.entries().len(), from), (0, 30));
        // No entry at the log start: inconsistent, rebuild.
        assert!(adopt_epochs(cache(&[(3, 10)]), 30, 5, 30).is_none());
    }

    #[test]
    fn floor_entries() {
        let e = [
            IndexEntry { rel: 5, pos: 500 },
            IndexEntry { rel: 9, pos: 900 },
        ];
        assert_eq!(floor_entry(&e, 100, 100), (0, 100));
        assert_eq!(floor_entry(&e, 100, 107), (500, 105));
        assert_eq!(floor_entry(&e, 100, 200), (900, 109));
        assert_eq!(floor_entry(&[], 100, 50), (0, 100));
    }
}
