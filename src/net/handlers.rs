//! One function per api: check what the request asks, call the shard, and
//! say what to answer. No socket and no encoding here.

use std::time::Duration;

use ringmq_protocol::batch::MAX_BATCH_BYTES;
use ringmq_protocol::limits::{self, MAX_FETCH_BYTES, MAX_FETCH_WAIT_MS, MAX_PARTITIONS};
use ringmq_protocol::{
    ApiVersionsResponse, BrokerMetadata, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicRequest, DeleteTopicResponse, ErrorCode, FetchRequest, FetchResponse,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, ListTopicsResponse,
    MetadataRequest, MetadataResponse, OffsetSpec, PartitionMetadata, ProduceRequest,
    ProduceResponse, ReplicaFetchRequest, ReplicaFetchResponse, Request, ResponseBody, TopicInfo,
    TopicMetadata, NO_LEADER,
};

use crate::cluster::metadata::{default_replication, Command};
use crate::cluster::view::ClusterView;
use crate::metrics::{self, Traffic};
use crate::shard::{now_ms, Failure, Origin, Route, Shard};
use crate::topics::TopicMeta;

/// The node id a single broker reports for itself.
pub const NODE_ID: u32 = 1;

/// What a handler answers: a response body, or a fetch whose records are
/// written to the socket from where they lie.
pub enum Answer {
    Body(ResponseBody),
    Fetch(FetchResponse),
    Replica(ReplicaFetchResponse),
}

impl Answer {
    /// Tells the client its connection is muted for `wait` (a quota);
    /// only Produce and Fetch answers have the field (SPEC.md 5.25).
    pub fn set_throttle(&mut self, wait: std::time::Duration) {
        let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        match self {
            Answer::Body(ResponseBody::Produce(p)) => p.throttle_ms = ms,
            Answer::Fetch(f) => f.throttle_ms = ms,
            _ => {}
        }
    }
}

fn body(b: impl Into<ResponseBody>) -> Result<Answer, Failure> {
    Ok(Answer::Body(b.into()))
}

pub fn api_versions() -> Answer {
    Answer::Body(ApiVersionsResponse::supported().into())
}

/// The answer of another node, relayed as it came. `None` is a produce
/// with acks=0, which is not answered anyway.
fn relayed(answer: Option<ResponseBody>) -> Result<Answer, Failure> {
    match answer {
        Some(ResponseBody::Fetch(f)) => Ok(Answer::Fetch(f)),
        Some(ResponseBody::ReplicaFetch(r)) => Ok(Answer::Replica(r)),
        Some(b) => Ok(Answer::Body(b)),
        None => body(ProduceResponse {
            base_offset: 0,
            log_start_offset: 0,
            throttle_ms: 0,
        }),
    }
}

/// Serves a partition request here, or forwards it to the leader node.
macro_rules! route_or_forward {
    ($shard:expr, $req:expr, $origin:expr, $variant:ident) => {
        if let Route::Remote { node, addr } = $shard.route(&$req.topic, $req.partition, $origin)? {
            let req = Request::$variant($req);
            return relayed(
                $shard
                    .forward(node, addr, &req, ErrorCode::NotLeader)
                    .await?,
            );
        }
    };
}

/// InitProducerId (SPEC.md 5.20): an id no other producer of the cluster
/// gets: this node's id above a counter that starts at the clock (ms since
/// 2026), so a restarted node does not hand out its old ids again.
pub fn init_producer_id(shard: &Shard) -> Answer {
    use std::sync::atomic::{AtomicU64, Ordering};
    const COUNTER_BITS: u32 = 40;
    const EPOCH_2026_MS: i64 = 1_767_225_600_000;
    static LAST: AtomicU64 = AtomicU64::new(0);
    let clock = u64::try_from(now_ms() - EPOCH_2026_MS).unwrap_or(0);
    let counter = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(last.max(clock.saturating_sub(1)) + 1)
        })
        .map_or(clock, |last| last.max(clock.saturating_sub(1)) + 1);
    let node =
        u64::from(shard.config.node_id.unwrap_or(NODE_ID)) & ((1 << (63 - COUNTER_BITS)) - 1);
    let id = (node << COUNTER_BITS) | (counter & ((1 << COUNTER_BITS) - 1));
    Answer::Body(
        InitProducerIdResponse {
            producer_id: id as i64,
            producer_epoch: 0,
        }
        .into(),
    )
}

