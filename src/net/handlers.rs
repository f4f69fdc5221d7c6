//! One function per api: check what the request asks, call the shard, and
//! say what to answer. No socket and no encoding here.

use std::time::Duration;

use ringmq_protocol::batch::MAX_BATCH_BYTES;
use ringmq_protocol::limits::{self, MAX_FETCH_BYTES, MAX_FETCH_WAIT_MS, MAX_PARTITIONS};
use ringmq_protocol::{
    ApiVersionsResponse, BrokerMetadata, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicRequest, DeleteTopicResponse, ErrorCode, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, ListTopicsResponse, MetadataRequest, MetadataResponse,
    OffsetSpec, PartitionMetadata, ProduceRequest, ProduceResponse, ResponseBody, TopicInfo,
    TopicMetadata,
};

use crate::metrics::{self, Traffic};
use crate::shard::{now_ms, Failure, Shard};
use crate::topics::TopicMeta;

/// The node id a single broker reports for itself.
pub const NODE_ID: u32 = 1;

/// What a handler answers: a response body, or a fetch whose records are
/// written to the socket from where they lie.
pub enum Answer {
    Body(ResponseBody),
    Fetch(FetchResponse),
}

fn body(b: impl Into<ResponseBody>) -> Result<Answer, Failure> {
    Ok(Answer::Body(b.into()))
}

pub fn api_versions() -> Answer {
    Answer::Body(ApiVersionsResponse::supported().into())
}

pub fn metadata(shard: &Shard, req: MetadataRequest) -> Result<Answer, Failure> {
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

pub async fn create_topic(shard: &Shard, req: CreateTopicRequest) -> Result<Answer, Failure> {
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
    if req.replication != 1 {
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
            replication: req.replication,
            created_ms: now_ms(),
        })
        .await?;
    body(CreateTopicResponse {})
}

pub async fn delete_topic(shard: &Shard, req: DeleteTopicRequest) -> Result<Answer, Failure> {
    limits::validate_topic_name(&req.name)
        .map_err(|e| Failure::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    shard.delete_topic(req.name).await?;
    body(DeleteTopicResponse {})
}

pub fn list_topics(shard: &Shard) -> Answer {
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

pub async fn produce(shard: &Shard, req: ProduceRequest) -> Result<Answer, Failure> {
    if req.batch.len() > MAX_BATCH_BYTES {
        return Err(Failure::new(
            ErrorCode::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds the limit of {MAX_BATCH_BYTES}",
                req.batch.len()
            ),
        ));
    }
    // acks=all on a single node: the leader is the whole in-sync set.
    let bytes = req.batch.len();
    let produced = shard.produce(&req.topic, req.partition, req.batch).await?;
    metrics::topic_traffic(&req.topic, Traffic::Produce, bytes);
    body(ProduceResponse {
        base_offset: produced.base_offset,
        log_start_offset: produced.log_start_offset,
    })
}

pub async fn fetch(shard: &Shard, req: FetchRequest) -> Result<Answer, Failure> {
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
        records: f.records,
    }))
}

pub async fn list_offsets(shard: &Shard, req: ListOffsetsRequest) -> Result<Answer, Failure> {
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
