//! Checks that io_uring can be set up, run before any executor starts, so an
//! operator gets one sentence naming the cause and the fix instead of an OS
//! error from deep inside glommio (or an executor that fails on one core).

use std::io;

/// The oldest kernel glommio 0.9 runs on (io_uring features it relies on).
const MIN_KERNEL: (u32, u32) = (5, 8);

/// Why io_uring cannot be used here, and what the operator should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("io_uring cannot be set up: {cause}. Fix: {fix}")]
pub struct IoUringUnavailable {
    pub cause: String,
    pub fix: String,
}

/// What the probe saw, gathered so that [`diagnose`] is a pure function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `uname -r`, e.g. "6.1.0-18-amd64".
    pub kernel: String,
    /// `/proc/sys/kernel/io_uring_disabled` (Linux 6.6+): 0 on, 1 group only, 2 off.
    pub io_uring_disabled: Option<u8>,
    /// `Seccomp:` of /proc/self/status: 2 means a filter is installed.
    pub seccomp: Option<u8>,
}

/// Sets up one small io_uring and closes it again.
pub fn check_io_uring() -> Result<(), IoUringUnavailable> {
    let facts = Facts::gather();
    let probed = probe();
    match diagnose(probed.err().and_then(|e| e.raw_os_error()), &facts) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Facts {
    fn gather() -> Facts {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        Facts {
            kernel: read("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            io_uring_disabled: read("/proc/sys/kernel/io_uring_disabled")
                .and_then(|s| s.trim().parse().ok()),
            seccomp: read("/proc/self/status").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Seccomp:"))
                    .and_then(|v| v.trim().parse().ok())
            }),
        }
    }
}

/// `io_uring_setup(2)` with one entry, straight through the syscall so the
/// errno is the kernel's own.
fn probe() -> io::Result<()> {
    // struct io_uring_params is 120 bytes; zeroed means "no flags".
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup reads and writes `params`, which we own and
    // which is as large as the kernel's struct.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to us.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// `major.minor` of a kernel release string.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

const SECCOMP_FIX: &str = "in a container, allow io_uring_setup, io_uring_enter and \
     io_uring_register in its seccomp profile (`docker run --security-opt seccomp=PROFILE.json`, \
     or `--security-opt seccomp=unconfined`); under systemd, remove io_uring from SystemCallFilter=";

/// Turns the probe's errno (None: it worked) and the facts into the one
/// error an operator can act on.
pub fn diagnose(errno: Option<i32>, facts: &Facts) -> Option<IoUringUnavailable> {
    let err = |cause: String, fix: &str| {
        Some(IoUringUnavailable {
            cause,
            fix: fix.to_owned(),
        })
    };
    let filtered = facts.seccomp == Some(2);
    let old = kernel_version(&facts.kernel).is_some_and(|v| v < MIN_KERNEL);
    let kernel = &facts.kernel;
    match errno {
        None if old => err(
            format!("kernel {kernel} is older than 5.8, which ringmq's io_uring runtime needs"),
            "upgrade the kernel to Linux 5.8 or newer",
        ),
        None => None,
        Some(libc::ENOSYS) if old || !filtered => err(
            format!("kernel {kernel} has no io_uring (io_uring_setup: function not implemented)"),
            "run on Linux 5.8 or newer built with CONFIG_IO_URING",
        ),
        Some(libc::ENOSYS) => err(
            "a seccomp filter blocks io_uring_setup (function not implemented)".into(),
            SECCOMP_FIX,
        ),
        Some(libc::EPERM) if facts.io_uring_disabled == Some(2) => err(
            "io_uring is switched off on this host (sysctl kernel.io_uring_disabled=2)".into(),
            "`sysctl -w kernel.io_uring_disabled=0` (and set it in /etc/sysctl.d/ to keep it)",
        ),
        Some(libc::EPERM) if facts.io_uring_disabled == Some(1) => err(
            "io_uring is limited to the group in kernel.io_uring_group \
             (sysctl kernel.io_uring_disabled=1)"
                .into(),
            "add the broker's user to the group kernel.io_uring_group names, \
             or `sysctl -w kernel.io_uring_disabled=0`",
        ),
        Some(libc::EPERM) if filtered => err(
            "a seccomp filter blocks io_uring_setup (operation not permitted)".into(),
            SECCOMP_FIX,
        ),
        Some(libc::ENOMEM) => err(
            "the locked-memory limit is too low for even one io_uring".into(),
            "LimitMEMLOCK=infinity in the systemd unit, `--ulimit memlock=-1` for a \
             container, or `ulimit -l unlimited` in the shell",
        ),
        Some(e) => err(
            format!("io_uring_setup failed: {}", io::Error::from_raw_os_error(e)),
            "check the kernel (5.8 or newer), the sysctl kernel.io_uring_disabled=0 and any \
             seccomp profile (`--security-opt seccomp=…`)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kernel: &str, disabled: Option<u8>, seccomp: u8) -> Facts {
        Facts {
            kernel: kernel.into(),
            io_uring_disabled: disabled,
            seccomp: Some(seccomp),
        }
    }

    fn says(errno: Option<i32>, f: Facts, needle: &str) {
        let msg = diagnose(errno, &f).expect("a failure").to_string();
        assert!(msg.contains(needle), "{msg} should mention {needle}");
    }

    #[test]
    fn this_host_can_set_up_io_uring() {
        check_io_uring().unwrap();
    }

    #[test]
    fn each_cause_gets_its_fix() {
        assert_eq!(diagnose(None, &facts("6.1.0-18-amd64", Some(0), 0)), None);
        says(
            None,
            facts("5.4.0-150-generic", None, 0),
            "upgrade the kernel",
        );
        says(Some(libc::ENOSYS), facts("4.19.0", None, 0), "5.8 or newer");
        says(
            Some(libc::ENOSYS),
            facts("6.1.0", None, 2),
            "--security-opt seccomp=",
        );
        says(
            Some(libc::EPERM),
            facts("6.8.0", Some(2), 0),
            "kernel.io_uring_disabled=0",
        );
        says(
            Some(libc::EPERM),
            facts("6.8.0", Some(1), 0),
            "io_uring_group",
        );
        says(
            Some(libc::EPERM),
            facts("6.1.0", Some(0), 2),
            "--security-opt seccomp=",
        );
        says(
            Some(libc::ENOMEM),
            facts("6.1.0", None, 0),
            "LimitMEMLOCK=infinity",
        );
        says(
            Some(libc::EINVAL),
            facts("6.1.0", None, 0),
            "Invalid argument",
        );
    }

    #[test]
    fn reads_kernel_versions() {
        assert_eq!(kernel_version("6.18.0-rc1"), Some((6, 18)));
        assert_eq!(kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(kernel_version(""), None);
    }
}
