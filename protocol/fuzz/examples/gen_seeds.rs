//! Writes the seed corpus under `seeds/<target>/`: valid encodings of every
//! request and response (and an error response per api), record batches
//! alone and laid end to end, and every kind of peer frame. Run from
//! `protocol/fuzz`: `cargo run --example gen_seeds`. The samples mirror
//! `sample_requests`/`sample_responses` in `protocol/src/messages/tests.rs`.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringmq_protocol::batch::{BatchBuilder, Header, ProducerStamp};
use ringmq_protocol::peer::{Forward, Hello, NodeHeartbeat, PeerMessage, RaftMessage, Reject, RejectReason};
use ringmq_protocol::*;

fn sample_batch() -> Bytes {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    b.finish(None)
}

fn sample_requests() -> Vec<Request> {
    vec![
        ApiVersionsRequest {}.into(),
        MetadataRequest { topics: None }.into(),
        MetadataRequest {
            topics: Some(vec!["a".into(), "b-2".into()]),
        }
        .into(),
        MetadataRequest {
            topics: Some(vec![]),
        }
        .into(),
        CreateTopicRequest {
            name: "orders".into(),
            partitions: 8,
            replication: 3,
        }
        .into(),
        DeleteTopicRequest {
            name: "orders".into(),
        }
        .into(),
        ListTopicsRequest {}.into(),
        ProduceRequest {
            topic: "orders".into(),
            partition: 7,
            acks: Acks::All,
            timeout_ms: 30_000,
            batch: sample_batch(),
        }
        .into(),
        ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::None,
            timeout_ms: 0,
            batch: Bytes::new(),
        }
        .into(),
        FetchRequest {
            topic: "orders".into(),
            partition: 3,
            offset: u64::MAX,
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait_ms: 500,
        }
        .into(),
        ListOffsetsRequest {
            topic: "orders".into(),
            partition: 1,
            spec: OffsetSpec::Earliest,
        }
        .into(),
        ListOffsetsRequest {
            topic: "orders".into(),
            partition: 1,
            spec: OffsetSpec::Latest,
        }
        .into(),
        ListOffsetsRequest {
            topic: "orders".into(),
            partition: 1,
            spec: OffsetSpec::Timestamp(1_700_000_000_000),
        }
        .into(),
        JoinGroupRequest {
            group: "workers".into(),
            member_id: String::new(),
            instance_id: Some("host-1".into()),
            session_timeout_ms: 10_000,
            topics: vec!["tasks".into(), "events".into()],
        }
        .into(),
        JoinGroupRequest {
            group: "g".into(),
            member_id: "m-1".into(),
            instance_id: None,
            session_timeout_ms: 500,
            topics: vec![],
        }
        .into(),
        HeartbeatRequest {
            group: "workers".into(),
            member_id: "m-1".into(),
            generation: 3,
        }
        .into(),
        LeaveGroupRequest {
            group: "workers".into(),
            member_id: "m-1".into(),
        }
        .into(),
        CommitOffsetsRequest {
            group: "workers".into(),
            member_id: "m-1".into(),
            generation: 3,
            offsets: vec![PartitionOffset {
                topic: "tasks".into(),
                partition: 2,
                offset: 1_000,
            }],
        }
        .into(),
        FetchOffsetsRequest {
            group: "workers".into(),
            topics: vec!["tasks".into()],
        }
        .into(),
        DescribeGroupRequest {
            group: "workers".into(),
        }
        .into(),
        ListGroupsRequest {}.into(),
    ]
}

