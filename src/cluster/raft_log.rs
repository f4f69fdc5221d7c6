//! The Raft log of one controller on disk: entries, hard state, conf state and
//! the latest snapshot (the serialized [`Metadata`](super::metadata::Metadata)).
//!
//! Two files in the node's raft directory:
//! - `raft.wal`: append-only records `len u32 LE ‖ crc32 u32 LE ‖ kind u8 ‖
//!   payload`, where `len` counts `kind ‖ payload`, the CRC (crc32fast) covers
//!   them, and the payload is the protobuf of an `Entry` (kind 1), a
//!   `HardState` (2) or a `ConfState` (3). Replay keeps the last hard state and
//!   conf state; an entry at index `i` drops every entry from `i` on (Raft
//!   overwrote a suffix). A torn tail (short or bad CRC: a crash during a
//!   write that was never acknowledged) is cut off at open.
//! - `raft.snap`: `"RMQSNAP1" ‖ crc32 u32 LE ‖ len u64 LE ‖ Snapshot protobuf`,
//!   replaced atomically (temporary file, fsync, rename, fsync of the
//!   directory).
//!
//! Durability: [`DiskLog::append`] ends with `fdatasync`, and the driver sends
//! no message that depends on what it wrote (votes, append acks) before it
//! returns. A snapshot compacts the log: the snapshot file is made durable
//! first, then the WAL is rewritten with only the entries after it (again
//! temporary file, fsync, rename), so a crash between the two leaves a
//! snapshot plus a WAL whose older entries are skipped at replay.
//!
//! The conf state is the node's Raft configuration: the controllers (voters,
//! fixed at bootstrap) and the learners (members that are not controllers),
//! which come and go through conf change entries. The driver writes a conf
//! state record whenever it applies one, and every snapshot carries the conf
//! state as of its index. A node that is not a controller starts with an
//! empty one: it can neither campaign nor vote, and waits for a leader to
//! add it as a learner and send it the log.
//!
//! File I/O runs on glommio's blocking pool (`spawn_blocking`): an fdatasync
//! takes 0.3–0.6 ms on this VM and a snapshot rewrite more, long enough to
//! stall the shard's other tasks if done inline. [`open`] is blocking and
//! runs once at start. The in-memory mirror ([`RaftStore`], what raft-rs
//! reads through [`Storage`]) is updated only after a write is durable.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const WAL: &str = "raft.wal";
const SNAP: &str = "raft.snap";
const SNAP_MAGIC: &[u8; 8] = b"RMQSNAP1";
/// Records larger than this are damage, not data: a metadata command is a few
/// hundred bytes and raft batches entries per message, not per record.
const MAX_RECORD: u32 = 64 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;

/// Why the log could not be read or written. Any of them stops the node:
/// Raft cannot go on safely with a log it failed to persist.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raft log {path} is damaged at byte {offset}: {reason}; restore the directory from a peer or remove it to rejoin empty")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("cannot encode a raft record: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    #[error("an earlier write to the raft log failed; the node must restart")]
    Failed,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What raft-rs reads: the durable log, mirrored in memory.
///
/// Invariant: `entries` is contiguous and, when not empty, starts right after
/// the snapshot (`entries[0].index == snapshot index + 1`).
#[derive(Debug, Default)]
pub struct RaftStore {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// Set when raft-rs asked for a snapshot for a node the latest one does
    /// not include (a learner added after it was taken): the driver then
    /// takes a fresh one instead of waiting for `snapshot_every` entries.
    snapshot_wanted: Cell<bool>,
}

