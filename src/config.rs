//! The broker's configuration: one validated `Config`, built from
//! command-line flags over a TOML file (`--config`) over built-in defaults.
//! Every value is checked here, at start, so the rest of the broker never sees
//! an invalid setting.
//!
//! [`Settings`] is both the file's schema and the set of `serve` flags, so a
//! key cannot exist in one and not the other: the TOML key is the flag's name
//! with `_` for `-`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::log::{FlushPolicy, LogConfig, ReadBudget};
use crate::quota::QuotaLimits;
use crate::security::secret::ClusterSecret;
use crate::security::tls::{TlsContext, TlsFiles};
use ringmq_protocol::batch::MAX_BATCH_BYTES;
use ringmq_protocol::limits;

/// Port the broker listens on when none is given.
pub const DEFAULT_PORT: u16 = 9292;

/// Longest cluster id (the peer protocol's Hello carries at most 64 bytes).
pub const MAX_CLUSTER_ID_LEN: usize = ringmq_protocol::peer::messages::MAX_CLUSTER_ID_LEN;

/// A setting that cannot be used, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for `{key}`: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has a key the broker does not know, or a
    /// value of the wrong kind. The message names the key.
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(key: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Everything a running broker needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listener; port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Executors (one per core).
    pub cores: usize,
    pub log: LogConfig,
    /// Requests a connection may have in flight before its socket stops being read.
    pub max_in_flight_per_connection: usize,
    /// Bytes of request and response data a shard may hold; past it, sockets stop being read.
    pub shard_memory_budget: u64,
    /// Connections a shard accepts; more are closed at once.
    pub max_connections_per_shard: usize,
    /// How long SIGTERM may take before the broker gives up waiting on clients.
    pub shutdown_timeout: Duration,
    /// io_uring registered buffer memory per executor.
    pub io_memory: usize,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval: Duration,
    /// Where Prometheus scrapes metrics; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// This node's id in a cluster; `None`: a single node, no peer listener,
    /// no Raft (exactly the broker without clustering). An id not in `peers`
    /// is a member that is not a controller (a Raft learner); it needs
    /// `peer_listen`.
    pub node_id: Option<u32>,
    /// The controller nodes (Raft voters) and their peer addresses, this node
    /// included. Empty in single-node mode.
    pub peers: BTreeMap<u32, SocketAddr>,
    /// Where the peer listener binds; `None`: this node's own entry in `peers`.
    /// Required for a node not in `peers`, whose peer address it is.
    pub peer_listen: Option<SocketAddr>,
    /// Name shared by the nodes of one cluster; a node of another is refused.
    pub cluster_id: String,
    /// Silence after which the controller marks a node dead.
    pub node_timeout: Duration,
    /// Death after which a node leaves the ring and its replicas move.
    pub replace_after: Duration,
    /// A follower that has not caught up with its leader for this long
    /// leaves the in-sync set.
    pub replica_lag: Duration,
    /// In-sync copies a partition needs to take an acks=all produce;
    /// `None`: 2 where the replication factor is at least 3, else 1.
    pub min_insync_replicas: Option<u16>,
    /// Whether a partition with no live in-sync copy may be led by a live
    /// copy that is behind (losing what it lacks) rather than stay offline.
    pub unclean_leader_election: bool,
    /// Per-second limits for every principal without limits of its own.
    pub quota_default: QuotaLimits,
    /// Principals' own limits (`[quotas."User:alice"]`), each key it does
    /// not set taken from `quota_default`.
    pub quotas: BTreeMap<String, QuotaLimits>,
    /// Whether a client connection must authenticate (SASL SCRAM-SHA-256)
    /// before any request but ApiVersions and the SASL ones.
    pub authentication: bool,
    /// Whether requests are checked against the ACLs (deny by default).
    pub authorization: bool,
    /// Principals (`User:name`) that bypass the ACLs and may manage users
    /// and ACLs.
    pub super_users: Vec<String>,
    /// A super user defined at start from `admin_password_file` (or the
    /// `RINGMQ_ADMIN_PASSWORD` variable), held in memory only: how the
    /// first user of a fresh broker is made.
    pub admin_user: Option<String>,
    pub admin_password_file: Option<PathBuf>,
    /// Derived at start (the admin credential, the key of unknown users'
    /// fake salts); never read from settings.
    pub auth_secrets: Option<Arc<crate::auth::Secrets>>,
    /// The file the settings were read from, if any (for the start-up log).
    pub config_file: Option<PathBuf>,
    /// `Some`: the client and peer listeners speak TLS only, and this node
    /// dials other nodes with TLS. `None`: plaintext.
    pub tls_files: Option<TlsFiles>,
    /// How long a TLS handshake may take before the connection is closed.
    pub tls_handshake_timeout: Duration,
    /// `tls_files` loaded (by `server::serve`, which also reloads it on
    /// SIGHUP); what the listeners and dialers use.
    pub tls: Option<Arc<TlsContext>>,
    /// The secret nodes prove they hold before a peer or forwarding
    /// connection is heard, and the admin endpoint requires. `None`: peers
    /// are not authenticated (unless by mutual TLS).
    pub cluster_secret: Option<ClusterSecret>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            data_dir: PathBuf::from("./data"),
            cores: available_cores(),
            log: LogConfig::default(),
            max_in_flight_per_connection: 1024,
            shard_memory_budget: 256 << 20,
            max_connections_per_shard: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            io_memory: 1 << 20,
            retention_check_interval: Duration::from_secs(60),
            metrics_listen: None,
            node_id: None,
            peers: BTreeMap::new(),
            peer_listen: None,
            cluster_id: "ringmq".into(),
            node_timeout: Duration::from_secs(10),
            replace_after: Duration::from_secs(600),
            replica_lag: Duration::from_secs(10),
            min_insync_replicas: None,
            unclean_leader_election: false,
            quota_default: QuotaLimits::default(),
            quotas: BTreeMap::new(),
            authentication: false,
            authorization: false,
            super_users: Vec::new(),
            admin_user: None,
            admin_password_file: None,
            auth_secrets: None,
            config_file: None,
            tls_files: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tls: None,
            cluster_secret: None,
        }
    }
}

/// Cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Config {
    /// Checks the cross-field rules that single parsers cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cores = available_cores();
        if self.cores == 0 || self.cores > cores {
            return Err(invalid(
                "cores",
                self.cores,
                format!("must be between 1 and the {cores} cores this machine has"),
            ));
        }
        if self.log.segment_bytes < (1 << 20) {
            return Err(invalid(
                "segment_bytes",
                self.log.segment_bytes,
                "must be at least 1MiB",
            ));
        }
        if self.log.segment_bytes > u64::from(u32::MAX) {
            return Err(invalid(
                "segment_bytes",
                self.log.segment_bytes,
                "must be below 4GiB",
            ));
        }
        if self.max_in_flight_per_connection == 0 {
            return Err(invalid(
                "max_in_flight_per_connection",
                0,
                "must be at least 1",
            ));
        }
        let min_budget = 4 * ringmq_protocol::limits::MAX_REQUEST_FRAME as u64;
        if self.shard_memory_budget < min_budget {
            return Err(invalid(
                "shard_memory_budget",
                self.shard_memory_budget,
                format!("must be at least {min_budget} bytes (four maximal requests)"),
            ));
        }
        // One fetch reads at most MAX_FETCH_BYTES plus a batch, into a
        // buffer and its copy; less than a few of those could never succeed.
        let min_read = 4 * (limits::MAX_FETCH_BYTES as usize + MAX_BATCH_BYTES);
        if self.log.read_budget.limit() < min_read {
            return Err(invalid(
                "cold_read_budget",
                self.log.read_budget.limit(),
                format!("must be at least {min_read} bytes (two maximal fetches, each a buffer and its copy)"),
            ));
        }
        if self.log.index_interval_bytes == 0 {
            return Err(invalid("index_interval_bytes", 0, "must be at least 1"));
        }
        if self.max_connections_per_shard == 0 {
            return Err(invalid(
                "max_connections_per_shard",
                0,
                "must be at least 1",
            ));
        }
        if self.retention_check_interval.is_zero() {
            return Err(invalid(
                "retention_check_interval",
                "0s",
                "must be longer than 0",
            ));
        }
        if self.tls_handshake_timeout.is_zero() {
            return Err(invalid(
                "tls_handshake_timeout",
                "0s",
                "must be longer than 0",
            ));
        }
        if let (Some(files), Some(_)) = (&self.tls_files, self.node_id) {
            if files.ca.is_none() {
                return Err(invalid(
                    "tls_ca",
                    "none",
                    "must be set in a cluster with TLS: it is the CA the other nodes' certificates are checked against",
                ));
            }
        }
        if let Some(name) = &self.admin_user {
            crate::auth::store::validate_user_name(name)
                .map_err(|e| invalid("admin_user", name, e.to_string()))?;
        }
        self.validate_cluster()
    }

    /// Whether nodes must prove who they are: by the cluster secret, or by
    /// a certificate from `tls_client_ca` (which every node-to-node
    /// connection then needs).
    pub fn peers_authenticated(&self) -> bool {
        self.cluster_secret.is_some()
            || self
                .tls_files
                .as_ref()
                .is_some_and(|f| f.client_ca.is_some())
    }

    /// The cluster settings: all or nothing, and consistent with each other.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        // A node's forwarded requests skip authentication and the ACLs (the
        // client was checked where it connected), so a node must prove it
        // is one, or any client could claim to be a node. A client
        // certificate is no proof: clients may hold one from the same CA.
        if self.node_id.is_some()
            && (self.authentication || self.authorization)
            && self.cluster_secret.is_none()
        {
            return Err(invalid(
                if self.authentication { "authentication" } else { "authorization" },
                true,
                "needs the cluster secret in a cluster (cluster_secret_file): else any client could pass for a node and skip the checks",
            ));
        }
        let cluster_id = &self.cluster_id;
        if cluster_id.is_empty()
            || cluster_id.len() > MAX_CLUSTER_ID_LEN
            || !cluster_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "cluster_id",
                cluster_id,
                format!("must be 1 to {MAX_CLUSTER_ID_LEN} characters of [A-Za-z0-9._-]"),
            ));
        }
        if self.node_timeout.is_zero() {
            return Err(invalid("node_timeout", "0s", "must be longer than 0"));
        }
        if self.replica_lag.is_zero() {
            return Err(invalid("replica_lag", "0s", "must be longer than 0"));
        }
        if self.min_insync_replicas == Some(0) {
            return Err(invalid("min_insync_replicas", 0, "must be at least 1"));
        }
        if self.replace_after <= self.node_timeout {
            return Err(invalid(
                "replace_after",
                humantime::format_duration(self.replace_after),
                "must be longer than `node_timeout`",
            ));
        }
        let Some(id) = self.node_id else {
            if !self.peers.is_empty() {
                return Err(invalid(
                    "node_id",
                    "none",
                    "must be set when `peers` is (which of the peers is this node?)",
                ));
            }
            return Ok(());
        };
        let ids = || {
            self.peers
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.peers.is_empty() {
            return Err(invalid(
                "peers",
                "none",
                "must list the controller nodes, e.g. 1=10.0.0.1:9393,2=10.0.0.2:9393,3=10.0.0.3:9393, when `node_id` is set",
            ));
        }
        let mut seen = BTreeMap::new();
        for (peer, addr) in &self.peers {
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(invalid(
                    "peers",
                    format!("{peer}={addr}"),
                    "each node needs an address the others can dial (no port 0, no 0.0.0.0)",
                ));
            }
            if let Some(other) = seen.insert(*addr, *peer) {
                return Err(invalid(
                    "peers",
                    addr,
                    format!("nodes {other} and {peer} have the same address"),
                ));
            }
        }
        let peer_listen = match (self.peers.get(&id), self.peer_listen) {
            (Some(_), Some(addr)) => addr,
            (Some(own), None) => *own,
            // Not a controller: a member that joins, and is dialed at the
            // address it binds, so that address must be one others can reach.
            (None, None) => {
                return Err(invalid(
                    "peer_listen",
                    "from-peers",
                    format!(
                        "must be set to this node's own address: node {id} is not one of the controllers in `peers` ({}), so it joins as a member and the others dial it there",
                        ids()
                    ),
                ))
            }
            (None, Some(addr)) => {
                if addr.ip().is_unspecified() {
                    return Err(invalid(
                        "peer_listen",
                        addr,
                        format!("node {id} is not in `peers`, so the others dial it at `peer_listen`: it needs an address they can reach (no 0.0.0.0)"),
                    ));
                }
                if let Some(other) = seen.get(&addr) {
                    return Err(invalid(
                        "peer_listen",
                        addr,
                        format!("is the address of node {other} in `peers`"),
                    ));
                }
                addr
            }
        };
        if peer_listen.port() == 0 {
            return Err(invalid(
                "peer_listen",
                peer_listen,
                "needs a fixed port: the other nodes dial the address in `peers`",
            ));
        }
        if peer_listen == self.listen {
            return Err(invalid(
                "peer_listen",
                peer_listen,
                "must differ from `listen` (clients and peers speak different protocols)",
            ));
        }
        Ok(())
    }

    /// The address the peer listener binds in cluster mode.
    pub fn peer_listen_addr(&self) -> Option<SocketAddr> {
        let id = self.node_id?;
        self.peer_listen.or_else(|| self.peers.get(&id).copied())
    }
}

