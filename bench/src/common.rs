//! What `produce`, `consume` and `e2e` share: the flags, the broker (given
//! or embedded), the executors, the clock stamped into payloads, and the
//! collection of latency histograms into progress lines, a summary and an
//! HdrHistogram interval log.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use ringmq_client::{Acks, Client, ClientConfig, ClientError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Flags common to `produce`, `consume` and `e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Brokers to use, `host:port[,host:port…]`.
    #[arg(long, value_delimiter = ',', required_unless_present = "embedded")]
    pub bootstrap: Vec<String>,
    /// Start a broker of our own (`ringmq serve`, the binary next to this
    /// one or $RINGMQ_BIN) on a temporary data dir, and stop it at the end.
    #[arg(long, conflicts_with = "bootstrap")]
    pub embedded: bool,
    /// `--flush` of the embedded broker: an interval (`100ms`) or `every-batch`.
    #[arg(long, default_value = "100ms")]
    pub flush: String,
    /// `--cores` of the embedded broker.
    #[arg(long, default_value_t = 1)]
    pub broker_cores: usize,
    /// `--retention-bytes` of the embedded broker (checked every second),
    /// so a long run does not fill the disk; unset keeps everything.
    #[arg(long, value_parser = ringmq::config::parse_size)]
    pub retention_bytes: Option<u64>,
    /// Executors (threads) of the load generator. The default of 1 leaves
    /// the other core of a 2-core machine to the broker.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Topic; created with `--partitions` if it does not exist.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Messages in all (split over the producers). Default 1,000,000 unless
    /// `--duration` is given.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Run for this long instead (`10s`, `1min`).
    #[arg(long, value_parser = ringmq::config::parse_duration)]
    pub duration: Option<Duration>,
    /// Message (value) size in bytes; at least 16 (it carries a timestamp).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Producer batch size (`64KiB`).
    #[arg(long, default_value = "64KiB", value_parser = ringmq::config::parse_size)]
    pub batch_bytes: u64,
    /// Producer linger (`1ms`).
    #[arg(long, default_value = "1ms", value_parser = ringmq::config::parse_duration)]
    pub linger: Duration,
    /// Producers, each with its own connection, spread over the executors.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers (`consume`, `e2e`), each reading a share of the partitions,
    /// assigned statically (not as a consumer group, whose heartbeats and
    /// commits would be measured too).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// `0`, `1` or `all`.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: Acks,
    /// Fixed offered rate in messages/s over all producers (open loop).
    /// Latency is then counted from each message's scheduled send time, so
    /// a generator that falls behind does not hide the wait
    /// (coordinated omission).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Batches in flight per producer, in all and per partition (the
    /// client's own default caps a partition at 5, as Kafka's does, which
    /// bounds one partition to 5 batches per round trip).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write an HdrHistogram interval log (one histogram per second, ns) here.
    #[arg(long)]
    pub histogram_out: Option<PathBuf>,
    /// Authenticate as this user (SASL SCRAM-SHA-256), with the password
    /// from `--password-file` or RINGMQ_PASSWORD.
    #[arg(long, env = "RINGMQ_USER")]
    pub user: Option<String>,
    /// File whose first line is the `--user`'s password.
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "0" | "none" => Ok(Acks::None),
        "1" | "leader" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err("0, 1 or all".into()),
    }
}

