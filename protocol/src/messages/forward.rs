//! ForwardHello (key 15): the first request on a connection one node of a
//! cluster opens to another's client listener to forward its clients'
//! requests (SPEC.md 5.17).
//!
//! It exists so a forwarded request is never forwarded again: a node that
//! no longer leads the partition answers `NOT_LEADER` on such a connection,
//! where a client connection would be relayed once more, and two nodes
//! whose metadata disagree for a moment cannot bounce a request between
//! them.

//!
//! Version 1 adds the proof that the sender is a node of the cluster: with
//! a cluster secret, the receiver answers a first ForwardHello with a
//! challenge (a random nonce), and the sender sends a second one carrying
//! an HMAC over both nonces; the receiver's answer carries its own proof.
//! So the secret never crosses the wire and a captured exchange cannot be
//! replayed. The bytes are checked here only for their length; the HMAC
//! is the broker's business.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{put_bytes, put_str, Reader, Wire};
use crate::frame::FrameError;

/// Bytes of a nonce or proof field when present (HMAC-SHA256, 256-bit nonces).
pub const HELLO_TOKEN_LEN: usize = 32;

/// "I am node `node_id` of cluster `cluster_id`; what follows on this
/// connection I forward for my clients."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHelloRequest {
    pub node_id: u32,
    pub cluster_id: String,
    /// The sender's nonce, which the receiver's proof answers: empty or
    /// [`HELLO_TOKEN_LEN`] bytes, the same in both steps.
    pub nonce: Bytes,
    /// Empty in the first step; in the second, the sender's proof over the
    /// receiver's challenge ([`HELLO_TOKEN_LEN`] bytes).
    pub proof: Bytes,
}

/// Response body. Both fields empty: the connection now carries forwarded
/// requests (a receiver without a cluster secret). `challenge` set: send
/// the proof in a second ForwardHello. `proof` set: accepted, and this is
/// the receiver's proof over the sender's nonce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardHelloResponse {
    pub challenge: Bytes,
    pub proof: Bytes,
}

/// A nonce or proof: absent (empty) or exactly [`HELLO_TOKEN_LEN`] bytes.
fn token(r: &mut Reader<'_>, what: &'static str) -> Result<Bytes, FrameError> {
    let b = r.bytes()?;
    if !b.is_empty() && b.len() != HELLO_TOKEN_LEN {
        return Err(FrameError::Malformed(
            format!(
                "ForwardHello {what} of {} bytes (0 or {HELLO_TOKEN_LEN})",
                b.len()
            )
            .into(),
        ));
    }
    Ok(b)
}

impl Wire for ForwardHelloRequest {
    const MIN_LEN: usize = 4 + 2 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.node_id);
        put_str(buf, &self.cluster_id);
        put_bytes(buf, &self.nonce);
        put_bytes(buf, &self.proof);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ForwardHelloRequest {
            node_id: r.u32()?,
            cluster_id: r.string()?,
            nonce: token(r, "nonce")?,
            proof: token(r, "proof")?,
        })
    }
}

impl Wire for ForwardHelloResponse {
    const MIN_LEN: usize = 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_bytes(buf, &self.challenge);
        put_bytes(buf, &self.proof);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ForwardHelloResponse {
            challenge: token(r, "challenge")?,
            proof: token(r, "proof")?,
        })
    }
}
