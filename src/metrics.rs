//! Metrics in Prometheus' text exposition (OpenMetrics) format, served on
//! `metrics_listen` by a plain thread off the executors.
//!
//! Every core owns its own series (label `core`), resolved once when the core
//! starts and kept in a thread-local, so counting a request is a few
//! uncontended atomic adds on the core's own cache lines: no lock, no lookup.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ringmq_protocol::{ApiKey, ErrorCode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabel {
    core: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    core: u32,
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    core: u32,
    topic: String,
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    group: String,
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    api: String,
    node: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MechanismLabel {
    mechanism: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    api: String,
    code: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

/// The process-wide families; each core takes its own children from them.
struct Families {
    registry: Registry,
    requests: Family<ApiLabels, Counter>,
    bytes_in: Family<ApiLabels, Counter>,
    bytes_out: Family<ApiLabels, Counter>,
    latency: Family<ApiLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    connections: Family<CoreLabel, Gauge>,
    busy: Family<CoreLabel, Counter<f64>>,
    topic_requests: Family<TopicLabels, Counter>,
    topic_bytes: Family<TopicLabels, Counter>,
    memory: Family<CoreLabel, Gauge>,
    cold_reads: Gauge,
    start_offset: Family<PartitionLabels, Gauge>,
    end_offset: Family<PartitionLabels, Gauge>,
    partition_bytes: Family<PartitionLabels, Gauge>,
    rebalances: Family<CoreLabel, Counter>,
    group_members: Family<GroupLabel, Gauge>,
    group_lag: Family<LagLabels, Gauge>,
    forwarded: Family<ForwardLabels, Counter>,
    under_replicated: Gauge,
    offline: Gauge,
    throttled: Counter,
    throttle_seconds: Counter<f64>,
    auth_failures: Family<MechanismLabel, Counter>,
    denied: Family<OperationLabel, Counter>,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let mut registry = Registry::with_prefix("ringmq");
        let f = Families {
            requests: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            errors: Family::default(),
            connections: Family::default(),
            busy: Family::default(),
            topic_requests: Family::default(),
            topic_bytes: Family::default(),
            memory: Family::default(),
            cold_reads: Gauge::default(),
            start_offset: Family::default(),
            end_offset: Family::default(),
            partition_bytes: Family::default(),
            rebalances: Family::default(),
            group_members: Family::default(),
            group_lag: Family::default(),
            forwarded: Family::default(),
            under_replicated: Gauge::default(),
            offline: Gauge::default(),
            throttled: Counter::default(),
            throttle_seconds: Counter::default(),
            auth_failures: Family::default(),
            denied: Family::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests answered, by API", f.requests.clone());
        registry.register(
            "request_bytes",
            "Request body bytes received, by API",
            f.bytes_in.clone(),
        );
        registry.register(
            "response_record_bytes",
            "Record bytes sent in fetch answers",
            f.bytes_out.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from decoded request to answer, by API",
            f.latency.clone(),
        );
        registry.register(
            "errors",
            "Requests answered with an error, by code",
            f.errors.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            f.connections.clone(),
        );
        registry.register(
            "core_busy_seconds",
            "Time each core's executor spent running tasks",
            f.busy.clone(),
        );
        registry.register(
            "topic_requests",
            "Produce and fetch requests answered, per topic",
            f.topic_requests.clone(),
        );
        registry.register(
            "topic_record_bytes",
            "Record bytes produced to and fetched from each topic",
            f.topic_bytes.clone(),
        );
        registry.register(
            "memory_budget_used_bytes",
            "Bytes of each core's request memory budget in use",
            f.memory.clone(),
        );
        registry.register(
            "cold_read_bytes",
            "Bytes held by reads of sealed segments (all cores; bounded by cold_read_budget)",
            f.cold_reads.clone(),
        );
        registry.register(
            "partition_start_offset",
            "First offset still stored, per partition",
            f.start_offset.clone(),
        );
        registry.register(
            "partition_end_offset",
            "Offset the next record will get (the high watermark), per partition",
            f.end_offset.clone(),
        );
        registry.register(
            "partition_size_bytes",
            "Bytes of batches stored, per partition",
            f.partition_bytes.clone(),
        );
        registry.register(
            "group_rebalances",
            "Consumer group generation bumps, on the coordinating core",
            f.rebalances.clone(),
        );
        registry.register(
            "group_members",
            "Members of each consumer group",
            f.group_members.clone(),
        );
        registry.register(
            "group_lag",
            "Records between a group's committed offset and the partition's end, per partition",
            f.group_lag.clone(),
        );
        registry.register(
            "forwarded_requests",
            "Requests this node forwarded to the node that serves them, by API and node",
            f.forwarded.clone(),
        );
        registry.register(
            "under_replicated_partitions",
            "Partitions of the cluster with fewer in-sync copies than replicas, as this node applied the metadata",
            f.under_replicated.clone(),
        );
        registry.register(
            "offline_partitions",
            "Partitions of the cluster with no live in-sync copy",
            f.offline.clone(),
        );
        registry.register(
            "throttled_requests",
            "Requests over a quota, whose connection was then muted",
            f.throttled.clone(),
        );
        registry.register(
            "throttle_seconds",
            "Time connections were muted for quotas",
            f.throttle_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Connections refused at authentication (no credentials, a failed exchange), by mechanism",
            f.auth_failures.clone(),
        );
        registry.register(
            "authorization_denied",
            "Requests refused NOT_AUTHORIZED by the ACLs, by operation",
            f.denied.clone(),
        );
        Families { registry, ..f }
    })
}

