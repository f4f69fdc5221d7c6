//! Start-up on a host where io_uring cannot work: the broker exits non-zero
//! with one sentence naming the cause and the fix, before any executor runs.
//! Each test takes away what io_uring needs from the broker process only
//! (a seccomp filter, a low memlock limit without CAP_IPC_LOCK).

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

/// Runs `ringmq serve` with `setup` applied in the child just before exec.
fn serve_with(setup: fn() -> std::io::Result<()>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::BIN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--data-dir",
    ])
    .arg(dir.path())
    .env("RUST_LOG", "info")
    .stdin(Stdio::null());
    // SAFETY: `setup` only makes async-signal-safe syscalls (prctl, setrlimit).
    unsafe { cmd.pre_exec(setup) };
    cmd.output().expect("run ringmq serve")
}

/// The one line the broker printed; nothing else comes before it.
fn only_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    err.trim().to_owned()
}

/// Installs a seccomp filter under which io_uring_setup fails with EPERM,
/// as a container runtime's default profile does.
fn block_io_uring() -> std::io::Result<()> {
    // classic BPF: load seccomp_data.nr; if io_uring_setup return ERRNO(EPERM); else ALLOW
    let nr = libc::SYS_io_uring_setup as u32;
    let mut prog = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // BPF_LD|BPF_W|BPF_ABS, nr
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: nr,
        }, // BPF_JMP|BPF_JEQ|BPF_K
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::EPERM as u32,
        }, // RET ERRNO
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        }, // RET ALLOW
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with a filter program that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A 256 KiB memlock limit and no CAP_IPC_LOCK (which would exempt io_uring).
fn low_memlock() -> std::io::Result<()> {
    const CAP_IPC_LOCK: libc::c_ulong = 14;
    let lim = libc::rlimit {
        rlim_cur: 256 << 10,
        rlim_max: 256 << 10,
    };
    // SAFETY: plain syscalls on values we own. Dropping the capability from
    // the bounding set needs CAP_SETPCAP; without it we are not root and do
    // not have CAP_IPC_LOCK anyway.
    unsafe {
        let _ = libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0);
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn a_seccomp_filter_on_io_uring_is_named_with_its_fix() {
    let out = serve_with(block_io_uring);
    let line = only_line(&out);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.contains("seccomp filter blocks io_uring"), "{line}");
    assert!(line.contains("--security-opt seccomp="), "{line}");
}

#[test]
fn a_low_memlock_limit_is_named_with_its_fix() {
    let out = serve_with(low_memlock);
    let line = only_line(&out);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.contains("locked-memory limit"), "{line}");
    assert!(line.contains("LimitMEMLOCK=infinity"), "{line}");
    assert!(line.contains("--ulimit memlock=-1"), "{line}");
}