impl RaftStore {
    /// Whether a fresh snapshot was asked for since the last call.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    /// The latest snapshot (empty data and index 0 before the first one).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Entries in the mirror (after the snapshot).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Records durable entries: drops any suffix they overwrite.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let keep = first.index.saturating_sub(self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Records a durable snapshot: the entries up to it are gone.
    fn install(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        self.entries.retain(|e| e.index > index);
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            // A received snapshot past a gap: the old entries are useless.
            self.entries.clear();
        }
        self.conf_state = snapshot.get_metadata().get_conf_state().clone();
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < snapshot.get_metadata().term {
            self.hard_state.term = snapshot.get_metadata().term;
        }
        self.snapshot = snapshot;
    }
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index || self.snapshot_index() == 0 {
            // The driver snapshots on its own schedule; raft asks again.
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let cs = self.snapshot.get_metadata().get_conf_state();
        if !cs.voters.contains(&to) && !cs.learners.contains(&to) {
            // raft-rs on `to` refuses a snapshot whose configuration lacks
            // it, and would be sent the same one forever.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// The write side of the log: owns the files. Its writes run on the blocking
/// pool; after a failed write it refuses all further ones ([`LogError::Failed`]).
#[derive(Debug)]
pub struct DiskLog {
    files: Option<Files>,
}

#[derive(Debug)]
struct Files {
    dir: PathBuf,
    wal: File,
}

/// Opens (or creates) the log in `dir`: blocking, once at start. A new log
/// starts with `voters` as its configuration (the same on every controller,
/// as raft-rs requires of a cluster bootstrapped without snapshots; empty on
/// a node that is not a controller); an existing one ignores `voters` and
/// keeps its own.
pub fn open(dir: &Path, voters: &[u64]) -> Result<(RaftStore, DiskLog), LogError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut store = RaftStore::default();
    let snap_path = dir.join(SNAP);
    if let Some(snapshot) = read_snapshot(&snap_path)? {
        store.install(snapshot);
    }
    let wal_path = dir.join(WAL);
    let fresh = !wal_path.exists() && store.snapshot_index() == 0;
    let mut wal = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&wal_path)
        .map_err(io(&wal_path))?;
    let mut bytes = Vec::new();
    wal.read_to_end(&mut bytes).map_err(io(&wal_path))?;
    let good = replay(&wal_path, &bytes, &mut store)?;
    if good < bytes.len() {
        tracing::warn!(
            path = %wal_path.display(),
            kept = good,
            cut = bytes.len() - good,
            "raft log: cutting off a torn tail"
        );
        wal.set_len(good as u64).map_err(io(&wal_path))?;
        wal.sync_all().map_err(io(&wal_path))?;
    }
    let mut log = DiskLog {
        files: Some(Files {
            dir: dir.to_path_buf(),
            wal,
        }),
    };
    if fresh {
        let cs = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let buf = encode(&[], None, Some(&cs))?;
        log.append_now(buf)?;
        store.conf_state = cs;
        sync_dir(dir)?;
    }
    Ok((store, log))
}

/// Replays WAL records into `store`; returns the length of the good prefix.
fn replay(path: &Path, bytes: &[u8], store: &mut RaftStore) -> Result<usize, LogError> {
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD {
            break;
        }
        let Some(body) = bytes.get(at + 8..at + 8 + len as usize) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let corrupt = |reason: String| LogError::Corrupt {
            path: path.to_path_buf(),
            offset: at as u64,
            reason,
        };
        let payload = &body[1..];
        match body[0] {
            KIND_ENTRY => {
                let e = Entry::parse_from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
                if e.index <= store.snapshot_index() {
                    // Compacted into the snapshot already.
                } else if e.index > store.last() + 1 {
                    return Err(corrupt(format!(
                        "entry {} after last index {}",
                        e.index,
                        store.last()
                    )));
                } else {
                    store.append(std::slice::from_ref(&e));
                }
            }
            KIND_HARD_STATE => {
                store.hard_state =
                    HardState::parse_from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
            }
            KIND_CONF_STATE => {
                store.conf_state =
                    ConfState::parse_from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
            }
            other => return Err(corrupt(format!("unknown record kind {other}"))),
        }
        at += 8 + len as usize;
    }
    // A snapshot newer than the WAL's hard state (crash between writing the
    // snapshot and rewriting the WAL) still counts as committed.
    let snap = store.snapshot.get_metadata().clone();
    if store.hard_state.commit < snap.index {
        store.hard_state.commit = snap.index;
    }
    if store.hard_state.term < snap.term {
        store.hard_state.term = snap.term;
    }
    Ok(at)
}

fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() < 20 || &bytes[..8] != SNAP_MAGIC {
        return Err(corrupt("not a ringmq raft snapshot"));
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[12..20]);
    let body = &bytes[20..];
    if u64::from_le_bytes(len8) != body.len() as u64 || crc32fast::hash(body) != crc {
        return Err(corrupt("length or checksum mismatch"));
    }
    Snapshot::parse_from_bytes(body)
        .map(Some)
        .map_err(|e| corrupt(&e.to_string()))
}

/// WAL records for `entries`, then `hs`, then `cs`: what one Ready persists.
pub fn encode(
    entries: &[Entry],
    hs: Option<&HardState>,
    cs: Option<&ConfState>,
) -> Result<Vec<u8>, LogError> {
    let mut buf = Vec::new();
    for e in entries {
        record(&mut buf, KIND_ENTRY, &e.write_to_bytes()?);
    }
    if let Some(hs) = hs {
        record(&mut buf, KIND_HARD_STATE, &hs.write_to_bytes()?);
    }
    if let Some(cs) = cs {
        record(&mut buf, KIND_CONF_STATE, &cs.write_to_bytes()?);
    }
    Ok(buf)
}

fn record(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(kind);
    buf.extend_from_slice(payload);
    let body = &buf[start + 8..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Files {
    fn append(&mut self, buf: &[u8]) -> Result<(), LogError> {
        let path = self.dir.join(WAL);
        self.wal.write_all(buf).map_err(io(&path))?;
        self.wal.sync_data().map_err(io(&path))
    }

    /// Snapshot file first, then the WAL rewritten from `rest` (records of
    /// the hard state, conf state and the entries after the snapshot).
    fn install(&mut self, snapshot: &[u8], rest: &[u8]) -> Result<(), LogError> {
        let mut framed = Vec::with_capacity(snapshot.len() + 20);
        framed.extend_from_slice(SNAP_MAGIC);
        framed.extend_from_slice(&crc32fast::hash(snapshot).to_le_bytes());
        framed.extend_from_slice(&(snapshot.len() as u64).to_le_bytes());
        framed.extend_from_slice(snapshot);
        replace(&self.dir, SNAP, &framed)?;
        replace(&self.dir, WAL, rest)?;
        let path = self.dir.join(WAL);
        self.wal = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(())
    }
}

/// Atomically and durably replaces `dir/name` with `bytes`.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

impl DiskLog {
    /// Appends encoded records ([`encode`]) and makes them durable, on the
    /// blocking pool; then mirrors them into `store`.
    pub async fn append(
        &mut self,
        store: &mut RaftStore,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), LogError> {
        let buf = encode(entries, hs, None)?;
        self.blocking(move |f| f.append(&buf)).await?;
        store.append(entries);
        if let Some(hs) = hs {
            store.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records the configuration after an applied conf change, durably.
    pub async fn set_conf_state(
        &mut self,
        store: &mut RaftStore,
        cs: ConfState,
    ) -> Result<(), LogError> {
        let buf = encode(&[], None, Some(&cs))?;
        self.blocking(move |f| f.append(&buf)).await?;
        store.conf_state = cs;
        Ok(())
    }

    /// Makes `snapshot` the log's base (taken locally or received from the
    /// leader): durable snapshot, compacted WAL, then the mirror.
    pub async fn install_snapshot(
        &mut self,
        store: &mut RaftStore,
        snapshot: Snapshot,
    ) -> Result<(), LogError> {
        let (snap, rest) = Self::snapshot_files(store, &snapshot)?;
        self.blocking(move |f| f.install(&snap, &rest)).await?;
        store.install(snapshot);
        Ok(())
    }

    /// [`DiskLog::append`] on the calling thread (start-up, tests).
    pub fn append_now(&mut self, buf: Vec<u8>) -> Result<(), LogError> {
        self.files.as_mut().ok_or(LogError::Failed)?.append(&buf)
    }

    /// [`DiskLog::install_snapshot`] on the calling thread (tests).
    pub fn install_snapshot_now(
        &mut self,
        store: &mut RaftStore,
        snapshot: Snapshot,
    ) -> Result<(), LogError> {
        let (snap, rest) = Self::snapshot_files(store, &snapshot)?;
        self.files
            .as_mut()
            .ok_or(LogError::Failed)?
            .install(&snap, &rest)?;
        store.install(snapshot);
        Ok(())
    }

    /// [`DiskLog::set_conf_state`] on the calling thread (tests).
    pub fn set_conf_state_now(
        &mut self,
        store: &mut RaftStore,
        cs: ConfState,
    ) -> Result<(), LogError> {
        self.append_now(encode(&[], None, Some(&cs))?)?;
        store.conf_state = cs;
        Ok(())
    }

    /// [`DiskLog::append`] on the calling thread (tests).
    pub fn append_entries_now(
        &mut self,
        store: &mut RaftStore,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), LogError> {
        self.append_now(encode(entries, hs, None)?)?;
        store.append(entries);
        if let Some(hs) = hs {
            store.hard_state = hs.clone();
        }
        Ok(())
    }

    fn snapshot_files(
        store: &RaftStore,
        snapshot: &Snapshot,
    ) -> Result<(Vec<u8>, Vec<u8>), LogError> {
        // What the mirror will hold after `install`, computed on a copy.
        let mut after = RaftStore {
            hard_state: store.hard_state.clone(),
            conf_state: store.conf_state.clone(),
            snapshot: Snapshot::default(),
            entries: store.entries.clone(),
            snapshot_wanted: Cell::new(false),
        };
        after.install(snapshot.clone());
        let rest = encode(
            &after.entries,
            Some(&after.hard_state),
            Some(&after.conf_state),
        )?;
        Ok((snapshot.write_to_bytes()?, rest))
    }

    async fn blocking(
        &mut self,
        f: impl FnOnce(&mut Files) -> Result<(), LogError> + Send + 'static,
    ) -> Result<(), LogError> {
        let mut files = self.files.take().ok_or(LogError::Failed)?;
        let (files, result) = glommio::executor()
            .spawn_blocking(move || {
                let r = f(&mut files);
                (files, r)
            })
            .await;
        if result.is_ok() {
            self.files = Some(files);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}t{term}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn all(store: &RaftStore) -> Vec<(u64, u64)> {
        let (lo, hi) = (
            store.first_index().unwrap(),
            store.last_index().unwrap() + 1,
        );
        store
            .entries(lo, hi, None, GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    #[test]
    fn a_new_log_starts_with_the_voters_and_reloads_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut log) = open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(
            store.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
        assert_eq!(
            (store.first_index().unwrap(), store.last_index().unwrap()),
            (1, 0)
        );
        let ents: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        log.append_entries_now(&mut store, &ents, Some(&hs(1, 2, 3)))
            .unwrap();
        // Raft overwrites a suffix with entries of a later term.
        log.append_entries_now(&mut store, &[entry(4, 2)], Some(&hs(2, 3, 3)))
            .unwrap();
        drop(log);

        let (again, _log) = open(dir.path(), &[7]).unwrap();
        assert_eq!(all(&again), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
        let state = again.initial_state().unwrap();
        assert_eq!(state.hard_state, hs(2, 3, 3));
        assert_eq!(
            state.conf_state.voters,
            vec![1, 2, 3],
            "voters of a new log only"
        );
        assert_eq!(again.term(4).unwrap(), 2);
        assert!(matches!(
            again.term(9),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut log) = open(dir.path(), &[1]).unwrap();
        log.append_entries_now(&mut store, &[entry(1, 1), entry(2, 1)], Some(&hs(1, 1, 2)))
            .unwrap();
        drop(log);
        let path = dir.path().join(WAL);
        let good = std::fs::metadata(&path).unwrap().len();
        let mut tail = encode(&[entry(3, 1)], None, None).unwrap();
        tail.truncate(tail.len() - 3);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&tail).unwrap();
        drop(f);

        let (mut again, mut log) = open(dir.path(), &[1]).unwrap();
        assert_eq!(all(&again), vec![(1, 1), (2, 1)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        // And the log goes on from there.
        log.append_entries_now(&mut again, &[entry(3, 1)], None)
            .unwrap();
        drop(log);
        let (third, _log) = open(dir.path(), &[1]).unwrap();
        assert_eq!(third.last_index().unwrap(), 3);
    }

    #[test]
    fn a_snapshot_compacts_the_log_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut log) = open(dir.path(), &[1, 2]).unwrap();
        let ents: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
        log.append_entries_now(&mut store, &ents, Some(&hs(1, 1, 8)))
            .unwrap();
        let wal_before = std::fs::metadata(dir.path().join(WAL)).unwrap().len();

        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 7;
        snap.mut_metadata().term = 1;
        snap.mut_metadata()
            .set_conf_state(store.conf_state().clone());
        snap.data = b"state at 7".to_vec().into();
        log.install_snapshot_now(&mut store, snap).unwrap();
        assert_eq!(store.first_index().unwrap(), 8);
        assert!(std::fs::metadata(dir.path().join(WAL)).unwrap().len() < wal_before);
        assert!(matches!(
            store.entries(5, 9, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(store.term(7).unwrap(), 1);
        assert_eq!(store.snapshot(0, 2).unwrap().data.as_ref(), b"state at 7");
        log.append_entries_now(&mut store, &[entry(11, 2)], Some(&hs(2, 1, 11)))
            .unwrap();
        drop(log);

        let (again, _log) = open(dir.path(), &[1, 2]).unwrap();
        assert_eq!(all(&again), vec![(8, 1), (9, 1), (10, 1), (11, 2)]);
        assert_eq!(again.latest_snapshot().get_metadata().index, 7);
        assert_eq!(again.hard_state(), &hs(2, 1, 11));
        assert_eq!(again.conf_state().voters, vec![1, 2]);
    }

    #[test]
    fn a_received_snapshot_past_the_log_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut log) = open(dir.path(), &[1, 2, 3]).unwrap();
        log.append_entries_now(&mut store, &[entry(1, 1), entry(2, 1)], Some(&hs(1, 0, 1)))
            .unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.install_snapshot_now(&mut store, snap).unwrap();
        assert_eq!(
            (store.first_index().unwrap(), store.last_index().unwrap()),
            (21, 20)
        );
        assert_eq!(store.hard_state().commit, 20);
        assert_eq!(store.hard_state().term, 3);
        drop(log);
        let (again, _log) = open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(
            (again.first_index().unwrap(), again.last_index().unwrap()),
            (21, 20)
        );
    }

    #[test]
    fn learners_come_and_go_in_the_conf_state_and_snapshots_carry_it() {
        let dir = tempfile::tempdir().unwrap();
        // A node that is not a controller starts with no configuration.
        let (store, log) = open(dir.path(), &[]).unwrap();
        assert_eq!(store.conf_state(), &ConfState::default());
        drop((store, log));

        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut log) = open(dir.path(), &[1, 2, 3]).unwrap();
        let ents: Vec<Entry> = (1..=4).map(|i| entry(i, 1)).collect();
        log.append_entries_now(&mut store, &ents, Some(&hs(1, 1, 4)))
            .unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 1;
        snap.mut_metadata()
            .set_conf_state(store.conf_state().clone());
        log.install_snapshot_now(&mut store, snap).unwrap();
        // Learner 4 added after that snapshot: it is not sent the snapshot
        // (it would refuse it), and the driver is told to take a new one.
        let with_4 = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        log.set_conf_state_now(&mut store, with_4.clone()).unwrap();
        assert!(store.snapshot(0, 2).is_ok());
        assert!(!store.take_snapshot_wanted());
        assert!(matches!(
            store.snapshot(0, 4),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert!(store.take_snapshot_wanted());
        assert!(!store.take_snapshot_wanted(), "taken once");
        drop(log);

        let (mut again, mut log) = open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(again.conf_state(), &with_4);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 4;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().set_conf_state(with_4.clone());
        log.install_snapshot_now(&mut again, snap).unwrap();
        assert!(again.snapshot(0, 4).is_ok());
        // Removed again; the latest record wins at replay.
        let without = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        log.set_conf_state_now(&mut again, without.clone()).unwrap();
        drop(log);
        let (third, _log) = open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(third.conf_state(), &without);
        assert_eq!(
            third.latest_snapshot().get_metadata().get_conf_state(),
            &with_4
        );
    }

    #[test]
    fn a_damaged_snapshot_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAP), b"RMQSNAP1 but then garbage").unwrap();
        let e = open(dir.path(), &[1]).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
