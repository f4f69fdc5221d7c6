//! Client protocol frames (issue 10, "frame decoder").
//!
//! Requests, as the broker reads them: `RequestHeader::parse`, `validate`,
//! `route_key`, `Request::decode` (header and body apart) and
//! `Request::decode_frame` (whole frame).
//!
//! Responses, as the client reads them: `ResponseHeader::parse` and
//! `Response::decode_frame` for every `ApiKey` (the client knows the api from
//! the correlation id, so the same bytes are tried as each api's response).
//!
//! Never panics; whatever decodes re-encodes (`Request::encode`,
//! `Response::encode`) to a frame that decodes to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq_protocol::{
    route_key, ApiKey, Request, RequestHeader, Response, ResponseHeader, REQUEST_HEADER_LEN,
};

fn check_request(frame: &[u8]) {
    // The broker's path: header first, then (if valid) exactly body_len bytes.
    if let Ok(header) = RequestHeader::parse(frame) {
        let valid = header.validate();
        let _ = header.body_len();
        if let Ok(api) = valid {
            let avail = &frame[REQUEST_HEADER_LEN..];
            let body = &avail[..header.body_len().min(avail.len())];
            let key = route_key(api, body);
            if let Ok(req) = Request::decode(&header, Bytes::copy_from_slice(body)) {
                assert_eq!(req.api_key(), api);
                // route_key reads the same (topic, partition) without decoding.
                if let Some(tp) = req.topic_partition() {
                    assert_eq!(key, Some(tp), "route_key disagrees with decode");
                }
                round_trip(header.correlation_id, &req);
            }
        }
    }
    // The whole-frame path.
    if let Ok((header, req)) = Request::decode_frame(Bytes::copy_from_slice(frame)) {
        assert_eq!(header.length as usize + 4, frame.len());
        round_trip(header.correlation_id, &req);
    }
}

fn round_trip(correlation_id: u32, req: &Request) {
    let mut buf = BytesMut::new();
    req.encode(correlation_id, &mut buf);
    let (h2, req2) = Request::decode_frame(buf.freeze()).expect("re-encoded request decodes");
    assert_eq!(h2.correlation_id, correlation_id);
    assert_eq!(&req2, req, "decode(encode(x)) != x");
}

fn check_response(frame: &[u8]) {
    if let Ok(h) = ResponseHeader::parse(frame) {
        let _ = h.body_len();
    }
    let bytes = Bytes::copy_from_slice(frame);
    for api in ApiKey::ALL {
        if let Ok(resp) = Response::decode_frame(api, bytes.clone()) {
            if let Ok(body) = &resp.result {
                assert_eq!(body.api_key(), api);
            }
            let mut buf = BytesMut::new();
            resp.encode(&mut buf);
            let again =
                Response::decode_frame(api, buf.freeze()).expect("re-encoded response decodes");
            assert_eq!(again, resp, "decode(encode(x)) != x for {api}");
        }
    }
}

/// The input with its length field made to match its size, so the fuzzer
/// spends its time in the body decoders rather than guessing lengths.
fn with_length_fixed(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 4 {
        return None;
    }
    let mut fixed = data.to_vec();
    let len = (data.len() - 4) as u32;
    fixed[..4].copy_from_slice(&len.to_le_bytes());
    Some(fixed)
}

fuzz_target!(|data: &[u8]| {
    check_request(data);
    check_response(data);
    if let Some(fixed) = with_length_fixed(data) {
        check_request(&fixed);
        check_response(&fixed);
    }
});