pub fn acks_str(a: Acks) -> &'static str {
    match a {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

impl Common {
    /// Messages to send in all, or `None` for a `--duration` run.
    pub fn total_messages(&self) -> Option<u64> {
        match (self.messages, self.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(1_000_000),
        }
    }

    pub fn client_config(&self, bootstrap: &str) -> Result<ClientConfig, BoxError> {
        let mut c = ClientConfig::new(bootstrap);
        c.connection.max_in_flight = c.connection.max_in_flight.max(self.max_in_flight);
        if let Some(user) = &self.user {
            let password = ringmq::cli::read_password(
                self.password_file.as_deref(),
                false,
                "RINGMQ_PASSWORD",
            )?
            .ok_or_else(|| format!("--user {user} needs --password-file or RINGMQ_PASSWORD"))?;
            c.connection.sasl = Some(ringmq_client::SaslConfig {
                username: user.clone(),
                password: ringmq_client::Password::new(password),
            });
        }
        Ok(c)
    }

    pub fn producer_config(&self) -> ringmq_client::ProducerConfig {
        ringmq_client::ProducerConfig {
            acks: self.acks,
            batch_bytes: self.batch_bytes as usize,
            linger: self.linger,
            max_in_flight: self.max_in_flight,
            max_in_flight_per_partition: self.max_in_flight,
            // The numbers here were measured with several batches per
            // partition in flight, which idempotence (now on by default)
            // rules out: keep them comparable.
            idempotent: false,
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------- broker

/// The broker under test: the `--bootstrap` list, or a child process.
pub struct Broker {
    pub bootstrap: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    pub fn start(c: &Common) -> Result<Broker, BoxError> {
        if !c.embedded {
            return Ok(Broker {
                bootstrap: c.bootstrap.join(","),
                child: None,
                _dir: None,
            });
        }
        let bin = match std::env::var_os("RINGMQ_BIN") {
            Some(b) => PathBuf::from(b),
            None => std::env::current_exe()?
                .parent()
                .ok_or("no directory for the ringmq binary")?
                .join("ringmq"),
        };
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it (cargo build --release) or set RINGMQ_BIN",
                bin.display()
            )
            .into());
        }
        let dir = tempfile::Builder::new().prefix("ringmq-bench-").tempdir()?;
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--cores")
            .arg(c.broker_cores.to_string())
            .arg("--flush")
            .arg(&c.flush)
            .args(c.retention_bytes.iter().flat_map(|r| {
                [
                    "--retention-bytes".to_owned(),
                    r.to_string(),
                    "--retention-check-interval".to_owned(),
                    "1s".to_owned(),
                ]
            }))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        // Reads the broker's log: the address, then warnings and errors
        // (passed on), until the broker exits.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if let Some(t) = &tx {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = t.send(addr);
                        tx = None;
                        continue;
                    }
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("broker: {line}");
                }
            }
        });
        let pid = child.id();
        let mut broker = Broker {
            bootstrap: String::new(),
            child: Some(child),
            _dir: Some(dir),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) if !addr.is_empty() => broker.bootstrap = addr,
            _ => return Err(format!("embedded broker (pid {pid}) did not log its address").into()),
        }
        Ok(broker)
    }

    /// CPU seconds (user + system) the embedded broker has used so far.
    pub fn cpu_s(&self) -> Option<f64> {
        let pid = self.pid()?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set of the embedded broker, MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    /// Anonymous resident memory of the embedded broker (heap, stacks; not
    /// the mapped segment pages, which VmRSS also counts), MiB.
    pub fn anon_mib(&self) -> Option<f64> {
        self.status_mib("RssAnon:")
    }

    fn status_mib(&self, key: &str) -> Option<f64> {
        let pid = self.pid()?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = s
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM (a clean stop), then SIGKILL after 10 s; by PID only.
            let pid = child.id() as libc::pid_t;
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > until {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// CPU seconds (user + system) of this process, all threads.
pub fn self_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for ch in s.chars() {
        if esc {
            if ch.is_ascii_alphabetic() {
                esc = false;
            }
        } else if ch == '\x1b' {
            esc = true;
        } else {
            out.push(ch);
        }
    }
    out
}

/// Creates the topic if it does not exist; returns its partition count.
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: u32,
) -> Result<u32, ClientError> {
    let admin = client.admin();
    match admin.partition_count(topic).await {
        Ok(n) => Ok(n),
        Err(_) => {
            match admin.create_topic(topic, partitions, 1).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(ringmq_protocol::ErrorCode::TopicAlreadyExists) => {}
                Err(e) => return Err(e),
            }
            // The topic's partitions open on their shards; wait until it answers.
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                match admin.partition_count(topic).await {
                    Ok(n) => return Ok(n),
                    Err(e) if Instant::now() > until => return Err(e),
                    Err(_) => glommio::timer::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }
}

// ------------------------------------------------------------------ clock

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on one monotonic clock shared by every thread of the process
/// (what producers stamp into payloads and consumers subtract from).
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn init_clock() {
    let _ = now_ns();
}

/// A payload of `size` bytes (at least 16): the send time (ns) in its first
/// 8 bytes, the rest a fixed pattern.
pub fn payload(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size.max(16)];
    for (i, b) in v.iter_mut().enumerate().skip(8) {
        *b = b'a' + (i % 26) as u8;
    }
    v
}

pub fn stamp(buf: &mut [u8], t_ns: u64) {
    buf[..8].copy_from_slice(&t_ns.to_le_bytes());
}

pub fn read_stamp(buf: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(..8)?.try_into().ok()?))
}