/// Longest a produce waits for its in-sync copies.
const MAX_PRODUCE_TIMEOUT_MS: u32 = 300_000;

/// ReplicaFetch (SPEC.md 5.19), from the node the connection's ForwardHello
/// named, for a partition this node leads.
pub async fn replica_fetch(
    shard: &Shard,
    req: ReplicaFetchRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    match origin {
        Origin::Node(n) if n == req.replica => {}
        Origin::Node(n) => {
            return Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!("node {n} fetched for node {}", req.replica),
            ))
        }
        Origin::Client => return Err(Failure::new(
            ErrorCode::InvalidRequest,
            "ReplicaFetch is for nodes of a cluster, on a connection that began with ForwardHello",
        )),
    }
    Ok(Answer::Replica(shard.replica_fetch(req).await?))
}

/// Metadata of a cluster: every live member, and each partition's placement.
fn cluster_metadata(view: &ClusterView, req: MetadataRequest) -> MetadataResponse {
    let describe = |t: &crate::cluster::metadata::Topic| TopicMetadata {
        name: t.name.clone(),
        error_code: ErrorCode::None,
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(p, placement)| PartitionMetadata {
                partition: p as u32,
                leader: placement.leader.unwrap_or(NO_LEADER),
                leader_epoch: u32::try_from(placement.leader_epoch).unwrap_or(u32::MAX),
                replicas: placement.replicas.clone(),
                isr: placement.isr.clone(),
            })
            .collect(),
    };
    let topics = match req.topics {
        None => view.user_topics().map(describe).collect(),
        Some(names) => names
            .into_iter()
            .map(
                |name| match view.topics.get(&name).filter(|_| !name.starts_with("__")) {
                    Some(t) => describe(t),
                    None => TopicMetadata {
                        name,
                        error_code: ErrorCode::UnknownTopic,
                        partitions: Vec::new(),
                    },
                },
            )
            .collect(),
    };
    let brokers = view
        .brokers
        .values()
        .filter(|b| b.alive)
        .filter_map(|b| {
            let addr = b.client_addr?;
            Some(BrokerMetadata {
                node_id: b.id,
                host: addr.ip().to_string(),
                port: addr.port(),
            })
        })
        .collect();
    MetadataResponse { brokers, topics }
}

pub fn metadata(shard: &Shard, req: MetadataRequest) -> Result<Answer, Failure> {
    if shard.is_clustered() {
        let view = shard.view().ok_or_else(|| {
            Failure::new(
                ErrorCode::NotLeader,
                "this node has not loaded the cluster metadata yet; retry",
            )
        })?;
        return body(cluster_metadata(&view, req));
    }
    let describe = |meta: &TopicMeta| TopicMetadata {
        name: meta.name.clone(),
        error_code: ErrorCode::None,
        partitions: (0..meta.partitions)
            .map(|p| PartitionMetadata {
                partition: p,
                leader: NODE_ID,
                leader_epoch: 0,
                replicas: vec![NODE_ID],
                isr: vec![NODE_ID],
            })
            .collect(),
    };
    let topics = match req.topics {
        None => shard.topics().iter().map(describe).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match shard.topic(&name) {
                Some(meta) => describe(&meta),
                None => TopicMetadata {
                    name,
                    error_code: ErrorCode::UnknownTopic,
                    partitions: Vec::new(),
                },
            })
            .collect(),
    };
    let listen = shard.config.listen;
    body(MetadataResponse {
        brokers: vec![BrokerMetadata {
            node_id: NODE_ID,
            host: listen.ip().to_string(),
            port: listen.port(),
        }],
        topics,
    })
}

