//! Bad input against a live broker: each kind on its own connection gets an
//! error code or a closed connection, and afterwards the broker still serves
//! a well-behaved client with every earlier record intact.

mod common;

use bytes::{BufMut, BytesMut};
use common::raw::{batch_of, Raw};
use common::Broker;
use ringmq_protocol::limits::MAX_REQUEST_FRAME;
use ringmq_protocol::{
    Acks, ApiKey, ErrorCode, ListTopicsRequest, ProduceRequest, Request, ResponseBody,
};

const TOPIC: &str = "events";

fn error_of(r: &ringmq_protocol::Response) -> ErrorCode {
    match &r.result {
        Ok(_) => ErrorCode::None,
        Err(e) => e.code,
    }
}

/// A request frame header with any api, version and length.
fn header(len: u32, api: u16, version: u16, corr: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32_le(len);
    b.put_u16_le(api);
    b.put_u16_le(version);
    b.put_u32_le(corr);
    b
}

#[test]
fn bad_input_is_refused_and_disturbs_nothing() {
    let broker = Broker::start(&[]);
    let mut good = Raw::connect(broker.addr);
    good.create_topic(TOPIC, 2);
    let before = [b"one".as_slice(), b"two", b"three"];
    let r = good.produce(TOPIC, 0, batch_of(&before));
    assert_eq!(error_of(&r), ErrorCode::None);

    // Random bytes: whatever they parse as, the broker answers or closes, and lives.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        let mut junk = vec![0u8; 300];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let mut c = Raw::connect(broker.addr);
        let _ = c.send_bytes(&junk);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        // Drain until the broker closes: it must not hang on us.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c.stream, &mut sink);
    }

    // A length over the maximum: MESSAGE_TOO_LARGE, then the connection closes.
    let mut c = Raw::connect(broker.addr);
    c.send_bytes(&header(MAX_REQUEST_FRAME as u32 + 1, 5, 0, 7))
        .unwrap();
    let r = c.read_response(ApiKey::Produce).expect("an answer");
    assert_eq!(error_of(&r), ErrorCode::MessageTooLarge);
    assert_eq!(r.correlation_id, 7);
    assert!(c.is_closed_by_peer());

    // A truncated frame followed by a close: nothing applied, nothing answered.
    let mut c = Raw::connect(broker.addr);
    let mut frame = BytesMut::new();
    Request::Produce(ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 1000,
        batch: batch_of(&[b"never"]),
    })
    .encode(9, &mut frame);
    c.send_bytes(&frame[..frame.len() - 10]).unwrap();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed_by_peer());

    // Unknown api and unknown version: an error each, and the connection goes on.
    let mut c = Raw::connect(broker.addr);
    let mut b = header(8 + 3, 999, 0, 11);
    b.put_slice(b"abc");
    c.send_bytes(&b).unwrap();
    let r = c.read_response(ApiKey::ApiVersions).expect("an answer");
    assert_eq!(
        (r.correlation_id, error_of(&r)),
        (11, ErrorCode::UnknownApi)
    );
    c.send_bytes(&header(8, ApiKey::ListTopics.as_u16(), 77, 12))
        .unwrap();
    let r = c.read_response(ApiKey::ListTopics).expect("an answer");
    assert_eq!(
        (r.correlation_id, error_of(&r)),
        (12, ErrorCode::UnsupportedVersion)
    );
    let r = c.call(Request::ListTopics(ListTopicsRequest {}));
    assert_eq!(error_of(&r), ErrorCode::None, "connection still usable");

    // A batch whose CRC does not match: CORRUPT_BATCH and nothing written.
    let mut corrupt = batch_of(&[b"bad"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let r = c.produce(TOPIC, 0, corrupt.into());
    assert_eq!(error_of(&r), ErrorCode::CorruptBatch);

    // A produce to a topic or partition that does not exist.
    let r = c.produce("missing", 0, batch_of(&[b"x"]));
    assert_eq!(error_of(&r), ErrorCode::UnknownTopic);
    let r = c.produce(TOPIC, 9, batch_of(&[b"x"]));
    assert_eq!(error_of(&r), ErrorCode::UnknownPartition);

    // A malformed body (valid header, garbage fields): INVALID_REQUEST, connection goes on.
    let mut b = header(8 + 2, ApiKey::Produce.as_u16(), 1, 13);
    b.put_slice(&[0xff, 0xff]);
    c.send_bytes(&b).unwrap();
    let r = c.read_response(ApiKey::Produce).expect("an answer");
    assert_eq!(error_of(&r), ErrorCode::InvalidRequest);

    // The well-behaved client: still served, earlier data intact, nothing extra.
    let r = good.produce(TOPIC, 0, batch_of(&[b"four"]));
    assert_eq!(error_of(&r), ErrorCode::None);
    let values = good.values(TOPIC, 0);
    let expect: Vec<&[u8]> = vec![b"one", b"two", b"three", b"four"];
    assert_eq!(
        values.iter().map(|v| v.as_ref()).collect::<Vec<_>>(),
        expect
    );
    let r = good.call(Request::ListTopics(ListTopicsRequest {}));
    let Ok(ResponseBody::ListTopics(t)) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(t.topics.len(), 1);
}