/// Every setting of `ringmq serve`, each optional: the schema of the config
/// file and, field for field, the command-line flags. An absent value means
/// "the layer below decides" (flags over file over [`Config::default`]).
/// `deploy/ringmq.toml` documents each key with its default.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address for clients (port 0 picks a free one and logs it) [default: 127.0.0.1:9292].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where partitions and the topic catalogue are kept [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Executors to run, one per core, or `all` [default: all].
    #[arg(long, value_parser = parse_cores)]
    #[serde(deserialize_with = "de::cores")]
    pub cores: Option<Cores>,
    /// `every-batch` (acknowledged means on disk) or an interval such as `100ms` [default: 100ms].
    #[arg(long, value_parser = parse_flush)]
    #[serde(deserialize_with = "de::flush")]
    pub flush: Option<FlushPolicy>,
    /// Size of one segment file, e.g. 256MiB [default: 256MiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de::size")]
    pub segment_bytes: Option<u64>,
    /// One sparse index entry per this many bytes of batches [default: 4KiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de::size")]
    pub index_interval_bytes: Option<u64>,
    /// Disk reserved (fallocate) ahead of the write position [default: 64MiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de::size")]
    pub reserve_ahead_bytes: Option<u64>,
    /// Delete old segments once a partition is larger than this, e.g. 10GiB, or `off` [default: off].
    #[arg(long, value_parser = parse_optional_size)]
    #[serde(deserialize_with = "de::optional_size")]
    pub retention_bytes: Option<Limit<u64>>,
    /// Delete segments older than this, e.g. 7days, or `off` [default: 7days].
    #[arg(long, value_parser = parse_optional_duration)]
    #[serde(deserialize_with = "de::optional_duration")]
    pub retention: Option<Limit<Duration>>,
    /// How often each core applies retention [default: 1min].
    #[arg(long, value_parser = parse_duration)]
    #[serde(deserialize_with = "de::duration")]
    pub retention_check_interval: Option<Duration>,
    /// Bytes of requests and responses one core may buffer before it stops reading sockets [default: 256MiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de::size")]
    pub shard_memory_budget: Option<u64>,
    /// Bytes of old data (sealed segments, read by copy) all fetches may hold at once; past it fetches of old data are answered BUSY [default: 128MiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de::size")]
    pub cold_read_budget: Option<u64>,
    /// Requests one connection may have in flight [default: 1024].
    #[arg(long, alias = "max-in-flight")]
    pub max_in_flight_per_connection: Option<usize>,
    /// Connections one core accepts; more are closed at once [default: 10000].
    #[arg(long)]
    pub max_connections_per_shard: Option<usize>,
    /// io_uring registered buffer memory per core [default: 1MiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de::size")]
    pub io_memory: Option<u64>,
    /// How long a SIGTERM may wait for clients before the broker closes anyway [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_timeout: Option<Duration>,
    /// Address serving Prometheus metrics over HTTP, or `off` [default: off].
    #[arg(long, value_parser = parse_optional_addr)]
    #[serde(deserialize_with = "de::optional_addr")]
    pub metrics_listen: Option<Limit<SocketAddr>>,
    /// This node's id in a cluster (1 or more), or `none` for a single node; an id not in `peers` joins as a member that is not a controller [default: none].
    #[arg(long, value_parser = parse_node_id)]
    #[serde(deserialize_with = "de::node_id")]
    pub node_id: Option<Limit<u32>>,
    /// The controller nodes and their peer addresses, `1=10.0.0.1:9393,2=10.0.0.2:9393,...`, or `none` [default: none].
    #[arg(long, value_parser = parse_peers)]
    #[serde(deserialize_with = "de::peers")]
    pub peers: Option<Peers>,
    /// Address of the peer (node-to-node) listener, or `from-peers` for this node's entry in `peers`; required (and dialed by the others) when `node_id` is not in `peers` [default: from-peers].
    #[arg(long, value_parser = parse_peer_listen)]
    #[serde(deserialize_with = "de::peer_listen")]
    pub peer_listen: Option<Limit<SocketAddr>>,
    /// Name shared by the nodes of one cluster; nodes of another are refused [default: ringmq].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Silence after which the controller marks a node dead [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    #[serde(deserialize_with = "de::duration")]
    pub node_timeout: Option<Duration>,
    /// Death after which a node leaves the ring and its partitions move [default: 10min].
    #[arg(long, value_parser = parse_duration)]
    #[serde(deserialize_with = "de::duration")]
    pub replace_after: Option<Duration>,
    /// A follower not caught up with its leader for this long leaves the in-sync set [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    #[serde(deserialize_with = "de::duration")]
    pub replica_lag: Option<Duration>,
    /// In-sync copies an acks=all produce needs, or `auto`: 2 where a topic has 3 copies or more, else 1 [default: auto].
    #[arg(long, value_parser = parse_min_insync)]
    #[serde(deserialize_with = "de::min_insync")]
    pub min_insync_replicas: Option<Limit<u16>>,
    /// Let a partition with no live in-sync copy be led by a copy that is behind, losing what it lacks [default: false].
    #[arg(long)]
    pub unclean_leader_election: Option<bool>,
    /// PEM certificate chain of this node, or `none`; with `tls_key`, the client and peer listeners speak TLS only [default: none, plaintext].
    #[arg(long, value_name = "FILE", value_parser = parse_optional_path)]
    #[serde(deserialize_with = "de::optional_path")]
    pub tls_cert: Option<Limit<PathBuf>>,
    /// PEM private key of `tls_cert`, or `none` [default: none].
    #[arg(long, value_name = "FILE", value_parser = parse_optional_path)]
    #[serde(deserialize_with = "de::optional_path")]
    pub tls_key: Option<Limit<PathBuf>>,
    /// PEM CA file: every connection (clients and nodes) must show a certificate it signed (mutual TLS), or `none` [default: none].
    #[arg(long, value_name = "FILE", value_parser = parse_optional_path)]
    #[serde(deserialize_with = "de::optional_path")]
    pub tls_client_ca: Option<Limit<PathBuf>>,
    /// PEM CA file other nodes' certificates are checked against when this node dials them, or `none`; required in a cluster with TLS [default: none].
    #[arg(long, value_name = "FILE", value_parser = parse_optional_path)]
    #[serde(deserialize_with = "de::optional_path")]
    pub tls_ca: Option<Limit<PathBuf>>,
    /// How long a TLS handshake may take before the connection is closed [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    #[serde(deserialize_with = "de::duration")]
    pub tls_handshake_timeout: Option<Duration>,
    /// Secret shared by the nodes of a cluster (16 bytes or more); prefer `cluster_secret_file`, as a flag shows in `ps` [default: none, peers unauthenticated].
    #[arg(long, env = "RINGMQ_CLUSTER_SECRET", hide_env_values = true, value_parser = parse_secret)]
    #[serde(deserialize_with = "de::secret")]
    pub cluster_secret: Option<Limit<SecretText>>,
    /// File holding the cluster secret (a trailing newline is ignored), or `none` [default: none].
    #[arg(long, value_name = "FILE", value_parser = parse_optional_path)]
    #[serde(deserialize_with = "de::optional_path")]
    pub cluster_secret_file: Option<Limit<PathBuf>>,
    /// Produce bytes per second each principal may send through this node, e.g. 10MiB, or `off`; over it its connections are throttled [default: off].
    #[arg(long, value_parser = parse_optional_size)]
    #[serde(deserialize_with = "de::optional_size")]
    pub quota_produce_bytes: Option<Limit<u64>>,
    /// Fetch bytes per second each principal may read through this node, or `off` [default: off].
    #[arg(long, value_parser = parse_optional_size)]
    #[serde(deserialize_with = "de::optional_size")]
    pub quota_fetch_bytes: Option<Limit<u64>>,
    /// Requests per second each principal may send to this node, or `off` [default: off].
    #[arg(long, value_parser = parse_optional_rate)]
    #[serde(deserialize_with = "de::optional_rate")]
    pub quota_requests: Option<Limit<u64>>,
    /// Principals' own quotas, config file only: `[quotas."User:alice"]` with
    /// `produce_bytes`, `fetch_bytes`, `requests` (each a value or `off`;
    /// an absent key takes the `quota_*` value).
    #[arg(skip)]
    pub quotas: BTreeMap<String, QuotaSettings>,
    /// Require clients to authenticate (SASL SCRAM-SHA-256) before other requests [default: false].
    #[arg(long)]
    pub authentication: Option<bool>,
    /// Check every request against the ACLs, denying what no rule allows [default: false].
    #[arg(long)]
    pub authorization: Option<bool>,
    /// Principals that bypass the ACLs and manage users and ACLs, `User:alice,User:ops`, or `none` [default: none].
    #[arg(long, value_parser = parse_super_users)]
    #[serde(deserialize_with = "de::super_users")]
    pub super_users: Option<SuperUsers>,
    /// A super user whose password is read at start from `admin_password_file` or the RINGMQ_ADMIN_PASSWORD variable; kept in memory only, or `none` [default: none].
    #[arg(long)]
    pub admin_user: Option<String>,
    /// File holding the `admin_user`'s password (first line), or `none` [default: none].
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
}

