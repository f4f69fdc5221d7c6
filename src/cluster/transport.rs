//! How a node's outgoing peer messages leave it: the [`Transport`] trait, and
//! [`MemNetwork`], an in-memory network of nodes on one executor for tests.
//!
//! The server's TCP transport (the peer protocol of `protocol/src/peer`) will
//! implement the same trait; the Raft driver never knows which it talks to.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::Message;
use ringmq_protocol::peer;

use super::metadata::NodeId;
use super::node::NodeHandle;

/// What one node sends another.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerMessage {
    /// A raft-rs message for the controller group.
    Raft(Message),
    /// "I am alive": every node to every controller, every
    /// `heartbeat_interval`. Not written to the log; the controller leader
    /// turns silence and return into `MarkDead`/`MarkAlive` proposals.
    Heartbeat,
}

/// Sends peer messages. `send` must not block and may drop a message (a full
/// queue, a peer that is down): Raft retransmits, and heartbeats repeat.
/// Implementations keep a bounded queue per peer.
pub trait Transport {
    fn send(&self, to: NodeId, msg: PeerMessage);
}

/// Why a peer frame could not become a [`PeerMessage`] (or the reverse).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("raft message is not valid protobuf: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    #[error("heartbeat names node {claimed} on the connection of node {hello}")]
    WrongSender { claimed: u32, hello: NodeId },
}

/// The peer-protocol frame (`protocol/src/peer`) for a message node `me`
/// sends; `incarnation` tells this process start from the last.
pub fn to_wire(
    me: NodeId,
    incarnation: u64,
    msg: &PeerMessage,
) -> Result<peer::PeerMessage, WireError> {
    Ok(match msg {
        PeerMessage::Raft(m) => peer::PeerMessage::Raft(peer::RaftMessage {
            message: Bytes::from(m.write_to_bytes()?),
        }),
        PeerMessage::Heartbeat => peer::PeerMessage::Heartbeat(peer::NodeHeartbeat {
            node_id: me,
            incarnation,
            sent_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }),
    })
}

/// The message a peer frame carries, on a connection whose Hello named node
/// `hello`. `None` for the connection's own frames (Hello, Reject) and for
/// Forward, which the connection handles. The receiving node still checks the sender and
/// addresses inside a raft message ([`NodeHandle::receive`]).
pub fn from_wire(
    hello: NodeId,
    frame: peer::PeerMessage,
) -> Result<Option<PeerMessage>, WireError> {
    Ok(match frame {
        peer::PeerMessage::Raft(m) => {
            Some(PeerMessage::Raft(Message::parse_from_bytes(&m.message)?))
        }
        peer::PeerMessage::Heartbeat(h) if h.node_id == hello => Some(PeerMessage::Heartbeat),
        peer::PeerMessage::Heartbeat(h) => {
            return Err(WireError::WrongSender {
                claimed: h.node_id,
                hello,
            })
        }
        peer::PeerMessage::Hello(_)
        | peer::PeerMessage::Reject(_)
        | peer::PeerMessage::Forward(_)
        | peer::PeerMessage::Challenge(_)
        | peer::PeerMessage::Proof(_) => None,
    })
}

/// Nodes on one executor that reach each other by function call, with links
/// that tests can cut. Delivery goes through each node's bounded inbox
/// ([`NodeHandle::receive`]), as a TCP transport would.
#[derive(Clone, Default)]
pub struct MemNetwork {
    inner: Rc<RefCell<Net>>,
}

type DropFilter = Box<dyn FnMut(NodeId, NodeId, &PeerMessage) -> bool>;

#[derive(Default)]
struct Net {
    nodes: BTreeMap<NodeId, NodeHandle>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drops the messages for which it answers true (fault injection).
    drop_if: Option<DropFilter>,
    delivered: u64,
    refused: u64,
}

