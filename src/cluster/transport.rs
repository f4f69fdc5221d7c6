//! How a node's outgoing peer messages leave it: the [`Transport`] trait, and
//! [`MemNetwork`], an in-memory network of nodes on one executor for tests.
//!
//! The server's TCP transport (the peer protocol of `protocol/src/peer`) will
//! implement the same trait; the Raft driver never knows which it talks to.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use raft::eraftpb::Message;

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

/// Nodes on one executor that reach each other by function call, with links
/// that tests can cut. Delivery goes through each node's bounded inbox
/// ([`NodeHandle::receive`]), as a TCP transport would.
#[derive(Clone, Default)]
pub struct MemNetwork {
    inner: Rc<RefCell<Net>>,
}

#[derive(Default)]
struct Net {
    nodes: BTreeMap<NodeId, NodeHandle>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
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
        if self.net.inner.borrow().cut.contains(&(self.me, to)) {
            return;
        }
        // The handle is cloned out so no borrow of the network is held while
        // the receiver runs.
        self.net.inject(self.me, to, msg);
    }
}