/// The `super_users` setting: principals, each `User:name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SuperUsers(pub Vec<String>);

/// Parses `User:a,User:b` (a bare name means `User:name`) or `none`.
pub fn parse_super_users(s: &str) -> Result<SuperUsers, String> {
    if s == "none" {
        return Ok(SuperUsers::default());
    }
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| crate::auth::acl::principal_of(p).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(SuperUsers)
}

/// A secret as written in the settings; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Takes a secret as it is (checked for length in `into_config`), or
/// `none` (too short to be a secret).
pub fn parse_secret(s: &str) -> Result<Limit<SecretText>, String> {
    if s == "none" {
        return Ok(Limit::Off);
    }
    Ok(Limit::At(SecretText(s.to_owned())))
}

/// Parses a file name or `none`.
pub fn parse_optional_path(s: &str) -> Result<Limit<PathBuf>, String> {
    if s == "none" {
        return Ok(Limit::Off);
    }
    Ok(Limit::At(PathBuf::from(s)))
}

/// One principal's quotas in the config file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSettings {
    #[serde(deserialize_with = "de::optional_size")]
    pub produce_bytes: Option<Limit<u64>>,
    #[serde(deserialize_with = "de::optional_size")]
    pub fetch_bytes: Option<Limit<u64>>,
    #[serde(deserialize_with = "de::optional_rate")]
    pub requests: Option<Limit<u64>>,
}