fn sample_responses() -> Vec<ResponseBody> {
    vec![
        ApiVersionsResponse::supported().into(),
        MetadataResponse {
            brokers: vec![BrokerMetadata {
                node_id: 1,
                host: "10.0.0.1".into(),
                port: 9092,
            }],
            topics: vec![
                TopicMetadata {
                    name: "orders".into(),
                    error_code: ErrorCode::None,
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        leader: 1,
                        leader_epoch: 4,
                        replicas: vec![1, 2, 3],
                        isr: vec![1, 3],
                    }],
                },
                TopicMetadata {
                    name: "nope".into(),
                    error_code: ErrorCode::UnknownTopic,
                    partitions: vec![],
                },
            ],
        }
        .into(),
        CreateTopicResponse {}.into(),
        DeleteTopicResponse {}.into(),
        ListTopicsResponse {
            topics: vec![TopicInfo {
                name: "orders".into(),
                partitions: 8,
                replication: 1,
            }],
        }
        .into(),
        ProduceResponse {
            base_offset: 42,
            log_start_offset: 0,
        }
        .into(),
        FetchResponse {
            high_watermark: 43,
            log_start_offset: 0,
            records: sample_batch(),
        }
        .into(),
        ListOffsetsResponse { offset: 9 }.into(),
        JoinGroupResponse {
            member_id: "m-1".into(),
            heartbeat_interval_ms: 3_333,
            assignment: MemberAssignment {
                generation: 4,
                partitions: vec![TopicPartitions {
                    topic: "tasks".into(),
                    partitions: vec![0, 3, 7],
                }],
                pending: 1,
            },
        }
        .into(),
        HeartbeatResponse {
            assignment: MemberAssignment::default(),
        }
        .into(),
        LeaveGroupResponse {}.into(),
        CommitOffsetsResponse {}.into(),
        FetchOffsetsResponse {
            offsets: vec![PartitionOffset {
                topic: "tasks".into(),
                partition: 0,
                offset: 17,
            }],
        }
        .into(),
        DescribeGroupResponse {
            group: "workers".into(),
            state: GroupState::Rebalancing,
            generation: 4,
            topics: vec!["tasks".into()],
            members: vec![MemberDescription {
                member_id: "m-1".into(),
                instance_id: None,
                session_timeout_ms: 10_000,
                idle_ms: 12,
                partitions: vec![TopicPartitions {
                    topic: "tasks".into(),
                    partitions: vec![1],
                }],
            }],
            partitions: vec![
                PartitionDescription {
                    topic: "tasks".into(),
                    partition: 0,
                    holder: None,
                    committed: Some(5),
                    end_offset: 9,
                },
                PartitionDescription {
                    topic: "tasks".into(),
                    partition: 1,
                    holder: Some("m-1".into()),
                    committed: None,
                    end_offset: 0,
                },
            ],
        }
        .into(),
        ListGroupsResponse {
            groups: vec![GroupSummary {
                group: "workers".into(),
                state: GroupState::Stable,
                generation: 2,
                members: 3,
            }],
        }
        .into(),
    ]
}


fn batches() -> Vec<Bytes> {
    let mut out = vec![sample_batch()];
    let mut b = BatchBuilder::new(1_000);
    b.push(1_000, Some(b"k1"), Some(b"hello"), &[]);
    b.push(
        1_005,
        None,
        Some(b""),
        &[Header {
            key: Bytes::from_static(b"h"),
            value: None,
        }, Header {
            key: Bytes::from_static(b"trace"),
            value: Some(Bytes::from_static(b"abc")),
        }],
    );
    b.push(999, Some(b""), None, &[]);
    out.push(b.finish(Some(ProducerStamp {
        producer_id: 9,
        producer_epoch: 2,
        base_sequence: 100,
    })));
    // Two batches laid end to end, the second stamped by the broker.
    let mut two = out[0].to_vec();
    let mut second = out[1].to_vec();
    batch::stamp(&mut second, 1, 4);
    two.extend_from_slice(&second);
    out.push(Bytes::from(two));
    out
}

fn peer_messages() -> Vec<PeerMessage> {
    vec![
        PeerMessage::Hello(Hello {
            protocol_version: 0,
            cluster_id: "eu".into(),
            node_id: 3,
        }),
        PeerMessage::Reject(Reject {
            reason: RejectReason::WrongCluster,
            message: "cluster id is \"us\", not \"eu\"".into(),
        }),
        PeerMessage::Raft(RaftMessage {
            message: Bytes::from_static(&[0x08, 0x03, 0x10, 0x01, 0x18, 0x02, 0x20, 0x05]),
        }),
        PeerMessage::Heartbeat(NodeHeartbeat {
            node_id: 2,
            incarnation: 0x1234_5678_9abc,
            sent_ms: 1_700_000_000_000,
        }),
        PeerMessage::Forward(Forward {
            command: Bytes::from_static(br#"{"Remove":{"node":4}}"#),
        }),
    ]
}

fn write(dir: &Path, name: String, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let seeds = Path::new("seeds");
    let client = seeds.join("client_frame");
    for (i, req) in sample_requests().iter().enumerate() {
        let mut buf = BytesMut::new();
        req.encode(i as u32 + 1, &mut buf);
        write(&client, format!("req-{i:02}-{}", req.api_key()), &buf);
    }
    for (i, resp) in sample_responses().iter().enumerate() {
        let mut buf = BytesMut::new();
        resp.encode(i as u32 + 1, &mut buf);
        write(&client, format!("resp-{i:02}-{}", resp.api_key()), &buf);
    }
    let mut buf = BytesMut::new();
    frame::encode_error_response(7, ErrorCode::UnknownTopic, "no topic orders", &mut buf);
    write(&client, "resp-error".into(), &buf);

    let batch_dir = seeds.join("record_batch");
    for (i, b) in batches().iter().enumerate() {
        write(&batch_dir, format!("batch-{i}"), b);
    }

    let peer = seeds.join("peer_frame");
    let mut stream = BytesMut::new();
    for m in peer_messages() {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        write(&peer, format!("{:?}", m.kind()), &buf);
        m.encode(&mut stream);
    }
    write(&peer, "stream".into(), &stream);
}
