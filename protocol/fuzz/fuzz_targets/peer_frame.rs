//! Peer (node-to-node) frames: `PeerHeader::parse`, `PeerMessage::decode`
//! and `PeerMessage::decode_frame` run over the input as a stream of frames,
//! the way a peer connection reads them. Never panics; whatever decodes
//! re-encodes (`PeerMessage::encode`) to a frame that decodes to the same
//! value and length.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq_protocol::peer::{PeerHeader, PeerMessage, PEER_HEADER_LEN};

fn round_trip(msg: &PeerMessage) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    let len = buf.len();
    let again = PeerMessage::decode_frame(&buf.freeze()).expect("re-encoded frame decodes");
    assert_eq!(again, Some((msg.clone(), len)), "decode(encode(x)) != x");
}

fn check_stream(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    loop {
        // Header and body apart, as when the header is read first.
        if let Ok(h) = PeerHeader::parse(&buf) {
            assert!(h.frame_len() >= PEER_HEADER_LEN);
            let end = h.frame_len().min(buf.len());
            let _ = PeerMessage::decode(&h, buf.slice(PEER_HEADER_LEN..end));
        }
        match PeerMessage::decode_frame(&buf) {
            Ok(Some((msg, used))) => {
                assert!(used >= PEER_HEADER_LEN && used <= buf.len());
                assert_eq!(msg.kind(), PeerHeader::parse(&buf).unwrap().kind);
                round_trip(&msg);
                buf = buf.slice(used..);
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_stream(data);
    // Also with the first length field made to match the input, so bodies
    // get decoded without the fuzzer having to guess lengths.
    if data.len() >= PEER_HEADER_LEN {
        let mut fixed = data.to_vec();
        let len = (data.len() - 4) as u32;
        fixed[..4].copy_from_slice(&len.to_le_bytes());
        check_stream(&fixed);
    }
});
