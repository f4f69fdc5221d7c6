//! Consumer-group harness: `ringmq consume --group` processes whose stdout
//! (one record value per line) and stderr (group events) are collected as
//! they arrive, and one-shot group requests to a broker through the client.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringmq_client::{Client, ClientConfig, ClientError};
use ringmq_protocol::{
    CommitOffsetsRequest, DescribeGroupRequest, DescribeGroupResponse, FetchOffsetsRequest,
    PartitionOffset, Request, ResponseBody,
};

use super::{small_executor, BIN};

/// One `ringmq consume TOPIC --group G` process.
pub struct GroupConsumer {
    child: Option<Child>,
    pub name: String,
    values: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl GroupConsumer {
    /// Starts a consumer of `topic` in `group` reading from the beginning
    /// when the group has no committed offset; `extra` adds flags.
    pub fn start(name: &str, bootstrap: &str, topic: &str, group: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["consume", topic, "--group", group, "--from-beginning"])
            .args(["--bootstrap", bootstrap])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringmq consume --group");
        let values = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = values.clone();
        super::read_lines(stdout, move |line| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line)
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = events.clone();
        super::read_lines(stderr, move |line| {
            let mut events = sink.lock().unwrap_or_else(PoisonError::into_inner);
            events.push((Instant::now(), line));
        });
        GroupConsumer {
            child: Some(child),
            name: name.to_owned(),
            values,
            events,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this harness started and has
        // not reaped yet (`child` is still Some).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Signals the process and waits for it to exit (at most 20 s).
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits for the process to exit on its own (at most `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every value printed so far.
    pub fn values(&self) -> Vec<String> {
        self.values.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.values.lock().unwrap().len()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        let events = self.events.lock().unwrap();
        let lines: Vec<&str> = events.iter().map(|(_, l)| l.as_str()).collect();
        lines.join("\n")
    }

    /// Whether a stderr line after `since` contains `needle`.
    pub fn said_since(&self, since: Instant, needle: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|(t, l)| *t >= since && l.contains(needle))
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one request to the broker at `bootstrap` and returns the answer.
pub fn request(bootstrap: &str, req: Request) -> Result<ResponseBody, ClientError> {
    let bootstrap = bootstrap.to_owned();
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&bootstrap)).await?;
        client.request(&req).await
    })
}

pub fn describe(bootstrap: &str, group: &str) -> DescribeGroupResponse {
    let req = Request::DescribeGroup(DescribeGroupRequest {
        group: group.to_owned(),
    });
    match request(bootstrap, req) {
        Ok(ResponseBody::DescribeGroup(d)) => d,
        other => panic!("DescribeGroup answered {other:?}"),
    }
}

/// Committed offsets of `group`, by (topic, partition).
pub fn committed(bootstrap: &str, group: &str) -> BTreeMap<(String, u32), u64> {
    let req = Request::FetchOffsets(FetchOffsetsRequest {
        group: group.to_owned(),
        topics: Vec::new(),
    });
    match request(bootstrap, req) {
        Ok(ResponseBody::FetchOffsets(f)) => f
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect(),
        other => panic!("FetchOffsets answered {other:?}"),
    }
}

/// A commit in the name of `member_id` at `generation`.
pub fn commit(
    bootstrap: &str,
    group: &str,
    member_id: &str,
    generation: u32,
    offsets: Vec<PartitionOffset>,
) -> Result<ResponseBody, ClientError> {
    request(
        bootstrap,
        Request::CommitOffsets(CommitOffsetsRequest {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            generation,
            offsets,
        }),
    )
}

/// Partition → holding member id, for the partitions someone holds.
pub fn holders(d: &DescribeGroupResponse) -> BTreeMap<(String, u32), String> {
    d.partitions
        .iter()
        .filter_map(|p| Some(((p.topic.clone(), p.partition), p.holder.clone()?)))
        .collect()
}

/// Member id → number of partitions it holds.
pub fn counts(d: &DescribeGroupResponse) -> HashMap<String, usize> {
    d.members
        .iter()
        .map(|m| {
            let n = m.partitions.iter().map(|t| t.partitions.len()).sum();
            (m.member_id.clone(), n)
        })
        .collect()
}

/// Whether `d` has `members` members, every one of `partitions` partitions
/// held, and member counts as even as they can be, with nothing waiting to
/// be released.
pub fn settled(d: &DescribeGroupResponse, members: usize, partitions: usize) -> bool {
    let counts = counts(d);
    let lo = partitions / members.max(1);
    let hi = lo + usize::from(partitions % members.max(1) != 0);
    d.state == ringmq_protocol::GroupState::Stable
        && d.members.len() == members
        && holders(d).len() == partitions
        && counts.values().all(|n| (lo..=hi).contains(n))
}

/// Polls `f` every 50 ms until it gives `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
