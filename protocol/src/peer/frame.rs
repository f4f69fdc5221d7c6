//! The peer frame: `u32 length · u16 kind · u16 version · body`, all
//! little-endian, `length` counting the bytes after itself.
//!
//! A receiver reads the 8-byte header, [`PeerHeader::parse`]s it (which
//! checks the length before a body is read, so a hostile length cannot make
//! it allocate), then decodes the body with
//! [`PeerMessage::decode`](super::PeerMessage::decode). Every error closes
//! the connection: peers are our own nodes, so bad input means a bug, a
//! version mismatch or something that is not a ringmq node, and the framing
//! cannot be trusted after it.

use crate::frame::FrameError;

/// Bytes of a peer frame header, the length field included.
pub const PEER_HEADER_LEN: usize = 8;

/// Largest `length` a peer accepts: a Raft snapshot of the metadata of a
/// large cluster travels in one frame (100,000 partitions serialize to about
/// 10 MiB); anything above is refused before it is read.
pub const MAX_PEER_FRAME: usize = 32 << 20;

/// The peer protocol version this build speaks (and the highest version of
/// any peer message body).
/// Version 1 added Challenge and Proof, the cluster secret's handshake.
pub const PEER_PROTOCOL_VERSION: u16 = 1;

/// Which message a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum PeerKind {
    Hello = 0,
    Reject = 1,
    RaftMessage = 2,
    NodeHeartbeat = 3,
    Forward = 4,
    Challenge = 5,
    Proof = 6,
}

impl PeerKind {
    pub const ALL: [PeerKind; 7] = [
        PeerKind::Hello,
        PeerKind::Reject,
        PeerKind::RaftMessage,
        PeerKind::NodeHeartbeat,
        PeerKind::Forward,
        PeerKind::Challenge,
        PeerKind::Proof,
    ];

    pub fn from_u16(v: u16) -> Option<PeerKind> {
        PeerKind::ALL.into_iter().find(|k| *k as u16 == v)
    }

    /// Versions of this kind's body this build decodes.
    pub fn supports(self, version: u16) -> bool {
        version == 0
    }
}

/// Why bytes are not an acceptable peer frame. Every one closes the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("peer frame of {len} bytes is shorter than its header ({min})")]
    TooShort { len: usize, min: usize },
    #[error("unknown peer message kind {0}")]
    UnknownKind(u16),
    #[error("peer message kind {kind} does not support version {version}")]
    UnsupportedVersion { kind: u16, version: u16 },
    /// The body is truncated, malformed or has bytes left over.
    #[error("peer message body: {0}")]
    Body(#[from] FrameError),
}

/// The fixed start of a peer frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHeader {
    /// Bytes after the length field: kind, version and body.
    pub length: u32,
    pub kind: PeerKind,
    pub version: u16,
}

impl PeerHeader {
    /// Reads and checks the first [`PEER_HEADER_LEN`] bytes of `buf`: the
    /// length holds kind and version and is within [`MAX_PEER_FRAME`], the
    /// kind is known and speaks this version. `Body(Truncated)` when `buf`
    /// is shorter than a header (read more and try again).
    pub fn parse(buf: &[u8]) -> Result<PeerHeader, PeerError> {
        let b = buf
            .get(..PEER_HEADER_LEN)
            .ok_or(PeerError::Body(FrameError::Truncated))?;
        let length = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let raw_kind = u16::from_le_bytes([b[4], b[5]]);
        let version = u16::from_le_bytes([b[6], b[7]]);
        let len = length as usize;
        let min = PEER_HEADER_LEN - 4;
        if len < min {
            return Err(PeerError::TooShort { len, min });
        }
        if len > MAX_PEER_FRAME {
            return Err(PeerError::TooLarge {
                len,
                max: MAX_PEER_FRAME,
            });
        }
        let kind = PeerKind::from_u16(raw_kind).ok_or(PeerError::UnknownKind(raw_kind))?;
        if !kind.supports(version) {
            return Err(PeerError::UnsupportedVersion {
                kind: raw_kind,
                version,
            });
        }
        Ok(PeerHeader {
            length,
            kind,
            version,
        })
    }

    /// Bytes of body after the header.
    pub fn body_len(&self) -> usize {
        (self.length as usize).saturating_sub(PEER_HEADER_LEN - 4)
    }

    /// Bytes of the whole frame, header included.
    pub fn frame_len(&self) -> usize {
        self.length as usize + 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: u32, kind: u16, version: u16) -> Vec<u8> {
        let mut v = length.to_le_bytes().to_vec();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&version.to_le_bytes());
        v
    }

    #[test]
    fn header_checks_in_order() {
        assert_eq!(
            PeerHeader::parse(&header(3, 0, 0)),
            Err(PeerError::TooShort { len: 3, min: 4 })
        );
        assert_eq!(
            PeerHeader::parse(&header(u32::MAX, 0, 0)),
            Err(PeerError::TooLarge {
                len: u32::MAX as usize,
                max: MAX_PEER_FRAME
            })
        );
        assert_eq!(
            PeerHeader::parse(&header(4, 99, 0)),
            Err(PeerError::UnknownKind(99))
        );
        assert_eq!(
            PeerHeader::parse(&header(4, 2, 1)),
            Err(PeerError::UnsupportedVersion {
                kind: 2,
                version: 1
            })
        );
        assert_eq!(
            PeerHeader::parse(&header(4, 2, 0)[..7]),
            Err(PeerError::Body(FrameError::Truncated))
        );
        let h = PeerHeader::parse(&header(10, 3, 0)).unwrap();
        assert_eq!(
            (h.kind, h.body_len(), h.frame_len()),
            (PeerKind::NodeHeartbeat, 6, 14)
        );
    }
}
