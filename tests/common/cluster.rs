//! A cluster of real `ringmq serve` processes on 127.0.0.1, for tests: each
//! node on one core, a temporary data dir, a client port and a metrics port
//! the kernel picks (read back from the log), and a peer port chosen up front
//! (every node must know every peer address before it starts), by binding
//! port 0 and releasing it. Another process may take such a port in between,
//! so a start that fails to bind is retried with fresh ports. Nodes are
//! killed by PID, at the latest when dropped. [`TestCluster::add_member`]
//! starts one more node that is not a controller (not in `--peers`), which
//! joins the running cluster.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringmq::cluster::admin::ClusterStatus;

use super::BIN;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One node of a [`TestCluster`].
pub struct ClusterNode {
    pub id: u32,
    child: Option<Child>,
    pub client: SocketAddr,
    pub metrics: SocketAddr,
    pub peer: SocketAddr,
    dir: tempfile::TempDir,
    args: Vec<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ClusterNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn logs(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a paused node looks, to the
    /// others, like one cut off by the network.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            let sig = if paused { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    /// Starts the node again on its data dir, client port and peer port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the node first");
        let (child, client, metrics) = spawn(
            self.dir.path(),
            &self.client.to_string(),
            &self.args,
            &self.log,
        )
        .unwrap_or_else(|e| panic!("node {} did not restart: {e}", self.id));
        assert_eq!(client, self.client);
        self.child = Some(child);
        self.metrics = metrics;
    }

    /// `ringmq cluster status` against this node: (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let http = self.metrics.to_string();
        let mut all: Vec<&str> = vec!["cluster"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--http", &http]);
        let (status, out, err) = super::cli(&all, "");
        (status.success(), out, err)
    }

    /// The cluster as this node sees it, through `ringmq cluster status --json`.
    pub fn status(&self) -> Result<ClusterStatus, String> {
        let (ok, out, err) = self.cli(&["status", "--json"]);
        if !ok {
            return Err(err);
        }
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let died = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.kill();
        if std::thread::panicking() {
            let who = format!("node {} ({})", self.id, self.client);
            super::print_log_tail(&who, died, &self.log);
        }
    }
}

/// N controllers, and the members added after them.
pub struct TestCluster {
    pub nodes: Vec<ClusterNode>,
    pub cluster_id: String,
    /// The `--peers` list every node is started with.
    peers: String,
}

impl TestCluster {
    /// Starts `n` nodes with these extra `serve` flags.
    pub fn start(n: usize, extra: &[&str]) -> TestCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match try_start(n, extra) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("cluster did not start (3 tries with fresh ports): {last}");
    }

    /// Starts node `nodes.len() + 1`, not a controller, with its own peer
    /// port and these extra `serve` flags; returns its id. It joins on its
    /// own (the test waits for that).
    pub fn add_member(&mut self, extra: &[&str]) -> u32 {
        let id = self.nodes.len() as u32 + 1;
        let mut last = String::new();
        for _ in 0..3 {
            let peer = free_port();
            let mut args: Vec<String> = [
                "--node-id",
                &id.to_string(),
                "--peers",
                &self.peers,
                "--peer-listen",
                &peer.to_string(),
                "--cluster-id",
                &self.cluster_id,
                "--metrics-listen",
                "127.0.0.1:0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let dir = tempfile::tempdir().expect("a temp dir");
            let log = Arc::new(Mutex::new(Vec::new()));
            match spawn(dir.path(), "127.0.0.1:0", &args, &log) {
                Ok((child, client, metrics)) => {
                    self.nodes.push(ClusterNode {
                        id,
                        child: Some(child),
                        client,
                        metrics,
                        peer,
                        dir,
                        args,
                        log,
                    });
                    return id;
                }
                Err(e) => last = e,
            }
        }
        panic!("node {id} did not start (3 tries with fresh ports): {last}");
    }

    pub fn node(&self, id: u32) -> &ClusterNode {
        &self.nodes[id as usize - 1]
    }

    pub fn node_mut(&mut self, id: u32) -> &mut ClusterNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Polls every running node's status until `ok` holds for all of them.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&ClusterStatus) -> bool,
    ) -> Vec<ClusterStatus> {
        let running: Vec<u32> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect();
        self.wait_on(&running, what, timeout, ok)
    }

    /// Polls the status of nodes `ids` until `ok` holds for all of them.
    pub fn wait_on(
        &self,
        ids: &[u32],
        what: &str,
        timeout: Duration,
        ok: impl Fn(&ClusterStatus) -> bool,
    ) -> Vec<ClusterStatus> {
        let deadline = Instant::now() + timeout;
        let last = loop {
            let last = ids
                .iter()
                .map(|&id| self.node(id).status())
                .collect::<Vec<_>>();
            if last.iter().all(|s| s.as_ref().is_ok_and(&ok)) {
                return last.into_iter().filter_map(Result::ok).collect();
            }
            if Instant::now() > deadline {
                break last;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.logs()))
            .collect();
        panic!(
            "not every node saw {what} within {timeout:?}: {last:#?}\n{}",
            logs.join("\n")
        );
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

fn try_start(n: usize, extra: &[&str]) -> Result<TestCluster, String> {
    let cluster_id = "test".to_owned();
    let peers: Vec<SocketAddr> = (0..n).map(|_| free_port()).collect();
    let list = peers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let id = i as u32 + 1;
        let mut args: Vec<String> = [
            "--node-id",
            &id.to_string(),
            "--peers",
            &list,
            "--cluster-id",
            &cluster_id,
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, client, metrics) = spawn(dir.path(), "127.0.0.1:0", &args, &log)?;
        nodes.push(ClusterNode {
            id,
            child: Some(child),
            client,
            metrics,
            peer: *peer,
            dir,
            args,
            log,
        });
    }
    Ok(TestCluster {
        nodes,
        cluster_id,
        peers: list,
    })
}

/// Starts one node; its client and metrics addresses from its log.
fn spawn(
    dir: &std::path::Path,
    listen: &str,
    args: &[String],
    log: &Arc<Mutex<Vec<String>>>,
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(dir)
        .args(["--cores", "1"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    let addr_after = |line: &str, marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
    };
    super::read_lines(stderr, move |line| {
        if let Some(a) = addr_after(&line, "serving metrics on ") {
            let _ = tx.send(("metrics", a));
        }
        if let Some(a) = addr_after(&line, "listening on ") {
            let _ = tx.send(("client", a));
        }
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let (mut client, mut metrics) = (None, None);
    while client.is_none() || metrics.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(("metrics", a)) => metrics = Some(a),
            Ok((_, a)) => client = Some(a),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let logs = log.lock().unwrap().join("\n");
                return Err(format!("node did not start:\n{logs}"));
            }
        }
    }
    match (client, metrics) {
        (Some(c), Some(m)) => Ok((child, c, m)),
        _ => Err("unreachable".into()),
    }
}
