//! The peer messages (version 0 bodies; peer protocol version 1) and their codec. Decoders are
//! strict like the client protocol's: a body is consumed exactly, strings are
//! bounded, a node id is never 0.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{PeerError, PeerHeader, PeerKind, PEER_HEADER_LEN};
use crate::codec::{put_bytes, put_str, put_str_truncated, Reader};
use crate::frame::FrameError;

/// Longest cluster id in bytes.
pub const MAX_CLUSTER_ID_LEN: usize = 64;

/// First frame on a connection, from each side: who I am and which cluster I
/// belong to. The accepting node answers [`Reject`] and closes when the
/// cluster id differs or the node id is its own; a node id the cluster does
/// not know is heard, but may only ask to join (SPEC.md 11.3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest peer protocol version the sender speaks; both sides then use
    /// the lower of the two.
    pub protocol_version: u16,
    /// The cluster's name, 1..=[`MAX_CLUSTER_ID_LEN`] bytes: keeps nodes of
    /// two clusters on one network from joining each other's Raft group.
    pub cluster_id: String,
    /// The sender's node id, never 0.
    pub node_id: u32,
}

/// Why a Hello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum RejectReason {
    WrongCluster = 1,
    /// The Hello named the receiver's own node id.
    UnknownNode = 2,
    UnsupportedVersion = 3,
    /// A frame before Hello, or one that did not decode.
    BadInput = 4,
    /// The dialer did not prove it holds the cluster secret (11.3.7).
    Unauthenticated = 5,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::WrongCluster,
        RejectReason::UnknownNode,
        RejectReason::UnsupportedVersion,
        RejectReason::BadInput,
        RejectReason::Unauthenticated,
    ];

    pub fn from_u16(v: u16) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| *r as u16 == v)
    }
}

/// Sent instead of Hello, or in answer to bad input, just before the sender
/// closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    /// For logs and people; never parsed.
    pub message: String,
}

/// One raft-rs message, protobuf-encoded (`eraftpb.Message`), opaque to this
/// crate. Sender and receiver ids inside it must match the connection's
/// Hello; the receiving node checks that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMessage {
    pub message: Bytes,
}

/// "I am alive", every heartbeat interval, from every node (controller or
/// not) to every controller. Not written to the Raft log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHeartbeat {
    /// The sender, never 0; must match its Hello.
    pub node_id: u32,
    /// Changes on every process start, so a restart is visible even when no
    /// heartbeat was missed.
    pub incarnation: u64,
    /// Sender's wall clock, ms since the Unix epoch (diagnostics only).
    pub sent_ms: u64,
}

/// A metadata command for the controller leader, from a node that is not
/// the leader (a node asking to join, `ringmq cluster remove` served by a
/// follower). One-way like every peer frame: a node that is not the leader
/// drops it, and the sender learns the outcome by reading the replicated
/// metadata, retrying if need be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The command as JSON, the same encoding as a Raft log entry (SPEC.md
    /// 11.4); opaque to this crate.
    pub command: Bytes,
}

/// Bytes of a handshake nonce and of a proof (an HMAC-SHA256 tag).
pub const AUTH_TOKEN_LEN: usize = 32;

/// The accepting node's answer to a Hello when the cluster has a secret: a
/// fresh random nonce the dialer must prove it can answer (SPEC.md 11.3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub nonce: [u8; AUTH_TOKEN_LEN],
}

/// A proof of holding the cluster secret. From the dialer: its own nonce
/// (which the acceptor's proof must answer) and its proof over both
/// nonces. From the acceptor: its challenge again and its own proof. What
/// the proof is computed over is the broker's business; here it is bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub nonce: [u8; AUTH_TOKEN_LEN],
    pub proof: [u8; AUTH_TOKEN_LEN],
}

/// Any peer frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    Hello(Hello),
    Reject(Reject),
    Raft(RaftMessage),
    Heartbeat(NodeHeartbeat),
    Forward(Forward),
    Challenge(Challenge),
    Proof(Proof),
}