// ----------------------------------------------------------------- stats

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

/// One executor's figures since its last report.
pub struct Interval {
    pub hist: Histogram<u64>,
    pub msgs: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// What an executor accumulates and sends to the main thread once a second
/// (and at the end).
pub struct Recorder {
    cur: RefCell<Interval>,
    tx: mpsc::Sender<Report>,
}

pub enum Report {
    Interval(Interval),
    /// An executor's work is over.
    Done,
    /// An executor failed.
    Failed(String),
}

impl Recorder {
    pub fn new(tx: mpsc::Sender<Report>) -> Rc<Recorder> {
        let r = Rc::new(Recorder {
            cur: RefCell::new(Interval {
                hist: new_hist(),
                msgs: 0,
                bytes: 0,
                errors: 0,
            }),
            tx,
        });
        let weak = Rc::downgrade(&r);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                match weak.upgrade() {
                    Some(r) => r.flush(),
                    None => return,
                }
            }
        })
        .detach();
        r
    }

    /// `n` messages of `bytes` bytes done, each `latency_ns` after its start.
    #[inline]
    pub fn record(&self, latency_ns: u64, n: u64, bytes: u64) {
        let mut c = self.cur.borrow_mut();
        let _ = c.hist.record_n(latency_ns.max(1), n);
        c.msgs += n;
        c.bytes += bytes;
    }

    /// Counts messages without a latency.
    pub fn count(&self, n: u64, bytes: u64) {
        let mut c = self.cur.borrow_mut();
        c.msgs += n;
        c.bytes += bytes;
    }

    pub fn latency(&self, latency_ns: u64) {
        let _ = self.cur.borrow_mut().hist.record(latency_ns.max(1));
    }

    pub fn error(&self, n: u64) {
        self.cur.borrow_mut().errors += n;
    }

    pub fn flush(&self) {
        let mut c = self.cur.borrow_mut();
        let iv = std::mem::replace(
            &mut *c,
            Interval {
                hist: new_hist(),
                msgs: 0,
                bytes: 0,
                errors: 0,
            },
        );
        let _ = self.tx.send(Report::Interval(iv));
    }

    pub fn done(&self) {
        self.flush();
        let _ = self.tx.send(Report::Done);
    }
}

