//! The cluster core: who is a member, who is alive, which node holds and
//! leads each partition, agreed through Raft among the controller nodes (the
//! voters, fixed by `peers`); members that are not controllers follow the
//! same log as Raft learners.
//!
//! - [`metadata`]: the replicated state machine, pure and deterministic.
//! - [`raft_log`]: the Raft log, hard state and snapshots on disk.
//! - [`node`]: drives one Raft node on a glommio executor: ticks, Ready
//!   processing, proposals, liveness of the other nodes, learners kept in
//!   step with members.
//! - [`transport`]: how raft messages reach peers ([`transport::Transport`]),
//!   and an in-memory one for tests.
//! - [`peer_net`]: the peer listener and the TCP transport.
//! - [`runtime`]: a cluster node inside the server (shard 0): Raft node,
//!   peer network, joining, answering the operator.
//! - [`admin`]: `cluster status` and `cluster remove` as the metrics HTTP
//!   listener serves them.
//! - [`view`]: the applied metadata as every core routes by it.
//! - [`forwarder`]: a core's connections to other nodes' client listeners,
//!   for the requests it forwards as a gateway.
//!
//! Wired into the server when `node_id` is set; `src/shard/cluster.rs` is
//! the data path's side of it.

pub mod admin;
pub mod forwarder;
pub mod metadata;
pub mod node;
pub mod peer_net;
pub mod raft_log;
pub mod runtime;
pub mod transport;
pub mod view;
