//! Property tests over the public API, as the broker and the client use it:
//! every message survives a round trip through a whole frame, and no decoder
//! panics on arbitrary or damaged bytes.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use ringmq_protocol::batch::BatchBuilder;
use ringmq_protocol::*;

fn name() -> impl Strategy<Value = String> {
    // Arbitrary Unicode: the codec carries any str; name rules are the broker's.
    prop_oneof!["[a-z0-9._-]{0,12}", ".{0,8}"]
}

fn raw_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// A real batch or arbitrary bytes: the codec does not look inside.
fn batch() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        raw_bytes(),
        (
            any::<i64>(),
            vec((any::<i64>(), option::of(raw_bytes())), 1..4)
        )
            .prop_map(|(ts, recs)| {
                let mut b = BatchBuilder::new(ts);
                for (t, v) in recs {
                    b.push(t, Some(b"key"), v.as_deref(), &[]);
                }
                b.finish(None)
            }),
    ]
}

fn acks() -> impl Strategy<Value = Acks> {
    select(vec![Acks::None, Acks::Leader, Acks::All])
}

fn offset_spec() -> impl Strategy<Value = OffsetSpec> {
    prop_oneof![
        Just(OffsetSpec::Earliest),
        Just(OffsetSpec::Latest),
        (0..=i64::MAX).prop_map(OffsetSpec::Timestamp),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    select(ErrorCode::ALL.to_vec())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(ApiVersionsRequest {}.into()),
        option::of(vec(name(), 0..4)).prop_map(|topics| MetadataRequest { topics }.into()),
        (name(), any::<u32>(), any::<u16>()).prop_map(|(name, partitions, replication)| {
            CreateTopicRequest {
                name,
                partitions,
                replication,
            }
            .into()
        }),
        name().prop_map(|name| DeleteTopicRequest { name }.into()),
        Just(ListTopicsRequest {}.into()),
        (name(), any::<u32>(), acks(), any::<u32>(), batch()).prop_map(
            |(topic, partition, acks, timeout_ms, batch)| {
                ProduceRequest {
                    topic,
                    partition,
                    acks,
                    timeout_ms,
                    batch,
                }
                .into()
            }
        ),
        (name(), any::<u32>(), any::<u64>(), any::<[u32; 3]>()).prop_map(
            |(topic, partition, offset, [max_bytes, min_bytes, max_wait_ms])| {
                FetchRequest {
                    topic,
                    partition,
                    offset,
                    max_bytes,
                    min_bytes,
                    max_wait_ms,
                }
                .into()
            }
        ),
        (name(), any::<u32>(), offset_spec()).prop_map(|(topic, partition, spec)| {
            ListOffsetsRequest {
                topic,
                partition,
                spec,
            }
            .into()
        }),
    ]
}

fn partition_metadata() -> impl Strategy<Value = PartitionMetadata> {
    (
        any::<[u32; 3]>(),
        vec(any::<u32>(), 0..4),
        vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |([partition, leader, leader_epoch], replicas, isr)| PartitionMetadata {
                partition,
                leader,
                leader_epoch,
                replicas,
                isr,
            },
        )
}