/// The `api` label: the API's name in snake case.
fn api_label(api: ApiKey) -> &'static str {
    match api {
        ApiKey::ApiVersions => "api_versions",
        ApiKey::Metadata => "metadata",
        ApiKey::CreateTopic => "create_topic",
        ApiKey::DeleteTopic => "delete_topic",
        ApiKey::ListTopics => "list_topics",
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::JoinGroup => "join_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::CommitOffsets => "commit_offsets",
        ApiKey::FetchOffsets => "fetch_offsets",
        ApiKey::DescribeGroup => "describe_group",
        ApiKey::ListGroups => "list_groups",
        ApiKey::ForwardHello => "forward_hello",
        ApiKey::ReplicaFetch => "replica_fetch",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        ApiKey::UpsertUser => "upsert_user",
        ApiKey::DeleteUser => "delete_user",
        ApiKey::ListUsers => "list_users",
        ApiKey::AlterAcl => "alter_acl",
        ApiKey::ListAcls => "list_acls",
        ApiKey::AlterQuota => "alter_quota",
        ApiKey::ListQuotas => "list_quotas",
    }
}

/// One API's series on one core.
struct ApiSeries {
    requests: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    latency: Histogram,
}

/// One core's series, resolved once.
struct CoreSeries {
    id: u32,
    apis: Vec<ApiSeries>,
    connections: Gauge,
    busy: Counter<f64>,
    busy_seen: Duration,
    rebalances: Counter,
    /// Produce and fetch series of each topic this core has served, by name.
    topics: HashMap<String, TopicSeries>,
}

/// A topic's produce and fetch series on one core.
struct TopicSeries {
    produce_requests: Counter,
    produce_bytes: Counter,
    fetch_requests: Counter,
    fetch_bytes: Counter,
}

impl TopicSeries {
    fn new(core: u32, topic: &str) -> TopicSeries {
        let f = families();
        let l = |api: &str| TopicLabels {
            core,
            topic: topic.to_owned(),
            api: api.to_owned(),
        };
        TopicSeries {
            produce_requests: f.topic_requests.get_or_create_owned(&l("produce")),
            produce_bytes: f.topic_bytes.get_or_create_owned(&l("produce")),
            fetch_requests: f.topic_requests.get_or_create_owned(&l("fetch")),
            fetch_bytes: f.topic_bytes.get_or_create_owned(&l("fetch")),
        }
    }
}

thread_local! {
    static CORE: RefCell<Option<CoreSeries>> = const { RefCell::new(None) };
}

/// Makes the calling thread (a core's executor) record as core `core`.
pub fn install_core(core: usize) {
    let f = families();
    let c = core as u32;
    let apis = ApiKey::ALL
        .iter()
        .map(|api| {
            let l = ApiLabels {
                core: c,
                api: api_label(*api).to_owned(),
            };
            ApiSeries {
                requests: f.requests.get_or_create_owned(&l),
                bytes_in: f.bytes_in.get_or_create_owned(&l),
                bytes_out: f.bytes_out.get_or_create_owned(&l),
                latency: f.latency.get_or_create_owned(&l),
            }
        })
        .collect();
    let series = CoreSeries {
        id: c,
        apis,
        connections: f.connections.get_or_create_owned(&CoreLabel { core: c }),
        busy: f.busy.get_or_create_owned(&CoreLabel { core: c }),
        busy_seen: Duration::ZERO,
        rebalances: f.rebalances.get_or_create_owned(&CoreLabel { core: c }),
        topics: HashMap::new(),
    };
    CORE.with(|s| *s.borrow_mut() = Some(series));
}

