//! One segment: a data file named by the offset of its first batch, sized to
//! `segment_bytes` while it is active so the whole mapping is valid, with
//! disk blocks reserved (fallocate; zero-filled too under `every-batch`, see
//! [`Reservation`]) in a window ahead of the write position.
//! Appends write batches into the page cache with `pwritev` (the broker's
//! base offset and epoch stamped into a copy of the header); reads of the
//! active segment are `Bytes` over a shared mapping of the same pages (zero
//! copy); reads of a sealed segment go through io_uring file reads, so a
//! cold page never stalls the executor. This file is the log's only glommio
//! file handle.
//!
//! Why not memcpy into the mapping: a written mapped page must be faulted in
//! writable first, and writeback write-protects it again (a TLB shootdown)
//! so the next write faults once more. Pre-faulting a window ahead
//! (MADV_POPULATE_WRITE) cost the broker two thirds of its CPU at 1 KiB
//! messages, made each fdatasync write the zeroed window ahead too, and held
//! the process's mmap lock for tens of milliseconds, stalling the executor
//! whenever the allocator mapped memory. A buffered write has none of that,
//! and a full disk is an `ENOSPC` from it rather than a SIGBUS.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use glommio::io::BufferedFile;
use glommio::task::JoinHandle;
use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};
use ringmq_protocol::batch::{stamp, BatchHeader, STAMPED_LEN};

use super::disk;
use super::error::{LogError, Result};
use super::index::{Index, IndexEntry, IndexState, Trailer};
use super::read_budget::ReadBudget;
use super::scan::{pick, Pick, PickArgs};

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// File names of spare segments end with this; recovery removes them.
pub(crate) const SPARE_SUFFIX: &str = ".spare";

static SPARE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh name for a spare segment file in `dir` (unique within the
/// process, and across processes by the pid).
pub(crate) fn spare_path(dir: &Path) -> PathBuf {
    let n = SPARE_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}{SPARE_SUFFIX}", std::process::id()))
}

/// An empty segment file made ahead of a roll, off the executor thread,
/// under a temporary name: sized, mapped, and its first window reserved, so
/// the appends right after the roll do not fallocate. A roll renames it to
/// the new segment's name.
pub(crate) struct Spare {
    path: PathBuf,
    file: File,
    map: Arc<MmapRaw>,
    capacity: u64,
    reserved: Arc<Reservation>,
}