impl QuotaSettings {
    /// These limits over `default`; a limit of 0 is refused (say `off`).
    fn over(&self, default: QuotaLimits, principal: &str) -> Result<QuotaLimits, ConfigError> {
        let pick = |key: &'static str, own: Option<Limit<u64>>, default: Option<u64>| {
            let v = own.map_or(default, Option::from);
            if v == Some(0) {
                return Err(invalid(
                    key,
                    format!("{principal}: 0"),
                    "a quota of 0 would stop the principal for good; say `off` for no limit",
                ));
            }
            Ok(v)
        };
        Ok(QuotaLimits {
            produce_bytes: pick("produce_bytes", self.produce_bytes, default.produce_bytes)?,
            fetch_bytes: pick("fetch_bytes", self.fetch_bytes, default.fetch_bytes)?,
            requests: pick("requests", self.requests, default.requests)?,
        })
    }
}

/// The `peers` setting: node id to peer address, ids unique.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peers(pub BTreeMap<u32, SocketAddr>);

/// A number of cores: a count, or every core this process may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cores {
    All,
    Count(usize),
}

/// A limit that can be switched off (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    Off,
    At(T),
}

impl Settings {
    /// Reads a config file. Unknown keys and values of the wrong kind are
    /// refused with a message naming the key.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Settings::from_toml(&text).map_err(|message| ConfigError::File {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the text of a config file; the error is one line naming the key.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let msg = e
                .message()
                .trim_end()
                .replace("unknown field", "unknown key");
            let Some(at) = e.span().map(|s| s.start) else {
                return msg;
            };
            let line = text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1;
            match key_at(text, at) {
                Some(key) if !msg.contains(&format!("`{key}`")) => {
                    format!("line {line}: invalid `{key}`: {msg}")
                }
                _ => format!("line {line}: {msg}"),
            }
        })
    }

    /// Each value set here, else the one in `below`.
    pub fn or(self, below: Settings) -> Settings {
        // `quotas` is a table of the file only: taken whole from one layer.
        let quotas = if self.quotas.is_empty() {
            below.quotas
        } else {
            self.quotas
        };
        macro_rules! pick {
            ($($f:ident),* $(,)?) => { Settings { $($f: self.$f.or(below.$f),)* quotas } };
        }
        pick!(
            listen,
            data_dir,
            cores,
            flush,
            segment_bytes,
            index_interval_bytes,
            reserve_ahead_bytes,
            retention_bytes,
            retention,
            retention_check_interval,
            shard_memory_budget,
            cold_read_budget,
            max_in_flight_per_connection,
            max_connections_per_shard,
            io_memory,
            shutdown_timeout,
            metrics_listen,
            node_id,
            peers,
            peer_listen,
            cluster_id,
            node_timeout,
            replace_after,
            replica_lag,
            min_insync_replicas,
            unclean_leader_election,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_ca,
            tls_handshake_timeout,
            cluster_secret,
            cluster_secret_file,
            quota_produce_bytes,
            quota_fetch_bytes,
            quota_requests,
            authentication,
            authorization,
            super_users,
            admin_user,
            admin_password_file,
        )
    }

    /// The settings applied over the defaults. Not yet validated.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let Settings {
            listen,
            data_dir,
            cores,
            flush,
            segment_bytes,
            index_interval_bytes,
            reserve_ahead_bytes,
            retention_bytes,
            retention,
            retention_check_interval,
            shard_memory_budget,
            cold_read_budget,
            max_in_flight_per_connection,
            max_connections_per_shard,
            io_memory,
            shutdown_timeout,
            metrics_listen,
            node_id,
            peers,
            peer_listen,
            cluster_id,
            node_timeout,
            replace_after,
            replica_lag,
            min_insync_replicas,
            unclean_leader_election,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_ca,
            tls_handshake_timeout,
            cluster_secret,
            cluster_secret_file,
            quota_produce_bytes,
            quota_fetch_bytes,
            quota_requests,
            quotas,
            authentication,
            authorization,
            super_users,
            admin_user,
            admin_password_file,
        } = self;
        set(&mut c.listen, listen);
        set(&mut c.data_dir, data_dir);
        if let Some(Cores::Count(n)) = cores {
            c.cores = n;
        }
        set(&mut c.log.flush, flush);
        set(&mut c.log.segment_bytes, segment_bytes);
        if let Some(b) = index_interval_bytes {
            c.log.index_interval_bytes = u32::try_from(b)
                .map_err(|_| invalid("index_interval_bytes", b, "must be below 4GiB"))?;
        }
        set(&mut c.log.reserve_ahead_bytes, reserve_ahead_bytes);
        if let Some(l) = retention_bytes {
            c.log.retention_bytes = l.into();
        }
        if let Some(l) = retention {
            c.log.retention_ms = Option::from(l).map(|d: Duration| d.as_millis() as u64);
        }
        set(&mut c.retention_check_interval, retention_check_interval);
        set(&mut c.shard_memory_budget, shard_memory_budget);
        if let Some(b) = cold_read_budget {
            let b =
                usize::try_from(b).map_err(|_| invalid("cold_read_budget", b, "is too large"))?;
            c.log.read_budget = ReadBudget::new(b);
        }
        set(
            &mut c.max_in_flight_per_connection,
            max_in_flight_per_connection,
        );
        set(&mut c.max_connections_per_shard, max_connections_per_shard);
        if let Some(b) = io_memory {
            c.io_memory =
                usize::try_from(b).map_err(|_| invalid("io_memory", b, "is too large"))?;
        }
        set(&mut c.shutdown_timeout, shutdown_timeout);
        if let Some(l) = metrics_listen {
            c.metrics_listen = l.into();
        }
        if let Some(l) = node_id {
            c.node_id = l.into();
        }
        if let Some(p) = peers {
            c.peers = p.0;
        }
        if let Some(l) = peer_listen {
            c.peer_listen = l.into();
        }
        set(&mut c.cluster_id, cluster_id);
        set(&mut c.node_timeout, node_timeout);
        set(&mut c.replace_after, replace_after);
        set(&mut c.replica_lag, replica_lag);
        if let Some(m) = min_insync_replicas {
            c.min_insync_replicas = match m {
                Limit::Off => None,
                Limit::At(n) => Some(n),
            };
        }
        set(&mut c.unclean_leader_election, unclean_leader_election);
        let default = QuotaSettings {
            produce_bytes: quota_produce_bytes,
            fetch_bytes: quota_fetch_bytes,
            requests: quota_requests,
        };
        c.quota_default = default.over(QuotaLimits::default(), "every principal")?;
        for (principal, own) in quotas {
            let limits = own.over(c.quota_default, &principal)?;
            c.quotas.insert(principal, limits);
        }
        let path = |p: Option<Limit<PathBuf>>| p.and_then(Option::from);
        c.tls_files = tls_files(
            path(tls_cert),
            path(tls_key),
            path(tls_client_ca),
            path(tls_ca),
        )?;
        let cluster_secret = cluster_secret.and_then(Option::from);
        let cluster_secret_file = path(cluster_secret_file);
        set(&mut c.tls_handshake_timeout, tls_handshake_timeout);
        c.cluster_secret = match (cluster_secret, cluster_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "cluster_secret",
                    "<redacted>",
                    "give either `cluster_secret` or `cluster_secret_file`, not both",
                ))
            }
            (Some(SecretText(text)), None) => Some(
                ClusterSecret::new(text.as_bytes())
                    .map_err(|e| invalid("cluster_secret", "<redacted>", e))?,
            ),
            (None, Some(path)) => Some(
                ClusterSecret::from_file(&path)
                    .map_err(|e| invalid("cluster_secret_file", path.display(), e))?,
            ),
            (None, None) => None,
        };
        set(&mut c.authentication, authentication);
        set(&mut c.authorization, authorization);
        if let Some(s) = super_users {
            c.super_users = s.0;
        }
        if let Some(u) = admin_user {
            c.admin_user = (u != "none").then_some(u);
        }
        if let Some(p) = admin_password_file {
            c.admin_password_file = (p.as_os_str() != "none").then_some(p);
        }
        Ok(c)
    }
}

