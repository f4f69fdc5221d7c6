//! Blocking file-system helpers (std and libc only). Every caller runs them
//! on glommio's blocking pool (`executor().spawn_blocking`) or during
//! recovery, which runs there too, except the `fallocate` fallback of an
//! append that outran the reservation ahead of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::index::{self, IndexEntry, Trailer};

pub(crate) const PAGE: u64 = 4096;

/// Reserves disk blocks for `[offset, offset + len)` without changing the
/// file size. Blocks already allocated stay as they are.
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, l) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts writeback of the dirty pages of `[offset, offset + len)` and
/// returns (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`): nothing is
/// made durable, no metadata is written, and pages already under writeback
/// are skipped.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), off, l, libc::SYNC_FILE_RANGE_WRITE) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Space the file system must keep free beyond what segments reserved: 4
/// MiB or 0.5% of it, whichever is larger. On ext4 a reserved (unwritten)
/// extent still needs metadata blocks when its pages are first written and
/// written back; with none left, a write fault kills the process (SIGBUS)
/// and writeback fails (fdatasync ENOSPC), losing what was written.
fn free_margin(total: u64) -> u64 {
    (4 << 20).max(total / 200)
}

/// Reserves `[offset, offset + len)` like [`fallocate`], and then fails
/// with ENOSPC if the file system is left with less than its margin free
/// (the blocks stay reserved for this file; later appends within them go on).
pub(crate) fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(file, offset, len)?;
    // SAFETY: fstatvfs fills the struct we own from an fd we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    let (avail, total) = (st.f_bavail as u64 * unit, st.f_blocks as u64 * unit);
    if avail < free_margin(total) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

/// Makes `[from, to)` of the file read as zeros: zeros are written over the
/// partial first page and the whole pages are punched out (deallocated, no
/// data written). Falls back to writing zeros where punching is unsupported.
pub(crate) fn zero_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    if from >= to {
        return Ok(());
    }
    let aligned = from.div_ceil(PAGE) * PAGE;
    let head_end = aligned.min(to);
    if head_end > from {
        file.write_all_at(&vec![0u8; (head_end - from) as usize], from)?;
    }
    if to > aligned {
        let (Ok(off), Ok(len)) = (i64::try_from(aligned), i64::try_from(to - aligned)) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: plain syscall on an fd we own.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
            let zeros = vec![0u8; 1 << 20];
            let mut at = aligned;
            while at < to {
                let n = (to - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// Position one past the last non-zero byte at or after `from` in `data`
/// (the file's contents, mapped), or `None` if all of it is zero. Holes are
/// skipped with SEEK_DATA / SEEK_HOLE so a sparse tail costs nothing.
pub(crate) fn nonzero_end(file: &File, data: &[u8], from: u64) -> Option<u64> {
    let len = data.len() as u64;
    let mut at = from;
    let mut last = None;
    while at < len {
        let fd = file.as_raw_fd();
        // SAFETY: lseek on an fd we own; errors are handled.
        let d = unsafe { libc::lseek(fd, at as i64, libc::SEEK_DATA) };
        if d < 0 {
            break; // ENXIO: no data after `at`
        }
        let d = (d as u64).max(at);
        // SAFETY: as above.
        let h = unsafe { libc::lseek(fd, d as i64, libc::SEEK_HOLE) };
        let h = if h < 0 { len } else { (h as u64).min(len) };
        if d >= h {
            break;
        }
        if let Some(i) = data[d as usize..h as usize].iter().rposition(|b| *b != 0) {
            last = Some(d + i as u64 + 1);
        }
        at = h;
    }
    last
}

/// Fsyncs a directory so created, renamed and removed entries are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` atomically and durably with an index file.
pub(crate) fn write_index(path: &Path, entries: &[IndexEntry], t: &Trailer) -> io::Result<()> {
    let tmp = path.with_extension("index.tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&index::encode(entries, t))?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Removes a file; a file that is already gone is not an error.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces `dir/name` atomically and durably with `bytes`: a temporary
/// file is written and synced, renamed over the old one, and the directory
/// synced. A crash leaves the old file or the new one, never a mix.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}

/// Suffix of the temporary files of [`write_atomic`]; recovery removes
/// leftovers.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