impl Spare {
    /// Blocking: run on the blocking pool. Removes the file again on error.
    /// `zero_fill`: see [`Reservation`].
    pub fn create(
        path: PathBuf,
        segment_bytes: u64,
        window: u64,
        zero_fill: bool,
    ) -> std::io::Result<Spare> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let made = (|| -> std::io::Result<(Arc<MmapRaw>, Arc<Reservation>)> {
            file.set_len(segment_bytes)?;
            let reserved = Reservation::new(0);
            reserved.extend(&file, 0, window.min(segment_bytes), zero_fill)?;
            let map = Arc::new(
                MmapOptions::new()
                    .len(segment_bytes as usize)
                    .map_raw(&file)?,
            );
            Ok((map, reserved))
        })();
        match made {
            Ok((map, reserved)) => Ok(Spare {
                path,
                file,
                map,
                capacity: segment_bytes,
                reserved,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Blocking: unmaps and removes the file.
    pub fn discard(self) -> std::io::Result<()> {
        let Spare {
            path, file, map, ..
        } = self;
        drop(map);
        drop(file);
        disk::remove_if_exists(&path)
    }
}

/// Life of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegState {
    /// Takes appends; mapped, file sized to its capacity.
    Active,
    /// Full, no more appends; not yet synced and trimmed.
    Sealed,
    /// Synced, file trimmed to its data, Sealed index written. Only these
    /// may be deleted by retention.
    Finalized,
}

/// A slice of a mapping that keeps the mapping alive: the owner behind the
/// zero-copy `Bytes` of hot reads.
struct MapSlice {
    map: Arc<MmapRaw>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: start + len lies within the mapping (checked when built) and
        // the bytes are whole batches already written; the mapping lives as
        // long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

/// How far the file has disk blocks (`[0, upto)`), shared by the executor
/// and the blocking-pool job that extends it.
///
/// Under `every-batch` the job also writes zeros over what it reserves and
/// syncs them, so that each group commit's fdatasync writes the appended
/// data alone: on ext4 the first write over a fallocated (unwritten) extent
/// makes that sync write the extent tree too (measured here: ~500 µs per
/// group commit of 8 × 16 KiB against ~360 µs over written zeros). Zeros
/// must never land on appended data, so the job writes them only above
/// `upto`, and the executor raises `upto` before it writes above it, each
/// under `lock`. The executor only takes the lock when it outran the job.
struct Reservation {
    upto: AtomicU64,
    lock: Mutex<()>,
}

impl Reservation {
    fn new(upto: u64) -> Arc<Reservation> {
        Arc::new(Reservation {
            upto: AtomicU64::new(upto),
            lock: Mutex::new(()),
        })
    }

    fn upto(&self) -> u64 {
        self.upto.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded state is `upto` itself, valid whatever a panicking
        // holder was doing.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocking: reserves `[from, to)` (`from` at or past the write
    /// position when the job started), zero-filled if asked.
    fn extend(&self, file: &File, from: u64, to: u64, zero_fill: bool) -> std::io::Result<()> {
        disk::reserve(file, from, to - from)?;
        if zero_fill {
            let mut at = from;
            while at < to {
                let end = (at + ZERO_CHUNK).min(to);
                let _held = self.lock();
                let start = at.max(self.upto());
                if start < end {
                    write_zeros(file, start, end)?;
                }
                at = end;
            }
            file.sync_data()?;
        }
        self.upto.fetch_max(to, Ordering::AcqRel);
        Ok(())
    }
}

/// Dirty whole pages behind the write position that start a writeback
/// (see [`Segment::write_behind`]): a few milliseconds of the disk's time.
pub(crate) const WRITE_BEHIND: u64 = 4 << 20;

/// Bytes of zeros written per hold of [`Reservation::lock`]: a fraction of
/// a millisecond, the longest an executor that outran the job waits.
const ZERO_CHUNK: u64 = 1 << 20;

/// Blocking: writes zeros over `[from, to)` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; ZERO_CHUNK as usize] = [0; ZERO_CHUNK as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// One segment file and what is known about its contents.
pub(crate) struct Segment {
    pub base: u64,
    dir: PathBuf,
    /// For blocking-pool work: fallocate, set_len, punching holes.
    file: Arc<File>,
    /// The same file through io_uring: fdatasync and cold reads.
    gfile: BufferedFile,
    /// Present while active (and until finalized).
    map: RefCell<Option<Arc<MmapRaw>>>,
    /// Bytes the file (and mapping) may hold.
    capacity: Cell<u64>,
    /// Bytes of whole batches; the write position.
    size: Cell<u64>,
    next_offset: Cell<u64>,
    max_timestamp: Cell<i64>,
    index: RefCell<Index>,
    state: Cell<SegState>,
    /// Bytes known to be on disk.
    synced: Cell<u64>,
    /// The directory entry of this file is known to be on disk.
    dir_synced: Cell<bool>,
    /// How much of the file has disk blocks; shared with the blocking pool.
    reserved: Arc<Reservation>,
    reserving: Background,
    /// Bytes from the start whose writeback has been started (see
    /// [`Segment::write_behind`]).
    written_back: Cell<u64>,
    writing_back: Background,
}

/// A blocking-pool job a segment runs behind the appends, one at a time;
/// a failure is only logged, as what it prepares has a fallback.
#[derive(Default)]
struct Background {
    busy: Rc<Cell<bool>>,
    task: RefCell<Option<JoinHandle<()>>>,
}

impl Background {
    fn busy(&self) -> bool {
        self.busy.get()
    }

    /// Runs `job`; `failed` says what happens instead if it fails.
    fn start(
        &self,
        failed: &'static str,
        job: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) {
        self.busy.set(true);
        let busy = self.busy.clone();
        let task = glommio::spawn_local(async move {
            if let Err(e) = glommio::executor().spawn_blocking(job).await {
                tracing::debug!(error = %e, "{failed}");
            }
            busy.set(false);
        })
        .detach();
        *self.task.borrow_mut() = Some(task);
    }

    /// Waits for the last job started.
    async fn finish(&self) {
        let task = self.task.borrow_mut().take();
        if let Some(t) = task {
            t.await;
        }
    }
}

/// What recovery found out about a segment.
#[derive(Debug, Clone)]
pub(crate) struct RecoveredSegment {
    pub base: u64,
    pub size: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub index: Vec<IndexEntry>,
}

fn io_ctx(what: &str, path: &Path) -> String {
    format!("{what} {}", path.display())
}

fn glommio_handle(file: &File, path: &Path) -> Result<BufferedFile> {
    let dup = file
        .try_clone()
        .map_err(|e| LogError::io(io_ctx("dup fd of", path), e))?;
    // SAFETY: `dup` is a fresh fd that we hand over to glommio for good.
    Ok(unsafe { BufferedFile::from_raw_fd(dup.into_raw_fd()) })
}

/// Blocking: drops the page tables of `map`, a slice at a time with a pause
/// in between. Tearing down those of a whole segment that reads had faulted
/// in took 9-14 ms of CPU in one go (256 MiB), stalling whichever core it ran
/// on, or the executor itself when the last hot read's slice was dropped
/// there. The pages stay in the page cache.
fn release_page_tables(map: &MmapRaw) {
    const SLICE: usize = 8 << 20;
    let len = map.len();
    let mut at = 0;
    while at < len {
        let n = SLICE.min(len - at);
        // SAFETY: MADV_DONTNEED on a shared file mapping only drops page
        // table entries: the data stays in the file's page cache, and a
        // reader still holding a slice faults the same bytes back in.
        let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, at, n) };
        at += n;
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn map_file(file: &File, len: u64, path: &Path) -> Result<Arc<MmapRaw>> {
    let map = MmapOptions::new()
        .len(len as usize)
        .map_raw(file)
        .map_err(|e| LogError::io(io_ctx("mmap", path), e))?;
    Ok(Arc::new(map))
}

impl Segment {
    /// Creates an empty active segment (blocking syscalls: create, set_len,
    /// mmap; a few tens of µs on the executor thread, once per roll).
    pub fn create(dir: &Path, base: u64, segment_bytes: u64, interval: u32) -> Result<Rc<Segment>> {
        let path = log_path(dir, base);
        disk::remove_if_exists(&index_path(dir, base))
            .map_err(|e| LogError::io(io_ctx("remove stale index of", &path), e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| LogError::io(io_ctx("create", &path), e))?;
        file.set_len(segment_bytes)
            .map_err(|e| LogError::io(io_ctx("size", &path), e))?;
        let map = map_file(&file, segment_bytes, &path)?;
        let gfile = glommio_handle(&file, &path)?;
        Ok(Rc::new(Segment {
            base,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            gfile,
            map: RefCell::new(Some(map)),
            capacity: Cell::new(segment_bytes),
            size: Cell::new(0),
            next_offset: Cell::new(base),
            max_timestamp: Cell::new(i64::MIN),
            index: RefCell::new(Index::new(interval)),
            state: Cell::new(SegState::Active),
            synced: Cell::new(0),
            dir_synced: Cell::new(false),
            reserved: Reservation::new(0),
            reserving: Background::default(),
            written_back: Cell::new(0),
            writing_back: Background::default(),
        }))
    }

    /// Turns a spare into the empty active segment starting at `base`: one
    /// rename (and an unlink of a stale index) on the executor thread, like
    /// the syscalls of [`Segment::create`]. On error the spare file is gone.
    pub fn from_spare(dir: &Path, base: u64, spare: Spare, interval: u32) -> Result<Rc<Segment>> {
        let path = log_path(dir, base);
        let placed = disk::remove_if_exists(&index_path(dir, base))
            .and_then(|()| std::fs::rename(&spare.path, &path));
        if let Err(e) = placed {
            let _ = disk::remove_if_exists(&spare.path);
            return Err(LogError::io(io_ctx("rename spare segment to", &path), e));
        }
        let gfile = glommio_handle(&spare.file, &path)?;
        Ok(Rc::new(Segment {
            base,
            dir: dir.to_path_buf(),
            file: Arc::new(spare.file),
            gfile,
            map: RefCell::new(Some(spare.map)),
            capacity: Cell::new(spare.capacity),
            size: Cell::new(0),
            next_offset: Cell::new(base),
            max_timestamp: Cell::new(i64::MIN),
            index: RefCell::new(Index::new(interval)),
            state: Cell::new(SegState::Active),
            synced: Cell::new(0),
            dir_synced: Cell::new(false),
            reserved: spare.reserved,
            reserving: Background::default(),
            written_back: Cell::new(0),
            writing_back: Background::default(),
        }))
    }

    /// Wraps a segment recovery validated. It starts finalized; the last
    /// segment is then made active with [`Segment::activate`].
    pub fn open_recovered(dir: &Path, r: RecoveredSegment, interval: u32) -> Result<Rc<Segment>> {
        let path = log_path(dir, r.base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(io_ctx("open", &path), e))?;
        let gfile = glommio_handle(&file, &path)?;
        Ok(Rc::new(Segment {
            base: r.base,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            gfile,
            map: RefCell::new(None),
            capacity: Cell::new(r.size),
            size: Cell::new(r.size),
            next_offset: Cell::new(r.next_offset),
            max_timestamp: Cell::new(r.max_timestamp),
            index: RefCell::new(Index::from_entries(interval, r.index)),
            state: Cell::new(SegState::Finalized),
            synced: Cell::new(r.size),
            dir_synced: Cell::new(true),
            reserved: Reservation::new(r.size),
            reserving: Background::default(),
            written_back: Cell::new(r.size),
            writing_back: Background::default(),
        }))
    }

    /// Makes this segment take appends again: grows the file to
    /// `segment_bytes` (never shrinks it: a live mapping may cover it) and
    /// maps it.
    pub fn activate(&self, segment_bytes: u64) -> Result<()> {
        let path = log_path(&self.dir, self.base);
        let len = self
            .file
            .metadata()
            .map_err(|e| LogError::io(io_ctx("stat", &path), e))?
            .len();
        let cap = segment_bytes.max(len).max(self.size.get());
        if len < cap {
            self.file
                .set_len(cap)
                .map_err(|e| LogError::io(io_ctx("grow", &path), e))?;
        }
        if self
            .map
            .borrow()
            .as_ref()
            .map_or(true, |m| (m.len() as u64) < cap)
        {
            let map = map_file(&self.file, cap, &path)?;
            *self.map.borrow_mut() = Some(map);
        }
        self.capacity.set(cap);
        self.state.set(SegState::Active);
        Ok(())
    }

    pub fn state(&self) -> SegState {
        self.state.get()
    }

    pub fn size(&self) -> u64 {
        self.size.get()
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.get()
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.get()
    }

    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (
            log_path(&self.dir, self.base),
            index_path(&self.dir, self.base),
        )
    }

    /// Where a header scan from `offset` (in this segment or before it)
    /// starts: file position and offset of the batch the index names.
    pub fn scan_start(&self, offset: u64) -> (u64, u64) {
        if offset <= self.base {
            return (0, self.base);
        }
        let e = self.index.borrow().lookup(offset - self.base);
        (u64::from(e.pos), self.base + u64::from(e.rel))
    }

    /// Bytes left for appends.
    pub fn remaining(&self) -> u64 {
        self.capacity.get().saturating_sub(self.size.get())
    }

    /// Whether a batch of `len` bytes and `records` records fits (bytes, and
    /// relative offsets within u32).
    pub fn has_room(&self, len: u64, records: u32) -> bool {
        self.size.get() + len <= self.capacity.get()
            && self.next_offset.get() - self.base + u64::from(records) <= u64::from(u32::MAX)
    }

    /// Marks a full active segment sealed. It stays mapped until finalized.
    pub fn seal(&self) {
        self.state.set(SegState::Sealed);
    }

    /// Whether a sync has something to do for this segment.
    pub fn needs_sync(&self) -> bool {
        self.synced.get() < self.size.get()
            || self.state.get() == SegState::Sealed
            || !self.dir_synced.get()
    }

    /// Writes a verified batch at the write position, stamped with its base
    /// offset and leader epoch. Synchronous: a buffered write into the page
    /// cache over blocks reserved ahead, so it does not wait for the disk
    /// (unless the kernel throttles a writer far ahead of writeback).
    pub fn append(
        &self,
        batch: &[u8],
        h: &BatchHeader,
        base_offset: u64,
        epoch: u32,
    ) -> Result<()> {
        let pos = self.size.get();
        let len = batch.len() as u64;
        self.ensure_reserved(pos + len)?;
        if self.map.borrow().is_none() {
            return Err(LogError::Closed);
        }
        let mut head = [0u8; STAMPED_LEN];
        head.copy_from_slice(&batch[..STAMPED_LEN]);
        stamp(&mut head, base_offset, epoch);
        write_all_at(&self.file, &head, &batch[STAMPED_LEN..], pos).map_err(|e| {
            if out_of_space(&e) {
                LogError::StorageFull
            } else {
                LogError::io(io_ctx("write", &self.paths().0), e)
            }
        })?;
        self.index
            .borrow_mut()
            .on_append((base_offset - self.base) as u32, pos as u32);
        self.size.set(pos + len);
        self.next_offset
            .set(base_offset + u64::from(h.record_count));
        self.max_timestamp
            .set(self.max_timestamp.get().max(h.max_timestamp));
        Ok(())
    }

    /// Fallback when the background reservation did not keep up: fallocate
    /// on the executor thread. Running out of space becomes `StorageFull`.
    fn ensure_reserved(&self, end: u64) -> Result<()> {
        let r = &*self.reserved;
        if end <= r.upto() {
            return Ok(());
        }
        let _held = r.lock();
        let reserved = r.upto();
        if end <= reserved {
            return Ok(());
        }
        match disk::reserve(&self.file, reserved, end - reserved) {
            Ok(()) => {
                r.upto.fetch_max(end, Ordering::AcqRel);
                Ok(())
            }
            Err(e) if out_of_space(&e) => Err(LogError::StorageFull),
            Err(e) => Err(LogError::io(io_ctx("fallocate", &self.paths().0), e)),
        }
    }

    /// Keeps `window` bytes reserved ahead of the write position: when less
    /// than half of it is left, a blocking-pool job fallocates the next
    /// stretch (and zero-fills it, with `zero_fill`: see [`Reservation`]),
    /// so appends neither fallocate nor find the disk full late.
    pub fn reserve_ahead(&self, window: u64, zero_fill: bool) {
        if self.reserving.busy() || self.state.get() != SegState::Active {
            return;
        }
        let reserved = self.reserved.upto();
        let cap = self.capacity.get();
        let size = self.size.get();
        if reserved >= cap || reserved.saturating_sub(size) >= window / 2 {
            return;
        }
        let from = reserved.max(size);
        let to = (size + window).min(cap);
        let file = self.file.clone();
        let shared = self.reserved.clone();
        self.reserving.start(
            "reserving segment space ahead failed; appends will retry",
            move || shared.extend(&file, from, to, zero_fill),
        );
    }

    /// Starts writeback (not a sync: no wait, no durability) of the whole
    /// pages behind the write position once `WRITE_BEHIND` bytes of them are
    /// dirty, on the blocking pool. The interval flush then finds little left
    /// to write. Without it, one fdatasync wrote back a whole interval's
    /// pages (tens of MB), holding page and inode locks that the appends on
    /// the executor waited for (e2e p99 at 1.3M msgs/s: ~1 ms with no
    /// flush, ~2.6 ms with the 100 ms flush, 1.1-2.0 ms with this). The page
    /// the appends are filling is left alone, so writeback never locks it
    /// under them.
    pub fn write_behind(&self) {
        if self.writing_back.busy() || self.state.get() != SegState::Active {
            return;
        }
        let from = self.written_back.get();
        let to = self.size.get() / disk::PAGE * disk::PAGE;
        if to < from + WRITE_BEHIND {
            return;
        }
        self.written_back.set(to);
        let file = self.file.clone();
        self.writing_back.start(
            "starting writeback failed; the flush writes these pages",
            move || disk::start_writeback(&file, from, to - from),
        );
    }

    /// Waits until no reservation or writeback job touches this segment.
    pub async fn quiesce(&self) {
        self.reserving.finish().await;
        self.writing_back.finish().await;
    }

    /// fdatasync through io_uring. Covers the pages written through the
    /// shared mapping. Returns the size it made durable.
    pub async fn fdatasync(&self) -> Result<u64> {
        let size = self.size.get();
        self.gfile
            .fdatasync()
            .await
            .map_err(|e| LogError::io(io_ctx("fdatasync", &self.paths().0), e))?;
        self.synced.set(self.synced.get().max(size));
        if !self.dir_synced.get() {
            let dir = self.dir.clone();
            glommio::executor()
                .spawn_blocking(move || disk::fsync_dir(&dir))
                .await
                .map_err(|e| LogError::io(io_ctx("fsync dir", &self.dir), e))?;
            self.dir_synced.set(true);
        }
        Ok(size)
    }

    fn trailer(&self, state: IndexState) -> Trailer {
        Trailer {
            state,
            size: self.size.get(),
            next_offset: self.next_offset.get(),
            max_timestamp: self.max_timestamp.get(),
        }
    }

    /// Trims a sealed (or, at close, the active) segment to its data and
    /// writes its Sealed index, after which recovery trusts it without a
    /// scan. The caller synced it first. The file shrinks under a mapping
    /// that readers may still hold, but they only hold bytes below `size`.
    pub async fn finalize(&self) -> Result<()> {
        self.quiesce().await;
        let size = self.size.get();
        let file = self.file.clone();
        let entries = self.index.borrow().entries().to_vec();
        let trailer = self.trailer(IndexState::Sealed);
        let (log, idx) = self.paths();
        // Sealed segments are read through io_uring, never the mapping: it
        // is unmapped here (on the blocking pool: tearing down the page
        // tables of a big mapping takes milliseconds) unless a hot read still
        // holds a slice of it.
        let map = self.map.borrow_mut().take();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                if file.metadata()?.len() != size {
                    file.set_len(size)?;
                }
                file.sync_all()?;
                disk::write_index(&idx, &entries, &trailer)?;
                // Its pages stay in the page cache, for consumers a little
                // behind, until the kernel wants the memory. (Dropping them
                // here cost the appends a tenth of their throughput in
                // contention on the page cache.)
                if let Some(map) = &map {
                    release_page_tables(map);
                }
                drop(map);
                Ok(())
            })
            .await
            .map_err(|e| LogError::io(io_ctx("finalize", &log), e))?;
        self.capacity.set(size);
        self.reserved.upto.store(size, Ordering::Release);
        self.state.set(SegState::Finalized);
        Ok(())
    }

    /// Drops every batch at or after the one containing `offset` (which
    /// must lie in this segment): the stale bytes are zeroed on disk (hole
    /// punched) and synced, and the index file is rewritten, so a later
    /// recovery cannot resurrect them. The segment must be active.
    pub async fn truncate(&self, offset: u64) -> Result<()> {
        self.quiesce().await;
        let (pos, new_next) = self.locate(offset)?;
        let old_size = self.size.get();
        self.index.borrow_mut().truncate_pos(pos);
        self.size.set(pos);
        self.next_offset.set(new_next);
        self.synced.set(self.synced.get().min(pos));
        self.written_back.set(self.written_back.get().min(pos));
        let file = self.file.clone();
        let entries = self.index.borrow().entries().to_vec();
        let trailer = self.trailer(IndexState::Open);
        let (log, idx) = self.paths();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                disk::zero_range(&file, pos, old_size)?;
                file.sync_all()?;
                disk::write_index(&idx, &entries, &trailer)
            })
            .await
            .map_err(|e| LogError::io(io_ctx("truncate", &log), e))?;
        self.synced.set(pos);
        Ok(())
    }

