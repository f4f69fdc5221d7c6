//! The cluster core: who is a member, who is alive, which node holds and
//! leads each partition, agreed through Raft among the controller nodes.
//!
//! - [`metadata`]: the replicated state machine, pure and deterministic.
//! - [`raft_log`]: the Raft log, hard state and snapshots on disk.
//! - [`node`]: drives one Raft node on a glommio executor: ticks, Ready
//!   processing, proposals, liveness of the other nodes.
//! - [`transport`]: how raft messages reach peers ([`transport::Transport`]),
//!   and an in-memory one for tests.
//!
//! Not wired into the server yet: the peer listener, the gateway and the CLI
//! come once the consumer-group work has landed.

pub mod metadata;
pub mod node;
pub mod raft_log;
pub mod transport;
