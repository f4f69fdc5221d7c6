//! Writes the seed corpus under `seeds/<target>/`: valid encodings of every
//! request and response (and an error response per api), record batches
//! alone and laid end to end, and every kind of peer frame. Run from
//! `protocol/fuzz`: `cargo run --example gen_seeds`. The messages are
//! `ringmq_protocol::messages::samples` (the `samples` feature), the values
//! the protocol's own round-trip tests use.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringmq_protocol::batch::{BatchBuilder, Header, ProducerStamp};
use ringmq_protocol::messages::samples::{sample_batch, sample_requests, sample_responses};
use ringmq_protocol::peer::{
    Challenge, Forward, Hello, NodeHeartbeat, PeerMessage, Proof, RaftMessage, Reject, RejectReason,
};
use ringmq_protocol::*;

fn batches() -> Vec<Bytes> {
    let mut out = vec![sample_batch()];
    let mut b = BatchBuilder::new(1_000);
    b.push(1_000, Some(b"k1"), Some(b"hello"), &[]);
    b.push(
        1_005,
        None,
        Some(b""),
        &[
            Header {
                key: Bytes::from_static(b"h"),
                value: None,
            },
            Header {
                key: Bytes::from_static(b"trace"),
                value: Some(Bytes::from_static(b"abc")),
            },
        ],
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
        PeerMessage::Challenge(Challenge { nonce: [0x5a; 32] }),
        PeerMessage::Proof(Proof {
            nonce: [0x11; 32],
            proof: [0xa5; 32],
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
