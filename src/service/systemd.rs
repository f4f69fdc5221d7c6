//! systemd's side of the process: the notify protocol (`READY=1`, `STATUS=`,
//! `STOPPING=1`) and the watchdog. Outside systemd (no `NOTIFY_SOCKET`)
//! every call here does nothing.
//!
//! The watchdog proves the executors run, not just the process: every core
//! bumps its own heartbeat from a timer on its executor, and the `watchdog`
//! thread sends `WATCHDOG=1` only while every core's heartbeat moved since
//! the last ping. A core stuck in a loop or a blocking syscall stops the
//! pings, and systemd restarts the broker after `WatchdogSec`.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` to systemd, if it is listening. Failures are logged, never
/// fatal: the broker works the same without a service manager.
fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// A one-line `STATUS=` shown by `systemctl status`.
pub fn status(line: &str) {
    notify(&[NotifyState::Status(line)]);
}

/// Start-up is over: every partition is recovered and every core listens.
pub fn ready(line: &str) {
    PHASE.store(SERVING, Ordering::SeqCst);
    notify(&[NotifyState::Ready, NotifyState::Status(line)]);
}

/// The orderly shutdown has begun.
pub fn stopping(line: &str) {
    PHASE.store(STOPPING, Ordering::SeqCst);
    notify(&[NotifyState::Stopping, NotifyState::Status(line)]);
}

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const STOPPING: u8 = 2;

/// Where the broker is in its life. While starting (recovery may be long:
/// `TimeoutStartSec` bounds it) and stopping (`TimeoutStopSec` bounds it) the
/// cores are not all beating, so the watchdog pings for the process; while
/// serving, only for cores that all beat.
static PHASE: AtomicU8 = AtomicU8::new(STARTING);

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if it is meant
/// for this process (`WATCHDOG_PID` absent or ours, as sd_watchdog_enabled(3)).
pub fn watchdog_timeout() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0 && std::env::var_os("NOTIFY_SOCKET").is_some()).then(|| Duration::from_micros(usec))
}

/// One counter per core, each written only by its own core's timer.
#[derive(Debug)]
pub struct Heartbeats {
    beats: Box<[AtomicU64]>,
    /// How often each core should beat: a few times per ping.
    pub every: Duration,
}

impl Heartbeats {
    /// Called from core `core`'s executor.
    pub fn beat(&self, core: usize) {
        if let Some(b) = self.beats.get(core) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.beats
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The first core whose heartbeat did not move between two snapshots.
fn stuck_core(before: &[u64], now: &[u64]) -> Option<usize> {
    before.iter().zip(now).position(|(b, n)| b == n)
}

/// Starts the `watchdog` thread if systemd asked for a watchdog, pinging at
/// half its timeout (as systemd recommends). Returns the heartbeats every core
/// must bump, at `Heartbeats::every`.
pub fn start_watchdog(cores: usize) -> std::io::Result<Option<Arc<Heartbeats>>> {
    let Some(timeout) = watchdog_timeout() else {
        return Ok(None);
    };
    let ping_every = timeout / 2;
    let hb = Arc::new(Heartbeats {
        beats: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        every: (ping_every / 4).max(Duration::from_millis(1)),
    });
    let watched = hb.clone();
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut last = watched.snapshot();
            let mut warned = false;
            loop {
                std::thread::sleep(ping_every);
                let now = watched.snapshot();
                let stuck = match PHASE.load(Ordering::SeqCst) {
                    SERVING => stuck_core(&last, &now),
                    _ => None,
                };
                match stuck {
                    None => {
                        notify(&[NotifyState::Watchdog]);
                        warned = false;
                    }
                    Some(core) if !warned => {
                        warned = true;
                        tracing::error!(
                            core,
                            "core {core} has not run for {ping_every:?}; withholding the \
                             watchdog ping so systemd restarts the broker if it stays stuck"
                        );
                    }
                    Some(_) => {}
                }
                last = now;
            }
        })?;
    tracing::info!(timeout = ?timeout, "systemd watchdog enabled");
    Ok(Some(hb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_that_did_not_beat_is_stuck() {
        assert_eq!(stuck_core(&[1, 5], &[2, 9]), None);
        assert_eq!(stuck_core(&[1, 5], &[2, 5]), Some(1));
        assert_eq!(stuck_core(&[1, 5], &[1, 6]), Some(0));
    }

    #[test]
    fn beats_move_only_their_own_core() {
        let hb = Heartbeats {
            beats: (0..2).map(|_| AtomicU64::new(0)).collect(),
            every: Duration::from_millis(1),
        };
        let before = hb.snapshot();
        hb.beat(0);
        hb.beat(7); // out of range: ignored
        assert_eq!(stuck_core(&before, &hb.snapshot()), Some(1));
        hb.beat(1);
        assert_eq!(stuck_core(&before, &hb.snapshot()), None);
    }
}