    /// Position and offset of the batch containing `offset`, walking headers
    /// through the mapping from the index entry.
    fn locate(&self, offset: u64) -> Result<(u64, u64)> {
        let map = self.map.borrow();
        let Some(map) = map.as_ref() else {
            return Err(LogError::Closed);
        };
        let e = self.index.borrow().lookup(offset - self.base);
        let mut pos = u64::from(e.pos);
        let mut off = self.base + u64::from(e.rel);
        let size = self.size.get();
        // SAFETY: [0, size) lies within the mapping and holds written batches.
        let data = unsafe { std::slice::from_raw_parts(map.as_ptr(), size as usize) };
        while pos < size {
            let h = BatchHeader::parse(&data[pos as usize..])
                .map_err(|e| LogError::corrupt(self.base, pos, e.to_string()))?;
            if h.base_offset != off {
                return Err(LogError::corrupt(self.base, pos, "offset chain broken"));
            }
            if h.next_offset() > offset {
                break;
            }
            pos += h.total_len() as u64;
            off = h.next_offset();
        }
        Ok((pos, off))
    }

    /// Read from the active segment: zero-copy `Bytes` over the mapping.
    pub fn read_hot(&self, from: u64, upper: u64, max_bytes: usize) -> Result<Option<Bytes>> {
        let map = self.map.borrow();
        let Some(map) = map.as_ref() else {
            return Ok(None); // finalized meanwhile: the caller reads cold
        };
        let e = self.index.borrow().lookup(from - self.base);
        let size = self.size.get() as usize;
        let start = e.pos as usize;
        // SAFETY: [0, size) lies within the mapping and holds written batches.
        let data = unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), size - start) };
        let args = PickArgs {
            segment: self.base,
            buf_pos: start as u64,
            buf_offset: self.base + u64::from(e.rel),
            complete: true,
            from,
            upper,
            max_bytes,
        };
        match pick(data, &args)? {
            Pick::Batches { start: a, end: b } => Ok(Some(Bytes::from_owner(MapSlice {
                map: map.clone(),
                start: start + a,
                len: b - a,
            }))),
            Pick::Empty => Ok(Some(Bytes::new())),
            Pick::NeedMore { at, .. } => Err(LogError::corrupt(
                self.base,
                (start + at) as u64,
                "segment data ends inside a batch",
            )),
        }
    }

    /// Read from a sealed segment through io_uring file reads (a copy, but
    /// never a page fault on the executor thread), charged to `budget`.
    pub async fn read_cold(
        &self,
        from: u64,
        upper: u64,
        max_bytes: usize,
        interval: u32,
        budget: &ReadBudget,
    ) -> Result<Bytes> {
        let e = self.index.borrow().lookup(from - self.base);
        let size = self.size.get();
        let mut pos = u64::from(e.pos);
        let mut off = self.base + u64::from(e.rel);
        let mut want = max_bytes.max(4096) + interval as usize + 4096;
        for _ in 0..64 {
            let len = (want as u64).min(size.saturating_sub(pos)) as usize;
            // Taken for the read buffer and its copy, which exist together.
            let charge =
                budget
                    .try_take(len.saturating_mul(2))
                    .ok_or_else(|| LogError::ReadBudget {
                        wanted: len.saturating_mul(2),
                        used: budget.used(),
                        limit: budget.limit(),
                    })?;
            let buf = self
                .gfile
                .read_at(pos, len)
                .await
                .map_err(|e| LogError::io(io_ctx("read", &self.paths().0), e))?;
            let args = PickArgs {
                segment: self.base,
                buf_pos: pos,
                buf_offset: off,
                complete: pos + buf.len() as u64 >= size,
                from,
                upper,
                max_bytes,
            };
            match pick(&buf, &args)? {
                Pick::Batches { start, end } => return Ok(charge.hold(buf[start..end].to_vec())),
                Pick::Empty => return Ok(Bytes::new()),
                Pick::NeedMore { at, offset, len } => {
                    // at == 0: a short read, or a batch larger than the read.
                    want = if at == 0 {
                        want.saturating_mul(2)
                    } else {
                        want.max(len)
                    };
                    pos += at as u64;
                    off = offset;
                }
            }
        }
        Err(LogError::corrupt(
            self.base,
            pos,
            "read did not converge on a batch boundary",
        ))
    }
}

/// `head` then `rest` at `pos` of `file`: one pwritev, more only if the
/// kernel wrote part of it.
fn write_all_at(file: &File, head: &[u8], rest: &[u8], pos: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let total = head.len() + rest.len();
    let mut done = 0;
    while done < total {
        let (h, r) = if done < head.len() {
            (&head[done..], rest)
        } else {
            (&[][..], &rest[done - head.len()..])
        };
        let iov = [
            libc::iovec {
                iov_base: h.as_ptr() as *mut libc::c_void,
                iov_len: h.len(),
            },
            libc::iovec {
                iov_base: r.as_ptr() as *mut libc::c_void,
                iov_len: r.len(),
            },
        ];
        let at = libc::off_t::try_from(pos + done as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: both iovecs point into live slices of the given lengths.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Whether `e` means the file system is out of space (fallocate or write).
fn out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}