fn response_body() -> impl Strategy<Value = ResponseBody> {
    prop_oneof![
        vec(any::<[u16; 3]>(), 0..9).prop_map(|v| {
            ApiVersionsResponse {
                apis: v
                    .into_iter()
                    .map(|[api_key, min_version, max_version]| ApiVersionRange {
                        api_key,
                        min_version,
                        max_version,
                    })
                    .collect(),
            }
            .into()
        }),
        (
            vec((any::<u32>(), name(), any::<u16>()), 0..3),
            vec(
                (name(), error_code(), vec(partition_metadata(), 0..3)),
                0..3
            ),
        )
            .prop_map(|(brokers, topics)| {
                MetadataResponse {
                    brokers: brokers
                        .into_iter()
                        .map(|(node_id, host, port)| BrokerMetadata {
                            node_id,
                            host,
                            port,
                        })
                        .collect(),
                    topics: topics
                        .into_iter()
                        .map(|(name, error_code, partitions)| TopicMetadata {
                            name,
                            error_code,
                            partitions,
                        })
                        .collect(),
                }
                .into()
            }),
        Just(CreateTopicResponse {}.into()),
        Just(DeleteTopicResponse {}.into()),
        vec((name(), any::<u32>(), any::<u16>()), 0..4).prop_map(|v| {
            ListTopicsResponse {
                topics: v
                    .into_iter()
                    .map(|(name, partitions, replication)| TopicInfo {
                        name,
                        partitions,
                        replication,
                    })
                    .collect(),
            }
            .into()
        }),
        (any::<[u64; 2]>(), any::<u32>()).prop_map(
            |([base_offset, log_start_offset], throttle_ms)| {
                ProduceResponse {
                    base_offset,
                    log_start_offset,
                    throttle_ms,
                }
                .into()
            }
        ),
        (any::<[u64; 2]>(), any::<u32>(), batch()).prop_map(
            |([high_watermark, log_start_offset], throttle_ms, records)| {
                FetchResponse {
                    high_watermark,
                    log_start_offset,
                    throttle_ms,
                    records,
                }
                .into()
            }
        ),
        any::<u64>().prop_map(|offset| ListOffsetsResponse { offset }.into()),
    ]
}

fn response() -> impl Strategy<Value = (ApiKey, Response)> {
    let ok = (any::<u32>(), response_body()).prop_map(|(correlation_id, body)| {
        (
            body.api_key(),
            Response {
                correlation_id,
                result: Ok(body),
            },
        )
    });
    let err = (
        any::<u32>(),
        select(ApiKey::ALL.to_vec()),
        select(ErrorCode::ALL[1..].to_vec()),
        ".{0,20}",
    )
        .prop_map(|(correlation_id, api, code, message)| {
            (
                api,
                Response {
                    correlation_id,
                    result: Err(ErrorResponse { code, message }),
                },
            )
        });
    prop_oneof![ok, err]
}

fn encode_request(req: &Request, correlation_id: u32) -> Bytes {
    let mut buf = BytesMut::new();
    req.encode(correlation_id, &mut buf);
    buf.freeze()
}

fn header_for(api: u16, version: u16, body_len: usize) -> RequestHeader {
    RequestHeader {
        length: (body_len + 8) as u32,
        api_key: api,
        api_version: version,
        correlation_id: 0,
    }
}

/// Decodes `frame` the way the broker does: header, validate, route, body.
fn broker_decode(frame: &Bytes) -> Option<Request> {
    let h = RequestHeader::parse(frame).ok()?;
    let api = h.validate().ok()?;
    let body = frame.get(REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + h.body_len())?;
    let body = frame.slice_ref(body);
    let _ = route_key(api, &body);
    Request::decode(&h, body).ok()
}