fn with_core(f: impl FnOnce(&mut CoreSeries)) {
    CORE.with(|s| {
        if let Some(series) = s.borrow_mut().as_mut() {
            f(series);
        }
    });
}

/// Counts one answered request on this core.
pub fn request(
    api: ApiKey,
    error: Option<ErrorCode>,
    bytes_in: usize,
    bytes_out: usize,
    took: Duration,
) {
    with_core(|s| {
        // `apis` follows `ApiKey::ALL`, which is in key order.
        if let Some(a) = s.apis.get(usize::from(api.as_u16())) {
            a.requests.inc();
            a.bytes_in.inc_by(bytes_in as u64);
            a.bytes_out.inc_by(bytes_out as u64);
            a.latency.observe(took.as_secs_f64());
        }
    });
    if let Some(code) = error {
        // Rare: a lookup here costs nothing on the success path.
        families()
            .errors
            .get_or_create(&ErrorLabels {
                api: api_label(api).to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
    }
}

/// Counts a request over a quota and the mute it earned.
pub fn throttled(wait: Duration) {
    let f = families();
    f.throttled.inc();
    f.throttle_seconds.inc_by(wait.as_secs_f64());
}

/// Counts a request forwarded to `node` (a gateway hop a smart client
/// avoids by sending to the leader).
pub fn forwarded(api: ApiKey, node: u32) {
    families()
        .forwarded
        .get_or_create(&ForwardLabels {
            api: api_label(api).to_owned(),
            node,
        })
        .inc();
}

/// Counts a connection refused at authentication; `mechanism` is `none`
/// when it sent a request without authenticating.
pub fn auth_failure(mechanism: &str) {
    families()
        .auth_failures
        .get_or_create(&MechanismLabel {
            mechanism: mechanism.to_owned(),
        })
        .inc();
}

/// Counts a request refused by the ACLs.
pub fn authorization_denied(operation: &str) {
    families()
        .denied
        .get_or_create(&OperationLabel {
            operation: operation.to_owned(),
        })
        .inc();
}

pub fn connection_opened() {
    with_core(|s| {
        s.connections.inc();
    });
}

pub fn connection_closed() {
    with_core(|s| {
        s.connections.dec();
    });
}

/// Counts consumer group generation bumps on this core.
pub fn group_rebalances(bumps: u64) {
    if bumps > 0 {
        with_core(|s| {
            s.rebalances.inc_by(bumps);
        });
    }
}

/// Which way a topic's records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Produce,
    Fetch,
}

/// Counts a produce or fetch of `bytes` record bytes on `topic`, on this
/// core. A topic's series are looked up by name without allocating; they
/// are made the first time this core serves the topic.
pub fn topic_traffic(topic: &str, traffic: Traffic, bytes: usize) {
    CORE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(core) = s.as_mut() else { return };
        if !core.topics.contains_key(topic) {
            let series = TopicSeries::new(core.id, topic);
            core.topics.insert(topic.to_owned(), series);
        }
        if let Some(t) = core.topics.get(topic) {
            let (requests, total) = match traffic {
                Traffic::Produce => (&t.produce_requests, &t.produce_bytes),
                Traffic::Fetch => (&t.fetch_requests, &t.fetch_bytes),
            };
            requests.inc();
            total.inc_by(bytes as u64);
        }
    });
}

/// Drops a deleted topic's produce and fetch series of this core.
pub fn topic_removed(topic: &str) {
    CORE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(core) = s.as_mut() else { return };
        if core.topics.remove(topic).is_some() {
            let f = families();
            for api in ["produce", "fetch"] {
                let l = TopicLabels {
                    core: core.id,
                    topic: topic.to_owned(),
                    api: api.to_owned(),
                };
                f.topic_requests.remove(&l);
                f.topic_bytes.remove(&l);
            }
        }
    });
}

/// Sets a group's member count. Membership changes are rare, so a lookup
/// per change costs nothing.
pub fn group_members(group: &str, members: usize) {
    families()
        .group_members
        .get_or_create(&GroupLabel {
            group: group.to_owned(),
        })
        .set(members as i64);
}

/// Drops a forgotten group's member series, so forgotten groups leave no
/// series behind.
pub fn group_removed(group: &str) {
    families().group_members.remove(&GroupLabel {
        group: group.to_owned(),
    });
}

