//! Looking at a running cluster from a test: waiting for a condition,
//! running the CLI, asking a node for Metadata, scraping its metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringmq::cluster::admin::ClusterStatus;
use ringmq_client::{Client, ClientConfig};
use ringmq_protocol::MetadataResponse;

/// How long a cluster test waits for anything by default.
pub const WAIT: Duration = Duration::from_secs(30);

/// `serve` flags for tests that kill nodes: death noticed in 2 s, a
/// follower out of sync after 3 s, and small segments (every partition
/// preallocates one, on a shared disk).
pub const FAST_FAILURE: &[&str] = &[
    "--node-timeout",
    "2s",
    "--replace-after",
    "10min",
    "--replica-lag",
    "3s",
    "--segment-bytes",
    "1MiB",
];

/// A controller leader, and exactly `n` members, all alive.
pub fn healthy(n: usize) -> impl Fn(&ClusterStatus) -> bool {
    move |s| {
        let members: Vec<_> = s.nodes.iter().filter(|v| v.member).collect();
        s.leader.is_some() && members.len() == n && members.iter().all(|v| v.alive == Some(true))
    }
}

/// Polls `probe` every 200 ms until it answers, or panics after [`WAIT`].
pub fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = probe() {
            return t;
        }
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `ringmq` CLI: (exit ok, stdout, stderr).
pub fn cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let (status, out, err) = super::cli(args, stdin);
    (status.success(), out, err)
}

/// `ringmq topic create NAME --partitions P [--replication R]` through
/// `bootstrap`, which must succeed; its stdout.
pub fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: u32,
    replication: Option<u16>,
) -> String {
    let partitions = partitions.to_string();
    let replication = replication.map(|r| r.to_string());
    let mut args = vec!["topic", "create", name, "--partitions", &partitions];
    if let Some(r) = &replication {
        args.extend(["--replication", r.as_str()]);
    }
    args.extend(["--bootstrap", bootstrap]);
    let (ok, out, err) = cli(&args, "");
    assert!(ok, "creating topic {name}: {err}");
    out
}

/// `0\n1\n...`: numbered lines for `ringmq produce`.
pub fn numbers(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{i}\n")).collect()
}

/// Metadata for every topic, as the node at `addr` answers it.
pub fn metadata(addr: SocketAddr) -> Option<MetadataResponse> {
    super::small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addr.to_string()))
            .await
            .ok()?;
        client.admin().metadata(None).await.ok()
    })
}

/// The Prometheus text a node's metrics listener serves.
pub fn scrape(metrics: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(metrics).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200 OK\r\n").then_some(out)
}