/// The TLS files: a certificate and its key together, and the CAs only
/// with them (a CA without a certificate of our own would be ignored).
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
            ca,
        })),
        (None, Some(key)) => Err(invalid(
            "tls_key",
            key.display(),
            "needs `tls_cert` (the certificate of that key)",
        )),
        (Some(cert), None) => Err(invalid(
            "tls_cert",
            cert.display(),
            "needs `tls_key` (the private key of that certificate)",
        )),
        (None, None) => match (client_ca, ca) {
            (Some(f), _) => Err(invalid(
                "tls_client_ca",
                f.display(),
                "needs `tls_cert` and `tls_key`: client certificates are asked for only over TLS",
            )),
            (None, Some(f)) => Err(invalid(
                "tls_ca",
                f.display(),
                "needs `tls_cert` and `tls_key`: nodes speak TLS to each other only when they serve it",
            )),
            (None, None) => Ok(None),
        },
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

impl<T> From<Limit<T>> for Option<T> {
    fn from(l: Limit<T>) -> Option<T> {
        match l {
            Limit::Off => None,
            Limit::At(v) => Some(v),
        }
    }
}

/// The key on the line holding byte `at` of a flat TOML file, for error
/// messages whose own text only names the value.
fn key_at(text: &str, at: usize) -> Option<&str> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let key = line.split('=').next()?.trim().trim_matches('"');
    let ok = !key.is_empty()
        && line.contains('=')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ok.then_some(key)
}

/// Parses a core count or `all`.
pub fn parse_cores(s: &str) -> Result<Cores, String> {
    if s == "all" {
        return Ok(Cores::All);
    }
    s.parse()
        .map(Cores::Count)
        .map_err(|_| format!("{s:?} is neither a number of cores nor `all`"))
}

/// Parses a size or `off`.
pub fn parse_optional_size(s: &str) -> Result<Limit<u64>, String> {
    if s == "off" {
        return Ok(Limit::Off);
    }
    parse_size(s).map(Limit::At)
}

/// Parses an address or `off`.
pub fn parse_optional_addr(s: &str) -> Result<Limit<SocketAddr>, String> {
    if s == "off" {
        return Ok(Limit::Off);
    }
    s.parse()
        .map(Limit::At)
        .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:9293, nor `off`"))
}

/// Parses a rate per second (1 or more) or `off`.
pub fn parse_optional_rate(s: &str) -> Result<Limit<u64>, String> {
    if s == "off" {
        return Ok(Limit::Off);
    }
    s.parse()
        .map(Limit::At)
        .map_err(|_| format!("{s:?} is neither a number per second nor `off`"))
}

/// Parses a count of in-sync copies (1 or more) or `auto`.
pub fn parse_min_insync(s: &str) -> Result<Limit<u16>, String> {
    if s == "auto" {
        return Ok(Limit::Off);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is neither a count of copies (1 or more) nor `auto`"
        )),
        Ok(n) => Ok(Limit::At(n)),
    }
}

/// Parses a node id (1 or more) or `none`.
pub fn parse_node_id(s: &str) -> Result<Limit<u32>, String> {
    if s == "none" {
        return Ok(Limit::Off);
    }
    match s.parse::<u32>() {
        Ok(0) => Err("node ids start at 1 (0 means nobody to Raft)".into()),
        Ok(id) => Ok(Limit::At(id)),
        Err(_) => Err(format!("{s:?} is neither a node id (1 or more) nor `none`")),
    }
}

/// Parses `ID=HOST:PORT,ID=HOST:PORT,...` or `none`; refuses a repeated id.
pub fn parse_peers(s: &str) -> Result<Peers, String> {
    let s = s.trim();
    let mut peers = BTreeMap::new();
    if s == "none" {
        return Ok(Peers(peers));
    }
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not ID=HOST:PORT (e.g. 1=10.0.0.1:9393)"))?;
        let id = match parse_node_id(id.trim())? {
            Limit::At(id) => id,
            Limit::Off => return Err(format!("{entry:?} needs a node id, not `none`")),
        };
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} (node {id}) is not an address such as 10.0.0.1:9393"))?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("node id {id} appears more than once"));
        }
    }
    if peers.is_empty() {
        return Err("lists no node: give ID=HOST:PORT,... or `none`".into());
    }
    Ok(Peers(peers))
}