pub async fn create_topic(
    shard: &Shard,
    req: CreateTopicRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    limits::validate_topic_name(&req.name)
        .map_err(|e| Failure::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    if req.partitions == 0 || req.partitions > MAX_PARTITIONS {
        return Err(Failure::new(
            ErrorCode::InvalidPartitions,
            format!(
                "a topic has 1..={MAX_PARTITIONS} partitions, not {}",
                req.partitions
            ),
        ));
    }
    if let Some(view) = shard.view() {
        // 0: the cluster's default, three copies where there are three nodes.
        let replication = match req.replication {
            0 => default_replication(view.brokers.len()),
            r => r,
        };
        let name = req.name.clone();
        let cmd = Command::CreateTopic {
            name: req.name.clone(),
            partitions: req.partitions,
            replication,
        };
        let request = Request::CreateTopic(req);
        shard
            .change_topics(cmd, request, origin, move |v| v.topics.contains_key(&name))
            .await?;
        return body(CreateTopicResponse {});
    }
    if req.replication > 1 {
        return Err(Failure::new(
            ErrorCode::InvalidReplicationFactor,
            format!(
                "replication {} needs {} nodes; this is a single node (replication 1)",
                req.replication, req.replication
            ),
        ));
    }
    shard
        .create_topic(TopicMeta {
            name: req.name,
            partitions: req.partitions,
            replication: 1,
            created_ms: now_ms(),
            cluster_id: 0,
        })
        .await?;
    body(CreateTopicResponse {})
}

pub async fn delete_topic(
    shard: &Shard,
    req: DeleteTopicRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    limits::validate_topic_name(&req.name)
        .map_err(|e| Failure::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    if shard.is_clustered() {
        let name = req.name.clone();
        let cmd = Command::DeleteTopic {
            name: req.name.clone(),
        };
        let request = Request::DeleteTopic(req);
        shard
            .change_topics(cmd, request, origin, move |v| !v.topics.contains_key(&name))
            .await?;
        return body(DeleteTopicResponse {});
    }
    shard.delete_topic(req.name).await?;
    body(DeleteTopicResponse {})
}

pub fn list_topics(shard: &Shard) -> Answer {
    if let Some(view) = shard.view() {
        let topics = view
            .user_topics()
            .map(|t| TopicInfo {
                name: t.name.clone(),
                partitions: t.partition_count(),
                replication: t.replication,
            })
            .collect();
        return Answer::Body(ListTopicsResponse { topics }.into());
    }
    let topics = shard
        .topics()
        .into_iter()
        .map(|t| TopicInfo {
            name: t.name,
            partitions: t.partitions,
            replication: t.replication,
        })
        .collect();
    Answer::Body(ListTopicsResponse { topics }.into())
}

pub async fn produce(
    shard: &Shard,
    req: ProduceRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    if req.batch.len() > MAX_BATCH_BYTES {
        return Err(Failure::new(
            ErrorCode::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds the limit of {MAX_BATCH_BYTES}",
                req.batch.len()
            ),
        ));
    }
    route_or_forward!(shard, req, origin, Produce);
    let bytes = req.batch.len();
    // Bounded like a fetch's wait: a client cannot park a request forever.
    let timeout = Duration::from_millis(u64::from(req.timeout_ms.clamp(1, MAX_PRODUCE_TIMEOUT_MS)));
    let produced = shard
        .produce(&req.topic, req.partition, req.batch, req.acks, timeout)
        .await?;
    metrics::topic_traffic(&req.topic, Traffic::Produce, bytes);
    body(ProduceResponse {
        base_offset: produced.base_offset,
        log_start_offset: produced.log_start_offset,
        throttle_ms: 0,
    })
}

pub async fn fetch(shard: &Shard, req: FetchRequest, origin: Origin) -> Result<Answer, Failure> {
    route_or_forward!(shard, req, origin, Fetch);
    let max_bytes = req.max_bytes.clamp(1, MAX_FETCH_BYTES);
    let max_wait = Duration::from_millis(u64::from(req.max_wait_ms.min(MAX_FETCH_WAIT_MS)));
    let min_bytes = req.min_bytes.min(max_bytes);
    let f = shard
        .fetch(
            &req.topic,
            req.partition,
            req.offset,
            max_bytes,
            min_bytes,
            max_wait,
        )
        .await?;
    metrics::topic_traffic(&req.topic, Traffic::Fetch, f.records.len());
    Ok(Answer::Fetch(FetchResponse {
        high_watermark: f.high_watermark,
        log_start_offset: f.log_start_offset,
        throttle_ms: 0,
        records: f.records,
    }))
}

pub async fn list_offsets(
    shard: &Shard,
    req: ListOffsetsRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    route_or_forward!(shard, req, origin, ListOffsets);
    let spec = req.spec.as_i64();
    if let OffsetSpec::Timestamp(_) = req.spec {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            "looking up an offset by timestamp is not supported by this broker; use earliest or latest",
        ));
    }
    let offset = shard.list_offsets(&req.topic, req.partition, spec).await?;
    body(ListOffsetsResponse { offset })
}