impl MemNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport node `me` sends through.
    pub fn transport(&self, me: NodeId) -> Rc<dyn Transport> {
        Rc::new(MemTransport {
            me,
            net: self.clone(),
        })
    }

    /// Makes `handle` reachable as its node id (replacing an earlier one).
    pub fn attach(&self, handle: NodeHandle) {
        self.inner.borrow_mut().nodes.insert(handle.id(), handle);
    }

    /// Makes node `id` unreachable, as if its process died.
    pub fn detach(&self, id: NodeId) {
        self.inner.borrow_mut().nodes.remove(&id);
    }

    /// Drops everything between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut net = self.inner.borrow_mut();
        net.cut.insert((a, b));
        net.cut.insert((b, a));
    }

    /// Drops every message `(from, to, msg)` for which `filter` answers true,
    /// until [`MemNetwork::clear_filter`].
    pub fn drop_if(&self, filter: impl FnMut(NodeId, NodeId, &PeerMessage) -> bool + 'static) {
        self.inner.borrow_mut().drop_if = Some(Box::new(filter));
    }

    pub fn clear_filter(&self) {
        self.inner.borrow_mut().drop_if = None;
    }

    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut net = self.inner.borrow_mut();
        net.cut.remove(&(a, b));
        net.cut.remove(&(b, a));
    }

    /// Delivers a message as if it came from `from` over the wire: for tests
    /// that inject bad input. Returns whether the receiver took it.
    pub fn inject(&self, from: NodeId, to: NodeId, msg: PeerMessage) -> bool {
        let target = self.inner.borrow().nodes.get(&to).cloned();
        let accepted = target.is_some_and(|h| h.receive(from, msg).is_ok());
        let mut net = self.inner.borrow_mut();
        if accepted {
            net.delivered += 1;
        } else {
            net.refused += 1;
        }
        accepted
    }

    /// Messages refused by a receiver (unknown sender, full inbox, stopped).
    pub fn refused(&self) -> u64 {
        self.inner.borrow().refused
    }
}

struct MemTransport {
    me: NodeId,
    net: MemNetwork,
}

impl Transport for MemTransport {
    fn send(&self, to: NodeId, msg: PeerMessage) {
        {
            let mut net = self.net.inner.borrow_mut();
            let net = &mut *net;
            if net.cut.contains(&(self.me, to)) {
                return;
            }
            if let Some(filter) = net.drop_if.as_mut() {
                if filter(self.me, to, &msg) {
                    return;
                }
            }
        }
        // The handle is cloned out so no borrow of the network is held while
        // the receiver runs.
        self.net.inject(self.me, to, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use raft::eraftpb::{Entry, MessageType};

    #[test]
    fn raft_messages_and_heartbeats_cross_the_peer_protocol() {
        let raft = Message {
            msg_type: MessageType::MsgAppend,
            from: 2,
            to: 3,
            term: 7,
            index: 41,
            log_term: 6,
            commit: 40,
            entries: vec![Entry {
                index: 42,
                term: 7,
                data: b"{}".to_vec().into(),
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        };
        for msg in [PeerMessage::Raft(raft), PeerMessage::Heartbeat] {
            let mut buf = BytesMut::new();
            to_wire(2, 99, &msg).unwrap().encode(&mut buf);
            let buf = buf.freeze();
            let (frame, used) = peer::PeerMessage::decode_frame(&buf).unwrap().unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(from_wire(2, frame).unwrap(), Some(msg));
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let garbage = peer::PeerMessage::Raft(peer::RaftMessage {
            message: Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
        });
        assert!(matches!(from_wire(2, garbage), Err(WireError::Protobuf(_))));
        let spoofed = peer::PeerMessage::Heartbeat(peer::NodeHeartbeat {
            node_id: 5,
            incarnation: 1,
            sent_ms: 0,
        });
        assert!(matches!(
            from_wire(2, spoofed),
            Err(WireError::WrongSender {
                claimed: 5,
                hello: 2
            })
        ));
    }
}
