//! The worked example of SPEC.md, checked byte for byte: the hex block after
//! `<!-- produce-example -->` must be what this crate encodes.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::batch::{self, BatchBuilder};

fn example() -> Request {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"k"), Some(b"hi"), &[]);
    ProduceRequest {
        topic: "orders".into(),
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 5_000,
        batch: b.finish(None),
    }
    .into()
}

/// The hex digits of the first fenced block after `marker` in SPEC.md,
/// ignoring whitespace and everything after `#` on a line.
fn hex_block(spec: &str, marker: &str) -> Vec<u8> {
    let after = &spec[spec.find(marker).expect("marker in SPEC.md")..];
    let start = after.find("```").unwrap();
    let body = &after[start + 3..];
    let body = &body[body.find('\n').unwrap()..];
    let body = &body[..body.find("```").unwrap()];
    let digits: String = body
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn spec_produce_example_matches_the_encoder() {
    let mut buf = BytesMut::new();
    example().encode(1, &mut buf);
    let spec = include_str!("../../SPEC.md");
    let want = hex_block(spec, "<!-- produce-example -->");
    if buf[..] != want[..] {
        let hex: Vec<String> = buf.iter().map(|b| format!("{b:02x}")).collect();
        panic!("SPEC.md example differs; encoder gives:\n{}", hex.join(" "));
    }
    let (h, req) = Request::decode_frame(Bytes::from(want)).unwrap();
    assert_eq!(h.correlation_id, 1);
    let Request::Produce(p) = req else { panic!() };
    assert_eq!(batch::verify(&p.batch).unwrap().record_count, 1);
    let recs = batch::decode_records(&p.batch).unwrap();
    assert_eq!(recs[0].value.as_deref(), Some(&b"hi"[..]));
}

#[test]
fn spec_response_examples_match_the_encoder() {
    let spec = include_str!("../../SPEC.md");
    let mut buf = BytesMut::new();
    ResponseBody::from(ProduceResponse {
        base_offset: 42,
        log_start_offset: 0,
        throttle_ms: 0,
    })
    .encode(1, &mut buf);
    assert_eq!(
        buf[..],
        hex_block(spec, "<!-- produce-response-example -->")[..]
    );

    let mut buf = BytesMut::new();
    crate::frame::encode_error_response(1, ErrorCode::UnknownTopic, "no topic orders", &mut buf);
    let want = hex_block(spec, "<!-- error-response-example -->");
    assert_eq!(buf[..], want[..]);
    let resp = Response::decode_frame(ApiKey::Produce, Bytes::from(want)).unwrap();
    assert_eq!(resp.result.unwrap_err().code, ErrorCode::UnknownTopic);
}

#[test]
fn spec_crc_check_value() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}