/// Parses an address or `from-peers`.
pub fn parse_peer_listen(s: &str) -> Result<Limit<SocketAddr>, String> {
    if s == "from-peers" {
        return Ok(Limit::Off);
    }
    s.parse()
        .map(Limit::At)
        .map_err(|_| format!("{s:?} is not an address such as 0.0.0.0:9393, nor `from-peers`"))
}

/// Parses a duration or `off`.
pub fn parse_optional_duration(s: &str) -> Result<Limit<Duration>, String> {
    if s == "off" {
        return Ok(Limit::Off);
    }
    parse_duration(s).map(Limit::At)
}

/// serde adapters: the file takes the same strings as the flags, and plain
/// integers for sizes and core counts.
mod de {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    use super::{Cores, FlushPolicy, Limit, SuperUsers};

    /// A TOML string or non-negative integer, handed to a flag parser.
    struct Text<T>(fn(&str) -> Result<T, String>, &'static str, bool);

    impl<T> Visitor<'_> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            if !self.2 {
                return Err(E::invalid_type(de::Unexpected::Unsigned(v), &self));
            }
            (self.0)(&v.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
    }

    fn text<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
        expecting: &'static str,
        ints: bool,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Text(parse, expecting, ints)).map(Some)
    }

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        text(
            d,
            super::parse_size,
            "a size such as \"64MiB\" or 4096",
            true,
        )
    }

    pub fn optional_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<u64>>, D::Error> {
        text(
            d,
            super::parse_optional_size,
            "a size such as \"10GiB\", or \"off\"",
            true,
        )
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        text(
            d,
            super::parse_duration,
            "a duration such as \"30s\"",
            false,
        )
    }

    pub fn optional_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Limit<Duration>>, D::Error> {
        text(
            d,
            super::parse_optional_duration,
            "a duration such as \"7days\", or \"off\"",
            false,
        )
    }

    pub fn flush<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FlushPolicy>, D::Error> {
        text(
            d,
            super::parse_flush,
            "\"every-batch\" or an interval such as \"100ms\"",
            false,
        )
    }

    pub fn optional_addr<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Limit<std::net::SocketAddr>>, D::Error> {
        text(
            d,
            super::parse_optional_addr,
            "an address such as \"127.0.0.1:9293\", or \"off\"",
            false,
        )
    }

    pub fn super_users<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SuperUsers>, D::Error> {
        text(
            d,
            super::parse_super_users,
            "principals such as \"User:alice,User:ops\", or \"none\"",
            false,
        )
    }

    pub fn node_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<u32>>, D::Error> {
        text(
            d,
            super::parse_node_id,
            "a node id such as 1, or \"none\"",
            true,
        )
    }

    pub fn min_insync<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<u16>>, D::Error> {
        text(
            d,
            super::parse_min_insync,
            "a count of copies such as 2, or \"auto\"",
            true,
        )
    }

    pub fn peers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::Peers>, D::Error> {
        text(
            d,
            super::parse_peers,
            "peers such as \"1=10.0.0.1:9393,2=10.0.0.2:9393\", or \"none\"",
            false,
        )
    }

    pub fn peer_listen<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Limit<std::net::SocketAddr>>, D::Error> {
        text(
            d,
            super::parse_peer_listen,
            "an address such as \"0.0.0.0:9393\", or \"from-peers\"",
            false,
        )
    }

    pub fn optional_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<u64>>, D::Error> {
        text(
            d,
            super::parse_optional_rate,
            "a number per second such as 1000, or \"off\"",
            true,
        )
    }

    pub fn optional_path<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Limit<std::path::PathBuf>>, D::Error> {
        text(
            d,
            super::parse_optional_path,
            "a file name, or \"none\"",
            false,
        )
    }

    pub fn secret<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Limit<super::SecretText>>, D::Error> {
        text(d, super::parse_secret, "a secret, or \"none\"", false)
    }

    pub fn cores<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cores>, D::Error> {
        text(d, super::parse_cores, "a number of cores or \"all\"", true)
    }
}

/// Parses `every-batch` or a duration such as `100ms`, `1s`.
pub fn parse_flush(s: &str) -> Result<FlushPolicy, String> {
    if s == "every-batch" {
        return Ok(FlushPolicy::EveryBatch);
    }
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("an interval of 0 means every batch: say `every-batch`".into());
    }
    Ok(FlushPolicy::Interval(d))
}

/// Parses a human-readable duration: `250ms`, `30s`, `10min`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 30s, 10min)"))
}

