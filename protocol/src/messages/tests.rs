//! Round trips of every message through whole frames, and the zero-copy and
//! routing helpers.

use super::*;
use crate::batch::BatchBuilder;

pub(crate) fn sample_batch() -> Bytes {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    b.finish(None)
}

pub(crate) fn sample_requests() -> Vec<Request> {
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

pub(crate) fn sample_responses() -> Vec<ResponseBody> {
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

#[test]
fn every_request_round_trips() {
    let reqs = sample_requests();
    for key in ApiKey::ALL {
        assert!(
            reqs.iter().any(|r| r.api_key() == key),
            "no sample for {key}"
        );
    }
    for (i, req) in reqs.into_iter().enumerate() {
        let mut buf = BytesMut::new();
        req.encode(i as u32, &mut buf);
        let (h, got) = Request::decode_frame(buf.freeze()).unwrap();
        assert_eq!(h.correlation_id, i as u32);
        assert_eq!(h.api_key, req.api_key().as_u16());
        assert_eq!(got, req);
    }
}

#[test]
fn every_response_round_trips() {
    let resps = sample_responses();
    for key in ApiKey::ALL {
        assert!(
            resps.iter().any(|r| r.api_key() == key),
            "no sample for {key}"
        );
    }
    for (i, body) in resps.into_iter().enumerate() {
        let resp = Response {
            correlation_id: i as u32,
            result: Ok(body),
        };
        let mut buf = BytesMut::new();
        resp.encode(&mut buf);
        let api = resp.result.as_ref().unwrap().api_key();
        assert_eq!(Response::decode_frame(api, buf.freeze()).unwrap(), resp);
    }
}

#[test]
fn error_responses_round_trip_for_every_api() {
    for api in ApiKey::ALL {
        for &code in &ErrorCode::ALL[1..] {
            let resp = Response {
                correlation_id: 7,
                result: Err(ErrorResponse {
                    code,
                    message: format!("{api} failed"),
                }),
            };
            let mut buf = BytesMut::new();
            resp.encode(&mut buf);
            assert_eq!(Response::decode_frame(api, buf.freeze()).unwrap(), resp);
        }
    }
}

#[test]
fn decoded_bytes_fields_share_the_frame() {
    let req: Request = ProduceRequest {
        topic: "t".into(),
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 1,
        batch: sample_batch(),
    }
    .into();
    let mut buf = BytesMut::new();
    req.encode(1, &mut buf);
    let frame = buf.freeze();
    let (_, got) = Request::decode_frame(frame.clone()).unwrap();
    let Request::Produce(p) = got else { panic!() };
    let range = frame.as_ptr_range();
    assert!(range.contains(&p.batch.as_ptr()), "batch was copied");
}

#[test]
fn produce_encode_head_plus_batch_equals_encode() {
    let p = ProduceRequest {
        topic: "orders".into(),
        partition: 2,
        acks: Acks::Leader,
        timeout_ms: 100,
        batch: sample_batch(),
    };
    let mut whole = BytesMut::new();
    Request::from(p.clone()).encode(5, &mut whole);
    let mut head = BytesMut::new();
    p.encode_head(5, &mut head);
    head.extend_from_slice(&p.batch);
    assert_eq!(head, whole);
}

#[test]
fn fetch_encode_head_plus_records_equals_encode() {
    let f = FetchResponse {
        high_watermark: 10,
        log_start_offset: 2,
        records: sample_batch(),
    };
    let mut whole = BytesMut::new();
    ResponseBody::from(f.clone()).encode(9, &mut whole);
    let mut head = BytesMut::new();
    f.encode_head(9, &mut head);
    assert_eq!(head.len(), RESPONSE_HEADER_LEN + 8 + 8 + 4);
    head.extend_from_slice(&f.records);
    assert_eq!(head, whole);
}

#[test]
fn route_key_peeks_partition_addressed_bodies() {
    for req in sample_requests() {
        let mut buf = BytesMut::new();
        req.encode(0, &mut buf);
        let body = &buf[REQUEST_HEADER_LEN..];
        assert_eq!(route_key(req.api_key(), body), req.topic_partition());
    }
    assert_eq!(route_key(ApiKey::Fetch, &[]), None);
    assert_eq!(route_key(ApiKey::Fetch, &[1, 0, b'a', 1, 0, 0]), None);
    assert_eq!(route_key(ApiKey::Fetch, &[1, 0, 0xff, 1, 0, 0, 0]), None);
    assert_eq!(
        route_key(ApiKey::Fetch, &[1, 0, b'a', 1, 0, 0, 0]),
        Some(("a", 1))
    );
}

#[test]
fn acks_zero_expects_no_response() {
    for req in sample_requests() {
        let silent = matches!(&req, Request::Produce(p) if p.acks == Acks::None);
        assert_eq!(req.expects_response(), !silent);
    }
}

#[test]
fn bad_enum_values_and_trailing_bytes_are_malformed() {
    let header = |api: ApiKey, body_len: usize| RequestHeader {
        length: (body_len + 8) as u32,
        api_key: api.as_u16(),
        api_version: 0,
        correlation_id: 1,
    };
    // acks = 2
    let body = Bytes::from_static(&[1, 0, b't', 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    let e = Request::decode(&header(ApiKey::Produce, body.len()), body).unwrap_err();
    assert!(matches!(e, FrameError::Malformed(_)), "{e}");
    // spec = -3
    let mut v = vec![1, 0, b't', 0, 0, 0, 0];
    v.extend_from_slice(&(-3i64).to_le_bytes());
    let body = Bytes::from(v);
    let e = Request::decode(&header(ApiKey::ListOffsets, body.len()), body).unwrap_err();
    assert!(matches!(e, FrameError::Malformed(_)), "{e}");
    // ApiVersions with a byte of body
    let body = Bytes::from_static(&[0]);
    let e = Request::decode(&header(ApiKey::ApiVersions, 1), body).unwrap_err();
    assert!(matches!(e, FrameError::Malformed(_)), "{e}");
}

#[test]
fn request_decode_rechecks_the_header() {
    let h = RequestHeader {
        length: 8,
        api_key: 99,
        api_version: 0,
        correlation_id: 1,
    };
    assert_eq!(
        Request::decode(&h, Bytes::new()),
        Err(FrameError::UnknownApi(99))
    );
    let h = RequestHeader {
        api_key: 0,
        api_version: 3,
        ..h
    };
    assert_eq!(
        Request::decode(&h, Bytes::new()),
        Err(FrameError::UnsupportedVersion { api: 0, version: 3 })
    );
}
