//! The broker as an operating-system process: locked memory for io_uring,
//! one broker per data directory and per port, and shutdown on SIGTERM or
//! SIGINT (a second signal exits at once), and systemd's notify protocol
//! and watchdog (`systemd`).

pub mod preflight;
pub mod systemd;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// glommio refuses to start an executor below this much lockable memory.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    IoUring(#[from] preflight::IoUringUnavailable),
    #[error(
        "the locked-memory limit is {have} bytes; io_uring needs at least {need}. \
         Raise it: `ulimit -l unlimited` in the shell, LimitMEMLOCK=infinity in the systemd unit, \
         or `--ulimit memlock=-1` for a container"
    )]
    MemlockTooLow { have: u64, need: u64 },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another ringmq process{holder}; stop it or pick another --data-dir")]
    DataDirLocked { path: PathBuf, holder: String },
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Raises the soft RLIMIT_MEMLOCK to the hard limit, and refuses to go on
/// where io_uring cannot work. Where the limit is low but workable, warns
/// that registered buffers will be skipped (slower I/O, still correct).
pub fn raise_memlock(wanted: u64) -> Result<(), StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // cannot tell; glommio will report a failure itself
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: plain syscall on a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let have = lim.rlim_cur;
    if have == libc::RLIM_INFINITY || has_cap_ipc_lock() {
        return Ok(());
    }
    if have < GLOMMIO_MIN_MEMLOCK {
        return Err(StartError::MemlockTooLow {
            have,
            need: GLOMMIO_MIN_MEMLOCK,
        });
    }
    if have < wanted {
        tracing::warn!(
            limit = have,
            wanted,
            "locked-memory limit is below what the executors register; io_uring will run \
             without registered buffers. Raise it with LimitMEMLOCK=infinity or `ulimit -l`"
        );
    }
    Ok(())
}

/// Adds the fix to an executor start-up failure that locked memory explains
/// (glommio reports it as `MemLockLimit` or as ENOMEM from io_uring), so the
/// operator does not have to guess from a bare OS error.
pub fn explain_executor_error(reason: String) -> String {
    if reason.contains("MemLockLimit") || reason.contains("Cannot allocate memory") {
        format!(
            "{reason}: the locked-memory limit does not cover the executors' io_uring rings. \
             Fix: LimitMEMLOCK=infinity in the systemd unit, `--ulimit memlock=-1` for a container, \
             `ulimit -l unlimited` in the shell, or a smaller --io-memory"
        )
    } else {
        reason
    }
}

/// CAP_IPC_LOCK exempts io_uring from the memlock limit.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// An exclusive lock on the data directory, held for the life of the process.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates the data directory if needed and locks it, so two brokers never
/// share one. The lock file names the holder's PID for the error message.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, StartError> {
    let dir_err = |source| StartError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("LOCK"))
        .map_err(dir_err)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let holder = match pid.trim() {
            "" => String::new(),
            p => format!(" (pid {p})"),
        };
        return Err(StartError::DataDirLocked {
            path: dir.to_owned(),
            holder,
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(DataDirLock { _file: file })
}

/// Binds the address once without SO_REUSEPORT, so a port another process
/// holds is an error here rather than silently shared (glommio's listeners
/// always set SO_REUSEPORT). Returns the address with the port resolved,
/// for `--listen 127.0.0.1:0`.
///
/// A restart on the same port meets two kinds of leftovers. The previous
/// run's connections in TIME_WAIT: glommio's sockets carry SO_REUSEPORT but
/// not SO_REUSEADDR, so they refuse this bind; with no listener to connect
/// to, the broker goes ahead. And, right after a crash, the previous run's
/// listener itself: io_uring tears a ring down after the process has gone,
/// and a pending accept keeps the socket listening until then. So a port
/// that still answers is tried again for [`PORT_RELEASE_WAIT`] before it is
/// reported as taken.
pub fn claim_port(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    let err = |source, hint| StartError::Listen { addr, source, hint };
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return l.local_addr().map_err(|e| err(e, "")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if !someone_listens(addr) {
                    return Ok(addr);
                }
                if std::time::Instant::now() >= deadline {
                    return Err(err(
                        e,
                        " (another process listens on the port: stop it or choose another --listen)",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(err(e, "")),
        }
    }
}

/// How long a listening port may take to be released by an exited process.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Whether a listener answers on `addr` (on loopback for a wildcard address).
fn someone_listens(addr: SocketAddr) -> bool {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the SIGTERM/SIGINT handler: the first signal asks every shard to
/// stop (see [`stop_requested`]); a second one exits the process at once.
pub fn install_signal_handler() -> Result<(), StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(StartError::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if STOP.swap(true, Ordering::SeqCst) {
                    eprintln!("second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal = sig, "shutting down");
                systemd::stopping("stopping: finishing in-flight requests, then flushing");
            }
        })
        .map_err(StartError::Signals)?;
    Ok(())
}

/// Asks every shard to stop, as a signal would.
pub fn request_stop() {
    if !STOP.swap(true, Ordering::SeqCst) {
        systemd::stopping("stopping");
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Resolves when a stop has been requested. Polls a flag the signal thread
/// sets: cheap, and it needs no channel per shard.
pub async fn stopped() {
    while !stop_requested() {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_listener_is_refused_and_a_free_port_is_claimed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let e = claim_port(addr).unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
        drop(l);
        assert_eq!(claim_port(addr).unwrap(), addr);
        let any = claim_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(any.port(), 0);
    }
}