/// Parses a human-readable size: `64MiB`, `1GiB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (examples: 4096, 64MiB, 1GiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principals_quotas_fall_back_to_the_defaults_key_by_key() {
        let config = Settings::from_toml(
            "quota_requests = 100\n\
             quota_produce_bytes = \"1MiB\"\n\
             [quotas.\"User:loader\"]\n\
             produce_bytes = \"8MiB\"\n\
             [quotas.\"User:admin\"]\n\
             produce_bytes = \"off\"\n\
             requests = \"off\"\n",
        )
        .unwrap()
        .into_config()
        .unwrap();
        let mib = 1 << 20;
        assert_eq!(
            config.quota_default,
            QuotaLimits {
                produce_bytes: Some(mib),
                fetch_bytes: None,
                requests: Some(100),
            }
        );
        assert_eq!(
            config.quotas["User:loader"],
            QuotaLimits {
                produce_bytes: Some(8 * mib),
                fetch_bytes: None,
                requests: Some(100),
            }
        );
        assert!(config.quotas["User:admin"].is_unlimited());
        let zero = Settings::from_toml("[quotas.\"User:a\"]\nrequests = 0\n")
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(zero.to_string().contains("say `off`"), "{zero}");
        let typo = Settings::from_toml("[quotas.\"User:a\"]\nproduce = 1\n").unwrap_err();
        assert!(typo.contains("produce"), "{typo}");
    }

    #[test]
    fn authentication_in_a_cluster_needs_authenticated_peers() {
        let check = |extra: &str| {
            Settings::from_toml(&format!(
                "node_id = 1\npeers = \"1=127.0.0.1:9393\"\nauthentication = true\n{extra}"
            ))
            .unwrap()
            .into_config()
            .unwrap()
            .validate()
        };
        let e = check("").unwrap_err().to_string();
        assert!(
            e.contains("`authentication`") && e.contains("cluster_secret_file"),
            "{e}"
        );
        check("cluster_secret = \"0123456789abcdef-secret\"\n").unwrap();
    }

    #[test]
    fn parses_flush_policies() {
        assert!(matches!(
            parse_flush("every-batch"),
            Ok(FlushPolicy::EveryBatch)
        ));
        assert!(
            matches!(parse_flush("50ms"), Ok(FlushPolicy::Interval(d)) if d == Duration::from_millis(50))
        );
        assert!(parse_flush("0s").is_err());
        assert!(parse_flush("often").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    fn cluster(node: u32, peers: &str) -> Config {
        Config {
            node_id: Some(node),
            peers: parse_peers(peers).unwrap().0,
            ..Config::default()
        }
    }

    #[test]
    fn cluster_settings_are_checked_by_name() {
        let three = "1=127.0.0.1:9401,2=127.0.0.1:9402,3=127.0.0.1:9403";
        cluster(2, three).validate().unwrap();
        assert_eq!(
            cluster(2, three).peer_listen_addr(),
            Some("127.0.0.1:9402".parse().unwrap())
        );
        let err = |c: Config| c.validate().unwrap_err().to_string();
        // Not a controller: a member, which needs its own dialable address.
        let e = err(cluster(4, three));
        assert!(e.contains("`peer_listen`") && e.contains("1, 2, 3"), "{e}");
        let member = |addr: &str| Config {
            peer_listen: Some(addr.parse().unwrap()),
            ..cluster(4, three)
        };
        member("127.0.0.1:9404").validate().unwrap();
        assert_eq!(
            member("127.0.0.1:9404").peer_listen_addr(),
            Some("127.0.0.1:9404".parse().unwrap())
        );
        let e = err(member("0.0.0.0:9404"));
        assert!(e.contains("`peer_listen`") && e.contains("0.0.0.0"), "{e}");
        let e = err(member("127.0.0.1:9402"));
        assert!(e.contains("`peer_listen`") && e.contains("node 2"), "{e}");
        let e = err(member("127.0.0.1:0"));
        assert!(e.contains("`peer_listen`"), "{e}");
        let e = parse_peers("1=127.0.0.1:1,1=127.0.0.1:2").unwrap_err();
        assert!(e.contains("node id 1 appears more than once"), "{e}");
        assert!(parse_peers("1:127.0.0.1:1").is_err());
        assert!(parse_peers("0=127.0.0.1:1").is_err());
        assert!(parse_peers("1=localhost").is_err());
        assert!(parse_node_id("0").is_err());
        let e = err(cluster(1, "1=127.0.0.1:9401,2=127.0.0.1:9401"));
        assert!(e.contains("`peers`") && e.contains("same address"), "{e}");
        let e = err(Config {
            peers: parse_peers(three).unwrap().0,
            ..Config::default()
        });
        assert!(e.contains("`node_id`"), "{e}");
        let e = err(Config {
            cluster_id: "a b".into(),
            ..cluster(1, three)
        });
        assert!(e.contains("`cluster_id`"), "{e}");
        let e = err(Config {
            replace_after: Duration::from_secs(5),
            ..cluster(1, three)
        });
        assert!(e.contains("`replace_after`"), "{e}");
        let e = err(Config {
            peer_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..cluster(1, three)
        });
        assert!(e.contains("`peer_listen`"), "{e}");
    }

    #[test]
    fn tls_and_secret_settings_are_checked_by_name() {
        let err = |toml: &str| {
            Settings::from_toml(toml)
                .unwrap()
                .into_config()
                .unwrap_err()
                .to_string()
        };
        let e = err("tls_key = \"k.pem\"");
        assert!(
            e.contains("`tls_key`") && e.contains("needs `tls_cert`"),
            "{e}"
        );
        let e = err("tls_cert = \"c.pem\"");
        assert!(
            e.contains("`tls_cert`") && e.contains("needs `tls_key`"),
            "{e}"
        );
        let e = err("tls_client_ca = \"ca.pem\"");
        assert!(e.contains("`tls_client_ca`"), "{e}");
        let e = err("tls_ca = \"ca.pem\"");
        assert!(e.contains("`tls_ca`"), "{e}");
        let e = err("cluster_secret = \"short\"");
        assert!(
            e.contains("`cluster_secret`") && e.contains("at least 16"),
            "{e}"
        );
        assert!(!e.contains("short\""), "the secret is never shown: {e}");
        let e = err("cluster_secret = \"0123456789abcdef\"\ncluster_secret_file = \"/s\"");
        assert!(e.contains("not both"), "{e}");
        let e = err("cluster_secret_file = \"/nonexistent/secret\"");
        assert!(
            e.contains("`cluster_secret_file`") && e.contains("/nonexistent/secret"),
            "{e}"
        );
        let s = Settings::from_toml("cluster_secret = \"0123456789abcdef-xyz\"").unwrap();
        assert!(!format!("{s:?}").contains("xyz"));
        let c = s.into_config().unwrap();
        assert!(c.cluster_secret.is_some() && c.peers_authenticated());
        assert!(!format!("{c:?}").contains("xyz"));
        // TLS in a cluster needs the CA the other nodes are checked against.
        let three = "1=127.0.0.1:9401,2=127.0.0.1:9402,3=127.0.0.1:9403";
        let tls = |ca: Option<&str>| Config {
            tls_files: Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: None,
                ca: ca.map(PathBuf::from),
            }),
            ..cluster(1, three)
        };
        let e = tls(None).validate().unwrap_err().to_string();
        assert!(e.contains("`tls_ca`"), "{e}");
        tls(Some("ca.pem")).validate().unwrap();
        assert!(!tls(Some("ca.pem")).peers_authenticated());
    }

    #[test]
    fn names_the_bad_key() {
        let c = Config {
            cores: 0,
            ..Config::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("`cores`"), "{msg}");
    }
}