/// Runs `work(executor index, recorder)` on `cores` executors and collects
/// their reports until all are done: progress lines to stderr, an interval
/// log, the totals.
pub fn run_executors<F, Fut>(
    c: &Common,
    mode: &str,
    broker: &Broker,
    work: F,
) -> Result<Summary, BoxError>
where
    F: Fn(usize, Rc<Recorder>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + 'static,
{
    init_clock();
    let (tx, rx) = mpsc::channel::<Report>();
    let mut handles = Vec::new();
    for e in 0..c.cores.max(1) {
        let tx = tx.clone();
        let work = work.clone();
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("bench-{e}"))
            .preempt_timer(Duration::from_millis(5))
            .spawn(move || async move {
                let rec = Recorder::new(tx.clone());
                match work(e, rec.clone()).await {
                    Ok(()) => rec.done(),
                    Err(err) => {
                        rec.flush();
                        let _ = tx.send(Report::Failed(err.to_string()));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        handles.push(h);
    }
    drop(tx);

    let start = Instant::now();
    let start_wall = SystemTime::now();
    let cpu0 = self_cpu_s();
    let broker_cpu0 = broker.cpu_s();
    let mut log_file = match &c.histogram_out {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let mut log = match log_file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment(&format!("ringmq-bench {mode}, latency in ns"))
                .with_start_time(start_wall)
                .with_base_time(start_wall)
                .begin_log_with(f, &mut serializer)?,
        ),
        None => None,
    };
    let mut total = new_hist();
    let (mut msgs, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut iv = new_hist();
    let (mut iv_msgs, mut iv_bytes) = (0u64, 0u64);
    let mut iv_start = Duration::ZERO;
    let mut pending_lines: Vec<String> = Vec::new();
    let mut printing = false;
    let mut rss_max: f64 = 0.0;
    let mut rss_series: Vec<f64> = Vec::new();
    let rss_start = broker.rss_mib();
    let mut anon_series: Vec<f64> = broker.anon_mib().into_iter().collect();
    let mut failed = None;
    let mut running = c.cores.max(1);
    let mut second = 1u64;
    let mut last_done = start.elapsed();
    while running > 0 {
        let next = start + Duration::from_secs(second);
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Report::Interval(i)) => {
                iv.add(&i.hist).ok();
                iv_msgs += i.msgs;
                iv_bytes += i.bytes;
                errors += i.errors;
                if i.msgs > 0 {
                    last_done = start.elapsed();
                }
            }
            Ok(Report::Done) => running -= 1,
            Ok(Report::Failed(e)) => {
                running -= 1;
                failed.get_or_insert(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next || running == 0 {
            let now = start.elapsed();
            let rss = broker.rss_mib();
            if let Some(r) = rss {
                rss_max = rss_max.max(r);
                rss_series.push(r);
            }
            let anon = broker.anon_mib();
            if let Some(a) = anon {
                anon_series.push(a);
            }
            if running > 0 {
                let dt = (now - iv_start).as_secs_f64();
                let line = format!(
                    "[{:>4.0}s] {:>11.0} msgs/s {:>8.1} MB/s  p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>9.1} µs{}",
                    now.as_secs_f64(),
                    iv_msgs as f64 / dt,
                    iv_bytes as f64 / dt / 1e6,
                    iv.value_at_quantile(0.5) as f64 / 1e3,
                    iv.value_at_quantile(0.99) as f64 / 1e3,
                    iv.max() as f64 / 1e3,
                    rss.map_or(String::new(), |r| format!(
                        "  broker RSS {r:.0} MiB (anon {:.0})",
                        anon.unwrap_or(0.0)
                    )),
                );
                if printing {
                    eprintln!("{line}");
                } else {
                    pending_lines.push(line);
                    if now >= Duration::from_secs(2) {
                        printing = true;
                        for l in pending_lines.drain(..) {
                            eprintln!("{l}");
                        }
                    }
                }
            }
            if let Some(log) = log.as_mut() {
                if !iv.is_empty() {
                    let _ = log.write_histogram(&iv, iv_start, now - iv_start, Tag::new(mode));
                }
            }
            total.add(&iv).ok();
            msgs += iv_msgs;
            bytes += iv_bytes;
            iv.reset();
            iv_msgs = 0;
            iv_bytes = 0;
            iv_start = now;
            second += 1;
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let client_cpu_s = self_cpu_s() - cpu0;
    let broker_cpu_s = match (broker_cpu0, broker.cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let per_msg = |cpu: f64| (msgs > 0).then(|| cpu * 1e9 / msgs as f64);
    drop(log);
    if let Some(f) = log_file.as_mut() {
        f.flush()?;
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    let secs = last_done.as_secs_f64().max(1e-9);
    Ok(Summary {
        mode: mode.to_owned(),
        size: c.size,
        partitions: c.partitions,
        producers: c.producers,
        consumers: c.consumers,
        acks: acks_str(c.acks).to_owned(),
        rate: c.rate,
        flush: c.embedded.then(|| c.flush.clone()),
        messages: msgs,
        errors,
        secs,
        msgs_per_s: msgs as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        p50_us: q(&total, 0.5),
        p90_us: q(&total, 0.9),
        p99_us: q(&total, 0.99),
        p999_us: q(&total, 0.999),
        p9999_us: q(&total, 0.9999),
        max_us: total.max() as f64 / 1e3,
        latency_samples: total.len(),
        broker_rss_start_mib: rss_start,
        broker_rss_max_mib: (rss_max > 0.0).then_some(rss_max),
        broker_rss_end_mib: rss_series.last().copied(),
        broker_anon_series_mib: anon_series,
        client_cpu_s,
        client_cpu_ns_per_msg: per_msg(client_cpu_s),
        broker_cpu_s,
        broker_cpu_ns_per_msg: broker_cpu_s.and_then(per_msg),
    })
}

fn q(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

#[derive(serde::Serialize, Debug)]
pub struct Summary {
    pub mode: String,
    pub size: usize,
    pub partitions: u32,
    pub producers: usize,
    pub consumers: usize,
    pub acks: String,
    pub rate: Option<u64>,
    pub flush: Option<String>,
    pub messages: u64,
    pub errors: u64,
    pub secs: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    pub latency_samples: u64,
    pub broker_rss_start_mib: Option<f64>,
    pub broker_rss_max_mib: Option<f64>,
    pub broker_rss_end_mib: Option<f64>,
    /// Anonymous RSS of the embedded broker at the start and once a second.
    pub broker_anon_series_mib: Vec<f64>,
    /// CPU of this load generator (all its threads) during the run.
    pub client_cpu_s: f64,
    pub client_cpu_ns_per_msg: Option<f64>,
    /// CPU of the embedded broker during the run.
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_ns_per_msg: Option<f64>,
}

impl Summary {
    pub fn print(&self, json: bool, latency_of: &str) {
        if json {
            println!("{}", serde_json::to_string(self).expect("serializable"));
            return;
        }
        println!(
            "{}: {} msgs of {} B in {:.2} s: {:.0} msgs/s, {:.1} MB/s{}",
            self.mode,
            self.messages,
            self.size,
            self.secs,
            self.msgs_per_s,
            self.mb_per_s,
            if self.errors > 0 {
                format!(", {} FAILED", self.errors)
            } else {
                String::new()
            }
        );
        println!(
            "{latency_of} latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.p9999_us, self.max_us
        );
        println!(
            "CPU: load generator {:.2} s ({:.0} ns/msg){}",
            self.client_cpu_s,
            self.client_cpu_ns_per_msg.unwrap_or(0.0),
            match (self.broker_cpu_s, self.broker_cpu_ns_per_msg) {
                (Some(s), Some(n)) => format!(", broker {s:.2} s ({n:.0} ns/msg)"),
                _ => String::new(),
            }
        );
        if let (Some(a), Some(m), Some(e)) = (
            self.broker_rss_start_mib,
            self.broker_rss_max_mib,
            self.broker_rss_end_mib,
        ) {
            println!("broker RSS MiB: start {a:.0}, max {m:.0}, end {e:.0}");
        }
        if let (Some(f), Some(l)) = (
            self.broker_anon_series_mib.first(),
            self.broker_anon_series_mib.last(),
        ) {
            let m = self
                .broker_anon_series_mib
                .iter()
                .copied()
                .fold(0.0, f64::max);
            println!("broker anonymous RSS MiB: start {f:.0}, max {m:.0}, end {l:.0}");
        }
    }
}

/// Round-robin share: the items `i` of `0..n` with `i % parts == k`.
pub fn share(n: usize, parts: usize, k: usize) -> impl Iterator<Item = usize> {
    (0..n).filter(move |i| i % parts.max(1) == k)
}