/// Sets a group's lag on one partition (end offset minus committed offset).
pub fn group_lag(group: &str, topic: &str, partition: u32, lag: u64) {
    families()
        .group_lag
        .get_or_create(&LagLabels {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        })
        .set(saturating_i64(lag));
}

/// Drops a lag series that no longer applies (its topic was deleted).
pub fn group_lag_removed(group: &str, topic: &str, partition: u32) {
    families().group_lag.remove(&LagLabels {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    });
}

/// Adds the executor's run time since the last call (`total` is cumulative).
pub fn core_busy(total: Duration) {
    with_core(|s| {
        let delta = total.saturating_sub(s.busy_seen);
        s.busy_seen = total;
        s.busy.inc_by(delta.as_secs_f64());
    });
}

/// Where one partition stands; set by its core once a second.
pub fn partition(topic: &str, partition: u32, start: u64, end: u64, bytes: u64) {
    let f = families();
    let l = PartitionLabels {
        topic: topic.to_owned(),
        partition,
    };
    f.start_offset.get_or_create(&l).set(saturating_i64(start));
    f.end_offset.get_or_create(&l).set(saturating_i64(end));
    f.partition_bytes
        .get_or_create(&l)
        .set(saturating_i64(bytes));
}

/// Drops the series of a partition that no longer exists here.
pub fn partition_removed(topic: &str, partition: u32) {
    let f = families();
    let l = PartitionLabels {
        topic: topic.to_owned(),
        partition,
    };
    f.start_offset.remove(&l);
    f.end_offset.remove(&l);
    f.partition_bytes.remove(&l);
}

/// Bytes of this core's request memory budget in use.
pub fn memory_in_use(core: usize, bytes: u64) {
    families()
        .memory
        .get_or_create(&CoreLabel { core: core as u32 })
        .set(saturating_i64(bytes));
}

/// Bytes held by reads of sealed segments, over every core.
/// The cluster's replication health, from the applied metadata.
pub fn replication_health(under_replicated: usize, offline: usize) {
    let f = families();
    f.under_replicated
        .set(saturating_i64(under_replicated as u64));
    f.offline.set(saturating_i64(offline as u64));
}

pub fn cold_reads_in_use(bytes: usize) {
    families().cold_reads.set(saturating_i64(bytes as u64));
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The current metrics in text format.
pub fn encode() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &families().registry);
    out
}

/// The admin endpoint's authentication, when the cluster has a secret:
/// `GET /cluster/challenge` hands out a fresh nonce, and `POST
/// /cluster/remove/N` must carry `Authorization: Ringmq-HMAC <nonce> <proof>`
/// (hex), the proof being HMAC-SHA256 of the secret over that nonce and the
/// request line's method and path (`security::secret`, purpose Admin). The
/// secret never crosses the wire (the listener is plain HTTP), a nonce
/// serves once and for [`NONCE_TTL`], and a proof is for one request.
#[derive(Default)]
pub struct AdminAuth {
    secret: Option<crate::security::secret::ClusterSecret>,
    /// Nonces handed out and not yet used, oldest first; at most [`MAX_NONCES`].
    issued: std::collections::VecDeque<(crate::security::secret::Nonce, std::time::Instant)>,
}

/// Nonces outstanding at once; the oldest is dropped past it.
const MAX_NONCES: usize = 64;
/// How long a nonce stays valid.
const NONCE_TTL: Duration = Duration::from_secs(60);
/// The scheme of the Authorization header.
pub const ADMIN_AUTH_SCHEME: &str = "Ringmq-HMAC";

impl AdminAuth {
    fn new(secret: Option<crate::security::secret::ClusterSecret>) -> AdminAuth {
        AdminAuth {
            secret,
            issued: Default::default(),
        }
    }

    fn challenge(&mut self) -> Result<String, String> {
        let n = crate::security::secret::nonce().map_err(|e| e.to_string())?;
        if self.issued.len() >= MAX_NONCES {
            self.issued.pop_front();
        }
        self.issued.push_back((n, std::time::Instant::now()));
        Ok(crate::security::secret::hex(&n))
    }

    /// Whether `authorization` (the header's value) proves the secret for
    /// `method path`; always true without a secret.
    fn allows(&mut self, method: &str, path: &str, authorization: Option<&str>) -> bool {
        use crate::security::secret::{unhex, Purpose};
        let Some(secret) = &self.secret else {
            return true;
        };
        self.issued.retain(|(_, at)| at.elapsed() < NONCE_TTL);
        let Some(value) = authorization.and_then(|a| a.strip_prefix(ADMIN_AUTH_SCHEME)) else {
            return false;
        };
        let mut words = value.split_whitespace();
        let (Some(nonce), Some(proof)) =
            (words.next().and_then(unhex), words.next().and_then(unhex))
        else {
            return false;
        };
        let Some(i) = self.issued.iter().position(|(n, _)| n[..] == nonce[..]) else {
            return false;
        };
        self.issued.remove(i); // one use, right or wrong
        secret.verify(
            Purpose::Admin,
            &[&nonce],
            format!("{method} {path}").as_bytes(),
            &proof,
        )
    }
}

