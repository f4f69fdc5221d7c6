//! One valid value of every request and response, for round-trip tests
//! here and for seeding the fuzzers (`protocol/fuzz`, through the
//! `samples` feature). Not part of the protocol: nothing else uses them.

use bytes::Bytes;

use super::*;
use crate::batch::BatchBuilder;

/// A batch of one record (key `k`, value `v`).
pub fn sample_batch() -> Bytes {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    b.finish(None)
}

/// At least one request of every api, with edge cases (empty and absent
/// fields).
pub fn sample_requests() -> Vec<Request> {
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
        ForwardHelloRequest {
            node_id: 2,
            cluster_id: "ringmq".into(),
            nonce: Bytes::from_static(&[7; 32]),
            proof: Bytes::new(),
        }
        .into(),
        ForwardHelloRequest {
            node_id: 2,
            cluster_id: "ringmq".into(),
            nonce: Bytes::from_static(&[7; 32]),
            proof: Bytes::from_static(&[9; 32]),
        }
        .into(),
        InitProducerIdRequest {}.into(),
        ReplicaFetchRequest {
            replica: 3,
            topic: "tasks".into(),
            partition: 1,
            leader_epoch: 4,
            fetch_offset: 120,
            last_fetched_epoch: 3,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        }
        .into(),
        SaslHandshakeRequest {
            mechanism: crate::scram::MECHANISM.into(),
        }
        .into(),
        SaslAuthenticateRequest {
            auth_bytes: Bytes::from_static(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
        }
        .into(),
        UpsertUserRequest {
            name: "alice".into(),
            mechanism: crate::scram::MECHANISM.into(),
            salt: Bytes::from_static(&[7; 16]),
            iterations: 4096,
            stored_key: Bytes::from_static(&[1; 32]),
            server_key: Bytes::from_static(&[2; 32]),
        }
        .into(),
        DeleteUserRequest {
            name: "alice".into(),
        }
        .into(),
        ListUsersRequest {}.into(),
        AlterAclRequest {
            add: true,
            binding: AclBinding {
                principal: "User:alice".into(),
                resource: ResourceType::Topic,
                pattern: PatternType::Prefix,
                name: "orders.".into(),
                operation: Operation::Consume,
            },
        }
        .into(),
        AlterAclRequest {
            add: false,
            binding: AclBinding {
                principal: "User:bob".into(),
                resource: ResourceType::Group,
                pattern: PatternType::Literal,
                name: "billing".into(),
                operation: Operation::Commit,
            },
        }
        .into(),
        ListAclsRequest {}.into(),
        AlterQuotaRequest {
            quota: QuotaBinding {
                principal: "User:noisy".into(),
                produce_bytes: 65_536,
                fetch_bytes: QUOTA_UNLIMITED,
                requests: QUOTA_DEFAULT,
            },
            remove: false,
        }
        .into(),
        AlterQuotaRequest {
            quota: QuotaBinding {
                principal: "User:noisy".into(),
                produce_bytes: QUOTA_DEFAULT,
                fetch_bytes: QUOTA_DEFAULT,
                requests: QUOTA_DEFAULT,
            },
            remove: true,
        }
        .into(),
        ListQuotasRequest {}.into(),
    ]
}

/// At least one response body of every api.
pub fn sample_responses() -> Vec<ResponseBody> {
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
            throttle_ms: 0,
        }
        .into(),
        FetchResponse {
            high_watermark: 43,
            log_start_offset: 0,
            throttle_ms: 250,
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
        ForwardHelloResponse {
            challenge: Bytes::from_static(&[5; 32]),
            proof: Bytes::new(),
        }
        .into(),
        ForwardHelloResponse::default().into(),
        InitProducerIdResponse {
            producer_id: 7 << 40 | 12345,
            producer_epoch: 0,
        }
        .into(),
        ReplicaFetchResponse {
            high_watermark: 130,
            log_start_offset: 0,
            diverging: None,
            records: sample_batch(),
        }
        .into(),
        ReplicaFetchResponse {
            high_watermark: 130,
            log_start_offset: 0,
            diverging: Some(EpochEnd {
                epoch: 2,
                end_offset: 100,
            }),
            records: Bytes::new(),
        }
        .into(),
        SaslHandshakeResponse {
            mechanisms: vec![crate::scram::MECHANISM.into()],
        }
        .into(),
        SaslAuthenticateResponse {
            auth_bytes: Bytes::from_static(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        }
        .into(),
        UpsertUserResponse {}.into(),
        DeleteUserResponse {}.into(),
        ListUsersResponse {
            users: vec![UserInfo {
                name: "alice".into(),
                mechanism: crate::scram::MECHANISM.into(),
            }],
        }
        .into(),
        AlterAclResponse {}.into(),
        ListAclsResponse {
            acls: vec![AclBinding {
                principal: "User:alice".into(),
                resource: ResourceType::Cluster,
                pattern: PatternType::Literal,
                name: String::new(),
                operation: Operation::Alter,
            }],
        }
        .into(),
        AlterQuotaResponse {}.into(),
        ListQuotasResponse {
            quotas: vec![QuotaBinding {
                principal: "User:noisy".into(),
                produce_bytes: 65_536,
                fetch_bytes: QUOTA_UNLIMITED,
                requests: QUOTA_DEFAULT,
            }],
        }
        .into(),
    ]
}
