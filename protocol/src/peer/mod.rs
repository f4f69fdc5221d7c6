//! The node-to-node (peer) protocol, version 1: how the nodes of a cluster
//! talk to each other on their peer listeners. Like the client protocol, pure
//! encode/decode over byte buffers; SPEC.md section 11 is normative.
//!
//! A connection carries one-way frames in both directions, each
//! `u32 length · u16 kind · u16 version · body`. The dialing node sends
//! [`Hello`] first and the accepting one answers with its own (or [`Reject`]
//! and closes); after that either side sends [`RaftMessage`] and
//! [`NodeHeartbeat`] frames whenever it likes, and [`Forward`] to hand a
//! metadata command to the controller leader. With a cluster secret, a
//! [`Challenge`] and two [`Proof`]s come between the Hellos. No frame is answered: Raft has
//! its own acknowledgements and heartbeats simply repeat.
//!
//! - [`frame`]: the peer frame header, its limits, [`PeerError`].
//! - [`messages`]: the messages and [`PeerMessage`], their codec.

pub mod frame;
pub mod messages;

pub use frame::{
    PeerError, PeerHeader, PeerKind, MAX_PEER_FRAME, PEER_HEADER_LEN, PEER_PROTOCOL_VERSION,
};
pub use messages::{
    Challenge, Forward, Hello, NodeHeartbeat, PeerMessage, Proof, RaftMessage, Reject,
    RejectReason, AUTH_TOKEN_LEN,
};
