//! Consumer groups (issue 6): members of a group share the partitions of the
//! topics they subscribe to, each partition consumed by exactly one member.
//!
//! - [`assignor`]: who is due which partition, a pure function.
//! - [`coordinator`]: the pure state machine of one group (members,
//!   generation, target, holdings, committed offsets).
//! - [`store`]: the records a group is kept in, in the internal `__offsets`
//!   log, and their byte layout.
//!
//! The shard that coordinates a group drives these (src/shard/groups.rs).

pub mod assignor;
pub mod coordinator;
pub mod store;

pub use assignor::{assign, reassigned, Assignment, MemberId, PartitionId};
