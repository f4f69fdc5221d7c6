//! The broker under systemd, with this test playing systemd's side: it owns
//! the `NOTIFY_SOCKET` datagram socket and asks for a watchdog through
//! `WATCHDOG_USEC`, as a `Type=notify` unit with `WatchdogSec=` would.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{cli, Broker};

/// systemd's end of the notify protocol: every datagram the broker sent.
struct Manager {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
    seen: Vec<String>,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Manager {
            socket,
            path: path.to_str().unwrap().to_owned(),
            _dir: dir,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one has a line equal to `line`; returns its index in `seen`.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut next = self.seen.len();
        loop {
            while next < self.seen.len() {
                if self.seen[next].lines().any(|l| l == line) {
                    return next;
                }
                next += 1;
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {timeout:?}; got {:?}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

#[test]
fn ready_watchdog_and_stopping_then_a_clean_restart() {
    let mut systemd = Manager::new();
    let env = [
        ("NOTIFY_SOCKET", systemd.path.as_str()),
        ("WATCHDOG_USEC", "400000"), // pings every 200 ms
    ];
    let mut broker = Broker::start_with_env(&[], &env);
    let b = broker.bootstrap();

    let ready = systemd.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        systemd.seen[..ready]
            .iter()
            .any(|m| m.contains("STATUS=starting")),
        "a starting status comes first: {:?}",
        systemd.seen
    );
    assert!(
        systemd.seen[ready].contains("STATUS=serving on"),
        "{:?}",
        systemd.seen
    );
    // READY=1 means every core listens: the first request is answered.
    let (st, out, err) = cli(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "4",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "create: {out}{err}");

    let first = systemd.wait_for("WATCHDOG=1", Duration::from_secs(5));
    assert!(first > ready);
    systemd.wait_for("WATCHDOG=1", Duration::from_secs(5));

    let (st, out, err) = cli(
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--bootstrap",
            &b,
        ],
        "a:1\nb:2\nc:3\n",
    );
    assert!(st.success(), "produce: {out}{err}");

    let status = broker.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", broker.logs());
    systemd.wait_for("STOPPING=1", Duration::from_secs(5));

    let before_restart = broker.log.lock().unwrap().len();
    broker.restart();
    systemd.wait_for("READY=1", Duration::from_secs(30));
    let after: Vec<String> = broker.log.lock().unwrap()[before_restart..].to_vec();
    let after = after.join("\n");
    assert!(
        after.contains("partition log opened after a clean shutdown"),
        "{after}"
    );
    assert!(!after.contains("partition log recovered"), "{after}");

    let (st, out, err) = cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "3",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "consume: {err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["1", "2", "3"]);
}
