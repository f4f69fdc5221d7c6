//! Property tests of the peer protocol: every message survives a round trip
//! through a whole frame, fed in any split; no decoder panics on arbitrary or
//! damaged bytes, and none claims more bytes than it was given.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use ringmq_protocol::peer::*;

fn message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        (any::<u16>(), "[a-z0-9-]{1,64}", 1..=u32::MAX).prop_map(|(v, c, n)| {
            PeerMessage::Hello(Hello {
                protocol_version: v,
                cluster_id: c,
                node_id: n,
            })
        }),
        (select(RejectReason::ALL.to_vec()), ".{0,16}")
            .prop_map(|(reason, message)| { PeerMessage::Reject(Reject { reason, message }) }),
        vec(any::<u8>(), 0..256).prop_map(|m| PeerMessage::Raft(RaftMessage {
            message: Bytes::from(m)
        })),
        (1..=u32::MAX, any::<u64>(), any::<u64>()).prop_map(|(node_id, incarnation, sent_ms)| {
            PeerMessage::Heartbeat(NodeHeartbeat {
                node_id,
                incarnation,
                sent_ms,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip(msgs in vec(message(), 1..6), split in any::<prop::sample::Index>()) {
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        let all = buf.freeze();
        // A prefix never decodes to anything but "need more".
        let cut = split.index(all.len());
        let first_len = {
            let (_, n) = PeerMessage::decode_frame(&all).unwrap().unwrap();
            n
        };
        if cut < first_len {
            prop_assert_eq!(PeerMessage::decode_frame(&all.slice(..cut)).unwrap(), None);
        }
        let mut at = 0;
        let mut out = Vec::new();
        while at < all.len() {
            let (m, n) = PeerMessage::decode_frame(&all.slice(at..)).unwrap().unwrap();
            out.push(m);
            at += n;
        }
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..128)) {
        let buf = Bytes::from(bytes);
        if let Ok(Some((_, n))) = PeerMessage::decode_frame(&buf) {
            prop_assert!(n <= buf.len());
        }
    }

    #[test]
    fn damaged_frames_never_panic(m in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        let i = at.index(buf.len());
        buf[i] = byte;
        let buf = buf.freeze();
        if let Ok(Some((_, n))) = PeerMessage::decode_frame(&buf) {
            prop_assert!(n <= buf.len());
        }
    }
}

#[test]
fn a_huge_length_is_refused_before_any_body_arrives() {
    let mut frame = (u32::MAX).to_le_bytes().to_vec();
    frame.extend_from_slice(&[2, 0, 0, 0]);
    assert!(matches!(
        PeerMessage::decode_frame(&Bytes::from(frame)),
        Err(PeerError::TooLarge { .. })
    ));
}

#[test]
fn client_protocol_bytes_on_the_peer_port_are_refused() {
    // An ApiVersions request (api 0, version 0, correlation 7) reads as a
    // peer frame of kind 0 (Hello) whose body is the correlation id: too
    // short for a Hello, so refused, never mistaken for one.
    let frame = Bytes::from_static(&[8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
    assert!(PeerMessage::decode_frame(&frame).is_err());
    // HTTP on the peer port: "GET " is a length of 541,345,095 bytes.
    let http = Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(
        PeerMessage::decode_frame(&http),
        Err(PeerError::TooLarge { .. })
    ));
}
