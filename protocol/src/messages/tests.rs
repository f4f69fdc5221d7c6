//! Round trips of every message through whole frames, and the zero-copy and
//! routing helpers.

use super::samples::{sample_batch, sample_requests, sample_responses};
use super::*;

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
        throttle_ms: 7,
        records: sample_batch(),
    };
    let mut whole = BytesMut::new();
    ResponseBody::from(f.clone()).encode(9, &mut whole);
    let mut head = BytesMut::new();
    f.encode_head(9, &mut head);
    assert_eq!(head.len(), RESPONSE_HEADER_LEN + 8 + 8 + 4 + 4);
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
        api_version: api.max_version(),
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