/// Decodes `frame` the way the client does, for each api it might expect.
fn client_decode(frame: &Bytes) {
    let Ok(h) = ResponseHeader::parse(frame) else {
        return;
    };
    let Some(body) = frame.get(RESPONSE_HEADER_LEN..RESPONSE_HEADER_LEN + h.body_len()) else {
        return;
    };
    let body = frame.slice_ref(body);
    for api in ApiKey::ALL {
        let _ = Response::decode(api, &h, body.clone());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip(req in request(), corr: u32) {
        let frame = encode_request(&req, corr);
        let (h, got) = Request::decode_frame(frame.clone()).unwrap();
        prop_assert_eq!(h.correlation_id, corr);
        prop_assert_eq!(h.body_len() + REQUEST_HEADER_LEN, frame.len());
        prop_assert_eq!(route_key(req.api_key(), &frame[REQUEST_HEADER_LEN..]), req.topic_partition());
        let decoded = broker_decode(&frame);
        prop_assert_eq!(decoded.as_ref(), Some(&req));
        prop_assert_eq!(got, req);
    }

    #[test]
    fn responses_round_trip((api, resp) in response()) {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf);
        let frame = buf.freeze();
        let h = ResponseHeader::parse(&frame).unwrap();
        prop_assert_eq!(h.body_len() + RESPONSE_HEADER_LEN, frame.len());
        prop_assert_eq!(Response::decode_frame(api, frame).unwrap(), resp);
    }

    #[test]
    fn every_strict_prefix_of_a_body_is_refused(req in request()) {
        let frame = encode_request(&req, 0);
        let h = RequestHeader::parse(&frame).unwrap();
        let body = frame.slice(REQUEST_HEADER_LEN..);
        for n in 0..body.len() {
            prop_assert!(Request::decode(&h, body.slice(..n)).is_err(), "prefix {} decoded", n);
        }
    }

    #[test]
    fn every_strict_prefix_of_a_response_body_is_refused((api, resp) in response()) {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf);
        let frame = buf.freeze();
        let h = ResponseHeader::parse(&frame).unwrap();
        let body = frame.slice(RESPONSE_HEADER_LEN..);
        for n in 0..body.len() {
            prop_assert!(Response::decode(api, &h, body.slice(..n)).is_err());
        }
    }

    #[test]
    fn header_decoders_never_panic(data in vec(any::<u8>(), 0..24)) {
        if let Ok(h) = RequestHeader::parse(&data) {
            prop_assert!(data.len() >= REQUEST_HEADER_LEN);
            match h.validate() {
                Ok(api) => {
                    prop_assert!(h.body_len() + 8 <= limits::MAX_REQUEST_FRAME);
                    prop_assert_eq!(api.as_u16(), h.api_key);
                }
                Err(e) => {
                    let _ = (e.error_code(), e.closes_connection(), e.to_string());
                }
            }
        } else {
            prop_assert!(data.len() < REQUEST_HEADER_LEN);
        }
        if let Ok(h) = ResponseHeader::parse(&data) {
            prop_assert!(h.body_len() + 6 <= limits::MAX_RESPONSE_FRAME);
        }
    }

    #[test]
    fn request_decoders_never_panic_on_random_bodies(
        api in 0u16..16, version in 0u16..2, data in vec(any::<u8>(), 0..96)
    ) {
        let body = Bytes::from(data);
        let h = header_for(api, version, body.len());
        if let Some(key) = ApiKey::from_u16(api) {
            let _ = route_key(key, &body);
        }
        if let Ok(req) = Request::decode(&h, body.clone()) {
            // What decodes re-encodes to the same bytes: one encoding per value.
            let frame = encode_request(&req, 0);
            prop_assert_eq!(&frame[REQUEST_HEADER_LEN..], &body[..]);
        }
    }

    #[test]
    fn response_decoders_never_panic_on_random_bodies(
        error_code in prop_oneof![Just(0u16), any::<u16>()], data in vec(any::<u8>(), 0..96)
    ) {
        let body = Bytes::from(data);
        let h = ResponseHeader { length: body.len() as u32 + 6, correlation_id: 0, error_code };
        for api in ApiKey::ALL {
            let _ = Response::decode(api, &h, body.clone());
        }
    }

    #[test]
    fn whole_frame_decoders_never_panic_on_random_frames(data in vec(any::<u8>(), 0..128)) {
        let frame = Bytes::from(data);
        let _ = broker_decode(&frame);
        let _ = Request::decode_frame(frame.clone());
        client_decode(&frame);
        for api in ApiKey::ALL {
            let _ = Response::decode_frame(api, frame.clone());
        }
    }

    #[test]
    fn damaged_valid_frames_never_panic(
        req in request(), (api, resp) in response(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut raw = encode_request(&req, 1).to_vec();
        for (i, v) in &edits {
            let at = i.index(raw.len());
            raw[at] = *v;
        }
        let frame = Bytes::from(raw);
        let _ = broker_decode(&frame);
        let _ = Request::decode_frame(frame);

        let mut buf = BytesMut::new();
        resp.encode(&mut buf);
        let mut raw = buf.to_vec();
        for (i, v) in &edits {
            let at = i.index(raw.len());
            raw[at] = *v;
        }
        let frame = Bytes::from(raw);
        client_decode(&frame);
        let _ = Response::decode_frame(api, frame);
    }
}
