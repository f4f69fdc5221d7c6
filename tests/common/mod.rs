//! Test harness: real `ringmq serve` processes on 127.0.0.1, each on a port
//! the kernel picks (`--listen 127.0.0.1:0`, read back from the broker's
//! "listening on" log line) and a temporary data dir. A broker is killed by
//! the PID this harness started, at the latest when it is dropped.

#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod group;
pub mod probe;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringmq");
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A broker process and the data dir it owns.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// Environment variables set for the broker (also after a restart).
    env: Vec<(String, String)>,
    /// Everything the broker logged, for assertions and failure output.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    /// Starts a broker with 2 cores on a fresh data dir.
    pub fn start(extra_args: &[&str]) -> Broker {
        Broker::start_with_env(extra_args, &[])
    }

    /// Starts a broker with 2 cores on a fresh data dir and these environment variables.
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Broker {
        Broker::start_in(tempfile::tempdir().expect("temp dir"), extra_args, env)
    }

    /// Starts a broker with 2 cores on `dir`, which it owns from now on.
    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str], env: &[(&str, &str)]) -> Broker {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn(dir.path(), "127.0.0.1:0", &extra_args, &env, &log);
        Broker {
            child: Some(child),
            addr,
            dir,
            extra_args,
            env,
            log,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is running").id()
    }

    /// Sends a signal to the broker and waits for it to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("broker is running");
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within 30 s of signal {signal}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the broker again on the same data dir and the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        let (child, addr) = spawn(
            self.dir.path(),
            &self.addr.to_string(),
            &self.extra_args,
            &self.env,
            &self.log,
        );
        assert_eq!(addr, self.addr);
        self.child = Some(child);
    }

    pub fn logs(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Where a broker started with `--metrics-listen` serves its metrics
    /// (read back from its log, for port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        assert!(
            self.wait_for_log("serving metrics on ", Duration::from_secs(10)),
            "{}",
            self.logs()
        );
        self.logs()
            .split("serving metrics on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("metrics address in the log")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Whether the broker died on its own (a crash, a signal) before the
        // test ended.
        let mut died = None;
        if let Some(mut child) = self.child.take() {
            died = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            print_log_tail(&format!("broker {}", self.addr), died, &self.log);
        }
    }
}

/// Hands each line of `stream` to `each` on a thread of its own, until EOF.
/// It never stops reading early (a bad UTF-8 byte is replaced, not an end):
/// a process whose stderr pipe closes loses its log, and may die of it.
pub fn read_lines(
    stream: impl std::io::Read + Send + 'static,
    mut each: impl FnMut(String) + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            each(String::from_utf8_lossy(line).into_owned());
            buf.clear();
        }
    });
}

/// For a failing test: the last lines `who` logged, and whether it had
/// exited on its own (CI keeps only the test output).
pub fn print_log_tail(who: &str, died: Option<ExitStatus>, log: &Mutex<Vec<String>>) {
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    let tail = &log[log.len().saturating_sub(200)..];
    let end = died.map_or("still running".to_string(), |s| format!("had exited: {s}"));
    eprintln!(
        "--- {who} ({end}), last {} log lines:\n{}",
        tail.len(),
        tail.join("\n")
    );
}

fn spawn(
    dir: &Path,
    listen: &str,
    extra: &[String],
    env: &[(String, String)],
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(dir)
        .args(["--cores", "2"])
        .args(extra)
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringmq");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    read_lines(stderr, move |line| {
        if let Some(addr) = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
        {
            let _ = tx.send(addr);
        }
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let stacks = thread_stacks(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let logs = log.lock().unwrap().join("\n");
            panic!(
                "broker did not start listening within {START_TIMEOUT:?}\n{logs}\n\
                 --- its threads when the test gave up:\n{stacks}"
            );
        }
    }
}

/// Every thread's stack of process `pid` (by gdb, if installed), so that a
/// broker that hangs at start says where.
fn thread_stacks(pid: u32) -> String {
    let out = Command::new("timeout")
        .args([
            "30",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(no stacks: {e})"),
    }
}

/// Runs the `ringmq` CLI with the given args and stdin; returns (status, stdout, stderr).
pub fn cli(args: &[&str], stdin: &str) -> (std::process::ExitStatus, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmq cli");
    {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("cli output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

// ---- in-process log test helpers ----

use bytes::Bytes;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringmq_protocol::batch::BatchBuilder;

/// A glommio executor that is cheap to create (64 KiB io memory, depth 64).
pub fn small_executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .make()
        .expect("create a test executor")
}

/// A batch of `records` records whose values are `value_len` bytes derived
/// from `seed`, with first timestamp `ts`.
pub fn batch(seed: u64, records: u32, value_len: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::with_capacity(ts, 64 + records as usize * (value_len + 16));
    for r in 0..records {
        let v: Vec<u8> = (0..value_len)
            .map(|i| {
                (seed
                    .wrapping_mul(31)
                    .wrapping_add(u64::from(r) * 7 + i as u64)
                    % 251) as u8
            })
            .collect();
        b.push(ts, Some(&seed.to_le_bytes()), Some(&v), &[]);
    }
    b.finish(None)
}

/// Splits a read result into its batches (each verified).
pub fn split_batches(buf: &Bytes) -> Vec<Bytes> {
    ringmq_protocol::batch::batches(buf)
        .map(|b| b.expect("a read served a bad batch"))
        .collect()
}