fn token(r: &mut Reader<'_>) -> Result<[u8; AUTH_TOKEN_LEN], PeerError> {
    let mut t = [0u8; AUTH_TOKEN_LEN];
    for b in &mut t {
        *b = r.u8()?;
    }
    Ok(t)
}

fn malformed(what: &'static str) -> PeerError {
    PeerError::Body(FrameError::Malformed(what.into()))
}

fn node_id(r: &mut Reader<'_>) -> Result<u32, PeerError> {
    match r.u32()? {
        0 => Err(malformed("node id 0 is reserved")),
        id => Ok(id),
    }
}

impl PeerMessage {
    pub fn kind(&self) -> PeerKind {
        match self {
            PeerMessage::Hello(_) => PeerKind::Hello,
            PeerMessage::Reject(_) => PeerKind::Reject,
            PeerMessage::Raft(_) => PeerKind::RaftMessage,
            PeerMessage::Heartbeat(_) => PeerKind::NodeHeartbeat,
            PeerMessage::Forward(_) => PeerKind::Forward,
            PeerMessage::Challenge(_) => PeerKind::Challenge,
            PeerMessage::Proof(_) => PeerKind::Proof,
        }
    }

    /// Appends the whole frame, header included, at version 0.
    ///
    /// # Panics
    /// If a Hello's cluster id is longer than `u16::MAX` bytes (ids are
    /// validated at configuration) or a raft message is 4 GiB or more.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_u32_le(0);
        buf.put_u16_le(self.kind() as u16);
        buf.put_u16_le(0);
        match self {
            PeerMessage::Hello(h) => {
                buf.put_u16_le(h.protocol_version);
                put_str(buf, &h.cluster_id);
                buf.put_u32_le(h.node_id);
            }
            PeerMessage::Reject(r) => {
                buf.put_u16_le(r.reason as u16);
                put_str_truncated(buf, &r.message);
            }
            PeerMessage::Raft(m) => put_bytes(buf, &m.message),
            PeerMessage::Heartbeat(h) => {
                buf.put_u32_le(h.node_id);
                buf.put_u64_le(h.incarnation);
                buf.put_u64_le(h.sent_ms);
            }
            PeerMessage::Forward(f) => put_bytes(buf, &f.command),
            PeerMessage::Challenge(c) => buf.put_slice(&c.nonce),
            PeerMessage::Proof(p) => {
                buf.put_slice(&p.nonce);
                buf.put_slice(&p.proof);
            }
        }
        let len = u32::try_from(buf.len() - start - 4).expect("a peer frame is under 4 GiB");
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes the body of a frame whose header passed [`PeerHeader::parse`].
    pub fn decode(header: &PeerHeader, body: Bytes) -> Result<PeerMessage, PeerError> {
        if body.len() != header.body_len() {
            return Err(PeerError::Body(FrameError::Truncated));
        }
        let mut r = Reader::new(&body);
        let msg = match header.kind {
            PeerKind::Hello => {
                let protocol_version = r.u16()?;
                let cluster_id = r.string()?;
                if cluster_id.is_empty() || cluster_id.len() > MAX_CLUSTER_ID_LEN {
                    return Err(malformed("cluster id must be 1..=64 bytes"));
                }
                PeerMessage::Hello(Hello {
                    protocol_version,
                    cluster_id,
                    node_id: node_id(&mut r)?,
                })
            }
            PeerKind::Reject => {
                let reason = RejectReason::from_u16(r.u16()?)
                    .ok_or_else(|| malformed("unknown reject reason"))?;
                PeerMessage::Reject(Reject {
                    reason,
                    message: r.string()?,
                })
            }
            PeerKind::RaftMessage => PeerMessage::Raft(RaftMessage {
                message: r.bytes()?,
            }),
            PeerKind::NodeHeartbeat => PeerMessage::Heartbeat(NodeHeartbeat {
                node_id: node_id(&mut r)?,
                incarnation: r.u64()?,
                sent_ms: r.u64()?,
            }),
            PeerKind::Forward => PeerMessage::Forward(Forward {
                command: r.bytes()?,
            }),
            PeerKind::Challenge => PeerMessage::Challenge(Challenge {
                nonce: token(&mut r)?,
            }),
            PeerKind::Proof => PeerMessage::Proof(Proof {
                nonce: token(&mut r)?,
                proof: token(&mut r)?,
            }),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Decodes the first frame in `buf`: `Ok(None)` while `buf` holds less
    /// than a whole frame, else the message and the bytes it took. A header
    /// error comes as soon as the header is there, before any body arrives.
    pub fn decode_frame(buf: &Bytes) -> Result<Option<(PeerMessage, usize)>, PeerError> {
        if buf.len() < PEER_HEADER_LEN {
            return Ok(None);
        }
        let header = PeerHeader::parse(buf)?;
        let end = header.frame_len();
        if buf.len() < end {
            return Ok(None);
        }
        let msg = PeerMessage::decode(&header, buf.slice(PEER_HEADER_LEN..end))?;
        Ok(Some((msg, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hex digits of the fenced block after `marker` in SPEC.md, without
    /// whitespace and `#` comments.
    fn spec_block(marker: &str) -> Vec<u8> {
        let spec = include_str!("../../SPEC.md");
        let after = &spec[spec.find(marker).expect("marker in SPEC.md")..];
        let body = &after[after.find("```").expect("a fenced block") + 3..];
        let body = &body[body.find('\n').expect("a newline")..];
        let body = &body[..body.find("```").expect("the end of the block")];
        let digits: String = body
            .lines()
            .filter_map(|l| l.split('#').next())
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// SPEC.md section 11.5: a Hello from node 3 of cluster "eu".
    #[test]
    fn spec_hello_example_matches_the_encoder() {
        let hello = PeerMessage::Hello(Hello {
            protocol_version: 0,
            cluster_id: "eu".into(),
            node_id: 3,
        });
        let mut buf = BytesMut::new();
        hello.encode(&mut buf);
        assert_eq!(&buf[..], &spec_block("<!-- peer-hello-example -->")[..]);
        let buf = buf.freeze();
        assert_eq!(PeerMessage::decode_frame(&buf), Ok(Some((hello, 18))));
    }

    #[test]
    fn strict_bodies() {
        let decode = |kind: PeerKind, body: &[u8]| {
            let header = PeerHeader {
                length: (body.len() + 4) as u32,
                kind,
                version: 0,
            };
            PeerMessage::decode(&header, Bytes::copy_from_slice(body))
        };
        // Node id 0.
        assert!(decode(PeerKind::NodeHeartbeat, &[0; 20]).is_err());
        // Trailing byte.
        let mut hb = vec![1, 0, 0, 0];
        hb.extend_from_slice(&[0; 16]);
        assert!(decode(PeerKind::NodeHeartbeat, &hb).is_ok());
        hb.push(0);
        assert!(decode(PeerKind::NodeHeartbeat, &hb).is_err());
        // Empty and overlong cluster ids.
        assert!(decode(PeerKind::Hello, &[0, 0, 0, 0, 1, 0, 0, 0]).is_err());
        let mut long = vec![0, 0, 65, 0];
        long.extend_from_slice(&[b'a'; 65]);
        long.extend_from_slice(&[1, 0, 0, 0]);
        assert!(decode(PeerKind::Hello, &long).is_err());
        // Unknown reject reason.
        assert!(decode(PeerKind::Reject, &[9, 0, 0, 0]).is_err());
        // A bytes length past the body.
        assert!(decode(PeerKind::RaftMessage, &[9, 0, 0, 0, 1]).is_err());
        assert!(decode(PeerKind::Forward, &[9, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn forward_round_trips() {
        let msg = PeerMessage::Forward(Forward {
            command: Bytes::from_static(br#"{"Remove":{"node":4}}"#),
        });
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        let len = buf.len();
        assert_eq!(&buf[4..8], &[4, 0, 0, 0]);
        assert_eq!(
            PeerMessage::decode_frame(&buf.freeze()),
            Ok(Some((msg, len)))
        );
    }
}