/// The value of the Authorization header `ringmq cluster remove` sends.
pub fn admin_authorization(
    secret: &crate::security::secret::ClusterSecret,
    nonce_hex: &str,
    method: &str,
    path: &str,
) -> Option<String> {
    use crate::security::secret::{hex, unhex, Purpose};
    let nonce = unhex(nonce_hex)?;
    let proof = secret.prove(
        Purpose::Admin,
        &[&nonce],
        format!("{method} {path}").as_bytes(),
    );
    Some(format!(
        "{ADMIN_AUTH_SCHEME} {} {}",
        hex(&nonce),
        hex(&proof)
    ))
}

/// The answer to a `/cluster` request: HTTP status line and JSON body
/// (`{"error": ...}` when it failed).
fn cluster_answer(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    auth: &mut AdminAuth,
    admin: Option<&crate::cluster::admin::AdminClient>,
) -> (&'static str, String) {
    use crate::cluster::admin::AdminError;
    let error =
        |status, message: String| (status, serde_json::json!({ "error": message }).to_string());
    let Some(admin) = admin else {
        return error(
            "404 Not Found",
            "this broker is not a cluster node (no node_id)".into(),
        );
    };
    let failed = |e: AdminError| match e {
        AdminError::Refused(m) => error("409 Conflict", m),
        e => error("503 Service Unavailable", e.to_string()),
    };
    match (method, path.strip_prefix("/cluster/remove/")) {
        ("GET", None) if path == "/cluster/challenge" => match auth.challenge() {
            Ok(nonce) => ("200 OK", serde_json::json!({ "nonce": nonce }).to_string()),
            Err(e) => error("500 Internal Server Error", e),
        },
        ("POST", Some(_)) if !auth.allows(method, path, authorization) => error(
            "401 Unauthorized",
            "this cluster has a secret: the request needs `Authorization: Ringmq-HMAC <nonce> <proof>` \
             (ringmq cluster remove with --cluster-secret-file does it)"
                .into(),
        ),
        ("GET", None) if path == "/cluster" => match admin.status() {
            Ok(status) => match serde_json::to_string(&status) {
                Ok(body) => ("200 OK", body),
                Err(e) => error("500 Internal Server Error", e.to_string()),
            },
            Err(e) => failed(e),
        },
        ("POST", Some(node)) => match node.parse::<u32>() {
            Ok(node) if node > 0 => match admin.remove(node) {
                Ok(message) => (
                    "200 OK",
                    serde_json::json!({ "message": message }).to_string(),
                ),
                Err(e) => failed(e),
            },
            _ => error("400 Bad Request", format!("{node:?} is not a node id")),
        },
        _ => error(
            "404 Not Found",
            format!("{method} {path}: try GET /cluster or POST /cluster/remove/N"),
        ),
    }
}

/// Binds `addr` and serves the metrics from a thread of its own. Returns the
/// bound address (port 0 picks one). A cluster node also answers
/// `GET /cluster` and `POST /cluster/remove/N` through `admin`.
pub fn serve(
    addr: SocketAddr,
    admin: Option<crate::cluster::admin::AdminClient>,
    secret: Option<crate::security::secret::ClusterSecret>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let mut auth = AdminAuth::new(secret);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &mut auth, admin.as_ref()) {
                    tracing::debug!(error = %e, "metrics scrape failed");
                }
            }
        })?;
    Ok(bound)
}

/// Answers one HTTP request: the cluster paths when this is a cluster node,
/// else the metrics, whatever the path.
fn answer(
    mut stream: TcpStream,
    auth: &mut AdminAuth,
    admin: Option<&crate::cluster::admin::AdminClient>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = std::str::from_utf8(line).unwrap_or("").split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if path == "/cluster" || path.starts_with("/cluster/") {
        let text = String::from_utf8_lossy(&head);
        let authorization = text.split("\r\n").skip(1).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then_some(value.trim())
        });
        let (status, body) = cluster_answer(method, path, authorization, auth, admin);
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return stream.flush();
    }
    let body = encode();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
